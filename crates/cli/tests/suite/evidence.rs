//! Evidence, or no seal: a repository where no command would judge the work is refused before any
//! model is called, unless `--no-verify` — and then every front end says "sealed without
//! verification". A `[verify] lint` command runs like build and test, and a failing one stops the unit.

use super::support::*;
use orchestrator_fake_model::script::{role_of, PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeServer, Reply, SeenMessage, SeenRequest};

fn one_file() -> Script {
    Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a")],
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_without_commands_is_refused_before_any_model_call() {
    let repo = TestRepo::bare(&[]);
    let server = fake(one_file()).await;
    let done = Run::task("Write a").openai(&server).run(&repo).await;
    done.assert_code(2);
    assert!(
        done.stderr.contains("no build, lint or test command")
            && done.stderr.contains("[verify]")
            && done.stderr.contains("--no-verify"),
        "{}",
        done.stderr
    );
    assert!(
        server.requests().is_empty(),
        "nothing was spent: {} request(s)",
        server.requests().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_verify_seals_and_every_front_end_says_without_verification() {
    let repo = TestRepo::bare(&[]);
    let server = fake(one_file()).await;
    let done = Run::task("Write a")
        .arg("--no-verify")
        .arg("--plain")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert!(
        done.stdout.contains("SEALED WITHOUT VERIFICATION"),
        "the exit line: {}",
        done.stdout
    );
    assert!(
        done.stderr.contains("reviews alone"),
        "the start says nothing will run: {}",
        done.stderr
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));

    let status = Run::cmd(&["status"]).run(&repo).await;
    assert!(
        status.stdout.contains("sealed without verification"),
        "{}",
        status.stdout
    );
    let json = Run::cmd(&["status", "--json"]).run(&repo).await;
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("status JSON");
    assert_eq!(report["unverified"], true);
    let markdown = Run::cmd(&["report"]).run(&repo).await;
    assert!(
        markdown.stdout.contains("Sealed without verification"),
        "{}",
        markdown.stdout
    );
    let logs = Run::cmd(&["logs", "--json"]).run(&repo).await;
    let finished = logs
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|e| e["event"]["type"] == "mission_finished" || e["type"] == "mission_finished")
        .expect("a mission_finished event");
    let event = if finished["event"].is_object() {
        &finished["event"]
    } else {
        &finished
    };
    assert_eq!(event["unverified"], true, "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_mission_is_sealed_plainly() {
    let repo = TestRepo::new(&[]);
    let server = fake(one_file()).await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let finished = &done.events_of("mission_finished")[0];
    assert!(finished.get("unverified").is_none(), "{finished}");
    let notices = done.notices();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("the work is judged by: test `true`")),
        "{notices:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lint_runs_between_build_and_test_and_a_failing_lint_stops_the_unit() {
    let config = "[verify]\nbuild = \"true\"\nlint = \"grep -q a a.txt\"\ntest = \"true\"\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(one_file()).await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let kinds: Vec<String> = done
        .events_of("evidence_recorded")
        .iter()
        .filter(|e| e["unit"] == "a")
        .filter_map(|e| e["evidence"]["kind"].as_str().map(str::to_string))
        .collect();
    assert_eq!(kinds, ["build", "lint", "test"]);

    let failing = "[verify]\nlint = \"echo 'a.txt:1: style problem'; exit 1\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", failing)]);
    let server = fake(one_file()).await;
    let done = Run::task("Write a")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    assert_eq!(repo.read("a.txt"), None, "nothing unverified reached main");
    let lint: Vec<_> = done
        .events_of("evidence_recorded")
        .into_iter()
        .filter(|e| e["evidence"]["kind"] == "lint")
        .collect();
    assert!(
        lint.iter().any(|e| e["evidence"]["output_tail"]
            .as_str()
            .is_some_and(|t| t.contains("style problem"))),
        "{lint:?}"
    );
}

/// A spawn bomb stops at `limits.max_units`: the spawn is refused with the numbers and the unit goes
/// on by itself; a plan larger than the cap is sent back to the planner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unit_cap_refuses_a_spawn_bomb_and_an_oversized_plan() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nmax_units = 4\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let spawns: String = (1..=5)
        .map(|i| format!("SPAWN part {i} :: FILE p{i}.txt := {i}\n"))
        .collect();
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Write a",
            &format!("{spawns}FILE a.txt := a"),
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert!(done.events_of("units_spawned").is_empty());
    let refusal = tool_results(&server)
        .into_iter()
        .find(|(name, _, _)| name == "spawn")
        .expect("the spawn's result");
    assert!(
        refusal.1.contains("holds 1 units and may hold 4") && refusal.1.contains("limits.max_units"),
        "{}",
        refusal.1
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));

    let config = "[verify]\ntest = \"true\"\n[limits]\nmax_units = 1\nplan_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let script = Script {
        plan: vec![
            PlanUnit::file("a", "a.txt", "a"),
            PlanUnit::file("b", "b.txt", "b"),
        ],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Write a and b")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    let rejected = done.events_of("plan_rejected");
    assert!(
        rejected.iter().any(|e| e["problems"]
            .to_string()
            .contains("the plan has 2 units; this mission may hold 1")),
        "{rejected:?}"
    );
}

/// The observed case: a worker's `write` fails (cut JSON) and it claims the work anyway. The runtime
/// sees an empty diff, tells the worker so (with the failed call), and never passes the claim on;
/// the next round's retry starts from those findings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_with_an_empty_diff_is_not_passed_on() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 2\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Write out/part_10.txt",
            "BADJSON\nANSWER Wrote out/part_10.txt.",
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Write the part")
        .arg("--json")
        .arg("--rounds")
        .arg("2")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    assert!(
        requests_of(&server, "reviewer").is_empty(),
        "no reviewer was asked to judge an empty claim"
    );
    let told: Vec<String> = requests_of(&server, "worker")
        .iter()
        .flat_map(|r| r.messages.clone())
        .filter_map(|m| match m {
            SeenMessage::User { text } if text.starts_with("The runtime sees no change") => Some(text),
            _ => None,
        })
        .collect();
    assert!(!told.is_empty(), "the worker heard what the runtime saw");
    assert!(
        told[0].contains("Your last failed tool call said"),
        "with the failed call: {}",
        told[0]
    );
    // Round 2 retries the unit with those findings, not the same description again.
    let retry = retry_description(&done);
    assert!(
        retry.contains("What that attempt was last told") && retry.contains("The runtime sees no change"),
        "{retry}"
    );
}

/// The description of the unit round 1 hands to round 2 as its retry.
fn retry_description(done: &Finished) -> String {
    let follow_up = done
        .events_of("round_finished")
        .into_iter()
        .find(|e| e["round"] == 1)
        .expect("round 1 finished");
    follow_up["follow_up"][0]["description"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A unit that fails for good hands its retry the change it made, and the retry is told its worktree
/// starts without it. Seen in the field: a retry told of an IndentationError ran the tests on its
/// fresh worktree, saw them pass, and answered that no change was needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_units_retry_sees_the_change_it_made_and_starts_without_it() {
    let config = "[verify]\ntest = \"! grep -q broken calc.py\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config), ("calc.py", "x = 1\n")]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Add mul",
            "FILE calc.py := x = 1\\ndef mul(a, b): return a * b  # broken\\n",
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Add mul")
        .arg("--json")
        .arg("--rounds")
        .arg("2")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    let retry = retry_description(&done);
    assert!(retry.contains("without that attempt's changes"), "{retry}");
    assert!(retry.contains("Stage 1 verification failed"), "{retry}");
    assert!(
        retry.contains("```diff") && retry.contains("+def mul(a, b): return a * b  # broken"),
        "the diff it left: {retry}"
    );
}

/// The obedient case beside it: a unit that truly needs no change says so, and the reviewer sees the
/// empty diff called out. Beside another unit that does change something, the mission seals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_that_needs_no_change_says_so_and_the_reviewer_sees_the_empty_diff() {
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![
            PlanUnit::new(
                "a",
                "Check the README",
                "ANSWER NO CHANGE NEEDED: the README already says it.",
                &[],
            ),
            PlanUnit::new("b", "Add b", "FILE b.txt := b\\n", &[]),
        ],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Check").openai(&server).run(&repo).await;
    done.assert_code(0);
    let review = requests_of(&server, "reviewer");
    assert!(
        review
            .iter()
            .any(|r| r.first_user_text().contains("(EMPTY: this unit changed no file.")),
        "the empty diff is called out"
    );
    assert_eq!(repo.read("b.txt").as_deref(), Some("b\n"));
}

/// A reviewer that passes an empty diff must show what it read; this one first passes without a look,
/// then quotes a line that is not in the file and a file outside the worktree. Each is refused with
/// the reason; the honest pass that follows is recorded with its quotes.
struct LazyReviewer(ScriptedMission);

impl Brain for LazyReviewer {
    fn respond(&self, request: &SeenRequest) -> Reply {
        let empty = request
            .first_user_text()
            .contains("(EMPTY: this unit changed no file");
        if role_of(request) != "reviewer" || !empty {
            return self.0.respond(request);
        }
        let submit = |arguments: serde_json::Value| Reply::ToolCalls {
            text: String::new(),
            calls: vec![("submit_review".into(), arguments.to_string())],
        };
        match request.assistant_turns() {
            0 => submit(serde_json::json!({"verdict": "pass", "summary": "fine"})),
            1 => submit(serde_json::json!({"verdict": "pass", "summary": "fine",
                 "checked": [{"file": "README.md", "quote": "def mul(a, b): return a * b"},
                             {"file": "../../../../etc/hostname", "quote": "localhost-ish"}]})),
            _ => submit(serde_json::json!({"verdict": "pass", "summary": "fine",
                 "checked": [{"file": "README.md", "quote": "# test project"}]})),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_passing_an_empty_diff_must_quote_what_it_read() {
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![
            PlanUnit::new(
                "a",
                "Check the README",
                "ANSWER NO CHANGE NEEDED: it says it.",
                &[],
            ),
            PlanUnit::new("b", "Add b", "FILE b.txt := b\\n", &[]),
        ],
        ..Script::default()
    };
    let server = FakeServer::start(LazyReviewer(ScriptedMission::new(script)), Default::default())
        .await
        .expect("fake server");
    let done = Run::task("Check").arg("--json").openai(&server).run(&repo).await;
    done.assert_code(0);
    let told: Vec<String> = requests_of(&server, "reviewer")
        .iter()
        .flat_map(|r| r.messages.clone())
        .filter_map(|m| match m {
            // The OpenAI wire has no error flag; the runtime's refusals start with "Error:".
            SeenMessage::Tool { content, .. } if content.starts_with("Error:") => Some(content),
            _ => None,
        })
        .collect();
    let said = told.join("\n");
    assert!(said.contains("`checked` is missing or empty"), "{said}");
    assert!(
        said.contains("`README.md` does not contain the line you quoted"),
        "{said}"
    );
    assert!(said.contains("is not a file of the worktree"), "{said}");
    let passed = done
        .events_of("review_finished")
        .into_iter()
        .find(|e| e["unit"] == "a")
        .expect("a was reviewed");
    assert_eq!(passed["review"]["verdict"], "pass");
    assert!(
        passed["review"]["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("Checked: README.md: \"# test project\""),
        "{passed}"
    );
    // Reviews of units with a diff are not asked for any of this.
    let b_review = requests_of(&server, "reviewer")
        .into_iter()
        .find(|r| r.first_user_text().contains("# The unit under review: b"))
        .expect("b was reviewed");
    assert!(!b_review.first_user_text().contains("checked"));
}

/// A reviewer that sends the same review whatever it is told, as a small model copying its history
/// does: a pass of an empty diff without `checked`, and a fail of a real diff without issues.
struct CopyingReviewer(ScriptedMission);

impl Brain for CopyingReviewer {
    fn respond(&self, request: &SeenRequest) -> Reply {
        if role_of(request) != "reviewer" {
            return self.0.respond(request);
        }
        let review = match request
            .first_user_text()
            .contains("(EMPTY: this unit changed no file")
        {
            true => serde_json::json!({"verdict": "pass", "summary": "It is all there already."}),
            false => serde_json::json!({"verdict": "fail", "summary": "Not good enough."}),
        };
        Reply::ToolCalls {
            text: String::new(),
            calls: vec![("submit_review".into(), review.to_string())],
        }
    }
}

/// Copies of a refused review still reach the rules that bound their send-backs: a fail without
/// issues is taken the second time, and an unproven pass of an empty diff is recorded as a fail the
/// third time, each within a few turns instead of the reviewer's whole turn budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_sent_again_unchanged_is_judged_again_so_its_bounds_hold() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n[roles.reviewer]\nmax_turns = 20\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let script = Script {
        plan: vec![
            PlanUnit::new(
                "a",
                "Check the README",
                "ANSWER NO CHANGE NEEDED: it says it.",
                &[],
            ),
            PlanUnit::new("b", "Add b", "FILE b.txt := b\\n", &[]),
        ],
        ..Script::default()
    };
    let server = FakeServer::start(CopyingReviewer(ScriptedMission::new(script)), Default::default())
        .await
        .expect("fake server");
    let done = Run::task("Check").arg("--json").openai(&server).run(&repo).await;
    done.assert_code(1);
    let review_of = |unit: &str| {
        done.events_of("review_finished")
            .into_iter()
            .find(|e| e["unit"] == unit)
            .unwrap_or_else(|| panic!("{unit} was reviewed: {}", done.stdout))
    };
    let a = review_of("a");
    assert_eq!(a["review"]["verdict"], "fail", "{a}");
    let summary = a["review"]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("Recorded as a fail by the orchestrator") && summary.contains("3 times"),
        "{summary}"
    );
    assert_eq!(a["review"]["issues"][0]["title"], "No change was made", "{a}");
    let b = review_of("b");
    assert_eq!(b["review"]["verdict"], "fail", "{b}");
    assert_eq!(b["review"]["summary"], "Not good enough.", "{b}");
    let turns = |unit: &str| {
        requests_of(&server, "reviewer")
            .iter()
            .filter(|r| {
                r.first_user_text()
                    .contains(&format!("# The unit under review: {unit} —"))
            })
            .count()
    };
    assert_eq!(turns("a"), 3, "sent back twice, then recorded");
    assert_eq!(turns("b"), 2, "asked once for issues, then taken");
}

/// A reviewer that fails a unit for an invented reason, as the 1.5B field test's did ("returns 0
/// instead"): its quote is in no file, so the fail is sent back; it then quotes the real line, the fail
/// is recorded, and the worker's retry is told which line is meant. The fixed unit passes.
struct InventingReviewer(ScriptedMission);

impl Brain for InventingReviewer {
    fn respond(&self, request: &SeenRequest) -> Reply {
        let first = request.first_user_text();
        if role_of(request) != "reviewer" || first.contains("+    return a * b") {
            return self.0.respond(request);
        }
        let issue = |quote: &str| {
            serde_json::json!({"verdict": "fail", "summary": "mul is wrong",
                "issues": [{"title": "Multiply", "description": "mul must multiply",
                            "file": "calc.py", "quote": quote}]})
        };
        let arguments = match request.assistant_turns() {
            0 => issue("return 0 instead of the product"),
            _ => issue("    return a + b"),
        };
        Reply::ToolCalls {
            text: String::new(),
            calls: vec![("submit_review".into(), arguments.to_string())],
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_review_must_quote_the_line_and_the_worker_is_shown_it() {
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "m",
            "Add mul",
            "FILE calc.py := def mul(a, b):\\n    return a + b\\n\nFIX calc.py := def mul(a, b):\\n    return a * b\\n",
            &[],
        )],
        ..Script::default()
    };
    let server = FakeServer::start(
        InventingReviewer(ScriptedMission::new(script)),
        Default::default(),
    )
    .await
    .expect("fake server");
    let done = Run::task("Add mul")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(
        repo.read("calc.py").as_deref(),
        Some("def mul(a, b):\n    return a * b\n")
    );
    let refusals: Vec<String> = requests_of(&server, "reviewer")
        .iter()
        .flat_map(|r| r.messages.clone())
        .filter_map(|m| match m {
            SeenMessage::Tool { content, .. } if content.starts_with("Error:") => Some(content),
            _ => None,
        })
        .collect();
    let said = refusals.join("\n");
    assert!(
        said.contains("issue 1 \"Multiply\": the quote is not in `calc.py`"),
        "{said}"
    );
    let failed = done
        .events_of("review_finished")
        .into_iter()
        .find(|e| e["unit"] == "m" && e["review"]["verdict"] == "fail")
        .expect("the grounded fail was recorded");
    let description = failed["review"]["issues"][0]["description"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        description.contains("The line meant: \"return a + b\""),
        "{failed}"
    );
    let told = requests_of(&server, "worker")
        .iter()
        .any(|r| has_user_message(r, "mul must multiply\n  The line meant: \"return a + b\""));
    assert!(told, "the worker's retry names the line");
}

/// The careless case the 1.5B model showed: every unit claims that no change was needed and every
/// reviewer agrees. The result is the base commit, so the mission is not reported as done (exit 1),
/// says what each worker claimed, and spends no stage 2 or master review on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_that_changed_nothing_is_not_sealed() {
    let repo = TestRepo::new(&[]);
    let before = repo.git(&["rev-parse", "HEAD"]);
    let script = Script {
        plan: vec![
            PlanUnit::new(
                "add",
                "Add mul",
                "ANSWER NO CHANGE NEEDED: The unit is complete.",
                &[],
            ),
            PlanUnit::new("test", "Test mul", "ANSWER NO CHANGE NEEDED: nothing to do.", &[]),
        ],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Add a function mul")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    let finished = done.events_of("mission_finished");
    let summary = finished[0]["summary"].as_str().unwrap_or_default();
    assert_eq!(finished[0]["outcome"], "unsealed");
    assert!(summary.contains("nothing changed"), "{summary}");
    assert!(
        summary.contains("add (Add mul): NO CHANGE NEEDED: The unit is complete."),
        "{summary}"
    );
    assert!(summary.contains("[roles.worker] model"), "{summary}");
    assert!(requests_of(&server, "master_reviewer").is_empty());
    assert_eq!(repo.git(&["rev-parse", "HEAD"]), before, "main untouched");
    // Its branches go like any finished mission's.
    assert!(repo.branches().iter().all(|b| !b.starts_with("orchestrator/")));
}

/// A worker that runs out of turns fails that attempt: its half-done work is not reviewed, and the
/// next attempt continues it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_turns_fails_the_attempt_not_the_review() {
    let config = "[verify]\ntest = \"true\"\n[roles.worker]\nmax_turns = 2\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Write three",
            "FILE a.txt := a\nFILE b.txt := b\nFILE c.txt := c",
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Write three")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let notices = done.notices();
    assert!(
        notices
            .iter()
            .any(|n| n.contains("a: attempt 1 failed before review") && n.contains("ran out of turns")),
        "{notices:?}"
    );
    let reviews: Vec<_> = done
        .events_of("review_finished")
        .into_iter()
        .filter(|e| e["unit"] == "a")
        .collect();
    assert_eq!(reviews.len(), 1, "only the finished attempt was reviewed");
    assert_eq!(reviews[0]["attempt"], 2);
    for f in ["a.txt", "b.txt", "c.txt"] {
        assert!(repo.read(f).is_some(), "{f}");
    }
}

/// A worker that answers again without changing anything after its work failed verification is not
/// built and tested again (the same commit fails the same way): the attempt fails at once, and the
/// worker is told it changed nothing, with what failed. In the field the 1.5B answered "the problem
/// has been fixed" twice with the same tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_nothing_changed_since_a_failed_verification_is_not_verified_again() {
    let config = "[verify]\ntest = \"! grep -q broken a.txt\"\n[limits]\nunit_attempts = 3\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(Script {
        plan: vec![PlanUnit::new("a", "Write a", "FILE a.txt := broken", &[])],
        ..Script::default()
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    assert_ne!(done.code, Some(0));
    let tests = done
        .events_of("evidence_recorded")
        .into_iter()
        .filter(|e| e["unit"] == "a" && e["evidence"]["kind"] == "test")
        .count();
    assert_eq!(tests, 1, "the unchanged commit was tested once");
    let told = told_the_worker(&server);
    assert!(
        told.contains("you changed no file since your last attempt failed verification")
            && told.contains("! grep -q broken a.txt"),
        "{told}"
    );
}

/// A failure that says a name is missing ("NameError: name 'mul' is not defined") is told to the
/// worker with where the worktree defines that name, so the fix (an import) is one step away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_name_in_a_failure_is_shown_where_it_is_defined() {
    let test =
        "grep -q 'from calc import mul' t.py || { echo \"NameError: name 'mul' is not defined\"; exit 1; }";
    let config = format!(
        "[verify]\ntest = \"{}\"\n[limits]\nunit_attempts = 2\n",
        test.replace('"', "\\\"")
    );
    let repo = TestRepo::new(&[("orchestrator.toml", &config), ("t.py", "import unittest\n")]);
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "Add mul",
            "FILE calc.py := def mul(a, b):\\n    return a * b\\n\nFIX t.py := from calc import mul\\n",
            &[],
        )],
        ..Script::default()
    })
    .await;
    let done = Run::task("Add mul")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let told = told_the_worker(&server);
    assert!(told.contains("- `mul`: calc.py:1 `def mul(a, b):`"), "{told}");
}

/// A test that passed on the base commit and fails after the unit's change is named to the worker as
/// broken by it; a failing test the base did not have is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_that_passed_on_the_base_and_fails_now_is_named_as_broken() {
    let test = "if grep -q broken a.txt 2>/dev/null; then echo 'FAIL: test_old (t.T.test_old)'; \
                echo 'FAIL: test_new (t.T.test_new)'; echo 'Ran 2 tests in 0.001s'; exit 1; fi; echo 'Ran 1 test in 0.001s'";
    let config = format!(
        "[verify]\ntest = \"{}\"\n[limits]\nunit_attempts = 2\n",
        test.replace('"', "\\\"")
    );
    let repo = TestRepo::new(&[
        ("orchestrator.toml", &config),
        ("t.py", "class T:\n    def test_old(self):\n        pass\n"),
    ]);
    let server = fake(Script {
        plan: vec![PlanUnit::new(
            "a",
            "Write a",
            "FILE a.txt := broken\nFIX a.txt := fine",
            &[],
        )],
        ..Script::default()
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let told = told_the_worker(&server);
    let note = told
        .lines()
        .find(|l| l.contains("passed on the mission's base commit"))
        .unwrap_or_else(|| panic!("{told}"));
    assert!(note.contains("`test_old (t.T.test_old)`"), "{note}");
    assert!(!note.contains("test_new"), "a test the base did not have: {note}");
}

/// Under `[verify] protect_tests`, a passing run on a tree that changes what an existing test asserts
/// fails, naming the assertion; putting it back (and adding a new test) passes. Without it, the same
/// change passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_assertion_of_an_existing_test_fails_under_protect_tests() {
    let script = || {
        Script {
        plan: vec![PlanUnit::new(
            "a",
            "Add mul",
            "FILE test_calc.py := def test_add():\\n    assert add(2, 3) == 6\\n\n\
             FIX test_calc.py := def test_add():\\n    assert add(2, 3) == 5\\n\\n\\ndef test_mul():\\n    assert mul(2, 3) == 6\\n",
            &[],
        )],
        ..Script::default()
    }
    };
    let base_test = "def test_add():\n    assert add(2, 3) == 5\n";
    for protect in [true, false] {
        let config =
            format!("[verify]\ntest = \"true\"\nprotect_tests = {protect}\n[limits]\nunit_attempts = 2\n");
        let repo = TestRepo::new(&[("orchestrator.toml", &config), ("test_calc.py", base_test)]);
        let server = fake(script()).await;
        let done = Run::task("Add mul")
            .arg("--json")
            .openai(&server)
            .run(&repo)
            .await;
        done.assert_code(0);
        let told = told_the_worker(&server);
        let failed = told.contains("changes what tests of the mission's base commit assert");
        assert_eq!(failed, protect, "{told}");
        if protect {
            assert!(told.contains("test_calc.py: `assert add(2, 3) == 5`"), "{told}");
            let test = repo.read("test_calc.py").unwrap_or_default();
            assert!(test.contains("== 5") && test.contains("test_mul"), "{test}");
        }
    }
}

/// Everything the runtime told the workers (their user messages), joined.
fn told_the_worker(server: &FakeServer) -> String {
    requests_of(server, "worker")
        .iter()
        .flat_map(|r| r.messages.clone())
        .filter_map(|m| match m {
            SeenMessage::User { text } => Some(text),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}
