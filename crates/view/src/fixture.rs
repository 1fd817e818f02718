//! A fixed mission's events, for tests of every view (snapshots need the same input every time).

use chrono::{DateTime, Duration, TimeZone, Utc};
use orchestrator_protocol::{
    Event, EventEnvelope, Evidence, Outcome, Phase, Review, ReviewIssue, Role, TokenUsage, UnitSpec,
    UnitState, Verdict,
};

pub const MISSION: &str = "m20261125-100000-abcd";

/// When the fixture mission starts.
pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, 0)
        .single()
        .unwrap_or_default()
}

struct Log {
    events: Vec<EventEnvelope>,
}

impl Log {
    fn at(&mut self, secs: i64, event: Event) {
        self.events.push(EventEnvelope {
            seq: self.events.len() as u64,
            at: start() + Duration::seconds(secs),
            mission: MISSION.into(),
            event,
        });
    }
}

fn spec(id: &str, title: &str, deps: &[&str]) -> UnitSpec {
    UnitSpec {
        id: id.into(),
        title: title.into(),
        description: format!("{title}, with tests."),
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        files: vec![format!("src/{}.rs", id.replace('.', "_"))],
        attempts: None,
    }
}

fn state(unit: &str, state: UnitState, attempt: u32, detail: Option<&str>) -> Event {
    Event::UnitState {
        unit: unit.into(),
        state,
        attempt,
        detail: detail.map(str::to_string),
    }
}

fn call(session: &str, role: Role, input: u64, output: u64, cost: f64) -> Event {
    Event::ModelCall {
        session: session.into(),
        role,
        model: "gpt-test".into(),
        usage: TokenUsage {
            input_tokens: input,
            output_tokens: output,
            ..Default::default()
        },
        cost_usd: Some(cost),
        duration_ms: 1200,
        constraint: None,
    }
}

fn tool(session: &str, tool: &str, summary: &str, ok: bool) -> Event {
    Event::ToolCalled {
        session: session.into(),
        tool: tool.into(),
        summary: summary.into(),
        ok,
        duration_ms: 0,
    }
}

fn session(session: &str, role: Role, unit: Option<&str>) -> Event {
    Event::SessionStarted {
        session: session.into(),
        role,
        unit: unit.map(str::to_string),
        model: "gpt-test".into(),
        sandbox: None,
    }
}

fn finished(session: &str, role: Role, turns: u32) -> Event {
    Event::SessionFinished {
        session: session.into(),
        role,
        ok: true,
        turns,
        usage: TokenUsage::default(),
    }
}

fn evidence(kind: &str, command: &str, exit_code: i32, tail: &str) -> Evidence {
    Evidence {
        kind: kind.into(),
        command: command.into(),
        exit_code: Some(exit_code),
        duration_ms: 2300,
        tree: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
        timed_out: false,
        output_tail: tail.into(),
        ..Default::default()
    }
}

fn review(verdict: Verdict, summary: &str) -> Review {
    Review {
        verdict,
        summary: summary.into(),
        issues: match verdict {
            Verdict::Pass => Vec::new(),
            Verdict::Fail => vec![ReviewIssue {
                title: "Missing error handling".into(),
                description: "parse() panics on empty input".into(),
                file: Some("src/t1.rs".into()),
            }],
        },
    }
}

/// A mission caught mid-flight: t1 passed (after a failed test), t2 split into t2.1 (passed) and
/// t2.2 (running), t3 waits for t1 and t2, dispatch paused.
pub fn running_mission() -> Vec<EventEnvelope> {
    let mut log = Log { events: Vec::new() };
    log.at(
        0,
        Event::MissionStarted {
            objective: "Add a tokenizer, a parser and a pretty-printer".into(),
            base_commit: "0123456789abcdef0123456789abcdef01234567".into(),
            user_branch: Some("main".into()),
            integration_branch: format!("orchestrator/{MISSION}/integration"),
        },
    );
    log.at(
        0,
        Event::PhaseChanged {
            phase: Phase::Discovery,
            round: 0,
        },
    );
    log.at(1, session("scout:structure", Role::Scout, None));
    log.at(4, call("scout:structure", Role::Scout, 3000, 400, 0.0042));
    log.at(5, finished("scout:structure", Role::Scout, 1));
    log.at(
        5,
        Event::PhaseChanged {
            phase: Phase::Planning,
            round: 1,
        },
    );
    log.at(6, session("planner", Role::Planner, None));
    log.at(9, call("planner", Role::Planner, 5000, 900, 0.0081));
    log.at(9, finished("planner", Role::Planner, 1));
    log.at(
        10,
        Event::PlanAccepted {
            round: 1,
            units: vec![
                spec("t1", "Tokenizer", &[]),
                spec("t2", "Parser", &[]),
                spec("t3", "Pretty-printer", &["t1", "t2"]),
            ],
        },
    );
    for unit in ["t1", "t2", "t3"] {
        log.at(10, state(unit, UnitState::Queued, 0, None));
    }
    log.at(
        10,
        Event::PhaseChanged {
            phase: Phase::Execution,
            round: 1,
        },
    );
    log.at(11, state("t1", UnitState::Running, 1, None));
    log.at(11, session("worker:t1", Role::Worker, Some("t1")));
    log.at(11, state("t2", UnitState::Running, 1, None));
    log.at(11, session("worker:t2", Role::Worker, Some("t2")));
    log.at(14, call("worker:t1", Role::Worker, 4000, 600, 0.0066));
    log.at(14, tool("worker:t1", "write", "src/t1.rs (1.2 kB)", true));
    log.at(15, call("worker:t2", Role::Worker, 4200, 500, 0.0061));
    log.at(
        15,
        Event::UnitsSpawned {
            parent: "t2".into(),
            units: vec![
                spec("t2.1", "Expressions", &[]),
                spec("t2.2", "Statements", &["t2.1"]),
            ],
        },
    );
    log.at(15, state("t2", UnitState::WaitingOnChildren, 1, None));
    log.at(15, state("t2.1", UnitState::Queued, 0, None));
    log.at(15, state("t2.2", UnitState::Queued, 0, None));
    log.at(16, state("t2.1", UnitState::Running, 1, None));
    log.at(16, session("worker:t2.1", Role::Worker, Some("t2.1")));
    log.at(18, state("t1", UnitState::Verifying, 1, None));
    log.at(
        20,
        Event::EvidenceRecorded {
            unit: Some("t1".into()),
            evidence: evidence("test", "cargo test", 101, "test tokenizer::empty ... FAILED"),
        },
    );
    log.at(
        20,
        state(
            "t1",
            UnitState::Running,
            2,
            Some("`cargo test` failed (exit 101)"),
        ),
    );
    log.at(23, call("worker:t1", Role::Worker, 5200, 300, 0.0070));
    log.at(23, tool("worker:t1", "edit", "src/t1.rs", true));
    log.at(24, tool("worker:t1", "bash", "cargo test", false));
    log.at(26, tool("worker:t2.1", "write", "src/t2_1.rs (900 B)", true));
    log.at(27, call("worker:t2.1", Role::Worker, 3900, 450, 0.0055));
    log.at(28, finished("worker:t2.1", Role::Worker, 2));
    log.at(28, state("t2.1", UnitState::Verifying, 1, None));
    log.at(
        30,
        Event::EvidenceRecorded {
            unit: Some("t2.1".into()),
            evidence: evidence("test", "cargo test", 0, "test result: ok. 4 passed"),
        },
    );
    log.at(30, state("t2.1", UnitState::Reviewing, 1, None));
    log.at(30, session("reviewer:t2.1:1", Role::Reviewer, Some("t2.1")));
    log.at(33, call("reviewer:t2.1:1", Role::Reviewer, 2500, 200, 0.0031));
    log.at(33, finished("reviewer:t2.1:1", Role::Reviewer, 1));
    log.at(
        33,
        Event::ReviewFinished {
            unit: Some("t2.1".into()),
            attempt: 1,
            review: review(
                Verdict::Pass,
                "Expressions parse with precedence; tests cover it.",
            ),
            commit: None,
            reviewer: None,
        },
    );
    log.at(33, state("t2.1", UnitState::Merging, 1, None));
    log.at(
        34,
        Event::Merged {
            unit: "t2.1".into(),
            into: "orchestrator/m/u/t2".into(),
            commit: "aaaaaaaaaabbbbbbbbbbccccccccccdddddddddd".into(),
        },
    );
    log.at(34, state("t2.1", UnitState::Passed, 1, None));
    log.at(35, state("t2.2", UnitState::Running, 1, None));
    log.at(35, session("worker:t2.2", Role::Worker, Some("t2.2")));
    log.at(37, call("worker:t2.2", Role::Worker, 4100, 700, 0.0068));
    log.at(38, tool("worker:t2.2", "read", "src/t2_1.rs", true));
    log.at(40, finished("worker:t1", Role::Worker, 3));
    log.at(40, state("t1", UnitState::Reviewing, 2, None));
    log.at(40, session("reviewer:t1:2", Role::Reviewer, Some("t1")));
    log.at(43, call("reviewer:t1:2", Role::Reviewer, 2600, 250, 0.0034));
    log.at(43, finished("reviewer:t1:2", Role::Reviewer, 1));
    log.at(
        43,
        Event::ReviewFinished {
            unit: Some("t1".into()),
            attempt: 2,
            review: review(Verdict::Pass, "Tokenizer handles empty input now."),
            commit: None,
            reviewer: None,
        },
    );
    log.at(43, state("t1", UnitState::Merging, 2, None));
    log.at(
        44,
        Event::Merged {
            unit: "t1".into(),
            into: format!("orchestrator/{MISSION}/integration"),
            commit: "1111111111222222222233333333334444444444".into(),
        },
    );
    log.at(44, state("t1", UnitState::Passed, 2, None));
    log.at(45, Event::DispatchChanged { paused: true });
    log.events
}

/// The running mission with its units built by `orchestrator worker` processes (`--workers
/// external`): t2.2 was taken over by a worker on host-b after host-a's lease expired.
pub fn running_on_workers() -> Vec<EventEnvelope> {
    let mut log = Log {
        events: running_mission(),
    };
    let taken = |worker: &str, host: &str, token: i64, taken_over_from: Option<i64>| Event::UnitTaken {
        unit: "t2.2".into(),
        worker: worker.into(),
        host: host.into(),
        token,
        taken_over_from,
    };
    log.at(46, taken("worker pid 4242", "host-a", 1, None));
    log.at(47, taken("worker pid 77", "host-b", 2, Some(1)));
    log.events
}

/// The same mission carried to its end: everything merged, stage 2 passed, sealed.
pub fn sealed_mission() -> Vec<EventEnvelope> {
    let mut log = Log {
        events: running_mission(),
    };
    log.at(50, Event::DispatchChanged { paused: false });
    log.at(52, tool("worker:t2.2", "write", "src/t2_2.rs (1.4 kB)", true));
    log.at(54, call("worker:t2.2", Role::Worker, 4800, 300, 0.0064));
    log.at(55, finished("worker:t2.2", Role::Worker, 2));
    for (secs, unit) in [(56, "t2.2"), (58, "t2"), (60, "t3")] {
        if unit == "t2" {
            log.at(secs - 1, call("worker:t2", Role::Worker, 6000, 200, 0.0070));
            log.at(secs - 1, finished("worker:t2", Role::Worker, 2));
        }
        if unit == "t3" {
            log.at(secs - 1, state(unit, UnitState::Running, 1, None));
            log.at(secs - 1, session("worker:t3", Role::Worker, Some("t3")));
            log.at(secs, call("worker:t3", Role::Worker, 3000, 500, 0.0050));
            log.at(secs, finished("worker:t3", Role::Worker, 1));
        }
        log.at(secs, state(unit, UnitState::Merging, 1, None));
        if unit == "t3" {
            // t3 and t2 both touched the crate root: the merge conflicts and a resolver settles it.
            log.at(
                secs,
                Event::MergeConflict {
                    unit: unit.into(),
                    files: vec!["src/lib.rs".into()],
                    attempt: 1,
                },
            );
            log.at(
                secs,
                session("conflict_resolver:t3", Role::ConflictResolver, Some("t3")),
            );
            log.at(
                secs,
                call("conflict_resolver:t3", Role::ConflictResolver, 2000, 150, 0.0025),
            );
            log.at(secs, finished("conflict_resolver:t3", Role::ConflictResolver, 1));
        }
        log.at(
            secs,
            Event::Merged {
                unit: unit.into(),
                into: format!("orchestrator/{MISSION}/integration"),
                commit: "5555555555666666666677777777778888888888".into(),
            },
        );
        log.at(secs, state(unit, UnitState::Passed, 1, None));
    }
    log.at(
        61,
        Event::PhaseChanged {
            phase: Phase::Integration,
            round: 1,
        },
    );
    log.at(
        63,
        Event::EvidenceRecorded {
            unit: None,
            evidence: evidence("test", "cargo test", 0, "test result: ok. 12 passed"),
        },
    );
    log.at(63, session("master_reviewer:1", Role::MasterReviewer, None));
    log.at(
        66,
        call("master_reviewer:1", Role::MasterReviewer, 8000, 400, 0.0110),
    );
    log.at(66, finished("master_reviewer:1", Role::MasterReviewer, 1));
    log.at(
        66,
        Event::ReviewFinished {
            unit: None,
            attempt: 1,
            review: review(
                Verdict::Pass,
                "The three parts fit; the pretty-printer round-trips.",
            ),
            commit: None,
            reviewer: None,
        },
    );
    log.at(
        66,
        Event::RoundFinished {
            round: 1,
            passed: true,
            follow_up: Vec::new(),
        },
    );
    log.at(
        67,
        // As the engine does: the finished phase has no round.
        Event::PhaseChanged {
            phase: Phase::Finished,
            round: 0,
        },
    );
    log.at(
        67,
        Event::MissionFinished {
            outcome: Outcome::Sealed,
            summary: "sealed: 5 units merged, stage 2 passed".into(),
            usage: TokenUsage::default(),
            result_commit: Some("9999999999aaaaaaaaaabbbbbbbbbbcccccccccc".into()),
            unverified: false,
        },
    );
    log.events
}
