//! `ucs.v1.Events`: committed events streamed to subscribers.
//!
//! The core hands each event to an [`EventSink`] while its event queue is
//! locked, so the sink must return at once. [`BroadcastSink`] does: it puts
//! the event in a bounded `tokio::sync::broadcast` channel and never waits;
//! the committing thread never notices a slow subscriber.
//!
//! A subscriber is not kept behind forever (issue 15 item 14): one that
//! falls more than [`EVENT_BUFFER`] events behind, or whose queue stays
//! full for [`STALL_LIMIT`] (it stopped reading), is disconnected with
//! RESOURCE_EXHAUSTED saying why and how far behind it was, ahead of the
//! events still queued for it, and the server logs it with the user. It
//! then learns that it lost events, rather than finding a gap in `seq`, and
//! what it held (its queue, its task) is freed.

use std::collections::BTreeSet;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use ucs_api::{Api, ApiError};
use ucs_core::events::KNOWN_EVENTS;
use ucs_core::{AuditKind, Event, EventSink, RegistrationId, User};

use crate::pb;

/// How many events a subscriber may fall behind before it loses some.
pub const EVENT_BUFFER: usize = 1024;

/// How many converted messages wait per subscriber for the network.
const SUBSCRIBER_QUEUE: usize = 64;

/// How long a subscriber's queue may stay full before it is disconnected:
/// long enough for a client on a slow link to catch up, short enough that
/// one that stopped reading does not hold its memory for good.
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(10);

/// Why a subscriber was disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    /// It fell this many events behind the broadcast channel.
    Lagged(u64),
    /// Its queue stayed full for [`STALL_LIMIT`].
    Stalled,
    /// Its session was closed.
    SessionClosed,
}

impl Dropped {
    /// The status its stream ends with.
    fn status(self) -> Status {
        match self {
            Dropped::Lagged(missed) => Status::resource_exhausted(format!(
                "this subscriber fell {missed} events behind (the server keeps {EVENT_BUFFER}) \
                 and was disconnected; subscribe again and re-read what you need"
            )),
            Dropped::Stalled => Status::resource_exhausted(format!(
                "this subscriber read nothing for {}s while {SUBSCRIBER_QUEUE} events waited \
                 for it and was disconnected; subscribe again and re-read what you need",
                STALL_LIMIT.as_secs()
            )),
            Dropped::SessionClosed => Status::unauthenticated(
                "the session of this subscription was closed (logged out, expired, or its user's \
                 password or role changed); log in and subscribe again",
            ),
        }
    }
}

/// The stream a subscriber reads: its queued events, unless it was
/// disconnected, in which case the reason comes first and ends it (the
/// events queued behind it would only delay the news).
struct Subscription {
    /// The events queued for the network.
    messages: mpsc::Receiver<pb::Event>,
    /// Fires once if the subscriber is disconnected; `None` once it did or
    /// its sender went without firing.
    dropped: Option<oneshot::Receiver<Status>>,
    /// The stream has ended.
    ended: bool,
}

impl Stream for Subscription {
    type Item = Result<pb::Event, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(dropped) = self.dropped.as_mut()
            && let Poll::Ready(outcome) = Pin::new(dropped).poll(cx)
        {
            self.dropped = None;
            if let Ok(status) = outcome {
                self.ended = true;
                return Poll::Ready(Some(Err(status)));
            }
        }
        self.messages.poll_recv(cx).map(|message| message.map(Ok))
    }
}

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

/// Every committed event as a broadcast channel, fed by a sink on the
/// core's event bus that never blocks a commit ([`BroadcastSink`]); the
/// sink is removed when the last clone goes. The gRPC event stream and the
/// web console's each read one.
#[derive(Clone)]
pub struct EventBroadcast {
    /// Each subscription subscribes to this channel.
    sender: broadcast::Sender<Arc<Event>>,
    /// Keeps the sink registered for as long as a clone lives.
    _sink: Arc<SinkRegistration>,
}

impl EventBroadcast {
    /// Registers a sink with `api`'s event bus, buffering [`EVENT_BUFFER`]
    /// events per subscriber.
    pub fn new(api: &Api) -> Self {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        let id = api.core().events().add_sink(Arc::new(BroadcastSink {
            sender: sender.clone(),
        }));
        EventBroadcast {
            sender,
            _sink: Arc::new(SinkRegistration {
                api: api.clone(),
                id,
            }),
        }
    }

    /// Every event committed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }
}

/// Streams events to subscribers (SPEC section 9 `Events.Subscribe`).
#[derive(Clone)]
pub struct EventsService {
    /// Resolves the subscriber's sid.
    api: Api,
    /// What each subscription reads.
    events: EventBroadcast,
    /// Set to true to end every open stream, so a graceful shutdown does not
    /// wait forever for streams that never end by themselves.
    closing: Arc<watch::Sender<bool>>,
}

impl EventsService {
    /// The service over `api`; registers its sink with the core's event bus.
    pub fn new(api: Api) -> Self {
        let (closing, _) = watch::channel(false);
        EventsService {
            events: EventBroadcast::new(&api),
            api,
            closing: Arc::new(closing),
        }
    }

    /// Ends every open stream and every stream opened from now on.
    pub fn close_streams(&self) {
        self.closing.send_replace(true);
    }
}

/// Which events one subscriber gets; the web console's event stream
/// (`ucs-console`) filters with this too, so both streams show a user the
/// same events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
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
    pub fn new(names: Vec<String>, caller: &User) -> Result<Self, ApiError> {
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

    /// Whether this subscriber gets `event`.
    pub fn wants(&self, event: &Event) -> bool {
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

/// How often a subscriber's session is checked: a stream whose session was
/// closed (logout, a password change, a lost role) ends within this.
const SESSION_CHECK: Duration = Duration::from_secs(1);

/// Who reads one stream: the session it was opened with, and its user.
struct Subscriber {
    /// Resolves the session.
    api: Api,
    /// The session the stream was opened with.
    sid: String,
    /// Its user's name, for the log.
    username: String,
}

impl Subscriber {
    /// Whether the session is still open. An open stream is a session in
    /// use, so this refreshes its idle timer as a call would.
    fn session_open(&self) -> bool {
        self.api.core().caller(&self.sid).is_ok()
    }
}

/// Forwards matching events from the broadcast channel to one subscriber
/// until it disconnects, the service closes, its session is closed, or it
/// is too far behind (then `dropped` tells its stream why).
async fn forward(
    mut events: broadcast::Receiver<Arc<Event>>,
    wanted: EventFilter,
    mut closing: watch::Receiver<bool>,
    stream: mpsc::Sender<pb::Event>,
    subscriber: Subscriber,
    dropped: oneshot::Sender<Status>,
) {
    let mut session_check = tokio::time::interval(SESSION_CHECK);
    session_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let why = loop {
        let event = tokio::select! {
            () = closed(&mut closing) => return,
            () = stream.closed() => return,
            _ = session_check.tick() => {
                if subscriber.session_open() {
                    continue;
                }
                break Dropped::SessionClosed;
            }
            received = events.recv() => match received {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => break Dropped::Lagged(missed),
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
            sent = tokio::time::timeout(STALL_LIMIT, stream.send(message)) => match sent {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => break Dropped::Stalled,
            },
        }
    };
    let username = &subscriber.username;
    let status = why.status();
    tracing::warn!(
        user = %username,
        "event subscriber of user '{username}' disconnected: {}",
        status.message()
    );
    // Fails only if the stream is already gone, which is the same end.
    let _ = dropped.send(status);
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
        let receiver = self.events.subscribe();
        let (stream, messages) = mpsc::channel(SUBSCRIBER_QUEUE);
        let (dropped, dropped_signal) = oneshot::channel();
        tokio::spawn(forward(
            receiver,
            wanted,
            self.closing.subscribe(),
            stream,
            Subscriber {
                api: self.api.clone(),
                sid,
                username: caller.username.clone(),
            },
            dropped,
        ));
        Ok(Response::new(Box::pin(Subscription {
            messages,
            dropped: Some(dropped_signal),
            ended: false,
        })))
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

    /// A subscriber more than [`EVENT_BUFFER`] events behind is told it was
    /// disconnected and how far behind it was, ahead of what is queued for
    /// it, and its stream then ends: no silent gap in `seq`.
    #[tokio::test]
    async fn a_subscriber_past_the_buffer_is_disconnected_and_told_how_far_behind() {
        let (sender, _) = broadcast::channel(EVENT_BUFFER);
        let receiver = sender.subscribe();
        let total = EVENT_BUFFER as u64 + 100;
        for seq in 1..=total {
            sender
                .send(Arc::new(shared_event(seq)))
                .expect("a receiver");
        }
        let (stream, messages) = mpsc::channel(SUBSCRIBER_QUEUE);
        let (dropped, dropped_signal) = oneshot::channel();
        let (_closing, closing) = watch::channel(false);
        let wanted = EventFilter {
            names: BTreeSet::new(),
            audit: false,
        };
        let core = Arc::new(ucs_core::Core::new(ucs_core::CoreConfig::default()));
        core.directory().ensure_admin("admin-pass").expect("admin");
        let (sid, _) = core.login("admin", "admin-pass").expect("login");
        let subscriber = Subscriber {
            api: Api::new(core),
            sid,
            username: "admin".into(),
        };
        forward(receiver, wanted, closing, stream, subscriber, dropped).await;
        let mut subscription = Subscription {
            messages,
            dropped: Some(dropped_signal),
            ended: false,
        };
        let first = std::future::poll_fn(|cx| Pin::new(&mut subscription).poll_next(cx)).await;
        let status = first.expect("an item").expect_err("the reason first");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(
            status.message().contains("fell 100 events behind"),
            "{status:?}"
        );
        let next = std::future::poll_fn(|cx| Pin::new(&mut subscription).poll_next(cx)).await;
        assert!(next.is_none(), "the stream goes on after the reason");
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
