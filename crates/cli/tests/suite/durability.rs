//! Durability: the real binary is killed (SIGKILL) at many points of a mission and resumed; every run
//! must end sealed with the same tree, and no unit merged before the kill may be worked on again.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::support::*;
use orchestrator_fake_model::script::{role_of, worker_unit, PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeOptions, FakeServer, Reply, SeenRequest};

pub(super) type Trigger = Box<dyn Fn(&SeenRequest) -> bool + Send + Sync>;

/// Four scouts, as every mission had before scouting scaled with the repository's size.
const FOUR_SCOUTS: &str = "[verify]\ntest = \"true\"\n[limits]\nscouts = 4\n";

/// Plays the script, but the first request matching `when` kills the orchestrator process instead.
struct Crash {
    inner: Box<dyn Brain>,
    pid: Arc<AtomicI32>,
    when: Trigger,
    fired: AtomicBool,
    fired_at: Arc<AtomicU64>,
}

impl Brain for Crash {
    fn respond(&self, request: &SeenRequest) -> Reply {
        let pid = self.pid.load(Ordering::SeqCst);
        if pid > 0 && !self.fired.load(Ordering::SeqCst) && (self.when)(request) {
            self.fired.store(true, Ordering::SeqCst);
            self.fired_at.store(request.seq, Ordering::SeqCst);
            // SAFETY: signals the orchestrator child process this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Reply::Hang;
        }
        self.inner.respond(request)
    }
}

pub(super) fn script() -> Script {
    Script {
        plan: vec![
            PlanUnit::new("a", "A", "FILE a.txt := a\\n", &[]),
            PlanUnit::new("b", "B", "FILE b.txt := b\\n\nFILE b2.txt := b2\\n", &[]),
            PlanUnit::new("c", "C", "FILE c.txt := c\\n", &["a"]),
        ],
        ..Script::default()
    }
}

const FILES: [(&str, &str); 4] = [
    ("a.txt", "a\n"),
    ("b.txt", "b\n"),
    ("b2.txt", "b2\n"),
    ("c.txt", "c\n"),
];

fn unit_of(request: &SeenRequest) -> Option<String> {
    worker_unit(request).or_else(|| {
        request
            .first_user_text()
            .lines()
            .find_map(|l| l.strip_prefix("# The unit under review: "))
            .and_then(|l| l.split(" — ").next())
            .map(str::to_string)
    })
}

/// Runs `task` under a fake model that kills it (SIGKILL) at the first request matching `when`;
/// returns the server (it goes on serving the script) and the sequence number of that request.
pub(super) async fn crash_then_resume(when: Trigger, script: Script, repo: &TestRepo) -> (FakeServer, u64) {
    crash_playing(when, ScriptedMission::new(script), repo).await
}

/// [`crash_then_resume`] with the model played by `inner` (before and after the kill).
pub(super) async fn crash_playing(when: Trigger, inner: impl Brain, repo: &TestRepo) -> (FakeServer, u64) {
    crash_running(when, inner, repo, Run::task("Crash and resume")).await
}

/// [`crash_playing`] with the first run's command given (its flags, its store).
pub(super) async fn crash_running(
    when: Trigger,
    inner: impl Brain,
    repo: &TestRepo,
    run: Run,
) -> (FakeServer, u64) {
    let pid = Arc::new(AtomicI32::new(0));
    let fired_at = Arc::new(AtomicU64::new(u64::MAX));
    let brain = Crash {
        inner: Box::new(inner),
        pid: pid.clone(),
        when,
        fired: AtomicBool::new(false),
        fired_at: fired_at.clone(),
    };
    let options = FakeOptions {
        latency: Duration::from_millis(20),
        ..FakeOptions::default()
    };
    let server = FakeServer::start(brain, options).await.expect("fake server");
    let child = run
        .openai(&server)
        .command(repo)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("binary starts");
    pid.store(child.id().expect("pid") as i32, Ordering::SeqCst);
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the first run ends")
        .expect("waits")
        .status;
    assert_eq!(
        status.code(),
        None,
        "the first run must die by the signal (the trigger never fired?)"
    );
    (server, fired_at.load(Ordering::SeqCst))
}

async fn resume(repo: &TestRepo, server: &FakeServer) -> Finished {
    Run::cmd(&["resume", "--json"]).openai(server).run(repo).await
}

/// Units the store shows as passed after the kill.
async fn passed_units(repo: &TestRepo) -> Vec<String> {
    let status = Run::cmd(&["status", "--json"]).run(repo).await;
    status.assert_code(0);
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    report["units"]
        .as_array()
        .map(|units| {
            units
                .iter()
                .filter(|u| u["state"] == "passed")
                .filter_map(|u| u["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Kills the mission when `when` first matches, checks that `merged` had passed by then, resumes.
async fn check_crash_point(name: &str, when: Trigger, merged: &[&str]) -> FakeServer {
    let repo = TestRepo::new(&[]);
    let (server, fired_at) = crash_then_resume(when, script(), &repo).await;
    assert_ne!(fired_at, u64::MAX, "{name}: the trigger fired");
    let merged_before = passed_units(&repo).await;
    for unit in merged {
        assert!(
            merged_before.iter().any(|u| u == unit),
            "{name}: {unit} had merged: {merged_before:?}"
        );
    }
    let done = resume(&repo, &server).await;
    done.assert_code(0);
    for (path, content) in FILES {
        assert_eq!(
            repo.read(path).as_deref(),
            Some(content),
            "{name}: {path} on the user's branch"
        );
    }
    let rerun: Vec<String> = server
        .requests()
        .iter()
        .filter(|r| r.seq > fired_at && matches!(role_of(r), "worker" | "reviewer"))
        .filter_map(unit_of)
        .filter(|u| merged_before.contains(u))
        .collect();
    assert!(
        rerun.is_empty(),
        "{name}: merged units {merged_before:?} were worked on again: {rerun:?}"
    );
    assert_eq!(
        repo.worktrees().len(),
        1,
        "{name}: worktrees left: {:?}",
        repo.worktrees()
    );
    let branches: Vec<String> = repo
        .branches()
        .into_iter()
        .filter(|b| b.starts_with("orchestrator/"))
        .collect();
    // The resumed mission ended sealed and applied, so its branches went with it.
    assert_eq!(branches, Vec::<String>::new(), "{name}: no mission branch stays");
    assert_eq!(repo.git(&["status", "--porcelain"]), "", "{name}");
    server
}

fn role_is(role: &'static str) -> impl Fn(&SeenRequest) -> bool {
    move |r| role_of(r) == role
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_the_plan() {
    check_crash_point("before plan", Box::new(role_is("planner")), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_the_plan() {
    check_crash_point("after plan", Box::new(role_is("worker")), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_worker() {
    let when = |r: &SeenRequest| {
        role_of(r) == "worker" && worker_unit(r).as_deref() == Some("b") && r.assistant_turns() >= 1
    };
    let server = check_crash_point("mid worker", Box::new(when), &[]).await;
    // The interrupted worker continued its stored conversation instead of starting over.
    let fresh_starts = requests_of(&server, "worker")
        .iter()
        .filter(|r| worker_unit(r).as_deref() == Some("b") && r.assistant_turns() == 0)
        .count();
    assert_eq!(fresh_starts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_review_after_a_merge() {
    let when = |r: &SeenRequest| role_of(r) == "reviewer" && unit_of(r).as_deref() == Some("c");
    check_crash_point("mid review", Box::new(when), &["a"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_stage_2() {
    check_crash_point("stage 2", Box::new(role_is("master_reviewer")), &["a", "b", "c"]).await;
}

/// A kill while git held a ref or an index leaves its `.lock` file; resume clears those of the
/// mission (and says so) and seals, and leaves the user's own locks alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_git_locks_from_the_kill_are_cleared() {
    let repo = TestRepo::new(&[]);
    let (server, _) = crash_then_resume(Box::new(role_is("worker")), script(), &repo).await;
    let status = Run::cmd(&["status", "--json"]).run(&repo).await;
    let report: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    let mission = report["mission"].as_str().expect("mission id").to_string();
    let git = repo.path().join(".git");
    let planted = [
        git.join(format!("refs/heads/orchestrator/{mission}/u/b.lock")),
        git.join(format!("refs/heads/orchestrator/{mission}/integration.lock")),
    ];
    let users = git.join("refs/heads/user-topic.lock");
    for path in planted.iter().chain([&users]) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, "").expect("plant a lock");
    }
    let done = resume(&repo, &server).await;
    done.assert_code(0);
    for (path, content) in FILES {
        assert_eq!(repo.read(path).as_deref(), Some(content), "{path}");
    }
    assert!(users.exists(), "the user's lock stays");
    let logs = Run::cmd(&["logs"]).run(&repo).await;
    assert!(
        logs.stdout.contains("lock file(s) that the interrupted run left"),
        "{}",
        logs.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_merge_conflict() {
    let repo = TestRepo::new(&[("shared.txt", "original\n")]);
    let script = Script {
        plan: vec![
            PlanUnit::new("left", "Left", "FILE shared.txt := left\\n", &[]),
            PlanUnit::new("right", "Right", "FILE shared.txt := right\\n", &[]),
        ],
        ..Script::default()
    };
    let (server, _) = crash_then_resume(Box::new(role_is("conflict_resolver")), script, &repo).await;
    let done = resume(&repo, &server).await;
    done.assert_code(0);
    let shared = repo.read("shared.txt").expect("shared.txt");
    assert!(
        shared.contains("left") && shared.contains("right") && !shared.contains("<<<<<<<"),
        "{shared}"
    );
    assert_eq!(repo.worktrees().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_many_moments_of_a_spawning_mission() {
    // Kill at the n-th model request for several n: whatever the moment, resume ends sealed.
    for n in [3u64, 7, 11, 15] {
        // Four scouts (a tiny repository would get one): the kill moments fall where they always did.
        let repo = TestRepo::new(&[("orchestrator.toml", FOUR_SCOUTS)]);
        let script = Script {
            plan: vec![
                PlanUnit::new(
                    "p",
                    "Parent",
                    "SPAWN kid :: FILE kid.txt := kid\nFILE parent.txt := parent",
                    &[],
                ),
                PlanUnit::new("q", "Q", "FILE q.txt := q", &[]),
            ],
            ..Script::default()
        };
        let (server, fired_at) =
            crash_then_resume(Box::new(move |r: &SeenRequest| r.seq >= n), script, &repo).await;
        assert_ne!(fired_at, u64::MAX);
        let done = resume(&repo, &server).await;
        done.assert_code(0);
        for (path, content) in [("kid.txt", "kid"), ("parent.txt", "parent"), ("q.txt", "q")] {
            assert_eq!(
                repo.read(path).as_deref(),
                Some(content),
                "kill at request {n}: {path}"
            );
        }
        assert_eq!(repo.worktrees().len(), 1, "kill at request {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_leaves_nothing_behind_and_resume_completes() {
    let repo = TestRepo::new(&[]);
    let options = FakeOptions {
        latency: Duration::from_millis(300),
        ..FakeOptions::default()
    };
    let server = FakeServer::start(ScriptedMission::new(script()), options)
        .await
        .expect("fake server");
    let first = Run::task("Cancelled mission").openai(&server).run(&repo);
    let cancel = async {
        for _ in 0..400 {
            if !requests_of(&server, "worker").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Run::cmd(&["cancel"]).run(&repo).await
    };
    let (first, cancelled) = tokio::join!(first, cancel);
    cancelled.assert_code(0);
    assert!(cancelled.stdout.contains("stopped"), "{}", cancelled.stdout);
    first.assert_code(3);
    assert_eq!(
        repo.worktrees().len(),
        1,
        "no worktree after cancel: {:?}",
        repo.worktrees()
    );
    assert!(
        !first.stderr.contains("Ctrl-C again"),
        "a stop asked by `cancel` offers no Ctrl-C: {}",
        first.stderr
    );
    // The interrupted mission's branches are resume's work: `clean` keeps them and says how to go on.
    let before = repo.branches();
    let clean = Run::cmd(&["clean"]).run(&repo).await;
    clean.assert_code(0);
    assert!(
        clean.stdout.contains("kept mission") && clean.stdout.contains("orchestrator resume"),
        "{}",
        clean.stdout
    );
    assert_eq!(repo.branches(), before);
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    let status = Run::cmd(&["status"]).run(&repo).await;
    assert!(
        status
            .stdout
            .contains("— interrupted (`orchestrator resume` continues it)"),
        "{}",
        status.stdout
    );
    let done = resume(&repo, &server).await;
    done.assert_code(0);
    for (path, content) in FILES {
        assert_eq!(repo.read(path).as_deref(), Some(content));
    }
    let branches: Vec<String> = repo
        .branches()
        .into_iter()
        .filter(|b| b.starts_with("orchestrator/"))
        .collect();
    assert_eq!(
        branches,
        Vec::<String>::new(),
        "sealed and applied: no mission branch stays"
    );
    let again = resume(&repo, &server).await;
    again.assert_code(2);
    assert!(again.stderr.contains("nothing to resume"), "{}", again.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_tree_sessions_and_evidence() {
    let repo = TestRepo::new(&[("orchestrator.toml", FOUR_SCOUTS)]);
    let server = fake(script()).await;
    Run::task("Status")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    let human = Run::cmd(&["status"]).run(&repo).await;
    human.assert_code(0);
    assert!(
        human.stdout.contains("— sealed (phase finished"),
        "{}",
        human.stdout
    );
    assert!(human.stdout.contains("[x] c C — passed"), "{}", human.stdout);
    assert!(
        human.stdout.contains("integration test: `true` → exit 0"),
        "{}",
        human.stdout
    );
    let json = Run::cmd(&["status", "--json"]).run(&repo).await;
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(report["outcome"], "sealed");
    assert_eq!(report["units"].as_array().map(Vec::len), Some(3));
    assert!(report["usage"]["input_tokens"].as_u64().unwrap_or(0) > 0);
    assert!(report["sessions"].as_array().is_some_and(|s| s.len() >= 10));
    assert_eq!(report["units"][0]["evidence"][0]["exit_code"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_store_gives_a_clear_error() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    Run::task("First").openai(&server).run(&repo).await.assert_code(0);
    std::fs::write(
        repo.path().join(".orchestrator/state.db"),
        b"garbage garbage garbage garbage garbage garbage",
    )
    .unwrap();
    let _ = std::fs::remove_file(repo.path().join(".orchestrator/state.db-wal"));
    for command in ["status", "resume", "logs"] {
        let out = Run::cmd(&[command]).openai(&server).run(&repo).await;
        assert_eq!(out.code, Some(2), "{command}: {}", out.stderr);
        assert!(
            out.stderr.contains("damaged") && out.stderr.contains("move it aside"),
            "{command}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{command}: {}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_key_never_reaches_the_store() {
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    let secret = "sk-test-very-secret-key-123";
    Run::task(&format!("Use key {secret} nowhere"))
        .env("OPENAI_BASE_URL", &server.openai_base_url())
        .env("OPENAI_API_KEY", secret)
        .run(&repo)
        .await
        .assert_code(0);
    for entry in std::fs::read_dir(repo.path().join(".orchestrator"))
        .unwrap()
        .flatten()
    {
        if entry.path().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{:?} holds the key",
                entry.path()
            );
        }
    }
}

/// After a resume, progress lines count the whole mission (units merged before the kill included),
/// not only what this run touches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_after_resume_counts_the_whole_mission() {
    let repo = TestRepo::new(&[]);
    let when = |r: &SeenRequest| role_of(r) == "reviewer" && unit_of(r).as_deref() == Some("c");
    let (server, _) = crash_then_resume(Box::new(when), script(), &repo).await;
    let done = Run::cmd(&["resume", "--plain"]).openai(&server).run(&repo).await;
    done.assert_code(0);
    let last = done
        .stderr
        .lines()
        .rfind(|l| l.contains(" · units "))
        .unwrap_or_default();
    assert!(last.contains("units 3/3 done"), "{}", done.stderr);
}

/// A scout that lists the same folder over and over, as small models do; the crash trigger still fires
/// first, and everything else plays the script.
struct LoopingScout(Crash);

impl Brain for LoopingScout {
    fn respond(&self, request: &SeenRequest) -> Reply {
        match self.0.respond(request) {
            Reply::Hang => Reply::Hang,
            _ if role_of(request) == "scout" => Reply::ToolCalls {
                text: String::new(),
                calls: vec![("list".into(), "{}".into())],
            },
            other => other,
        }
    }
}

/// A kill does not hand a looping session a fresh turn allowance: the resumed scout goes on with what
/// its interrupted run left of `max_turns`, not with all of it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_scout_continues_its_turn_budget() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nscouts = 1\n[roles.scout]\nmax_turns = 5\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let pid = Arc::new(AtomicI32::new(0));
    let crash = Crash {
        inner: Box::new(ScriptedMission::new(script())),
        pid: pid.clone(),
        when: Box::new(|r: &SeenRequest| role_of(r) == "scout" && r.assistant_turns() >= 3),
        fired: AtomicBool::new(false),
        fired_at: Arc::new(AtomicU64::new(u64::MAX)),
    };
    let server = FakeServer::start(LoopingScout(crash), FakeOptions::default())
        .await
        .expect("fake server");
    let child = Run::task("Crash and resume")
        .openai(&server)
        .command(&repo)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("binary starts");
    pid.store(child.id().expect("pid") as i32, Ordering::SeqCst);
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("the first run ends")
        .expect("waits")
        .status;
    assert_eq!(status.code(), None, "the first run dies by the signal");
    let before = requests_of(&server, "scout").len();
    assert_eq!(before, 4, "three answered turns, then the call the kill cut");
    resume(&repo, &server).await.assert_code(0);
    let after = requests_of(&server, "scout").len() - before;
    assert_eq!(after, 2, "the resumed scout had 5 - 3 turns left, not 5");
}
