//! Pins the libpython `ucs-pybridge` was built against for this crate's test
//! binaries (see that crate's build script).
fn main() {
    if let Ok(dir) = std::env::var("DEP_UCS_PYBRIDGE_LIBPYTHON_DIR") {
        println!("cargo::rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
