//! Pins the libpython the binary links through `ucs-loader`: without an
//! rpath it could silently load another CPython 3.11 found first on the
//! library path (shared/notes/embedding-python.md).
//!
//! `pyo3_build_config::add_libpython_rpath_link_args()` would need a direct
//! pyo3 dependency here; `ucs-pybridge`, the one crate that depends on pyo3,
//! hands over the directory it was built against instead.
fn main() {
    println!("cargo::rerun-if-env-changed=DEP_UCS_PYBRIDGE_LIBPYTHON_DIR");
    if let Ok(dir) = std::env::var("DEP_UCS_PYBRIDGE_LIBPYTHON_DIR") {
        println!("cargo::rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
