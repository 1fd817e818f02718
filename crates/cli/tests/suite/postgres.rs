//! Missions on the PostgreSQL store (`--store postgres://…`): the real binary, the fake model and
//! the test server of scripts/pg-test-server (ORCHESTRATOR_TEST_PG_URL), each test in a schema of its
//! own. Without the variable at build time these tests are ignored, and CI fails on that.

use std::sync::atomic::{AtomicBool, Ordering};

use orchestrator_fake_model::script::{role_of, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeServer, Reply, SeenRequest};
use orchestrator_test_support::pg::{fresh_schema, TestSchema};

use super::durability::{crash_running, script};
use super::support::*;

const CONFIG: &str = "[verify]\ntest = \"true\"\n";

const FILES: [(&str, &str); 4] = [
    ("a.txt", "a\n"),
    ("b.txt", "b\n"),
    ("b2.txt", "b2\n"),
    ("c.txt", "c\n"),
];

fn on(run: Run, schema: &TestSchema) -> Run {
    run.arg("--store").arg(&schema.url)
}

fn assert_result_on_the_users_branch(repo: &TestRepo) {
    for (path, content) in FILES {
        assert_eq!(repo.read(path).as_deref(), Some(content), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_mission_on_postgres_seals_and_status_logs_and_report_read_it() {
    let schema = fresh_schema();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let server = fake(script()).await;
    let done = on(Run::task("Four files").arg("--json"), &schema)
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let finished = done.events_of("mission_finished");
    assert_eq!(finished.len(), 1, "{}", done.stdout);
    assert_result_on_the_users_branch(&repo);
    assert!(
        !repo.path().join(".orchestrator/state.db").exists(),
        "nothing went to the SQLite store"
    );

    // The variable serves as the flag does.
    let status = Run::cmd(&["status", "--json"])
        .env("ORCHESTRATOR_STORE_URL", &schema.url)
        .run(&repo)
        .await;
    status.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    assert_eq!(report["status"], "sealed", "{report}");
    let units = report["units"].as_array().expect("units");
    assert!(units.iter().all(|u| u["state"] == "passed"), "{report}");

    let logs = on(Run::cmd(&["logs", "--json"]), &schema).run(&repo).await;
    logs.assert_code(0);
    let kinds: Vec<String> = logs
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["type"].as_str().map(str::to_string))
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("mission_started"));
    assert!(kinds.iter().any(|k| k == "mission_finished"), "{kinds:?}");
    assert_eq!(
        kinds.len(),
        done.events().len(),
        "the log holds what the run printed"
    );

    // --follow on a finished mission prints its log and ends, as on SQLite.
    let followed = on(Run::cmd(&["logs", "--follow"]), &schema).run(&repo).await;
    followed.assert_code(0);
    assert!(
        followed.stdout.lines().count() >= kinds.len(),
        "{}",
        followed.stdout
    );

    let report = on(Run::cmd(&["report"]), &schema).run(&repo).await;
    report.assert_code(0);
    for unit in ["`a`", "`b`", "`c`"] {
        assert!(report.stdout.contains(unit), "{unit}:\n{}", report.stdout);
    }

    // Without --store the repository's own store is meant, and it has none.
    let sqlite = Run::cmd(&["status"]).run(&repo).await;
    sqlite.assert_code(2);
    assert!(sqlite.stderr.contains("no mission has run"), "{}", sqlite.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn repositories_sharing_a_database_see_their_own_missions() {
    let schema = fresh_schema();
    let server = fake(script()).await;
    let first = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let second = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    on(Run::task("First"), &schema)
        .openai(&server)
        .run(&first)
        .await
        .assert_code(0);
    let listed = on(Run::cmd(&["missions", "--json"]), &schema).run(&second).await;
    listed.assert_code(0);
    assert_eq!(
        listed.stdout.trim(),
        "[]",
        "the other repository's mission is not ours"
    );
    let listed = on(Run::cmd(&["missions", "--json"]), &schema).run(&first).await;
    let missions: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON");
    assert_eq!(missions.as_array().map(Vec::len), Some(1), "{missions}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_mission_killed_mid_unit_resumes_from_postgres() {
    let schema = fresh_schema();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let when = Box::new(|r: &SeenRequest| role_of(r) == "worker" && r.first_user_text().contains("b2"));
    let (server, fired_at) = crash_running(
        when,
        ScriptedMission::new(script()),
        &repo,
        on(Run::task("Crash and resume"), &schema),
    )
    .await;
    assert_ne!(fired_at, u64::MAX, "the kill fired");
    let done = on(Run::cmd(&["resume", "--json"]), &schema)
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(done.events_of("mission_resumed").len(), 1, "{}", done.stdout);
    assert_result_on_the_users_branch(&repo);
}

/// Plays the script, but first ends the store's connections when a worker first asks: the server
/// restarted, or the network cut, in the middle of a mission.
struct CutStore {
    inner: ScriptedMission,
    schema: String,
    cut: AtomicBool,
}

impl Brain for CutStore {
    fn respond(&self, request: &SeenRequest) -> Reply {
        if role_of(request) == "worker" && !self.cut.swap(true, Ordering::SeqCst) {
            let name = self.schema.clone();
            let ended = orchestrator_test_support::pg::terminate_connections(&name);
            assert!(ended >= 1, "the mission's connection was open");
        }
        self.inner.respond(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_lost_store_stops_the_mission_which_then_resumes() {
    let schema = fresh_schema();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let brain = CutStore {
        inner: ScriptedMission::new(script()),
        schema: schema.name.clone(),
        cut: AtomicBool::new(false),
    };
    let server = FakeServer::start(brain, Default::default())
        .await
        .expect("fake server");
    let stopped = on(Run::task("Cut the store"), &schema)
        .openai(&server)
        .run(&repo)
        .await;
    // Stopped as an interruption is: resumable, nothing applied to the user's branch.
    stopped.assert_code(3);
    let said = format!("{}{}", stopped.stdout, stopped.stderr);
    assert!(said.contains("its store could not be written"), "{said}");
    assert!(repo.read("a.txt").is_none(), "nothing applied: {said}");
    let done = on(Run::cmd(&["resume", "--json"]), &schema)
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_result_on_the_users_branch(&repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_named_and_nothing_starts() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let url = format!("postgres://alice:s3cret-pw@127.0.0.1:{port}/missions");
    let server = fake(script()).await;
    for args in [
        &["task", "Anything"][..],
        &["status"],
        &["logs"],
        &["report"],
        &["resume"],
    ] {
        let done = Run::cmd(args)
            .arg("--store")
            .arg(&url)
            .openai(&server)
            .run(&repo)
            .await;
        done.assert_code(2);
        assert!(
            done.stderr.contains(&format!("127.0.0.1:{port}")) && done.stderr.contains("alice:***@"),
            "{args:?}: {}",
            done.stderr
        );
        assert!(!done.stderr.contains("s3cret"), "{args:?}: {}", done.stderr);
    }
    assert!(repo.worktrees().len() <= 1, "no worktree was made");
    assert!(server.requests().is_empty(), "no model was called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_may_not_name_the_store() {
    let config = format!("store = \"postgres://evil.example/steal\"\n{CONFIG}");
    let repo = TestRepo::new(&[("orchestrator.toml", &config)]);
    let done = Run::cmd(&["status"]).run(&repo).await;
    done.assert_code(2);
    assert!(done.stderr.contains("may not say where"), "{}", done.stderr);
    let done = Run::cmd(&["status"])
        .arg("--store")
        .arg("mysql://x/y")
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(done.stderr.contains("PostgreSQL URL"), "{}", done.stderr);
}

/// What `status --json` says of a mission, without what differs between any two runs (ids, commits,
/// times, paths, token counts).
fn stable_status(status: &Finished) -> serde_json::Value {
    status.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let units: Vec<serde_json::Value> = report["units"]
        .as_array()
        .expect("units")
        .iter()
        .map(|u| {
            serde_json::json!({
                "id": u["id"], "title": u["title"], "state": u["state"], "attempts": u["attempts"],
                "depends_on": u["depends_on"], "detail": u["detail"],
                "evidence": u["evidence"].as_array().map(|e| e.iter().map(|e| (e["kind"].clone(), e["exit_code"].clone())).collect::<Vec<_>>()),
            })
        })
        .collect();
    let mut roles: Vec<String> = report["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| format!("{}:{}", s["role"], s["unit"]))
        .collect();
    roles.sort();
    serde_json::json!({
        "objective": report["objective"], "status": report["status"], "outcome": report["outcome"],
        "phase": report["phase"], "round": report["round"], "units": units, "sessions": roles,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn status_says_the_same_on_both_stores() {
    let schema = fresh_schema();
    let mut said = Vec::new();
    for postgres in [false, true] {
        let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
        let server = fake(script()).await;
        let with_store = |run: Run| if postgres { on(run, &schema) } else { run };
        with_store(Run::task("Four files"))
            .openai(&server)
            .run(&repo)
            .await
            .assert_code(0);
        let status = with_store(Run::cmd(&["status", "--json"])).run(&repo).await;
        said.push(stable_status(&status));
    }
    assert_eq!(said[0]["units"].as_array().map(Vec::len), Some(3), "{}", said[0]);
    assert_eq!(said[0]["status"], "sealed");
    assert_eq!(said[0], said[1], "SQLite, then PostgreSQL");
}
