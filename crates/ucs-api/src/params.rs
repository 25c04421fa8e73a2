//! Reading positional parameters into typed values, with errors that name
//! the field (the shape of `InvalidDataInput`).

use ucs_core::{MapKey, Value};

use crate::error::ApiError;

/// The positional parameters of one call and their names, for messages.
pub(crate) struct Params<'a> {
    values: &'a [Value],
    names: &'static [&'static str],
}

impl<'a> Params<'a> {
    /// Checks that between `required` and `names.len()` parameters came.
    pub(crate) fn new(
        values: &'a [Value],
        names: &'static [&'static str],
        required: usize,
    ) -> Result<Self, ApiError> {
        if values.len() < required || values.len() > names.len() {
            let expected = if required == names.len() {
                format!("{required}")
            } else {
                format!("{required} to {}", names.len())
            };
            return Err(ApiError::field(
                "params",
                format!(
                    "expected {expected} parameter(s) after sid ({}), got {}",
                    names.join(", "),
                    values.len()
                ),
            ));
        }
        Ok(Params { values, names })
    }

    fn name(&self, index: usize) -> &'static str {
        self.names.get(index).copied().unwrap_or("params")
    }

    /// The parameter at `index`, if it was given.
    pub(crate) fn optional(&self, index: usize) -> Option<&'a Value> {
        self.values.get(index)
    }

    /// The parameter at `index`, which `new` guaranteed when it is required.
    pub(crate) fn value(&self, index: usize) -> Result<&'a Value, ApiError> {
        self.values
            .get(index)
            .ok_or_else(|| ApiError::field(self.name(index), "is required"))
    }

    /// An integer parameter.
    pub(crate) fn int(&self, index: usize) -> Result<i64, ApiError> {
        expect_int(self.value(index)?, self.name(index))
    }

    /// A string parameter.
    pub(crate) fn string(&self, index: usize) -> Result<&'a str, ApiError> {
        expect_str(self.value(index)?, self.name(index))
    }

    /// A dict parameter.
    pub(crate) fn record(&self, index: usize) -> Result<Record<'a>, ApiError> {
        Record::new(self.value(index)?, self.name(index))
    }
}

pub(crate) fn expect_int(value: &Value, field: &str) -> Result<i64, ApiError> {
    value
        .as_int()
        .ok_or_else(|| ApiError::field(field, format!("must be an int, got {}", value.type_name())))
}

pub(crate) fn expect_str<'v>(value: &'v Value, field: &str) -> Result<&'v str, ApiError> {
    value
        .as_str()
        .ok_or_else(|| ApiError::field(field, format!("must be a str, got {}", value.type_name())))
}

fn expect_bool(value: &Value, field: &str) -> Result<bool, ApiError> {
    value
        .as_bool()
        .ok_or_else(|| ApiError::field(field, format!("must be a bool, got {}", value.type_name())))
}

/// How many unknown fields of one dict an error names.
const MAX_UNKNOWN_FIELDS: usize = 8;

/// A dict parameter read field by field; unknown fields are refused so a
/// typo in a field name does not pass silently.
pub(crate) struct Record<'a> {
    map: &'a ucs_core::Map,
}

impl<'a> Record<'a> {
    fn new(value: &'a Value, field: &str) -> Result<Self, ApiError> {
        match value {
            Value::Map(map) => Ok(Record { map }),
            other => Err(ApiError::field(
                field,
                format!("must be a dict, got {}", other.type_name()),
            )),
        }
    }

    /// Refuses fields not in `allowed`. At most [`MAX_UNKNOWN_FIELDS`] are
    /// named, each by a bounded prefix, and the rest counted: the field dict
    /// becomes the status message, and a dict of 100 000 long keys must not
    /// become a megabyte header (issue 15 item 15).
    pub(crate) fn only(self, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut unknown = self
            .map
            .keys()
            .filter(|key| !matches!(key, MapKey::Str(name) if allowed.contains(&name.as_str())));
        let mut fields: ucs_core::FieldErrors = unknown
            .by_ref()
            .take(MAX_UNKNOWN_FIELDS)
            .map(|key| {
                let name = key.to_string();
                (
                    ucs_core::Echoed::bare(&name).to_string(),
                    "unknown field".to_owned(),
                )
            })
            .collect();
        let more = unknown.count();
        if more > 0 {
            fields.insert("…".to_owned(), format!("and {more} more unknown fields"));
        }
        if fields.is_empty() {
            Ok(self)
        } else {
            Err(ApiError::InvalidInput(fields))
        }
    }

    fn get(&self, field: &str) -> Option<&'a Value> {
        self.map.get(&MapKey::Str(field.to_owned()))
    }

    /// A field that must be present.
    pub(crate) fn required<T>(
        &self,
        field: &str,
        read: impl Fn(&'a Value, &str) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let value = self
            .get(field)
            .ok_or_else(|| ApiError::field(field, "is required"))?;
        read(value, field)
    }

    /// A field that may be missing.
    pub(crate) fn optional<T>(
        &self,
        field: &str,
        read: impl Fn(&'a Value, &str) -> Result<T, ApiError>,
    ) -> Result<Option<T>, ApiError> {
        self.get(field).map(|value| read(value, field)).transpose()
    }
}

/// Readers for [`Record::required`] and [`Record::optional`].
pub(crate) fn int(value: &Value, field: &str) -> Result<i64, ApiError> {
    expect_int(value, field)
}

pub(crate) fn string(value: &Value, field: &str) -> Result<String, ApiError> {
    expect_str(value, field).map(str::to_owned)
}

pub(crate) fn boolean(value: &Value, field: &str) -> Result<bool, ApiError> {
    expect_bool(value, field)
}
