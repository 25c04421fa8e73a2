//! The Prometheus endpoint (issue 8): `GET /metrics` in the text format,
//! on its own listener (`ucs serve --metrics-listen ADDR`, off by default),
//! with the probes a service manager or a load balancer asks (issue 17
//! item 9): `GET /healthz` answers 200 while the process serves HTTP,
//! `GET /readyz` 200 only once gRPC serves and the plugins found at start
//! have started, and 503 again from the moment shutdown begins, with what
//! is missing in the body.
//!
//! Nothing is copied into Prometheus types as calls happen: one collector
//! reads the server's own counters at scrape time, so a server nobody
//! scrapes pays nothing for the endpoint.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use ucs_api::Api;

/// Reads the API's call counters, the sessions and every plugin
/// registration's numbers when Prometheus scrapes.
struct ServerCollector {
    api: Api,
}

impl fmt::Debug for ServerCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerCollector")
    }
}

fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let mut calls = encoder.encode_descriptor(
            "ucs_api_calls",
            "API calls by method and outcome",
            None,
            MetricType::Counter,
        )?;
        for (method, outcome, count) in self.api.call_counts() {
            let labels = [("method", method), ("status", outcome)];
            counter(count).encode(calls.encode_family(&labels)?)?;
        }

        let sessions = self.api.core().sessions().count();
        let sessions_encoder =
            encoder.encode_descriptor("ucs_sessions", "Open sessions", None, MetricType::Gauge)?;
        gauge(sessions as u64).encode(sessions_encoder)?;

        let registrations: Vec<_> = self
            .api
            .registrations()
            .into_iter()
            .map(|registration| {
                let numbers = registration.metrics.snapshot();
                (registration, numbers)
            })
            .collect();
        type Pick = fn(&ucs_api::metrics::MetricsSnapshot) -> u64;
        let series: [(&str, &str, MetricType, Pick); 8] = [
            (
                "ucs_plugin_calls",
                "Calls of a plugin's hook, callback or middleware",
                MetricType::Counter,
                |n| n.calls,
            ),
            (
                "ucs_plugin_errors",
                "Calls that raised or returned something unusable",
                MetricType::Counter,
                |n| n.errors,
            ),
            (
                "ucs_plugin_overruns",
                "Calls over the hook time budget",
                MetricType::Counter,
                |n| n.overruns,
            ),
            (
                "ucs_plugin_skipped",
                "Calls skipped because the breaker was open",
                MetricType::Counter,
                |n| n.skipped,
            ),
            (
                "ucs_plugin_refused",
                "Calls refused because the plugin had its bound of calls running",
                MetricType::Counter,
                |n| n.refused,
            ),
            (
                "ucs_plugin_call_p50_nanoseconds",
                "Median call time (histogram bucket bound)",
                MetricType::Gauge,
                |n| n.p50_ns,
            ),
            (
                "ucs_plugin_call_p99_nanoseconds",
                "99th percentile call time (histogram bucket bound)",
                MetricType::Gauge,
                |n| n.p99_ns,
            ),
            (
                "ucs_plugin_breaker_open",
                "1 while the registration's breaker is open",
                MetricType::Gauge,
                |n| u64::from(n.breaker_open),
            ),
        ];
        for (name, help, kind, pick) in series {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (registration, numbers) in &registrations {
                let labels = [
                    ("plugin", registration.owner.name().to_owned()),
                    ("kind", registration.kind.label().to_owned()),
                    ("target", registration.target.clone()),
                    ("callable", registration.callable.to_string()),
                ];
                let value = pick(numbers);
                match kind {
                    MetricType::Counter => counter(value).encode(family.encode_family(&labels)?)?,
                    _ => gauge(value).encode(family.encode_family(&labels)?)?,
                }
            }
        }
        Ok(())
    }
}

/// What `/readyz` answers from; `ucs serve` moves it along as it starts
/// and stops. Cheap to clone; every clone is the same state.
#[derive(Clone, Default)]
pub struct Readiness {
    inner: Arc<ReadinessState>,
}

/// The parts of readiness, each set once.
#[derive(Default)]
struct ReadinessState {
    /// gRPC accepts calls.
    serving: AtomicBool,
    /// Shutdown began: no new work should come here.
    shutting_down: AtomicBool,
    /// Says which plugins found at start are still starting (empty once the
    /// start-up loading is over); unset means there are no plugins.
    starting: OnceLock<Box<dyn Fn() -> Option<Vec<String>> + Send + Sync>>,
}

impl Readiness {
    /// gRPC serves from now on.
    pub fn grpc_serving(&self) {
        self.inner.serving.store(true, Ordering::SeqCst);
    }

    /// Shutdown began: not ready from now on.
    pub fn shutting_down(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// `starting` tells the plugins still starting, or `None` once the
    /// start-up loading is over. Set once; a second call is ignored.
    pub fn plugins(&self, starting: impl Fn() -> Option<Vec<String>> + Send + Sync + 'static) {
        let _ = self.inner.starting.set(Box::new(starting));
    }

    /// Ready, or what is missing.
    fn check(&self) -> Result<(), String> {
        let state = &*self.inner;
        if state.shutting_down.load(Ordering::SeqCst) {
            return Err("shutting down".to_owned());
        }
        if !state.serving.load(Ordering::SeqCst) {
            return Err("gRPC is not serving yet".to_owned());
        }
        match state.starting.get().and_then(|starting| starting()) {
            Some(names) => Err(format!("plugins still starting: {}", names.join(", "))),
            None => Ok(()),
        }
    }
}

/// The `/readyz` answer.
async fn ready(readiness: Readiness) -> axum::response::Response {
    match readiness.check() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(missing) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {missing}\n"),
        )
            .into_response(),
    }
}

/// Serves `GET /metrics`, `/healthz` and `/readyz` on `listener` until
/// `shutdown` completes, with `TCP_NODELAY` on every connection (see
/// `accept`).
pub async fn serve_metrics(
    listener: TcpListener,
    api: Api,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ServerCollector { api }));
    let registry = std::sync::Arc::new(registry);
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || ready(readiness.clone())))
        .route(
            "/metrics",
            get(move || {
                let registry = std::sync::Arc::clone(&registry);
                async move {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => (
                            StatusCode::OK,
                            [(
                                header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                    }
                }
            }),
        );
    axum::serve(crate::accept::metrics_listener(listener), router)
        .with_graceful_shutdown(shutdown)
        .await
}
