//! End-to-end missions: the real binary, a temporary git repository and the scripted fake model.
//! Every assertion is about the resulting repository or what the model was sent, not about mocks.

use std::time::Duration;

use super::support::*;
use orchestrator_fake_model::script::{worker_unit, PlanUnit, Script};
use orchestrator_fake_model::FakeOptions;

fn plan(units: Vec<PlanUnit>) -> Script {
    Script {
        plan: units,
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_units_are_sealed_onto_the_users_branch() {
    // Four scouts although the repository is tiny (by size it would get one).
    let config = "[verify]\ntest = \"true\"\n[limits]\nscouts = 4\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(plan(vec![
        PlanUnit::file("a", "src/a.txt", "alpha"),
        PlanUnit::file("b", "src/b.txt", "beta"),
        // Unit ids that match the mission's own worktree and branch names must not collide with them.
        PlanUnit::file("integration", "docs/c.md", "gamma"),
        PlanUnit::file("base", "docs/d.md", "delta"),
    ]))
    .await;
    // --keep-branches: the integration branch's reflog is looked at below (by default an applied
    // mission's branches go; tests/suite/cleanup.rs covers that).
    let done = Run::task("Add three files")
        .arg("--keep-branches")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert!(done.stdout.contains("SEALED"), "{}", done.stdout);
    assert_eq!(repo.read("src/a.txt").as_deref(), Some("alpha"));
    assert_eq!(repo.read("src/b.txt").as_deref(), Some("beta"));
    assert_eq!(repo.read("docs/c.md").as_deref(), Some("gamma"));
    let files = repo.files_on_main();
    assert!(
        files.contains(&"src/a.txt".to_string()) && files.contains(&"docs/c.md".to_string()),
        "{files:?}"
    );
    assert_eq!(
        repo.git(&["status", "--porcelain"]),
        "",
        "the user's tree is clean after the fast-forward"
    );
    assert_eq!(repo.read("docs/d.md").as_deref(), Some("delta"));
    // Four scouts, a planner, a worker and a reviewer per unit, one master reviewer.
    assert_eq!(
        requests_of(&server, "scout")
            .iter()
            .filter(|r| r.tool_results().is_empty())
            .count(),
        4
    );
    assert_eq!(requests_of(&server, "master_reviewer").len(), 1);
    // No worktree is left behind; unit branches are gone, the integration branch stays (kept on request).
    assert_eq!(repo.worktrees().len(), 1, "{:?}", repo.worktrees());
    let branches = repo.branches();
    assert_eq!(
        branches.iter().filter(|b| b.starts_with("orchestrator/")).count(),
        1,
        "{branches:?}"
    );
    let integration = branches
        .iter()
        .find(|b| b.ends_with("/integration"))
        .expect("the integration branch");
    // One merge commit per unit on the integration branch, as reviewable history.
    let merges = repo.git(&["log", "--merges", "--first-parent", "--format=%s", integration]);
    for id in ["a", "b", "integration", "base"] {
        assert!(
            merges.lines().any(|l| l.starts_with(&format!("Merge {id}: "))),
            "{merges}"
        );
    }
    // Clean merges are made in-process (the reflog says `commit (merge)`, where `git merge` would
    // write `merge <branch>: Merge made by …`).
    let reflog = repo.git(&["reflog", "show", "--format=%gs", integration]);
    assert_eq!(
        reflog
            .lines()
            .filter(|l| l.starts_with("commit (merge): Merge "))
            .count(),
        4,
        "{reflog}"
    );
    let todo = repo.read(".orchestrator/todo.md").expect("todo mirror");
    assert!(todo.contains("- [x] `a` Create src/a.txt"), "{todo}");
    assert!(repo
        .read(".git/info/exclude")
        .unwrap_or_default()
        .contains("/.orchestrator/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_run_in_order() {
    let repo = TestRepo::new(&[]);
    let server = fake(plan(vec![
        PlanUnit::new("third", "Third", "FILE 3.txt := 3", &["second"]),
        PlanUnit::new("first", "First", "FILE 1.txt := 1", &[]),
        PlanUnit::new("second", "Second", "FILE 2.txt := 2", &["first"]),
    ]))
    .await;
    let done = Run::task("Ordered work")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let requests = server.requests();
    let span = |unit: &str| {
        let seqs: Vec<u64> = requests
            .iter()
            .filter(|r| {
                worker_unit(r).as_deref() == Some(unit)
                    || r.first_user_text()
                        .contains(&format!("unit under review: {unit} "))
            })
            .map(|r| r.seq)
            .collect();
        (
            *seqs.iter().min().expect("unit was worked on"),
            *seqs.iter().max().expect("unit was worked on"),
        )
    };
    let (first, second, third) = (span("first"), span("second"), span("third"));
    assert!(
        first.1 < second.0,
        "second started before first was reviewed: {first:?} {second:?}"
    );
    assert!(
        second.1 < third.0,
        "third started before second was reviewed: {second:?} {third:?}"
    );
    // The dependent unit starts from a tree that holds its dependency's work.
    let merged: Vec<String> = done
        .events_of("merged")
        .iter()
        .map(|e| e["unit"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(merged, vec!["first", "second", "third"]);
    assert_eq!(repo.read("3.txt").as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fractal_spawning_reaches_depth_two_and_refuses_deeper() {
    let repo = TestRepo::new(&[]);
    let description = "SPAWN child :: SPAWN grandchild :: SPAWN too-deep :: FILE no.txt := x ;;; FILE deep.txt := deep ;; FILE child.txt := c\nFILE top.txt := t";
    let server = fake(plan(vec![PlanUnit::new("top", "Top", description, &[])])).await;
    let done = Run::task("Nested work")
        .arg("--json")
        .arg("--max-depth")
        .arg("2")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("top.txt").as_deref(), Some("t"));
    assert_eq!(repo.read("child.txt").as_deref(), Some("c"));
    assert_eq!(repo.read("deep.txt").as_deref(), Some("deep"));
    assert_eq!(
        repo.read("no.txt"),
        None,
        "the unit beyond the depth limit must not run"
    );
    let spawned: Vec<String> = done
        .events_of("units_spawned")
        .iter()
        .map(|e| e["parent"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(spawned, vec!["top", "top.1"]);
    let grandchild: Vec<_> = requests_of(&server, "worker")
        .into_iter()
        .filter(|r| worker_unit(r).as_deref() == Some("top.1.1"))
        .collect();
    assert!(!grandchild.is_empty());
    assert!(
        grandchild.iter().all(|r| !r.offers("spawn")),
        "spawn is not offered at the depth limit"
    );
    assert!(
        tool_results(&server)
            .iter()
            .any(|(tool, content, _)| tool == "spawn"
                && content.starts_with("Error: spawn refused")
                && content.contains("depth limit")),
        "a spawn beyond the limit gets a tool error"
    );
    assert!(
        tool_results(&server)
            .iter()
            .any(|(tool, content, _)| tool == "spawn" && content.contains("1 of 1 passed")),
        "the parent's spawn call returns its children's outcomes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_parallel_caps_model_requests_in_flight() {
    let repo = TestRepo::new(&[]);
    let units = (0..10)
        .map(|i| PlanUnit::file(&format!("u{i}"), &format!("f{i}.txt"), "x"))
        .collect();
    let options = FakeOptions {
        latency: Duration::from_millis(60),
        ..FakeOptions::default()
    };
    let server = fake_with(plan(units), options).await;
    let done = Run::task("Ten files")
        .arg("--max-parallel")
        .arg("3")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert!(
        server.max_in_flight() <= 3,
        "{} requests were in flight",
        server.max_in_flight()
    );
    assert_eq!(
        server.max_in_flight(),
        3,
        "ten ready units should fill all three slots"
    );
    assert_eq!(
        repo.files_on_main().iter().filter(|f| f.starts_with('f')).count(),
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_units_run_close_to_fifty_at_once() {
    let repo = TestRepo::new(&[]);
    let units = (0..50)
        .map(|i| PlanUnit::file(&format!("u{i}"), &format!("out/{i}.txt"), "x"))
        .collect();
    // Latency longer than it takes to create 50 worktrees, so the sessions overlap.
    let options = FakeOptions {
        latency: Duration::from_millis(3500),
        ..FakeOptions::default()
    };
    let server = fake_with(plan(units), options).await;
    let done = Run::task("Fifty files")
        .arg("--max-parallel")
        .arg("50")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let peak = server.max_in_flight();
    assert!((40..=50).contains(&peak), "peak in flight was {peak}");
    assert_eq!(
        repo.files_on_main()
            .iter()
            .filter(|f| f.starts_with("out/"))
            .count(),
        50
    );
    assert_eq!(repo.worktrees().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_tests_send_the_unit_back_and_the_fix_passes() {
    let repo = TestRepo::new(&[
        ("orchestrator.toml", "[verify]\ntest = \"sh check.sh\"\n"),
        ("check.sh", "if [ -f calc.txt ]; then grep -q good calc.txt; fi\n"),
    ]);
    let server = fake(plan(vec![PlanUnit::new(
        "calc",
        "Calc",
        "FILE calc.txt := bad\nFIX calc.txt := good",
        &[],
    )]))
    .await;
    let done = Run::task("Make calc good")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("calc.txt").as_deref(), Some("good"));
    let evidence = done.events_of("evidence_recorded");
    let unit_runs: Vec<i64> = evidence
        .iter()
        .filter(|e| e["unit"] == "calc")
        .map(|e| e["evidence"]["exit_code"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(unit_runs, vec![1, 0], "stage 1 failed once, then passed");
    assert!(evidence.iter().all(|e| e["evidence"]["command"] == "sh check.sh"
        && e["evidence"]["tree"].as_str().is_some_and(|t| t.len() == 40)));
    let workers = requests_of(&server, "worker");
    assert!(workers
        .iter()
        .any(|r| has_user_message(r, "Stage 1 verification failed")));
    // The failing attempt was not sent to a reviewer: evidence alone failed it.
    assert_eq!(requests_of(&server, "reviewer").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_review_returns_to_the_same_worker() {
    let repo = TestRepo::new(&[]);
    let mut script = plan(vec![PlanUnit::new(
        "r",
        "Reviewed",
        "FILE r.txt := first\nFIX r.txt := second",
        &[],
    )]);
    script.review_failures.insert("Reviewed".into(), 1);
    let server = fake(script).await;
    Run::task("Reviewed work")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    assert_eq!(repo.read("r.txt").as_deref(), Some("second"));
    let workers = requests_of(&server, "worker");
    assert!(workers
        .iter()
        .any(|r| has_user_message(r, "Stage 1 review failed") && has_user_message(r, "# Your unit: r")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_units_are_resolved_and_sealed() {
    let repo = TestRepo::new(&[("shared.txt", "original\n")]);
    let server = fake(plan(vec![
        PlanUnit::new("left", "Left", "FILE shared.txt := left\\n", &[]),
        PlanUnit::new("right", "Right", "FILE shared.txt := right\\n", &[]),
    ]))
    .await;
    let done = Run::task("Edit the same line twice")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let shared = repo.read("shared.txt").expect("shared.txt");
    assert!(shared.contains("left") && shared.contains("right"), "{shared}");
    assert!(
        !shared.contains("<<<<<<<") && !shared.contains(">>>>>>>"),
        "{shared}"
    );
    assert_eq!(done.events_of("merge_conflict").len(), 1);
    assert!(!requests_of(&server, "conflict_resolver").is_empty());
    assert_eq!(done.events_of("merged").len(), 2);
}

/// One session at a time gains nothing from building units that share a planned file side by side:
/// the later one waits for the earlier and starts from its merged work, so they never conflict (the
/// field's 1.5B planner wrote two such units with no dependency, and each round they collided).
/// With sessions in parallel the plan is kept as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_session_at_a_time_units_sharing_a_file_are_ordered() {
    let units = || {
        plan(vec![
            PlanUnit::new("left", "Left", "FILE shared.txt := left\\n", &[]).with_files(&["shared.txt"]),
            PlanUnit::new("right", "Right", "FILE shared.txt := right\\n", &[])
                .with_files(&["./shared.txt", "other.txt"]),
        ])
    };
    let repo = TestRepo::new(&[("shared.txt", "original\n")]);
    let server = fake(units()).await;
    let done = Run::task("Edit the same line twice")
        .arg("--max-parallel")
        .arg("1")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let accepted = &done.events_of("plan_accepted")[0]["units"];
    assert_eq!(accepted[0]["depends_on"], serde_json::json!([]), "{accepted}");
    assert_eq!(
        accepted[1]["depends_on"],
        serde_json::json!(["left"]),
        "{accepted}"
    );
    assert!(done.events_of("merge_conflict").is_empty(), "no conflict");
    assert_eq!(repo.read("shared.txt").as_deref(), Some("right\n"));

    let repo = TestRepo::new(&[("shared.txt", "original\n")]);
    let server = fake(units()).await;
    let done = Run::task("Edit the same line twice")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let accepted = &done.events_of("plan_accepted")[0]["units"];
    assert_eq!(accepted[1]["depends_on"], serde_json::json!([]), "{accepted}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_review_failure_starts_another_round() {
    let repo = TestRepo::new(&[]);
    let mut script = plan(vec![PlanUnit::file("base", "base.txt", "b")]);
    script.master_failures = 1;
    script.master_issue_description = "FILE extra.txt := added in round 2".into();
    let server = fake(script).await;
    let done = Run::task("Two rounds")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("extra.txt").as_deref(), Some("added in round 2"));
    let rounds = done.events_of("round_finished");
    assert_eq!(rounds.len(), 2, "{rounds:#?}");
    assert_eq!(rounds[0]["passed"], false);
    assert_eq!(rounds[0]["follow_up"][0]["id"], "r2-1");
    assert_eq!(rounds[1]["passed"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_that_never_passes_stops_at_the_round_limit() {
    let repo = TestRepo::new(&[]);
    let mut script = plan(vec![PlanUnit::file("base", "base.txt", "b")]);
    script.master_failures = usize::MAX;
    script.master_issue_description = "FILE more.txt := more".into();
    let server = fake(script).await;
    let done = Run::task("Never good enough")
        .arg("--rounds")
        .arg("2")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    assert!(
        done.stdout.contains("NOT SEALED") && done.stdout.contains("not sealed after 2 round(s)"),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("Missing piece 2"),
        "the report names what is missing: {}",
        done.stdout
    );
    assert_eq!(requests_of(&server, "master_reviewer").len(), 2);
    assert_eq!(
        repo.read("base.txt"),
        None,
        "an unsealed mission leaves the user's branch alone"
    );
    assert_eq!(repo.worktrees().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tool_json_gets_an_error_result_and_the_session_recovers() {
    let repo = TestRepo::new(&[]);
    let server = fake(plan(vec![PlanUnit::new(
        "j",
        "Json",
        "BADJSON\nFILE j.txt := fine",
        &[],
    )]))
    .await;
    Run::task("Recover from bad JSON")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    assert_eq!(repo.read("j.txt").as_deref(), Some("fine"));
    let results = tool_results(&server);
    // The OpenAI format has no error flag on tool results; the client marks errors in the text.
    assert!(
        results
            .iter()
            .any(|(_, content, _)| content.starts_with("Error: ") && content.contains("not valid JSON")),
        "{results:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_plans_are_fed_back_to_the_planner() {
    let repo = TestRepo::new(&[]);
    let mut script = plan(vec![PlanUnit::file("ok", "ok.txt", "ok")]);
    script.bad_plans = vec![
        serde_json::json!({"tasks": []}),
        serde_json::json!({"tasks": [
            {"id": "a", "title": "A", "description": "x", "depends_on": ["b"]},
            {"id": "b", "title": "B", "description": "y", "depends_on": ["a"]}
        ]}),
    ];
    let server = fake(script).await;
    let done = Run::task("Plan carefully")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let rejected = done.events_of("plan_rejected");
    assert_eq!(rejected.len(), 2);
    assert!(rejected[1]["problems"][0]
        .as_str()
        .unwrap_or_default()
        .contains("cycle"));
    assert_eq!(repo.read("ok.txt").as_deref(), Some("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_api_runs_a_mission_too() {
    let repo = TestRepo::new(&[]);
    let server = fake(plan(vec![PlanUnit::file("a", "a.txt", "via anthropic")])).await;
    let done = Run::task("Anthropic mission")
        .arg("--provider")
        .arg("anthropic")
        .env("ANTHROPIC_BASE_URL", &server.anthropic_base_url())
        .env("ANTHROPIC_API_KEY", "test-key")
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("via anthropic"));
    assert!(server
        .requests()
        .iter()
        .all(|r| r.api == orchestrator_fake_model::Api::Anthropic));
    // The planner must answer with a call: Anthropic's `tool_choice: {"type": "any"}`.
    assert!(requests_of(&server, "planner")
        .iter()
        .all(|r| r.tool_choice.as_deref() == Some("any")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_output_is_not_committed() {
    // The test command leaves a stray file behind in every worktree it runs in, and fails once, so
    // the worker's second commit would sweep the stray file in if verification left it there.
    let check = "echo junk > stray.log; if [ -f a.txt ]; then grep -q good a.txt; fi";
    let repo = TestRepo::new(&[("orchestrator.toml", &format!("[verify]\ntest = \"{check}\"\n"))]);
    let server = fake(plan(vec![PlanUnit::new(
        "a",
        "A",
        "FILE a.txt := bad\nFIX a.txt := good",
        &[],
    )]))
    .await;
    Run::task("Dirty builds")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("good"));
    assert!(
        !repo.files_on_main().contains(&"stray.log".to_string()),
        "{:?}",
        repo.files_on_main()
    );
    assert_eq!(repo.read("stray.log"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_cleanly_with_exit_3() {
    let repo = TestRepo::new(&[]);
    let options = FakeOptions {
        latency: Duration::from_millis(400),
        ..FakeOptions::default()
    };
    let server = fake_with(
        plan(
            (0..4)
                .map(|i| PlanUnit::file(&format!("u{i}"), &format!("{i}.txt"), "x"))
                .collect(),
        ),
        options,
    )
    .await;
    let child = Run::task("Interrupted work")
        .openai(&server)
        .command(&repo)
        .spawn()
        .expect("binary starts");
    // Interrupt once workers are running.
    for _ in 0..200 {
        if !requests_of(&server, "worker").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let pid = child.id().expect("pid") as i32;
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(pid, libc::SIGINT) };
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("stops promptly after Ctrl-C")
        .expect("waits");
    let done = Finished::from(out);
    done.assert_code(3);
    assert!(done.stdout.contains("INTERRUPTED"), "{}", done.stdout);
    assert_eq!(
        repo.worktrees().len(),
        1,
        "no worktree is left behind: {:?}",
        repo.worktrees()
    );
    assert!(
        repo.read(".orchestrator/lock").unwrap_or_default().is_empty(),
        "the lock is released"
    );
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_replays_the_mission_log() {
    let repo = TestRepo::new(&[]);
    let server = fake(plan(vec![PlanUnit::file("a", "a.txt", "a")])).await;
    let done = Run::task("Logged").arg("--json").openai(&server).run(&repo).await;
    done.assert_code(0);
    let logged = Run::cmd(&["logs", "--json"]).run(&repo).await;
    logged.assert_code(0);
    assert_eq!(
        logged.stdout, done.stdout,
        "the log holds exactly the events that were streamed"
    );
    let human = Run::cmd(&["logs"]).run(&repo).await;
    assert!(human.stdout.contains("mission sealed:"), "{}", human.stdout);
    assert_eq!(
        human.stdout.lines().count(),
        done.stdout.lines().count(),
        "one line per event"
    );
}

/// What the progress lines, `logs` and `status` print for a person carries text from models and other
/// hosts; escape sequences in it are shown, never sent to the terminal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_sequences_in_what_is_logged_reach_no_terminal() {
    let repo = TestRepo::new(&[]);
    let server = fake(plan(vec![PlanUnit::file("a", "a.txt", "a")])).await;
    let objective = "Write a\u{1b}]0;owned\u{7}\u{1b}[2J";
    let done = Run::task(objective).openai(&server).run(&repo).await;
    done.assert_code(0);
    let logged = Run::cmd(&["logs"]).run(&repo).await;
    let status = Run::cmd(&["status"]).run(&repo).await;
    for (what, text) in [
        ("progress", &done.stderr),
        ("logs", &logged.stdout),
        ("status", &status.stdout),
    ] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{what}: {text:?}"
        );
    }
    assert!(
        logged.stdout.contains("Write a\\u{1b}]0;owned"),
        "{}",
        logged.stdout
    );
    // The JSON stream keeps the text as it is, escaped by JSON itself.
    let json = Run::cmd(&["logs", "--json"]).run(&repo).await;
    assert!(json.stdout.contains("Write a\\u001b]0;owned"), "{}", json.stdout);
}

/// Scouting scales with the repository: a tiny one gets one scout, and `[limits] scouts = 0` leaves
/// discovery to the pre-scan alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scouting_scales_with_the_repository() {
    let repo = TestRepo::new(&[]);
    let server = fake(plan(vec![PlanUnit::file("a", "a.txt", "a")])).await;
    Run::task("Write a")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    let first_calls = |server: &orchestrator_fake_model::FakeServer| {
        requests_of(server, "scout")
            .iter()
            .filter(|r| r.tool_results().is_empty())
            .count()
    };
    assert_eq!(first_calls(&server), 1, "a tiny repository gets one scout");

    let config = "[verify]\ntest = \"true\"\n[limits]\nscouts = 0\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(plan(vec![PlanUnit::file("a", "a.txt", "a")])).await;
    Run::task("Write a")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    assert_eq!(first_calls(&server), 0, "the pre-scan alone");
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
}
