//! `agents.Agent`, the agent a status hook receives (H2, E2), as a
//! read-only mapping and by attribute (issue 16 item 2), through a real
//! plugin file in the real interpreter: every expression below is
//! evaluated inside the hook and its result (or the exception it raised)
//! compared with what a dict would give.

mod common;

use common::{TestServer, json, py};
use ucs_core::{AgentStatus, Value};

/// (Python expression, its expected result as JSON). `agent` is the Agent
/// the hook got, in the state AUX "Lunch" of agent `am_alice`; `previous`
/// is the Agent of the call before, in the same state; `first` the one of
/// the first call, still OFFLINE. `"raised X"` means it raised X.
const CHECKS: &[(&str, &str)] = &[
    // Attributes.
    (
        "[agent.username, agent.displayname, agent.status, agent.reason]",
        r#"["am_alice", "am_alice display", 2, "Lunch"]"#,
    ),
    ("agent.id == agent['id'] and type(agent.id) is int", "true"),
    // Keys.
    ("agent['status']", "2"),
    ("agent['reason']", r#""Lunch""#),
    ("agent['nope']", r#""raised KeyError""#),
    ("agent[0]", r#""raised KeyError""#),
    // `in`, which raised TypeError for an int key.
    ("'id' in agent", "true"),
    ("'status' in agent", "true"),
    ("'nope' in agent", "false"),
    ("0 in agent", "false"),
    ("None in agent", "false"),
    // get, whose default was required.
    ("agent.get('reason')", r#""Lunch""#),
    ("agent.get('nope')", "null"),
    ("agent.get(0)", "null"),
    ("agent.get('nope', 'fallback')", r#""fallback""#),
    ("agent.get('reason', 'fallback')", r#""Lunch""#),
    ("agent.get('nope', None)", "null"),
    ("agent.get(key='id')", r#""raised TypeError""#),
    // Size, iteration and the views, in getAgents() order.
    ("len(agent)", "5"),
    (
        "list(agent)",
        r#"["id", "username", "displayname", "status", "reason"]"#,
    ),
    (
        "[key for key in agent]",
        r#"["id", "username", "displayname", "status", "reason"]"#,
    ),
    (
        "list(agent.keys())",
        r#"["id", "username", "displayname", "status", "reason"]"#,
    ),
    (
        "'reason' in agent.keys() and 'nope' not in agent.keys()",
        "true",
    ),
    (
        "agent.keys() == {'id', 'username', 'displayname', 'status', 'reason'}",
        "true",
    ),
    (
        "list(agent.values())[1:]",
        r#"["am_alice", "am_alice display", 2, "Lunch"]"#,
    ),
    (
        "[list(item) for item in agent.items()][1:]",
        r#"[["username", "am_alice"], ["displayname", "am_alice display"], ["status", 2], ["reason", "Lunch"]]"#,
    ),
    ("('status', 2) in agent.items()", "true"),
    // As a dict.
    (
        "dict(agent) == {'id': agent.id, 'username': 'am_alice', 'displayname': 'am_alice display', 'status': 2, 'reason': 'Lunch'}",
        "true",
    ),
    ("{**agent}['reason']", r#""Lunch""#),
    ("isinstance(agent, collections.abc.Mapping)", "true"),
    ("isinstance(agent, dict)", "false"),
    // Equality: with an Agent of the same state, with an equal dict (on
    // either side) and with the getAgents() entry of the same agent.
    ("agent == previous", "true"),
    ("agent != previous", "false"),
    ("agent is previous", "false"),
    ("agent == first", "false"),
    ("agent != first", "true"),
    ("agent == dict(agent)", "true"),
    ("dict(agent) == agent", "true"),
    ("agent != dict(agent)", "false"),
    ("agent == {**dict(agent), 'reason': 'Break'}", "false"),
    ("agent == {'id': agent.id}", "false"),
    (
        "agent == [a for a in self.ucs.agents.getAgents() if a['id'] == agent.id][0]",
        "true",
    ),
    ("agent == 5", "false"),
    ("agent == list(agent)", "false"),
    // json: getAgents() gives plain dicts; an Agent goes through dict().
    (
        "json.loads(json.dumps(self.ucs.agents.getAgents())) == self.ucs.agents.getAgents()",
        "true",
    ),
    ("type(self.ucs.agents.getAgents()[0]) is dict", "true"),
    ("json.loads(json.dumps(dict(agent))) == agent", "true"),
    // Read-only, both ways.
    ("setattr(agent, 'status', 1)", r#""raised AttributeError""#),
    (
        "operator.setitem(agent, 'status', 1)",
        r#""raised TypeError""#,
    ),
    ("operator.delitem(agent, 'status')", r#""raised TypeError""#),
    ("agent.status", "2"),
    // Unhashable, as a dict: equal Agents must not hash differently.
    ("hash(agent)", r#""raised TypeError""#),
];

/// The hook plugin: records `first` and `previous`, and on the third call
/// evaluates every expression of [`CHECKS`].
fn plugin() -> String {
    let expressions: Vec<String> = CHECKS
        .iter()
        // Rust's quoting of these ASCII strings is also Python's.
        .map(|(expression, _)| format!("{expression:?}"))
        .collect();
    py(&format!(
        r#"
import collections.abc, json, operator

EXPRESSIONS = [{expressions}]

class AgentMapping:
    def __init__(self, ucs):
        self.ucs = ucs
        self.seen = []
        ucs.agents.addChangeStatusHook(self.hook)

    def hook(self, agent, status, reason):
        self.seen.append(agent)
        if len(self.seen) == 3:
            names = {{'agent': agent, 'previous': self.seen[1], 'first': self.seen[0],
                      'self': self, 'collections': collections, 'json': json,
                      'operator': operator}}
            results = {{}}
            for expression in EXPRESSIONS:
                try:
                    results[expression] = eval(expression, names)
                except Exception as err:
                    results[expression] = 'raised ' + type(err).__name__
            results['repr'] = repr(agent)
            results['public'] = sorted(n for n in dir(agents.Agent) if not n.startswith('_'))
            results['defined'] = [n for n in dir(agents.Agent) if getattr(agents.Agent, n, None) is not None]
            put(self.ucs, 'am_results', results)
        return status, reason

UCS_PLUGIN = 'AgentMapping'
"#,
        expressions = expressions.join(", ")
    ))
}

#[test]
fn an_agent_is_a_read_only_mapping_and_has_attributes() {
    let source = plugin();
    let server = TestServer::start(&[("agent_mapping.py", &source)]);
    let agent = server.add_agent("am_alice");
    let aux = AgentStatus::Aux.code();
    // The hook sees OFFLINE, then AUX "Lunch" twice.
    for _ in 0..3 {
        server.set_status(agent, aux, "Lunch").expect("setStatus");
    }
    let results = server.shared("am_results");
    assert!(
        matches!(results, Value::Map(_)),
        "the hook recorded no results: {results:?}"
    );
    let mut wrong = Vec::new();
    for (expression, expected) in CHECKS {
        let got = results.get(expression);
        if got != Some(&json(expected)) {
            wrong.push(format!("{expression}: expected {expected}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(
        results.get("repr"),
        Some(&Value::from(format!(
            "Agent(id={agent}, username='am_alice', displayname='am_alice display', \
             status=2 (AGENT_AUX), reason='Lunch')"
        )))
    );
}

/// The names `agents.pyi` declares on `Agent` (each `def` and property).
fn stub_names() -> Vec<String> {
    let (_, stub) = ucs_loader::STUBS
        .iter()
        .find(|(file, _)| *file == "agents.pyi")
        .expect("agents.pyi is a stub");
    stub.lines()
        .filter_map(|line| line.trim_start().strip_prefix("def "))
        .filter_map(|rest| rest.split('(').next())
        .map(str::to_owned)
        .collect()
}

/// The stub says exactly what exists: its public names are the class's,
/// and each dunder it declares is defined (`__hash__` is declared None).
#[test]
fn the_stub_names_what_the_agent_class_has() {
    let source = plugin();
    let server = TestServer::start(&[("agent_mapping_stub.py", &source)]);
    let agent = server.add_agent("am_bob");
    for _ in 0..3 {
        server
            .set_status(agent, AgentStatus::Ready.code(), "")
            .expect("setStatus");
    }
    let results = server.shared("am_results");
    let strings = |key: &str| -> Vec<String> {
        let Some(Value::List(items)) = results.get(key) else {
            panic!("no {key} in {results:?}")
        };
        items
            .iter()
            .map(|item| item.as_str().expect("a name").to_owned())
            .collect()
    };
    let declared = stub_names();
    let mut public: Vec<String> = declared
        .iter()
        .filter(|name| !name.starts_with('_'))
        .cloned()
        .collect();
    public.sort();
    assert_eq!(strings("public"), public);
    let defined = strings("defined");
    for name in &declared {
        assert!(
            defined.contains(name),
            "the stub declares {name}, the class has not"
        );
    }
    assert!(
        !defined.contains(&"__hash__".to_owned()),
        "__hash__ is None"
    );
    // The parse found the five properties and the mapping methods.
    assert!(declared.len() >= 14, "{declared:?}");
}
