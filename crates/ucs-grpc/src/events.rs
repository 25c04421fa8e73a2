//! `ucs.v1.Events`: committed events streamed to subscribers.
//!
//! The core hands each event to an [`EventSink`] while its event queue is
//! locked, so the sink must return at once. [`BroadcastSink`] does: it puts
//! the event in a bounded `tokio::sync::broadcast` channel and never waits. A
//! subscriber that falls behind by more than [`EVENT_BUFFER`] events loses
//! the oldest ones (its stream shows the gap in `seq`, and the server logs
//! it); the committing thread never notices.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use ucs_api::{Api, ApiError};
use ucs_core::events::KNOWN_EVENTS;
use ucs_core::{AuditKind, Event, EventSink, RegistrationId, User};

use crate::pb;

/// How many events a subscriber may fall behind before it loses some.
pub const EVENT_BUFFER: usize = 1024;

/// How many converted messages wait per subscriber for the network.
const SUBSCRIBER_QUEUE: usize = 64;

/// Feeds committed events into the broadcast channel; never blocks.
struct BroadcastSink {
    /// Every subscriber holds a receiver of this channel.
    sender: broadcast::Sender<Arc<Event>>,
}

impl EventSink for BroadcastSink {
    fn deliver(&self, event: &Event) {
        // No subscriber: skip the clone. `send` fails only when there is no
        // receiver, which is fine to ignore.
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Arc::new(event.clone()));
        }
    }
}

/// Removes the sink from the core when the last clone of the service goes.
struct SinkRegistration {
    /// The API whose event bus holds the sink.
    api: Api,
    /// Which sink to remove.
    id: RegistrationId,
}

impl Drop for SinkRegistration {
    fn drop(&mut self) {
        self.api.core().events().remove_sink(self.id);
    }
}

/// Streams events to subscribers (SPEC section 9 `Events.Subscribe`).
#[derive(Clone)]
pub struct EventsService {
    /// Resolves the subscriber's sid.
    api: Api,
    /// Each subscription subscribes to this channel.
    sender: broadcast::Sender<Arc<Event>>,
    /// Keeps the sink registered for as long as the service lives.
    _sink: Arc<SinkRegistration>,
    /// Set to true to end every open stream, so a graceful shutdown does not
    /// wait forever for streams that never end by themselves.
    closing: Arc<watch::Sender<bool>>,
}

impl EventsService {
    /// The service over `api`; registers its sink with the core's event bus.
    pub fn new(api: Api) -> Self {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        let id = api.core().events().add_sink(Arc::new(BroadcastSink {
            sender: sender.clone(),
        }));
        let (closing, _) = watch::channel(false);
        EventsService {
            api: api.clone(),
            sender,
            _sink: Arc::new(SinkRegistration { api, id }),
            closing: Arc::new(closing),
        }
    }

    /// Ends every open stream and every stream opened from now on.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }
}

/// Which events one subscriber gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EventFilter {
    /// The names asked for; empty means every event the subscriber may see.
    names: BTreeSet<&'static str>,
    /// Whether the subscriber may see `audit.*` events: only a superuser may,
    /// as only a superuser may call `audit.list` (issue 12 item 3).
    audit: bool,
}

impl EventFilter {
    /// The filter of a subscriber who asked for `names`; asking for an audit
    /// event without being a superuser is refused, and "all" then leaves
    /// the audit events out.
    fn new(names: Vec<String>, caller: &User) -> Result<Self, ApiError> {
        let names = event_names(names)?;
        if !caller.superuser
            && let Some(audit) = names
                .iter()
                .find(|name| AuditKind::from_event_name(name).is_some())
        {
            return Err(ApiError::PermissionDenied(format!(
                "user '{}' is not a superuser, so it may not subscribe to {audit}",
                caller.username
            )));
        }
        Ok(EventFilter {
            names,
            audit: caller.superuser,
        })
    }

    fn wants(&self, event: &Event) -> bool {
        let name = event.name();
        if self.names.is_empty() {
            self.audit || AuditKind::from_event_name(name).is_none()
        } else {
            self.names.contains(name)
        }
    }
}

/// The event names a subscriber asked for; empty means all.
fn event_names(names: Vec<String>) -> Result<BTreeSet<&'static str>, ApiError> {
    names
        .iter()
        .map(|name| {
            KNOWN_EVENTS
                .into_iter()
                .find(|known| known == name)
                .ok_or_else(|| {
                    ApiError::field(
                        "events",
                        format!(
                            "unknown event {}; known events are {}",
                            ucs_core::echoed(name),
                            KNOWN_EVENTS.join(", ")
                        ),
                    )
                })
        })
        .collect()
}

/// Waits until the service is closing (or gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    // An error means the service was dropped: closing too.
    let _ = closing.wait_for(|closing| *closing).await;
}

/// Forwards matching events from the broadcast channel to one subscriber
/// until it disconnects or the service closes.
async fn forward(
    mut events: broadcast::Receiver<Arc<Event>>,
    wanted: EventFilter,
    mut closing: watch::Receiver<bool>,
    stream: mpsc::Sender<Result<pb::Event, Status>>,
) {
    loop {
        let event = tokio::select! {
            () = closed(&mut closing) => return,
            () = stream.closed() => return,
            received = events.recv() => match received {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(
                        missed,
                        "an event subscriber fell behind and lost {missed} events"
                    );
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if !wanted.wants(&event) {
            continue;
        }
        let message = pb::Event {
            name: event.name().to_owned(),
            data_json: event.data().to_json_string(),
            seq: event.seq,
        };
        tokio::select! {
            () = closed(&mut closing) => return,
            sent = stream.send(Ok(message)) => if sent.is_err() { return },
        }
    }
}

#[tonic::async_trait]
impl pb::events_server::Events for EventsService {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send + 'static>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let pb::SubscribeRequest { sid, events } = request.into_inner();
        // Resolving a sid takes two short locks and runs no Python.
        let caller = self
            .api
            .core()
            .caller(&sid)
            .map_err(|err| crate::status::from_api_error(err.into()))?;
        let wanted = EventFilter::new(events, &caller).map_err(crate::status::from_api_error)?;
        // Subscribe before answering, so every event committed after the
        // client sees the response headers reaches it.
        let receiver = self.sender.subscribe();
        let (stream, messages) = mpsc::channel(SUBSCRIBER_QUEUE);
        tokio::spawn(forward(receiver, wanted, self.closing.subscribe(), stream));
        Ok(Response::new(Box::pin(ReceiverStream::new(messages))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};
    use ucs_core::{EventPayload, Value};

    fn shared_event(seq: u64) -> Event {
        Event {
            seq,
            payload: EventPayload::SharedData {
                identificator: "queue".into(),
                data: Value::Int(1),
            },
        }
    }

    #[test]
    fn a_subscriber_that_never_reads_never_blocks_delivery() {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        let sink = BroadcastSink {
            sender: sender.clone(),
        };
        let mut stalled = sender.subscribe();
        let started = Instant::now();
        let total = 10 * EVENT_BUFFER as u64;
        for seq in 1..=total {
            sink.deliver(&shared_event(seq));
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        // The stalled subscriber lost the oldest events and is told how many.
        assert!(matches!(
            stalled.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(missed)) if missed == total - EVENT_BUFFER as u64
        ));
        assert_eq!(
            stalled.try_recv().unwrap().seq,
            total - EVENT_BUFFER as u64 + 1
        );
    }

    #[test]
    fn an_empty_filter_is_all_and_unknown_names_are_invalid() {
        assert!(event_names(Vec::new()).unwrap().is_empty());
        assert_eq!(
            event_names(vec!["agent.status".into()]).unwrap(),
            BTreeSet::from(["agent.status"])
        );
        assert!(matches!(
            event_names(vec!["agent.status".into(), "nope".into()]),
            Err(ApiError::InvalidInput(fields)) if fields.contains_key("events")
        ));
    }
}
