//! Pins the libpython the binary was built against: it links libpython
//! through `ucs-loader`, and without an rpath it could silently load another
//! CPython 3.11 found first on the library path (notes/embedding-python.md).
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
