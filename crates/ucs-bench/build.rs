//! Pins the libpython `ucs-pybridge` was built against for the benchmark
//! binaries, as `crates/ucs` does for the server: otherwise another CPython
//! 3.11 found first on the library path could load silently.
fn main() {
    println!("cargo::rerun-if-env-changed=DEP_UCS_PYBRIDGE_LIBPYTHON_DIR");
    if let Ok(dir) = std::env::var("DEP_UCS_PYBRIDGE_LIBPYTHON_DIR") {
        println!("cargo::rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
