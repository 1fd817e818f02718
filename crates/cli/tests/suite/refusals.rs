//! Bad input stops a mission before it starts: exit 2, a message that says what to do, and the
//! user's repository exactly as it was.

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script};

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

/// Rust's debug text and terminal colours have no place in what a user or a log file reads (the
/// debug log lines that ORCHESTRATOR_LOG=debug asks for aside).
fn assert_plain_words(text: &str) {
    assert!(
        !text.contains('\u{1b}'),
        "no escape codes when stderr is not a terminal: {text:?}"
    );
    let said: Vec<&str> = text.lines().filter(|l| !l.contains(" DEBUG ")).collect();
    for debug in [
        "ModelFailed(",
        "Some(",
        "(Sealed)",
        "(Unsealed)",
        "BadRequest {",
        "Usage(",
    ] {
        assert!(
            !said.iter().any(|l| l.contains(debug)),
            "debug text `{debug}` reached the user: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_endpoint_does_not_serve_is_refused_before_anything_starts() {
    let repo = TestRepo::new(&[]);
    let options = orchestrator_fake_model::FakeOptions {
        models: Some(vec!["qwen2.5-coder:7b".into()]),
        ..Default::default()
    };
    let server = fake_with(one_unit(), options).await;
    let done = Run::task("Anything")
        .openai(&server)
        .env("ORCHESTRATOR_LOG", "debug")
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(
        done.stderr
            .contains(&format!("does not serve the model `{MODEL}`"))
            && done.stderr.contains("it serves: qwen2.5-coder:7b")
            && done.stderr.contains("--model"),
        "{}",
        done.stderr
    );
    assert_eq!(server.request_count(), 1, "one tiny probe, no scout");
    assert_plain_words(&done.stderr);
    assert_untouched(&repo);
    assert!(!repo.path().join(".orchestrator").exists(), "nothing was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_url_without_v1_is_refused_with_the_hint() {
    let repo = TestRepo::new(&[]);
    let server = fake(one_unit()).await;
    // Ollama's usual slip: http://localhost:11434 instead of http://localhost:11434/v1.
    let done = Run::task("Anything")
        .env("OPENAI_BASE_URL", &format!("http://{}", server.addr()))
        .env("OPENAI_API_KEY", "local")
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(
        done.stderr.contains("does not answer as a model API") && done.stderr.contains("/v1"),
        "{}",
        done.stderr
    );
    assert_eq!(server.request_count(), 0);
    assert_plain_words(&done.stderr);
    assert_untouched(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_numbers_are_refused_naming_where_they_came_from() {
    let repo = TestRepo::new(&[]);
    let server = fake(one_unit()).await;
    let cases: &[(&[&str], &str)] = &[
        (
            &["--max-parallel", "18446744073709551615"],
            "--max-parallel is 18446744073709551615",
        ),
        (&["--max-parallel", "100000"], "between 1 and 256"),
        (&["--budget-tokens", "0"], "--budget-tokens is 0"),
        (&["--rounds", "-1"], "not negative"),
        (&["--rounds", "0"], "--rounds is 0"),
    ];
    for (args, expected) in cases {
        let mut run = Run::task("Anything").openai(&server);
        for arg in *args {
            run = run.arg(arg);
        }
        let done = run.run(&repo).await;
        done.assert_code(2);
        assert!(done.stderr.contains(expected), "{args:?}: {}", done.stderr);
        assert!(
            !done.stderr.contains("-- -1"),
            "no misleading clap tip: {}",
            done.stderr
        );
        assert!(!done.stderr.contains("panicked"), "{}", done.stderr);
    }
    // A value from a file names the file and its key, not a flag.
    let user_config = repo.home().join(".config/orchestrator/config.toml");
    std::fs::create_dir_all(user_config.parent().unwrap()).unwrap();
    std::fs::write(&user_config, "max_parallel = 0\n").unwrap();
    let done = Run::task("Anything").openai(&server).run(&repo).await;
    done.assert_code(2);
    assert!(
        done.stderr.contains("`max_parallel` in")
            && done.stderr.contains("config.toml")
            && !done.stderr.contains("--max-parallel"),
        "{}",
        done.stderr
    );
    assert_eq!(server.request_count(), 0);
    assert_untouched(&repo);
    assert!(!repo.path().join(".orchestrator").exists(), "nothing was started");
}
