//! The gRPC server: the `ucs.v1` services, reflection, health, limits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tower::util::MapResponseLayer;
use ucs_api::Api;

use crate::pb::api_server::ApiServer;
use crate::pb::auth_server::AuthServer;
use crate::pb::events_server::EventsServer;
use crate::pb::plugins_server::PluginsServer;
use crate::throttle::{LoginThrottle, ThrottleConfig};
use crate::{ApiService, AuthService, EventsService, PluginsService, accept, codec_status};

/// The largest message the server decodes or encodes: far above any real
/// request, low enough that one client cannot make the server buffer a
/// huge document.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How long [`serve`] lets calls in flight finish after shutdown starts;
/// then it closes their connections and returns.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service rejected a descriptor set (a build bug).
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("gRPC transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// A certificate chain and its private key, both PEM, for TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The certificate chain, leaf first.
    pub cert_pem: Vec<u8>,
    /// The private key of the leaf certificate.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    /// Never prints the private key, e.g. into a log of the settings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// How [`serve_with`] serves; the default is plaintext with the default
/// login throttle.
#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Serve TLS (rustls) with this identity instead of plaintext HTTP/2.
    pub tls: Option<TlsIdentity>,
    /// How failed logins are throttled.
    pub throttle: ThrottleConfig,
    /// The throttle to use instead of a new one made from `throttle`, when
    /// another way in (the web console) logs users in too.
    pub login_throttle: Option<Arc<LoginThrottle>>,
}

/// [`serve_with`] with the default options: plaintext, default throttle.
pub async fn serve(
    listener: TcpListener,
    api: Api,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_with(listener, api, ServeOptions::default(), shutdown).await
}

/// Serves every `ucs.v1` service over `api` on `listener` until `shutdown`
/// resolves, then stops accepting, ends event streams and waits for calls in
/// flight, at most [`SHUTDOWN_GRACE`].
///
/// The caller binds the listener, so tests can bind `127.0.0.1:0` and read
/// the port. Every accepted connection gets `TCP_NODELAY` (see `accept`).
/// Health reports SERVING for the server (`""`) and for each
/// `ucs.v1` service while this runs, and NOT_SERVING once shutdown starts.
pub async fn serve_with(
    listener: TcpListener,
    api: Api,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let events = EventsService::new(api.clone());

    let reflection_v1 = crate::reflection::v1()?;
    let reflection_v1alpha = crate::reflection::v1alpha()?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthServer<AuthService>>().await;
    health.set_serving::<PluginsServer<PluginsService>>().await;
    health.set_serving::<ApiServer<ApiService>>().await;
    health.set_serving::<EventsServer<EventsService>>().await;

    let closing_events = events.clone();
    let grace_started = Arc::new(Notify::new());
    let start_grace = Arc::clone(&grace_started);
    let on_shutdown = async move {
        shutdown.await;
        start_grace.notify_one();
        tracing::info!("gRPC server shutting down");
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        health.set_not_serving::<AuthServer<AuthService>>().await;
        health
            .set_not_serving::<PluginsServer<PluginsService>>()
            .await;
        health.set_not_serving::<ApiServer<ApiService>>().await;
        health
            .set_not_serving::<EventsServer<EventsService>>()
            .await;
        closing_events.close_streams();
    };

    let auth = match options.login_throttle {
        Some(throttle) => AuthService::with_shared_throttle(api.clone(), throttle),
        None => AuthService::with_throttle(api.clone(), options.throttle),
    };
    let mut builder = Server::builder();
    if let Some(tls) = options.tls {
        builder = builder.tls_config(
            ServerTlsConfig::new().identity(Identity::from_pem(tls.cert_pem, tls.key_pem)),
        )?;
    }
    let server = builder
        // tonic's codec answers oversized and undecodable requests itself,
        // with codes section 9 does not use; see `codec_status`.
        .layer(MapResponseLayer::new(codec_status::rewrite))
        .add_service(
            AuthServer::new(auth)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            PluginsServer::new(PluginsService::new(api.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            ApiServer::new(ApiService::new(api))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            EventsServer::new(events)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(accept::grpc_incoming(listener), on_shutdown);
    let grace_over = async {
        grace_started.notified().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served?,
        () = grace_over => tracing::warn!(
            "calls still running {SHUTDOWN_GRACE:?} after shutdown started; closing their connections"
        ),
    }
    Ok(())
}
