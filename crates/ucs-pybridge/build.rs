//! Pins the libpython this crate was built against, so its test binaries do
//! not silently load another CPython 3.11 found first on the library path,
//! and hands the directory and the Python version to dependents' build
//! scripts (`crates/ucs` pins the same directory in dev builds and prints
//! the version in `ucs --version`).
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    let config = pyo3_build_config::get();
    if let Some(dir) = config.lib_dir() {
        println!("cargo::metadata=libpython_dir={dir}");
    }
    println!("cargo::metadata=python_version={}", config.version());
}
