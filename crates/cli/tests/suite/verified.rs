//! Seal only what was verified: a commit that lands on a unit's branch while it is being reviewed (as a
//! reviewer committing in the worktree it judges did on an unconfined run) is not merged; the reviewed
//! commit is, and the event log says what was left out.

use std::time::Duration;

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script};
use orchestrator_fake_model::FakeOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_made_during_review_is_not_merged() {
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a")],
        ..Script::default()
    };
    let options = FakeOptions {
        latency: Duration::from_millis(400),
        ..FakeOptions::default()
    };
    let server = fake_with(script, options).await;
    let mission = Run::task("Write a").arg("--json").openai(&server).run(&repo);
    let sneak = async {
        // Polls every 5 ms for at most 60 s (bounded, however slow the machine).
        let mut waited = 0;
        while requests_of(&server, "reviewer").is_empty() {
            assert!(waited < 12_000, "the reviewer never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
            waited += 1;
        }
        // The reviewer's model call is in flight: commit on top of the unit's branch, unverified.
        let branch = repo
            .branches()
            .into_iter()
            .find(|b| b.ends_with("/u/a"))
            .expect("the unit's branch");
        let tree = repo.git(&["rev-parse", &format!("{branch}^{{tree}}")]);
        let commit = repo.git(&["commit-tree", &tree, "-p", &branch, "-m", "unverified"]);
        repo.git(&["update-ref", &format!("refs/heads/{branch}"), &commit]);
        commit
    };
    let (done, sneaked) = tokio::join!(mission, sneak);
    done.assert_code(0);
    let history = repo.git(&["log", "--format=%H %s", "main"]);
    assert!(
        !history.contains(&sneaked),
        "the unverified commit is not on main: {history}"
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"), "the reviewed work is");
    let notices = done.notices();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("a: its branch moved after review") && n.contains("only the reviewed")),
        "{notices:?}"
    );
}
