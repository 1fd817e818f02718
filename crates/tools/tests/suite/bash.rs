//! The `bash` tool: exit codes, timeouts and cancels that kill the whole process group, and output.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use super::common::Fixture;
use orchestrator_tools::ToolOptions;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn reports_exit_code_and_combined_output() {
    let fx = Fixture::writable();
    fx.file("a.txt", "");
    let out = fx
        .call("bash", json!({"command": "ls; echo oops >&2; exit 3"}))
        .await;
    assert!(!out.is_error, "a non-zero exit is a result, not a tool failure");
    assert_eq!(out.content, "exit code: 3\na.txt\noops\n");
    let out = fx.ok("bash", json!({"command": "true"})).await;
    assert_eq!(out, "exit code: 0\n(no output)");
}

#[tokio::test]
async fn runs_in_the_root_without_stdin() {
    let fx = Fixture::writable();
    let out = fx
        .ok(
            "bash",
            json!({"command": "pwd; cat; echo \"prompt=$GIT_TERMINAL_PROMPT\""}),
        )
        .await;
    let root = fx.root();
    assert_eq!(out, format!("exit code: 0\n{}\nprompt=0\n", root.display()));
}

/// Whether a process is gone or a zombie waiting to be reaped: either way it no longer runs.
fn is_dead(pid: &str) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"));
    stat.map_or(true, |s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
    })
}

async fn wait_until_dead(pid: &str) -> bool {
    for _ in 0..100 {
        if is_dead(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn read_pid(root: &Path) -> String {
    fs::read_to_string(root.join("pid"))
        .expect("pid file")
        .trim()
        .to_string()
}

#[tokio::test]
async fn timeout_kills_the_process_group_quickly() {
    let fx = Fixture::writable();
    let started = Instant::now();
    let out = fx
        .call(
            "bash",
            json!({"command": "echo started; sleep 30 & echo $! > pid; wait", "timeout": 0.5}),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.is_error);
    assert!(
        out.content.starts_with("timed out after 0.5 s"),
        "{}",
        out.content
    );
    assert!(
        out.content.contains("started"),
        "output so far is kept: {}",
        out.content
    );
    assert!(
        wait_until_dead(&read_pid(&fx.root())).await,
        "the background sleep must be killed"
    );
}

#[tokio::test]
async fn cancel_kills_the_process_group() {
    let fx = Fixture::writable();
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let args = json!({"command": "sleep 30 & echo $! > pid; wait"});
    let out = fx.tools.call("bash", &args, &cancel).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        out.is_error && out.content.starts_with("cancelled"),
        "{}",
        out.content
    );
    assert!(wait_until_dead(&read_pid(&fx.root())).await);
    let out = fx.tools.call("bash", &json!({"command": "true"}), &cancel).await;
    assert!(out.is_error && out.content.contains("cancelled before it started"));
}

#[tokio::test]
async fn background_processes_do_not_outlive_the_command() {
    let fx = Fixture::writable();
    let started = Instant::now();
    let out = fx
        .ok("bash", json!({"command": "sleep 30 & echo $! > pid; echo done"}))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out, "exit code: 0\ndone\n");
    assert!(wait_until_dead(&read_pid(&fx.root())).await);
}

#[tokio::test]
async fn long_output_keeps_head_and_tail() {
    let fx = Fixture::new(ToolOptions {
        max_output_chars: 2_000,
        ..ToolOptions::default()
    });
    let out = fx
        .ok("bash", json!({"command": "echo FIRST; seq 1 200000; echo LAST"}))
        .await;
    assert!(out.chars().count() <= 2_000, "{} chars", out.chars().count());
    assert!(out.starts_with("exit code: 0\nFIRST\n"), "{out}");
    assert!(out.ends_with("200000\nLAST\n"), "{out}");
    assert!(out.contains("cut from the middle of this output"), "{out}");
}

#[tokio::test]
async fn a_timeout_above_the_maximum_is_clamped() {
    let fx = Fixture::new(ToolOptions {
        max_bash_timeout: Duration::from_secs(1),
        ..ToolOptions::default()
    });
    let out = fx
        .ok("bash", json!({"command": "echo hi", "timeout": 1e300}))
        .await;
    assert!(out.starts_with("(requested timeout"), "{out}");
    assert!(out.contains("used 1 s"), "{out}");
}
