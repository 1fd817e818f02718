//! What a mission leaves behind: nothing once its work is on the user's branch, the result branch when
//! it is not, everything with `--keep-branches`; `orchestrator clean` removes the rest and says what.
//! Also what `status` and `logs` say about a finished mission, in words.

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script};

fn two_units() -> Script {
    Script {
        plan: vec![
            PlanUnit::file("a", "a.txt", "a"),
            PlanUnit::file("b", "b.txt", "b"),
        ],
        ..Script::default()
    }
}

fn mission_branches(repo: &TestRepo) -> Vec<String> {
    repo.branches()
        .into_iter()
        .filter(|b| b.starts_with("orchestrator/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_mission_leaves_no_branch_and_reads_as_words() {
    let repo = TestRepo::new(&[]);
    let server = fake(two_units()).await;
    let done = Run::task("Write a and b").openai(&server).run(&repo).await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    assert_eq!(mission_branches(&repo), Vec::<String>::new(), "{}", done.stdout);
    assert_eq!(repo.worktrees().len(), 1);
    assert!(done.stdout.contains("main fast-forwarded to"), "{}", done.stdout);
    assert!(
        !done.stdout.contains("result branch:"),
        "the branch is gone: {}",
        done.stdout
    );

    let status = Run::cmd(&["status"]).run(&repo).await;
    status.assert_code(0);
    let header = status.stdout.lines().next().unwrap_or_default();
    assert!(header.contains("— sealed (phase finished"), "{header}");
    assert!(
        !status.stdout.contains("not running") && !status.stdout.contains("Sealed"),
        "{}",
        status.stdout
    );

    let logs = Run::cmd(&["logs"]).run(&repo).await;
    logs.assert_code(0);
    assert!(
        !logs.stdout.contains("{\""),
        "logs are words, not JSON: {}",
        logs.stdout
    );
    assert!(
        logs.stdout
            .lines()
            .any(|l| l.contains(" a ") && l.contains("merged into")),
        "{}",
        logs.stdout
    );
    assert!(
        logs.stdout.lines().any(|l| l.contains("mission sealed:")),
        "{}",
        logs.stdout
    );
    assert!(
        !logs.stdout.contains("\\n"),
        "no escaped newlines: {}",
        logs.stdout
    );
    let json = Run::cmd(&["logs", "--json"]).run(&repo).await;
    assert!(json.stdout.lines().all(|l| l.starts_with('{')), "{}", json.stdout);

    let clean = Run::cmd(&["clean"]).run(&repo).await;
    clean.assert_code(0);
    assert!(clean.stdout.contains("nothing to clean"), "{}", clean.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unapplied_result_stays_until_clean_removes_it() {
    let repo = TestRepo::new(&[]);
    let server = fake(two_units()).await;
    let done = Run::task("Write a and b")
        .arg("--no-apply")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt"), None, "main is left alone");
    let kept = mission_branches(&repo);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].ends_with("/integration"), "{kept:?}");
    assert!(
        done.stdout.contains("orchestrator clean"),
        "the summary says how to remove it: {}",
        done.stdout
    );
    assert!(
        done.stdout.contains(&format!("result branch: {}", kept[0])),
        "{}",
        done.stdout
    );

    let dry = Run::cmd(&["clean", "--dry-run"]).run(&repo).await;
    dry.assert_code(0);
    assert!(
        dry.stdout.contains(&format!("would remove branch {}", kept[0])),
        "{}",
        dry.stdout
    );
    assert_eq!(mission_branches(&repo), kept, "a dry run removes nothing");

    let clean = Run::cmd(&["clean"]).run(&repo).await;
    clean.assert_code(0);
    assert!(
        clean.stdout.contains(&format!("removed branch {}", kept[0])),
        "{}",
        clean.stdout
    );
    assert_eq!(mission_branches(&repo), Vec::<String>::new());
    let status = Run::cmd(&["status"]).run(&repo).await;
    status.assert_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_branches_keeps_the_result_branch() {
    let repo = TestRepo::new(&[]);
    let server = fake(two_units()).await;
    let done = Run::task("Write a and b")
        .arg("--keep-branches")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("b.txt").as_deref(), Some("b"));
    let kept = mission_branches(&repo);
    assert!(kept.iter().any(|b| b.ends_with("/integration")), "{kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_removes_stray_orchestrator_branches_and_nothing_else() {
    let repo = TestRepo::new(&[]);
    repo.git(&["branch", "orchestrator/m-old/integration"]);
    repo.git(&["branch", "orchestrator/m-old/u/a"]);
    repo.git(&["branch", "orchestratorx"]);
    repo.git(&["branch", "feature"]);
    let clean = Run::cmd(&["clean"]).run(&repo).await;
    clean.assert_code(0);
    assert!(
        clean
            .stdout
            .contains("removed branch orchestrator/m-old/integration"),
        "{}",
        clean.stdout
    );
    assert!(
        clean.stdout.contains("removed branch orchestrator/m-old/u/a"),
        "{}",
        clean.stdout
    );
    let left = repo.branches();
    assert!(
        left.contains(&"orchestratorx".to_string()) && left.contains(&"feature".to_string()),
        "{left:?}"
    );
    assert_eq!(mission_branches(&repo), Vec::<String>::new());
    assert!(
        !repo.path().join(".orchestrator").exists(),
        "clean creates no state of its own"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_mission_that_merged_nothing_leaves_no_branch() {
    let repo = TestRepo::new(&[(
        "orchestrator.toml",
        "rounds = 1\n[verify]\ntest = \"false\"\n[limits]\nunit_attempts = 1\n",
    )]);
    let server = fake(two_units()).await;
    let done = Run::task("Write a and b").openai(&server).run(&repo).await;
    done.assert_code(1);
    assert_eq!(mission_branches(&repo), Vec::<String>::new(), "{}", done.stdout);
    assert_eq!(repo.worktrees().len(), 1);
    assert!(!done.stdout.contains("result branch:"), "{}", done.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_work_of_an_unsealed_mission_is_kept_and_said() {
    // The units merge, then the master review fails the only round: the merged work exists nowhere
    // but on the integration branch, so it stays.
    let repo = TestRepo::new(&[("orchestrator.toml", "rounds = 1\n")]);
    let server = fake(Script {
        master_failures: 1,
        ..two_units()
    })
    .await;
    let done = Run::task("Write a and b").openai(&server).run(&repo).await;
    done.assert_code(1);
    assert_eq!(repo.read("a.txt"), None, "main is left alone");
    let kept = mission_branches(&repo);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].ends_with("/integration"), "{kept:?}");
    assert_eq!(repo.show(&format!("{}:a.txt", kept[0])), "a");
    assert!(
        done.stdout
            .contains(&format!("the mission's work is kept on {}", kept[0])),
        "{}",
        done.stdout
    );
}
