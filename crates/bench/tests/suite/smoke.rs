//! Smoke test of the benchmark program: one tiny mission end to end (1 unit, no latency) and a tiny
//! store micro-benchmark, then the report must be well-formed. No timing is asserted: how fast things
//! are is what the benchmark reports, not what a test may depend on.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use orchestrator_bench::{locate_orchestrator, report, run_suite, workspace_root, Options};

/// The orchestrator binary of this profile; built when the workspace's tests have not built it yet.
fn orchestrator() -> PathBuf {
    if let Ok(found) = locate_orchestrator(None) {
        return found;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "orchestrator-cli"])
        .current_dir(workspace_root())
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build -p orchestrator-cli failed");
    locate_orchestrator(None).expect("the orchestrator binary after building it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tiny_scenario_gives_a_well_formed_report() {
    let options = Options {
        orchestrator: orchestrator(),
        units: vec![1],
        latencies: vec![Duration::ZERO],
        repeat: 1,
        resume_tasks: None,
        store_events: 50,
        store_threads: 2,
        // CI's test server, when there is one: the PostgreSQL store's lines too.
        store_pg: std::env::var("ORCHESTRATOR_TEST_PG_URL").ok(),
        opencode: None,
        opencode_note: Some("not part of the smoke test".into()),
        opencode_sessions: 0,
        command: "smoke test".into(),
        keep_logs: None,
    };
    let results = run_suite(&options, &|line| eprintln!("{line}"))
        .await
        .expect("the suite runs");

    let run = &results.missions[0];
    assert!(run.sealed);
    assert_eq!(
        run.other_calls, 0,
        "every call is one the critical-path formula covers"
    );
    // 4 scouts + 1 planner + 1 worker + 1 reviewer + 1 master reviewer sessions.
    let sessions: usize = run.roles.values().map(|r| r.sessions).sum();
    assert_eq!(sessions, 8, "{:?}", run.roles);
    assert!(run.critical_turns > 0 && run.model_calls >= run.critical_turns);
    assert!(run.events > 0 && run.usage.peak_rss_kib > 0);
    let backends = if options.store_pg.is_some() { 2 } else { 1 };
    assert_eq!(results.store.len(), 2 * backends);

    let markdown = report::markdown(&results);
    let rows = report::check_tables(&markdown).unwrap_or_else(|e| panic!("{e}\n{markdown}"));
    assert!(rows >= 3, "{markdown}");
    assert!(markdown.contains("| 1 | 0 ms |"), "{markdown}");
    assert!(markdown.contains("Not measured here: not part of the smoke test."));
    let json = serde_json::to_value(&results).expect("the results serialise");
    assert_eq!(json["missions"][0]["scenario"]["units"], 1);
}
