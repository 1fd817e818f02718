//! No orphans: whatever a command starts — in the background, with `setsid`, through a double fork —
//! dies when the command ends, when its lifeline is cut (timeout, cancel), and when the orchestrator
//! itself dies by `kill -9`. Beside each attack, the legitimate case: the command's own output and
//! exit status come back unchanged.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use orchestrator_sandbox::{Policy, Sandbox};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::test_name;

/// Whether `pid` is still a live process (a zombie counts as gone: it runs nothing).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits up to 10 s for every pid to be gone.
async fn all_gone(pids: &[i32]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if pids.iter().all(|&p| !alive(p)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn bash(dir: &Path, script: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("bash");
    command
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    command
}

fn sandboxes(dir: &Path) -> Vec<Sandbox> {
    vec![
        Sandbox::confined(&Policy {
            writable: vec![dir.to_path_buf()],
            ..Policy::default()
        })
        .expect("Landlock is available on these machines"),
        Sandbox::unconfined(&[]).unwrap(),
    ]
}

/// Starts a `setsid` daemon and a double-forked one (both holding stdout open), prints their pids.
const ESCAPES: &str = "setsid sleep 300 & echo $!; ( sleep 301 & echo $! ) ; nohup setsid bash -c 'sleep 302' >/dev/null 2>&1 & echo $!";

#[tokio::test]
async fn what_a_command_leaves_running_dies_when_it_ends() {
    let work = tempfile::tempdir().unwrap();
    for sandbox in sandboxes(work.path()) {
        let mut command = bash(work.path(), &format!("{ESCAPES}; echo finished; exit 3"));
        let _lifeline = sandbox.apply(&mut command).unwrap();
        // Without the supervisor the daemons would hold stdout open and this would never return.
        let output = tokio::time::timeout(Duration::from_secs(20), command.output())
            .await
            .expect("the call returns although daemons held its output")
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(3),
            "the command's own exit code: {text}"
        );
        assert!(text.contains("finished"), "{text}");
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        assert_eq!(pids.len(), 3, "{text}");
        assert!(
            all_gone(&pids).await,
            "{} left {pids:?} running",
            sandbox.describe()
        );
    }
}

#[tokio::test]
async fn cutting_the_lifeline_kills_the_whole_tree() {
    let work = tempfile::tempdir().unwrap();
    for sandbox in sandboxes(work.path()) {
        let mut command = bash(work.path(), "setsid sleep 300 & echo $!; sleep 300");
        let lifeline = sandbox.apply(&mut command).unwrap();
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let daemon: i32 = lines.next_line().await.unwrap().unwrap().trim().parse().unwrap();
        assert!(alive(daemon));
        lifeline.cut();
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the supervisor ends once its lifeline is cut")
            .unwrap();
        assert!(!status.success());
        assert!(all_gone(&[daemon]).await, "{}", sandbox.describe());
    }
}

#[tokio::test]
async fn a_confined_command_cannot_kill_its_supervisor_to_escape() {
    let work = tempfile::tempdir().unwrap();
    let sandbox = &sandboxes(work.path())[0];
    let mut command = bash(
        work.path(),
        "setsid sleep 300 & echo $!; kill -9 $PPID && echo KILLED || echo refused",
    );
    let _lifeline = sandbox.apply(&mut command).unwrap();
    let output = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("the call returns")
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("refused"), "{text}");
    let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(all_gone(&pids).await, "{pids:?}");
}

/// Stands in for the orchestrator in `a_killed_orchestrator_leaves_nothing_behind`: runs a supervised
/// command that starts a daemon, prints the daemon's pid and waits to be killed.
#[tokio::test]
async fn orphan_parent_helper() {
    if std::env::var_os("ORPHANS_ACT_AS_PARENT").is_none() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mut command = bash(work.path(), "setsid sleep 300 & echo daemon $!; sleep 300");
    command.stdout(Stdio::inherit());
    let _lifeline = Sandbox::unconfined(&[]).unwrap().apply(&mut command).unwrap();
    let _child = command.spawn().unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
}

#[tokio::test]
async fn a_killed_orchestrator_leaves_nothing_behind() {
    let mut parent = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &test_name(module_path!(), "orphan_parent_helper")])
        .args(["--nocapture", "--test-threads=1"])
        .env("ORPHANS_ACT_AS_PARENT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(parent.stdout.take().unwrap()).lines();
    let daemon: i32 = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the helper reports its daemon")
            .unwrap()
            .expect("the helper prints a line before it ends");
        // libtest prints "test orphan_parent_helper ... " before the helper's own output.
        if let Some((_, pid)) = line.split_once("daemon ") {
            break pid.trim().parse().unwrap();
        }
    };
    assert!(alive(daemon));
    // kill -9: no destructor, no signal handler runs in the orchestrator.
    parent.start_kill().unwrap();
    parent.wait().await.unwrap();
    assert!(
        all_gone(&[daemon]).await,
        "the daemon {daemon} outlived the orchestrator"
    );
}
