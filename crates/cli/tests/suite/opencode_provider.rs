//! `--provider opencode`: a whole mission whose sessions run on the real OpenCode (OPENCODE_BIN,
//! installed by .ci/run), offline, with the scripted fake model server as OpenCode's
//! OpenAI-compatible provider. Ignored when OPENCODE_BIN was unset at build time (see build.rs).

use std::path::Path;

use super::support::*;
use orchestrator_fake_model::script::{role_of, PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeOptions, FakeServer, Reply, SeenMessage, SeenRequest};
use orchestrator_test_support::opencode::{
    bin as opencode_bin, offline_env, write_global_config, FakeProvider, REMOVED_ENV,
};

/// The scripted mission for our sessions; OpenCode's own title requests (no tools) get a title.
fn brain(script: Script) -> impl Brain {
    let mission = ScriptedMission::new(script);
    move |request: &SeenRequest| {
        if request.tools.is_empty()
            && !request.system.starts_with("You condense")
            && role_of(request).is_empty()
        {
            return Reply::Text("Orchestrator session".into());
        }
        mission.respond(request)
    }
}

/// OpenCode's global config in the test's HOME: the fake server as its provider (with a price, so
/// OpenCode reports a cost), and every permission granted (a headless session has nobody to ask).
fn write_opencode_config(home: &Path, server: &FakeServer) {
    let config = FakeProvider {
        base_url: &server.openai_base_url(),
        model: MODEL,
        cost: Some((1, 2)),
        headless: true,
    };
    write_global_config(home, "opencode.json", &config.config());
}

/// `orchestrator task --provider opencode`, with OpenCode offline and all its folders in the test's HOME.
fn opencode_task(bin: &Path, repo: &TestRepo, objective: &str) -> Run {
    offline(
        bin,
        repo,
        Run::task(objective)
            .arg("--provider")
            .arg("opencode")
            .arg("--json"),
    )
}

/// OpenCode's environment: the binary, offline, every folder it writes in the test's HOME (the
/// orchestrator passes its environment on to the OpenCode it starts).
fn offline(bin: &Path, repo: &TestRepo, run: Run) -> Run {
    let mut run = run.env("OPENCODE_BIN", &bin.to_string_lossy());
    for (key, value) in offline_env(repo.home()) {
        run = run.env(key, &value);
    }
    for key in REMOVED_ENV {
        run = run.without_env(key);
    }
    run.without_env("OPENCODE_SERVER_PASSWORD")
}

/// Processes whose command line names opencode and whose environment has this HOME.
fn opencode_processes(home: &Path) -> Vec<String> {
    let wanted = format!("HOME={}", home.display());
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains("opencode") {
            continue;
        }
        let Ok(environ) = std::fs::read(dir.join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == wanted.as_bytes()) {
            found.push(format!("{}: {cmdline}", dir.display()));
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    opencode_missing,
    ignore = "needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"
)]
async fn a_mission_with_several_units_runs_on_opencode_and_ends_sealed() {
    let bin = opencode_bin();
    // A nested instruction file: OpenCode reads none below its working folder, so only the
    // orchestrator's "Project instructions" block can bring it (issue #18).
    // A top-level one: OpenCode gives it to its sessions itself, so the block must not repeat it.
    let repo = TestRepo::new(&[
        ("docs/AGENTS.md", "DOCS-RULE: one sentence per line.\n"),
        ("AGENTS.md", "ROOT-RULE: tabs, not spaces.\n"),
    ]);
    let script = Script {
        plan: vec![
            PlanUnit::file("a", "a.txt", "alpha"),
            PlanUnit::file("b", "b.txt", "beta"),
            PlanUnit::new("c", "Create c.txt", "FILE c.txt := gamma", &["a", "b"]),
        ],
        ..Default::default()
    };
    let server = FakeServer::start(brain(script), FakeOptions::default())
        .await
        .expect("the fake model server starts");
    write_opencode_config(repo.home(), &server);

    let done = opencode_task(&bin, &repo, "Write three files").run(&repo).await;
    done.assert_code(0);

    let files = repo.files_on_main();
    for (file, content) in [("a.txt", "alpha"), ("b.txt", "beta"), ("c.txt", "gamma")] {
        assert!(files.contains(&file.to_string()), "{file} on main: {files:?}");
        assert_eq!(repo.show(&format!("main:{file}")), content);
    }
    assert_eq!(
        repo.worktrees().len(),
        1,
        "only the main worktree is left: {:?}",
        repo.worktrees()
    );
    // Every session ran on OpenCode, and OpenCode's usage and cost were reported.
    let calls = done.events_of("model_call");
    assert!(!calls.is_empty(), "{}", done.stdout);
    assert!(
        calls
            .iter()
            .any(|c| c["cost_usd"].as_f64().is_some_and(|c| c > 0.0)),
        "OpenCode's cost is reported: {calls:?}"
    );
    let reviews: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| role_of(r) == "reviewer")
        .collect();
    assert!(
        reviews
            .iter()
            .any(|r| r.tools.iter().any(|t| t.ends_with("_submit_review"))),
        "reviewers got submit_review through the bridge"
    );
    assert!(
        reviews.iter().all(|r| !r.offers("write") && !r.offers("edit")),
        "reviewers cannot edit"
    );
    // Every session, whatever its role, was given the project instructions.
    for request in server.requests().iter().filter(|r| !role_of(r).is_empty()) {
        assert!(
            request
                .system
                .contains("## docs/AGENTS.md (for files under docs/)\n\nDOCS-RULE: one sentence per line."),
            "{}: {}",
            role_of(request),
            request.system
        );
        // Sessions working at the top of a checkout get the top-level file once, from OpenCode.
        let everything: String = request
            .messages
            .iter()
            .map(|m| format!("{m:?}"))
            .chain([request.system.clone()])
            .collect();
        assert!(
            everything.matches("ROOT-RULE").count() <= 1,
            "{}: the top-level AGENTS.md is sent twice: {}",
            role_of(request),
            request.system
        );
    }
    let workers: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| role_of(r) == "worker")
        .collect();
    assert!(
        workers.iter().all(|r| r.system.contains("ROOT-RULE")),
        "OpenCode gave the workers the top-level AGENTS.md itself"
    );
    // The server the mission started is gone with its process group.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let left = opencode_processes(repo.home());
    assert!(left.is_empty(), "opencode processes left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    opencode_missing,
    ignore = "needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"
)]
async fn a_cancelled_opencode_mission_leaves_nothing_running_and_resume_seals_it() {
    let bin = opencode_bin();
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![
            PlanUnit::file("a", "a.txt", "alpha"),
            PlanUnit::new("b", "Create b.txt", "FILE b.txt := beta", &["a"]),
        ],
        ..Default::default()
    };
    let options = FakeOptions {
        latency: std::time::Duration::from_millis(300),
        ..FakeOptions::default()
    };
    let server = FakeServer::start(brain(script), options)
        .await
        .expect("the fake model server starts");
    write_opencode_config(repo.home(), &server);

    let first = opencode_task(&bin, &repo, "Write two files").run(&repo);
    let cancel = async {
        for _ in 0..2400 {
            if server.requests().iter().any(|r| role_of(r) == "worker") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        Run::cmd(&["cancel"]).run(&repo).await
    };
    let (first, cancelled) = tokio::join!(first, cancel);
    cancelled.assert_code(0);
    first.assert_code(3);
    assert_eq!(repo.worktrees().len(), 1, "{:?}", repo.worktrees());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let left = opencode_processes(repo.home());
    assert!(left.is_empty(), "opencode processes left after cancel: {left:?}");

    let done = offline(&bin, &repo, Run::cmd(&["resume", "--json"]))
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.show("main:a.txt"), "alpha");
    assert_eq!(repo.show("main:b.txt"), "beta");
    // The interrupted worker's OpenCode session was re-attached: its history continues, with the
    // task given again after the interruption.
    let reattached = server.requests().iter().any(|r| {
        role_of(r) == "worker"
            && r.messages
                .iter()
                .filter(|m| matches!(m, SeenMessage::User { text } if text.contains("# Your unit: a")))
                .count()
                >= 2
    });
    assert!(
        reattached,
        "the worker's OpenCode session was re-attached on resume"
    );
    assert_eq!(repo.worktrees().len(), 1, "{:?}", repo.worktrees());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let left = opencode_processes(repo.home());
    assert!(left.is_empty(), "opencode processes left after resume: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    opencode_missing,
    ignore = "needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"
)]
async fn the_turn_limit_stops_an_opencode_prompt_while_it_runs() {
    let bin = opencode_bin();
    // One OpenCode prompt would run all eight steps of this worker; the limit is two turns. One
    // attempt in one round: a turn limit fails the attempt, and a retry would prompt again.
    let files: Vec<String> = (1..=8).map(|i| format!("FILE f{i}.txt := {i}")).collect();
    let config = "rounds = 1\n[roles.worker]\nmax_turns = 2\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let script = Script {
        plan: vec![PlanUnit::new("a", "Write eight files", &files.join("\n"), &[])],
        ..Default::default()
    };
    let options = FakeOptions {
        latency: std::time::Duration::from_millis(700),
        ..FakeOptions::default()
    };
    let server = FakeServer::start(brain(script), options)
        .await
        .expect("the fake model server starts");
    write_opencode_config(repo.home(), &server);

    let done = opencode_task(&bin, &repo, "Write eight files").run(&repo).await;
    let worker_steps = server
        .requests()
        .iter()
        .filter(|r| role_of(r) == "worker")
        .count();
    // Steps are counted as they complete (polled every second), so one or two more may start
    // before the abort lands; without the limit all nine would run.
    assert!(
        (2..=5).contains(&worker_steps),
        "the worker was stopped mid-prompt: {worker_steps} steps\n{}",
        done.stdout
    );
    let worker_end = done
        .events_of("session_finished")
        .into_iter()
        .find(|e| e["role"] == "worker")
        .expect("the worker session finished");
    assert_eq!(
        worker_end["ok"], false,
        "a turn limit is not a clean finish: {worker_end}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let left = opencode_processes(repo.home());
    assert!(left.is_empty(), "opencode processes left: {left:?}");
}

/// Runs without needing OpenCode: the preflight refuses with exit 2 and touches nothing.
#[tokio::test]
async fn an_opencode_url_that_does_not_answer_is_exit_2_with_nothing_touched() {
    let repo = TestRepo::new(&[]);
    let done = Run::task("Anything")
        .arg("--provider")
        .arg("opencode")
        .arg("--opencode-url")
        .arg("http://127.0.0.1:9")
        .without_env("OPENCODE_SERVER_PASSWORD")
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(done.stderr.contains("http://127.0.0.1:9"), "{}", done.stderr);
    assert!(done.stderr.contains("nothing was started"), "{}", done.stderr);
    assert!(!repo.path().join(".orchestrator").exists(), "nothing touched");
}

#[tokio::test]
async fn without_an_opencode_binary_the_provider_is_exit_2_with_nothing_touched() {
    let repo = TestRepo::new(&[]);
    // A PATH with git and no opencode.
    let bin = tempfile::tempdir().expect("tempdir");
    let git = std::process::Command::new("sh")
        .args(["-c", "command -v git"])
        .output()
        .expect("sh runs");
    let git = String::from_utf8_lossy(&git.stdout).trim().to_string();
    std::os::unix::fs::symlink(&git, bin.path().join("git")).expect("symlink git");
    let done = Run::task("Anything")
        .arg("--provider")
        .arg("opencode")
        .without_env("OPENCODE_BIN")
        .env("PATH", &bin.path().to_string_lossy())
        .run(&repo)
        .await;
    done.assert_code(2);
    assert!(done.stderr.contains("OPENCODE_BIN"), "{}", done.stderr);
    assert!(!repo.path().join(".orchestrator").exists(), "nothing touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    opencode_missing,
    ignore = "needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"
)]
async fn a_killed_orchestrator_takes_its_opencode_server_with_it() {
    let bin = opencode_bin();
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![PlanUnit::file("a", "a.txt", "alpha")],
        ..Default::default()
    };
    let options = FakeOptions {
        latency: std::time::Duration::from_millis(300),
        ..FakeOptions::default()
    };
    let server = FakeServer::start(brain(script), options)
        .await
        .expect("the fake model server starts");
    write_opencode_config(repo.home(), &server);
    let mut child = opencode_task(&bin, &repo, "Killed mid-mission")
        .command(&repo)
        .spawn()
        .expect("starts");
    for _ in 0..2400 {
        if server.requests().iter().any(|r| role_of(r) == "worker") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(
        !opencode_processes(repo.home()).is_empty(),
        "the mission's OpenCode server runs"
    );
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    let mut left = opencode_processes(repo.home());
    for _ in 0..40 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = opencode_processes(repo.home());
    }
    assert!(
        left.is_empty(),
        "opencode processes outlived a SIGKILLed orchestrator: {left:?}"
    );
    let done = offline(&bin, &repo, Run::cmd(&["resume"])).run(&repo).await;
    done.assert_code(0);
    assert_eq!(repo.show("main:a.txt"), "alpha");
}
