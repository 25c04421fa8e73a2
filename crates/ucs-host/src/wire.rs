//! The messages of a plugin host's link, the only place that knows them.
//!
//! Both directions are one enum each: [`ToHost`] is what the server asks of
//! the host (load, stop, run a hook, callback or middleware), [`ToServer`]
//! what the plugin's `ucs` object asks of the server. Postcard is not
//! self-describing, so the core's types cross as plain mirrors here
//! ([`WireValue`] keeps int dict keys and the int/float distinction, D4)
//! rather than through the core's JSON-shaped `Serialize`.

use serde::{Deserialize, Serialize};
use ucs_api::ApiError;
use ucs_core::{
    Agent, AgentStatus, AuditKind, AuditRecord, Event, EventPayload, FieldErrors, Map, MapKey,
    PluginFailure, SharedVerdict, StatusVerdict, Value,
};
use ucs_link::Request;

/// A [`Value`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireValue {
    /// `None`.
    Null,
    /// A bool.
    Bool(bool),
    /// An int.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// A str.
    Str(String),
    /// A list.
    List(Vec<WireValue>),
    /// A dict, in order, keys typed.
    Map(Vec<(WireKey, WireValue)>),
}

/// A dict key on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireKey {
    /// An int key (D4).
    Int(i64),
    /// A str key.
    Str(String),
}

impl From<&Value> for WireValue {
    fn from(value: &Value) -> Self {
        match value {
            Value::Null => WireValue::Null,
            Value::Bool(flag) => WireValue::Bool(*flag),
            Value::Int(int) => WireValue::Int(*int),
            Value::Float(float) => WireValue::Float(*float),
            Value::Str(text) => WireValue::Str(text.clone()),
            Value::List(items) => WireValue::List(items.iter().map(WireValue::from).collect()),
            Value::Map(map) => WireValue::Map(
                map.iter()
                    .map(|(key, value)| {
                        let key = match key {
                            MapKey::Int(int) => WireKey::Int(*int),
                            MapKey::Str(text) => WireKey::Str(text.clone()),
                        };
                        (key, WireValue::from(value))
                    })
                    .collect(),
            ),
        }
    }
}

impl From<Value> for WireValue {
    fn from(value: Value) -> Self {
        WireValue::from(&value)
    }
}

impl From<WireValue> for Value {
    fn from(value: WireValue) -> Self {
        match value {
            WireValue::Null => Value::Null,
            WireValue::Bool(flag) => Value::Bool(flag),
            WireValue::Int(int) => Value::Int(int),
            // Both ends are the same build: a float here came from a Value,
            // which is always finite.
            WireValue::Float(float) => Value::Float(float),
            WireValue::Str(text) => Value::Str(text),
            WireValue::List(items) => Value::List(items.into_iter().map(Value::from).collect()),
            WireValue::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(key, value)| {
                        let key = match key {
                            WireKey::Int(int) => MapKey::Int(int),
                            WireKey::Str(text) => MapKey::Str(text),
                        };
                        (key, Value::from(value))
                    })
                    .collect::<Map>(),
            ),
        }
    }
}

/// Converts a list of values for the wire.
pub fn wire_values(values: &[Value]) -> Vec<WireValue> {
    values.iter().map(WireValue::from).collect()
}

/// Converts a list of values from the wire.
pub fn values(values: Vec<WireValue>) -> Vec<Value> {
    values.into_iter().map(Value::from).collect()
}

/// An [`Agent`] snapshot on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireAgent {
    /// User id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Display name.
    pub displayname: String,
    /// Status code (`constants.AGENT_*`).
    pub status: i64,
    /// Not-ready reason.
    pub reason: String,
}

impl From<&Agent> for WireAgent {
    fn from(agent: &Agent) -> Self {
        WireAgent {
            id: agent.id,
            username: agent.username.clone(),
            displayname: agent.displayname.clone(),
            status: agent.status.code(),
            reason: agent.reason.clone(),
        }
    }
}

impl WireAgent {
    /// The agent back, or `None` for a status code this build does not know
    /// (impossible between two ends of one build).
    pub fn into_agent(self) -> Option<Agent> {
        Some(Agent {
            id: self.id,
            username: self.username,
            displayname: self.displayname,
            status: AgentStatus::from_code(self.status)?,
            reason: self.reason,
        })
    }
}

/// An [`Event`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireEvent {
    /// Its sequence number.
    pub seq: u64,
    /// What happened.
    pub payload: WirePayload,
}

/// An [`EventPayload`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WirePayload {
    /// An agent's status changed.
    AgentStatus {
        /// The agent after the change.
        agent: WireAgent,
        /// The status code before.
        previous_status: i64,
        /// The reason before.
        previous_reason: String,
    },
    /// Shared data changed.
    SharedData {
        /// Which.
        identificator: String,
        /// The data stored.
        data: WireValue,
    },
    /// An audit record.
    Audit {
        /// Milliseconds since the epoch.
        time_ms: u64,
        /// Index into [`AuditKind::ALL`].
        kind: u8,
        /// The plugin concerned.
        plugin: String,
        /// The acting user.
        user_id: Option<i64>,
        /// What was asked.
        asked: WireValue,
        /// What happened.
        outcome: WireValue,
    },
}

impl From<&Event> for WireEvent {
    fn from(event: &Event) -> Self {
        let payload = match &event.payload {
            EventPayload::AgentStatus {
                agent,
                previous_status,
                previous_reason,
            } => WirePayload::AgentStatus {
                agent: WireAgent::from(agent),
                previous_status: previous_status.code(),
                previous_reason: previous_reason.clone(),
            },
            EventPayload::SharedData {
                identificator,
                data,
            } => WirePayload::SharedData {
                identificator: identificator.clone(),
                data: WireValue::from(data),
            },
            EventPayload::Audit(record) => WirePayload::Audit {
                time_ms: record.time_ms,
                kind: AuditKind::ALL
                    .iter()
                    .position(|kind| *kind == record.kind)
                    .and_then(|index| u8::try_from(index).ok())
                    .unwrap_or(u8::MAX),
                plugin: record.plugin.clone(),
                user_id: record.user_id,
                asked: WireValue::from(&record.asked),
                outcome: WireValue::from(&record.outcome),
            },
        };
        WireEvent {
            seq: event.seq,
            payload,
        }
    }
}

impl WireEvent {
    /// The event back; `None` for a status or audit kind this build does
    /// not know.
    pub fn into_event(self) -> Option<Event> {
        let payload = match self.payload {
            WirePayload::AgentStatus {
                agent,
                previous_status,
                previous_reason,
            } => EventPayload::AgentStatus {
                agent: agent.into_agent()?,
                previous_status: AgentStatus::from_code(previous_status)?,
                previous_reason,
            },
            WirePayload::SharedData {
                identificator,
                data,
            } => EventPayload::SharedData {
                identificator,
                data: data.into(),
            },
            WirePayload::Audit {
                time_ms,
                kind,
                plugin,
                user_id,
                asked,
                outcome,
            } => EventPayload::Audit(AuditRecord {
                time_ms,
                kind: *AuditKind::ALL.get(usize::from(kind))?,
                plugin,
                user_id,
                asked: asked.into(),
                outcome: outcome.into(),
            }),
        };
        Some(Event {
            seq: self.seq,
            payload,
        })
    }
}

/// An [`ApiError`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireApiError {
    /// See [`ApiError::Unauthenticated`].
    Unauthenticated,
    /// See [`ApiError::BadCredentials`].
    BadCredentials,
    /// See [`ApiError::PermissionDenied`].
    PermissionDenied(String),
    /// See [`ApiError::InvalidInput`], field by field.
    InvalidInput(Vec<(String, String)>),
    /// See [`ApiError::Processing`].
    Processing(String),
    /// See [`ApiError::UnknownMethod`].
    UnknownMethod(String),
    /// See [`ApiError::NotFound`].
    NotFound(String),
    /// See [`ApiError::Internal`].
    Internal(String),
    /// See [`ApiError::Busy`].
    Busy(String),
}

impl From<ApiError> for WireApiError {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Unauthenticated => WireApiError::Unauthenticated,
            ApiError::BadCredentials => WireApiError::BadCredentials,
            ApiError::PermissionDenied(message) => WireApiError::PermissionDenied(message),
            ApiError::InvalidInput(fields) => {
                WireApiError::InvalidInput(fields.into_iter().collect())
            }
            ApiError::Processing(message) => WireApiError::Processing(message),
            ApiError::UnknownMethod(name) => WireApiError::UnknownMethod(name),
            ApiError::NotFound(message) => WireApiError::NotFound(message),
            ApiError::Internal(message) => WireApiError::Internal(message),
            ApiError::Busy(message) => WireApiError::Busy(message),
        }
    }
}

impl From<WireApiError> for ApiError {
    fn from(error: WireApiError) -> Self {
        match error {
            WireApiError::Unauthenticated => ApiError::Unauthenticated,
            WireApiError::BadCredentials => ApiError::BadCredentials,
            WireApiError::PermissionDenied(message) => ApiError::PermissionDenied(message),
            WireApiError::InvalidInput(fields) => {
                ApiError::InvalidInput(fields.into_iter().collect::<FieldErrors>())
            }
            WireApiError::Processing(message) => ApiError::Processing(message),
            WireApiError::UnknownMethod(name) => ApiError::UnknownMethod(name),
            WireApiError::NotFound(message) => ApiError::NotFound(message),
            WireApiError::Internal(message) => ApiError::Internal(message),
            WireApiError::Busy(message) => ApiError::Busy(message),
        }
    }
}

/// A [`StatusVerdict`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireStatusVerdict {
    /// H3.
    LetThrough,
    /// H4.
    Rewrite {
        /// Status code.
        status: i64,
        /// Reason.
        reason: String,
    },
    /// H5.
    Block {
        /// Why.
        reason: String,
    },
    /// H6.
    Failed(String),
}

impl From<StatusVerdict> for WireStatusVerdict {
    fn from(verdict: StatusVerdict) -> Self {
        match verdict {
            StatusVerdict::LetThrough => WireStatusVerdict::LetThrough,
            StatusVerdict::Rewrite { status, reason } => WireStatusVerdict::Rewrite {
                status: status.code(),
                reason,
            },
            StatusVerdict::Block { reason } => WireStatusVerdict::Block { reason },
            StatusVerdict::Failed(failure) => WireStatusVerdict::Failed(failure.message),
        }
    }
}

impl From<WireStatusVerdict> for StatusVerdict {
    fn from(verdict: WireStatusVerdict) -> Self {
        match verdict {
            WireStatusVerdict::LetThrough => StatusVerdict::LetThrough,
            WireStatusVerdict::Rewrite { status, reason } => match AgentStatus::from_code(status) {
                Some(status) => StatusVerdict::Rewrite { status, reason },
                None => StatusVerdict::Failed(PluginFailure::new(format!(
                    "plugin host sent unknown status {status}"
                ))),
            },
            WireStatusVerdict::Block { reason } => StatusVerdict::Block { reason },
            WireStatusVerdict::Failed(message) => {
                StatusVerdict::Failed(PluginFailure::new(message))
            }
        }
    }
}

/// A [`SharedVerdict`] on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireSharedVerdict {
    /// S2.
    Store(WireValue),
    /// S3.
    Block {
        /// Why.
        reason: String,
    },
    /// S4.
    Failed(String),
}

impl From<SharedVerdict> for WireSharedVerdict {
    fn from(verdict: SharedVerdict) -> Self {
        match verdict {
            SharedVerdict::Store(value) => WireSharedVerdict::Store(value.into()),
            SharedVerdict::Block { reason } => WireSharedVerdict::Block { reason },
            SharedVerdict::Failed(failure) => WireSharedVerdict::Failed(failure.message),
        }
    }
}

impl From<WireSharedVerdict> for SharedVerdict {
    fn from(verdict: WireSharedVerdict) -> Self {
        match verdict {
            WireSharedVerdict::Store(value) => SharedVerdict::Store(value.into()),
            WireSharedVerdict::Block { reason } => SharedVerdict::Block { reason },
            WireSharedVerdict::Failed(message) => {
                SharedVerdict::Failed(PluginFailure::new(message))
            }
        }
    }
}

/// A host's registration of one callable, numbered by the host; the server
/// names it back when it calls it.
pub type HostRegistration = u64;

/// One plugin version for a host to load: everything the in-process loader
/// has when it loads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireLoad {
    /// The module name.
    pub name: String,
    /// The file.
    pub path: String,
    /// The file's bytes as the server read them (a failed reload brings
    /// back exactly the running version's); Python decodes them.
    pub source: Vec<u8>,
    /// The plugins directory, for `sys.path`.
    pub plugins_dir: String,
    /// The plugin's settings for this version (`ucs.config`).
    pub config: WireValue,
    /// The load generation of this version (its `Owner`).
    pub generation: u64,
}

/// What the server asks of a plugin host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToHost {
    /// Import, construct and start the plugin (P2-P5), as the in-process
    /// loader would.
    Load(WireLoad),
    /// Call `stop` and join a Thread plugin (L2, L3).
    Stop {
        /// How long `stop` may take.
        stop_timeout_ms: u64,
        /// How long the thread may take to end after it.
        join_timeout_ms: u64,
    },
    /// Run the status hook (H2).
    StatusHook {
        /// Which.
        registration: HostRegistration,
        /// The agent before the change.
        agent: WireAgent,
        /// The requested status code.
        status: i64,
        /// The requested reason.
        reason: String,
    },
    /// Run a shared-data hook (S2).
    SharedHook {
        /// Which.
        registration: HostRegistration,
        /// The identificator.
        identificator: String,
        /// The data before.
        old: WireValue,
        /// The data requested.
        new: WireValue,
    },
    /// Run an event callback (E2).
    Event {
        /// Which.
        registration: HostRegistration,
        /// The event.
        event: WireEvent,
    },
    /// Run a middleware (M2); its `handler` calls back with
    /// [`ToServer::Proceed`] naming `chain`.
    Middleware {
        /// Which.
        registration: HostRegistration,
        /// The server's handle on the rest of the chain.
        chain: u64,
        /// The method's dotted name, for log lines.
        method: String,
        /// `(caller, *params)`.
        args: Vec<WireValue>,
    },
}

/// What a plugin's `Load` came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireLoadOutcome {
    /// Running, an instance of this class.
    Started {
        /// The class `UCS_PLUGIN` names.
        class_name: String,
    },
    /// The file has no `UCS_PLUGIN` (D1).
    NoPluginVariable,
    /// It failed to import, construct or start (L1).
    Failed {
        /// The class, if known.
        class_name: String,
        /// What went wrong, with the traceback.
        error: String,
    },
}

/// What `stop` came to, mirroring [`ucs_pybridge::StopReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireStopReport {
    /// `stop` returned; its error, and whether the thread is still running
    /// (with the join timeout).
    Returned {
        /// `stop`'s exception, if it raised.
        stop_error: Option<String>,
        /// Whether the plugin is a Thread.
        is_thread: bool,
        /// Set if the thread outlived the join timeout (ms).
        still_running_ms: Option<u64>,
    },
    /// `stop` did not return in time (ms).
    TimedOut(u64),
    /// `stop` could not be run.
    NotRun(String),
}

/// The host's answers, one variant per [`ToHost`] request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum HostReply {
    /// To `Load`.
    Loaded(WireLoadOutcome),
    /// To `Stop`.
    Stopped(WireStopReport),
    /// To `StatusHook`.
    Status(WireStatusVerdict),
    /// To `SharedHook`.
    Shared(WireSharedVerdict),
    /// To `Event`: the callback's failure, if it failed (D5).
    Event(Option<String>),
    /// To `Middleware`.
    Middleware(Result<WireValue, WireApiError>),
    /// The plugin removed the registration while the call was on its way:
    /// the server goes on as if it had never been called.
    Unregistered,
    /// The request did not fit the host's state.
    Refused(String),
}

impl Request for ToHost {
    type Response = HostReply;
}

/// A log level on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireLevel {
    /// TRACE.
    Trace,
    /// DEBUG.
    Debug,
    /// INFO.
    Info,
    /// WARN.
    Warn,
    /// ERROR.
    Error,
}

/// What a plugin host asks of the server: the plugin's `ucs` object, step
/// by step (I1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToServer {
    /// A log record of the host (a notice: no reply).
    Log {
        /// Its level.
        level: WireLevel,
        /// The message with its fields, as the host formatted it.
        message: String,
    },
    /// `ucs.agents.getAgents()`.
    Agents,
    /// `ucs.tree.getUsers(field)`.
    UserField {
        /// The field.
        field: String,
    },
    /// `ucs.shared.get(identificator)`.
    SharedGet {
        /// The identificator.
        identificator: String,
    },
    /// `ucs.sid`.
    Sid,
    /// `ucs.api.x.y(sid, *params)`.
    Call {
        /// The session.
        sid: String,
        /// The dotted method name.
        method: String,
        /// The parameters.
        params: Vec<WireValue>,
    },
    /// `ucs.addCallback(event, callback)`.
    AddCallback {
        /// The event.
        event: String,
        /// The host's number for it.
        registration: HostRegistration,
        /// The callable, e.g. `Plugin.on_status()`.
        describe: String,
    },
    /// `ucs.removeCallback`, after the host found the equal one.
    RemoveCallback {
        /// The host's number for it.
        registration: HostRegistration,
    },
    /// `ucs.agents.addChangeStatusHook(hook)`.
    AddStatusHook {
        /// The host's number for it.
        registration: HostRegistration,
        /// The callable.
        describe: String,
    },
    /// `ucs.agents.removeChangeStatusHook()`.
    RemoveStatusHook,
    /// `ucs.shared.addChangeHook(identificator, hook)`.
    AddSharedHook {
        /// The identificator.
        identificator: String,
        /// The host's number for it.
        registration: HostRegistration,
        /// The callable.
        describe: String,
    },
    /// `ucs.shared.removeChangeHook(identificator)`.
    RemoveSharedHook {
        /// The identificator.
        identificator: String,
    },
    /// `ucs.api.addMiddleware(method, middleware)`.
    AddMiddleware {
        /// The dotted method name.
        method: String,
        /// The host's number for it.
        registration: HostRegistration,
        /// The callable.
        describe: String,
    },
    /// `ucs.api.removeMiddleware`, after the host found the equal one.
    RemoveMiddleware {
        /// The host's number for it.
        registration: HostRegistration,
    },
    /// A middleware's `handler(*args)`: the rest of the chain `chain`.
    Proceed {
        /// The chain, as [`ToHost::Middleware`] named it.
        chain: u64,
        /// `(caller, *params)`.
        args: Vec<WireValue>,
    },
}

/// The server's answers to [`ToServer`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ServerReply {
    /// Done, nothing to return.
    Done,
    /// One value.
    Value(WireValue),
    /// A list of values (agents).
    Values(Vec<WireValue>),
    /// `(user id, field)` pairs.
    Users(Vec<(i64, WireValue)>),
    /// A session id.
    Sid(String),
}

impl Request for ToServer {
    type Response = Result<ServerReply, WireApiError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
        let bytes = postcard::to_stdvec(value).expect("encodes");
        postcard::from_bytes(&bytes).expect("decodes")
    }

    #[test]
    fn values_cross_the_wire_exactly_int_keys_and_float_ints_included() {
        let value =
            Value::parse_json(r#"{"a": [1, 2.0, "x", null, true], "b": {"c": -3}}"#).expect("json");
        let mut map = Map::default();
        map.insert(MapKey::Int(2), value.clone());
        map.insert(MapKey::Str("2".to_owned()), Value::Float(0.5));
        let value = Value::Map(map);
        let back: Value = round_trip(&WireValue::from(&value)).into();
        assert_eq!(back, value);
    }
}
