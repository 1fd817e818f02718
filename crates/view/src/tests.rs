use super::*;
use crate::fixture::{running_mission, running_on_workers, sealed_mission, start};

fn ids<'a>(rows: &[TreeRow<'a>]) -> Vec<(String, usize)> {
    rows.iter().map(|r| (r.unit.id.clone(), r.depth)).collect()
}

#[test]
fn the_tree_puts_spawned_units_under_their_parent() {
    let view = MissionView::from_events(&running_mission());
    assert_eq!(
        ids(&view.tree()),
        vec![
            ("t1".to_string(), 0),
            ("t2".to_string(), 0),
            ("t2.1".to_string(), 1),
            ("t2.2".to_string(), 1),
            ("t3".to_string(), 0),
        ]
    );
    let t2 = view.unit("t2").unwrap();
    assert_eq!(t2.state, UnitState::WaitingOnChildren);
    assert_eq!(view.unit("t2.1").unwrap().parent.as_deref(), Some("t2"));
}

#[test]
fn unit_states_attempts_and_times_follow_the_events() {
    let view = MissionView::from_events(&running_mission());
    let t1 = view.unit("t1").unwrap();
    assert_eq!((t1.state, t1.attempt), (UnitState::Passed, 2));
    assert_eq!(t1.started_at, Some(start() + chrono::Duration::seconds(11)));
    assert_eq!(t1.finished_at, Some(start() + chrono::Duration::seconds(44)));
    assert_eq!(t1.evidence.len(), 1);
    assert_eq!(t1.reviews.len(), 1);
    assert!(t1.merged_commit.is_some());
    let t3 = view.unit("t3").unwrap();
    assert_eq!((t3.state, t3.started_at), (UnitState::Queued, None));
    assert_eq!(
        view.counts(),
        UnitCounts {
            total: 5,
            queued: 1,
            active: 2,
            passed: 2,
            failed: 0,
            skipped: 0
        }
    );
    assert!(view.paused);
}

#[test]
fn tokens_and_cost_add_up_per_session_unit_role_and_mission() {
    let view = MissionView::from_events(&running_mission());
    let t1 = view.unit("t1").unwrap();
    // worker:t1 made two calls, reviewer:t1:2 one.
    assert_eq!(t1.totals.calls, 3);
    assert_eq!(t1.totals.usage.input_tokens, 4000 + 5200 + 2600);
    assert!((t1.totals.cost_usd - (0.0066 + 0.0070 + 0.0034)).abs() < 1e-9);
    let workers = view.roles[&Role::Worker];
    let all_roles: u64 = view.roles.values().map(|t| t.usage.total()).sum();
    assert_eq!(all_roles, view.usage.total());
    assert_eq!(workers.calls, 5);
    let role_cost: f64 = view.roles.values().map(|t| t.cost_usd).sum();
    assert!((role_cost - view.cost_usd).abs() < 1e-9);
}

#[test]
fn live_sessions_show_their_last_action() {
    let view = MissionView::from_events(&running_mission());
    let live: Vec<&str> = view.live_sessions().map(|s| s.id.as_str()).collect();
    assert_eq!(live, vec!["worker:t2", "worker:t2.2"]);
    let t22 = view.sessions.iter().find(|s| s.id == "worker:t2.2").unwrap();
    assert_eq!(t22.last_action.as_deref(), Some("read src/t2_1.rs"));
    let t1 = view.sessions.iter().find(|s| s.id == "worker:t1").unwrap();
    assert_eq!(t1.ok, Some(true));
}

#[test]
fn unit_logs_hold_the_units_own_story() {
    let view = MissionView::from_events(&running_mission());
    let log: Vec<&str> = view
        .unit("t1")
        .unwrap()
        .log
        .iter()
        .map(|l| l.text.as_str())
        .collect();
    assert!(
        log.contains(&"t1: test `cargo test` failed (exit 101) in 2.3s"),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("worker:t1: bash cargo test (failed)")),
        "{log:?}"
    );
    assert!(log.iter().any(|l| l.starts_with("t1: review passed")), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("t2")), "only t1's lines: {log:?}");
}

#[test]
fn folding_the_log_twice_counts_nothing_twice() {
    let events = running_mission();
    let mut view = MissionView::from_events(&events);
    let once = view.usage;
    for event in &events {
        view.apply(event);
    }
    assert_eq!(view.usage, once);
    assert_eq!(view.units.len(), 5);
}

#[test]
fn a_sealed_mission_ends_with_no_live_session() {
    let view = MissionView::from_events(&sealed_mission());
    assert_eq!(view.outcome, Some(Outcome::Sealed));
    assert_eq!(view.live_sessions().count(), 0, "{:?}", view.sessions);
    assert_eq!(view.counts().passed, 5);
    assert!(!view.paused);
    assert_eq!(view.master_reviews.len(), 1);
    assert_eq!(view.round, 1, "the round it ended in");
    assert_eq!(clock(view.elapsed(Utc::now())), "01:07");
}

#[test]
fn a_resumed_mission_closes_what_the_earlier_run_left_live() {
    let mut events = running_mission();
    let next = events.len() as u64;
    events.push(EventEnvelope {
        seq: next,
        at: start() + chrono::Duration::seconds(100),
        mission: fixture::MISSION.into(),
        event: Event::MissionResumed {
            phase: Phase::Execution,
            round: 1,
        },
    });
    let view = MissionView::from_events(&events);
    assert_eq!(view.live_sessions().count(), 0);
    assert!(!view.paused);
}

#[test]
fn the_view_serialises_for_the_web() {
    let view = MissionView::from_events(&running_mission());
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["units"][0]["state"], "passed");
    assert_eq!(json["roles"]["worker"]["calls"], 5);
}

#[test]
fn clocks_read_like_clocks() {
    assert_eq!(clock(chrono::Duration::seconds(5)), "00:05");
    assert_eq!(clock(chrono::Duration::seconds(3725)), "1:02:05");
}

#[test]
fn merge_time_states_keep_the_units_attempt() {
    let mut events = running_mission();
    let next = events.len() as u64;
    events.push(EventEnvelope {
        seq: next,
        at: start() + chrono::Duration::seconds(46),
        mission: fixture::MISSION.into(),
        event: Event::UnitState {
            unit: "t1".into(),
            state: UnitState::Passed,
            attempt: 0,
            detail: None,
        },
    });
    let view = MissionView::from_events(&events);
    assert_eq!(view.unit("t1").unwrap().attempt, 2);
}

#[test]
fn a_message_to_a_worker_is_in_its_units_log() {
    let mut events = running_mission();
    let last = events.last().cloned().unwrap();
    events.push(EventEnvelope {
        seq: last.seq + 1,
        event: Event::UserMessage {
            unit: "t2.2".into(),
            message: "Use the existing lexer.\nAnd keep it small.".into(),
        },
        ..last
    });
    let view = MissionView::from_events(&events);
    let log = &view.unit("t2.2").unwrap().log;
    assert_eq!(
        log.last().map(|l| l.text.as_str()),
        Some("t2.2: your message reached its worker: Use the existing lexer.")
    );
}

#[test]
fn a_hook_run_is_one_line_in_the_log_and_a_veto_in_its_units_log() {
    let mut events = running_mission();
    let last = events.last().cloned().unwrap();
    let run = orchestrator_protocol::HookRun {
        hook: orchestrator_protocol::HookKind::BeforeMerge,
        unit: Some("t2.2".into()),
        attempt: Some(1),
        command: "make check".into(),
        exit_code: Some(1),
        timed_out: false,
        duration_ms: 400,
        output_tail: "checking…\nlicense header missing in src/lex.rs\n\n".into(),
    };
    events.push(EventEnvelope {
        seq: last.seq + 1,
        event: Event::HookRan { run: run.clone() },
        ..last
    });
    let view = MissionView::from_events(&events);
    let expected = "t2.2: before_merge hook `make check` vetoed the merge (exit 1) in 0.4s: license header missing in src/lex.rs";
    assert_eq!(
        view.unit("t2.2").unwrap().log.last().map(|l| l.text.as_str()),
        Some(expected)
    );
    let seal = orchestrator_protocol::HookRun {
        hook: orchestrator_protocol::HookKind::AfterSeal,
        unit: None,
        attempt: None,
        exit_code: Some(0),
        ..run.clone()
    };
    assert_eq!(
        crate::describe(&Event::HookRan { run: seal }).as_deref(),
        Some("mission: after_seal hook `make check` passed (exit 0) in 0.4s")
    );
    let long = orchestrator_protocol::HookRun {
        command: format!("{}\nsecond line", "x".repeat(100)),
        ..run
    };
    let line = crate::describe(&Event::HookRan { run: long }).unwrap_or_default();
    assert!(
        line.contains(&format!("hook `{}…` vetoed", "x".repeat(60))),
        "{line}"
    );
}

/// Each unit's spans as (state, attempt, from, to) in seconds from the start.
fn lane(view: &MissionView, unit: &str) -> Vec<(UnitState, u32, i64, Option<i64>)> {
    let secs = |t: chrono::DateTime<chrono::Utc>| (t - start()).num_seconds();
    view.unit(unit)
        .unwrap()
        .spans
        .iter()
        .map(|s| (s.state, s.attempt, secs(s.from), s.to.map(secs)))
        .collect()
}

#[test]
fn each_unit_has_a_lane_of_stretches_from_plan_to_end() {
    let view = MissionView::from_events(&running_mission());
    use UnitState::*;
    assert_eq!(
        lane(&view, "t1"),
        vec![
            (Queued, 0, 10, Some(11)),
            (Running, 1, 11, Some(18)),
            (Verifying, 1, 18, Some(20)),
            (Running, 2, 20, Some(40)),
            (Reviewing, 2, 40, Some(43)),
            (Merging, 2, 43, Some(44)),
        ],
        "a retry is a new stretch of its attempt; the end closes the last"
    );
    assert_eq!(lane(&view, "t3"), vec![(Queued, 0, 10, None)], "still waiting");
    let t1 = view.unit("t1").unwrap();
    let calls: u32 = t1.spans.iter().map(|s| s.model_calls).sum();
    assert_eq!(
        u64::from(calls),
        t1.totals.calls,
        "the unit's calls are on its lane"
    );
    for unit in &view.units {
        for pair in unit.spans.windows(2) {
            assert_eq!(pair[0].to, Some(pair[1].from), "{}: no gap, no overlap", unit.id);
        }
    }
}

#[test]
fn a_run_cut_off_ends_its_stretches_when_it_was_last_heard_from() {
    let mut events = running_mission();
    let last = events.last().unwrap().at;
    let next = events.len() as u64;
    events.push(EventEnvelope {
        seq: next,
        at: last + chrono::Duration::seconds(600),
        mission: fixture::MISSION.into(),
        event: Event::MissionResumed {
            phase: Phase::Execution,
            round: 1,
        },
    });
    let view = MissionView::from_events(&events);
    let t3 = view.unit("t3").unwrap();
    assert_eq!(t3.spans.last().unwrap().to, Some(last), "not the resume's time");
}

#[test]
fn usage_per_minute_and_role_adds_up_to_the_mission() {
    let view = MissionView::from_events(&sealed_mission());
    let mut total = TokenUsage::default();
    for bucket in &view.usage_by_minute {
        total.add(bucket.usage);
    }
    assert_eq!(total, view.usage);
    let calls: u64 = view.usage_by_minute.iter().map(|b| b.calls).sum();
    let counted: u64 = view.roles.values().map(|t| t.calls).sum();
    assert_eq!(calls, counted);
    assert!(view
        .usage_by_minute
        .windows(2)
        .all(|w| w[0].minute <= w[1].minute));
}

#[test]
fn a_merge_conflict_marks_the_stretch_it_happened_in() {
    let view = MissionView::from_events(&sealed_mission());
    let t3 = view.unit("t3").unwrap();
    let conflicted: Vec<_> = t3.spans.iter().filter(|s| !s.conflicts.is_empty()).collect();
    assert_eq!(conflicted.len(), 1);
    assert_eq!(conflicted[0].state, UnitState::Merging);
    assert_eq!(conflicted[0].conflicts, vec!["src/lib.rs".to_string()]);
    assert_eq!(t3.conflicts, vec![vec!["src/lib.rs".to_string()]]);
}

#[test]
fn a_conflict_over_thousands_of_files_names_a_few_on_its_stretch() {
    let mut events = sealed_mission();
    let at = events
        .iter()
        .position(|e| matches!(&e.event, Event::MergeConflict { .. }))
        .unwrap();
    if let Event::MergeConflict { files, .. } = &mut events[at].event {
        *files = (0..5000).map(|i| format!("f{i}")).collect();
    }
    let view = MissionView::from_events(&events);
    let span = view
        .unit("t3")
        .unwrap()
        .spans
        .iter()
        .find(|s| !s.conflicts.is_empty())
        .cloned()
        .unwrap();
    assert_eq!(span.conflicts.len(), SPAN_CONFLICT_FILES);
}

#[test]
fn a_units_holder_is_the_worker_that_took_it_last() {
    let view = MissionView::from_events(&running_on_workers());
    let t22 = view.unit("t2.2").unwrap();
    assert_eq!(
        t22.holder,
        Some(UnitHolder {
            worker: "worker pid 77".into(),
            host: "host-b".into(),
            token: 2,
        })
    );
    assert!(
        view.unit("t1").unwrap().holder.is_none(),
        "built by the commander"
    );
    let lines: Vec<&str> = t22.log.iter().map(|l| l.text.as_str()).collect();
    assert!(
        lines.contains(&"t2.2: taken by worker pid 4242 on host-a (token 1)"),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "t2.2: taken over by worker pid 77 on host-b (token 2) after the lease of token 1 expired"
        )),
        "{lines:?}"
    );
    let json = serde_json::to_value(&view).unwrap();
    let t22 = json["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == "t2.2")
        .unwrap();
    assert_eq!(t22["holder"]["host"], "host-b");
}

#[test]
fn what_a_person_reads_cannot_drive_their_terminal() {
    // A notice relayed from another host, or a model's words, carrying escape sequences.
    let hostile = "a: done\u{1b}]0;owned\u{7}\u{1b}[2J\rfake line\u{9b}31m";
    let shown = terminal_safe(hostile);
    assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
    assert!(
        shown.contains("\\u{1b}]0;owned") && shown.contains("fake line"),
        "{shown}"
    );
    // Lines and tabs stay; plain text is not copied.
    assert_eq!(terminal_safe("two\nlines\tand a tab"), "two\nlines\tand a tab");
    assert!(matches!(terminal_safe("plain"), std::borrow::Cow::Borrowed(_)));
}
