//! The mission's baseline (issue #19): the project's commands run once on the base commit before
//! any unit. A test that already failed there does not fail a unit, one the unit breaks does; each
//! unit's worktree starts from a copy of the baseline's build outputs (`[verify] cache = "auto"`),
//! which no unit can write; a resume does not run it again; a baseline that hangs is cut off at
//! the verification timeout and the units build cold.

use serde_json::Value;

use super::durability::crash_then_resume;
use super::support::*;
use orchestrator_fake_model::script::{role_of, worker_unit, PlanUnit, Script};
use orchestrator_fake_model::SeenRequest;

/// Says whether it started from a copy (`warm from <who built it>`) or from nothing (`cold`), then
/// stamps its output with the worktree's folder name (`baseline`, `a`, `integration`, …). It shows
/// the `CARGO_TARGET_DIR` it got first.
const BUILD: &str = "echo \"target dir: $CARGO_TARGET_DIR\"\n\
if [ -f target/stamp ]; then echo \"warm from $(cat target/stamp)\"; else echo cold; fi\n\
mkdir -p target && basename \"$PWD\" > target/stamp\n";

/// libtest-like output: `tests::old` fails while `old_bug` exists, `tests::new` while `new_bug` does.
const TEST: &str = "failed=0\n\
for t in old new; do if [ -f ${t}_bug ]; then echo \"test tests::$t ... FAILED\"; failed=1; else echo \"test tests::$t ... ok\"; fi; done\n\
exit $failed\n";

/// A Cargo project as the pre-scan sees it (its `target` is the build-output folder), built by
/// shell scripts so the tests stay fast.
pub(super) fn project(extra_config: &str, files: &[(&str, &str)]) -> TestRepo {
    let config = format!(
        "[verify]\nbuild = \"sh build.sh\"\ntest = \"sh test.sh\"\n{extra_config}\n[limits]\nunit_attempts = 1\n"
    );
    let mut all = vec![
        ("orchestrator.toml", config.as_str()),
        ("Cargo.toml", "[package]\nname = \"demo\"\nversion = \"0.1.0\"\n"),
        (".gitignore", "target/\n"),
        ("build.sh", BUILD),
        ("test.sh", TEST),
    ];
    all.extend_from_slice(files);
    TestRepo::new(&all)
}

pub(super) fn one_unit(directives: &str) -> Script {
    Script {
        plan: vec![PlanUnit::new("a", "A", directives, &[])],
        ..Script::default()
    }
}

/// The evidence recorded for `unit` (`None`: the integrated whole) of one kind.
pub(super) fn evidence(events: &[Value], unit: Option<&str>, kind: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["type"] == "evidence_recorded" && e["unit"].as_str() == unit)
        .map(|e| e["evidence"].clone())
        .filter(|e| e["kind"] == kind)
        .collect()
}

pub(super) fn tail(evidence: &Value) -> &str {
    evidence["output_tail"].as_str().unwrap_or_default()
}

fn unit_state(finished: &Finished, unit: &str) -> Option<String> {
    finished
        .events_of("unit_state")
        .into_iter()
        .filter(|e| e["unit"] == unit)
        .filter_map(|e| e["state"].as_str().map(str::to_string))
        .next_back()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_existing_failure_does_not_fail_a_unit_and_the_unit_builds_warm() {
    let repo = project("", &[("old_bug", "broken before any unit\n")]);
    let server = fake(one_unit("FILE a.txt := a\\n")).await;
    // The user's own target folder would make every unit build into one: it does not reach them.
    let finished = Run::task("Add a")
        .arg("--json")
        .env("CARGO_TARGET_DIR", "/tmp/one-target-for-all")
        .openai(&server)
        .run(&repo)
        .await;
    finished.assert_code(0);

    // Once, recorded before it ran, with the failure it found and the folder units start from.
    assert_eq!(finished.events_of("baseline_started").len(), 1);
    let verified = finished.events_of("baseline_verified");
    assert_eq!(verified.len(), 1, "{verified:?}");
    let baseline = &verified[0]["baseline"];
    assert_eq!(baseline["passed"], false);
    assert_eq!(baseline["failed_tests"], serde_json::json!(["tests::old"]));
    assert_eq!(baseline["warm"], serde_json::json!(["target"]));
    let events = finished.events();
    let started = events.iter().position(|e| e["type"] == "baseline_started");
    let first_evidence = events.iter().position(|e| e["type"] == "evidence_recorded");
    assert!(started < first_evidence, "recorded before any verification");

    // The unit's build started from the baseline's outputs; its failing test is excused by name.
    let build = evidence(&events, Some("a"), "build");
    assert!(tail(&build[0]).contains("warm from baseline"), "{build:?}");
    assert!(tail(&build[0]).contains("target dir: target\n"), "{build:?}");
    let test = evidence(&events, Some("a"), "test");
    assert_eq!(test[0]["exit_code"], 1);
    assert_eq!(test[0]["baseline_failures"], serde_json::json!(["tests::old"]));
    assert_eq!(unit_state(&finished, "a").as_deref(), Some("passed"));
    assert_eq!(repo.read("a.txt").as_deref(), Some("a\n"));

    // The reviewer is told the failure is pre-existing.
    let review = requests_of(&server, "reviewer");
    assert!(
        review
            .iter()
            .any(|r| has_user_message(r, "pre-existing failure") && has_user_message(r, "tests::old")),
        "the reviewer sees why the failing test did not fail the unit"
    );
    let status = Run::cmd(&["status"]).run(&repo).await;
    assert!(
        status
            .stdout
            .contains("pre-existing test failures, not blamed on any unit: tests::old"),
        "{}",
        status.stdout
    );
    let logs = Run::cmd(&["logs"]).run(&repo).await;
    assert!(
        logs.stdout
            .contains("pre-existing test failures, not blamed on any unit: tests::old")
            && logs.stdout.contains("units start from a copy of its target"),
        "{}",
        logs.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_the_unit_newly_breaks_fails_it_beside_a_pre_existing_one() {
    let repo = project("", &[("old_bug", "broken before any unit\n")]);
    let server = fake(one_unit("FILE new_bug := the unit broke this\\n")).await;
    let finished = Run::task("Break it")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    assert_ne!(finished.code, Some(0), "not sealed");
    let test = evidence(&finished.events(), Some("a"), "test");
    assert_eq!(
        test[0]["failed_tests"],
        serde_json::json!(["tests::new", "tests::old"])
    );
    assert_eq!(test[0]["baseline_failures"], serde_json::json!(["tests::old"]));
    assert_eq!(unit_state(&finished, "a").as_deref(), Some("failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cache_off_a_unit_builds_cold_and_a_shared_cache_is_refused() {
    let repo = project("cache = \"off\"", &[]);
    let server = fake(one_unit("FILE a.txt := a\\n")).await;
    let finished = Run::task("Add a").arg("--json").openai(&server).run(&repo).await;
    finished.assert_code(0);
    let baseline = &finished.events_of("baseline_verified")[0]["baseline"];
    assert_eq!(baseline["passed"], true);
    assert_eq!(baseline["warm"], serde_json::json!([]));
    assert_eq!(baseline["cold_reason"], "[verify] cache = \"off\"");
    let build = evidence(&finished.events(), Some("a"), "build");
    assert!(tail(&build[0]).contains("\ncold"), "{build:?}");

    let shared = project("cache = \"shared\"", &[]);
    let refused = Run::task("Add a").openai(&server).run(&shared).await;
    refused.assert_code(2);
    assert!(
        refused.stderr.contains("cache = \"shared\" is refused") && refused.stderr.contains("another unit"),
        "{}",
        refused.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_baseline_is_cut_off_and_the_units_build_cold() {
    // Hangs on the base commit only: the unit adds a.txt.
    let hanging = format!("[ -f a.txt ] || sleep 600\n{BUILD}");
    let repo = project("timeout_secs = 2", &[("build.sh", &hanging)]);
    let server = fake(one_unit("FILE a.txt := a\\n")).await;
    let finished = Run::task("Add a").arg("--json").openai(&server).run(&repo).await;
    finished.assert_code(0);
    let baseline = &finished.events_of("baseline_verified")[0]["baseline"];
    assert_eq!(baseline["timed_out"], true);
    assert_eq!(baseline["cold_reason"], "the baseline build timed out");
    let build = evidence(&finished.events(), Some("a"), "build");
    assert!(tail(&build[0]).contains("\ncold"), "{build:?}");
    let logs = Run::cmd(&["logs"]).run(&repo).await;
    assert!(
        logs.stdout.contains("baseline timed out") && logs.stdout.contains("units build cold"),
        "{}",
        logs.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_cannot_write_into_the_baselines_or_another_units_copy() {
    // The worker rewrites the build to stamp the baseline's outputs and its sibling's copy.
    let evil = "for d in ../../baseline/target ../b/target; do (echo pwned > $d/stamp) 2>/dev/null || echo \"denied $d\"; done\\n";
    let repo = project("", &[]);
    let script = Script {
        plan: vec![
            PlanUnit::new(
                "a",
                "A",
                &format!("FILE build.sh := {evil}\nFILE a.txt := a\\n"),
                &[],
            ),
            PlanUnit::new("b", "B", "FILE b.txt := b\\n", &["a"]),
        ],
        ..Script::default()
    };
    let server = fake(script).await;
    let finished = Run::task("Try").arg("--json").openai(&server).run(&repo).await;
    finished.assert_code(0);
    let events = finished.events();
    let a = evidence(&events, Some("a"), "build");
    assert!(tail(&a[0]).contains("denied ../../baseline/target"), "{a:?}");
    // b starts after a merged, from the baseline's untouched copy.
    let b = evidence(&events, Some("b"), "build");
    assert!(!tail(&b[0]).contains("pwned"), "{b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_does_not_run_a_recorded_baseline_again() {
    let repo = project("", &[("old_bug", "broken before any unit\n")]);
    // Killed at the first review: the unit's verification (after the baseline) is over by then.
    let when = |r: &SeenRequest| role_of(r) == "reviewer";
    let (server, _) = crash_then_resume(Box::new(when), one_unit("FILE a.txt := a\\n"), &repo).await;
    let resumed = Run::cmd(&["resume", "--json"]).openai(&server).run(&repo).await;
    resumed.assert_code(0);
    assert!(resumed.events_of("baseline_started").is_empty());
    let logs = Run::cmd(&["logs", "--json"]).run(&repo).await;
    let kinds: Vec<String> = logs
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| {
            let kind = e["type"].as_str().or(e["event"]["type"].as_str())?;
            Some(kind.to_string())
        })
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "baseline_started").count(), 1);
    assert_eq!(kinds.iter().filter(|k| *k == "baseline_verified").count(), 1);
    // The recorded failure still excuses the unit after the resume.
    assert_eq!(unit_state(&resumed, "a").as_deref(), Some("passed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_mission_builds_the_baselines_outputs_again_and_its_units_start_warm() {
    let repo = project("", &[("old_bug", "broken before any unit\n")]);
    // Killed when b's worker starts: a was verified by then, so the baseline is recorded.
    let when = |r: &SeenRequest| worker_unit(r).as_deref() == Some("b");
    let script = Script {
        plan: vec![
            PlanUnit::new("a", "A", "FILE a.txt := a\\n", &[]),
            PlanUnit::new("b", "B", "FILE b.txt := b\\n", &["a"]),
        ],
        ..Script::default()
    };
    let (server, _) = crash_then_resume(Box::new(when), script, &repo).await;
    let resumed = Run::cmd(&["resume", "--json"]).openai(&server).run(&repo).await;
    resumed.assert_code(0);
    // Not run again as a baseline (no new record, its failures stand) ...
    assert!(resumed.events_of("baseline_started").is_empty());
    let notices = resumed.events_of("notice");
    assert!(
        notices.iter().any(|n| n["message"]
            .as_str()
            .is_some_and(|m| m.contains("resumed units start warm"))),
        "{notices:?}"
    );
    // ... but its build ran once more, and b started from it, with the old failure still excused.
    let events = resumed.events();
    let build = evidence(&events, Some("b"), "build");
    assert!(tail(&build[0]).contains("warm from baseline"), "{build:?}");
    let test = evidence(&events, Some("b"), "test");
    assert_eq!(test[0]["baseline_failures"], serde_json::json!(["tests::old"]));
    assert_eq!(unit_state(&resumed, "b").as_deref(), Some("passed"));
    assert_eq!(repo.read("b.txt").as_deref(), Some("b\n"));
}

/// A Node project as the pre-scan sees it (`package.json` with dependencies, a lockfile, an ignored
/// `node_modules`), its install a script that says where it ran, whether it could reach `port`
/// (a listener of the test's), and where its package cache went.
fn node_project(port: u16, attempts: u32) -> TestRepo {
    let install = format!(
        "echo \"installing in $(basename \"$PWD\")\"\n\
         case \"$npm_config_cache\" in \"$TMPDIR\"/*) echo 'cache: private';; *) echo \"cache: $npm_config_cache\";; esac\n\
         if bash -c 'exec 3<>/dev/tcp/127.0.0.1/{port}' 2>/dev/null; then echo online; else echo offline; fi\n\
         mkdir -p node_modules && basename \"$PWD\" > node_modules/installed_by\n"
    );
    let config = format!(
        "[verify]\ninstall = \"sh install.sh\"\nbuild = \"sh build.sh\"\ntest = \"sh test.sh\"\n\
         [limits]\nunit_attempts = {attempts}\n"
    );
    let build =
        "if [ -f node_modules/installed_by ]; then echo \"deps from $(cat node_modules/installed_by)\"; \
                 else echo 'no deps'; exit 1; fi\n";
    TestRepo::new(&[
        ("orchestrator.toml", config.as_str()),
        (
            "package.json",
            "{\"devDependencies\": {\"left-pad\": \"1.3.0\"}, \"scripts\": {\"test\": \"sh test.sh\"}}\n",
        ),
        ("package-lock.json", "{\"lockfileVersion\": 3}\n"),
        (".gitignore", "node_modules/\n"),
        ("install.sh", install.as_str()),
        ("build.sh", build),
        ("test.sh", "echo 'test tests::x ... ok'\n"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_install_once_online_and_again_only_in_a_unit_that_changes_them() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let repo = node_project(port, 1);
    let script = Script {
        plan: vec![
            PlanUnit::new("a", "A", "FILE a.txt := a\\n", &[]),
            // `.npmrc` is read by the install: the baseline's node_modules may no longer fit.
            PlanUnit::new("b", "B", "FILE .npmrc := fund=false\\n", &[]),
        ],
        ..Script::default()
    };
    let server = fake(script).await;
    let finished = Run::task("Add a and b")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    finished.assert_code(0);

    // The baseline installed the committed lockfile, with the network, into a private cache.
    let verified = finished.events_of("baseline_verified");
    let baseline = &verified[0]["baseline"];
    assert_eq!(
        baseline["warm"],
        serde_json::json!(["node_modules"]),
        "{baseline}"
    );
    let installed: Vec<&Value> = baseline["evidence"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == "install")
        .collect();
    assert_eq!(installed.len(), 1, "{baseline}");
    let out = tail(installed[0]);
    assert!(
        out.contains("installing in baseline") && out.contains("online"),
        "{out}"
    );
    assert!(out.contains("cache: private"), "{out}");

    // a changed no dependency file: no install, its build uses the baseline's copy.
    let events = finished.events();
    assert!(evidence(&events, Some("a"), "install").is_empty());
    let a_build = evidence(&events, Some("a"), "build");
    assert!(tail(&a_build[0]).contains("deps from baseline"), "{a_build:?}");

    // b did: it installed again in its own worktree, confined like its other commands (offline).
    let b_install = evidence(&events, Some("b"), "install");
    assert_eq!(b_install.len(), 1, "{b_install:?}");
    let out = tail(&b_install[0]);
    assert!(
        out.contains("installing in b") && out.contains("offline"),
        "{out}"
    );
    let b_build = evidence(&events, Some("b"), "build");
    assert!(tail(&b_build[0]).contains("deps from b"), "{b_build:?}");
    assert_eq!(repo.read(".npmrc").as_deref(), Some("fund=false\n"));
    assert_eq!(repo.read("a.txt").as_deref(), Some("a\n"));
    // The start notice names the install and when it runs.
    let notices = finished.events_of("notice");
    assert!(
        notices.iter().any(|n| n["message"]
            .as_str()
            .is_some_and(|m| m.contains("dependencies from `sh install.sh`"))),
        "{notices:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_whose_install_fails_fails_and_is_told_why() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let repo = node_project(port, 2);
    // The new lockfile asks for what only the registry has: offline, the unit's install fails.
    std::fs::write(
        repo.path().join("install.sh"),
        "if grep -q new package-lock.json; then echo 'npm ERR! network request failed' >&2; exit 1; fi\n\
         mkdir -p node_modules && basename \"$PWD\" > node_modules/installed_by\n",
    )
    .unwrap();
    repo.git(&["commit", "-qam", "install"]);
    let server = fake(one_unit("FILE package-lock.json := new\\n")).await;
    let finished = Run::task("Change the lockfile")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    assert_ne!(finished.code, Some(0), "{}", finished.stderr);
    let events = finished.events();
    let install = evidence(&events, Some("a"), "install");
    assert!(!install.is_empty(), "{install:?}");
    assert!(install.iter().all(|e| e["exit_code"] == 1), "{install:?}");
    assert!(
        evidence(&events, Some("a"), "build").is_empty(),
        "no build after a failed install"
    );
    assert_eq!(unit_state(&finished, "a").as_deref(), Some("failed"));
    assert_eq!(
        repo.read("package-lock.json").as_deref(),
        Some("{\"lockfileVersion\": 3}\n")
    );
    // The worker's retry reads why an install ran in its unit and what it needs.
    let worker = requests_of(&server, "worker");
    assert!(
        worker
            .iter()
            .any(|r| has_user_message(r, "[sandbox] network = true")),
        "the retry's evidence explains the unit's install"
    );
}

/// A unit whose change makes the test command stop running tests (it still exits 0) fails
/// verification: the baseline's output said how many tests ran, the unit's says none. In the
/// field a 1.5B replaced a unittest file by `print(mul(2, 3))`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_after_which_no_test_runs_fails_though_the_command_exits_0() {
    let test =
        "if [ -f tests_gone ]; then echo 6; else echo 'test result: ok. 2 passed; 0 failed; 0 ignored'; fi\n";
    let repo = TestRepo::new(&[
        (
            "orchestrator.toml",
            "[verify]\ntest = \"sh test.sh\"\n[limits]\nunit_attempts = 1\n",
        ),
        ("test.sh", test),
    ]);
    let server = fake(one_unit("FILE tests_gone := yes\\n")).await;
    let finished = Run::task("Break the tests quietly")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    assert_ne!(finished.code, Some(0), "not sealed");
    let baseline = &finished.events_of("baseline_verified")[0]["baseline"];
    assert_eq!(baseline["passed"], true, "{baseline}");
    let test = evidence(&finished.events(), Some("a"), "test");
    assert_eq!(test[0]["exit_code"], 0);
    assert_eq!(test[0]["tests_lost"], 2, "{test:?}");
    assert_eq!(unit_state(&finished, "a").as_deref(), Some("failed"));
    assert_eq!(repo.read("tests_gone"), None, "nothing merged");
}

/// A unit that adds a test the runner never collects fails verification, naming the test, and its
/// worker is told how runners collect tests; a retry whose new test runs passes. In the field a 1.5B
/// added `def test_mul(a, b)` at the top of a unittest file: `Ran 2 tests`, as before, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_whose_new_test_does_not_run_fails_though_the_command_exits_0() {
    // A runner that counts the `def test_` lines indented as methods, as unittest runs only those.
    let test = "echo \"Ran $(grep -c '^    def test_' test_calc.py) tests in 0.001s\"\n";
    let repo = TestRepo::new(&[
        (
            "orchestrator.toml",
            "[verify]\ntest = \"sh test.sh\"\n[limits]\nunit_attempts = 2\n",
        ),
        ("test.sh", test),
        (
            "test_calc.py",
            "class T:\n    def test_add(self):\n        pass\n",
        ),
    ]);
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "Test mul",
            "FILE test_calc.py := class T:\\n    def test_add(self):\\n        pass\\ndef test_mul(a, b):\\n    pass\\n\n\
             FIX test_calc.py := class T:\\n    def test_add(self):\\n        pass\\n    def test_mul(self):\\n        pass\\n",
            &[],
        )],
        ..Script::default()
    })
    .await;
    let finished = Run::task("Add a test for mul")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let test = evidence(&finished.events(), Some("a"), "test");
    assert_eq!(test[0]["exit_code"], 0);
    assert_eq!(
        test[0]["tests_not_run"],
        serde_json::json!({"added": ["test_mul (test_calc.py)"], "ran_before": 1, "ran_now": 1}),
        "{test:?}"
    );
    assert!(test[1].get("tests_not_run").is_none(), "{test:?}");
    let worker = requests_of(&server, "worker");
    assert!(
        worker
            .iter()
            .any(|r| has_user_message(r, "are not run: it ran 1 tests, 1 on the base commit")),
        "the retry is told"
    );
    assert!(repo
        .read("test_calc.py")
        .is_some_and(|t| t.contains("    def test_mul(self):")));
}

/// A new test file beside one the command runs, that the command does not run, fails the same way
/// (the field's 1.5B wrote `test_mul.py` beside `test_calc.py`, run as `python3 test_calc.py`); the
/// retry that puts the test where it runs passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_test_file_the_command_does_not_run_fails_verification() {
    let test = "echo \"Ran $(grep -c '^    def test_' test_calc.py) tests in 0.001s\"\n";
    let repo = TestRepo::new(&[
        (
            "orchestrator.toml",
            "[verify]\ntest = \"sh test.sh\"\n[limits]\nunit_attempts = 2\n",
        ),
        ("test.sh", test),
        (
            "test_calc.py",
            "class T:\n    def test_add(self):\n        pass\n",
        ),
    ]);
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "Test mul",
            "FILE test_mul.py := class M:\\n    def test_mul(self):\\n        pass\\n\n\
             FIX test_mul.py := # moved into test_calc.py\\n\n\
             FIX test_calc.py := class T:\\n    def test_add(self):\\n        pass\\n    def test_mul(self):\\n        pass\\n",
            &[],
        )],
        ..Script::default()
    })
    .await;
    let finished = Run::task("Add a test for mul")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    let test = evidence(&finished.events(), Some("a"), "test");
    assert_eq!(
        test[0]["tests_not_run"],
        serde_json::json!({"added": ["test_mul (test_mul.py)"], "ran_before": 1, "ran_now": 1}),
        "{test:?}"
    );
    assert!(test[1].get("tests_not_run").is_none(), "{test:?}");
    let worker = requests_of(&server, "worker");
    assert!(
        worker.iter().any(|r| has_user_message(
            r,
            "tests in a new file run only if the test command runs that file"
        )),
        "the retry is told where tests run"
    );
}
