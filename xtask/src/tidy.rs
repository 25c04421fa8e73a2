//! Tidy checks of the workspace's shape, run as ordinary tests (`cargo
//! test -p xtask`), the way rust-analyzer keeps its architecture honest.
//!
//! The invariant checked here is ARCHITECTURE.md's first one: dependencies
//! run one way, `ucs-core` <- `ucs-api` <- `ucs-pybridge`/`ucs-loader` <-
//! `ucs-grpc` <- `ucs`, and only `ucs-pybridge` knows pyo3.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    /// The names under `[dependencies]` of a crate's manifest.
    fn dependencies(krate: &str) -> BTreeSet<String> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates")
            .join(krate)
            .join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .unwrap_or_else(|err| panic!("{}: {err}", manifest.display()));
        let mut in_dependencies = false;
        let mut names = BTreeSet::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_dependencies = line == "[dependencies]";
                continue;
            }
            if !in_dependencies || line.is_empty() || line.starts_with('#') {
                continue;
            }
            let name = line
                .split(['=', '.', ' '])
                .next()
                .unwrap_or_default()
                .trim();
            names.insert(name.to_owned());
        }
        names
    }

    fn assert_none_of(krate: &str, forbidden: &[&str]) {
        let found: Vec<_> = dependencies(krate)
            .into_iter()
            .filter(|name| forbidden.contains(&name.as_str()))
            .collect();
        assert!(found.is_empty(), "{krate} must not depend on {found:?}");
    }

    const PYTHON: &[&str] = &["pyo3", "pyo3-ffi"];
    const NETWORK_AND_IO: &[&str] = &["tokio", "tonic", "prost", "rusqlite", "notify"];
    const OUTER: &[&str] = &["ucs-pybridge", "ucs-loader", "ucs-grpc", "ucs", "ucs-store"];

    #[test]
    fn the_core_has_no_python_network_or_io() {
        assert_none_of("ucs-core", PYTHON);
        assert_none_of("ucs-core", NETWORK_AND_IO);
        assert_none_of("ucs-core", &["ucs-api"]);
        assert_none_of("ucs-core", OUTER);
    }

    #[test]
    fn the_api_knows_neither_python_nor_grpc() {
        assert_none_of("ucs-api", PYTHON);
        assert_none_of("ucs-api", NETWORK_AND_IO);
        assert_none_of("ucs-api", OUTER);
    }

    #[test]
    fn only_pybridge_depends_on_pyo3() {
        for krate in ["ucs-loader", "ucs-grpc", "ucs-store", "ucs"] {
            assert_none_of(krate, PYTHON);
        }
        assert!(dependencies("ucs-pybridge").contains("pyo3"));
    }

    #[test]
    fn the_grpc_layer_does_not_reach_into_the_binary() {
        assert_none_of("ucs-grpc", &["ucs"]);
        assert_none_of("ucs-loader", &["ucs-grpc", "ucs"]);
        assert_none_of("ucs-pybridge", &["ucs-loader", "ucs-grpc", "ucs"]);
    }

    /// The web console reaches the server only through the API, the core's
    /// login and its event bus: no Python, no plugin loader, no storage.
    #[test]
    fn the_console_reaches_the_server_only_through_the_api() {
        assert_none_of("ucs-console", PYTHON);
        assert_none_of(
            "ucs-console",
            &[
                "ucs-pybridge",
                "ucs-loader",
                "ucs-host",
                "ucs-store",
                "ucs",
                "tonic",
                "rusqlite",
            ],
        );
        assert_none_of("ucs-grpc", &["ucs-console"]);
    }
}
