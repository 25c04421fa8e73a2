//! Contact-centre scale (issue 13 item 2): 500 agents and the four
//! documented plugins, in UCS and in the Python peer, side by side with the
//! tonic ceiling answering the same bytes.
//!
//! - `scale.list.*`: `agents.list` (no middleware wraps it): UCS, the
//!   ceiling, the peer;
//! - `scale.set_status.*`: `agents.setStatus` over every agent in turn,
//!   through the StatusHook and the Example callback: UCS, the peer, and a
//!   ceiling answering one such answer's bytes;
//! - `scale.users_get.*`: `config.users.get` (501 users) through the
//!   Middleware example: UCS, the peer and a ceiling with its bytes;
//! - `scale.events.*`: 50 subscribers of `agent.status` on UCS during the
//!   setStatus load: events delivered per second over all of them, and the
//!   p99 lag from a probe change's call to its event at each subscriber.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use ucs_grpc::pb;
use ucs_grpc::pb::events_client::EventsClient;

use super::{
    PEER_SID, Plan, Results, SuiteArgs, example_plugins_dir, first_answer, interleaved_rounds,
    start_ceiling, start_python_peer,
};
use crate::load::{self, Target, percentile};
use crate::processes::{ChildProcess, Isolation, login_when_ready, start_ucs};

/// Agents in both servers: `--demo`'s three and these many more.
const AGENTS_ADDED: usize = 497;
/// Event subscribers during the setStatus load.
const SUBSCRIBERS: usize = 50;
/// How often the lag probe changes its agent's status.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// The name and display name of the `n`th added agent, as the peer makes
/// them (`python_peer.py --agents`).
fn added_agent(n: usize) -> (String, String) {
    (format!("agent{n:03}"), format!("Agent {n:03}"))
}

pub(super) async fn contact_centre_scale(
    args: &SuiteArgs,
    plan: &Plan,
    work: &Path,
    results: &mut Results,
) -> anyhow::Result<()> {
    eprintln!("ucs-loadgen: scale: 500 agents and the four documented plugins");
    let plugins = example_plugins_dir(work, "scale-plugins")?;
    let mut ucs = start_ucs(&args.ucs, work, "ucs-scale", &plugins, Isolation::InProcess)?;
    let sid = login_when_ready(&mut ucs).await?;
    add_agents(&ucs, &sid).await?;
    let (list_target, expected) = first_answer(&mut ucs, &sid).await?;

    let agents = AGENTS_ADDED.to_string();
    let mut peer = start_python_peer(
        args,
        work,
        "python-peer-scale.log",
        &[
            "--plugins-dir".as_ref(),
            plugins.as_os_str(),
            "--agents".as_ref(),
            agents.as_ref(),
        ],
    )?;
    let (peer_list, peer_answer) = first_answer(&mut peer, PEER_SID).await?;

    let mut ceiling = start_ceiling(work, "ceiling-scale.log", &expected)?;
    let (ceiling_list, _) = first_answer(&mut ceiling, PEER_SID).await?;
    let same = peer_answer == expected;
    if !same {
        eprintln!("ucs-loadgen: WARNING: the peer's agents.list differs from UCS's");
    }
    results.put("scale.same_answer", if same { 1.0 } else { 0.0 });
    results.put("scale.answer_bytes", expected.len() as f64);

    let agent_ids: Vec<i64> = serde_json::from_str::<serde_json::Value>(&expected)?
        .as_array()
        .context("agents.list is a list")?
        .iter()
        .filter_map(|agent| agent["id"].as_i64())
        .collect();
    anyhow::ensure!(agent_ids.len() == AGENTS_ADDED + 3, "500 agents");
    // The probe's agent (the first) stays out of the load, so its events
    // are the probe's alone.
    let (probe_agent, loaded) = agent_ids.split_first().context("agents")?;
    let set_status_args = set_status_cycle(loaded);

    let set_status = Target::connect(&ucs.url, &sid, "agents.setStatus")
        .await?
        .cycling(set_status_args.clone());
    let peer_set_status = Target::connect(&peer.url, PEER_SID, "agents.setStatus")
        .await?
        .cycling(set_status_args.clone());
    let users_get = Target::connect(&ucs.url, &sid, "config.users.get").await?;
    let peer_users_get = Target::connect(&peer.url, PEER_SID, "config.users.get").await?;

    // What gRPC alone allows for each answer: a ceiling answering the
    // very bytes of one setStatus and one config.users.get, so a ratio to
    // the peer can be read against what this machine can serve at all.
    let one_change = Target::connect(&ucs.url, &sid, "agents.setStatus")
        .await?
        .with_args(set_status_args.first().context("an agent to change")?)
        .call_once()
        .await?;
    let mut change_ceiling = start_ceiling(work, "ceiling-set-status.log", &one_change)?;
    let (ceiling_set_status, _) = first_answer(&mut change_ceiling, PEER_SID).await?;
    // The same requests too (the ceiling ignores what they say).
    let ceiling_set_status = ceiling_set_status.cycling(set_status_args.clone());
    let users_answer = users_get.call_once().await?;
    let mut users_ceiling = start_ceiling(work, "ceiling-users-get.log", &users_answer)?;
    let (ceiling_users_get, _) = first_answer(&mut users_ceiling, PEER_SID).await?;

    let targets: [(&str, &Target); 9] = [
        ("scale.list.ucs", &list_target),
        ("scale.list.ceiling", &ceiling_list),
        ("scale.list.python_peer", &peer_list),
        ("scale.set_status.ucs", &set_status),
        ("scale.set_status.ceiling", &ceiling_set_status),
        ("scale.set_status.python_peer", &peer_set_status),
        ("scale.users_get.ucs", &users_get),
        ("scale.users_get.ceiling", &ceiling_users_get),
        ("scale.users_get.python_peer", &peer_users_get),
    ];
    interleaved_rounds(
        plan,
        &targets,
        plan.throughput_concurrency,
        &mut [
            &mut ucs,
            &mut peer,
            &mut ceiling,
            &mut change_ceiling,
            &mut users_ceiling,
        ],
        results,
    )
    .await?;

    events_under_load(plan, &ucs, &sid, &set_status, *probe_agent, results).await?;
    ucs.check_alive()
}

/// Adds the agents `--demo` lacks, one at a time, so ids follow names as in
/// the peer (each add hashes a password: about 10 s in all).
async fn add_agents(ucs: &ChildProcess, sid: &str) -> anyhow::Result<()> {
    let add = Target::connect(&ucs.url, sid, "config.users.add").await?;
    for n in 1..=AGENTS_ADDED {
        let (username, displayname) = added_agent(n);
        let data = serde_json::json!([{
            "username": username,
            "displayname": displayname,
            "password": "bench-password-1",
            "agent": true,
            "superuser": false,
        }]);
        add.clone()
            .with_args(&data.to_string())
            .call_once()
            .await
            .with_context(|| format!("config.users.add {username}"))?;
    }
    Ok(())
}

/// Every loaded agent to AUX, twice over with two reasons, so each call is
/// a change that runs the hook and the callback (neither reason is one the
/// documented StatusHook refuses or rewrites).
fn set_status_cycle(agent_ids: &[i64]) -> Vec<String> {
    ["Porada", "Školení"]
        .iter()
        .flat_map(|reason| {
            agent_ids
                .iter()
                .map(move |id| serde_json::json!([id, 2, reason]).to_string())
        })
        .collect()
}

/// What the subscribers saw.
#[derive(Default)]
struct Seen {
    /// Events received inside the window, over all subscribers.
    events: usize,
    /// Lag of each probe event at each subscriber, ns.
    lags_ns: Vec<u64>,
    /// Subscribers the server disconnected for falling behind.
    disconnected: usize,
}

/// `SUBSCRIBERS` streams of `agent.status` while `load` runs, and a probe
/// changing `probe_agent` every `PROBE_EVERY` with a numbered reason.
async fn events_under_load(
    plan: &Plan,
    ucs: &ChildProcess,
    sid: &str,
    load_target: &Target,
    probe_agent: i64,
    results: &mut Results,
) -> anyhow::Result<()> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let started = Instant::now();
    let window_start = started + plan.warm_up;
    let window_end = window_start + plan.window;
    let mut subscribers = tokio::task::JoinSet::new();
    for _ in 0..SUBSCRIBERS {
        let mut events = EventsClient::connect(ucs.url.clone()).await?;
        let mut stream = events
            .subscribe(pb::SubscribeRequest {
                sid: sid.to_owned(),
                events: vec!["agent.status".to_owned()],
            })
            .await?
            .into_inner();
        let (sent, seen) = (Arc::clone(&sent), Arc::clone(&seen));
        subscribers.spawn(async move {
            let deadline = tokio::time::Instant::from_std(window_end + Duration::from_secs(1));
            loop {
                let event = match tokio::time::timeout_at(deadline, stream.message()).await {
                    Ok(Ok(Some(event))) => event,
                    Ok(Err(_)) => {
                        // The server ended the stream: it fell behind.
                        seen.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .disconnected += 1;
                        break;
                    }
                    Ok(Ok(None)) | Err(_) => break,
                };
                let now = Instant::now();
                if now < window_start || now > window_end {
                    continue;
                }
                let probe = probe_reason(&event.data_json);
                let sent_at = probe.and_then(|reason| {
                    sent.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&reason)
                        .copied()
                });
                let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
                seen.events += 1;
                if let Some(sent_at) = sent_at {
                    seen.lags_ns
                        .push(u64::try_from((now - sent_at).as_nanos()).unwrap_or(u64::MAX));
                }
            }
        });
    }
    let probe = {
        let target = Target::connect(&ucs.url, sid, "agents.setStatus").await?;
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < window_end {
                let reason = format!("probe-{n}");
                let args = serde_json::json!([probe_agent, 2, reason]).to_string();
                sent.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(reason, Instant::now());
                let _ = target.clone().with_args(&args).call_once().await;
                n += 1;
                tokio::time::sleep(PROBE_EVERY).await;
            }
        })
    };
    let stats = load::run(
        load_target,
        plan.throughput_concurrency,
        plan.warm_up,
        plan.window,
    )
    .await?;
    eprintln!("ucs-loadgen: scale.events: setStatus under {SUBSCRIBERS} subscribers: {stats}");
    probe.await?;
    while subscribers.join_next().await.is_some() {}
    let mut seen = std::mem::take(&mut *seen.lock().unwrap_or_else(PoisonError::into_inner));
    seen.lags_ns.sort_unstable();
    results.put("scale.events.set_status_rps", stats.throughput);
    results.put(
        "scale.events.delivered_per_s",
        seen.events as f64 / plan.window.as_secs_f64(),
    );
    results.put(
        "scale.events.lag_p50_ms",
        percentile(&seen.lags_ns, 0.50) / 1e6,
    );
    results.put(
        "scale.events.lag_p99_ms",
        percentile(&seen.lags_ns, 0.99) / 1e6,
    );
    results.put("scale.events.lag_samples", seen.lags_ns.len() as f64);
    results.put("scale.events.disconnected", seen.disconnected as f64);
    Ok(())
}

/// The reason of an `agent.status` event if it is a probe's.
fn probe_reason(data_json: &str) -> Option<String> {
    let data: serde_json::Value = serde_json::from_str(data_json).ok()?;
    let reason = data["agent"]["reason"].as_str()?;
    reason.starts_with("probe-").then(|| reason.to_owned())
}
