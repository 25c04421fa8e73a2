//! Pins the libpython this crate was built against, so its test binaries do
//! not silently load another CPython 3.11 found first on the library path,
//! and hands the directory to dependents' build scripts to do the same.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
    if let Some(dir) = pyo3_build_config::get().lib_dir() {
        println!("cargo::metadata=libpython_dir={dir}");
    }
}
