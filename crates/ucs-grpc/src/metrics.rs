//! The Prometheus endpoint (issue 8): `GET /metrics` in the text format,
//! on its own listener (`ucs serve --metrics-listen ADDR`, off by default),
//! with the probes a service manager or a load balancer asks (issue 17
//! item 9): `GET /healthz` answers 200 while the process serves HTTP,
//! `GET /readyz` 200 only once gRPC serves and the plugins found at start
//! have started, and 503 again from the moment shutdown begins, with what
//! is missing in the body.
//!
//! Nothing is copied into Prometheus types as calls happen: one collector
//! reads the server's own counters and latency histograms at scrape time,
//! so a server nobody scrapes pays nothing for the endpoint. Everything is
//! in base units (seconds, bytes) with HELP on every family, as `promtool
//! check metrics` wants (issue 17 item 4); the format follows `Accept`
//! (`exposition`).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use ucs_api::Api;
use ucs_core::metrics::HistogramSnapshot;

use crate::exposition::{Format, to_text_004};

/// What `ucs_build_info` says: which build of which code runs plugins on
/// which Python. Set by the binary, which alone knows its commit.
#[derive(Debug, Clone, Default)]
pub struct BuildInfo {
    /// The crate version, e.g. `0.1.0`.
    pub version: String,
    /// The git commit built, or `unknown`.
    pub commit: String,
    /// The CPython version plugins run on, as loaded.
    pub python: String,
}

/// Reads the API's call counters and latencies, the sessions, every plugin
/// registration's numbers and the process's when Prometheus scrapes.
struct ServerCollector {
    api: Api,
    build: BuildInfo,
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

/// The fine buckets of a latency histogram folded into every other one,
/// from about 1 µs to 17 s and the rest, in seconds: 14 series per
/// histogram is what a dashboard needs, 40 would only cost the scrape.
/// Counts are per bucket; the encoder makes them cumulative.
fn seconds_buckets(latency: &HistogramSnapshot) -> Vec<(f64, u64)> {
    const LAST_BOUND: usize = 24;
    let mut buckets = Vec::with_capacity(LAST_BOUND / 2 + 2);
    let mut pending = 0;
    for (index, count) in latency.counts.iter().enumerate() {
        pending += count;
        if index % 2 == 0
            && index <= LAST_BOUND
            && let Some(bound) = HistogramSnapshot::bound_ns(index)
        {
            buckets.push((bound as f64 / 1e9, pending));
            pending = 0;
        }
    }
    buckets.push((f64::INFINITY, pending));
    buckets
}

/// Writes one histogram sample set from `latency`.
fn histogram(
    family: &mut prometheus_client::encoding::MetricEncoder<'_>,
    latency: &HistogramSnapshot,
) -> Result<(), fmt::Error> {
    family.encode_histogram::<NoLabelSet>(
        latency.total_ns as f64 / 1e9,
        latency.count(),
        &seconds_buckets(latency),
        None,
    )
}

impl ServerCollector {
    fn encode_api(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
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
        let mut durations = encoder.encode_descriptor(
            "ucs_api_call_duration",
            "How long API calls took once their caller was known, middleware included",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (method, latency) in self.api.call_latencies() {
            histogram(
                &mut durations.encode_family(&[("method", method)])?,
                &latency,
            )?;
        }
        let sessions = self.api.core().sessions().count();
        let sessions_encoder =
            encoder.encode_descriptor("ucs_sessions", "Open sessions", None, MetricType::Gauge)?;
        gauge(sessions as u64).encode(sessions_encoder)
    }

    fn encode_plugins(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let registrations: Vec<_> = self
            .api
            .registrations()
            .into_iter()
            .map(|registration| {
                let numbers = registration.metrics.snapshot();
                let labels = [
                    ("plugin", registration.owner.name().to_owned()),
                    ("kind", registration.kind.label().to_owned()),
                    ("target", registration.target.clone()),
                    ("callable", registration.callable.to_string()),
                ];
                (labels, numbers)
            })
            .collect();
        type Pick = fn(&ucs_api::metrics::MetricsSnapshot) -> u64;
        let series: [(&str, &str, MetricType, Pick); 6] = [
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
                "ucs_plugin_breaker_open",
                "1 while the registration's breaker is open",
                MetricType::Gauge,
                |n| u64::from(n.breaker_open),
            ),
        ];
        for (name, help, kind, pick) in series {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for (labels, numbers) in &registrations {
                let value = pick(numbers);
                match kind {
                    MetricType::Counter => counter(value).encode(family.encode_family(labels)?)?,
                    _ => gauge(value).encode(family.encode_family(labels)?)?,
                }
            }
        }
        let mut durations = encoder.encode_descriptor(
            "ucs_plugin_call_duration",
            "How long calls of a plugin's hook, callback or middleware took, \
             less the time a middleware spent in the server's inner handler",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (labels, numbers) in &registrations {
            histogram(&mut durations.encode_family(labels)?, &numbers.latency)?;
        }
        Ok(())
    }

    fn encode_build(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let labels = [
            ("version", self.build.version.as_str()),
            ("commit", self.build.commit.as_str()),
            ("python", self.build.python.as_str()),
        ];
        encoder
            .encode_descriptor(
                "ucs_build",
                "The version and commit of the server and the CPython its plugins run on",
                None,
                MetricType::Info,
            )?
            .encode_info(&labels)
    }
}

/// The `process_*` families every Prometheus client library exports.
fn encode_process(encoder: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
    let Some(numbers) = crate::process::read() else {
        return Ok(());
    };
    ConstCounter::new(numbers.cpu_seconds).encode(encoder.encode_descriptor(
        "process_cpu",
        "Total user and system CPU time spent",
        Some(&Unit::Seconds),
        MetricType::Counter,
    )?)?;
    let gauges = [
        (
            "process_resident_memory",
            "Resident memory size",
            Some(Unit::Bytes),
            numbers.resident_bytes as f64,
        ),
        (
            "process_virtual_memory",
            "Virtual memory size",
            Some(Unit::Bytes),
            numbers.virtual_bytes as f64,
        ),
        (
            "process_open_fds",
            "Open file descriptors",
            None,
            numbers.open_fds as f64,
        ),
        (
            "process_threads",
            "Threads of the process",
            None,
            numbers.threads as f64,
        ),
        (
            "process_start_time",
            "Start time of the process since the Unix epoch",
            Some(Unit::Seconds),
            numbers.start_time_seconds,
        ),
    ];
    let max_fds = numbers.max_fds.map(|max| {
        (
            "process_max_fds",
            "The soft limit of open file descriptors",
            None,
            max as f64,
        )
    });
    for (name, help, unit, value) in gauges.into_iter().chain(max_fds) {
        ConstGauge::new(value).encode(encoder.encode_descriptor(
            name,
            help,
            unit.as_ref(),
            MetricType::Gauge,
        )?)?;
    }
    Ok(())
}

impl Collector for ServerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        self.encode_api(&mut encoder)?;
        self.encode_plugins(&mut encoder)?;
        self.encode_build(&mut encoder)?;
        encode_process(&mut encoder)
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
/// `accept`). `/metrics` answers in the format the `Accept` header
/// prefers (see `exposition`). `more` adds routes of its own (the web
/// console, `ucs serve --console`); its handlers may extract the peer's
/// `ConnectInfo<SocketAddr>`.
pub async fn serve_metrics(
    listener: TcpListener,
    api: Api,
    build: BuildInfo,
    readiness: Readiness,
    more: Option<Router>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ServerCollector { api, build }));
    let registry = Arc::new(registry);
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || ready(readiness.clone())))
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let registry = Arc::clone(&registry);
                async move { scrape(&registry, &headers) }
            }),
        );
    let router = match more {
        Some(more) => router.merge(more),
        None => router,
    };
    axum::serve(
        crate::accept::metrics_listener(listener),
        router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// One `/metrics` answer.
fn scrape(registry: &Registry, headers: &HeaderMap) -> axum::response::Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = Format::negotiate(accept);
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!("cannot encode the metrics: {err}");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if format == Format::Text004 {
        text = to_text_004(&text);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        text,
    )
        .into_response()
}
