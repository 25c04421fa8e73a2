//! What plugins print, log and leave uncaught, as server log records with
//! the plugin's name (issue 17 item 3).
//!
//! A plugin's `print()`, its `logging` records and the traceback of an
//! exception that ends one of its threads used to go to the process's
//! stdout and stderr as bare text: between the JSON lines of `--log-json`,
//! with no plugin named. At start-up the interpreter gets:
//! - `sys.stdout` and `sys.stderr` that log each line (INFO and WARN);
//! - a handler on the root logger that logs each record at its level;
//! - a `threading.excepthook` that logs the traceback as an ERROR.
//!
//! Each names the plugin whose code is on the calling stack (the innermost
//! frame of a module the loader imported as a plugin), or, for a logger,
//! the plugin its name starts with. In a plugin host every record is the
//! host's one plugin's anyway: the server names it when it logs what the
//! host forwards.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// Installs the streams, the logging handler and the thread excepthook.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let globals = PyDict::new(py);
    globals.set_item("_emit", wrap_pyfunction!(emit, py)?)?;
    py.run(BOOTSTRAP, Some(&globals), None)
}

/// Logs one line for Python: `level` is `trace`, `debug`, `info`, `warn` or
/// `error`; `plugin` the plugin it came from, if known.
#[pyfunction]
fn emit(level: &str, plugin: Option<&str>, text: &str) {
    macro_rules! record {
        ($level:ident) => {
            match plugin {
                Some(plugin) => tracing::$level!(target: "ucs::plugin", plugin, "{text}"),
                None => tracing::$level!(target: "ucs::plugin", "{text}"),
            }
        };
    }
    match level {
        "trace" => record!(trace),
        "debug" => record!(debug),
        "info" => record!(info),
        "warn" => record!(warn),
        _ => record!(error),
    }
}

/// The Python side; `_emit` is [`emit`].
const BOOTSTRAP: &std::ffi::CStr = cr#"
import io, logging, sys, threading, traceback

def _plugin_on(frame):
    while frame is not None:
        name = frame.f_globals.get("__name__")
        module = sys.modules.get(name) if isinstance(name, str) else None
        if module is not None and getattr(module, "__ucs_plugin__", False):
            return name
        frame = frame.f_back
    return None

def _plugin_of_logger(name):
    module = sys.modules.get(name.split(".")[0])
    if module is not None and getattr(module, "__ucs_plugin__", False):
        return module.__name__
    return None

class _LoggedLines(io.TextIOBase):
    """A text stream that logs each complete line written to it."""

    def __init__(self, level, original):
        self._level = level
        self._original = original
        self._partial = threading.local()

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not " + type(text).__name__)
        *lines, rest = (getattr(self._partial, "text", "") + text).split("\n")
        self._partial.text = rest
        if lines:
            plugin = _plugin_on(sys._getframe(1))
            for line in lines:
                _emit(self._level, plugin, line)
        return len(text)

    def flush(self):
        rest = getattr(self._partial, "text", "")
        if rest:
            self._partial.text = ""
            _emit(self._level, _plugin_on(sys._getframe(1)), rest)

    def fileno(self):
        if self._original is None:
            raise io.UnsupportedOperation("fileno")
        return self._original.fileno()

class _ToServerLog(logging.Handler):
    """Logs each record through the server's log, at its level."""

    def emit(self, record):
        try:
            text = self.format(record)
        except Exception:
            text = str(record.msg)
        level = record.levelno
        name = ("error" if level >= logging.ERROR else "warn" if level >= logging.WARNING
                else "info" if level >= logging.INFO else "debug" if level >= logging.DEBUG
                else "trace")
        plugin = _plugin_on(sys._getframe(1)) or _plugin_of_logger(record.name)
        _emit(name, plugin, record.name + ": " + text)

def _thread_died(args):
    if args.exc_type is SystemExit:
        return
    plugin = None
    tb = args.exc_traceback
    while tb is not None and plugin is None:
        plugin = _plugin_on(tb.tb_frame)
        tb = tb.tb_next
    thread = args.thread.name if args.thread is not None else "a thread"
    text = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
    _emit("error", plugin, "uncaught exception in thread " + thread + ":\n" + text.rstrip())

sys.stdout = _LoggedLines("info", sys.__stdout__)
sys.stderr = _LoggedLines("warn", sys.__stderr__)
logging.getLogger().addHandler(_ToServerLog())
threading.excepthook = _thread_died
"#;
