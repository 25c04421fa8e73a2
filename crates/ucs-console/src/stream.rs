//! `GET /console/api/events`: committed events as Server-Sent Events.
//!
//! The source is an [`ucs_grpc::EventBroadcast`], as for gRPC `Events.Subscribe`: a
//! sink puts each committed event in a bounded broadcast channel and never
//! waits, so a slow browser never slows a commit. Each stream is filtered
//! by [`EventFilter`] for its session's user (audit events reach
//! superusers only), re-checks its session every second and is
//! disconnected, told why in a `ucs.closed` event, when it falls too far
//! behind, stops reading or its session closes. A browser's `EventSource`
//! cannot send headers, hence the sid in the query (`?sid=..&events=a,b`);
//! the bearer header works too.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use ucs_api::{Api, ApiError};
use ucs_core::Event;
use ucs_grpc::{EVENT_BUFFER, EventFilter};

use crate::gateway::{bearer_sid, error_response};

/// How many converted events wait per browser for the network.
const SUBSCRIBER_QUEUE: usize = 64;

/// How long a browser's queue may stay full before it is disconnected, as
/// for gRPC subscribers.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// How often a stream's session is checked, as for gRPC subscribers.
const SESSION_CHECK: Duration = Duration::from_secs(1);

/// The name of the last event of a stream the server ended, whose data is
/// `{code, message}`: the browser should not reconnect blindly.
const CLOSED_EVENT: &str = "ucs.closed";

/// The source of every console event stream.
#[derive(Clone)]
pub(crate) struct EventStreams {
    /// Resolves the subscriber's sid.
    api: Api,
    /// What each stream reads (the same kind of channel the gRPC stream
    /// reads, with its own sink).
    events: ucs_grpc::EventBroadcast,
    /// Set to true to end every open stream at shutdown.
    closing: Arc<watch::Sender<bool>>,
}

impl EventStreams {
    /// Registers the sink with `api`'s event bus.
    pub(crate) fn new(api: Api) -> Self {
        let (closing, _) = watch::channel(false);
        EventStreams {
            events: ucs_grpc::EventBroadcast::new(&api),
            api,
            closing: Arc::new(closing),
        }
    }

    /// Ends every open stream and every one opened from now on.
    pub(crate) fn close(&self) {
        self.closing.send_replace(true);
    }
}

/// One query parameter, percent-decoded (`+` is a space, as forms send it).
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

/// `%41` is `A`; a malformed escape is kept as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(index + 1..index + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok());
                if let Some(byte) = hex {
                    decoded.push(byte);
                    index += 2;
                } else {
                    decoded.push(b'%');
                }
            }
            byte => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The `ucs.closed` event saying why the server ended a stream.
fn closed_event(error: ApiError, code: &str) -> SseEvent {
    let data = serde_json::json!({"code": code, "message": error.to_string()});
    SseEvent::default()
        .event(CLOSED_EVENT)
        .data(data.to_string())
}

/// `GET /console/api/events?sid=SID&events=a,b`: the events the session
/// may see (all of them when `events` is empty or absent) from the moment
/// the answer's headers are sent. A bad sid is 401, an unknown event name
/// 400, an audit event asked for by a non-superuser 403, before any
/// stream starts.
pub(crate) async fn subscribe(
    State(streams): State<EventStreams>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(sid) = bearer_sid(&headers).or_else(|| query_param(&uri, "sid")) else {
        return error_response(ApiError::Unauthenticated);
    };
    let names: Vec<String> = query_param(&uri, "events")
        .map(|names| {
            names
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    // Resolving a sid takes two short locks and runs no Python.
    let caller = match streams.api.core().caller(&sid) {
        Ok(caller) => caller,
        Err(error) => return error_response(error.into()),
    };
    let wanted = match EventFilter::new(names, &caller) {
        Ok(wanted) => wanted,
        Err(error) => return error_response(error),
    };
    // Subscribe before answering, so every event committed after the
    // browser sees the headers (its EventSource `open`) reaches it.
    let receiver = streams.events.subscribe();
    let (stream, messages) = mpsc::channel(SUBSCRIBER_QUEUE);
    tokio::spawn(forward(
        receiver,
        wanted,
        streams.closing.subscribe(),
        stream,
        Subscriber {
            api: streams.api.clone(),
            sid,
            username: caller.username,
        },
    ));
    let mut answer = Sse::new(ReceiverStream::new(messages))
        .keep_alive(KeepAlive::default())
        .into_response();
    answer.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    answer
}

/// Who reads one stream.
struct Subscriber {
    /// Resolves the session.
    api: Api,
    /// The session the stream was opened with.
    sid: String,
    /// Its user's name, for the log.
    username: String,
}

/// Forwards matching events to one browser until it hangs up, the console
/// closes, its session closes, or it is too far behind; in the last two
/// cases a `ucs.closed` event says why before the stream ends.
async fn forward(
    mut events: broadcast::Receiver<Arc<Event>>,
    wanted: EventFilter,
    mut closing: watch::Receiver<bool>,
    stream: mpsc::Sender<Result<SseEvent, Infallible>>,
    subscriber: Subscriber,
) {
    let mut session_check = tokio::time::interval(SESSION_CHECK);
    session_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (why, code) = loop {
        let event = tokio::select! {
            // An error means the console was dropped: closing too.
            _ = closing.wait_for(|closing| *closing) => return,
            () = stream.closed() => return,
            _ = session_check.tick() => {
                // An open stream is a session in use: this refreshes its
                // idle timer as a call would.
                if subscriber.api.core().caller(&subscriber.sid).is_ok() {
                    continue;
                }
                break (ApiError::Unauthenticated, "UNAUTHENTICATED");
            }
            received = events.recv() => match received {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => break (
                    ApiError::Busy(format!(
                        "this stream fell {missed} events behind (the server keeps \
                         {EVENT_BUFFER}) and was disconnected; reload to catch up"
                    )),
                    "RESOURCE_EXHAUSTED",
                ),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if !wanted.wants(&event) {
            continue;
        }
        let message = SseEvent::default()
            .event(event.name())
            .id(event.seq.to_string())
            .data(event.data().to_json_string());
        match tokio::time::timeout(STALL_LIMIT, stream.send(Ok(message))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                tracing::warn!(
                    user = %subscriber.username,
                    "console event stream of user '{}' read nothing for {}s and was disconnected",
                    subscriber.username,
                    STALL_LIMIT.as_secs()
                );
                return;
            }
        }
    };
    tracing::warn!(
        user = %subscriber.username,
        "console event stream of user '{}' disconnected: {why}",
        subscriber.username
    );
    // Fails only if the browser is already gone, which is the same end.
    let _ = stream.try_send(Ok(closed_event(why, code)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_decoded() {
        let uri: Uri = "/console/api/events?sid=a%2Bb&events=agent.status%2Caudit.plugin_load"
            .parse()
            .expect("a uri");
        assert_eq!(query_param(&uri, "sid").as_deref(), Some("a+b"));
        assert_eq!(
            query_param(&uri, "events").as_deref(),
            Some("agent.status,audit.plugin_load")
        );
        assert_eq!(query_param(&uri, "nope"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz+x"), "%zz x");
    }
}
