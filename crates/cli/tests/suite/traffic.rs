//! Model traffic under faults: 429s with Retry-After, 500s, dropped streams, hung requests, malformed
//! and text-only tool calls, and a context window of a few thousand tokens. The mission must still
//! seal with no unit failed, the governor's limit held, Retry-After honoured, and compaction done.

use std::time::Duration;

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{FakeOptions, FakeServer, FaultKind, FaultPlan, Faults};

const CONFIG: &str = r#"
[endpoint]
first_byte_timeout_secs = 2
idle_timeout_secs = 2
max_concurrency = 4
max_wait_secs = 120

[models."fake-model-1"]
context_window = 4000
"#;

fn twenty_units() -> Script {
    let mut plan: Vec<PlanUnit> = (1..=19)
        .map(|i| PlanUnit::file(&format!("u{i}"), &format!("out/{i}.txt"), "x"))
        .collect();
    // One long unit whose conversation outgrows the small context window.
    let filler = "lorem ipsum dolor sit amet ".repeat(30);
    let big: Vec<String> = (1..=14)
        .map(|i| format!("FILE big/{i}.txt := {i} {filler}"))
        .collect();
    plan.push(PlanUnit::new("big", "Big unit", &big.join("\n"), &[]));
    Script {
        plan,
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_twenty_unit_mission_survives_faults_and_a_small_window() {
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let plan = FaultPlan {
        rate_limited: 8,
        retry_after: Some(Duration::from_secs(1)),
        server_error: 6,
        drop_stream: 4,
        hang: 2,
        malformed_tool_call: 8,
        tool_call_as_text: 8,
    };
    let brain = Faults::new(ScriptedMission::new(twenty_units()), plan);
    let log = brain.log();
    let server = FakeServer::start(
        brain,
        FakeOptions {
            latency: Duration::from_millis(10),
            ..FakeOptions::default()
        },
    )
    .await
    .expect("fake server");
    let done = Run::task("Twenty units under fire")
        .arg("--json")
        .arg("--max-parallel")
        .arg("8")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);

    for i in 1..=19 {
        assert_eq!(
            repo.read(&format!("out/{i}.txt")).as_deref(),
            Some("x"),
            "unit u{i}"
        );
    }
    for i in 1..=14 {
        if repo.read(&format!("big/{i}.txt")).is_none() {
            let worker: Vec<String> = requests_of(&server, "worker")
                .iter()
                .filter(|r| orchestrator_fake_model::script::worker_unit(r).as_deref() == Some("big"))
                .map(|r| {
                    format!(
                        "{:?}",
                        r.messages
                            .iter()
                            .skip(1)
                            .map(|m| format!("{m:?}").chars().take(160).collect::<String>())
                            .collect::<Vec<_>>()
                    )
                })
                .collect();
            panic!(
                "big/{i}.txt missing; last worker request:\n{}",
                worker.last().cloned().unwrap_or_default()
            );
        }
    }
    let failed: Vec<_> = done
        .events_of("unit_state")
        .into_iter()
        .filter(|e| e["state"] == "failed")
        .collect();
    assert!(
        failed.is_empty(),
        "no unit may fail because of the faults: {failed:#?}"
    );

    for kind in [
        FaultKind::RateLimited,
        FaultKind::ServerError,
        FaultKind::MalformedToolCall,
        FaultKind::ToolCallAsText,
    ] {
        assert!(log.count(kind) > 0, "{kind:?} was injected");
    }
    let traffic = done.events_of("model_traffic");
    assert_eq!(traffic.len(), 1, "{traffic:#?}");
    let peak = traffic[0]["peak_in_flight"].as_u64().unwrap_or(u64::MAX);
    assert!(peak <= 4, "the governor's limit held: peak {peak}");
    assert!(traffic[0]["rate_limited"].as_u64().unwrap_or(0) > 0);
    // A request sent just before the client read a 429 may land after it; half the wait is the grace.
    let early = log.early_arrivals(&server.arrivals(), Duration::from_millis(500));
    assert!(
        early.is_empty(),
        "requests arrived before Retry-After elapsed: {early:#?}"
    );

    let compacted = done.events_of("compacted");
    assert!(!compacted.is_empty(), "the long session compacted");
    assert!(
        compacted
            .iter()
            .all(|c| c["after_tokens"].as_u64() < c["before_tokens"].as_u64()),
        "{compacted:#?}"
    );
}

/// Plays the script, but answers 503 to every request of `role` while `down` is set.
struct Outage {
    inner: ScriptedMission,
    role: &'static str,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl orchestrator_fake_model::Brain for Outage {
    fn respond(&self, request: &orchestrator_fake_model::SeenRequest) -> orchestrator_fake_model::Reply {
        let hit = orchestrator_fake_model::script::role_of(request) == self.role;
        if hit && self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return orchestrator_fake_model::Reply::Error {
                status: 503,
                body: "overloaded".into(),
                retry_after: None,
            };
        }
        self.inner.respond(request)
    }
}

/// An outage while `role` works stops the mission unsealed and resumable, fails no unit and spends
/// no round on it; once the endpoint answers, `resume` seals.
async fn outage_during(role: &'static str) {
    let repo = TestRepo::new(&[("orchestrator.toml", "[endpoint]\nmax_wait_secs = 2\n")]);
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let script = Script {
        plan: vec![
            PlanUnit::file("a", "a.txt", "a"),
            PlanUnit::file("b", "b.txt", "b"),
        ],
        ..Script::default()
    };
    let brain = Outage {
        inner: ScriptedMission::new(script),
        role,
        down: down.clone(),
    };
    let server = FakeServer::start(brain, FakeOptions::default())
        .await
        .expect("fake server");
    let done = Run::task("Through an outage")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    let finished = &done.events_of("mission_finished")[0];
    let summary = finished["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("the model endpoint kept failing") && summary.contains("orchestrator resume"),
        "{role}: {summary}"
    );
    assert!(
        done.events_of("unit_state")
            .iter()
            .all(|e| e["state"] != "failed"),
        "{role}: units are stopped, not failed"
    );
    assert!(
        done.events_of("round_finished").is_empty(),
        "{role}: no round is spent on the outage"
    );
    assert_eq!(repo.worktrees().len(), 1);

    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let resumed = Run::cmd(&["resume"]).openai(&server).run(&repo).await;
    resumed.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    assert_eq!(repo.read("b.txt").as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_keeps_failing_stops_the_mission_resumably() {
    outage_during("worker").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_during_a_review_stops_the_unit_not_fails_it() {
    outage_during("reviewer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_during_the_master_review_spends_no_round() {
    outage_during("master_reviewer").await;
}
