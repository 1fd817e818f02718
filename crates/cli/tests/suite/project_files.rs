//! The project's own files shaping the sessions (issue #18): AGENTS.md / CLAUDE.md instructions given
//! to every session of every role, and role files (`.orchestrator/roles/<role>.md`) replacing a
//! built-in role's prompt and settings; `orchestrator roles list|show|init`.

use super::support::*;
use orchestrator_fake_model::script::{role_of, PlanUnit, Script};

/// Two units that write the same line: a conflict resolver runs too, so every role is seen.
fn conflicting_plan() -> Script {
    Script {
        plan: vec![
            PlanUnit::new("left", "Left", "FILE shared.txt := left\\n", &[]),
            PlanUnit::new("right", "Right", "FILE shared.txt := right\\n", &[]),
        ],
        ..Script::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_md_reaches_every_session_of_every_role() {
    // The root file is 10 MB (cut to the limit); the nested one applies to its folder; the ones in
    // node_modules and under .gitignore'd folders are another project's and are not read.
    let root_rules = format!(
        "ROOT-RULE: keep functions short.\n{}",
        "filler line\n".repeat(900_000)
    );
    let repo = TestRepo::new(&[
        (
            "orchestrator.toml",
            "[verify]\ntest = \"true\"\n[limits]\nscouts = 1\n",
        ),
        ("shared.txt", "original\n"),
        ("AGENTS.md", &root_rules),
        ("sub/AGENTS.md", "SUB-RULE: tabs in sub/.\n"),
        ("node_modules/pkg/AGENTS.md", "NPM-RULE: never read me.\n"),
    ]);
    // An uncommitted change is the user's, not the mission's: the base commit's text is given.
    repo.write("sub/AGENTS.md", "UNCOMMITTED-RULE\n");
    let server = fake(conflicting_plan()).await;
    let done = Run::task("Edit the same line twice")
        .arg("--json")
        .arg("--allow-dirty")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);

    let requests = server.requests();
    let roles = [
        "scout",
        "planner",
        "worker",
        "reviewer",
        "conflict_resolver",
        "master_reviewer",
    ];
    for role in roles {
        assert!(
            requests.iter().any(|r| role_of(r) == role),
            "a {role} session ran"
        );
    }
    let block = |system: &str| -> String {
        let at = system.find("# Project instructions").expect("the block");
        system[at..].to_string()
    };
    // Compaction summaries have a prompt of their own.
    let sessions: Vec<_> = requests.iter().filter(|r| roles.contains(&role_of(r))).collect();
    let first_block = block(&sessions[0].system);
    for request in sessions {
        let role = role_of(request);
        let system = &request.system;
        assert!(
            system.starts_with(&format!("# Role: {role}\n")),
            "{role}: {system:.200}"
        );
        assert!(system.contains("ROOT-RULE: keep functions short."), "{role}");
        assert!(
            system.contains("## sub/AGENTS.md (for files under sub/)\n\nSUB-RULE: tabs in sub/."),
            "{role}"
        );
        for unwanted in ["NPM-RULE", "UNCOMMITTED-RULE"] {
            assert!(!system.contains(unwanted), "{role} was given {unwanted}");
        }
        assert!(
            system
                .contains("more bytes of AGENTS.md cut: instruction files are given up to 16384 bytes each"),
            "{role}: the model is told of the cut"
        );
        assert!(system.len() < 40_000, "{role}: {} bytes", system.len());
        assert_eq!(
            block(system),
            first_block,
            "{role}: the same block in every session"
        );
    }

    let recorded = done.events_of("project_files");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    let paths: Vec<&str> = recorded[0]["instructions"]
        .as_array()
        .expect("instructions")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(paths, ["AGENTS.md", "sub/AGENTS.md"]);
    assert_eq!(recorded[0]["instructions"][0]["cut"], true);

    let report = Run::cmd(&["report"]).run(&repo).await;
    report.assert_code(0);
    assert!(
        report
            .stdout
            .contains("| Project instructions | `AGENTS.md` (cut to the limit), `sub/AGENTS.md` |"),
        "{}",
        report.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_file_changes_the_model_and_prompt_of_its_role() {
    let repo = TestRepo::new(&[]);
    repo.write(
        ".orchestrator/roles/reviewer.md",
        "---\nname: reviewer\ndescription: a stricter reviewer\nmodel: fake-reviewer-model\nmax_tokens: 321\n---\n\
         You are the strict reviewer STRICT-MARKER. Call `submit_review` when done.\n",
    );
    let server = fake(Script {
        plan: vec![PlanUnit::file("a", "a.txt", "alpha")],
        ..Script::default()
    })
    .await;
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    let reviewers = requests_of(&server, "reviewer");
    assert!(!reviewers.is_empty());
    for request in &reviewers {
        assert_eq!(request.model, "fake-reviewer-model");
        assert_eq!(request.max_tokens, Some(321));
        assert!(
            request
                .system
                .starts_with("# Role: reviewer\nYou are the strict reviewer STRICT-MARKER."),
            "{}",
            request.system
        );
    }
    for request in server.requests().iter().filter(|r| role_of(r) != "reviewer") {
        assert_eq!(request.model, MODEL, "{}", role_of(request));
        assert!(!request.system.contains("STRICT-MARKER"));
    }
    let recorded = done.events_of("project_files");
    assert_eq!(recorded[0]["roles"][0]["path"], ".orchestrator/roles/reviewer.md");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_role_file_is_refused_before_any_model_call() {
    let repo = TestRepo::new(&[]);
    repo.write(
        ".orchestrator/roles/worker.md",
        "---\nmodel: m\ntemprature: 0.2\n---\nWork.\n",
    );
    let server = fake(Script::default()).await;
    let done = Run::task("Anything").openai(&server).run(&repo).await;
    done.assert_code(2);
    assert!(
        done.stderr.contains(".orchestrator/roles/worker.md") && done.stderr.contains("temprature"),
        "{}",
        done.stderr
    );
    assert!(server.requests().is_empty(), "no model call");

    repo.write(".orchestrator/roles/worker.md", "---\nmodel: m\n---\n\n");
    let done = Run::task("Anything").openai(&server).run(&repo).await;
    done.assert_code(2);
    assert!(
        done.stderr
            .contains(".orchestrator/roles/worker.md has no prompt"),
        "{}",
        done.stderr
    );
    std::fs::remove_file(repo.path().join(".orchestrator/roles/worker.md")).expect("remove");
    repo.write(".orchestrator/roles/wizard.md", "Do magic.\n");
    let done = Run::task("Anything").openai(&server).run(&repo).await;
    done.assert_code(2);
    assert!(
        done.stderr
            .contains(".orchestrator/roles/wizard.md is a specialist reviewer (its name is no built-in role) but sets no `kind`"),
        "{}",
        done.stderr
    );
    assert!(server.requests().is_empty(), "no model call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_init_writes_the_built_in_roles_and_show_tells_where_each_setting_came_from() {
    let repo = TestRepo::new(&[
        ("orchestrator.toml", "[roles.worker]\nmax_tokens = 777\n"),
        ("AGENTS.md", "ROOT-RULE\n"),
    ]);
    let listed = Run::cmd(&["roles", "list"]).run(&repo).await;
    listed.assert_code(0);
    assert!(
        listed.stdout.contains("worker             built in"),
        "{}",
        listed.stdout
    );

    let init = Run::cmd(&["roles", "init"]).run(&repo).await;
    init.assert_code(0);
    assert!(
        init.stdout.contains("wrote .orchestrator/roles/worker.md"),
        "{}",
        init.stdout
    );
    let written = repo
        .read(".orchestrator/roles/worker.md")
        .expect("the worker's file");
    assert!(
        written.starts_with("---\n") && written.contains("You are a worker."),
        "{written}"
    );

    // The written files change nothing until edited: the prompt is the built-in one.
    let show = Run::cmd(&["roles", "show", "worker"]).run(&repo).await;
    show.assert_code(0);
    assert!(
        show.stdout.contains("prompt: .orchestrator/roles/worker.md"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout
            .contains("--- system prompt ---\n# Role: worker\nYou are a worker."),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("ROOT-RULE"), "{}", show.stdout);
    let line = |key: &str| line_of(&show.stdout, key);
    assert!(
        line("model").contains(MODEL) && line("model").contains("ORCHESTRATOR_MODEL"),
        "{}",
        show.stdout
    );
    assert!(line("max_tokens").contains("777") && line("max_tokens").contains("[roles.worker] in"));
    assert!(line("max_turns").contains("(default)"), "{}", show.stdout);

    let again = Run::cmd(&["roles", "init"]).run(&repo).await;
    again.assert_code(2);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    repo.write(
        ".orchestrator/roles/worker.md",
        "---\nmax_turns: 9\n---\nMy own worker.\n",
    );
    let show = Run::cmd(&["roles", "show", "worker"]).run(&repo).await;
    show.assert_code(0);
    assert!(
        line_of(&show.stdout, "max_turns").contains(".orchestrator/roles/worker.md"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("# Role: worker\nMy own worker."),
        "{}",
        show.stdout
    );
    Run::cmd(&["roles", "init", "--force"])
        .run(&repo)
        .await
        .assert_code(0);
    let restored = repo
        .read(".orchestrator/roles/worker.md")
        .expect("the worker's file");
    assert!(restored.contains("You are a worker."), "{restored}");

    let unknown = Run::cmd(&["roles", "show", "wizard"]).run(&repo).await;
    unknown.assert_code(2);
    assert!(
        unknown.stderr.contains("unknown role `wizard`"),
        "{}",
        unknown.stderr
    );
}

fn line_of(text: &str, key: &str) -> String {
    text.lines()
        .find(|l| l.trim_start().starts_with(key))
        .unwrap_or_default()
        .to_string()
}
