//! Where the embedded interpreter's standard library comes from (issue 16
//! item 3), and the virtual environment plugins import packages from.
//!
//! Left to itself, an embedded CPython looks for `python3` on `PATH` and
//! takes the prefix of whichever it finds: a pyenv-built server run with
//! `/usr/bin` first on `PATH` ran its 3.11.7 libpython on Debian's 3.11.2
//! standard library. So the home is pinned before the interpreter starts:
//! to `--python-home` if given, else to the installation of the libpython
//! this process actually loaded (the directory above it that holds
//! `lib/pythonX.Y/os.py`, found through `/proc/self/maps`), never to `PATH`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `--python-home`, set before the interpreter starts.
static HOME_OVERRIDE: OnceLock<PathBuf> = OnceLock::new();

/// Makes `home` the interpreter's home (`sys.prefix`); only before the
/// interpreter starts, else `false` (the home it has stays).
pub fn set_python_home(home: PathBuf) -> bool {
    INITIALISED.get().is_none() && HOME_OVERRIDE.set(home).is_ok()
}

/// Set once the interpreter has started: a home chosen after that is ignored.
static INITIALISED: OnceLock<()> = OnceLock::new();

/// The interpreter's home: `--python-home`, or the installation of the
/// loaded libpython; `None` if neither is known (then CPython's own search
/// decides, as before).
pub fn python_home() -> Option<PathBuf> {
    if let Some(home) = HOME_OVERRIDE.get() {
        return Some(home.clone());
    }
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND.get_or_init(home_of_loaded_libpython).clone()
}

/// `major.minor` of the loaded libpython, e.g. `3.11`.
pub(crate) fn major_minor() -> String {
    let version = crate::loaded_python_version();
    let mut parts = version.split('.');
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => format!("{major}.{minor}"),
        _ => version,
    }
}

/// The directory above the mapped `libpython*.so` that holds this
/// version's standard library.
fn home_of_loaded_libpython() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let library = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            Path::new(path)
                .file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("libpython3"))
        })?;
    let library = std::fs::canonicalize(library).ok()?;
    let landmark = format!("lib/python{}/os.py", major_minor());
    library
        .ancestors()
        .skip(1)
        .find(|dir| dir.join(&landmark).is_file())
        .map(Path::to_path_buf)
}

/// Pins the home before `Py_Initialize` (called by [`crate::init`] only).
pub(crate) fn pin_before_start() {
    let _ = INITIALISED.set(());
    let Some(home) = python_home() else {
        return;
    };
    // `sys.executable` too, so a plugin's `subprocess.run([sys.executable,
    // ...])` runs this Python, not the first one on `PATH`.
    let program = home.join(format!("bin/python{}", major_minor()));
    if program.is_file() {
        set_wide(&program, |wide| {
            // SAFETY: see `set_wide`.
            #[expect(deprecated, reason = "PyConfig would take over pyo3's initialisation")]
            unsafe {
                pyo3::ffi::Py_SetProgramName(wide);
            }
        });
    }
    set_wide(&home, |wide| {
        // SAFETY: see `set_wide`.
        #[expect(deprecated, reason = "PyConfig would take over pyo3's initialisation")]
        unsafe {
            pyo3::ffi::Py_SetPythonHome(wide);
        }
    });
}

/// Hands `path` as the wide string CPython's pre-initialisation setters
/// take. Called once each, before the interpreter starts, as the C API
/// requires; the string from `Py_DecodeLocale` is never freed, because
/// CPython keeps the pointer for the life of the process.
fn set_wide(path: &Path, set: impl FnOnce(*const libc::wchar_t)) {
    let Ok(text) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return;
    };
    // SAFETY: a NUL-terminated string; a null size pointer is allowed.
    let wide = unsafe { pyo3::ffi::Py_DecodeLocale(text.as_ptr(), std::ptr::null_mut()) };
    if !wide.is_null() {
        set(wide);
    }
}

/// `use_site_dir(dir, include_system)`: `dir` added with its `.pth` files,
/// placed where the base site-packages were, which stay only after it and
/// only when `include_system`.
const USE_SITE_DIR: &std::ffi::CStr = cr#"
import site, sys

def use_site_dir(site_dir, include_system):
    base = set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        base.add(site.getusersitepackages())
    before = list(sys.path)
    site.addsitedir(site_dir)
    added = [entry for entry in sys.path if entry not in before]
    rest = [entry for entry in before if include_system or entry not in base]
    at = next((i for i, entry in enumerate(rest) if entry in base), len(rest))
    sys.path[:] = rest[:at] + added + rest[at:]
"#;

/// Why a virtual environment cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VenvError {
    /// No `pyvenv.cfg`: not a virtual environment.
    #[error(
        "{0} is not a virtual environment (no pyvenv.cfg); create one with `python{1} -m venv {0}`"
    )]
    NotAVenv(String, String),
    /// Made for another Python.
    #[error(
        "{dir} is a virtual environment for Python {theirs}, but plugins run on Python {ours}; \
         create it with `python{ours} -m venv {dir}`"
    )]
    OtherPython {
        /// The venv.
        dir: String,
        /// Its version.
        theirs: String,
        /// The interpreter's `major.minor`.
        ours: String,
    },
    /// Python refused to add it.
    #[error("cannot add {0}'s site-packages: {1}")]
    Site(String, String),
}

/// Adds the site-packages of the virtual environment `dir` after the
/// standard library (`site.addsitedir`, so its `.pth` files work), after
/// checking it was made for this interpreter's `major.minor`. As in a venv
/// `python`, the base installation's own site-packages then leave
/// `sys.path` (they would shadow the venv's packages: a `six` installed
/// there was imported instead of the venv's), unless `pyvenv.cfg` says
/// `include-system-site-packages = true`, and then they come after it.
/// Returns the directory added.
pub fn use_venv(dir: &Path) -> Result<PathBuf, VenvError> {
    use pyo3::prelude::*;
    let ours = major_minor();
    let shown = dir.display().to_string();
    let config = std::fs::read_to_string(dir.join("pyvenv.cfg"))
        .map_err(|_| VenvError::NotAVenv(shown.clone(), ours.clone()))?;
    let theirs = config
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| matches!(key.trim(), "version" | "version_info"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    if theirs != ours && !theirs.starts_with(&format!("{ours}.")) {
        return Err(VenvError::OtherPython {
            dir: shown,
            theirs,
            ours,
        });
    }
    let include_system =
        config
            .lines()
            .filter_map(|line| line.split_once('='))
            .any(|(key, value)| {
                key.trim() == "include-system-site-packages"
                    && value.trim().eq_ignore_ascii_case("true")
            });
    let site = dir.join(format!("lib/python{ours}/site-packages"));
    crate::init();
    Python::attach(|py| {
        let globals = pyo3::types::PyDict::new(py);
        py.run(USE_SITE_DIR, Some(&globals), None)
            .and_then(|()| {
                globals.get_item("use_site_dir")?.ok_or_else(|| {
                    pyo3::exceptions::PyRuntimeError::new_err("use_site_dir is not defined")
                })
            })
            .and_then(|use_site_dir| {
                use_site_dir.call1((site.to_string_lossy().as_ref(), include_system))
            })
            .map(drop)
            .map_err(|err| {
                VenvError::Site(shown.clone(), crate::errors::format_traceback(py, &err))
            })
    })?;
    Ok(site)
}
