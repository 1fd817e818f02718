//! The API key stays secret whatever echoes it: a plan whose title carries it and a worker whose
//! command prints it reach the model, the `--json` and progress streams, the log and the commits with
//! the key masked. A short placeholder key (`local`) is no secret and rewrites nothing.

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script};

const KEY: &str = "sk-test-0123456789abcdef";

fn echoing_script() -> Script {
    Script {
        plan: vec![PlanUnit::new(
            "a",
            &format!("Write a for {KEY}"),
            &format!("BASH echo the key is {KEY}\nFILE a.txt := a"),
            &[],
        )],
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_echoed_key_is_masked_in_every_stream() {
    let repo = TestRepo::new(&[]);
    let server = fake(echoing_script()).await;
    let json = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .env("OPENAI_API_KEY", KEY)
        .run(&repo)
        .await;
    json.assert_code(0);
    assert!(
        !json.stdout.contains(KEY) && !json.stderr.contains(KEY),
        "{}",
        json.stdout
    );
    assert!(json.stdout.contains("[redacted]"), "the echo is there, masked");

    // What went back to the model: the bash output, masked.
    let results = tool_results(&server);
    let bash = results
        .iter()
        .find(|(name, _, _)| name == "bash")
        .expect("a bash result");
    assert!(bash.1.contains("the key is [redacted]"), "{}", bash.1);

    let commits = repo.git(&["log", "--format=%B", "main"]);
    assert!(!commits.contains(KEY), "{commits}");
    let logs = Run::cmd(&["logs"]).run(&repo).await;
    assert!(!logs.stdout.contains(KEY), "{}", logs.stdout);

    // The progress lines too.
    let repo = TestRepo::new(&[]);
    let server = fake(echoing_script()).await;
    let plain = Run::task("Write a")
        .arg("--plain")
        .openai(&server)
        .env("OPENAI_API_KEY", KEY)
        .run(&repo)
        .await;
    plain.assert_code(0);
    assert!(
        !plain.stderr.contains(KEY) && !plain.stdout.contains(KEY),
        "{}",
        plain.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placeholder_key_rewrites_nothing() {
    let repo = TestRepo::new(&[]);
    let server = fake(Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a")],
        ..Script::default()
    })
    .await;
    let done = Run::task("Serve it on localhost with a local cache")
        .arg("--json")
        .openai(&server)
        .env("OPENAI_API_KEY", "local")
        .run(&repo)
        .await;
    done.assert_code(0);
    let started = done.events_of("mission_started");
    assert_eq!(
        started[0]["objective"],
        "Serve it on localhost with a local cache"
    );
    assert!(!done.stdout.contains("[redacted]"), "{}", done.stdout);
    let resumed_view = Run::cmd(&["status", "--json"]).run(&repo).await;
    assert!(
        resumed_view
            .stdout
            .contains("Serve it on localhost with a local cache"),
        "{}",
        resumed_view.stdout
    );
}

/// A hostile worker reads the environment of its parent (the command's supervisor) and of the
/// orchestrator above it through /proc: both blocks are empty, so the key is in neither.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_environ_of_the_orchestrator_holds_no_key() {
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Write a",
            "BASH o=$(awk '{print $4}' /proc/$PPID/stat); for p in $PPID $o; do echo \"pid $p\"; tr '\\0' '\\n' < /proc/$p/environ; done > leak.txt; echo read\nFILE a.txt := a",
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let run = Run::task("Write a")
        .openai(&server)
        .env("OPENAI_API_KEY", KEY)
        .run(&repo)
        .await;
    run.assert_code(0);
    let results = tool_results(&server);
    let bash = results
        .iter()
        .find(|(name, _, _)| name == "bash")
        .expect("a bash result");
    assert!(bash.1.contains("read"), "{}", bash.1);
    let leak = repo.git(&["show", "main:leak.txt"]);
    assert!(
        leak.matches("pid ").count() == 2,
        "both processes were read: {leak}"
    );
    assert!(!leak.contains(KEY) && !leak.contains("OPENAI_API_KEY"), "{leak}");
}
