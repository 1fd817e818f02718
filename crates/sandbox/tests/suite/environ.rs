//! The orchestrator's `/proc/<pid>/environ` — where `OPENAI_API_KEY` would be — is empty after
//! `scrub_environment_block`, while the process and the programs it starts still see every variable.
//! The scrub runs in a child process of the test binary that runs `scrub_helper` alone, on one thread:
//! no other test thread reads the environment then.

use std::process::Stdio;

use super::test_name;

const SECRET: &str = "sk-environ-test-7d1f0c2a9b";

/// Runs in a child of the test (started below with the secret in its initial environment).
#[test]
fn scrub_helper() {
    if std::env::var_os("SCRUB_ACT_AS_CHILD").is_none() {
        return;
    }
    // SAFETY: the helper runs alone (`--test-threads=1`), and nothing else in it reads the environment.
    unsafe { orchestrator_sandbox::scrub_environment_block() };
    let block = std::fs::read("/proc/self/environ").unwrap();
    assert!(
        !String::from_utf8_lossy(&block).contains(SECRET),
        "the key is still in /proc/self/environ"
    );
    assert_eq!(std::env::var("SCRUB_TEST_KEY").unwrap(), SECRET);
    let child = std::process::Command::new("sh")
        .args(["-c", "printf %s \"$SCRUB_TEST_KEY\""])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&child.stdout), SECRET);
    println!("scrubbed");
}

#[test]
fn the_environment_block_no_longer_shows_the_key() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", &test_name(module_path!(), "scrub_helper")])
        .args(["--nocapture", "--test-threads=1"])
        .env("SCRUB_ACT_AS_CHILD", "1")
        .env("SCRUB_TEST_KEY", SECRET)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && text.contains("scrubbed"),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
