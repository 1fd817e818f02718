//! Lifecycle hooks (issue #18): `[hooks]` commands run at mission start, after the plan, before a
//! unit merges (a veto sends the unit back to its worker) and after the seal; each run is recorded
//! as a `hook_ran` event, bounded in time and output.

use serde_json::Value;

use super::support::*;
use orchestrator_fake_model::script::{worker_unit, PlanUnit, Script};
use orchestrator_fake_model::SeenRequest;

/// A repository whose `orchestrator.toml` holds these `[hooks]` lines (and the trivial test command).
fn repo_with_hooks(hooks: &str) -> TestRepo {
    TestRepo::new(&[("orchestrator.toml", &format!("[hooks]\n{hooks}\n"))])
}

fn hook_runs(finished: &Finished, hook: &str) -> Vec<Value> {
    finished
        .events_of("hook_ran")
        .into_iter()
        .filter(|e| e["hook"] == hook)
        .collect()
}

fn summary(finished: &Finished) -> String {
    finished.events_of("mission_finished")[0]["summary"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_before_merge_veto_sends_the_unit_back_and_its_next_attempt_merges() {
    // Refuses unless the worker added approved.txt, saying so; shows what it got on stdin.
    let repo = repo_with_hooks(
        r#"before_merge = 'head -c 3000; echo; if [ -f approved.txt ]; then echo approved; else echo "approved.txt is missing for $ORCHESTRATOR_UNIT (attempt $ORCHESTRATOR_ATTEMPT)"; exit 1; fi'"#,
    );
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "Add a",
            "FILE a.txt := a\\n\nFIX approved.txt := yes\\n",
            &[],
        )],
        ..Script::default()
    })
    .await;
    let finished = Run::task("Add a").arg("--json").openai(&server).run(&repo).await;
    finished.assert_code(0);

    let runs = hook_runs(&finished, "before_merge");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["unit"], "a");
    assert_eq!(runs[0]["attempt"], 1);
    assert_eq!(runs[0]["exit_code"], 1);
    let said = runs[0]["output_tail"].as_str().unwrap_or_default();
    assert!(
        said.contains("approved.txt is missing for a (attempt 1)"),
        "{said}"
    );
    assert!(said.contains(r#""id":"a""#), "the unit is on its stdin: {said}");
    assert_eq!(runs[1]["attempt"], 2);
    assert_eq!(runs[1]["exit_code"], 0);

    // The worker's next request carries the veto and its reason, in the same session.
    let worker: Vec<SeenRequest> = server
        .requests()
        .into_iter()
        .filter(|r| worker_unit(r).as_deref() == Some("a"))
        .collect();
    let told = worker
        .iter()
        .find(|r| has_user_message(r, "approved.txt is missing for a (attempt 1)"))
        .expect("a later worker request carries the hook's reason");
    assert!(
        has_user_message(told, "Stage 1 passed, but the before_merge hook"),
        "said as a veto"
    );
    let files = repo.files_on_main();
    assert!(
        files.contains(&"a.txt".to_string()) && files.contains(&"approved.txt".to_string()),
        "the second attempt merged: {files:?}"
    );
    let passed = finished
        .events_of("unit_state")
        .into_iter()
        .any(|e| e["unit"] == "a" && e["state"] == "passed");
    assert!(passed);

    // The log and the report show the veto, with its reason.
    let logs = Run::cmd(&["logs"]).run(&repo).await;
    logs.assert_code(0);
    assert!(
        logs.stdout.contains(
            "a: before_merge hook `head -c 3000; echo; if [ -f approved.txt ]; then echo approv…` vetoed the merge (exit 1)"
        ) && logs.stdout.contains("approved.txt is missing for a (attempt 1)"),
        "{}",
        logs.stdout
    );
    let report = Run::cmd(&["report"]).run(&repo).await;
    report.assert_code(0);
    assert!(
        report.stdout.contains("vetoed the merge (exit 1)"),
        "{}",
        report.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_hanging_mission_start_hook_refuses_before_any_model_call() {
    let repo = repo_with_hooks(r#"mission_start = 'echo "the staging database is down" >&2; exit 3'"#);
    let server = fake(Script::default()).await;
    let refused = Run::task("Anything").openai(&server).run(&repo).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("the mission_start hook")
            && refused.stderr.contains("(exit 3)")
            && refused.stderr.contains("the staging database is down"),
        "{}",
        refused.stderr
    );
    assert!(server.requests().is_empty(), "no model call");
    assert_eq!(
        repo.worktrees().len(),
        1,
        "no worktree left: {:?}",
        repo.worktrees()
    );
    assert_eq!(repo.branches(), vec!["main".to_string()]);
    let missions = Run::cmd(&["missions", "--json"]).run(&repo).await;
    assert_eq!(
        missions.stdout.trim(),
        "[]",
        "no mission recorded: {}",
        missions.stdout
    );

    // A hook that hangs (with a child of its own) is killed at its timeout: refused the same way.
    repo.write(
        "orchestrator.toml",
        "[verify]\ntest = \"true\"\n[hooks]\nmission_start = { command = 'echo checking; sleep 600 & sleep 600', timeout_secs = 1 }\n",
    );
    repo.git(&["commit", "-qam", "a hook that hangs"]);
    let hung = Run::task("Anything").openai(&server).run(&repo).await;
    hung.assert_code(2);
    assert!(
        hung.stderr.contains("timed out after") && hung.stderr.contains("checking"),
        "{}",
        hung.stderr
    );
    assert!(server.requests().is_empty(), "no model call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_seal_output_is_recorded_bounded_and_a_failure_leaves_the_mission_sealed() {
    let repo = repo_with_hooks(
        r#"mission_start = 'echo "starting $ORCHESTRATOR_MISSION"'
after_seal = 'head -c 20000000 /dev/zero | tr "\0" x; echo; echo "sealed $ORCHESTRATOR_COMMIT"; exit 5'"#,
    );
    let server = fake(Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a\\n")],
        ..Script::default()
    })
    .await;
    let finished = Run::task("Add a").arg("--json").openai(&server).run(&repo).await;
    finished.assert_code(0);
    let mission = finished.events_of("mission_started");
    assert_eq!(mission.len(), 1);
    let start = hook_runs(&finished, "mission_start");
    assert_eq!(start.len(), 1, "{start:?}");
    assert_eq!(start[0]["exit_code"], 0);
    let id = finished.events()[0]["mission"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        start[0]["output_tail"]
            .as_str()
            .is_some_and(|o| o.contains(&format!("starting {id}"))),
        "{start:?}"
    );

    let seal = hook_runs(&finished, "after_seal");
    assert_eq!(seal.len(), 1, "{seal:?}");
    assert_eq!(seal[0]["exit_code"], 5);
    let output = seal[0]["output_tail"].as_str().unwrap_or_default();
    assert!(output.len() < 20_000, "bounded: {} bytes", output.len());
    assert!(output.contains("earlier bytes"), "the cut is said");
    let result = finished.events_of("mission_finished")[0]["result_commit"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        output.trim_end().ends_with(&format!("sealed {result}")),
        "{}",
        &output[output.len().saturating_sub(200)..]
    );
    assert!(
        summary(&finished).contains("the after_seal hook")
            && summary(&finished).contains("the mission stays sealed"),
        "{}",
        summary(&finished)
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a\n"), "applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_after_plan_refusal_goes_back_to_the_planner_within_plan_attempts() {
    let repo = TestRepo::new(&[(
        "orchestrator.toml",
        "[limits]\nplan_attempts = 2\n[hooks]\nafter_plan = 'grep -c title; echo \"every unit needs tests\"; exit 1'\n",
    )]);
    let server = fake(Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a\\n")],
        ..Script::default()
    })
    .await;
    let finished = Run::task("Add a").arg("--json").openai(&server).run(&repo).await;
    finished.assert_code(1);
    let runs = hook_runs(&finished, "after_plan");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs[0]["output_tail"]
            .as_str()
            .is_some_and(|o| o.starts_with("1\n")),
        "the plan is on its stdin: {runs:?}"
    );
    let planners = requests_of(&server, "planner");
    let revised = planners
        .iter()
        .find(|r| r.first_user_text().contains("The after_plan hook"))
        .expect("a second planner session is told of the refusal");
    assert!(
        revised.first_user_text().contains("every unit needs tests"),
        "{}",
        revised.first_user_text()
    );
    assert!(requests_of(&server, "worker").is_empty(), "nothing was executed");
    assert!(
        summary(&finished).contains("refused 2 plan(s)"),
        "{}",
        summary(&finished)
    );
}

/// Best of N meets the hook: the reviewer's pick still has to pass `before_merge`; a veto sends the
/// kept candidate (not a new one) back with the reason, and its next attempt merges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_before_merge_veto_of_the_picked_candidate_sends_it_back() {
    let repo = repo_with_hooks(
        r#"before_merge = 'if [ -f approved.txt ]; then echo approved; else echo "approved.txt is missing on $ORCHESTRATOR_BRANCH"; exit 1; fi'"#,
    );
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "Add a",
            "CANDIDATE 1: FILE a.txt := two\nCANDIDATE 2: FILE a.txt := three\nFIX approved.txt := yes\nPICK 2 the shorter one",
            &[],
        )],
        ..Script::default()
    })
    .await;
    let finished = Run::task("Add a")
        .arg("--attempts")
        .arg("2")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    finished.assert_code(0);
    let picked = finished.events_of("candidate_picked");
    assert_eq!(picked.len(), 1, "{picked:?}");
    assert_eq!(picked[0]["candidate"], 2);
    let runs = hook_runs(&finished, "before_merge");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0]["exit_code"], 1);
    let said = runs[0]["output_tail"].as_str().unwrap_or_default();
    assert!(
        said.contains("approved.txt is missing on orchestrator/"),
        "{said}"
    );
    assert!(
        said.contains("/u/a@c2"),
        "the hook is told the candidate's branch: {said}"
    );
    assert_eq!(runs[1]["exit_code"], 0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("three"), "the pick's work");
    assert_eq!(repo.read("approved.txt").as_deref(), Some("yes"));
    assert_eq!(repo.worktrees().len(), 1, "{:?}", repo.worktrees());
    assert_eq!(repo.branches(), ["main"]);
}
