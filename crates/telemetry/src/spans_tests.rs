use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeZone, Utc};
use opentelemetry::trace::{SpanId, SpanKind, Status};
use opentelemetry::Value;
use orchestrator_protocol::{Event, EventEnvelope, Outcome, Phase, Role, TokenUsage, UnitSpec, UnitState};

use super::SpanTree;
use opentelemetry_sdk::trace::SpanData;

/// Events stamped at `t0 + ms`, as a bus would stamp them.
struct Script {
    t0: DateTime<Utc>,
    seq: u64,
    events: Vec<EventEnvelope>,
}

impl Script {
    fn new() -> Self {
        Script {
            t0: Utc
                .with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
                .single()
                .expect("valid time"),
            seq: 0,
            events: Vec::new(),
        }
    }

    fn at(&mut self, ms: i64, event: Event) -> &mut Self {
        self.events.push(EventEnvelope {
            seq: self.seq,
            at: self.t0 + chrono::Duration::milliseconds(ms),
            mission: "m20250301-120000-abcd".into(),
            event,
        });
        self.seq += 1;
        self
    }

    fn time(&self, ms: u64) -> SystemTime {
        SystemTime::from(self.t0) + Duration::from_millis(ms)
    }

    fn spans(&self, provider: Option<&str>) -> Vec<SpanData> {
        let mut tree = SpanTree::new(provider.map(str::to_string));
        let mut spans: Vec<SpanData> = self.events.iter().flat_map(|e| tree.push(e)).collect();
        spans.extend(tree.finish());
        spans
    }
}

fn spec(id: &str, title: &str) -> UnitSpec {
    UnitSpec {
        id: id.into(),
        title: title.into(),
        description: String::new(),
        depends_on: Vec::new(),
        files: Vec::new(),
        attempts: None,
    }
}

fn usage(input: u64, output: u64) -> TokenUsage {
    TokenUsage {
        input_tokens: input,
        output_tokens: output,
        ..Default::default()
    }
}

fn session(id: &str, role: Role, unit: Option<&str>) -> Event {
    Event::SessionStarted {
        session: id.into(),
        role,
        unit: unit.map(str::to_string),
        model: "gpt-test".into(),
        sandbox: None,
    }
}

fn call(session: &str, role: Role, input: u64, output: u64, duration_ms: u64) -> Event {
    Event::ModelCall {
        session: session.into(),
        role,
        model: "gpt-test".into(),
        usage: usage(input, output),
        cost_usd: Some(0.01),
        duration_ms,
        constraint: None,
    }
}

fn finished(session: &str, role: Role, ok: bool) -> Event {
    Event::SessionFinished {
        session: session.into(),
        role,
        ok,
        turns: 2,
        usage: TokenUsage::default(),
    }
}

fn state(unit: &str, state: UnitState, detail: Option<&str>) -> Event {
    Event::UnitState {
        unit: unit.into(),
        state,
        attempt: 1,
        detail: detail.map(str::to_string),
    }
}

fn phase(phase: Phase, round: u32) -> Event {
    Event::PhaseChanged { phase, round }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one span named {name:?}: {:?}",
        names(spans)
    );
    found[0]
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}

fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

fn is_child(child: &SpanData, parent: &SpanData) -> bool {
    child.parent_span_id == parent.span_context.span_id()
}

/// A whole mission: discovery, planning, one execution round with a spawned child and a failed
/// unit, integration, and an unsealed end.
fn mission() -> Script {
    let mut s = Script::new();
    s.at(
        0,
        Event::MissionStarted {
            objective: "Add a feature".into(),
            base_commit: "abc123".into(),
            user_branch: Some("main".into()),
            integration_branch: "orchestrator/m/integration".into(),
        },
    )
    .at(10, phase(Phase::Discovery, 0))
    .at(20, session("scout-1", Role::Scout, None))
    .at(1_520, call("scout-1", Role::Scout, 100, 20, 1_500))
    .at(
        1_600,
        Event::ToolCalled {
            session: "scout-1".into(),
            tool: "read".into(),
            summary: "read README.md".into(),
            ok: true,
            duration_ms: 30,
        },
    )
    .at(1_700, finished("scout-1", Role::Scout, true))
    .at(2_000, phase(Phase::Planning, 1))
    .at(2_010, session("planner-1", Role::Planner, None))
    .at(3_000, call("planner-1", Role::Planner, 200, 50, 900))
    .at(3_100, finished("planner-1", Role::Planner, true))
    .at(
        3_200,
        Event::PlanAccepted {
            round: 1,
            units: vec![spec("a", "Build A"), spec("b", "Build B")],
        },
    )
    .at(3_210, state("a", UnitState::Queued, None))
    .at(3_220, state("b", UnitState::Queued, None))
    .at(3_300, phase(Phase::Execution, 1))
    .at(3_400, state("a", UnitState::Running, None))
    .at(3_410, session("worker-a", Role::Worker, Some("a")))
    .at(4_000, call("worker-a", Role::Worker, 300, 40, 500))
    .at(
        6_000,
        Event::ToolCalled {
            session: "worker-a".into(),
            tool: "bash".into(),
            summary: "bash cargo test".into(),
            ok: false,
            duration_ms: 2_000,
        },
    )
    .at(
        6_100,
        Event::UnitsSpawned {
            parent: "a".into(),
            units: vec![spec("a.1", "Child of A")],
        },
    )
    .at(6_110, state("a.1", UnitState::Queued, None))
    .at(6_120, state("a", UnitState::WaitingOnChildren, None))
    .at(6_200, state("a.1", UnitState::Running, None))
    .at(6_210, session("worker-a1", Role::Worker, Some("a.1")))
    .at(7_000, call("worker-a1", Role::Worker, 1_000, 100, 700))
    .at(7_100, finished("worker-a1", Role::Worker, true))
    .at(7_200, state("a.1", UnitState::Passed, None))
    .at(7_300, state("a", UnitState::Running, None))
    .at(7_400, finished("worker-a", Role::Worker, true))
    .at(7_500, state("a", UnitState::Passed, None))
    .at(7_600, state("b", UnitState::Running, None))
    .at(7_700, state("b", UnitState::Failed, Some("tests fail")))
    .at(8_000, phase(Phase::Integration, 1))
    .at(8_010, session("master-1", Role::MasterReviewer, None))
    .at(8_500, call("master-1", Role::MasterReviewer, 50, 5, 400))
    .at(8_600, finished("master-1", Role::MasterReviewer, true))
    .at(9_000, phase(Phase::Finished, 0))
    .at(
        9_100,
        Event::MissionFinished {
            outcome: Outcome::Unsealed,
            summary: "1 unit failed\nmore detail".into(),
            usage: usage(1_650, 215),
            result_commit: None,
            unverified: false,
        },
    );
    s
}

#[test]
fn a_mission_becomes_one_tree_of_spans() {
    let script = mission();
    let spans = script.spans(Some("openai"));

    // One root; every span in the same trace.
    let root = named(&spans, "mission");
    assert_eq!(root.parent_span_id, SpanId::INVALID);
    let roots = spans
        .iter()
        .filter(|s| s.parent_span_id == SpanId::INVALID)
        .count();
    assert_eq!(roots, 1, "{:?}", names(&spans));
    let trace = root.span_context.trace_id();
    assert!(spans.iter().all(|s| s.span_context.trace_id() == trace));
    let mut ids: Vec<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
    ids.sort_by_key(|id| id.to_bytes());
    ids.dedup();
    assert_eq!(ids.len(), spans.len(), "span ids are unique");

    // Phases under the mission.
    for name in ["discovery", "planning", "execution round 1", "integration"] {
        assert!(is_child(named(&spans, name), root), "{name} is under the mission");
    }
    let execution = named(&spans, "execution round 1");
    assert_eq!(attr(execution, "orchestrator.round"), Some(Value::I64(1)));

    // Units under execution, the spawned one under its parent; sessions under their units.
    let a = named(&spans, "unit a");
    let b = named(&spans, "unit b");
    let a1 = named(&spans, "unit a.1");
    assert!(is_child(a, execution) && is_child(b, execution));
    assert!(is_child(a1, a), "a spawned unit is under its parent unit");
    assert_eq!(attr(a, "orchestrator.unit.title"), Some(Value::from("Build A")));
    assert_eq!(attr(a, "orchestrator.unit.state"), Some(Value::from("passed")));
    assert_eq!(attr(a1, "orchestrator.unit.parent"), Some(Value::from("a")));
    let workers: Vec<&SpanData> = spans.iter().filter(|s| s.name == "invoke_agent worker").collect();
    assert_eq!(workers.len(), 2);
    let worker_a = workers
        .iter()
        .find(|s| attr(s, "gen_ai.agent.id") == Some(Value::from("worker-a")))
        .expect("worker-a span");
    assert!(is_child(worker_a, a));
    assert_eq!(
        attr(worker_a, "gen_ai.operation.name"),
        Some(Value::from("invoke_agent"))
    );
    assert_eq!(attr(worker_a, "gen_ai.agent.name"), Some(Value::from("worker")));
    assert_eq!(
        attr(worker_a, "gen_ai.provider.name"),
        Some(Value::from("openai"))
    );

    // Sessions without a unit sit under their phase.
    assert!(is_child(
        named(&spans, "invoke_agent scout"),
        named(&spans, "discovery")
    ));
    assert!(is_child(
        named(&spans, "invoke_agent planner"),
        named(&spans, "planning")
    ));
    assert!(is_child(
        named(&spans, "invoke_agent master_reviewer"),
        named(&spans, "integration")
    ));

    // Model calls: under their session, GenAI attributes, start = at - duration.
    let chats: Vec<&SpanData> = spans.iter().filter(|s| s.name == "chat gpt-test").collect();
    assert_eq!(chats.len(), 5);
    let chat = chats
        .iter()
        .find(|s| is_child(s, worker_a))
        .expect("worker-a's model call");
    assert_eq!(chat.span_kind, SpanKind::Client);
    assert_eq!(attr(chat, "gen_ai.operation.name"), Some(Value::from("chat")));
    assert_eq!(attr(chat, "gen_ai.request.model"), Some(Value::from("gpt-test")));
    assert_eq!(attr(chat, "gen_ai.provider.name"), Some(Value::from("openai")));
    assert_eq!(attr(chat, "gen_ai.usage.input_tokens"), Some(Value::I64(300)));
    assert_eq!(attr(chat, "gen_ai.usage.output_tokens"), Some(Value::I64(40)));
    assert_eq!(attr(chat, "orchestrator.cost_usd"), Some(Value::F64(0.01)));
    assert_eq!(chat.start_time, script.time(3_500));
    assert_eq!(chat.end_time, script.time(4_000));

    // Tool calls: under their session, timed by their duration, errors marked.
    let bash = named(&spans, "execute_tool bash");
    assert!(is_child(bash, worker_a));
    assert_eq!(attr(bash, "gen_ai.tool.name"), Some(Value::from("bash")));
    assert_eq!(
        attr(bash, "gen_ai.operation.name"),
        Some(Value::from("execute_tool"))
    );
    assert_eq!(bash.start_time, script.time(4_000));
    assert_eq!(bash.end_time, script.time(6_000));
    assert!(matches!(bash.status, Status::Error { .. }), "{:?}", bash.status);
    let read = named(&spans, "execute_tool read");
    assert_eq!(read.status, Status::Unset);

    // Unit spans run from the first state to the terminal one; queued units start with their phase.
    assert_eq!(
        a.start_time,
        script.time(3_300),
        "clamped to the execution phase's start"
    );
    assert_eq!(a.end_time, script.time(7_500));
    assert_eq!(a1.start_time, script.time(6_110));
    assert_eq!(a1.end_time, script.time(7_200));
    assert_eq!(execution.start_time, script.time(3_300));
    assert_eq!(execution.end_time, script.time(8_000));
    assert_eq!(root.start_time, script.time(0));
    assert_eq!(root.end_time, script.time(9_100));
    assert!(a.events.iter().any(|e| e.name == "unit_state"));

    // Failed unit and unsealed mission are errors; the passed unit is not.
    assert_eq!(
        b.status,
        Status::Error {
            description: "tests fail".into()
        }
    );
    assert_eq!(a.status, Status::Unset);
    assert!(
        matches!(&root.status, Status::Error { description } if description.contains("1 unit failed")),
        "{:?}",
        root.status
    );
    assert_eq!(attr(root, "orchestrator.outcome"), Some(Value::from("unsealed")));
    assert_eq!(
        attr(root, "orchestrator.mission.id"),
        Some(Value::from("m20250301-120000-abcd"))
    );

    // Totals: a unit includes its spawned children; the mission includes everything.
    assert_eq!(attr(a, "gen_ai.usage.input_tokens"), Some(Value::I64(1_300)));
    assert_eq!(attr(a1, "gen_ai.usage.input_tokens"), Some(Value::I64(1_000)));
    assert_eq!(attr(worker_a, "gen_ai.usage.output_tokens"), Some(Value::I64(40)));
    assert_eq!(attr(root, "gen_ai.usage.input_tokens"), Some(Value::I64(1_650)));
    assert_eq!(attr(root, "gen_ai.usage.output_tokens"), Some(Value::I64(215)));
    match attr(root, "orchestrator.cost_usd") {
        Some(Value::F64(cost)) => assert!((cost - 0.05).abs() < 1e-9, "{cost}"),
        other => panic!("mission cost: {other:?}"),
    }
}

#[test]
fn a_stream_that_stops_early_closes_everything_as_an_error() {
    let mut s = Script::new();
    s.at(0, phase(Phase::Execution, 1))
        .at(100, state("a", UnitState::Running, None))
        .at(200, session("worker-a", Role::Worker, Some("a")))
        .at(900, call("worker-a", Role::Worker, 10, 1, 100));
    let spans = s.spans(None);
    assert_eq!(spans.len(), 5, "{:?}", names(&spans));
    let root = named(&spans, "mission");
    assert!(matches!(root.status, Status::Error { .. }));
    let worker = named(&spans, "invoke_agent worker");
    assert_eq!(worker.end_time, s.time(900), "open spans end at the last event");
    assert!(is_child(worker, named(&spans, "unit a")));
    assert_eq!(
        attr(worker, "gen_ai.provider.name"),
        None,
        "no provider unless known"
    );
    assert_eq!(
        attr(named(&spans, "unit a"), "orchestrator.unit.state"),
        Some(Value::from("running"))
    );
}

#[test]
fn a_resumed_run_continues_the_missions_trace_without_duplicate_phases() {
    let mut first = Script::new();
    first.at(0, phase(Phase::Execution, 2));
    let mut resumed = Script::new();
    resumed
        .at(
            0,
            Event::MissionResumed {
                phase: Phase::Execution,
                round: 2,
            },
        )
        .at(10, phase(Phase::Execution, 2))
        .at(20, state("x", UnitState::Running, None))
        .at(30, state("x", UnitState::Passed, None))
        .at(
            40,
            Event::MissionFinished {
                outcome: Outcome::Interrupted,
                summary: "interrupted".into(),
                usage: TokenUsage::default(),
                result_commit: None,
                unverified: false,
            },
        );
    let spans = resumed.spans(None);
    assert_eq!(
        names(&spans)
            .iter()
            .filter(|n| n.starts_with("execution"))
            .count(),
        1
    );
    let root = named(&spans, "mission");
    assert_eq!(
        attr(root, "orchestrator.mission.resumed"),
        Some(Value::Bool(true))
    );
    assert_eq!(
        root.status,
        Status::Unset,
        "an interrupted mission is not an error"
    );
    assert!(is_child(
        named(&spans, "unit x"),
        named(&spans, "execution round 2")
    ));
    let earlier = first.spans(None);
    assert_eq!(
        named(&earlier, "mission").span_context.trace_id(),
        root.span_context.trace_id(),
        "every run of a mission shares its trace"
    );
}

#[test]
fn long_attributes_are_clipped() {
    let mut s = Script::new();
    s.at(
        0,
        Event::MissionStarted {
            objective: "x".repeat(10_000),
            base_commit: "abc".into(),
            user_branch: None,
            integration_branch: "i".into(),
        },
    );
    let spans = s.spans(None);
    match attr(named(&spans, "mission"), "orchestrator.objective") {
        Some(Value::String(v)) => assert!(v.as_str().chars().count() <= super::MAX_ATTRIBUTE_CHARS + 1),
        other => panic!("{other:?}"),
    }
}
