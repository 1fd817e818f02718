//! A closed stdout (`orchestrator logs | head`, `orchestrator serve | head -1`): the real binary with
//! its stdout a pipe nobody reads, closed before it writes a byte, so every write to it fails.

use std::time::Duration;

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script};

/// A pipe whose reading end is already closed, for a child's stdout.
fn closed_pipe() -> std::process::Stdio {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    writer.into()
}

async fn run_with_closed_stdout(repo: &TestRepo, run: Run) -> Finished {
    let mut command = run.command(repo);
    command.stdout(closed_pipe());
    let out = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("the command ended within 60 s")
        .expect("the binary runs");
    Finished::from(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_commands_end_quietly_when_nobody_reads_their_output() {
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![PlanUnit::file("a", "src/a.txt", "alpha")],
        ..Script::default()
    };
    let model = fake(script).await;
    Run::task("Add a file")
        .openai(&model)
        .run(&repo)
        .await
        .assert_code(0);
    for args in [
        &["logs"][..],
        &["logs", "--json"],
        &["logs", "--follow"],
        &["status"],
        &["status", "--json"],
        &["report"],
    ] {
        let done = run_with_closed_stdout(&repo, Run::cmd(args)).await;
        assert!(
            !done.stderr.contains("panicked"),
            "{args:?} panicked:\n{}",
            done.stderr
        );
        assert_eq!(done.code, Some(0), "{args:?}: {}", done.stderr);
        assert!(done.stderr.is_empty(), "{args:?} said:\n{}", done.stderr);
    }
}

#[tokio::test]
async fn serve_stops_on_sigterm_after_its_stdout_closed() {
    let repo = TestRepo::new(&[]);
    // The address must be known without reading stdout: a port that was free a moment ago.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut command = Run::cmd(&["serve", "--bind", &format!("127.0.0.1:{port}")]).command(&repo);
    command.stdout(closed_pipe());
    let child = command.spawn().expect("orchestrator serve starts");

    // Serving, although every line it printed went nowhere: the page answers.
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..300 {
        let answer = http.get(format!("http://127.0.0.1:{port}/")).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "serve answers on port {port} with its stdout closed");

    let pid = child.id().expect("the server runs") as i32;
    // SAFETY: signals the server process this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("serve stops within 30 s of SIGTERM with its stdout closed")
        .expect("serve is waited for");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("stopping"), "{stderr}");
}
