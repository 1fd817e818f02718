//! The mission's leader lease (docs/scale-out.md): a commander holds it while it runs, a second one
//! is refused naming the holder, a killed one is taken over once its lease expired, and one whose
//! lead was taken stops without writing or merging more. On SQLite and on PostgreSQL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use orchestrator_fake_model::script::{role_of, worker_unit, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeServer, Reply, SeenRequest};
use orchestrator_store::{Holder, Store};
use orchestrator_test_support::pg::{fresh_schema, TestSchema};

use super::durability::{crash_running, script};
use super::support::*;

const CONFIG: &str = "[verify]\ntest = \"true\"\n";
const LEASE: (&str, &str) = ("ORCHESTRATOR_LEADER_LEASE_SECS", "2");

const FILES: [(&str, &str); 4] = [
    ("a.txt", "a\n"),
    ("b.txt", "b\n"),
    ("b2.txt", "b2\n"),
    ("c.txt", "c\n"),
];

/// A command as a commander on `host` runs it, with short leases, on the test's store.
fn on_host(run: Run, host: &str, schema: Option<&TestSchema>) -> Run {
    let run = run.env(LEASE.0, LEASE.1).env("ORCHESTRATOR_HOST", host);
    match schema {
        Some(schema) => run.arg("--store").arg(&schema.url),
        None => run,
    }
}

/// The store the binary uses for `repo`, opened as another process would.
fn open_store(repo: &TestRepo, schema: Option<&str>) -> Store {
    match schema {
        Some(url) => {
            let scope = std::fs::canonicalize(repo.path()).expect("repo path");
            Store::open_postgres(url, &scope.display().to_string()).expect("the PostgreSQL store opens")
        }
        None => Store::open_existing(&repo.path().join(".orchestrator/state.db")).expect("the store opens"),
    }
}

fn status_json(done: &Finished) -> serde_json::Value {
    done.assert_code(0);
    serde_json::from_str(&done.stdout).expect("status JSON")
}

/// How many times the mission's log says each unit was merged.
async fn merges(repo: &TestRepo, schema: Option<&TestSchema>) -> Vec<(String, usize)> {
    let logs = on_host(Run::cmd(&["logs", "--json"]), "host-b", schema)
        .run(repo)
        .await;
    logs.assert_code(0);
    let units: Vec<String> = logs
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "merged")
        .filter_map(|e| e["unit"].as_str().map(str::to_string))
        .collect();
    count(units)
}

/// How many merge commits of each unit the user's branch has: a unit's work went in once, even
/// when the log tells of a merge again (a run stopped between a merge and the unit's end merges it
/// again as a no-op).
fn merge_commits(repo: &TestRepo) -> Vec<(String, usize)> {
    let subjects = repo.git(&["log", "--format=%s", "HEAD"]);
    let units = subjects
        .lines()
        .filter_map(|s| s.strip_prefix("Merge "))
        .filter_map(|s| s.split_once(':'))
        .map(|(unit, _)| unit.to_string())
        .collect();
    count(units)
}

fn count(units: Vec<String>) -> Vec<(String, usize)> {
    let mut counted: Vec<(String, usize)> = Vec::new();
    for unit in units {
        match counted.iter_mut().find(|(u, _)| *u == unit) {
            Some((_, n)) => *n += 1,
            None => counted.push((unit, 1)),
        }
    }
    counted.sort();
    counted
}

/// A commander on host-a is killed (-9) mid-mission. While its lease is live a resume on host-b is
/// refused naming it; `status` shows it as the leader; once its lease expired the resume takes the
/// mission over, says from whom, and seals with every unit merged once.
async fn killed_commander_is_taken_over_after_its_lease(schema: Option<&TestSchema>) {
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let when = Box::new(|r: &SeenRequest| role_of(r) == "worker" && r.first_user_text().contains("b2"));
    let (server, fired_at) = crash_running(
        when,
        ScriptedMission::new(script()),
        &repo,
        on_host(Run::task("Killed on host-a"), "host-a", schema),
    )
    .await;
    assert_ne!(fired_at, u64::MAX, "the kill fired");

    let refused = on_host(Run::cmd(&["resume"]), "host-b", schema)
        .openai(&server)
        .run(&repo)
        .await;
    // Refused like a mission another process runs here (the repository lock): exit 4.
    refused.assert_code(4);
    for said in [
        "is being run by another commander",
        "commander pid",
        "on host-a",
        "until",
    ] {
        assert!(refused.stderr.contains(said), "{said}: {}", refused.stderr);
    }
    let asked = server.requests().len();

    let status = on_host(Run::cmd(&["status", "--json"]), "host-b", schema)
        .run(&repo)
        .await;
    let report = status_json(&status);
    assert_eq!(report["leader"]["host"], "host-a", "{report}");
    assert_eq!(report["running"], true, "a live lead elsewhere runs it: {report}");
    let text = on_host(Run::cmd(&["status"]), "host-b", schema).run(&repo).await;
    assert!(text.stdout.contains("leader: commander pid"), "{}", text.stdout);
    let cancel = on_host(Run::cmd(&["cancel"]), "host-b", schema).run(&repo).await;
    cancel.assert_code(2);
    assert!(
        cancel.stderr.contains("on host-a, not on this host"),
        "{}",
        cancel.stderr
    );

    // The killed commander never renews: its lease runs out by the store's clock.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = on_host(Run::cmd(&["status", "--json"]), "host-b", schema)
            .run(&repo)
            .await;
        if status_json(&status)["leader"]["expired"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the lease never expired: {}",
            status.stdout
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        server.requests().len(),
        asked,
        "the refused resume called no model"
    );

    let done = on_host(Run::cmd(&["resume", "--json"]), "host-b", schema)
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let notices = done.notices();
    assert!(
        notices.iter().any(|n| n.contains("took the lead of mission")
            && n.contains("on host-a (token 1,")
            && n.contains("leads it with token 2")),
        "{notices:?}"
    );
    for (path, content) in FILES {
        assert_eq!(repo.read(path).as_deref(), Some(content), "{path}");
    }
    assert_eq!(
        merge_commits(&repo),
        vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 1)],
        "every unit merged once: {}",
        repo.git(&["log", "--format=%s", "HEAD"])
    );
    let after = status_json(
        &on_host(Run::cmd(&["status", "--json"]), "host-b", schema)
            .run(&repo)
            .await,
    );
    assert!(
        after.get("leader").is_none(),
        "a sealed mission has no leader: {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_commander_is_taken_over_after_its_lease_on_sqlite() {
    killed_commander_is_taken_over_after_its_lease(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_killed_commander_is_taken_over_after_its_lease_on_postgres() {
    let schema = fresh_schema();
    killed_commander_is_taken_over_after_its_lease(Some(&schema)).await;
}

/// Plays the script; at unit c's first worker request another commander ("usurper" on host-z)
/// takes the lead, as one would after this commander stalled past its lease. From then on the
/// model never answers: only the lost lead can end the run.
struct Usurp {
    inner: ScriptedMission,
    repo: std::path::PathBuf,
    schema: Option<String>,
    done: AtomicBool,
    token: Mutex<Option<i64>>,
}

impl Usurp {
    fn store(&self) -> Store {
        match &self.schema {
            Some(url) => {
                let scope = std::fs::canonicalize(&self.repo).expect("repo path");
                Store::open_postgres(url, &scope.display().to_string()).expect("store")
            }
            None => Store::open_existing(&self.repo.join(".orchestrator/state.db")).expect("store"),
        }
    }
}

impl Brain for Usurp {
    fn respond(&self, request: &SeenRequest) -> Reply {
        if self.done.load(Ordering::SeqCst) {
            return Reply::Hang;
        }
        if role_of(request) == "worker" && worker_unit(request).as_deref() == Some("c") {
            let store = self.store();
            let mission = store.latest_mission().expect("read").expect("a mission").id;
            let lead = store
                .leader(&mission)
                .expect("read")
                .expect("the commander leads");
            let usurper = Holder {
                id: "usurper".into(),
                host: "host-z".into(),
            };
            let taken = store
                .take_over_leader(&mission, &usurper, Duration::from_secs(600), lead.token)
                .expect("taken over");
            *self.token.lock().expect("lock") = Some(taken.token);
            self.done.store(true, Ordering::SeqCst);
            return Reply::Hang;
        }
        self.inner.respond(request)
    }
}

async fn a_commander_whose_lead_is_taken_stops(schema: Option<&TestSchema>) {
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let brain = Usurp {
        inner: ScriptedMission::new(script()),
        repo: repo.path().to_path_buf(),
        schema: schema.map(|s| s.url.clone()),
        done: AtomicBool::new(false),
        token: Mutex::new(None),
    };
    let server = FakeServer::start(brain, Default::default())
        .await
        .expect("fake server");
    let stopped = on_host(Run::task("Lose the lead").arg("--json"), "host-a", schema)
        .openai(&server)
        .run(&repo)
        .await;
    // Stopped as an interruption is: resumable, nothing applied to the user's branch.
    stopped.assert_code(3);
    let said = format!("{}{}", stopped.stdout, stopped.stderr);
    assert!(said.contains("lost its lead"), "{said}");
    assert!(said.contains("usurper on host-z"), "{said}");
    assert!(repo.read("c.txt").is_none(), "nothing applied: {said}");

    // Nothing of the stale commander's end reached the store: no finish, no status of its own,
    // and the lead is still the usurper's.
    let status = status_json(
        &on_host(Run::cmd(&["status", "--json"]), "host-b", schema)
            .run(&repo)
            .await,
    );
    assert_eq!(status["leader"]["holder"], "usurper", "{status}");
    assert_eq!(status["status"], "running", "the usurper's to set: {status}");
    let merged = merges(&repo, schema).await;
    assert!(
        merged.iter().all(|(u, _)| u != "c"),
        "c was not merged: {merged:?}"
    );
    let logs = on_host(Run::cmd(&["logs", "--json"]), "host-b", schema)
        .run(&repo)
        .await;
    assert!(!logs.stdout.contains("mission_finished"), "{}", logs.stdout);
    assert!(
        !logs.stdout.contains("lost the mission's lead"),
        "{}",
        logs.stdout
    );

    // The usurper gives the lead back; a resume then finishes the mission, each unit merged once.
    let store = open_store(&repo, schema.map(|s| s.url.as_str()));
    let mission = store.latest_mission().expect("read").expect("mission").id;
    let lead = store.leader(&mission).expect("read").expect("led");
    store.release_leader(&mission, lead.token).expect("released");
    let server = fake(script()).await;
    let done = on_host(Run::cmd(&["resume"]), "host-a", schema)
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    for (path, content) in FILES {
        assert_eq!(repo.read(path).as_deref(), Some(content), "{path}");
    }
    assert_eq!(
        merge_commits(&repo),
        vec![("a".into(), 1), ("b".into(), 1), ("c".into(), 1)],
        "every unit merged once: {}",
        repo.git(&["log", "--format=%s", "HEAD"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commander_whose_lead_is_taken_stops_on_sqlite() {
    a_commander_whose_lead_is_taken_stops(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_commander_whose_lead_is_taken_stops_on_postgres() {
    let schema = fresh_schema();
    a_commander_whose_lead_is_taken_stops(Some(&schema)).await;
}

/// Ctrl-C stops the mission cleanly and gives the lead back: a commander on another host resumes
/// it at once, although the lease would have lasted ten minutes more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_gives_the_lead_back() {
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let server = fake(script()).await;
    let long = |run: Run, host: &str| on_host(run, host, None).env(LEASE.0, "600");
    let child = long(Run::task("Interrupted on host-a"), "host-a")
        .openai(&server)
        .command(&repo)
        .spawn()
        .expect("binary starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while requests_of(&server, "worker").is_empty() {
        assert!(Instant::now() < deadline, "no worker started");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let pid = child.id().expect("pid") as i32;
    // SAFETY: signals the orchestrator child process this test started.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let first = Finished::from(
        tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("the run ends")
            .expect("waits"),
    );
    first.assert_code(3);
    let status = status_json(&long(Run::cmd(&["status", "--json"]), "host-b").run(&repo).await);
    assert!(status.get("leader").is_none(), "given back: {status}");
    let done = long(Run::cmd(&["resume"]), "host-b")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    for (path, content) in FILES {
        assert_eq!(repo.read(path).as_deref(), Some(content), "{path}");
    }
}

/// A lease length that is not whole seconds from 1 to 3600 is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_lease_length_is_refused_before_anything_starts() {
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let server = fake(script()).await;
    for bad in ["0", "-3", "2.5", "ten", "99999999999999999999", "3601"] {
        let done = Run::task("Anything")
            .env(LEASE.0, bad)
            .openai(&server)
            .run(&repo)
            .await;
        done.assert_code(2);
        assert!(done.stderr.contains(LEASE.0), "{bad}: {}", done.stderr);
    }
    assert!(server.requests().is_empty(), "no model was called");
    assert!(
        !repo.path().join(".orchestrator/state.db").exists(),
        "no mission was recorded"
    );
}
