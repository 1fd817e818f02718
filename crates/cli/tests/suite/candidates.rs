//! Best of N (`--attempts N`): N workers build a unit side by side, each verified; the reviewer keeps
//! one of those that passed, and only its change is merged; the others leave no worktree or branch.
//! A reviewer that picks a candidate that failed or does not exist is asked once more, then the
//! runtime keeps the first passing one — never a failing one.

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script};

/// The test fails on a file that says "broken": candidate 1 writes one, 2 and 3 do not.
const CONFIG: &str = "[verify]\ntest = \"! grep -q broken a.txt\"\n[limits]\nunit_attempts = 1\n";

fn three_candidates(picks: &[&str]) -> Script {
    let picks: String = picks.iter().map(|p| format!("\nPICK {p}")).collect();
    Script {
        plan: vec![PlanUnit::new(
            "a",
            "Write a",
            &format!(
                "CANDIDATE 1: FILE a.txt := broken\nCANDIDATE 2: FILE a.txt := two\nCANDIDATE 3: FILE a.txt := three{picks}"
            ),
            &[],
        )],
        ..Script::default()
    }
}

/// Nothing of the mission's is left in git: one worktree (the checkout) and only `main`.
fn assert_nothing_left(repo: &TestRepo) {
    assert_eq!(repo.worktrees().len(), 1, "{:?}", repo.worktrees());
    assert_eq!(repo.branches(), ["main"], "no candidate or unit branch is left");
    let all = repo.git(&["branch", "-a", "--format=%(refname)"]);
    assert!(!all.contains("orchestrator/"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_candidates_one_failing_merge_the_one_the_reviewer_picked() {
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let server = fake(three_candidates(&["3 candidate 3 says it best"])).await;
    let done = Run::task("Write a")
        .arg("--attempts")
        .arg("3")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(
        repo.read("a.txt").as_deref(),
        Some("three"),
        "the pick is on main"
    );
    assert_nothing_left(&repo);

    let finished = done.events_of("candidate_finished");
    let passed: Vec<(u64, bool)> = finished
        .iter()
        .map(|e| (e["candidate"].as_u64().unwrap_or(0), e["passed"] == true))
        .collect();
    assert_eq!(passed.len(), 3, "{finished:?}");
    for (number, ok) in passed {
        assert_eq!(ok, number != 1, "candidate {number}: {finished:?}");
    }
    let picked = done.events_of("candidate_picked");
    assert_eq!(picked.len(), 1, "{picked:?}");
    assert_eq!(picked[0]["candidate"], 3);
    assert_eq!(picked[0]["passing"], serde_json::json!([2, 3]));
    assert_eq!(picked[0]["reasons"], "candidate 3 says it best");
    assert!(picked[0].get("by_runtime").is_none(), "{}", picked[0]);
    // The merge is the picked candidate's verified commit.
    let merged = &done.events_of("merged")[0];
    assert!(repo
        .git(&["log", "--format=%H", "main"])
        .contains(picked[0]["commit"].as_str().unwrap_or("none")));
    assert!(merged["unit"] == "a");

    // Three worker sessions, one comparing review that saw only the passing two.
    let workers: std::collections::BTreeSet<String> = requests_of(&server, "worker")
        .iter()
        .map(|r| {
            r.first_user_text()
                .lines()
                .find(|l| l.starts_with("# Candidate "))
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(workers.len(), 3, "{workers:?}");
    let compared = requests_of(&server, "reviewer");
    let first = compared[0].first_user_text();
    assert!(
        first.contains("# Candidates that passed verification: 2, 3"),
        "{first}"
    );
    assert!(first.contains("Candidate(s) 1 failed verification"), "{first}");
    assert!(
        first.contains("+three") && first.contains("+two") && !first.contains("+broken"),
        "{first}"
    );

    // `logs` and the report show the pick and its reasons.
    let logs = Run::cmd(&["logs"]).run(&repo).await;
    assert!(
        logs.stdout
            .contains("a: candidate 3 kept by the reviewer — candidate 3 says it best"),
        "{}",
        logs.stdout
    );
    assert!(
        logs.stdout.contains("a: candidate 1 of 3 is out"),
        "{}",
        logs.stdout
    );
    let report = Run::cmd(&["report"]).run(&repo).await;
    assert!(report.stdout.contains("candidate 3 kept"), "{}", report.stdout);
    // And `status`, in words and as JSON.
    let status = Run::cmd(&["status"]).run(&repo).await;
    assert!(
        status
            .stdout
            .contains("picked candidate 3 by the reviewer (passing: 2, 3): candidate 3 says it best"),
        "{}",
        status.stdout
    );
    let json = Run::cmd(&["status", "--json"]).run(&repo).await;
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap_or_default();
    assert_eq!(report["units"][0]["pick"]["candidate"], 3, "{}", json.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pick_of_a_failed_or_missing_candidate_is_asked_again_then_the_first_passing_is_kept() {
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    // First the candidate that failed its tests, then one that does not exist.
    let server = fake(three_candidates(&["1 the broken one", "9 a ghost"])).await;
    let done = Run::task("Write a")
        .arg("--attempts")
        .arg("3")
        // One session at a time: the candidates wait for each other's slot, never past the cap.
        .arg("--max-parallel")
        .arg("1")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(
        repo.read("a.txt").as_deref(),
        Some("two"),
        "never the failing one"
    );
    assert_nothing_left(&repo);
    let results = tool_results(&server);
    let refusal = results
        .iter()
        .find(|(name, content, _)| name == "submit_review" && content.contains("Not recorded"))
        .unwrap_or_else(|| panic!("the first pick is sent back: {results:?}"));
    assert!(
        refusal
            .1
            .contains("candidate 1 failed verification and cannot be kept")
            && refusal.1.contains("passed verification are 2, 3"),
        "{}",
        refusal.1
    );
    // The second pick ends the review (its answer goes to no further model call): the runtime's rule.
    assert_eq!(
        results
            .iter()
            .filter(|(name, _, _)| name == "submit_review")
            .count(),
        1,
        "asked again once only"
    );
    let picked = &done.events_of("candidate_picked")[0];
    assert_eq!(picked["candidate"], 2);
    assert_eq!(picked["by_runtime"], true);
    assert!(
        picked["reasons"]
            .as_str()
            .is_some_and(|r| r.contains("the first that passed verification") && r.contains("a ghost")),
        "{picked}"
    );
    let peak = done
        .events_of("model_traffic")
        .iter()
        .filter_map(|e| e["peak_in_flight"].as_u64())
        .max();
    assert!(peak.is_none_or(|p| p <= 1), "--max-parallel 1 held: {peak:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_out_of_bounds_are_refused_before_any_model_call() {
    let repo = TestRepo::new(&[]);
    let server = fake(three_candidates(&[])).await;
    let done = Run::task("Write a")
        .arg("--attempts")
        .arg("6")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(
        done.stderr.contains("--attempts is 6") && done.stderr.contains("between 1 and 5"),
        "{}",
        done.stderr
    );
    assert!(server.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_passing_is_reviewed_alone_and_none_passing_lets_the_first_go_on_with_its_findings() {
    // Only candidate 2 passes: no comparison, its own review, and it is merged.
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Write a",
            "CANDIDATE 1: FILE a.txt := broken\nCANDIDATE 2: FILE a.txt := two\nCANDIDATE 3: FILE a.txt := broken 3",
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Write a")
        .arg("--attempts")
        .arg("3")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("two"));
    let picked = &done.events_of("candidate_picked")[0];
    assert_eq!(picked["candidate"], 2);
    assert_eq!(picked["by_runtime"], true);
    assert!(requests_of(&server, "reviewer")
        .iter()
        .all(|r| !r.first_user_text().contains("# Candidates that passed")));
    assert_nothing_left(&repo);

    // None passes: candidate 1 hears its failure and fixes it in attempt 2; the others are gone.
    let config = CONFIG.replace("unit_attempts = 1", "unit_attempts = 2");
    let repo = TestRepo::new(&[("orchestrator.toml", &config)]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Write a",
            "FILE a.txt := broken\nCANDIDATE 1: FIX a.txt := fixed by one\nCANDIDATE 2: FIX a.txt := fixed by two",
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Write a")
        .arg("--attempts")
        .arg("2")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("fixed by one"));
    let picked = &done.events_of("candidate_picked")[0];
    assert_eq!(picked["candidate"], 1);
    assert_eq!(picked["passing"], serde_json::json!([]));
    let attempts: Vec<u64> = done
        .events_of("unit_state")
        .iter()
        .filter(|e| e["unit"] == "a" && e["state"] == "running")
        .filter_map(|e| e["attempt"].as_u64())
        .collect();
    assert_eq!(attempts, [1, 2], "the round is attempt 1; the fix attempt 2");
    assert_nothing_left(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_that_cannot_pay_for_every_candidate_runs_fewer_and_says_so() {
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let server = fake(three_candidates(&["3 the best"])).await;
    let done = Run::task("Write a")
        .arg("--attempts")
        .arg("3")
        .arg("--budget-tokens")
        .arg("50000")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    let notices = done.notices();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("a: 3 candidates would need about 90000 tokens")
                && n.contains("1 build it instead")),
        "{notices:?}"
    );
    assert!(done.events_of("candidate_finished").is_empty(), "built alone");
    // Built alone, the unit is candidate 1's directives' worker: its broken file fails, never merged.
    assert_ne!(repo.read("a.txt").as_deref(), Some("broken"));
}

/// A kill while the candidates' work waits for the comparing review leaves their worktrees and
/// branches; `resume` removes them and runs the round again from the start, then merges the pick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_killed_before_its_pick_runs_again_on_resume_and_leaves_nothing() {
    use orchestrator_fake_model::script::role_of;
    let config = format!("{CONFIG}candidates = 3\n");
    let repo = TestRepo::new(&[("orchestrator.toml", &config)]);
    let comparing = |r: &orchestrator_fake_model::SeenRequest| {
        role_of(r) == "reviewer"
            && r.first_user_text()
                .contains("# Candidates that passed verification")
    };
    let (server, _) =
        super::durability::crash_then_resume(Box::new(comparing), three_candidates(&["3 the best"]), &repo)
            .await;
    let left: Vec<String> = repo
        .branches()
        .into_iter()
        .filter(|b| b.contains("/u/a@c"))
        .collect();
    assert_eq!(left.len(), 3, "the kill left the candidates' branches: {left:?}");

    let done = Run::cmd(&["resume", "--json"]).openai(&server).run(&repo).await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("three"));
    assert_eq!(
        done.events_of("candidate_finished").len(),
        3,
        "the round ran again"
    );
    let picked = done.events_of("candidate_picked");
    let finished = done.events_of("candidate_finished");
    assert_eq!(
        picked[0]["candidate"],
        3,
        "{picked:?} {finished:?} {:?}",
        done.notices()
    );
    // New sessions for the new round: each candidate's first request came twice, once per run.
    let fresh = requests_of(&server, "worker")
        .iter()
        .filter(|r| r.assistant_turns() == 0 && r.first_user_text().contains("# Candidate 2 of 3"))
        .count();
    assert_eq!(fresh, 2);
    assert_nothing_left(&repo);
}

/// A passing pick of a candidate that lacks the function the unit names, over one that defines it,
/// is sent back once with both named (the field's comparing reviewer kept a `src/mul.py` without
/// `mul` for its "best summary"); the reviewer's second pick is taken. Each candidate's lack is said
/// in the comparison.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pick_lacking_the_named_function_over_one_with_it_is_asked_again() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[
        ("orchestrator.toml", config),
        ("calc.py", "def add(a, b):\n    return a + b\n"),
    ]);
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "Add mul(a, b) to calc.py",
            "CANDIDATE 1: FILE src/mul.py := product = 0\n\
             CANDIDATE 2: FILE calc.py := def add(a, b):\\n    return a + b\\n\\ndef mul(a, b):\\n    return a * b\\n\n\
             PICK 1 candidate 1 has the best summary\nPICK 2 candidate 2 defines mul",
            &[],
        )],
        ..Script::default()
    })
    .await;
    let done = Run::task("Add mul(a, b) to calc.py")
        .arg("--attempts")
        .arg("2")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert!(
        repo.read("calc.py").is_some_and(|c| c.contains("def mul(a, b)")),
        "candidate 2 is on main"
    );
    let results = tool_results(&server);
    let refusal = results
        .iter()
        .find(|(name, content, _)| name == "submit_review" && content.contains("Not recorded"))
        .unwrap_or_else(|| panic!("the first pick is sent back: {results:?}"));
    assert!(
        refusal
            .1
            .contains("candidate 1 defines no `mul`, which the unit asks for, and candidate(s) 2 do"),
        "{}",
        refusal.1
    );
    let picked = &done.events_of("candidate_picked")[0];
    assert_eq!(picked["candidate"], 2, "{picked}");
    assert!(picked.get("by_runtime").is_none(), "{picked}");
    let reviewer = requests_of(&server, "reviewer");
    let comparison = reviewer
        .iter()
        .find(|r| has_user_message(r, "### Checked by the runtime"))
        .unwrap_or_else(|| panic!("the comparison says which candidate lacks it"));
    assert!(
        has_user_message(comparison, "no file of candidate 1 defines it")
            && !has_user_message(comparison, "no file of candidate 2 defines it"),
        "only candidate 1 lacks it"
    );
}
