//! The load client: N `Api.Call` requests in flight, latency of each.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use ucs_grpc::pb;
use ucs_grpc::pb::api_client::ApiClient;

/// HTTP/2 connections the calls are spread over: more than one, as a real
/// client fleet would open, few enough that connection setup is not measured.
const CONNECTIONS: usize = 2;

/// The client's runtime: one thread, so the client takes as little of the
/// two cores as it can and the same share against every server.
pub(crate) fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A server and the call to load it with.
#[derive(Clone)]
pub(crate) struct Target {
    /// Connected channels, one per connection.
    channels: Vec<Channel>,
    /// The request every call sends.
    request: pb::CallRequest,
    /// When set, call `n` of a run sends `args[n % len]` instead of the
    /// request's own `args_json`: a load that touches every agent.
    args: Option<Arc<[String]>>,
}

impl Target {
    /// Connects to `url` (loopback only) for calls of `method` with `sid`.
    pub(crate) async fn connect(url: &str, sid: &str, method: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            url.starts_with("http://127.") || url.starts_with("http://localhost"),
            "load is only ever sent to loopback, not {url}"
        );
        let mut channels = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            channels.push(
                Endpoint::from_shared(url.to_owned())?
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true)
                    .connect()
                    .await?,
            );
        }
        Ok(Target {
            channels,
            request: pb::CallRequest {
                sid: sid.to_owned(),
                method: method.to_owned(),
                args_json: String::new(),
            },
            args: None,
        })
    }

    /// The same target sending each of `args` (JSON lists) in turn.
    pub(crate) fn cycling(mut self, args: Vec<String>) -> Self {
        self.args = (!args.is_empty()).then(|| Arc::from(args));
        self
    }

    /// The same target calling with `args_json` (a JSON list).
    pub(crate) fn with_args(mut self, args_json: &str) -> Self {
        args_json.clone_into(&mut self.request.args_json);
        self
    }

    /// One call; the answer's `result_json`.
    pub(crate) async fn call_once(&self) -> Result<String, tonic::Status> {
        let mut client = ApiClient::new(self.channels[0].clone());
        Ok(client
            .call(self.request.clone())
            .await?
            .into_inner()
            .result_json)
    }
}

/// What one load run measured.
#[derive(Debug, Clone)]
pub(crate) struct LoadStats {
    /// Calls that finished, successfully, inside the measured window.
    pub(crate) calls: usize,
    /// Calls that failed inside the measured window.
    pub(crate) errors: usize,
    /// `calls` per second of the window.
    pub(crate) throughput: f64,
    /// Median latency, µs.
    pub(crate) p50_us: f64,
    /// 99th percentile latency, µs.
    pub(crate) p99_us: f64,
}

impl fmt::Display for LoadStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.0} calls/s, p50 {:.0} µs, p99 {:.0} µs ({} calls, {} errors)",
            self.throughput, self.p50_us, self.p99_us, self.calls, self.errors
        )
    }
}

/// Keeps `concurrency` calls in flight for `warm_up` (not counted), then for
/// `measure`, and reports what finished inside the measured window.
pub(crate) async fn run(
    target: &Target,
    concurrency: usize,
    warm_up: Duration,
    measure: Duration,
) -> anyhow::Result<LoadStats> {
    let started = Instant::now();
    let window_start = started + warm_up;
    let window_end = window_start + measure;
    let mut workers = tokio::task::JoinSet::new();
    let next_args = Arc::new(AtomicUsize::new(0));
    for index in 0..concurrency.max(1) {
        let mut client = ApiClient::new(target.channels[index % target.channels.len()].clone());
        let mut request = target.request.clone();
        let args = target.args.clone();
        let next_args = Arc::clone(&next_args);
        workers.spawn(async move {
            let mut latencies_ns: Vec<u64> = Vec::with_capacity(1 << 14);
            let mut errors = 0usize;
            loop {
                if let Some(args) = &args {
                    let n = next_args.fetch_add(1, Ordering::Relaxed);
                    args[n % args.len()].clone_into(&mut request.args_json);
                }
                let sent = Instant::now();
                if sent >= window_end {
                    break;
                }
                let result = client.call(request.clone()).await;
                let done = Instant::now();
                if sent < window_start || done > window_end {
                    continue;
                }
                match result {
                    Ok(_) => latencies_ns
                        .push(u64::try_from((done - sent).as_nanos()).unwrap_or(u64::MAX)),
                    Err(_) => errors += 1,
                }
            }
            (latencies_ns, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = workers.join_next().await {
        let (worker_latencies, worker_errors) = joined?;
        latencies.extend(worker_latencies);
        errors += worker_errors;
    }
    latencies.sort_unstable();
    Ok(LoadStats {
        calls: latencies.len(),
        errors,
        throughput: latencies.len() as f64 / measure.as_secs_f64(),
        p50_us: percentile(&latencies, 0.50) / 1000.0,
        p99_us: percentile(&latencies, 0.99) / 1000.0,
    })
}

/// The `q` quantile of sorted `values` (nearest rank); 0 when empty.
pub(crate) fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

/// The median of `values` (mean of the middle two when even); 0 when empty.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}
