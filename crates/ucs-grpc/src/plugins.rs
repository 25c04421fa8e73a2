//! `ucs.v1.Plugins`: the API methods `plugins.*`, middleware included (P6).

use tonic::{Request, Response, Status};
use ucs_api::{Api, ApiError, Isolation, PluginState};
use ucs_core::Value;

use crate::pb;
use crate::run_blocking;

/// Loads, unloads and lists plugins by calling `plugins.load`,
/// `plugins.unload` and `plugins.list` through [`Api::call`], so a
/// middleware on those methods sees gRPC calls too.
#[derive(Clone)]
pub struct PluginsService {
    /// The API whose methods this service calls.
    api: Api,
}

impl PluginsService {
    /// The service over `api`.
    pub fn new(api: Api) -> Self {
        PluginsService { api }
    }

    async fn call(
        &self,
        sid: String,
        method: &'static str,
        params: Vec<Value>,
    ) -> Result<Value, Status> {
        let api = self.api.clone();
        run_blocking(move || api.call(&sid, method, params)).await
    }
}

#[tonic::async_trait]
impl pb::plugins_server::Plugins for PluginsService {
    async fn load(
        &self,
        request: Request<pb::PluginRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        let pb::PluginRequest { sid, name } = request.into_inner();
        let result = self
            .call(sid, "plugins.load", vec![Value::from(name)])
            .await?;
        Ok(Response::new(plugin_info(&result)?))
    }

    async fn unload(
        &self,
        request: Request<pb::PluginRequest>,
    ) -> Result<Response<pb::PluginInfo>, Status> {
        let pb::PluginRequest { sid, name } = request.into_inner();
        let result = self
            .call(sid, "plugins.unload", vec![Value::from(name)])
            .await?;
        Ok(Response::new(plugin_info(&result)?))
    }

    async fn list(
        &self,
        request: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        let pb::ListPluginsRequest { sid } = request.into_inner();
        let result = self.call(sid, "plugins.list", Vec::new()).await?;
        let Value::List(items) = &result else {
            return Err(malformed("plugins.list", &result));
        };
        let plugins = items
            .iter()
            .map(plugin_info)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Response::new(pb::ListPluginsResponse { plugins }))
    }
}

/// Converts a plugin info dict (what `PluginInfo::to_value` makes) to the
/// message. A middleware may have changed the result into something else;
/// that is the plugin's bug, reported as INTERNAL.
fn plugin_info(value: &Value) -> Result<pb::PluginInfo, Status> {
    let text = |field: &str| -> Result<String, Status> {
        value
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| malformed("plugin info", value))
    };
    // The names are read back by the API's one table (`PluginState::as_str`).
    let state = match PluginState::from_name(&text("state")?) {
        Some(PluginState::Running) => pb::PluginState::Running,
        Some(PluginState::Stopped) => pb::PluginState::Stopped,
        Some(PluginState::Failed) => pb::PluginState::Failed,
        Some(PluginState::Starting) => pb::PluginState::Starting,
        None => pb::PluginState::Unspecified,
    };
    // Results from before issue 18, or changed by a middleware, may lack
    // the isolation fields: they read as unspecified, not as an error.
    let isolation = match value
        .get("isolation")
        .and_then(Value::as_str)
        .and_then(Isolation::from_name)
    {
        Some(Isolation::InProcess) => pb::Isolation::Inprocess,
        Some(Isolation::Process) => pb::Isolation::Process,
        None => pb::Isolation::Unspecified,
    };
    let small = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_int)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    let registrations = match value.get("registrations") {
        None => Vec::new(),
        Some(Value::List(items)) => items
            .iter()
            .map(registration)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| malformed("plugin info", value))?,
        Some(_) => return Err(malformed("plugin info", value)),
    };
    Ok(pb::PluginInfo {
        name: text("name")?,
        class_name: text("class_name")?,
        state: state.into(),
        error: text("error")?,
        path: text("path")?,
        registrations,
        isolation: isolation.into(),
        host_pid: small("host_pid"),
        restarts: small("restarts"),
    })
}

/// One entry of a plugin info's `registrations` (issue 8).
fn registration(value: &Value) -> Option<pb::RegistrationMetrics> {
    let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    let count = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_int)
            .and_then(|n| u64::try_from(n).ok())
    };
    Some(pb::RegistrationMetrics {
        kind: text("kind")?,
        target: text("target")?,
        callable: text("callable")?,
        calls: count("calls")?,
        errors: count("errors")?,
        overruns: count("overruns")?,
        skipped: count("skipped")?,
        total_ns: count("total_ns")?,
        p50_ns: count("p50_ns")?,
        p99_ns: count("p99_ns")?,
        breaker_open: value.get("breaker_open").and_then(Value::as_bool)?,
        refused: count("refused")?,
    })
}

fn malformed(what: &str, value: &Value) -> Status {
    crate::status::from_api_error(ApiError::Internal(format!(
        "{what} returned a value that is not a plugin info: {}",
        value.to_json_string()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ucs_api::{Isolation, PluginInfo, PluginState};

    #[test]
    fn plugin_info_dicts_convert_to_messages() {
        let info = PluginInfo {
            name: "example".into(),
            class_name: "Example".into(),
            state: PluginState::Failed,
            error: "Traceback".into(),
            path: "/p/example.py".into(),
            isolation: Isolation::Process,
            host_pid: Some(4321),
            restarts: 2,
        };
        let message = plugin_info(&info.to_value()).unwrap();
        assert_eq!(message.name, "example");
        assert_eq!(message.class_name, "Example");
        assert_eq!(message.state(), pb::PluginState::Failed);
        assert_eq!(message.error, "Traceback");
        assert_eq!(message.path, "/p/example.py");
        assert_eq!(message.isolation(), pb::Isolation::Process);
        assert_eq!(message.host_pid, 4321);
        assert_eq!(message.restarts, 2);
    }

    #[test]
    fn a_result_changed_by_middleware_into_junk_is_internal() {
        let status = plugin_info(&Value::Int(3)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Internal);
    }
}
