//! The operators' web console (issue 14), served by `ucs serve --console`
//! on the HTTP listener of `--metrics-listen`.
//!
//! The console is three hand-written static files compiled into the
//! binary and a small JSON-over-HTTP gateway onto the same [`Api`] the
//! gRPC interface calls: every request carries a session and goes through
//! the method's middleware and permission checks, so a non-superuser sees
//! in the browser exactly what the API lets them see, nothing more.
//!
//! # Layout
//! - `assets`: `index.html`, `app.js` and `app.css` (under `assets/`),
//!   embedded with `include_str!` and answered with a strict
//!   Content-Security-Policy (`default-src 'self'`): no inline script, no
//!   CDN, nothing fetched from outside at run time.
//! - `gateway`: `POST /console/api/login` (the gRPC `Auth.Login` path with
//!   the very same throttle instance), `POST /console/api/logout`,
//!   `POST /console/api/call` (`Api::call` on the blocking pool, a quick
//!   read on the worker as gRPC does) and the one mapping from
//!   [`ucs_api::ApiError`] to an HTTP status.
//! - `stream`: `GET /console/api/events`, the core's committed events as
//!   Server-Sent Events, filtered per session by [`ucs_grpc::EventFilter`]
//!   as `Events.Subscribe` is; a subscriber that falls behind or whose
//!   session closes is told why and disconnected.
//!
//! **Invariant**: the console has no way into the server but [`Api::call`],
//! the core's login and the event bus; it holds no state of its own
//! beyond the open event streams.

mod assets;
mod gateway;
mod stream;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use ucs_api::Api;
use ucs_grpc::throttle::LoginThrottle;

/// Where the console lives on the HTTP listener.
pub const CONSOLE_PATH: &str = "/console/";

/// The web console of one server: build it once, hand [`Console::router`]
/// to the HTTP listener, and call [`Console::close_streams`] when shutdown
/// begins. Cheap to clone; every clone is the same console.
#[derive(Clone)]
pub struct Console {
    /// What the gateway's handlers share.
    state: Arc<gateway::State>,
    /// The event streams' source.
    events: stream::EventStreams,
}

impl Console {
    /// The console over `api`. Logins are throttled by `throttle`, which
    /// should be the one the gRPC `Auth` service uses (see
    /// `ucs_grpc::ServeOptions::login_throttle`), so a guesser gets one
    /// allowance whichever way in it takes. Registers an event sink with
    /// the core, removed when the last clone goes.
    pub fn new(api: Api, throttle: Arc<LoginThrottle>) -> Self {
        Console {
            events: stream::EventStreams::new(api.clone()),
            state: Arc::new(gateway::State { api, throttle }),
        }
    }

    /// The routes under `/console/`: the pages and the gateway.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/console/api/login", post(gateway::login))
            .route("/console/api/logout", post(gateway::logout))
            .route("/console/api/call", post(gateway::call))
            .with_state(Arc::clone(&self.state));
        let events = Router::new()
            .route("/console/api/events", get(stream::subscribe))
            .with_state(self.events.clone());
        Router::new()
            .route("/console", get(assets::to_index))
            .route("/console/", get(assets::index))
            .route("/console/app.js", get(assets::script))
            .route("/console/app.css", get(assets::style))
            .merge(api)
            .merge(events)
    }

    /// Ends every open event stream and every one opened from now on, so
    /// a graceful shutdown of the HTTP listener does not wait for browsers
    /// that would never hang up.
    pub fn close_streams(&self) {
        self.events.close();
    }
}
