//! Pins the libpython this crate was built against, so its test binaries do
//! not silently load another CPython 3.11 found first on the library path.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
