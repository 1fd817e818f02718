//! What a worker hears about its own change while it still works on it: with `[verify] after_write`
//! the tests run after each turn that changed a file and their result ends that turn's last tool
//! result, bounded in size and time whatever the tests print or do. A worker that answers with
//! nothing changed is sent back once; one that insists is taken.

use super::support::*;
use orchestrator_fake_model::script::{role_of, PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeServer, Reply, SeenMessage, SeenRequest};

/// How a tests-after-write note begins.
const NOTE: &str = "[The runtime ran the tests after this change:";

fn one_unit(directives: &str) -> Script {
    Script {
        plan: vec![PlanUnit::new("a", "Write a", directives, &[])],
        ..Script::default()
    }
}

/// How a send-back of an answer begins.
const SENT_BACK: &str = "Not taken as your answer yet";

/// The send-backs of answers in a request's conversation, in order.
fn sent_back(request: &SeenRequest) -> Vec<String> {
    request
        .messages
        .iter()
        .filter_map(|m| match m {
            SeenMessage::User { text } if text.starts_with(SENT_BACK) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// The `write` results the workers were shown.
fn write_results(server: &FakeServer) -> Vec<String> {
    tool_results(server)
        .into_iter()
        .filter(|(tool, _, _)| tool == "write")
        .map(|(_, content, _)| content)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_breaks_the_tests_is_told_at_once_and_one_that_passes_too() {
    let config =
        "[verify]\ntest = \"! grep -q broken a.txt\"\nafter_write = true\n[limits]\nunit_attempts = 2\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(one_unit("FILE a.txt := broken\nFIX a.txt := fixed")).await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let results = write_results(&server);
    let broken = results
        .iter()
        .find(|r| r.contains(NOTE) && r.contains("exit code: 1"))
        .unwrap_or_else(|| panic!("the failing tests were told after the write: {results:?}"));
    assert!(
        broken.contains("`! grep -q broken a.txt`") && broken.contains("Fix what fails"),
        "{broken}"
    );
    let fixed = results
        .iter()
        .find(|r| r.contains(NOTE) && r.contains("exit code: 0"))
        .unwrap_or_else(|| panic!("the passing tests were told after the fix: {results:?}"));
    assert!(fixed.contains("They pass"), "{fixed}");
    let runs = done
        .events_of("tool_called")
        .into_iter()
        .filter(|e| e["tool"] == "tests after write")
        .count();
    assert_eq!(runs, 2, "once after each writing turn");
    assert_eq!(repo.read("a.txt").as_deref(), Some("fixed"));
}

/// The note says which failures the change caused (tests that passed on the base commit) and names
/// files as the worker knows them, relative to its worktree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_note_names_tests_the_change_broke_and_paths_in_the_worktree() {
    let test = "if grep -q broken a.txt 2>/dev/null; then echo \"File $PWD/t.py, line 2\"; \
                echo 'FAIL: test_old (t.T.test_old)'; echo 'Ran 1 test in 0.001s'; exit 1; fi; \
                echo 'Ran 1 test in 0.001s'";
    let config = format!(
        "[verify]\ntest = \"{}\"\nafter_write = true\n[limits]\nunit_attempts = 2\n",
        test.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let repo = TestRepo::new(&[
        ("orchestrator.toml", &config),
        ("t.py", "class T:\n    def test_old(self):\n        pass\n"),
    ]);
    let server = fake(one_unit("FILE a.txt := broken\nFIX a.txt := fine")).await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let results = write_results(&server);
    let note = results
        .iter()
        .find(|r| r.contains(NOTE) && r.contains("exit code: 1"))
        .unwrap_or_else(|| panic!("{results:?}"));
    assert!(
        note.contains("passed on the mission's base commit") && note.contains("`test_old (t.T.test_old)`"),
        "{note}"
    );
    assert!(note.contains("File t.py, line 2"), "{note}");
    assert!(!note.contains(".orchestrator/"), "{note}");
}

/// A pass that did not run the tests the change added is not called a pass: the note says which
/// tests are not collected (a `def test_…` outside the class, as the field's 1.5B wrote it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_note_says_when_added_tests_did_not_run() {
    let config = "[verify]\ntest = \"echo 'Ran 1 test in 0.001s'\"\nafter_write = true\n\
                  [limits]\nunit_attempts = 1\n";
    let base = "class T:\n    def test_old(self):\n        pass\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config), ("t.py", base)]);
    let added = "FILE t.py := def test_new(self):\\n    pass\\n\\n\\nclass T:\\n    def test_old(self):\\n        pass\\n";
    let server = fake(one_unit(added)).await;
    let _ = Run::task("Write a")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    let results = write_results(&server);
    let note = results
        .iter()
        .find(|r| r.contains(NOTE))
        .unwrap_or_else(|| panic!("{results:?}"));
    assert!(
        note.contains("exit code: 0") && note.contains("test_new (t.py)") && note.contains("are not run"),
        "{note}"
    );
    assert!(
        note.contains("Fix that, then answer.") && !note.contains("They pass"),
        "{note}"
    );
}

/// The same for a new test file beside the one the command runs, before the runtime has committed
/// it (the field's 1.5B wrote `test_calc_mul.py` beside `test_calc.py`, run as
/// `python3 test_calc.py`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_note_says_when_a_new_test_file_is_not_run() {
    let config = "[verify]\ntest = \"echo 'Ran 1 test in 0.001s'\"\nafter_write = true\n\
                  [limits]\nunit_attempts = 1\n";
    let base = "class T:\n    def test_old(self):\n        pass\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config), ("test_t.py", base)]);
    let added = "FILE test_new.py := class N:\\n    def test_new(self):\\n        pass\\n";
    let server = fake(one_unit(added)).await;
    let _ = Run::task("Write a")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    let results = write_results(&server);
    let note = results
        .iter()
        .find(|r| r.contains(NOTE))
        .unwrap_or_else(|| panic!("{results:?}"));
    assert!(
        note.contains("test_new (test_new.py)") && note.contains("are not run"),
        "{note}"
    );
}

/// A pass whose output reports no test, where the base commit's run reported some, is no pass (the
/// field's 1.5B rewrote test_calc.py without `unittest.main()` and was told "(no output) They pass").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_note_says_when_the_tests_no_longer_run() {
    let config = "[verify]\ntest = \"grep -q 'unittest.main' t.py && echo 'Ran 1 test in 0.001s' || true\"\n\
                  after_write = true\n[limits]\nunit_attempts = 1\n";
    let base = "import unittest\nunittest.main()\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config), ("t.py", base)]);
    let server = fake(one_unit("FILE t.py := import unittest\\n")).await;
    let _ = Run::task("Write a")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    let results = write_results(&server);
    let note = results
        .iter()
        .find(|r| r.contains(NOTE))
        .unwrap_or_else(|| panic!("{results:?}"));
    assert!(
        note.contains("reports no test, where on the mission's base commit it ran 1")
            && note.contains("Fix that, then answer.")
            && !note.contains("They pass"),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_after_write_no_tests_run_between_turns() {
    let config = "[verify]\ntest = \"true\"\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(one_unit("FILE a.txt := a")).await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert!(
        write_results(&server).iter().all(|r| !r.contains(NOTE)),
        "{:?}",
        write_results(&server)
    );
}

/// Tests that flood their output, or hang: the note stays short, and a hang ends at the command
/// timeout, killed with everything it started; the worker goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tests_that_flood_or_hang_after_a_write_are_cut_and_timed_out() {
    let flood = "[verify]\ntest = \"yes flood | head -c 2000000; exit 3\"\nafter_write = true\n\
                 [limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", flood)]);
    let server = fake(one_unit("FILE a.txt := a")).await;
    let done = Run::task("Write a")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    assert_ne!(done.code, Some(0));
    let results = write_results(&server);
    let note = results
        .iter()
        .find(|r| r.contains(NOTE))
        .unwrap_or_else(|| panic!("{results:?}"));
    assert!(note.contains("exit code: 3"), "{note}");
    assert!(note.chars().count() < 4_000, "{} chars", note.chars().count());

    let hang = "[verify]\ntest = \"sleep 600\"\nafter_write = true\ntimeout_secs = 2\n\
                [limits]\nunit_attempts = 1\nbash_timeout_secs = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", hang)]);
    let server = fake(one_unit("FILE a.txt := a")).await;
    let started = std::time::Instant::now();
    let done = Run::task("Write a")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    assert_ne!(done.code, Some(0));
    let results = write_results(&server);
    let note = results
        .iter()
        .find(|r| r.contains(NOTE))
        .unwrap_or_else(|| panic!("{results:?}"));
    assert!(note.contains("timed out after 1 s"), "{note}");
    // Far from the 600 s the tests asked for (generous: a loaded machine is slow, never that slow).
    assert!(started.elapsed().as_secs() < 300);
}

/// The worker answers "done" before touching anything, then does the work when sent back.
struct ClaimsFirst(ScriptedMission);

impl Brain for ClaimsFirst {
    fn respond(&self, request: &SeenRequest) -> Reply {
        let sent_back = has_user_message(request, SENT_BACK);
        if role_of(request) == "worker" && !sent_back {
            return Reply::Text("The unit is complete and the tests pass.".into());
        }
        self.0.respond(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_nothing_changed_is_sent_back_once_and_the_work_then_done_passes() {
    let config = "[verify]\ntest = \"test -f a.txt\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = FakeServer::start(
        ClaimsFirst(ScriptedMission::new(one_unit("FILE a.txt := a"))),
        Default::default(),
    )
    .await
    .expect("fake server");
    let done = Run::task("Write a")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    let told = requests_of(&server, "worker")
        .last()
        .map(sent_back)
        .unwrap_or_default();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("`write`") && told[0].contains("`NO CHANGE NEEDED:`"),
        "{}",
        told[0]
    );
}

/// A worker that answers twice without changing anything: the second answer is taken (and the
/// runtime tells it it changed nothing), never sent back again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_answers_again_unchanged_is_taken_the_second_time() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(one_unit("ANSWER All done here.")).await;
    let done = Run::task("Write a")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    assert_ne!(done.code, Some(0));
    let workers = requests_of(&server, "worker");
    assert_eq!(workers.len(), 2, "one answer, sent back once, one answer taken");
    assert_eq!(sent_back(&workers[1]).len(), 1);
    assert!(
        done.events_of("notice")
            .iter()
            .any(|n| n["message"].to_string().contains("The runtime sees no change")),
        "the taken answer met the runtime's empty-diff rule"
    );
}

/// A worker that says, as its protocol asks, that no change is needed is taken at once: its unit
/// goes to review as an empty one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_says_no_change_is_needed_is_taken_at_once() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(one_unit("ANSWER NO CHANGE NEEDED: a.txt is not needed.")).await;
    let _ = Run::task("Write a")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    assert_eq!(requests_of(&server, "worker").len(), 1);
    assert!(requests_of(&server, "reviewer")
        .iter()
        .any(|r| r.first_user_text().contains("EMPTY")));
}

/// "No change needed" for a unit that asks for a function the worktree does not define: sent back
/// once, naming it; a worker that says it again is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_change_needed_for_a_function_defined_nowhere_is_sent_back_once() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[
        ("orchestrator.toml", config),
        ("calc.py", "def add(a, b):\n    return a + b\n"),
    ]);
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "Add mul(a, b) to calc.py",
            "ANSWER NO CHANGE NEEDED: calc.py is already correct.",
            &[],
        )],
        ..Script::default()
    })
    .await;
    let _ = Run::task("Add mul(a, b) to calc.py")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    let workers = requests_of(&server, "worker");
    assert_eq!(workers.len(), 2, "sent back once, then taken");
    let told = sent_back(&workers[1]);
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("`mul`") && told[0].contains("no file of your worktree"),
        "{}",
        told[0]
    );
}

/// What the field's 1.5B did: "the unit is complete" with nothing changed, then, sent back,
/// "NO CHANGE NEEDED" for a unit whose function is nowhere. Each rule sends it back once, the first
/// without offering that way out; the third answer is taken.
struct ClaimsThenInsists(ScriptedMission);

impl Brain for ClaimsThenInsists {
    fn respond(&self, request: &SeenRequest) -> Reply {
        if role_of(request) != "worker" {
            return self.0.respond(request);
        }
        match has_user_message(request, SENT_BACK) {
            false => Reply::Text("The unit is complete and the tests pass.".into()),
            true => Reply::Text("NO CHANGE NEEDED: calc.py is already correct.".into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_answer_rule_sends_back_once_per_run_and_the_third_answer_is_taken() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[
        ("orchestrator.toml", config),
        ("calc.py", "def add(a, b):\n    return a + b\n"),
    ]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Add mul(a, b) to calc.py",
            "FILE calc.py := x",
            &[],
        )],
        ..Script::default()
    };
    let server = FakeServer::start(
        ClaimsThenInsists(ScriptedMission::new(script)),
        Default::default(),
    )
    .await
    .expect("fake server");
    let _ = Run::task("Add mul(a, b) to calc.py")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    let workers = requests_of(&server, "worker");
    assert_eq!(workers.len(), 3, "two send-backs, then taken");
    let told = sent_back(&workers[2]);
    assert_eq!(told.len(), 2, "{told:?}");
    assert!(
        told[0].contains("no file in your worktree has changed") && told[0].contains("`mul`"),
        "{}",
        told[0]
    );
    assert!(
        !told[0].contains("NO CHANGE NEEDED"),
        "no way out offered: {}",
        told[0]
    );
    assert!(told[1].contains("your unit asks for `mul`"), "{}", told[1]);
}

/// A change that leaves the function the unit names defined nowhere is sent back once, naming it
/// (the field's 1.5B answered "mul(a, b) function" with a new file holding `def test_mul(a, b)`); a
/// worker that insists is taken, and one that defines it is not sent back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_without_the_named_function_is_sent_back_once() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n";
    let files = [
        ("orchestrator.toml", config),
        ("calc.py", "def add(a, b):\n    return a + b\n"),
    ];
    let unit = |directives: &str| Script {
        plan: vec![PlanUnit::new("a", "Add mul(a, b) to calc.py", directives, &[])],
        ..Script::default()
    };
    let repo = TestRepo::new(&files);
    let server = fake(unit("FILE src/mul.py := def test_mul(a, b):\\n    pass\\n")).await;
    let _ = Run::task("Add mul(a, b) to calc.py")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    let workers = requests_of(&server, "worker");
    let last = workers.last().expect("worker requests");
    let told = sent_back(last);
    assert_eq!(told.len(), 1, "once, then taken: {told:?}");
    assert!(
        told[0].contains("asks for `mul`") && told[0].contains("after your change"),
        "{}",
        told[0]
    );

    let repo = TestRepo::new(&files);
    let server = fake(unit(
        "FILE calc.py := def add(a, b):\\n    return a + b\\n\\ndef mul(a, b):\\n    return a * b\\n",
    ))
    .await;
    let done = Run::task("Add mul(a, b) to calc.py")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let workers = requests_of(&server, "worker");
    assert!(
        workers.iter().all(|r| sent_back(r).is_empty()),
        "a worker that defines it is not sent back"
    );
}

/// A unit that asks for a test, answered with a change that adds none, is sent back once (the
/// field's 1.5B wrote a `def mul(self, a, b)` method into the test class for "Add a test for the
/// `mul` function", and it passed verification); taken when insisted on, and its reviewer is told.
/// A change that adds one, even in a new file, is not sent back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_asking_for_a_test_answered_without_one_is_sent_back_once() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n";
    let files = [
        ("orchestrator.toml", config),
        (
            "test_calc.py",
            "import unittest\n\nclass CalcTest(unittest.TestCase):\n    pass\n",
        ),
    ];
    let unit = |directives: &str| Script {
        plan: vec![PlanUnit::new(
            "a",
            "Add a test for the `mul` function in test_calc.py",
            directives,
            &[],
        )],
        ..Script::default()
    };
    let repo = TestRepo::new(&files);
    let server = fake(unit(
        "FILE test_calc.py := import unittest\\n\\nclass CalcTest(unittest.TestCase):\\n    def mul(self, a, b):\\n        pass\\n",
    ))
    .await;
    let _ = Run::task("Add a test for mul")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    let workers = requests_of(&server, "worker");
    let told = sent_back(workers.last().expect("worker requests"));
    // The directives name `mul(self, a, b)` too, defined only in the test file: that rule may speak
    // first; each rule once.
    let no_test = told
        .iter()
        .filter(|t| t.contains("asks for a test, and your change adds none"))
        .count();
    assert_eq!(no_test, 1, "once, then taken: {told:?}");
    let reviewers = requests_of(&server, "reviewer");
    assert!(
        reviewers.iter().any(|r| has_user_message(
            r,
            "The unit asks for a test, and the diff of this worktree adds no test definition"
        )),
        "the reviewer is told"
    );

    let repo = TestRepo::new(&files);
    let server = fake(unit(
        "FILE tests/test_mul.py := def test_mul():\\n    assert 2 * 3 == 6\\n",
    ))
    .await;
    let _ = Run::task("Add a test for mul")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    let workers = requests_of(&server, "worker");
    assert!(
        workers.iter().all(|r| sent_back(r).is_empty()),
        "a test in a new file is a test added"
    );
}
