//! The `error` module plugins import, and the two-way mapping between its
//! exceptions and [`ApiError`] (SPEC M3).

use pyo3::exceptions::{PyAttributeError, PyBaseException, PyException};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use ucs_api::ApiError;
use ucs_core::{FieldErrors, Value};

// The classes live in the built-in `error` module, created once per process,
// so their identity never changes across plugin reloads and
// `except ProcessingError` keeps working in every plugin version.
pyo3::create_exception!(
    error,
    UcsError,
    PyException,
    "Base class of every error the UCS server raises or accepts from plugins."
);
pyo3::create_exception!(
    error,
    ProcessingError,
    UcsError,
    "The operation was refused, e.g. by a hook. Raise it to block a change."
);
pyo3::create_exception!(
    error,
    InvalidDataInput,
    UcsError,
    "Bad input; the first argument is a dict of field -> message."
);
pyo3::create_exception!(
    error,
    PermissionDenied,
    UcsError,
    "The caller may not do this."
);

// Raised into a plugin's thread when its call runs past its deadline (I3).
// A `BaseException`, like `KeyboardInterrupt`, so `except Exception:` in the
// plugin cannot swallow it and keep the call running.
pyo3::create_exception!(
    error,
    DeadlineExceeded,
    PyBaseException,
    "Raised into a plugin call that ran past its deadline (SPEC I3). Derives from \
     BaseException so `except Exception:` does not catch it."
);

/// The attribute under which an exception raised from an [`ApiError`] keeps
/// the original, so it crosses a Python middleware unchanged (a not-found
/// stays a not-found).
const ORIGINAL_ERROR_ATTRIBUTE: &str = "_ucs_api_error";

/// Holds an [`ApiError`] on a Python exception.
#[pyclass(frozen, module = "error")]
struct OriginalApiError(ApiError);

/// Fills the `error` module.
pub(crate) fn register(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    module.add("UcsError", py.get_type::<UcsError>())?;
    module.add("ProcessingError", py.get_type::<ProcessingError>())?;
    module.add("InvalidDataInput", py.get_type::<InvalidDataInput>())?;
    module.add("PermissionDenied", py.get_type::<PermissionDenied>())?;
    module.add("DeadlineExceeded", py.get_type::<DeadlineExceeded>())?;
    Ok(())
}

/// The parameters of an API call made from Python, each converted; one
/// that cannot be sent is the `InvalidDataInput` a plugin sees for it.
pub fn api_params(py: Python<'_>, params: &Bound<'_, PyTuple>) -> PyResult<Vec<Value>> {
    params
        .iter()
        .map(|param| crate::convert::py_to_value(&param))
        .collect::<Result<Vec<Value>, _>>()
        .map_err(|err| {
            api_error_to_py(
                py,
                ApiError::field("params", format!("cannot be sent: {err}")),
            )
        })
}

/// The exception a plugin sees when an API call it made fails.
pub fn api_error_to_py(py: Python<'_>, error: ApiError) -> PyErr {
    let exception = match &error {
        ApiError::InvalidInput(fields) => {
            let dict = PyDict::new(py);
            for (field, message) in fields {
                if let Err(err) = dict.set_item(field, message) {
                    return err;
                }
            }
            InvalidDataInput::new_err((dict.unbind(),))
        }
        ApiError::Unauthenticated | ApiError::BadCredentials | ApiError::PermissionDenied(_) => {
            PermissionDenied::new_err(error.to_string())
        }
        ApiError::UnknownMethod(_) => PyAttributeError::new_err(error.to_string()),
        ApiError::Processing(message) => ProcessingError::new_err(message.clone()),
        ApiError::NotFound(_) | ApiError::Internal(_) | ApiError::Busy(_) => {
            ProcessingError::new_err(error.to_string())
        }
    };
    let value = exception.value(py);
    if let Ok(original) = Bound::new(py, OriginalApiError(error)) {
        // Best effort: without the attribute the error maps back by class.
        let _ = value.setattr(ORIGINAL_ERROR_ATTRIBUTE, original);
    }
    exception
}

/// How a Python exception raised by a plugin is classified (M3).
pub(crate) enum PluginError {
    /// One of the `error` classes, or an error the server raised that passed
    /// through the plugin unchanged: it goes to the API caller as is.
    Api(ApiError),
    /// Anything else: a bug in the plugin; `traceback` is for the log.
    Unexpected {
        /// The formatted traceback.
        traceback: String,
    },
}

/// Classifies an exception raised by a plugin.
pub(crate) fn classify(py: Python<'_>, err: &PyErr) -> PluginError {
    let value = err.value(py);
    if let Ok(original) = value.getattr(ORIGINAL_ERROR_ATTRIBUTE)
        && let Ok(original) = original.cast::<OriginalApiError>()
    {
        return PluginError::Api(original.get().0.clone());
    }
    if err.is_instance_of::<InvalidDataInput>(py) {
        return PluginError::Api(ApiError::InvalidInput(field_errors(py, err)));
    }
    if err.is_instance_of::<PermissionDenied>(py) {
        return PluginError::Api(ApiError::PermissionDenied(first_arg_text(py, err)));
    }
    if err.is_instance_of::<ProcessingError>(py) {
        return PluginError::Api(ApiError::Processing(first_arg_text(py, err)));
    }
    PluginError::Unexpected {
        traceback: format_traceback(py, err),
    }
}

/// The message of an exception: `str(args[0])`, or empty without arguments.
pub(crate) fn first_arg_text(py: Python<'_>, err: &PyErr) -> String {
    err.value(py)
        .getattr("args")
        .and_then(|args| args.get_item(0))
        .and_then(|first| first.str().map(|text| text.to_string()))
        .unwrap_or_default()
}

/// `InvalidDataInput`'s first argument as a field map; a non-dict argument
/// becomes the message of a field called `input`.
fn field_errors(py: Python<'_>, err: &PyErr) -> FieldErrors {
    let first = err
        .value(py)
        .getattr("args")
        .and_then(|args| args.get_item(0));
    match first {
        Ok(first) => match first.cast::<PyDict>() {
            Ok(dict) => dict
                .iter()
                .map(|(field, message)| (text_of(&field), text_of(&message)))
                .collect(),
            Err(_) => FieldErrors::from([("input".to_owned(), text_of(&first))]),
        },
        Err(_) => FieldErrors::from([("input".to_owned(), "invalid input".to_owned())]),
    }
}

fn text_of(object: &Bound<'_, PyAny>) -> String {
    match object.cast::<PyString>() {
        Ok(text) => text.to_string(),
        Err(_) => object
            .str()
            .map(|text| text.to_string())
            .unwrap_or_default(),
    }
}

/// The exception with its traceback, as Python prints it.
pub fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    // The traceback is passed explicitly: before Python 3.12 an exception
    // fetched from C does not carry it in `__traceback__`.
    let formatted = py.import("traceback").and_then(|traceback| {
        traceback
            .call_method1(
                "format_exception",
                (err.get_type(py), err.value(py), err.traceback(py)),
            )?
            .extract::<Vec<String>>()
    });
    match formatted {
        Ok(lines) => lines.concat().trim_end().to_owned(),
        Err(_) => err.to_string(),
    }
}
