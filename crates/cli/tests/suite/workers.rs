//! External workers (issue #20, docs/scale-out.md): a commander started with `--workers external`
//! offers its units in the PostgreSQL store and merges what `orchestrator worker` processes push
//! to a shared bare remote. The real binaries, the fake model, one store schema per test.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orchestrator_fake_model::script::{worker_unit, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeOptions, FakeServer, Reply, SeenRequest};
use orchestrator_protocol::Event;
use orchestrator_store::Store;
use orchestrator_test_support::pg::{fresh_schema, TestSchema};

use super::durability::script;
use super::support::*;

const CONFIG: &str = "[verify]\ntest = \"true\"\n";

const FILES: [(&str, &str); 4] = [
    ("a.txt", "a\n"),
    ("b.txt", "b\n"),
    ("b2.txt", "b2\n"),
    ("c.txt", "c\n"),
];

/// A bare repository the commander and the workers share, as a team's git server would be.
struct SharedRemote {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SharedRemote {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shared.git");
        let out = std::process::Command::new("git")
            .args(["init", "--bare", "--quiet"])
            .arg(&path)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git init --bare");
        SharedRemote { _dir: dir, path }
    }

    fn url(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }
}

fn commander(schema: &TestSchema, remote: &SharedRemote) -> Run {
    Run::task("Four files")
        .arg("--json")
        .arg("--workers")
        .arg("external")
        .arg("--remote")
        .arg(remote.url())
        .arg("--store")
        .arg(&schema.url)
}

/// An `orchestrator worker` as a host named `host` runs it, in a work folder of its own.
fn worker(schema: &TestSchema, host: &str, workdir: &Path) -> Run {
    Run::cmd(&["worker", "--slots", "4", "--lease-secs", "2"])
        .arg("--workdir")
        .arg(workdir.to_str().expect("utf-8 path"))
        .arg("--store")
        .arg(&schema.url)
        .env("ORCHESTRATOR_HOST", host)
}

fn start(run: Run, server: &FakeServer, repo: &TestRepo) -> tokio::process::Child {
    run.openai(server)
        .command(repo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts")
}

async fn finish(child: tokio::process::Child) -> Finished {
    let out = tokio::time::timeout(Duration::from_secs(240), child.wait_with_output())
        .await
        .expect("finished within 240 s")
        .expect("waits");
    Finished::from(out)
}

/// Stops a worker (or a commander, as `orchestrator cancel` does) the way a service manager would
/// (SIGTERM) and returns what it said.
async fn stop(child: tokio::process::Child) -> Finished {
    if let Some(pid) = child.id() {
        // SAFETY: signals a child process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    finish(child).await
}

fn assert_result_on_the_users_branch(repo: &TestRepo) {
    for (path, content) in FILES {
        assert_eq!(repo.read(path).as_deref(), Some(content), "{path}");
    }
}

/// How many merge commits of each unit the user's branch has.
fn merge_commits(repo: &TestRepo) -> Vec<(String, usize)> {
    let subjects = repo.git(&["log", "--format=%s", "HEAD"]);
    let mut units: Vec<String> = subjects
        .lines()
        .filter_map(|s| s.strip_prefix("Merge "))
        .filter_map(|s| s.split_once(':'))
        .map(|(unit, _)| unit.to_string())
        .collect();
    units.sort();
    let mut counted: Vec<(String, usize)> = Vec::new();
    for unit in units {
        match counted.last_mut() {
            Some((last, n)) if *last == unit => *n += 1,
            _ => counted.push((unit, 1)),
        }
    }
    counted
}

/// `resume` of the test's mission on its store, with `extra` flags, as a commander on this host.
async fn resume_on(schema: &TestSchema, server: &FakeServer, repo: &TestRepo, extra: &[&str]) -> Finished {
    let mut run = Run::cmd(&["resume", "--json"]);
    for arg in extra {
        run = run.arg(arg);
    }
    run.arg("--store").arg(&schema.url).openai(server).run(repo).await
}

/// The mission sealed with every unit's work on the user's branch, merged once.
fn assert_sealed_once(done: &Finished, repo: &TestRepo, worker: &Finished) {
    assert_eq!(
        done.code,
        Some(0),
        "{}\n{}\nworker: {}",
        done.stdout,
        done.stderr,
        worker.stderr
    );
    assert_result_on_the_users_branch(repo);
    assert_eq!(merge_commits(repo), once_each());
}

fn once_each() -> Vec<(String, usize)> {
    ["a", "b", "c"].iter().map(|u| (u.to_string(), 1)).collect()
}

/// The sessions of worker role the mission's log names, by session id.
fn worker_sessions(done: &Finished) -> Vec<String> {
    done.events_of("session_started")
        .iter()
        .filter(|e| e["role"] == "worker")
        .filter_map(|e| e["session"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn two_workers_build_the_units_and_the_commander_merges_each_once() {
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let server = fake(script()).await;
    let hosts = tempfile::tempdir().expect("tempdir");
    // Its branches kept, so the remote's refs are there to see, and for `clean` to remove.
    let running = start(commander(&schema, &remote).arg("--keep-branches"), &server, &repo);
    let w1 = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    let w2 = start(
        worker(&schema, "host-w2", &hosts.path().join("w2")),
        &server,
        &repo,
    );

    let done = finish(running).await;
    let (w1, w2) = (stop(w1).await, stop(w2).await);
    assert_eq!(
        done.code,
        Some(0),
        "{}\n{}\nw1: {}\nw2: {}",
        done.stdout,
        done.stderr,
        w1.stderr,
        w2.stderr
    );
    assert_result_on_the_users_branch(&repo);
    assert_eq!(merge_commits(&repo), once_each());

    // The workers built every unit: their sessions carry the holder's tag, and none is the
    // commander's own.
    let sessions = worker_sessions(&done);
    for unit in ["a", "b", "c"] {
        assert!(
            sessions.iter().any(|s| s.starts_with(&format!("{unit}@t1/"))),
            "{unit}: {sessions:?}"
        );
    }
    assert!(sessions.iter().all(|s| s.contains("@t")), "{sessions:?}");
    let taken = done.events_of("unit_taken");
    assert_eq!(taken.len(), 3, "{taken:?}");
    for event in &taken {
        assert!(
            event["worker"]
                .as_str()
                .is_some_and(|w| w.starts_with("worker pid "))
                && ["host-w1", "host-w2"].contains(&event["host"].as_str().unwrap_or_default())
                && event["token"] == 1
                && event.get("taken_over_from").is_none(),
            "{event}"
        );
    }
    // Each worker stops cleanly and says what it did.
    for stopped in [&w1, &w2] {
        assert_eq!(stopped.code, Some(0), "{}", stopped.stderr);
        assert!(stopped.stdout.contains("worker stopped:"), "{}", stopped.stdout);
    }
    // The units' branches went to the shared remote under their holder's token, beside the
    // integration branch the commander published.
    let refs = String::from_utf8_lossy(
        &std::process::Command::new("git")
            .args(["--git-dir", remote.url(), "for-each-ref", "--format=%(refname)"])
            .output()
            .expect("git runs")
            .stdout,
    )
    .into_owned();
    for unit in ["a", "b", "c"] {
        assert!(refs.contains(&format!("/w/{unit}@t1")), "{refs}");
    }
    assert!(refs.contains("/integration"), "{refs}");

    // `status` tells which worker on which host finished each unit.
    let status = Run::cmd(&["status", "--json"])
        .arg("--store")
        .arg(&schema.url)
        .run(&repo)
        .await;
    status.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let queue = report["work_units"].as_array().expect("work_units");
    assert_eq!(queue.len(), 3, "{report}");
    for row in queue {
        assert_eq!(row["state"], "done", "{row}");
        assert!(row["host"] == "host-w1" || row["host"] == "host-w2", "{row}");
        assert!(
            row["holder"]
                .as_str()
                .is_some_and(|h| h.starts_with("worker pid ")),
            "{row}"
        );
    }
    assert_clean_takes_the_remote_refs_and_the_queue(&repo, &schema, &remote).await;
}

/// `clean` of a sealed `--workers external` mission: a dry run lists the mission's refs on the
/// shared remote; the clean removes them and the mission's work queue and relayed transcripts, and
/// leaves the user's branch, the mission's record and the workers' session transcripts.
async fn assert_clean_takes_the_remote_refs_and_the_queue(
    repo: &TestRepo,
    schema: &TestSchema,
    remote: &SharedRemote,
) {
    let remote_refs = || {
        let out = std::process::Command::new("git")
            .args(["--git-dir", remote.url(), "for-each-ref", "--format=%(refname)"])
            .output()
            .expect("git runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let store = store_of(repo, schema);
    let mission = store.latest_mission().expect("reads").expect("a mission").id;
    let relays = |store: &Store| {
        ["a", "b", "c"]
            .iter()
            .map(|u| {
                store
                    .messages(&mission, &format!("relay:{u}@t1"))
                    .map(|m| m.len())
                    .unwrap_or(0)
            })
            .sum::<usize>()
    };
    assert!(relays(&store) > 0, "the workers relayed their events");
    let dry = Run::cmd(&["clean", "--dry-run"])
        .arg("--store")
        .arg(&schema.url)
        .run(repo)
        .await;
    dry.assert_code(0);
    assert!(
        dry.stdout.contains(&format!(
            "would remove refs/heads/orchestrator/{mission}/w/a@t1 on the mission's remote"
        )),
        "{}",
        dry.stdout
    );
    assert!(
        remote_refs().contains(&format!("orchestrator/{mission}/")),
        "a dry run removes nothing"
    );

    let cleaned = Run::cmd(&["clean"])
        .arg("--store")
        .arg(&schema.url)
        .run(repo)
        .await;
    cleaned.assert_code(0);
    assert!(
        cleaned.stdout.contains(&format!(
            "removed refs/heads/orchestrator/{mission}/integration on the mission's remote"
        )) && cleaned
            .stdout
            .contains("removed 3 unit(s) of the store's work queue"),
        "{}",
        cleaned.stdout
    );
    assert!(
        !remote_refs().contains(&format!("orchestrator/{mission}/")),
        "{}",
        remote_refs()
    );
    assert!(store.work_units(&mission).expect("reads").is_empty());
    assert_eq!(relays(&store), 0);
    assert_result_on_the_users_branch(repo);
    assert!(
        store.mission(&mission).expect("reads").is_some(),
        "the record stays"
    );
    let again = Run::cmd(&["clean"])
        .arg("--store")
        .arg(&schema.url)
        .run(repo)
        .await;
    again.assert_code(0);
    assert!(again.stdout.contains("nothing to clean"), "{}", again.stdout);
}

/// Plays the script, but kills the first worker (SIGKILL) at the first worker request for unit b.
struct KillWorker {
    inner: ScriptedMission,
    pid: Arc<AtomicI32>,
    fired: Arc<AtomicBool>,
}

impl Brain for KillWorker {
    fn respond(&self, request: &SeenRequest) -> Reply {
        let pid = self.pid.load(Ordering::SeqCst);
        if pid > 0 && !self.fired.load(Ordering::SeqCst) && worker_unit(request).as_deref() == Some("b") {
            self.fired.store(true, Ordering::SeqCst);
            // SAFETY: signals a worker process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Reply::Hang;
        }
        self.inner.respond(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_worker_killed_in_a_unit_is_taken_over_and_every_unit_merges_once() {
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let pid = Arc::new(AtomicI32::new(0));
    let fired = Arc::new(AtomicBool::new(false));
    let brain = KillWorker {
        inner: ScriptedMission::new(script()),
        pid: pid.clone(),
        fired: fired.clone(),
    };
    let server = FakeServer::start(brain, FakeOptions::default())
        .await
        .expect("fake server");
    let hosts = tempfile::tempdir().expect("tempdir");
    let running = start(commander(&schema, &remote), &server, &repo);
    let first = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    pid.store(first.id().expect("pid") as i32, Ordering::SeqCst);
    let first = finish(first).await;
    assert_eq!(
        first.code, None,
        "the first worker dies by the signal: {}",
        first.stderr
    );
    assert!(fired.load(Ordering::SeqCst));

    // Another host's worker takes its units over once their leases expire.
    let second = start(
        worker(&schema, "host-w2", &hosts.path().join("w2")),
        &server,
        &repo,
    );
    let done = finish(running).await;
    let second = stop(second).await;
    assert_eq!(
        done.code,
        Some(0),
        "{}\n{}\nw2: {}",
        done.stdout,
        done.stderr,
        second.stderr
    );
    assert_result_on_the_users_branch(&repo);
    assert_eq!(merge_commits(&repo), once_each());
    let taken = done.events_of("unit_taken");
    assert!(
        taken.iter().any(|e| e["unit"] == "b"
            && e["host"] == "host-w2"
            && e["token"] == 2
            && e["taken_over_from"] == 1),
        "{taken:?}"
    );
    // The new holder started b afresh in a session of its own.
    let sessions = worker_sessions(&done);
    assert!(sessions.iter().any(|s| s.starts_with("b@t2/")), "{sessions:?}");
    let merged: Vec<String> = done
        .events_of("merged")
        .iter()
        .filter_map(|e| e["unit"].as_str().map(str::to_string))
        .collect();
    let mut sorted = merged.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["a", "b", "c"], "{merged:?}");
}

#[tokio::test]
async fn external_workers_need_a_remote_and_a_postgres_store() {
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let server = fake(script()).await;
    let no_remote = Run::task("x")
        .arg("--workers")
        .arg("external")
        .openai(&server)
        .run(&repo)
        .await;
    no_remote.assert_code(2);
    assert!(
        no_remote.stderr.contains("needs --remote"),
        "{}",
        no_remote.stderr
    );
    let remote = SharedRemote::new();
    let sqlite = Run::task("x")
        .arg("--workers")
        .arg("external")
        .arg("--remote")
        .arg(remote.url())
        .openai(&server)
        .run(&repo)
        .await;
    sqlite.assert_code(2);
    assert!(
        sqlite.stderr.contains("needs a PostgreSQL store"),
        "{}",
        sqlite.stderr
    );
    let worker = Run::cmd(&["worker"]).run(&repo).await;
    worker.assert_code(2);
    assert!(worker.stderr.contains("PostgreSQL store"), "{}", worker.stderr);
    assert!(requests_of(&server, "worker").is_empty(), "no model was called");
}

/// Waits until the mission's log holds an event of a worker session of unit b, b not merged yet.
async fn wait_for_b_relayed(repo: &TestRepo, schema: &TestSchema) -> bool {
    let url = schema.url.clone();
    let scope = scope_of(repo);
    for _ in 0..600 {
        let (url, scope) = (url.clone(), scope.clone());
        let seen = tokio::task::spawn_blocking(move || {
            let Ok(store) = Store::open_postgres(&url, &scope) else {
                return (false, false);
            };
            let Ok(Some(mission)) = store.latest_mission() else {
                return (false, false);
            };
            let events = store.events_after(&mission.id, None).unwrap_or_default();
            let started = events.iter().any(
                |e| matches!(&e.event, Event::SessionStarted { session, .. } if session.starts_with("b@t1/")),
            );
            let merged = events
                .iter()
                .any(|e| matches!(&e.event, Event::Merged { unit, .. } if unit == "b"));
            (started, merged)
        })
        .await
        .expect("looks");
        match seen {
            (true, false) => return true,
            (_, true) => return false,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_commander_killed_while_workers_build_is_resumed_and_logs_each_event_once() {
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    // Slow model calls, so the kill lands while b is being built and part of its events are logged.
    let options = FakeOptions {
        latency: Duration::from_millis(300),
        ..FakeOptions::default()
    };
    let server = fake_with(script(), options).await;
    let hosts = tempfile::tempdir().expect("tempdir");
    let running = start(commander(&schema, &remote), &server, &repo);
    let w1 = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    assert!(
        wait_for_b_relayed(&repo, &schema).await,
        "b's worker session was never logged before b merged"
    );
    // SAFETY: signals the commander process this test started.
    unsafe { libc::kill(running.id().expect("pid") as i32, libc::SIGKILL) };
    let killed = finish(running).await;
    assert_eq!(
        killed.code, None,
        "the commander dies by the signal: {}",
        killed.stderr
    );

    // The stored settings bring the external workers back; the worker kept its units.
    let resumed = resume_on(&schema, &server, &repo, &[]).await;
    let w1 = stop(w1).await;
    assert_sealed_once(&resumed, &repo, &w1);

    // Every worker session is in the log once, though two commanders shared the relaying of b's.
    let logs = Run::cmd(&["logs", "--json"])
        .arg("--store")
        .arg(&schema.url)
        .run(&repo)
        .await;
    logs.assert_code(0);
    let mut sessions: Vec<String> = logs
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["type"] == "session_started" && e["role"] == "worker")
        .filter_map(|e| e["session"].as_str().map(str::to_string))
        .collect();
    let all = sessions.len();
    sessions.sort();
    sessions.dedup();
    assert_eq!(
        sessions.len(),
        all,
        "a worker session was logged twice: {}",
        logs.stdout
    );
    assert!(sessions.iter().any(|s| s.starts_with("b@t1/")), "{sessions:?}");
    for unit in ["a", "c"] {
        assert!(
            sessions.iter().any(|s| s.starts_with(&format!("{unit}@t"))),
            "{unit}: {sessions:?}"
        );
    }
}

/// Claims every unit offered and reports it passed without pushing anything: one result names its
/// own ref, which does not exist, the other a ref that is not its own.
fn lie_about_every_unit(url: String, scope: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let store = Store::open_postgres(&url, &scope).expect("the store opens");
        let liar = orchestrator_store::Holder {
            id: "liar".into(),
            host: "nowhere".into(),
        };
        let mut lied = 0;
        while !stop.load(Ordering::SeqCst) {
            for unit in store
                .claim_units(&liar, 8, Duration::from_secs(600))
                .unwrap_or_default()
            {
                let key = &unit.fence.key;
                let own = format!(
                    "refs/heads/orchestrator/{}/w/{}@t{}",
                    key.mission, key.unit, unit.fence.token
                );
                let named = if lied % 2 == 0 {
                    own
                } else {
                    "refs/heads/main".to_string()
                };
                let result = serde_json::json!({
                    "passed": true,
                    "summary": "all done, trust me",
                    "commit": "0123456789abcdef0123456789abcdef01234567",
                    "pushed_ref": named,
                });
                store
                    .finish_unit(&unit.fence, orchestrator_store::Outcome::Done, &result)
                    .expect("reported");
                lied += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        lied
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_worker_whose_result_lies_gets_nothing_merged() {
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let server = fake(script()).await;
    let before = repo.git(&["rev-parse", "HEAD"]);
    let stop_lying = Arc::new(AtomicBool::new(false));
    let liar = lie_about_every_unit(schema.url.clone(), scope_of(&repo), stop_lying.clone());
    let done = commander(&schema, &remote)
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    stop_lying.store(true, Ordering::SeqCst);
    let lied = liar.join().expect("the liar ends");
    assert!(lied >= 2, "the liar took the units ({lied})");
    assert_ne!(done.code, Some(0), "{}\n{}", done.stdout, done.stderr);
    let finished = done.events_of("mission_finished");
    assert_eq!(finished[0]["outcome"], "unsealed", "{}", done.stdout);
    assert!(
        done.events_of("merged").is_empty(),
        "nothing is merged on a claim alone"
    );
    assert_eq!(
        repo.git(&["rev-parse", "HEAD"]),
        before,
        "the user's branch is untouched"
    );
    let failed: Vec<String> = done
        .events_of("unit_state")
        .iter()
        .filter(|e| e["state"] == "failed")
        .filter_map(|e| e["detail"].as_str().map(str::to_string))
        .collect();
    assert!(
        failed
            .iter()
            .any(|d| d.contains("holds nothing; nothing was merged")),
        "{failed:?}"
    );
    assert!(
        failed.iter().any(|d| d.contains("does not name a commit on")),
        "{failed:?}"
    );
    // No model worked on the units: nobody but the liar held them.
    assert!(requests_of(&server, "worker").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_worker_runs_the_missions_baseline_and_judges_as_the_commander_would() {
    use super::baseline::{evidence, one_unit, project, tail};
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    // A test that fails before any unit, and a build whose outputs say where they were built.
    let repo = project("", &[("old_bug", "broken before any unit\n")]);
    let server = fake(one_unit("FILE a.txt := a\\n")).await;
    let hosts = tempfile::tempdir().expect("tempdir");
    let running = start(commander(&schema, &remote), &server, &repo);
    let w1 = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    let done = finish(running).await;
    let w1 = stop(w1).await;
    assert_eq!(
        done.code,
        Some(0),
        "{}\n{}\nw1: {}",
        done.stdout,
        done.stderr,
        w1.stderr
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a\n"));

    // The worker's unit started from its own baseline's outputs, and the failure the base already
    // had is excused by name, as the commander's own unit would have it.
    let events = done.events();
    let build = evidence(&events, Some("a"), "build");
    assert!(!build.is_empty(), "the worker's evidence reached the log");
    assert!(tail(&build[0]).contains("warm from baseline"), "{build:?}");
    let test = evidence(&events, Some("a"), "test");
    assert_eq!(test[0]["exit_code"], 1);
    assert_eq!(test[0]["baseline_failures"], serde_json::json!(["tests::old"]));
    // Its baseline worktree went with the worker.
    let left: Vec<_> = walk_names(&hosts.path().join("w1/worktrees"));
    assert!(!left.iter().any(|n| n == "baseline"), "{left:?}");
}

/// A unit a worker builds may split itself as a commander's would: its sub-units run on that
/// worker, merge into its worktree, and the whole tree's life reaches the mission's log; the
/// commander merges the unit once, and the worker leaves no worktree or branch behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_unit_on_a_worker_spawns_sub_units_that_run_and_merge_there() {
    use orchestrator_fake_model::script::{PlanUnit, Script};
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let split =
        "SPAWN one :: FILE one.txt := 1\\n\nSPAWN two :: FILE two.txt := 2\\n\nFILE top.txt := top\\n";
    let server = fake(Script {
        plan: vec![PlanUnit::new("a", "Split", split, &[])],
        ..Script::default()
    })
    .await;
    let hosts = tempfile::tempdir().expect("tempdir");
    let running = start(commander(&schema, &remote), &server, &repo);
    let w1 = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    let done = finish(running).await;
    let w1 = stop(w1).await;
    assert_eq!(
        done.code,
        Some(0),
        "{}\n{}\nw1: {}",
        done.stdout,
        done.stderr,
        w1.stderr
    );
    for (path, content) in [("one.txt", "1\n"), ("two.txt", "2\n"), ("top.txt", "top\n")] {
        assert_eq!(repo.read(path).as_deref(), Some(content), "{path}");
    }
    let merged: Vec<(String, usize)> = ["a", "a.1", "a.2"].iter().map(|u| (u.to_string(), 1)).collect();
    assert_eq!(merge_commits(&repo), merged);

    // The tree's life was relayed: the split, each sub-unit's sessions, states and merge into `a`.
    let spawned = done.events_of("units_spawned");
    assert_eq!(spawned.len(), 1, "{spawned:?}");
    assert_eq!(spawned[0]["parent"], "a");
    let sessions = worker_sessions(&done);
    for unit in ["a.1", "a.2"] {
        assert!(
            done.events_of("unit_state")
                .iter()
                .any(|e| e["unit"] == unit && e["state"] == "passed"),
            "{unit} passed"
        );
        assert!(
            done.events_of("merged")
                .iter()
                .any(|e| e["unit"] == unit && e["into"].as_str().is_some_and(|b| b.contains("/h/a@t1/"))),
            "{unit} merged into a on the worker"
        );
        assert!(sessions.iter().any(|s| s.starts_with("a@t1/")), "{sessions:?}");
    }
    // One worker session per unit of the tree, all under the holder's tag.
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    // The holder's worktrees and branches went with its unit.
    let left = walk_names(&hosts.path().join("w1/worktrees"));
    assert!(!left.iter().any(|n| n.contains('@')), "{left:?}");
    let copies = hosts.path().join("w1/repos");
    for copy in std::fs::read_dir(&copies).expect("the worker's copies").flatten() {
        let branches = std::process::Command::new("git")
            .arg("-C")
            .arg(copy.path())
            .args(["for-each-ref", "--format=%(refname)", "refs/heads/orchestrator"])
            .output()
            .expect("git runs");
        let branches = String::from_utf8_lossy(&branches.stdout);
        assert!(!branches.contains("/h/"), "{branches}");
    }
    assert_eq!(mission_refs_on(&remote), "", "the remote is settled");
}

/// Best of N on a worker: its candidates take turns in the unit's slot, the reviewer's pick is
/// pushed, the commander merges it once; the candidates' events reach the mission's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_unit_on_a_worker_is_built_best_of_n_and_the_pick_is_merged() {
    use orchestrator_fake_model::script::{PlanUnit, Script};
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let config = "[verify]\ntest = \"! grep -q broken a.txt\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "Write a",
            "CANDIDATE 1: FILE a.txt := broken\nCANDIDATE 2: FILE a.txt := two\nCANDIDATE 3: FILE a.txt := three\nPICK 3 it says it best",
            &[],
        )],
        ..Script::default()
    })
    .await;
    let hosts = tempfile::tempdir().expect("tempdir");
    let running = start(
        commander(&schema, &remote).arg("--attempts").arg("3"),
        &server,
        &repo,
    );
    let w1 = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    let done = finish(running).await;
    let w1 = stop(w1).await;
    assert_eq!(
        done.code,
        Some(0),
        "{}\n{}\nw1: {}",
        done.stdout,
        done.stderr,
        w1.stderr
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("three"), "the pick is merged");
    assert_eq!(merge_commits(&repo), vec![("a".to_string(), 1)]);
    let finished = done.events_of("candidate_finished");
    assert_eq!(finished.len(), 3, "{finished:?}");
    let picked = done.events_of("candidate_picked");
    assert_eq!(picked.len(), 1, "{picked:?}");
    assert_eq!(picked[0]["candidate"], 3);
    assert_eq!(picked[0]["passing"], serde_json::json!([2, 3]));
    // Three worker sessions, all the holder's.
    let sessions = worker_sessions(&done);
    assert_eq!(sessions.len(), 3, "{sessions:?}");
    assert!(sessions.iter().all(|s| s.starts_with("a@t1/")), "{sessions:?}");
    let left = walk_names(&hosts.path().join("w1/worktrees"));
    assert!(!left.iter().any(|n| n.contains('@')), "{left:?}");
    // Sealed, and its branches not kept: the remote holds nothing of the mission any more.
    assert_eq!(mission_refs_on(&remote), "", "the remote is settled");
}

/// Hosts that cannot build a unit (here: no model key) give it back; past `MAX_GIVE_BACKS` it ends,
/// and the commander stops the mission, resumable, saying why, instead of the unit going round the
/// workers for ever. A resume with a host that can build it seals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_unit_no_host_can_build_ends_after_its_give_backs_and_resumes() {
    use orchestrator_fake_model::script::{PlanUnit, Script};
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let server = fake(Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a")],
        ..Script::default()
    })
    .await;
    let hosts = tempfile::tempdir().expect("tempdir");
    let running = start(commander(&schema, &remote), &server, &repo);
    // Three hosts without a model key: each gives the unit back, and waits before claiming again.
    let keyless: Vec<tokio::process::Child> = (1..=3)
        .map(|n| {
            worker(
                &schema,
                &format!("host-k{n}"),
                &hosts.path().join(format!("k{n}")),
            )
            .command(&repo)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary starts")
        })
        .collect();
    let done = finish(running).await;
    for child in keyless {
        stop(child).await;
    }
    assert_ne!(done.code, Some(0), "{}\n{}", done.stdout, done.stderr);
    let said = format!("{}\n{}", done.stdout, done.stderr);
    let gave = format!(
        "{} holders gave the unit back",
        orchestrator_store::MAX_GIVE_BACKS + 1
    );
    assert!(
        said.contains(&gave) && said.contains("cannot reach a model"),
        "{said}"
    );
    let store = store_of(&repo, &schema);
    let mission = store.latest_mission().expect("reads").expect("a mission").id;
    let row = &store.work_units(&mission).expect("reads")[0];
    assert_eq!(row.give_backs, orchestrator_store::MAX_GIVE_BACKS + 1, "{row:?}");
    // Every holder's notice reached the log, also those that came and went between two looks.
    let given_back = done
        .events_of("notice")
        .iter()
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains("given back by")))
        .count();
    assert_eq!(given_back as u32, orchestrator_store::MAX_GIVE_BACKS + 1);
    assert!(
        store
            .claim_units(
                &orchestrator_store::Holder {
                    id: "late".into(),
                    host: "h".into()
                },
                1,
                Duration::from_secs(600)
            )
            .expect("claims")
            .is_empty(),
        "it is not handed out again"
    );

    // A host that can build it: the resume offers the unit again and seals.
    let w1 = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    let resumed = resume_on(&schema, &server, &repo, &[]).await;
    let w1 = stop(w1).await;
    assert_eq!(
        resumed.code,
        Some(0),
        "{}\n{}\nw1: {}",
        resumed.stdout,
        resumed.stderr,
        w1.stderr
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
}

/// A worker cut off from PostgreSQL in the middle of a unit (its connections reset, new ones
/// dropped): once its lease can no longer be renewed it stops the unit's sessions and writes,
/// pushes and reports nothing more; another host takes the unit over when the lease expires, and the
/// mission seals with every unit merged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_worker_cut_off_from_the_store_stops_and_its_unit_is_taken_over() {
    use orchestrator_test_support::cut::CutProxy;
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    // Unit a's first worker turn runs a command long enough for the line to be cut in it.
    let (server, a_started) = with_a_slow_first_turn().await;
    let hosts = tempfile::tempdir().expect("tempdir");
    let line = CutProxy::to_url(&schema.url);
    let cut_off = TestSchema {
        url: line.through(&schema.url),
        name: schema.name.clone(),
    };
    let running = start(commander(&schema, &remote).arg("--keep-branches"), &server, &repo);
    let w1 = start(
        worker(&cut_off, "host-cut", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    assert!(
        eventually(Duration::from_secs(60), || a_started.load(Ordering::SeqCst)).await,
        "unit a reached the worker"
    );
    line.cut();
    // Another host, reaching the store, takes over what the cut-off one held once its leases expire.
    let w2 = start(
        worker(&schema, "host-w2", &hosts.path().join("w2")),
        &server,
        &repo,
    );
    let done = finish(running).await;
    let (w1, w2) = (stop(w1).await, stop(w2).await);
    assert_sealed_once(&done, &repo, &w2);
    assert!(
        w1.stderr.contains("the lease was lost") || w1.stderr.contains("cannot renew the lease"),
        "{}",
        w1.stderr
    );
    let taken = done.events_of("unit_taken");
    assert!(
        taken
            .iter()
            .any(|e| e["unit"] == "a" && e["host"] == "host-w2" && e["taken_over_from"] == 1),
        "{taken:?}"
    );
    // The cut-off holder pushed nothing: only its successor's ref for unit a is on the remote.
    let refs = String::from_utf8_lossy(
        &std::process::Command::new("git")
            .args(["--git-dir", remote.url(), "for-each-ref", "--format=%(refname)"])
            .output()
            .expect("git runs")
            .stdout,
    )
    .into_owned();
    assert!(!refs.contains("/w/a@t1"), "{refs}");
    assert!(refs.contains("/w/a@t2"), "{refs}");
}

/// The endpoint's `max_concurrency` holds for a worker host as a whole: its units share one model
/// client, as a commander's sessions do, so a server that takes one request at a time gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_workers_units_share_the_endpoints_concurrency_limit() {
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let config = format!("{CONFIG}[endpoint]\nmax_concurrency = 1\n");
    let repo = TestRepo::new(&[("orchestrator.toml", &config)]);
    let options = FakeOptions {
        latency: Duration::from_millis(150),
        ..FakeOptions::default()
    };
    let server = FakeServer::start(ScriptedMission::new(script()), options)
        .await
        .expect("fake model server starts");
    let hosts = tempfile::tempdir().expect("tempdir");
    let running = start(commander(&schema, &remote), &server, &repo);
    let w1 = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    let done = finish(running).await;
    let w1 = stop(w1).await;
    assert_sealed_once(&done, &repo, &w1);
    assert_eq!(
        server.max_in_flight(),
        1,
        "the worker's units called the model one at a time"
    );
}

/// The refs under `refs/heads/orchestrator/` on the shared remote.
fn mission_refs_on(remote: &SharedRemote) -> String {
    let out = std::process::Command::new("git")
        .args([
            "--git-dir",
            remote.url(),
            "for-each-ref",
            "--format=%(refname)",
            "refs/heads/orchestrator/",
        ])
        .output()
        .expect("git runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The scripted mission, except that unit a's first worker turn runs `sleep 20`; the flag says that
/// turn was asked for.
async fn with_a_slow_first_turn() -> (FakeServer, Arc<AtomicBool>) {
    let scripted = ScriptedMission::new(script());
    let a_started = Arc::new(AtomicBool::new(false));
    let brain = {
        let a_started = a_started.clone();
        move |request: &SeenRequest| {
            if worker_unit(request).as_deref() != Some("a") || a_started.swap(true, Ordering::SeqCst) {
                return scripted.respond(request);
            }
            Reply::ToolCalls {
                text: String::new(),
                calls: vec![("bash".into(), r#"{"command": "sleep 20"}"#.into())],
            }
        }
    };
    let server = FakeServer::start(brain, FakeOptions::default())
        .await
        .expect("fake model server starts");
    (server, a_started)
}

/// Every file and folder name under `dir`.
fn walk_names(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            names.push(entry.file_name().to_string_lossy().into_owned());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    names
}

/// The tokens a mission used, every kind together.
fn tokens_used(done: &Finished) -> u64 {
    let usage = &done.events_of("mission_finished")[0]["usage"];
    [
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
    ]
    .iter()
    .map(|kind| usage[kind].as_u64().unwrap_or(0))
    .sum()
}

/// The store's scope of `repo`: its canonical path, as the commander and the workers name it.
fn scope_of(repo: &TestRepo) -> String {
    std::fs::canonicalize(repo.path())
        .expect("repo path")
        .display()
        .to_string()
}

/// The mission's store as a test looks into it.
fn store_of(repo: &TestRepo, schema: &TestSchema) -> Store {
    Store::open_postgres(&schema.url, &scope_of(repo)).expect("the store opens")
}

/// Waits (`within` at most) until no worker holds a unit of the repository's mission.
async fn until_nothing_held(repo: &TestRepo, schema: &TestSchema, within: Duration) -> bool {
    eventually(within, || nothing_held(repo, schema)).await
}

/// Looks at `done` every 50 ms until it holds or `within` has passed; whether it held.
async fn eventually(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

/// Whether every row of the mission's queue is finished or waiting: no worker holds a unit.
fn nothing_held(repo: &TestRepo, schema: &TestSchema) -> bool {
    let store = store_of(repo, schema);
    let Ok(Some(mission)) = store.latest_mission() else {
        return true;
    };
    store
        .work_units(&mission.id)
        .expect("the queue reads")
        .iter()
        .all(|u| u.state != orchestrator_store::UnitState::Leased)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_spent_budget_stops_the_workers_spending_and_a_resume_with_more_seals() {
    let server = fake(script()).await;
    let hosts = tempfile::tempdir().expect("tempdir");
    // What the whole mission costs with external workers.
    let (probe_schema, probe_remote) = (fresh_schema(), SharedRemote::new());
    let probe = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let running = start(commander(&probe_schema, &probe_remote), &server, &probe);
    let w0 = start(
        worker(&probe_schema, "host-w0", &hosts.path().join("w0")),
        &server,
        &probe,
    );
    let full = finish(running).await;
    stop(w0).await;
    assert_eq!(full.code, Some(0), "{}", full.stderr);
    let total = tokens_used(&full);

    // Enough for a and b, not for c: c's worker usually runs out in it (its row ends interrupted,
    // and the resume offers it again as attempt 2), or c is never offered; both must end the same.
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let budgeted = commander(&schema, &remote)
        .arg("--budget-tokens")
        .arg(&(total * 17 / 20).to_string());
    let running = start(budgeted, &server, &repo);
    let w1 = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    let spent = finish(running).await;
    assert_eq!(spent.code, Some(1), "{}\n{}", spent.stdout, spent.stderr);
    assert!(
        spent.stdout.contains("the token budget is spent"),
        "{}",
        spent.stdout
    );

    // Once the units out with the worker end, nothing more is spent: no unit is taken up again.
    assert!(
        until_nothing_held(&repo, &schema, Duration::from_secs(30)).await,
        "the worker still holds a unit"
    );
    let calls = server.requests().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.requests().len(),
        calls,
        "the worker went on calling the model"
    );

    let more = (total * 10).to_string();
    let resumed = resume_on(&schema, &server, &repo, &["--budget-tokens", &more]).await;
    let w1 = stop(w1).await;
    assert_sealed_once(&resumed, &repo, &w1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_stopped_commanders_unclaimed_units_wait_for_its_resume() {
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let server = fake(script()).await;
    // No worker yet: the units wait in the queue until the commander is stopped.
    let running = start(commander(&schema, &remote), &server, &repo);
    let store = store_of(&repo, &schema);
    let offered = eventually(Duration::from_secs(60), || {
        matches!(store.latest_mission(), Ok(Some(mission))
            if store.work_units(&mission.id).is_ok_and(|units| units.len() >= 2))
    })
    .await;
    assert!(offered, "the commander offered its first units");
    // SIGTERM, as `orchestrator cancel` does.
    let stopped = stop(running).await;
    assert_eq!(stopped.code, Some(3), "{}\n{}", stopped.stdout, stopped.stderr);

    // A worker now finds nothing to take: nobody leads the mission.
    let late = orchestrator_store::Holder {
        id: "late".into(),
        host: "h".into(),
    };
    let claimed = store
        .claim_units(&late, 10, Duration::from_secs(600))
        .expect("claims");
    assert!(claimed.is_empty(), "{claimed:?}");

    // The resume offers them again; a worker builds them.
    let hosts = tempfile::tempdir().expect("tempdir");
    let w1 = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    let resumed = resume_on(&schema, &server, &repo, &[]).await;
    let w1 = stop(w1).await;
    assert_sealed_once(&resumed, &repo, &w1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_budget_spent_on_another_host_stops_a_workers_unit_and_the_commander() {
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let budget: u64 = 1_000_000;
    let store = store_of(&repo, &schema);
    let scripted = ScriptedMission::new(script());
    let spent_elsewhere = Arc::new(AtomicBool::new(false));
    let brain = {
        let spent_elsewhere = spent_elsewhere.clone();
        move |request: &SeenRequest| {
            if worker_unit(request).as_deref() != Some("a") || spent_elsewhere.swap(true, Ordering::SeqCst) {
                return scripted.respond(request);
            }
            // Another host (as far as this worker knows) spends the whole budget while unit a's
            // worker is at its first turn; the worker's command then gives every host time to
            // read the store's total before the worker's next turn.
            let mission = store
                .latest_mission()
                .expect("the store reads")
                .expect("a mission");
            store
                .add_spend(&mission.id, budget)
                .expect("the spend is recorded");
            Reply::ToolCalls {
                text: String::new(),
                calls: vec![("bash".into(), r#"{"command": "sleep 3"}"#.into())],
            }
        }
    };
    let server = FakeServer::start(brain, FakeOptions::default())
        .await
        .expect("fake model server starts");
    let hosts = tempfile::tempdir().expect("tempdir");
    let running = start(
        commander(&schema, &remote)
            .arg("--budget-tokens")
            .arg(&budget.to_string()),
        &server,
        &repo,
    );
    let w1 = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    let done = finish(running).await;
    assert!(spent_elsewhere.load(Ordering::SeqCst), "unit a reached a worker");
    assert_eq!(done.code, Some(1), "{}\n{}", done.stdout, done.stderr);
    assert!(
        done.stdout.contains("the token budget is spent"),
        "{}",
        done.stdout
    );
    until_nothing_held(&repo, &schema, Duration::from_secs(30)).await;
    stop(w1).await;
    // Unit a's worker stopped at its next turn: the budget it was offered with had room left, but
    // every host together had spent it.
    let a_turns = server
        .requests()
        .iter()
        .filter(|r| worker_unit(r).as_deref() == Some("a"))
        .count();
    assert_eq!(a_turns, 1, "unit a's worker went on calling the model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_cancelled_commanders_units_are_given_back_by_their_workers_and_the_resume_seals() {
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    // Unit a's first worker turn runs a command long enough for the commander to be cancelled in
    // the middle of it.
    let (server, a_started) = with_a_slow_first_turn().await;
    let hosts = tempfile::tempdir().expect("tempdir");
    let running = start(commander(&schema, &remote), &server, &repo);
    let w1 = start(
        worker(&schema, "host-w1", &hosts.path().join("w1")),
        &server,
        &repo,
    );
    assert!(
        eventually(Duration::from_secs(60), || a_started.load(Ordering::SeqCst)).await,
        "unit a reached the worker"
    );
    // SIGTERM, as `orchestrator cancel` does.
    let stopped = stop(running).await;
    assert_eq!(stopped.code, Some(3), "{}\n{}", stopped.stdout, stopped.stderr);

    // The worker gives unit a back at its next heartbeat (leases of 2 s), long before its command
    // would have ended, and calls the model no more for it.
    assert!(
        until_nothing_held(&repo, &schema, Duration::from_secs(10)).await,
        "the worker still holds a unit of the stopped mission"
    );
    let a_turns = |server: &FakeServer| {
        server
            .requests()
            .iter()
            .filter(|r| worker_unit(r).as_deref() == Some("a"))
            .count()
    };
    assert_eq!(a_turns(&server), 1, "unit a's worker went on");

    // The resume offers the units again; the same worker builds them.
    let resumed = resume_on(&schema, &server, &repo, &[]).await;
    let w1 = stop(w1).await;
    assert_sealed_once(&resumed, &repo, &w1);
    assert!(a_turns(&server) > 1, "unit a was built after the resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_pause_the_endpoint_asked_of_one_worker_holds_the_other_workers_calls() {
    use std::sync::Mutex;
    use std::time::Instant;

    const PAUSE: Duration = Duration::from_secs(10);
    let schema = fresh_schema();
    let remote = SharedRemote::new();
    let repo = TestRepo::new(&[("orchestrator.toml", CONFIG)]);
    let scripted = ScriptedMission::new(script());
    // Every worker turn of a and b, by unit, as it reached the server; and when a was told to wait.
    let turns: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let paused_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let brain = {
        let (turns, paused_at) = (turns.clone(), paused_at.clone());
        move |request: &SeenRequest| {
            let Some(unit) = worker_unit(request).filter(|u| u == "a" || u == "b") else {
                return scripted.respond(request);
            };
            let now = Instant::now();
            let mut turns = turns.lock().expect("turns");
            let b_turns = turns.iter().filter(|(_, u)| u == "b").count();
            turns.push((now, unit.clone()));
            let mut paused = paused_at.lock().expect("pause");
            // Once b's worker calls steadily, a's worker (another host) is told to wait.
            if unit == "a" && paused.is_none() && b_turns >= 2 {
                *paused = Some(now);
                return Reply::Error {
                    status: 429,
                    body: "slow down".into(),
                    retry_after: Some(PAUSE),
                };
            }
            // Each worker calls the model every second or so, until the test stops it.
            let n = turns.len();
            Reply::ToolCalls {
                text: String::new(),
                calls: vec![("bash".into(), format!(r#"{{"command": "sleep 1 # {n}"}}"#))],
            }
        }
    };
    let server = FakeServer::start(brain, FakeOptions::default())
        .await
        .expect("fake model server starts");
    let hosts = tempfile::tempdir().expect("tempdir");
    let one_slot = |host: &str| {
        Run::cmd(&["worker", "--slots", "1", "--lease-secs", "2"])
            .arg("--workdir")
            .arg(hosts.path().join(host).to_str().expect("utf-8 path"))
            .arg("--store")
            .arg(&schema.url)
            .env("ORCHESTRATOR_HOST", host)
    };
    let running = start(commander(&schema, &remote), &server, &repo);
    let w1 = start(one_slot("host-w1"), &server, &repo);
    let w2 = start(one_slot("host-w2"), &server, &repo);

    // Wait for the pause, then for b's calls to come back after it.
    let resumed_after = PAUSE + Duration::from_secs(8);
    let seen_again = eventually(Duration::from_secs(60), || {
        let paused = *paused_at.lock().expect("pause");
        paused.is_some_and(|at| {
            let turns = turns.lock().expect("turns");
            turns.iter().any(|(t, u)| u == "b" && *t > at + PAUSE) || at.elapsed() > resumed_after
        })
    })
    .await;
    let _ = stop(running).await;
    stop(w1).await;
    stop(w2).await;
    let at = paused_at
        .lock()
        .expect("pause")
        .expect("a's worker was told to wait while b's called");
    assert!(seen_again, "b's calls never came back");
    let b: Vec<Duration> = turns
        .lock()
        .expect("turns")
        .iter()
        .filter(|(_, u)| u == "b")
        .filter_map(|(t, _)| t.checked_duration_since(at))
        .collect();
    // b's worker heard of the pause within a second or two (it reads the store every second), and
    // made no call from then until the pause was over; then it called again.
    let inside: Vec<&Duration> = b
        .iter()
        .filter(|d| **d > Duration::from_secs(3) && **d < PAUSE - Duration::from_secs(1))
        .collect();
    assert!(inside.is_empty(), "b's worker called during a's pause: {b:?}");
    assert!(b.iter().any(|d| *d >= PAUSE - Duration::from_secs(1)), "{b:?}");
}
