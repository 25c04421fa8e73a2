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
                    MapKey::Str(key) => dict.set_item(str_key(py, key), value_to_py(py, item)?)?,
                }
            }
            dict.into_any()
        }
    })
}

/// The Python `str` for a dict key: the field names of the server's own
/// records (agents, users, events, audit records) are interned once per
/// process, hash cached, instead of a new string made, hashed and freed per
/// key per call (issue 13 item 3: `agents.list` through a middleware made
/// twenty of them per layer). Any other key is a new string.
fn str_key<'py>(py: Python<'py>, key: &str) -> Bound<'py, PyString> {
    macro_rules! interned {
        ($($field:literal),* $(,)?) => {
            match key {
                $($field => pyo3::intern!(py, $field).clone(),)*
                _ => PyString::new(py, key),
            }
        };
    }
    interned!(
        "id",
        "username",
        "displayname",
        "status",
        "reason",
        "superuser",
        "agent",
        "agent_id",
        "identificator",
        "data",
        "previous_status",
        "previous_reason",
        "kind",
        "plugin",
    )
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
        let mut map = Map::with_capacity_and_hasher(dict.len(), Default::default());
        for (key, item) in dict.iter() {
            map.insert(py_to_key(&key)?, py_to_value_at(&item, depth + 1)?);
        }
        return Ok(Value::Map(map));
    }
    Err(ValueError::Unsupported(type_name(object)))
}

/// Whether [`py_to_value`] of `object` would give exactly `value`, keys in
/// the same order: lets a caller that made `object` from `value` take
/// `value` back instead of converting again, when Python handed the object
/// on unchanged (a middleware passing its handler's result through). A
/// walk with no allocation; it may answer false for an equal object (e.g.
/// keys reordered), never true for a different one.
pub fn py_matches_value(object: &Bound<'_, PyAny>, value: &Value) -> bool {
    py_matches_value_at(object, value, 0)
}

fn py_matches_value_at(object: &Bound<'_, PyAny>, value: &Value, depth: usize) -> bool {
    // Beyond the depth limit `py_to_value` refuses, so no value matches.
    if depth > MAX_DEPTH {
        return false;
    }
    match value {
        Value::Null => object.is_none(),
        Value::Bool(flag) => object
            .cast::<PyBool>()
            .is_ok_and(|object| object.is_true() == *flag),
        // A bool is an int to Python, but `py_to_value` reads it as a bool.
        Value::Int(int) => {
            object.cast::<PyBool>().is_err()
                && object
                    .cast::<PyInt>()
                    .is_ok_and(|object| object.extract::<i64>().is_ok_and(|read| read == *int))
        }
        Value::Float(number) => object
            .cast::<PyFloat>()
            .is_ok_and(|object| object.value().to_bits() == number.to_bits()),
        Value::Str(text) => object
            .cast::<PyString>()
            .is_ok_and(|object| object.to_str().is_ok_and(|read| read == text)),
        Value::List(items) => {
            if let Ok(list) = object.cast::<PyList>() {
                list.len() == items.len()
                    && list
                        .iter()
                        .zip(items)
                        .all(|(object, item)| py_matches_value_at(&object, item, depth + 1))
            } else if let Ok(tuple) = object.cast::<PyTuple>() {
                tuple.len() == items.len()
                    && tuple
                        .iter()
                        .zip(items)
                        .all(|(object, item)| py_matches_value_at(&object, item, depth + 1))
            } else {
                false
            }
        }
        Value::Map(fields) => object.cast::<PyDict>().is_ok_and(|dict| {
            dict.len() == fields.len()
                && dict
                    .iter()
                    .zip(fields)
                    .all(|((key, object), (field_key, field))| {
                        py_matches_key(&key, field_key)
                            && py_matches_value_at(&object, field, depth + 1)
                    })
        }),
    }
}

/// Whether [`py_to_key`] of `key` would give exactly `expected`.
fn py_matches_key(key: &Bound<'_, PyAny>, expected: &MapKey) -> bool {
    if key.cast::<PyBool>().is_ok() {
        return false;
    }
    match expected {
        MapKey::Int(int) => key
            .cast::<PyInt>()
            .is_ok_and(|key| key.extract::<i64>().is_ok_and(|read| read == *int)),
        MapKey::Str(text) => key
            .cast::<PyString>()
            .is_ok_and(|key| key.to_str().is_ok_and(|read| read == text)),
    }
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
