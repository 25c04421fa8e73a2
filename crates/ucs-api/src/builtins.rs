//! The built-in methods of SPEC section 8. Each is the innermost handler of
//! its chain and does its own permission check there (D3), so middleware sees
//! every authenticated call.

use ucs_core::{AgentStatus, MapKey, NewUser, User, UserEdit, Value};

use crate::error::ApiError;
use crate::metrics;
use crate::params::{self, Params};
use crate::plugins::{PluginInfo, PluginName};
use crate::{Api, Handler};

/// Every built-in method by dotted name.
pub(crate) const METHODS: &[(&str, Handler)] = &[
    ("agents.list", agents_list),
    ("agents.setStatus", agents_set_status),
    ("shared.get", shared_get),
    ("shared.set", shared_set),
    ("config.users.get", users_get),
    ("config.users.add", users_add),
    ("config.users.edit", users_edit),
    ("config.users.delete", users_delete),
    ("plugins.list", plugins_list),
    ("plugins.load", plugins_load),
    ("plugins.unload", plugins_unload),
    ("audit.list", audit_list),
];

fn require_superuser(caller: &User) -> Result<(), ApiError> {
    if caller.superuser {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(format!(
            "user '{}' is not a superuser",
            caller.username
        )))
    }
}

fn agents_list(api: &Api, _caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    Params::new(params, &[], 0)?;
    Ok(Value::List(
        api.core()
            .directory()
            .agents()
            .iter()
            .map(|a| a.to_value())
            .collect(),
    ))
}

fn agents_set_status(api: &Api, caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    let params = Params::new(params, &["agent_id", "status", "reason"], 2)?;
    let agent_id = params.int(0)?;
    if caller.id != agent_id && !caller.superuser {
        return Err(ApiError::PermissionDenied(format!(
            "user '{}' may change only its own status",
            caller.username
        )));
    }
    let code = params.int(1)?;
    let status = AgentStatus::from_code(code).ok_or_else(|| {
        ApiError::field(
            "status",
            format!("{code} is not one of AGENT_STATE_ENUM (0, 1, 2, 3)"),
        )
    })?;
    let reason = match params.optional(2) {
        None | Some(Value::Null) => "",
        Some(value) => params::expect_str(value, "reason")?,
    };
    let agent = api.core().set_agent_status(agent_id, status, reason)?;
    Ok(agent.to_value())
}

fn identificator<'a>(params: &Params<'a>) -> Result<&'a str, ApiError> {
    let identificator = params.string(0)?;
    if identificator.is_empty() {
        return Err(ApiError::field("identificator", "must not be empty"));
    }
    Ok(identificator)
}

fn shared_get(api: &Api, _caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    let params = Params::new(params, &["identificator"], 1)?;
    Ok(api.core().shared().get(identificator(&params)?))
}

fn shared_set(api: &Api, _caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    let params = Params::new(params, &["identificator", "data"], 2)?;
    let identificator = identificator(&params)?;
    let data = params.value(1)?.clone();
    Ok(api.core().set_shared(identificator, data)?)
}

fn users_get(api: &Api, caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    require_superuser(caller)?;
    let params = Params::new(params, &["user_id"], 0)?;
    match params.optional(0) {
        None | Some(Value::Null) => Ok(Value::List(
            api.core()
                .directory()
                .list()
                .iter()
                .map(User::to_value)
                .collect(),
        )),
        Some(value) => {
            let id = params::expect_int(value, "user_id")?;
            api.core()
                .directory()
                .get(id)
                .map(|user| user.to_value())
                .ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))
        }
    }
}

const USER_FIELDS: &[&str] = &[
    "id",
    "username",
    "displayname",
    "password",
    "superuser",
    "agent",
];

fn users_add(api: &Api, caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    require_superuser(caller)?;
    let params = Params::new(params, &["data"], 1)?;
    let data = params.record(0)?.only(&USER_FIELDS[1..])?;
    let mut fields = FieldCollector::default();
    let username = fields.take(data.required("username", params::string));
    let displayname = fields.take(data.optional("displayname", params::string));
    let password = fields.take(data.required("password", params::string));
    let superuser = fields.take(data.optional("superuser", params::boolean));
    let agent = fields.take(data.optional("agent", params::boolean));
    fields.finish()?;
    let new = NewUser {
        username: username.unwrap_or_default(),
        displayname: displayname.flatten().unwrap_or_default(),
        password: password.unwrap_or_default(),
        superuser: superuser.flatten().unwrap_or(false),
        agent: agent.flatten().unwrap_or(false),
    };
    Ok(api.core().directory().add(new)?.to_value())
}

fn users_edit(api: &Api, caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    require_superuser(caller)?;
    let params = Params::new(params, &["data"], 1)?;
    let data = params.record(0)?.only(USER_FIELDS)?;
    let mut fields = FieldCollector::default();
    let id = fields.take(data.required("id", params::int));
    let username = fields.take(data.optional("username", params::string));
    let displayname = fields.take(data.optional("displayname", params::string));
    let password = fields.take(data.optional("password", params::string));
    let superuser = fields.take(data.optional("superuser", params::boolean));
    let agent = fields.take(data.optional("agent", params::boolean));
    fields.finish()?;
    let edit = UserEdit {
        id: id.unwrap_or_default(),
        username: username.flatten(),
        displayname: displayname.flatten(),
        password: password.flatten(),
        superuser: superuser.flatten(),
        agent: agent.flatten(),
    };
    Ok(api.core().edit_user(edit)?.to_value())
}

/// Reads every field of a record before failing, so one answer names every
/// bad or missing field, as the core's validation does.
#[derive(Default)]
struct FieldCollector {
    errors: ucs_core::FieldErrors,
    other: Option<ApiError>,
}

impl FieldCollector {
    /// The value, or `None` with its field errors kept for [`Self::finish`].
    fn take<T>(&mut self, read: Result<T, ApiError>) -> Option<T> {
        match read {
            Ok(value) => Some(value),
            Err(ApiError::InvalidInput(fields)) => {
                self.errors.extend(fields);
                None
            }
            Err(other) => {
                self.other.get_or_insert(other);
                None
            }
        }
    }

    /// Fails with every field error gathered, if any; then every `take`
    /// returned `Some`.
    fn finish(self) -> Result<(), ApiError> {
        if let Some(other) = self.other {
            return Err(other);
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::InvalidInput(self.errors))
        }
    }
}

fn users_delete(api: &Api, caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    require_superuser(caller)?;
    let params = Params::new(params, &["user_id"], 1)?;
    api.core().delete_user(params.int(0)?)?;
    Ok(Value::Null)
}

fn plugins_list(api: &Api, caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    require_superuser(caller)?;
    Params::new(params, &[], 0)?;
    let control = api.plugin_control()?;
    Ok(Value::List(
        control
            .list()
            .iter()
            .map(|info| plugin_value(api, info))
            .collect(),
    ))
}

/// A plugin info with the numbers of each of its registrations (issue 8).
fn plugin_value(api: &Api, info: &PluginInfo) -> Value {
    let mut value = info.to_value();
    if let Value::Map(fields) = &mut value {
        fields.insert(
            MapKey::from("registrations"),
            metrics::registrations_value(api.registrations_of_plugin(&info.name)),
        );
    }
    value
}

fn plugin_name(params: &[Value]) -> Result<PluginName, ApiError> {
    let params = Params::new(params, &["plugin_name"], 1)?;
    PluginName::parse(params.string(0)?)
}

fn plugins_load(api: &Api, caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    require_superuser(caller)?;
    let name = plugin_name(params)?;
    let info = api.plugin_control()?.load(&name)?;
    Ok(plugin_value(api, &info))
}

fn plugins_unload(api: &Api, caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    require_superuser(caller)?;
    let name = plugin_name(params)?;
    let info = api.plugin_control()?.unload(&name)?;
    Ok(plugin_value(api, &info))
}

/// The audit trail, oldest first (issue 8): every veto and rewrite by a hook
/// and every plugin load, reload and unload still in the ring.
fn audit_list(api: &Api, caller: &User, params: &[Value]) -> Result<Value, ApiError> {
    require_superuser(caller)?;
    Params::new(params, &[], 0)?;
    Ok(Value::List(
        api.core()
            .audit()
            .list()
            .iter()
            .map(|record| record.to_value())
            .collect(),
    ))
}
