//! The bulkhead (issue 15 item 5) against the real binary, in both
//! isolation modes: a plugin gets at most `--plugin-max-calls` calls at
//! once; calls past it fail fast (a middleware's caller gets
//! RESOURCE_EXHAUSTED, a shared-data hook is passed over as S4 says for a
//! failed one) instead of holding a server thread, and calls that do not
//! go through that plugin never wait behind it.

mod common;

use std::time::{Duration, Instant};

use common::Server;
use tonic::Code;

/// A middleware on `config.users.get` and a shared-data hook on `slow` that
/// each take 2 s, well under the 5 s hook deadline.
const SLOW: &str = r#"
import time

class Slow:
    def __init__(self, ucs):
        ucs.api.addMiddleware("config.users.get", self.middleware)
        ucs.shared.addChangeHook("slow", self.hook)

    def middleware(self, handler, caller, *args):
        time.sleep(2)
        return handler(caller, *args)

    def hook(self, identificator, old, new):
        time.sleep(2)
        return new + 1

UCS_PLUGIN = "Slow"
"#;

const LIMIT: usize = 3;
const CALLS: usize = 12;
const SLOW_CALL: Duration = Duration::from_secs(2);

async fn saturated_plugin_fails_fast_and_others_go_on(isolation: &str) {
    let server = Server::builder()
        .plugin("slow.py", SLOW)
        .arg(&format!("--isolation={isolation}"))
        .arg(&format!("--plugin-max-calls={LIMIT}"))
        .start()
        .await;
    let sid = server.admin_sid().await;

    let started = Instant::now();
    let slow_calls: Vec<_> = (0..CALLS)
        .map(|_| {
            let mut api = server.api();
            let request = ucs_grpc::pb::CallRequest {
                sid: sid.clone(),
                method: "config.users.get".to_owned(),
                args_json: "[1]".to_owned(),
            };
            tokio::spawn(async move {
                let result = api.call(request).await.map(|_| ());
                (result, started.elapsed())
            })
        })
        .collect();
    // While the plugin is saturated: a call without Python answers at once,
    // and so does a shared-data change whose hook is refused (S4: the
    // requested data is stored, not the hook's `new + 1`).
    let others = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let at = Instant::now();
        let listed = server.call(&sid, "agents.list", "[]").await;
        let set = server.call(&sid, "shared.set", r#"["slow", 1]"#).await;
        let stored = server.call(&sid, "shared.get", r#"["slow"]"#).await;
        (listed, set, stored, at.elapsed())
    };
    let (listed, set, stored, others_took) = others.await;
    let mut slow = Vec::with_capacity(CALLS);
    for call in slow_calls {
        slow.push(call.await.expect("the call's task"));
    }

    let answered: Vec<_> = slow.iter().filter(|(result, _)| result.is_ok()).collect();
    let refused: Vec<_> = slow
        .iter()
        .filter(|(result, _)| {
            result
                .as_ref()
                .is_err_and(|status| status.code() == Code::ResourceExhausted)
        })
        .collect();
    assert_eq!(
        answered.len(),
        LIMIT,
        "{isolation}: exactly the bound's calls ran: {slow:?}"
    );
    assert_eq!(
        refused.len(),
        CALLS - LIMIT,
        "{isolation}: every other call was refused: {slow:?}"
    );
    for (_, took) in &answered {
        assert!(
            *took >= SLOW_CALL,
            "{isolation}: an admitted call ran the middleware"
        );
    }
    for (result, took) in &refused {
        assert!(
            *took < SLOW_CALL,
            "{isolation}: a refused call failed fast, not after the slow ones ({took:?})"
        );
        let message = result.as_ref().expect_err("refused").message().to_owned();
        assert!(
            message.contains("config.users.get") && message.contains("try again later"),
            "{isolation}: the refusal says why: {message}"
        );
    }

    listed.expect("agents.list while the plugin is saturated");
    set.expect("shared.set while the plugin is saturated");
    assert_eq!(
        stored.expect("shared.get"),
        serde_json::json!(1),
        "{isolation}: the refused hook was passed over (S4)"
    );
    assert!(
        others_took < SLOW_CALL,
        "{isolation}: calls not waiting for the plugin never waited behind it ({others_took:?})"
    );

    // The saturation is logged once, with the plugin's name, and its end.
    let log = server.log();
    let warnings = log
        .lines()
        .filter(|line| line.contains("calls running at once, its bound"))
        .count();
    assert_eq!(
        warnings, 1,
        "{isolation}: one warning per saturation:\n{log}"
    );
    assert!(
        log.lines()
            .any(|line| line.contains("slow") && line.contains("room for calls again")),
        "{isolation}: the end of the saturation is logged:\n{log}"
    );

    // Once the slow calls are done the plugin takes calls again, and the
    // refusals are counted on the registrations.
    server
        .call(&sid, "config.users.get", "[1]")
        .await
        .expect("the plugin takes calls again");
    let plugins = server.plugins_listed().await;
    let slow_plugin = plugins
        .iter()
        .find(|plugin| plugin.name == "slow")
        .expect("slow is listed");
    let refused_total: u64 = slow_plugin
        .registrations
        .iter()
        .map(|registration| registration.refused)
        .sum();
    assert_eq!(
        refused_total,
        (CALLS - LIMIT + 1) as u64,
        "{isolation}: every refusal is counted (the middleware's and the hook's)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_process_isolated_plugin_fails_fast_and_others_go_on() {
    saturated_plugin_fails_fast_and_others_go_on("process").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_in_process_plugin_fails_fast_and_others_go_on() {
    saturated_plugin_fails_fast_and_others_go_on("inprocess").await;
}
