//! Steering live workers (issue #17): `orchestrator tell` from another process puts a message into
//! a unit's worker session before its next model call; it is logged as `user_message`, refused for
//! an unknown or finished unit or when too long, waits in the store while no process runs the
//! mission, and is delivered once across cancel and resume.
//!
//! A worker is held by a `BASH` directive that waits (bounded) for a gate file the test creates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::support::*;
use orchestrator_fake_model::script::{worker_unit, PlanUnit, Script};
use orchestrator_fake_model::{FakeServer, SeenMessage, SeenRequest};

/// A shell loop that returns once `gate` exists (at most about two minutes).
fn wait_for(gate: &Path) -> String {
    format!(
        "BASH for i in $(seq 1 2400); do [ -f {} ] && exit 0; sleep 0.05; done; exit 1",
        gate.display()
    )
}

fn open(gate: &Path) {
    std::fs::write(gate, "go").expect("the gate opens");
}

/// Waits (bounded) until `ready` holds for the fake model's requests.
async fn until(server: &FakeServer, what: &str, ready: impl Fn(&[SeenRequest]) -> bool) {
    for _ in 0..2400 {
        if ready(&server.requests()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

fn worker_requests(requests: &[SeenRequest], unit: &str) -> Vec<SeenRequest> {
    requests
        .iter()
        .filter(|r| worker_unit(r).as_deref() == Some(unit))
        .cloned()
        .collect()
}

/// How many user messages of the request contain `text`.
fn times_told(request: &SeenRequest, text: &str) -> usize {
    request
        .messages
        .iter()
        .filter(|m| matches!(m, SeenMessage::User { text: t } if t.contains(text)))
        .count()
}

async fn tell(repo: &TestRepo, args: &[&str]) -> Finished {
    let mut all = vec!["tell"];
    all.extend_from_slice(args);
    Run::cmd(&all).run(repo).await
}

async fn logged(repo: &TestRepo, kind: &str) -> Vec<Value> {
    let logs = Run::cmd(&["logs", "--json"]).run(repo).await;
    logs.assert_code(0);
    logs.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == kind)
        .collect()
}

struct Gates {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Gates {
    fn new() -> Gates {
        let dir = tempfile::tempdir().expect("a folder for the gates");
        let path = dir.path().to_path_buf();
        Gates { _dir: dir, path }
    }

    fn gate(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tell_reaches_a_live_worker_whose_next_request_carries_the_message() {
    let repo = TestRepo::new(&[]);
    let gates = Gates::new();
    let gate = gates.gate("a");
    let server = fake(Script {
        plan: vec![
            PlanUnit::new("a", "A", &format!("{}\nFILE a.txt := a\\n", wait_for(&gate)), &[]),
            PlanUnit::file("b", "b.txt", "b\\n"),
        ],
        ..Script::default()
    })
    .await;
    let mission = Run::task("Steer me").openai(&server).run(&repo);
    let steer = async {
        until(&server, "worker a asks the model", |r| {
            !worker_requests(r, "a").is_empty()
        })
        .await;
        // Unit b passes while a is held: a finished unit is refused.
        let mut b_passed = false;
        for _ in 0..2400 {
            let states = logged(&repo, "unit_state").await;
            if states.iter().any(|e| e["unit"] == "b" && e["state"] == "passed") {
                b_passed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(b_passed, "unit b passes while a is held");
        let finished = tell(&repo, &["b", "too late"]).await;
        finished.assert_code(2);
        assert!(
            finished.stderr.contains("finished (passed)"),
            "{}",
            finished.stderr
        );

        let unknown = tell(&repo, &["zz", "hello"]).await;
        unknown.assert_code(2);
        assert!(
            unknown.stderr.contains("no unit `zz`") && unknown.stderr.contains("running units: a"),
            "{}",
            unknown.stderr
        );
        let long = "x".repeat(5000);
        let too_long = tell(&repo, &["a", &long]).await;
        too_long.assert_code(2);
        assert!(
            too_long.stderr.contains("at most 4096 bytes"),
            "{}",
            too_long.stderr
        );
        let usage = tell(&repo, &["--all", "a", "two words"]).await;
        usage.assert_code(2);

        let told = tell(&repo, &["a", "Please use tabs,\u{1b}[31m not spaces."]).await;
        told.assert_code(0);
        assert!(
            told.stdout.contains("message for a of mission"),
            "{}",
            told.stdout
        );
        assert!(
            told.stdout.contains("before its next model call"),
            "{}",
            told.stdout
        );
        open(&gate);
    };
    let (done, ()) = tokio::join!(mission, steer);
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a\n"));

    let requests = worker_requests(&server.requests(), "a");
    let message = "Please use tabs,[31m not spaces.";
    assert_eq!(times_told(&requests[0], message), 0, "not before it was sent");
    let carrying: Vec<&SeenRequest> = requests.iter().filter(|r| times_told(r, message) > 0).collect();
    assert!(
        !carrying.is_empty(),
        "a later request of worker a carries the message"
    );
    assert!(
        carrying.iter().all(|r| times_told(r, message) == 1),
        "given once, and kept in the conversation"
    );
    assert!(
        carrying[0]
            .messages
            .iter()
            .any(|m| matches!(m, SeenMessage::User { text } if text.starts_with("Message from the user while you work:"))),
        "marked as the user's"
    );
    assert!(
        worker_requests(&server.requests(), "b")
            .iter()
            .all(|r| times_told(r, message) == 0),
        "only worker a is told"
    );
    let delivered = logged(&repo, "user_message").await;
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["unit"], "a");
    assert_eq!(delivered[0]["message"], message);
    let logs = Run::cmd(&["logs"]).run(&repo).await;
    assert!(
        logs.stdout
            .contains("a: your message reached its worker: Please use tabs"),
        "{}",
        logs.stdout
    );
    // The mission is over: nothing more to tell.
    let late = tell(&repo, &["a", "again"]).await;
    late.assert_code(2);
    assert!(late.stderr.contains("is sealed"), "{}", late.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tell_all_reaches_every_running_worker() {
    let repo = TestRepo::new(&[]);
    let gates = Gates::new();
    let gate = gates.gate("all");
    let held = |id: &str| {
        PlanUnit::new(
            id,
            &id.to_uppercase(),
            &format!("{}\nFILE {id}.txt := {id}\\n", wait_for(&gate)),
            &[],
        )
    };
    let server = fake(Script {
        plan: vec![held("a"), held("b")],
        ..Script::default()
    })
    .await;
    let mission = Run::task("Steer all").openai(&server).run(&repo);
    let steer = async {
        until(&server, "both workers ask the model", |r| {
            !worker_requests(r, "a").is_empty() && !worker_requests(r, "b").is_empty()
        })
        .await;
        let told = tell(&repo, &["--all", "Keep every line under 80 columns."]).await;
        told.assert_code(0);
        assert!(
            told.stdout.contains("message for a, b of mission"),
            "{}",
            told.stdout
        );
        open(&gate);
    };
    let (done, ()) = tokio::join!(mission, steer);
    done.assert_code(0);
    for unit in ["a", "b"] {
        let requests = worker_requests(&server.requests(), unit);
        assert!(
            requests
                .iter()
                .any(|r| times_told(r, "Keep every line under 80 columns.") == 1),
            "worker {unit} is told"
        );
    }
    let delivered = logged(&repo, "user_message").await;
    let mut units: Vec<&str> = delivered.iter().filter_map(|e| e["unit"].as_str()).collect();
    units.sort();
    assert_eq!(units, ["a", "b"]);
    // No worker runs any more.
    let none = tell(&repo, &["--all", "anyone?"]).await;
    none.assert_code(2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_waits_for_resume_and_is_delivered_once() {
    let repo = TestRepo::new(&[]);
    let gates = Gates::new();
    let (first, second) = (gates.gate("first"), gates.gate("second"));
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "A",
            &format!("{}\n{}\nFILE a.txt := a\\n", wait_for(&first), wait_for(&second)),
            &[],
        )],
        ..Script::default()
    })
    .await;
    let message = "The config lives in conf/, not etc/.";
    // Run 1: cancelled while the worker waits on the first gate.
    let run = Run::task("Steer across resume").openai(&server).run(&repo);
    let stop = async {
        until(&server, "worker a asks the model", |r| {
            !worker_requests(r, "a").is_empty()
        })
        .await;
        Run::cmd(&["cancel"]).run(&repo).await.assert_code(0);
    };
    let (done, ()) = tokio::join!(run, stop);
    done.assert_code(3);

    // No process runs the mission: the message waits in the store.
    let told = tell(&repo, &["a", message]).await;
    told.assert_code(0);
    assert!(told.stdout.contains("orchestrator resume"), "{}", told.stdout);
    // The inbox is bounded per unit.
    for _ in 1..16 {
        tell(&repo, &["a", "filler"]).await.assert_code(0);
    }
    let full = tell(&repo, &["a", "one too many"]).await;
    full.assert_code(2);
    assert!(
        full.stderr.contains("16 messages already wait"),
        "{}",
        full.stderr
    );

    // Run 2 delivers it before the worker's first model call, then is cancelled on the second gate.
    open(&first);
    let run = Run::cmd(&["resume"]).openai(&server).run(&repo);
    let stop = async {
        until(&server, "the resumed worker is told", |r| {
            worker_requests(r, "a").iter().any(|q| times_told(q, message) > 0)
        })
        .await;
        Run::cmd(&["cancel"]).run(&repo).await.assert_code(0);
    };
    let (done, ()) = tokio::join!(run, stop);
    done.assert_code(3);
    assert_eq!(logged(&repo, "user_message").await.len(), 16);

    // Run 3 finishes without giving it again.
    open(&second);
    Run::cmd(&["resume"])
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    let delivered = logged(&repo, "user_message").await;
    assert_eq!(
        delivered.iter().filter(|e| e["message"] == message).count(),
        1,
        "{delivered:?}"
    );
    let last = worker_requests(&server.requests(), "a")
        .pop()
        .expect("worker a's requests");
    assert_eq!(times_told(&last, message), 1, "once in the conversation");
    assert_eq!(repo.read("a.txt").as_deref(), Some("a\n"));
}

/// A message stored after the worker's last model call (here: while its unit is verified) cannot be
/// delivered; when the unit passes the log says so, and it does not wait in the inbox for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_worker_can_no_longer_read_is_said_to_be_undelivered() {
    let gates = Gates::new();
    let gate = gates.gate("verify");
    let config = format!(
        "[verify]\ntest = \"for i in $(seq 1 2400); do [ -f {} ] && exit 0; sleep 0.05; done; exit 1\"\n",
        gate.display()
    );
    let repo = TestRepo::new(&[("orchestrator.toml", &config)]);
    let server = fake(Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a\\n")],
        ..Script::default()
    })
    .await;
    let mission = Run::task("Steer me late").openai(&server).run(&repo);
    let steer = async {
        until(&server, "worker a asks the model", |r| {
            !worker_requests(r, "a").is_empty()
        })
        .await;
        let mut verifying = false;
        for _ in 0..2400 {
            let states = logged(&repo, "unit_state").await;
            if states
                .iter()
                .any(|e| e["unit"] == "a" && e["state"] == "verifying")
            {
                verifying = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(verifying, "unit a reaches verification");
        let told = tell(&repo, &["a", "Rename it to b."]).await;
        told.assert_code(0);
        open(&gate);
    };
    let (done, ()) = tokio::join!(mission, steer);
    done.assert_code(0);
    assert!(
        worker_requests(&server.requests(), "a")
            .iter()
            .all(|r| times_told(r, "Rename it to b.") == 0),
        "no worker request after the tell"
    );
    assert!(logged(&repo, "user_message").await.is_empty());
    let notices = logged(&repo, "notice").await;
    let undelivered: Vec<&Value> = notices
        .iter()
        .filter(|n| {
            n["message"]
                .as_str()
                .is_some_and(|m| m.contains("not delivered") && m.contains("Rename it to b."))
        })
        .collect();
    assert_eq!(undelivered.len(), 1, "{notices:?}");
    let said = undelivered[0]["message"].as_str().unwrap_or_default();
    assert!(said.contains("the message to a's worker"), "{said}");
}

/// Whether a user message of the request is candidate `n`'s brief.
fn is_candidate(request: &SeenRequest, n: u32) -> bool {
    let heading = format!("# Candidate {n} of 2");
    request
        .messages
        .iter()
        .any(|m| matches!(m, SeenMessage::User { text } if text.contains(&heading)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_candidate_of_a_best_of_n_unit_reads_a_message_once() {
    let repo = TestRepo::new(&[]);
    let gates = Gates::new();
    let gate = gates.gate("a");
    let wait = wait_for(&gate);
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "A",
            &format!(
                "CANDIDATE 1: {wait}\nCANDIDATE 1: FILE a.txt := one\\n\n\
                 CANDIDATE 2: {wait}\nCANDIDATE 2: FILE a.txt := two\\n\nPICK 2 it says two"
            ),
            &[],
        )],
        ..Script::default()
    })
    .await;
    let mission = Run::task("Steer both")
        .arg("--attempts")
        .arg("2")
        .openai(&server)
        .run(&repo);
    let steer = async {
        until(&server, "both candidates ask the model", |r| {
            let asked = worker_requests(r, "a");
            [1, 2].iter().all(|n| asked.iter().any(|q| is_candidate(q, *n)))
        })
        .await;
        tell(&repo, &["a", "Mind the tabs."]).await.assert_code(0);
        open(&gate);
    };
    let (done, ()) = tokio::join!(mission, steer);
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("two\n"));

    let requests = worker_requests(&server.requests(), "a");
    for n in [1, 2] {
        let carrying: Vec<&SeenRequest> = requests
            .iter()
            .filter(|r| is_candidate(r, n) && times_told(r, "Mind the tabs.") > 0)
            .collect();
        assert!(!carrying.is_empty(), "candidate {n} read the message");
        assert!(
            carrying.iter().all(|r| times_told(r, "Mind the tabs.") == 1),
            "candidate {n} read it once"
        );
    }
    let delivered = logged(&repo, "user_message").await;
    assert_eq!(delivered.len(), 2, "one delivery per candidate: {delivered:?}");
    let notices = logged(&repo, "notice").await;
    assert!(
        !notices.iter().any(|n| n["message"]
            .as_str()
            .is_some_and(|m| m.contains("was not delivered"))),
        "{notices:?}"
    );
}
