//! The Prometheus endpoint (issue 8): `GET /metrics` in the text format,
//! on its own listener (`ucs serve --metrics-listen ADDR`, off by default).
//!
//! Nothing is copied into Prometheus types as calls happen: one collector
//! reads the server's own counters at scrape time, so a server nobody
//! scrapes pays nothing for the endpoint.

use std::fmt;
use std::future::Future;

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

/// Serves `GET /metrics` on `listener` until `shutdown` completes, with
/// `TCP_NODELAY` on every connection (see `accept`).
pub async fn serve_metrics(
    listener: TcpListener,
    api: Api,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ServerCollector { api }));
    let registry = std::sync::Arc::new(registry);
    let router = Router::new().route(
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
