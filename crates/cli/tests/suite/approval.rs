//! Plan approval (issue #17): `task --approve-plan` stops after planning with the plan waiting, and
//! `orchestrator approve` from another process approves it, rejects it with feedback (the planner
//! plans again) or replaces it with an edited plan. The wait survives a kill -9 and a resume.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::watch;

use super::support::*;
use orchestrator_fake_model::script::{worker_unit, PlanUnit, Script};
use orchestrator_fake_model::FakeServer;

const WAIT: Duration = Duration::from_secs(120);

fn script() -> Script {
    Script {
        plan: vec![
            PlanUnit::new("a", "A", "FILE a.txt := a\\n", &[]),
            PlanUnit::new("b", "B", "FILE b.txt := b\\n", &["a"]),
        ],
        ..Script::default()
    }
}

/// A mission running in a child process with `--json`, its events collected as they come.
struct Live {
    child: tokio::process::Child,
    events: watch::Receiver<Vec<Value>>,
    stderr: Arc<std::sync::Mutex<String>>,
}

impl Live {
    async fn start(repo: &TestRepo, run: Run) -> Live {
        let mut child = run.command(repo).spawn().expect("the orchestrator starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let (tx, events) = watch::channel(Vec::new());
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    tx.send_modify(|events| events.push(event));
                }
            }
        });
        let text = Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        tokio::spawn(async move {
            let mut all = String::new();
            let _ = stderr.read_to_string(&mut all).await;
            *sink.lock().unwrap() = all;
        });
        Live {
            child,
            events,
            stderr: text,
        }
    }

    /// Waits (bounded) until the mission has shown plan `attempt` for approval; returns its units.
    async fn waiting(&mut self, attempt: u64) -> Vec<Value> {
        let found = tokio::time::timeout(
            WAIT,
            self.events.wait_for(|events| {
                events
                    .iter()
                    .any(|e| e["type"] == "plan_awaiting_approval" && e["attempt"] == attempt)
            }),
        )
        .await
        .map(|seen| seen.is_ok());
        assert!(
            found == Ok(true),
            "plan {attempt} never waited; events: {:?}",
            self.events
                .borrow()
                .iter()
                .map(|e| e["type"].clone())
                .collect::<Vec<_>>()
        );
        let events = self.events.borrow();
        let shown = events
            .iter()
            .rev()
            .find(|e| e["type"] == "plan_awaiting_approval")
            .expect("the waiting plan");
        shown["units"].as_array().cloned().unwrap_or_default()
    }

    fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events
            .borrow()
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    /// The exit status, once the mission ends (bounded).
    async fn finished(mut self) -> (Option<i32>, Live) {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the mission ends")
            .expect("waits");
        // The readers finish with the pipes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        (status.code(), self)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

fn waiting_task(server: &FakeServer) -> Run {
    Run::task("Approve me")
        .arg("--approve-plan")
        .arg("--json")
        .openai(server)
}

async fn approve(repo: &TestRepo, args: &[&str]) -> Finished {
    let mut all = vec!["approve"];
    all.extend_from_slice(args);
    Run::cmd(&all).run(repo).await
}

fn worker_units(server: &FakeServer) -> Vec<String> {
    let mut units: Vec<String> = requests_of(server, "worker")
        .iter()
        .filter_map(worker_unit)
        .collect();
    units.sort();
    units.dedup();
    units
}

async fn status_json(repo: &TestRepo) -> Value {
    let status = Run::cmd(&["status", "--json"]).run(repo).await;
    status.assert_code(0);
    serde_json::from_str(&status.stdout).expect("status JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_plan_runs_and_nothing_runs_before() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let mut live = Live::start(&repo, waiting_task(&server)).await;
    let units = live.waiting(1).await;
    assert_eq!(units.len(), 2, "{units:?}");
    assert!(
        worker_units(&server).is_empty(),
        "no worker runs while the plan waits"
    );
    let status = status_json(&repo).await;
    assert_eq!(status["waiting_plan"]["attempt"], 1, "{status}");
    assert_eq!(status["waiting_plan"]["units"][1]["id"], "b", "{status}");
    let shown = approve(&repo, &["--show"]).await;
    shown.assert_code(0);
    let plan: Value = serde_json::from_str(&shown.stdout).expect("--show prints JSON");
    assert_eq!(plan["tasks"][0]["id"], "a", "{plan}");

    let approved = approve(&repo, &[]).await;
    approved.assert_code(0);
    assert!(approved.stdout.contains("approved"), "{}", approved.stdout);
    let (code, live) = live.finished().await;
    assert_eq!(code, Some(0), "{}", live.stderr());
    let answered = live.events_of("plan_answered");
    assert_eq!(answered.len(), 1, "{answered:?}");
    assert_eq!(answered[0]["answer"], "approve");
    assert_eq!(repo.read("b.txt").as_deref(), Some("b\n"));
    assert_eq!(worker_units(&server), ["a", "b"]);
    assert!(status_json(&repo).await.get("waiting_plan").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_plan_goes_back_to_the_planner_with_the_feedback() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let mut live = Live::start(&repo, waiting_task(&server)).await;
    live.waiting(1).await;
    let planners = requests_of(&server, "planner").len();

    let rejected = approve(&repo, &["--reject", "--feedback", "Write b before a, please"]).await;
    rejected.assert_code(0);
    assert!(rejected.stdout.contains("rejected"), "{}", rejected.stdout);
    live.waiting(2).await;
    let replans = requests_of(&server, "planner");
    assert!(replans.len() > planners, "the planner ran again");
    let last = replans.last().expect("a planner request");
    assert!(
        has_user_message(last, "Write b before a, please") && has_user_message(last, "- b: B (after a)"),
        "the feedback and the rejected plan reach the planner: {}",
        last.first_user_text()
    );
    assert!(worker_units(&server).is_empty(), "still nothing runs");
    // The first plan's answer is spent: approving now approves plan 2.
    approve(&repo, &[]).await.assert_code(0);
    let (code, live) = live.finished().await;
    assert_eq!(code, Some(0), "{}", live.stderr());
    let answers: Vec<Value> = live
        .events_of("plan_answered")
        .iter()
        .map(|e| e["answer"].clone())
        .collect();
    assert_eq!(answers, ["reject", "approve"]);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_rejections_end_the_mission_resumable() {
    let repo = TestRepo::new(&[("orchestrator.toml", "[limits]\nplan_attempts = 1\n")]);
    let server = fake(script()).await;
    let mut live = Live::start(&repo, waiting_task(&server)).await;
    live.waiting(1).await;
    approve(&repo, &["--reject", "--feedback", "no"])
        .await
        .assert_code(0);
    let (code, live) = live.finished().await;
    assert_eq!(code, Some(3), "{}", live.stderr());
    let finished = live.events_of("mission_finished");
    let summary = finished[0]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("rejected 1 time(s)"), "{summary}");
    assert!(worker_units(&server).is_empty());
    assert_eq!(status_json(&repo).await["status"], "interrupted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_plan_replaces_the_waiting_one_and_a_bad_edit_is_refused() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let mut live = Live::start(&repo, waiting_task(&server)).await;
    live.waiting(1).await;
    let plan = repo.home().join("plan.json");
    let refused = [
        ("{ not json", "not JSON"),
        (
            r#"{"tasks": [{"id": "x", "title": "X", "description": "d", "depends_on": ["y"]},
                          {"id": "y", "title": "Y", "description": "d", "depends_on": ["x"]}]}"#,
            "cycle",
        ),
        (
            r#"[{"id": "x", "title": "X", "description": "d", "depends_on": ["nope"]}]"#,
            "`nope`, which is not in the plan",
        ),
    ];
    for (text, why) in refused {
        std::fs::write(&plan, text).expect("writes the plan file");
        let answer = approve(&repo, &["--plan-file", plan.to_str().expect("utf-8")]).await;
        answer.assert_code(2);
        assert!(
            answer.stderr.contains(why) && answer.stderr.contains("keeps waiting"),
            "{why}: {}",
            answer.stderr
        );
    }
    assert_eq!(status_json(&repo).await["waiting_plan"]["attempt"], 1);
    assert!(worker_units(&server).is_empty());

    std::fs::write(
        &plan,
        r#"{"tasks": [{"id": "e", "title": "E", "description": "FILE e.txt := edited\\n", "depends_on": []}]}"#,
    )
    .expect("writes the plan file");
    approve(&repo, &["--plan-file", plan.to_str().expect("utf-8")])
        .await
        .assert_code(0);
    let (code, live) = live.finished().await;
    assert_eq!(code, Some(0), "{}", live.stderr());
    assert_eq!(worker_units(&server), ["e"], "the workers build the edited units");
    assert_eq!(repo.read("e.txt").as_deref(), Some("edited\n"));
    assert_eq!(repo.read("a.txt"), None);
    let accepted = live.events_of("plan_accepted");
    assert_eq!(accepted[0]["units"][0]["id"], "e");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_plan_survives_kill_and_resume() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let mut live = Live::start(&repo, waiting_task(&server)).await;
    live.waiting(1).await;
    live.child.start_kill().expect("kill -9");
    let (code, _) = live.finished().await;
    assert_eq!(code, None, "killed by the signal");
    let planners = requests_of(&server, "planner").len();

    // Resumed, the plan waits again (not planned again), until approved.
    let resume = Run::cmd(&["resume", "--json"]).openai(&server);
    let mut live = Live::start(&repo, resume).await;
    let units = live.waiting(1).await;
    assert_eq!(units.len(), 2);
    assert_eq!(requests_of(&server, "planner").len(), planners, "no new plan");
    assert!(worker_units(&server).is_empty());
    live.child.start_kill().expect("kill -9");
    live.finished().await;

    // An answer given while no process runs the mission is kept for the next run.
    let recorded = approve(&repo, &[]).await;
    recorded.assert_code(0);
    assert!(recorded.stdout.contains("not running"), "{}", recorded.stdout);
    let done = Run::cmd(&["resume", "--json"]).openai(&server).run(&repo).await;
    done.assert_code(0);
    assert_eq!(done.events_of("plan_answered").len(), 1);
    assert_eq!(repo.read("b.txt").as_deref(), Some("b\n"));
    assert_eq!(requests_of(&server, "planner").len(), planners);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_with_no_plan_waiting_is_a_usage_error() {
    let repo = TestRepo::new(&[]);
    let none = approve(&repo, &[]).await;
    none.assert_code(2);

    // Without --approve-plan nothing waits.
    let server = fake(script()).await;
    let sealed = Run::task("No approval")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    sealed.assert_code(0);
    assert!(sealed.events_of("plan_awaiting_approval").is_empty());
    let late = approve(&repo, &[]).await;
    late.assert_code(2);
    assert!(
        late.stderr.contains("no plan waiting for approval"),
        "{}",
        late.stderr
    );
    let flags = approve(&repo, &["--reject"]).await;
    flags.assert_code(2);
}
