//! Budgets and protocol corrections: a spent budget stops the mission cleanly (exit 1, resumable), a
//! spawn that would overrun it is refused, and replies that break the protocol get a correction.

use std::sync::atomic::{AtomicBool, Ordering};

use super::support::*;
use orchestrator_fake_model::script::{role_of, PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeOptions, FakeServer, Reply, SeenRequest};

fn three_units() -> Script {
    Script {
        plan: (1..=3)
            .map(|i| PlanUnit::file(&format!("u{i}"), &format!("{i}.txt"), "x"))
            .collect(),
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_budget_stops_cleanly_and_resumes_with_a_larger_one() {
    // Measure what the whole mission costs, then give a second one half of that.
    let probe = TestRepo::new(&[]);
    let server = fake(three_units()).await;
    let full = Run::task("Budgeted")
        .arg("--json")
        .openai(&server)
        .run(&probe)
        .await;
    full.assert_code(0);
    // Every kind of token counts towards the budget, cached input too.
    let usage = &full.events_of("mission_finished")[0]["usage"];
    let total: u64 = [
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
    ]
    .iter()
    .map(|kind| usage[kind].as_u64().unwrap_or(0))
    .sum();
    assert!(total > 0);
    let repo = TestRepo::new(&[]);
    let done = Run::task("Budgeted")
        .arg("--budget-tokens")
        .arg(&(total / 2).to_string())
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    assert!(
        done.stdout.contains("the token budget is spent"),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("By role:") && done.stdout.contains("scout:"),
        "{}",
        done.stdout
    );
    assert_eq!(repo.worktrees().len(), 1);
    let status = Run::cmd(&["status"]).run(&repo).await;
    assert!(status.stdout.contains("— interrupted"), "{}", status.stdout);
    let resumed = Run::cmd(&["resume", "--budget-tokens", "10000000"])
        .openai(&server)
        .run(&repo)
        .await;
    resumed.assert_code(0);
    for i in 1..=3 {
        assert_eq!(repo.read(&format!("{i}.txt")).as_deref(), Some("x"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_budget_stops_the_mission_too() {
    let repo = TestRepo::new(&[("orchestrator.toml", "[roles.reviewer]\nbudget_tokens = 1\n")]);
    let server = fake(three_units()).await;
    let done = Run::task("Cheap reviews")
        .arg("--max-parallel")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    assert!(
        done.stdout.contains("reviewer:") && done.stdout.contains("role budget 1"),
        "{}",
        done.stdout
    );
    assert_eq!(
        requests_of(&server, "reviewer").len(),
        1,
        "one review call fits, the next is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawn_that_would_overrun_the_budget_is_refused() {
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "p",
            "Parent",
            "SPAWN one :: FILE one.txt := 1\nSPAWN two :: FILE two.txt := 2\nFILE p.txt := p",
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Frugal")
        .arg("--budget-tokens")
        .arg("55000")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let results = tool_results(&server);
    assert!(
        results
            .iter()
            .any(|(tool, content, _)| tool == "spawn" && content.contains("spawn refused: the mission has")),
        "{results:#?}"
    );
    assert_eq!(repo.read("p.txt").as_deref(), Some("p"));
    assert_eq!(repo.read("one.txt"), None, "refused children never ran");
}

/// Answers the first worker request with an empty reply, then plays the script.
struct EmptyFirst {
    inner: ScriptedMission,
    done: AtomicBool,
}

impl Brain for EmptyFirst {
    fn respond(&self, request: &SeenRequest) -> Reply {
        if role_of(request) == "worker" && !self.done.swap(true, Ordering::SeqCst) {
            return Reply::Text(String::new());
        }
        self.inner.respond(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_reply_gets_a_correction_and_the_session_goes_on() {
    let repo = TestRepo::new(&[]);
    let brain = EmptyFirst {
        inner: ScriptedMission::new(three_units()),
        done: AtomicBool::new(false),
    };
    let server = FakeServer::start(brain, FakeOptions::default())
        .await
        .expect("fake server");
    Run::task("Recover")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    assert!(requests_of(&server, "worker")
        .iter()
        .any(|r| has_user_message(r, "Your reply was empty")));
    assert_eq!(repo.read("1.txt").as_deref(), Some("x"));
}
