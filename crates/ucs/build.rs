//! Two jobs: where the binary finds libpython, and what `ucs --version`
//! says.
//!
//! **libpython (issue 17 item 2).** A dev build (`cargo build`, `cargo run`,
//! `cargo test`, the benchmarks) pins the libpython `ucs-pybridge` was built
//! against with an rpath, so it cannot silently load another CPython 3.11
//! found first on the library path (shared/notes/embedding-python.md); on a
//! pyenv machine that directory is the build machine's own
//! `~/.pyenv/versions/3.11.7/lib`. A distribution build, `cargo xtask dist`,
//! sets `UCS_DIST=1` and gets no rpath at all: the installed binary finds
//! `libpython3.11.so.1.0` as the platform does (Debian's `libpython3.11`
//! in `/usr/lib`), and the xtask refuses a dist binary whose RUNPATH names
//! any directory. `ucs-pybridge`, the one crate that depends on pyo3, hands
//! the directory over (`links` metadata), so this crate needs no pyo3.
//!
//! **Version (issue 17 item 8).** The git commit (`git rev-parse`, or
//! `unknown` outside a checkout or without git) and the Python version the
//! build was configured for become `UCS_GIT_COMMIT` and
//! `UCS_BUILD_PYTHON_VERSION` for `env!`.

use std::path::PathBuf;
use std::process::Command;

/// Set to `1` by `cargo xtask dist`: build a binary without an rpath.
const DIST_ENV: &str = "UCS_DIST";

fn main() {
    println!("cargo::rerun-if-env-changed=DEP_UCS_PYBRIDGE_LIBPYTHON_DIR");
    println!("cargo::rerun-if-env-changed={DIST_ENV}");
    let dist = std::env::var(DIST_ENV).is_ok_and(|value| value == "1");
    if !dist && let Ok(dir) = std::env::var("DEP_UCS_PYBRIDGE_LIBPYTHON_DIR") {
        println!("cargo::rustc-link-arg=-Wl,-rpath,{dir}");
    }
    let python =
        std::env::var("DEP_UCS_PYBRIDGE_PYTHON_VERSION").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo::rustc-env=UCS_BUILD_PYTHON_VERSION={python}");
    println!("cargo::rustc-env=UCS_GIT_COMMIT={}", git_commit());
}

/// The commit being built, or `unknown`; reruns when HEAD moves.
fn git_commit() -> String {
    let git = |args: &[&str]| -> Option<String> {
        let output = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return "unknown".to_owned();
    };
    // HEAD itself, the branch it points to and packed refs: a commit, a
    // checkout or a gc changes one of them.
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        let path = PathBuf::from(path);
        if path.exists() {
            println!("cargo::rerun-if-changed={}", path.display());
        }
    }
    commit
}
