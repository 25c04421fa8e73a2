//! Every server-level figure of issue 6, in one run, side by side:
//!
//! - `load.*`: `Api.Call agents.list` against the real binary with no
//!   middleware and with one trivial Python middleware, the tonic ceiling and
//!   the Python grpcio peer, in interleaved rounds (medians over rounds);
//! - `gil.*`: agents.list p99 while a plugin thread spins in pure Python
//!   and while it idles, alternating in one server;
//! - `reload.*`: p50 of `Plugins.Load` of a loaded small plugin, and of a
//!   plain importlib import of the same file in `python`;
//! - `memory.*`: idle VmRSS of the server with the four example plugins and
//!   of a bare `python` that imported threading;
//! - `scale.*` (`scale.rs`): 500 agents and the four documented plugins,
//!   `agents.list`, `agents.setStatus` and `config.users.get` against the
//!   Python peer and the ceiling, and 50 event subscribers (issue 13);
//! - process isolation (issue 18): `hook.*`, `agents.setStatus` through a
//!   Python status hook in process and in a plugin host, one call at a
//!   time (the difference is the link's round trip), and
//!   `hook.floor.*`, a bare socket round trip to another process, the
//!   least any crossing costs on this machine; `crash.*`, a host's
//!   segfault to its restarted plugin serving again; `memory.host.*`, the
//!   RSS of each example plugin's host; `gil.isolated.*`, the GIL figure
//!   with the spinner in a host.
//!
//! Results go to `--out` as `key value` lines; progress to stderr.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use ucs_grpc::pb;
use ucs_grpc::pb::api_client::ApiClient;
use ucs_grpc::pb::plugins_client::PluginsClient;

use crate::load::{self, LoadStats, Target, median, percentile};

mod scale;
use crate::processes::{self, ChildProcess, Isolation, login_when_ready, start_ucs};

/// The session id the ceiling and the Python peer accept.
const PEER_SID: &str = "bench-session";

/// What `suite` needs.
#[derive(clap::Args)]
pub(crate) struct SuiteArgs {
    /// The `ucs` binary (a release build).
    #[arg(long)]
    ucs: PathBuf,
    /// The Python with grpcio (the bench venv's).
    #[arg(long)]
    python: PathBuf,
    /// Where the Python peer's generated `ucs/v1/ucs_pb2*.py` are.
    #[arg(long)]
    python_gen_dir: PathBuf,
    /// The `key value` results file.
    #[arg(long)]
    out: PathBuf,
    /// Shorter windows and fewer rounds (under a minute and a half).
    #[arg(long)]
    quick: bool,
    /// Runs only these parts (repeatable), to measure one change without
    /// the whole suite; `cargo xtask bench` runs them all.
    #[arg(long, value_enum)]
    only: Vec<Part>,
}

/// The suite's parts, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Part {
    /// Throughput and latency against the ceiling and the Python peer.
    Load,
    /// `agents.list` latency with a spinning plugin thread, in process.
    Gil,
    /// The same with the spinner in a plugin host.
    GilIsolated,
    /// `plugins.load` against a plain import.
    Reload,
    /// Idle RSS against a bare python.
    Memory,
    /// A status hook's round trip, isolated against in process.
    Hook,
    /// A host crash to its plugin serving again.
    Crash,
    /// RSS per plugin host.
    HostMemory,
    /// 500 agents and the four documented plugins against the peer and
    /// the ceiling, with 50 event subscribers (issue 13 item 2).
    Scale,
}

impl SuiteArgs {
    /// Whether `part` is to run.
    fn runs(&self, part: Part) -> bool {
        self.only.is_empty() || self.only.contains(&part)
    }
}

/// How long and how often each part measures.
struct Plan {
    /// Rounds of the load comparison and of the GIL comparison.
    rounds: usize,
    /// Not counted at the start of each window.
    warm_up: Duration,
    /// Each measured window.
    window: Duration,
    /// Calls in flight for throughput.
    throughput_concurrency: usize,
    /// Calls in flight for the GIL latency comparison: low, so p99 shows
    /// per-call delay, not queueing at saturation.
    latency_concurrency: usize,
    /// `Plugins.Load` calls.
    reloads: usize,
    /// Plain imports in Python.
    imports: usize,
    /// How long an idle server settles before its RSS is read.
    settle: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                rounds: 3,
                warm_up: Duration::from_millis(500),
                window: Duration::from_secs(2),
                throughput_concurrency: 32,
                latency_concurrency: 2,
                reloads: 40,
                imports: 200,
                settle: Duration::from_secs(2),
            }
        } else {
            Plan {
                rounds: 5,
                warm_up: Duration::from_secs(1),
                window: Duration::from_secs(4),
                throughput_concurrency: 32,
                latency_concurrency: 2,
                reloads: 150,
                imports: 1000,
                settle: Duration::from_secs(3),
            }
        }
    }
}

/// Runs the suite on a single-threaded client runtime.
pub(crate) fn run(args: SuiteArgs) -> anyhow::Result<()> {
    let plan = Plan::new(args.quick);
    let work = tempfile::tempdir()?;
    let mut results = Results::default();
    let runtime = load::client_runtime()?;
    runtime.block_on(async {
        let work = work.path();
        if args.runs(Part::Load) {
            load_comparison(&args, &plan, work, &mut results).await?;
        }
        if args.runs(Part::Gil) {
            gil_independence(&args, &plan, work, &mut results, Isolation::InProcess).await?;
        }
        if args.runs(Part::GilIsolated) {
            gil_independence(&args, &plan, work, &mut results, Isolation::Process).await?;
        }
        if args.runs(Part::Reload) {
            reload_latency(&args, &plan, work, &mut results).await?;
        }
        if args.runs(Part::Memory) {
            memory(&args, &plan, work, &mut results).await?;
        }
        if args.runs(Part::Hook) {
            hook_round_trip(&args, &plan, work, &mut results).await?;
        }
        if args.runs(Part::Crash) {
            crash_to_serving(&args, &plan, work, &mut results).await?;
        }
        if args.runs(Part::HostMemory) {
            host_memory(&args, &plan, work, &mut results).await?;
        }
        if args.runs(Part::Scale) {
            scale::contact_centre_scale(&args, &plan, work, &mut results).await?;
        }
        anyhow::Ok(())
    })?;
    std::fs::write(&args.out, &results.text)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    Ok(())
}

/// The `key value` lines written so far.
#[derive(Default)]
struct Results {
    text: String,
}

impl Results {
    fn put(&mut self, key: &str, value: f64) {
        eprintln!("ucs-loadgen: {key} = {value:.1}");
        let _ = writeln!(self.text, "{key} {value:.3}");
    }
}

/// A plugins directory under `work` holding `files` (name, source).
fn plugins_dir(work: &Path, name: &str, files: &[(&str, String)]) -> anyhow::Result<PathBuf> {
    let dir = work.join(name);
    std::fs::create_dir_all(&dir)?;
    for (file, source) in files {
        std::fs::write(dir.join(file), source)?;
    }
    Ok(dir)
}

fn bench_plugin(file: &str) -> anyhow::Result<String> {
    let path = crate::bench_dir().join("plugins").join(file);
    std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// Calls the target once when it answers; its `result_json`.
async fn first_answer(process: &mut ChildProcess, sid: &str) -> anyhow::Result<(Target, String)> {
    let url = process.url.clone();
    let sid = sid.to_owned();
    process
        .wait_ready(|| {
            let (url, sid) = (url.clone(), sid.clone());
            async move {
                let target = Target::connect(&url, &sid, "agents.list").await?;
                let answer = target.call_once().await?;
                Ok((target, answer))
            }
        })
        .await
}

/// Medians over rounds of one target's windows.
#[derive(Default)]
struct Rounds {
    throughput: Vec<f64>,
    p50_us: Vec<f64>,
    p99_us: Vec<f64>,
    errors: usize,
}

impl Rounds {
    fn add(&mut self, stats: &LoadStats) {
        self.throughput.push(stats.throughput);
        self.p50_us.push(stats.p50_us);
        self.p99_us.push(stats.p99_us);
        self.errors += stats.errors;
    }

    fn report(&mut self, results: &mut Results, prefix: &str) {
        results.put(&format!("{prefix}.rps"), median(&mut self.throughput));
        results.put(&format!("{prefix}.p50_us"), median(&mut self.p50_us));
        results.put(&format!("{prefix}.p99_us"), median(&mut self.p99_us));
        results.put(&format!("{prefix}.errors"), self.errors as f64);
    }
}

async fn load_comparison(
    args: &SuiteArgs,
    plan: &Plan,
    work: &Path,
    results: &mut Results,
) -> anyhow::Result<()> {
    eprintln!("ucs-loadgen: load: starting the servers and peers");
    let plain_dir = plugins_dir(work, "plain-plugins", &[])?;
    let middleware_dir = plugins_dir(
        work,
        "middleware-plugins",
        &[(
            "trivial_middleware.py",
            bench_plugin("trivial_middleware.py")?,
        )],
    )?;
    let mut plain = start_ucs(
        &args.ucs,
        work,
        "ucs-plain",
        &plain_dir,
        Isolation::InProcess,
    )?;
    let mut with_middleware = start_ucs(
        &args.ucs,
        work,
        "ucs-middleware",
        &middleware_dir,
        Isolation::InProcess,
    )?;
    let plain_sid = login_when_ready(&mut plain).await?;
    let middleware_sid = login_when_ready(&mut with_middleware).await?;
    let (plain_target, expected) = first_answer(&mut plain, &plain_sid).await?;
    let (middleware_target, middleware_answer) =
        first_answer(&mut with_middleware, &middleware_sid).await?;

    let mut ceiling = start_ceiling(work, "ceiling.log", &expected)?;
    let (ceiling_target, _) = first_answer(&mut ceiling, PEER_SID).await?;

    let middleware = crate::bench_dir().join("plugins/trivial_middleware.py");
    let mut peer = start_python_peer(
        args,
        work,
        "python-peer.log",
        &["--middleware-plugin".as_ref(), middleware.as_os_str()],
    )?;
    let (peer_target, peer_answer) = first_answer(&mut peer, PEER_SID).await?;
    let same = middleware_answer == expected && peer_answer == expected;
    if !same {
        eprintln!(
            "ucs-loadgen: WARNING: the answers differ:\n  ucs: {expected}\n  ucs+middleware: {middleware_answer}\n  python peer: {peer_answer}"
        );
    }
    results.put("load.same_answer", if same { 1.0 } else { 0.0 });

    let targets: [(&str, &Target); 4] = [
        ("load.ucs", &plain_target),
        ("load.ucs_middleware", &middleware_target),
        ("load.ceiling", &ceiling_target),
        ("load.python_peer", &peer_target),
    ];
    interleaved_rounds(
        plan,
        &targets,
        plan.throughput_concurrency,
        &mut [&mut plain, &mut with_middleware, &mut ceiling, &mut peer],
        results,
    )
    .await
}

/// The tonic ceiling answering every call with `result_json`, logging to
/// `log` under `work`.
fn start_ceiling(work: &Path, log: &str, result_json: &str) -> anyhow::Result<ChildProcess> {
    let port = processes::free_port()?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("ceiling")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--result-json")
        .arg(result_json);
    ChildProcess::spawn(
        "the tonic ceiling",
        command,
        work.join(log),
        format!("http://127.0.0.1:{port}"),
    )
}

/// `bench/python_peer.py` with `extra` arguments, logging to `log`.
fn start_python_peer(
    args: &SuiteArgs,
    work: &Path,
    log: &str,
    extra: &[&std::ffi::OsStr],
) -> anyhow::Result<ChildProcess> {
    let port = processes::free_port()?;
    let mut command = Command::new(&args.python);
    command
        .arg(crate::bench_dir().join("python_peer.py"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--sid")
        .arg(PEER_SID)
        .arg("--gen-dir")
        .arg(&args.python_gen_dir)
        .args(extra);
    ChildProcess::spawn(
        "the Python grpcio peer",
        command,
        work.join(log),
        format!("http://127.0.0.1:{port}"),
    )
}

/// Loads each of `targets` in turn with `concurrency` calls in flight, for
/// `plan.rounds` rounds, so a drift of the machine hits them all alike;
/// checks `processes` are alive after each round and reports the medians
/// over rounds under each target's name.
async fn interleaved_rounds(
    plan: &Plan,
    targets: &[(&str, &Target)],
    concurrency: usize,
    processes: &mut [&mut ChildProcess],
    results: &mut Results,
) -> anyhow::Result<()> {
    let mut rounds: Vec<Rounds> = targets.iter().map(|_| Rounds::default()).collect();
    for round in 0..plan.rounds {
        for ((name, target), collected) in targets.iter().zip(&mut rounds) {
            let stats = load::run(target, concurrency, plan.warm_up, plan.window).await?;
            eprintln!("ucs-loadgen: round {}: {name}: {stats}", round + 1);
            collected.add(&stats);
        }
        for process in processes.iter_mut() {
            process.check_alive()?;
        }
    }
    for ((name, _), collected) in targets.iter().zip(&mut rounds) {
        collected.report(results, name);
    }
    Ok(())
}

async fn set_spin(
    api: &mut ApiClient<tonic::transport::Channel>,
    sid: &str,
    on: bool,
) -> anyhow::Result<()> {
    api.call(pb::CallRequest {
        sid: sid.to_owned(),
        method: "shared.set".to_owned(),
        args_json: format!("[\"bench.spin\", {on}]"),
    })
    .await?;
    // The plugin thread sees the change at its next check.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}

/// `prefix` is `gil` for the spinner in process, `gil.isolated` for the
/// spinner in its own plugin host (I1: its GIL is not the server's).
async fn gil_independence(
    args: &SuiteArgs,
    plan: &Plan,
    work: &Path,
    results: &mut Results,
    isolation: Isolation,
) -> anyhow::Result<()> {
    let prefix = match isolation {
        Isolation::InProcess => "gil",
        Isolation::Process => "gil.isolated",
    };
    eprintln!("ucs-loadgen: {prefix}: a plugin thread spinning in Python vs idle");
    let dir = plugins_dir(
        work,
        &format!("{prefix}-plugins"),
        &[("gil_spinner.py", bench_plugin("gil_spinner.py")?)],
    )?;
    let mut server = start_ucs(&args.ucs, work, &format!("ucs-{prefix}"), &dir, isolation)?;
    let sid = login_when_ready(&mut server).await?;
    let (target, _) = first_answer(&mut server, &sid).await?;
    // A status change through the spinner's own hook needs the GIL the
    // spinner holds: it waits for the switch interval (--python-switch-interval).
    let agent = alice(&server, &sid).await?;
    let hooked = Target::connect(&server.url, &sid, "agents.setStatus")
        .await?
        .with_args(&format!("[{agent}, 1, \"\"]"));
    hooked.call_once().await?;
    let mut api = ApiClient::connect(server.url.clone()).await?;
    let mut idle = Rounds::default();
    let mut spinning = Rounds::default();
    let mut hook_idle = Rounds::default();
    let mut hook_spinning = Rounds::default();
    for round in 0..plan.rounds {
        for (on, collected, hook_collected) in [
            (false, &mut idle, &mut hook_idle),
            (true, &mut spinning, &mut hook_spinning),
        ] {
            set_spin(&mut api, &sid, on).await?;
            let state = if on { "spinning" } else { "idle" };
            let stats =
                load::run(&target, plan.latency_concurrency, plan.warm_up, plan.window).await?;
            eprintln!("ucs-loadgen: round {}: {state}: {stats}", round + 1);
            collected.add(&stats);
            // One at a time: the wait for the GIL, not queueing behind it.
            let stats = load::run(&hooked, 1, plan.warm_up, plan.window).await?;
            eprintln!("ucs-loadgen: round {}: hooked, {state}: {stats}", round + 1);
            hook_collected.add(&stats);
        }
        server.check_alive()?;
    }
    set_spin(&mut api, &sid, false).await?;
    idle.report(results, &format!("{prefix}.idle"));
    spinning.report(results, &format!("{prefix}.spinning"));
    hook_idle.report(results, &format!("{prefix}.hook.idle"));
    hook_spinning.report(results, &format!("{prefix}.hook.spinning"));
    Ok(())
}

async fn reload_latency(
    args: &SuiteArgs,
    plan: &Plan,
    work: &Path,
    results: &mut Results,
) -> anyhow::Result<()> {
    eprintln!("ucs-loadgen: reload: plugins.load of a loaded plugin vs a plain import");
    let source = bench_plugin("reload_small.py")?;
    let dir = plugins_dir(work, "reload-plugins", &[("reload_small.py", source)])?;
    let mut server = start_ucs(&args.ucs, work, "ucs-reload", &dir, Isolation::InProcess)?;
    let sid = login_when_ready(&mut server).await?;
    let mut plugins = PluginsClient::connect(server.url.clone()).await?;
    let mut latencies = Vec::with_capacity(plan.reloads);
    // A few reloads first, as a warm-up, like the import loop below.
    for index in 0..plan.reloads + 5 {
        let sent = Instant::now();
        let info = plugins
            .load(pb::PluginRequest {
                sid: sid.clone(),
                name: "reload_small".to_owned(),
            })
            .await?
            .into_inner();
        let took = sent.elapsed();
        anyhow::ensure!(
            info.state == pb::PluginState::Running as i32,
            "reload_small did not reload: {}",
            info.error
        );
        if index >= 5 {
            latencies.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    latencies.sort_unstable();
    results.put("reload.ucs.p50_us", percentile(&latencies, 0.5) / 1000.0);

    let output = Command::new(&args.python)
        .arg(crate::bench_dir().join("python_import.py"))
        .arg(dir.join("reload_small.py"))
        .arg(plan.imports.to_string())
        .output()
        .context("cannot run bench/python_import.py")?;
    anyhow::ensure!(
        output.status.success(),
        "python_import.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let p50_ns: f64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .context("python_import.py prints the p50 in ns")?;
    results.put("reload.python_import.p50_us", p50_ns / 1000.0);
    Ok(())
}

async fn memory(
    args: &SuiteArgs,
    plan: &Plan,
    work: &Path,
    results: &mut Results,
) -> anyhow::Result<()> {
    eprintln!("ucs-loadgen: memory: the server with the example plugins vs a bare python");
    let dir = example_plugins_dir(work, "example-plugins")?;
    let mut server = start_ucs(&args.ucs, work, "ucs-examples", &dir, Isolation::InProcess)?;
    let sid = login_when_ready(&mut server).await?;
    let running = running_plugins(&server, &sid).await?;
    anyhow::ensure!(
        running.len() == 4,
        "expected 4 running example plugins, got {running:?}"
    );
    tokio::time::sleep(plan.settle).await;
    results.put("memory.ucs.rss_kib", server.rss_kib()? as f64);
    drop(server);

    let mut python = Command::new(&args.python);
    python
        .arg("-c")
        .arg("import threading, time; time.sleep(30)");
    let python = ChildProcess::spawn(
        "a bare python",
        python,
        work.join("bare-python.log"),
        String::new(),
    )?;
    tokio::time::sleep(plan.settle).await;
    results.put("memory.python.rss_kib", python.rss_kib()? as f64);
    Ok(())
}

/// A plugins directory under `work` with the four example plugins.
fn example_plugins_dir(work: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let examples = crate::bench_dir().join("../plugins");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&examples)? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "py") {
            let file_name = path
                .file_name()
                .context("a file name")?
                .to_string_lossy()
                .into_owned();
            files.push((file_name, std::fs::read_to_string(&path)?));
        }
    }
    anyhow::ensure!(
        files.len() == 4,
        "expected the four example plugins in plugins/"
    );
    let files: Vec<(&str, String)> = files
        .iter()
        .map(|(name, source)| (name.as_str(), source.clone()))
        .collect();
    plugins_dir(work, name, &files)
}

/// The plugins RUNNING, with their host pids (0 in process).
async fn running_plugins(server: &ChildProcess, sid: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let mut plugins = PluginsClient::connect(server.url.clone()).await?;
    Ok(plugins
        .list(pb::ListPluginsRequest {
            sid: sid.to_owned(),
        })
        .await?
        .into_inner()
        .plugins
        .into_iter()
        .filter(|info| info.state() == pb::PluginState::Running)
        .map(|info| (info.name, info.host_pid))
        .collect())
}

/// The id of the demo agent `alice`.
async fn alice(server: &ChildProcess, sid: &str) -> anyhow::Result<i64> {
    let users = Target::connect(&server.url, sid, "config.users.get")
        .await?
        .call_once()
        .await?;
    let users: serde_json::Value = serde_json::from_str(&users)?;
    users
        .as_array()
        .and_then(|users| users.iter().find(|user| user["username"] == "alice"))
        .and_then(|user| user["id"].as_i64())
        .context("no demo agent alice")
}

async fn hook_round_trip(
    args: &SuiteArgs,
    plan: &Plan,
    work: &Path,
    results: &mut Results,
) -> anyhow::Result<()> {
    eprintln!("ucs-loadgen: hook: agents.setStatus through a Python hook, in process vs isolated");
    let dir = plugins_dir(
        work,
        "hook-plugins",
        &[(
            "trivial_status_hook.py",
            bench_plugin("trivial_status_hook.py")?,
        )],
    )?;
    let mut targets = Vec::new();
    let mut servers = Vec::new();
    for (name, isolation) in [
        ("hook.inprocess", Isolation::InProcess),
        ("hook.process", Isolation::Process),
    ] {
        let mut server = start_ucs(&args.ucs, work, &format!("ucs-{name}"), &dir, isolation)?;
        let sid = login_when_ready(&mut server).await?;
        let agent = alice(&server, &sid).await?;
        let target = Target::connect(&server.url, &sid, "agents.setStatus")
            .await?
            .with_args(&format!("[{agent}, 1, \"\"]"));
        target.call_once().await?;
        targets.push((name, target));
        servers.push(server);
    }
    let targets: Vec<(&str, &Target)> = targets
        .iter()
        .map(|(name, target)| (*name, target))
        .collect();
    let mut servers: Vec<&mut ChildProcess> = servers.iter_mut().collect();
    // One call at a time: the round trip, not queueing.
    interleaved_rounds(plan, &targets, 1, &mut servers, results).await?;
    // The floor, in the same run: no crossing can cost less.
    let floor = crate::floor::socket_round_trips(work, plan.warm_up, plan.window)?;
    results.put("hook.floor.socket_rtt.p50_us", percentile(&floor, 0.5));
    results.put("hook.floor.socket_rtt.p99_us", percentile(&floor, 0.99));
    Ok(())
}

async fn crash_to_serving(
    args: &SuiteArgs,
    plan: &Plan,
    work: &Path,
    results: &mut Results,
) -> anyhow::Result<()> {
    eprintln!("ucs-loadgen: crash: a plugin host's segfault to its plugin serving again");
    let dir = plugins_dir(
        work,
        "crash-plugins",
        &[("crasher.py", bench_plugin("crasher.py")?)],
    )?;
    let mut server = start_ucs(&args.ucs, work, "ucs-crash", &dir, Isolation::Process)?;
    let sid = login_when_ready(&mut server).await?;
    let crash = Target::connect(&server.url, &sid, "shared.set")
        .await?
        .with_args("[\"bench.crash\", 1]");
    let mut plugins = PluginsClient::connect(server.url.clone()).await?;
    let mut took_us = Vec::new();
    for _ in 0..plan.rounds {
        let before = running_plugins(&server, &sid).await?;
        // S4: answered once the host is gone, the data stored anyway.
        crash.call_once().await?;
        let crashed = Instant::now();
        let deadline = crashed + Duration::from_secs(10);
        loop {
            let now = running_plugins(&server, &sid).await?;
            if !now.is_empty() && now != before {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the crasher was not restarted");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        took_us.push(u64::try_from(crashed.elapsed().as_micros()).unwrap_or(u64::MAX));
        // Loaded by hand: a fresh restart history, so every round waits
        // for the first backoff, not a longer one (I2).
        plugins
            .load(pb::PluginRequest {
                sid: sid.clone(),
                name: "crasher".to_owned(),
            })
            .await?;
        server.check_alive()?;
    }
    took_us.sort_unstable();
    results.put(
        "crash.to_serving.p50_ms",
        percentile(&took_us, 0.5) / 1000.0,
    );
    results.put(
        "crash.to_serving.max_ms",
        percentile(&took_us, 1.0) / 1000.0,
    );
    Ok(())
}

async fn host_memory(
    args: &SuiteArgs,
    plan: &Plan,
    work: &Path,
    results: &mut Results,
) -> anyhow::Result<()> {
    eprintln!("ucs-loadgen: memory: each example plugin's plugin host");
    let dir = example_plugins_dir(work, "isolated-example-plugins")?;
    let mut server = start_ucs(
        &args.ucs,
        work,
        "ucs-isolated-examples",
        &dir,
        Isolation::Process,
    )?;
    let sid = login_when_ready(&mut server).await?;
    let running = running_plugins(&server, &sid).await?;
    anyhow::ensure!(
        running.len() == 4 && running.iter().all(|(_, pid)| *pid != 0),
        "expected 4 example plugins running in hosts, got {running:?}"
    );
    tokio::time::sleep(plan.settle).await;
    let (mut total, mut total_pss, mut total_private) = (0, 0, 0);
    let mut largest = 0;
    for (name, pid) in &running {
        let rss = processes::rss_kib(*pid).with_context(|| format!("the host of {name}"))?;
        let (pss, private) =
            processes::pss_and_private_kib(*pid).with_context(|| format!("the host of {name}"))?;
        total += rss;
        total_pss += pss;
        total_private += private;
        largest = largest.max(rss);
    }
    let mean = |total: u64| total as f64 / running.len() as f64;
    results.put("memory.host.mean_rss_kib", mean(total));
    results.put("memory.host.max_rss_kib", largest as f64);
    results.put("memory.host.mean_pss_kib", mean(total_pss));
    results.put("memory.host.mean_private_kib", mean(total_private));
    results.put("memory.ucs_isolated.rss_kib", server.rss_kib()? as f64);
    Ok(())
}
