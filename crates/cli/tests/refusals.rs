//! Bad input stops a mission before it starts: exit 2, a message that says what to do, and the
//! user's repository exactly as it was.

mod support;

use orchestrator_fake_model::script::{PlanUnit, Script};
use support::*;

fn one_unit() -> Script {
    Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a")],
        ..Script::default()
    }
}

/// Nothing of the mission may be left in the repository.
fn assert_untouched(repo: &TestRepo) {
    assert!(
        repo.branches().iter().all(|b| !b.starts_with("orchestrator/")),
        "{:?}",
        repo.branches()
    );
    assert_eq!(repo.worktrees().len(), 1);
    assert_eq!(repo.read("a.txt"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dirty_tree_is_refused_and_left_alone() {
    let repo = TestRepo::new(&[]);
    repo.write("README.md", "my uncommitted edit\n");
    repo.write("notes.txt", "untracked\n");
    let server = fake(one_unit()).await;
    let done = Run::task("Anything").openai(&server).run(&repo).await;
    done.assert_code(2);
    assert!(
        done.stderr.contains("uncommitted changes") && done.stderr.contains("--allow-dirty"),
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("README.md"), "{}", done.stderr);
    assert_eq!(repo.read("README.md").as_deref(), Some("my uncommitted edit\n"));
    assert_eq!(repo.read("notes.txt").as_deref(), Some("untracked\n"));
    assert_eq!(server.request_count(), 0, "no model call before the checks pass");
    assert_untouched(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_dirty_runs_from_the_last_commit_and_keeps_the_edits() {
    let repo = TestRepo::new(&[]);
    repo.write("notes.txt", "untracked\n");
    let server = fake(one_unit()).await;
    let done = Run::task("Anything")
        .arg("--allow-dirty")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("notes.txt").as_deref(), Some("untracked\n"));
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_api_key_is_explained() {
    let repo = TestRepo::new(&[]);
    let server = fake(one_unit()).await;
    let done = Run::task("Anything")
        .env("OPENAI_BASE_URL", &server.openai_base_url())
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(
        done.stderr.contains("OPENAI_API_KEY is not set"),
        "{}",
        done.stderr
    );
    assert_untouched(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_explained() {
    let repo = TestRepo::new(&[]);
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let done = Run::task("Anything")
        .env("OPENAI_BASE_URL", &format!("http://127.0.0.1:{port}/v1"))
        .env("OPENAI_API_KEY", "k")
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(
        done.stderr.contains(&format!("127.0.0.1:{port}")) && done.stderr.contains("OPENAI_BASE_URL"),
        "{}",
        done.stderr
    );
    assert_untouched(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_is_explained() {
    let repo = TestRepo::new(&[]);
    let options = orchestrator_fake_model::FakeOptions {
        api_key: Some("right".into()),
        ..Default::default()
    };
    let server = fake_with(one_unit(), options).await;
    let done = Run::task("Anything")
        .env("OPENAI_BASE_URL", &server.openai_base_url())
        .env("OPENAI_API_KEY", "wrong")
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(done.stderr.contains("rejected the API key"), "{}", done.stderr);
    assert!(
        !done.stderr.contains("wrong"),
        "the key never appears in messages: {}",
        done.stderr
    );
    assert_untouched(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_config_is_explained() {
    let repo = TestRepo::new(&[("orchestrator.toml", "max_parallel = \"lots\"\n")]);
    let server = fake(one_unit()).await;
    let done = Run::task("Anything").openai(&server).run(&repo).await;
    done.assert_code(2);
    assert!(
        done.stderr.contains("orchestrator.toml") && done.stderr.contains("max_parallel"),
        "{}",
        done.stderr
    );
    assert_eq!(server.request_count(), 0);
    assert_untouched(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_model_and_bad_flags_are_usage_errors() {
    let repo = TestRepo::new(&[]);
    let server = fake(one_unit()).await;
    let done = Run::task("Anything")
        .openai(&server)
        .without_env("ORCHESTRATOR_MODEL")
        .env("ORCHESTRATOR_MODEL", "")
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(done.stderr.contains("ORCHESTRATOR_MODEL"), "{}", done.stderr);
    let done = Run::task("Anything")
        .arg("--max-parallel")
        .arg("none")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(2);
    let outside = tempfile::tempdir().unwrap();
    let done = Run::task("Anything")
        .arg("--repo")
        .arg(outside.path().to_str().unwrap())
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(
        done.stderr.contains("not inside a git repository"),
        "{}",
        done.stderr
    );
    assert_untouched(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_mission_in_the_same_repo_exits_4() {
    let repo = TestRepo::new(&[]);
    let options = orchestrator_fake_model::FakeOptions {
        latency: std::time::Duration::from_secs(2),
        ..Default::default()
    };
    let server = fake_with(one_unit(), options).await;
    let first_done = Run::task("First").openai(&server).run(&repo);
    let second = async {
        // Wait until the first mission holds the lock.
        for _ in 0..100 {
            if repo
                .read(".orchestrator/lock")
                .is_some_and(|l| l.contains("mission"))
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Run::task("Second").openai(&server).run(&repo).await
    };
    let (first_done, second_done) = tokio::join!(first_done, second);
    second_done.assert_code(4);
    assert!(
        second_done
            .stderr
            .contains("another orchestrator mission is running"),
        "{}",
        second_done.stderr
    );
    first_done.assert_code(0);
}
