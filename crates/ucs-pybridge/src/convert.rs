//! [`Value`] to Python and back, with int dict keys kept (SPEC D4).

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use ucs_core::value::{MAX_DEPTH, ValueError};
use ucs_core::{Map, MapKey, Value};

/// Builds the Python object for `value`.
pub fn value_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(flag) => PyBool::new(py, *flag).to_owned().into_any(),
        Value::Int(int) => int.into_pyobject(py)?.into_any(),
        Value::Float(number) => PyFloat::new(py, *number).into_any(),
        Value::Str(text) => PyString::new(py, text).into_any(),
        Value::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Map(fields) => {
            let dict = PyDict::new(py);
            for (key, item) in fields {
                match key {
                    MapKey::Int(key) => dict.set_item(key, value_to_py(py, item)?)?,
                    MapKey::Str(key) => dict.set_item(key, value_to_py(py, item)?)?,
                }
            }
            dict.into_any()
        }
    })
}

/// Builds a read-only Python object for `value`: dicts become
/// `types.MappingProxyType` views and lists tuples, all the way down, so a
/// plugin cannot change what it was given (`ucs.config`).
pub fn frozen_value_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    match value {
        Value::List(items) => {
            let items = items
                .iter()
                .map(|item| frozen_value_to_py(py, item))
                .collect::<PyResult<Vec<_>>>()?;
            Ok(PyTuple::new(py, items)?.into_any())
        }
        Value::Map(fields) => {
            let dict = PyDict::new(py);
            for (key, item) in fields {
                let item = frozen_value_to_py(py, item)?;
                match key {
                    MapKey::Int(key) => dict.set_item(key, item)?,
                    MapKey::Str(key) => dict.set_item(key, item)?,
                }
            }
            py.import("types")?
                .getattr("MappingProxyType")?
                .call1((dict,))
        }
        scalar => value_to_py(py, scalar),
    }
}

/// Reads a Python object into a [`Value`]: what JSON holds plus int dict
/// keys; tuples read as lists. Anything else (sets, arbitrary objects, NaN,
/// ints beyond 64 bits) is refused with the reason.
pub fn py_to_value(object: &Bound<'_, PyAny>) -> Result<Value, ValueError> {
    py_to_value_at(object, 0)
}

fn py_to_value_at(object: &Bound<'_, PyAny>, depth: usize) -> Result<Value, ValueError> {
    if depth > MAX_DEPTH {
        return Err(ValueError::TooDeep);
    }
    if object.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: Python's bool is a subclass of int.
    if let Ok(flag) = object.cast::<PyBool>() {
        return Ok(Value::Bool(flag.is_true()));
    }
    if let Ok(int) = object.cast::<PyInt>() {
        return int.extract::<i64>().map(Value::Int).map_err(|_| {
            ValueError::IntegerOutOfRange(ucs_core::echoed(&int.to_string()).to_string())
        });
    }
    if let Ok(number) = object.cast::<PyFloat>() {
        return Value::float(number.value());
    }
    if let Ok(text) = object.cast::<PyString>() {
        return text
            .to_str()
            .map(|text| Value::Str(text.to_owned()))
            .map_err(|_| ValueError::Unsupported("str with lone surrogates".to_owned()));
    }
    if let Ok(list) = object.cast::<PyList>() {
        return list
            .iter()
            .map(|item| py_to_value_at(&item, depth + 1))
            .collect::<Result<_, _>>()
            .map(Value::List);
    }
    if let Ok(tuple) = object.cast::<PyTuple>() {
        return tuple
            .iter()
            .map(|item| py_to_value_at(&item, depth + 1))
            .collect::<Result<_, _>>()
            .map(Value::List);
    }
    if let Ok(dict) = object.cast::<PyDict>() {
        let mut map = Map::with_capacity(dict.len());
        for (key, item) in dict.iter() {
            map.insert(py_to_key(&key)?, py_to_value_at(&item, depth + 1)?);
        }
        return Ok(Value::Map(map));
    }
    Err(ValueError::Unsupported(type_name(object)))
}

fn py_to_key(key: &Bound<'_, PyAny>) -> Result<MapKey, ValueError> {
    if key.cast::<PyBool>().is_ok() {
        return Err(ValueError::Unsupported("bool as a dict key".to_owned()));
    }
    if let Ok(int) = key.cast::<PyInt>() {
        return int.extract::<i64>().map(MapKey::Int).map_err(|_| {
            ValueError::IntegerOutOfRange(ucs_core::echoed(&int.to_string()).to_string())
        });
    }
    if let Ok(text) = key.cast::<PyString>() {
        return text
            .to_str()
            .map(|text| MapKey::Str(text.to_owned()))
            .map_err(|_| ValueError::Unsupported("str with lone surrogates".to_owned()));
    }
    Err(ValueError::Unsupported(format!(
        "{} as a dict key",
        type_name(key)
    )))
}

/// The Python type name of `object`, for messages.
pub(crate) fn type_name(object: &Bound<'_, PyAny>) -> String {
    object
        .get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "object".to_owned())
}
