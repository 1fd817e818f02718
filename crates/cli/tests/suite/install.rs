//! `orchestrator install opencode` / `uninstall opencode`: the real binary on temporary repositories,
//! with HOME, XDG_CONFIG_HOME and OPENCODE_CONFIG_DIR in temporary folders. What matters is the
//! bytes of the config files: the user's config comes back exactly as it was.

use std::path::{Path, PathBuf};

use super::support::*;
use orchestrator_fake_model::script::{role_of, PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeOptions, FakeServer, Reply, SeenMessage, SeenRequest};
use orchestrator_test_support::opencode::{
    bin as opencode_bin, offline_env, write_global_config, FakeProvider, REMOVED_ENV,
};
use serde_json::{json, Value};

/// A commented JSONC config with other MCP servers and commands, and trailing commas.
const COMMENTED: &str = r#"// My OpenCode settings.
{
  "$schema": "https://opencode.ai/config.json",
  /* models */
  "model": "local/qwen",
  "mcp": {
    // docs search
    "docs": {
      "type": "remote",
      "url": "http://127.0.0.1:9/mcp",
    },
  },
  "command": {
    "review": {
      "template": "Review the diff", // short
    },
  },
}
"#;

const TABS_CRLF: &str = "{\r\n\t\"model\": \"local/qwen\",\r\n\t\"mcp\": {\r\n\t\t\"docs\": {\"type\": \"remote\", \"url\": \"http://127.0.0.1:9/mcp\"}\r\n\t}\r\n}\r\n";

const PLAIN: &str = "{\n    \"autoupdate\": false\n}";

/// Runs `orchestrator <args>` in the repository with no OpenCode variables but those given.
async fn run(repo: &TestRepo, args: &[&str], env: &[(&str, &Path)]) -> Finished {
    let mut run = Run::cmd(args)
        .without_env("OPENCODE_CONFIG_DIR")
        .without_env("OPENCODE_CONFIG");
    for (key, value) in env {
        run = run.env(key, &value.to_string_lossy());
    }
    run.run(repo).await
}

async fn install(repo: &TestRepo, extra: &[&str]) -> Finished {
    run(repo, &[&["install", "opencode"], extra].concat(), &[]).await
}

async fn uninstall(repo: &TestRepo, extra: &[&str]) -> Finished {
    run(repo, &[&["uninstall", "opencode"], extra].concat(), &[]).await
}

fn backup(file: &Path) -> PathBuf {
    let mut name = file.file_name().expect("a file name").to_os_string();
    name.push(".orchestrator-backup");
    file.with_file_name(name)
}

/// The file as JSON (comments and trailing commas allowed, as OpenCode reads it). The parser's AST,
/// not the syntax tree the code under test edits with.
fn parsed(text: &str) -> Value {
    let result = jsonc_parser::parse_to_ast(text, &Default::default(), &Default::default())
        .unwrap_or_else(|e| panic!("not valid JSONC ({e}):\n{text}"));
    result
        .value
        .map(Value::from)
        .unwrap_or_else(|| panic!("empty:\n{text}"))
}

fn assert_ours(config: &Value) {
    let server = &config["mcp"]["orchestrator"];
    assert_eq!(server["type"], "local", "{config}");
    assert_eq!(server["enabled"], true, "{config}");
    // Above wait_for_mission's default wait: OpenCode's own default (5 s) would cut it short.
    assert_eq!(server["timeout"], 660_000, "{config}");
    assert_eq!(
        server["command"],
        serde_json::json!([binary().to_string_lossy(), "mcp"]),
        "{config}"
    );
    let template = config["command"]["task"]["template"]
        .as_str()
        .expect("a template");
    assert!(template.contains("$ARGUMENTS"), "{template}");
    assert!(template.contains("orchestrator_start_mission"), "{template}");
    assert!(template.contains("orchestrator_wait_for_mission"), "{template}");
    assert!(config["command"]["task"]["description"].is_string());
}

#[tokio::test]
async fn an_absent_project_config_is_created_then_removed_entirely() {
    let repo = TestRepo::new(&[]);
    let before = std::fs::read_dir(repo.path()).expect("ls").count();
    let done = install(&repo, &[]).await;
    done.assert_code(0);
    let file = repo.path().join("opencode.json");
    let text = std::fs::read_to_string(&file).expect("opencode.json was created");
    assert_ours(&parsed(&text));
    assert!(!backup(&file).exists(), "nothing to back up");
    assert!(done.stdout.contains("/task"), "{}", done.stdout);
    // Nothing outside the project was touched.
    assert!(!repo.home().join(".config").exists());

    uninstall(&repo, &[]).await.assert_code(0);
    assert!(!file.exists(), "the file install created is gone");
    assert_eq!(std::fs::read_dir(repo.path()).expect("ls").count(), before);
}

#[tokio::test]
async fn install_then_uninstall_leaves_each_fixture_byte_identical() {
    for (name, original) in [
        ("opencode.jsonc", COMMENTED),
        ("opencode.json", TABS_CRLF),
        ("opencode.json", PLAIN),
        ("opencode.json", "{}"),
        ("opencode.json", ""),
    ] {
        let repo = TestRepo::new(&[]);
        let file = repo.path().join(name);
        std::fs::write(&file, original).expect("write the fixture");

        install(&repo, &["--project"]).await.assert_code(0);
        let installed = std::fs::read_to_string(&file).expect("read");
        assert_ours(&parsed(&installed));
        assert_eq!(
            std::fs::read_to_string(backup(&file)).expect("a backup"),
            original
        );
        if original == COMMENTED {
            // The user's comments, servers and commands are all still there.
            for kept in [
                "// My OpenCode settings.",
                "/* models */",
                "// docs search",
                "// short",
            ] {
                assert!(installed.contains(kept), "{kept} lost:\n{installed}");
            }
            let config = parsed(&installed);
            assert_eq!(config["mcp"]["docs"]["type"], "remote");
            assert_eq!(config["command"]["review"]["template"], "Review the diff");
        }
        if original == TABS_CRLF {
            assert!(
                !installed.replace("\r\n", "").contains('\n'),
                "only CRLF line ends:\n{installed:?}"
            );
            assert!(installed.contains("\n\t\t\"orchestrator\": {"), "{installed:?}");
        }

        let again = install(&repo, &["--project"]).await;
        again.assert_code(0);
        assert!(again.stdout.contains("already installed"), "{}", again.stdout);
        assert_eq!(std::fs::read_to_string(&file).expect("read"), installed);

        uninstall(&repo, &["--project"]).await.assert_code(0);
        assert_eq!(
            std::fs::read(&file).expect("read"),
            original.as_bytes(),
            "{name}: {original:?}"
        );
        assert!(!backup(&file).exists(), "the backup is removed with the restore");
    }
}

/// What `install` wrote before `/task` waited for the mission: no timeout, a template that only
/// looked at the status once.
const INSTALLED_BEFORE_WAITING: &str = r#"{
  "mcp": {
    "orchestrator": { "type": "local", "command": ["/old/bin/orchestrator", "mcp"], "enabled": true }
  },
  "command": {
    "task": {
      "template": "Start an orchestrator mission with this objective:\n\n$ARGUMENTS\n\nCall the `orchestrator_start_mission` tool. Then call `orchestrator_mission_status` once.",
      "description": "Run an orchestrator mission"
    }
  }
}
"#;

#[tokio::test]
async fn an_install_from_before_waiting_is_brought_up_to_date() {
    let repo = TestRepo::new(&[]);
    let file = repo.path().join("opencode.json");
    std::fs::write(&file, INSTALLED_BEFORE_WAITING).expect("write");
    install(&repo, &[]).await.assert_code(0);
    let installed = std::fs::read_to_string(&file).expect("read");
    assert_ours(&parsed(&installed));
    let again = install(&repo, &[]).await;
    assert!(again.stdout.contains("already installed"), "{}", again.stdout);
    assert_eq!(std::fs::read_to_string(&file).expect("read"), installed);
}

#[tokio::test]
async fn edits_made_after_install_survive_uninstall() {
    let repo = TestRepo::new(&[]);
    let file = repo.path().join("opencode.jsonc");
    std::fs::write(&file, COMMENTED).expect("write");
    install(&repo, &[]).await.assert_code(0);
    let edited = std::fs::read_to_string(&file)
        .expect("read")
        .replace("local/qwen", "local/llama");
    std::fs::write(&file, &edited).expect("edit");

    let done = uninstall(&repo, &[]).await;
    done.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        COMMENTED.replace("local/qwen", "local/llama")
    );
    assert!(done.stdout.contains("kept"), "{}", done.stdout);
}

#[tokio::test]
async fn global_follows_xdg_config_home_and_opencode_config_dir() {
    let repo = TestRepo::new(&[]);
    let xdg = tempfile::tempdir().expect("tempdir");
    let custom = tempfile::tempdir().expect("tempdir");

    let done = run(
        &repo,
        &["install", "opencode", "--global"],
        &[("XDG_CONFIG_HOME", xdg.path())],
    )
    .await;
    done.assert_code(0);
    let global = xdg.path().join("opencode/opencode.json");
    assert_ours(&parsed(&std::fs::read_to_string(&global).expect("global config")));
    assert!(
        !repo.path().join("opencode.json").exists(),
        "the project is not touched"
    );

    let env = [
        ("XDG_CONFIG_HOME", xdg.path()),
        ("OPENCODE_CONFIG_DIR", custom.path()),
    ];
    run(&repo, &["install", "opencode", "--global"], &env)
        .await
        .assert_code(0);
    assert_ours(&parsed(
        &std::fs::read_to_string(custom.path().join("opencode.json")).expect("config in OPENCODE_CONFIG_DIR"),
    ));
    run(&repo, &["uninstall", "opencode", "--global"], &env)
        .await
        .assert_code(0);
    assert!(!custom.path().join("opencode.json").exists());
    // The XDG file is another location: uninstalling from OPENCODE_CONFIG_DIR leaves it alone.
    assert!(global.exists());
}

#[tokio::test]
async fn an_explicit_config_file_is_the_only_one_touched() {
    let repo = TestRepo::new(&[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("custom.jsonc");
    std::fs::write(&file, PLAIN).expect("write");
    let path = file.to_string_lossy().into_owned();
    install(&repo, &["--config", &path]).await.assert_code(0);
    assert_ours(&parsed(&std::fs::read_to_string(&file).expect("read")));
    assert!(!repo.path().join("opencode.json").exists());
    uninstall(&repo, &["--config", &path]).await.assert_code(0);
    assert_eq!(std::fs::read_to_string(&file).expect("read"), PLAIN);
}

#[tokio::test]
async fn refuses_files_it_cannot_parse_or_entries_it_does_not_own() {
    let cases = [
        ("{ \"model\": \"a\",, }", "not valid JSON"),
        ("{ 'model': 'a' }", "not valid JSON"),
        ("[]", "not a JSON object"),
        (
            "{ \"mcp\": { \"orchestrator\": { \"type\": \"remote\", \"url\": \"http://127.0.0.1:9\" } } }",
            "mcp.orchestrator",
        ),
        (
            "{ \"command\": { \"task\": { \"template\": \"run the tests\" } } }",
            "command.task",
        ),
    ];
    for (text, expected) in cases {
        let repo = TestRepo::new(&[]);
        let file = repo.path().join("opencode.json");
        std::fs::write(&file, text).expect("write");
        let done = install(&repo, &[]).await;
        done.assert_code(2);
        assert!(done.stderr.contains(expected), "{text}: {}", done.stderr);
        assert!(done.stderr.contains("unchanged"), "{}", done.stderr);
        assert_eq!(
            std::fs::read_to_string(&file).expect("read"),
            text,
            "nothing written"
        );
        assert!(!backup(&file).exists(), "no backup for a refusal");
        // Uninstall leaves what is not ours alone too.
        uninstall(&repo, &[]).await;
        assert_eq!(std::fs::read_to_string(&file).expect("read"), text);
    }
}

#[tokio::test]
async fn dry_run_prints_the_change_and_writes_nothing() {
    let repo = TestRepo::new(&[]);
    let file = repo.path().join("opencode.json");
    std::fs::write(&file, PLAIN).expect("write");
    let done = install(&repo, &["--dry-run"]).await;
    done.assert_code(0);
    assert!(
        done.stdout.contains("+ ") && done.stdout.contains("\"orchestrator\""),
        "{}",
        done.stdout
    );
    assert!(done.stdout.contains("dry run"), "{}", done.stdout);
    assert_eq!(std::fs::read_to_string(&file).expect("read"), PLAIN);
    assert!(!backup(&file).exists());

    install(&repo, &[]).await.assert_code(0);
    let installed = std::fs::read_to_string(&file).expect("read");
    let done = uninstall(&repo, &["--dry-run"]).await;
    done.assert_code(0);
    assert!(done.stdout.contains("- "), "{}", done.stdout);
    assert_eq!(std::fs::read_to_string(&file).expect("read"), installed);
}

#[tokio::test]
async fn project_and_global_are_exclusive_and_project_needs_a_repository() {
    let repo = TestRepo::new(&[]);
    install(&repo, &["--project", "--global"]).await.assert_code(2);
    let outside = tempfile::tempdir().expect("tempdir");
    let done = install(&repo, &["--repo", &outside.path().to_string_lossy()]).await;
    done.assert_code(2);
    assert!(done.stderr.contains("--global"), "{}", done.stderr);
    assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 0);
}

// ---- The real OpenCode, when OPENCODE_BIN names it (.ci/run installs it from the npm registry). ----

/// OpenCode run offline in the repository, with every folder it writes to inside the test's HOME.
fn opencode(bin: &Path, repo: &TestRepo, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(args)
        .current_dir(repo.path())
        // OpenCode takes its project folder from PWD, as a shell would have set it.
        .env("PWD", repo.path())
        .envs(offline_env(repo.home()))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for key in REMOVED_ENV {
        cmd.env_remove(key);
    }
    cmd
}

async fn output(mut cmd: tokio::process::Command, what: &str) -> Finished {
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} finished within 180 s"))
        .unwrap_or_else(|e| panic!("{what} runs: {e}"));
    Finished::from(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    opencode_missing,
    ignore = "needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"
)]
async fn opencode_connects_to_the_installed_mcp_server() {
    let bin = opencode_bin();
    let repo = TestRepo::new(&[]);
    install(&repo, &["--global"]).await.assert_code(0);
    let listed = output(opencode(&bin, &repo, &["mcp", "list"]), "opencode mcp list").await;
    listed.assert_code(0);
    let line = listed
        .stdout
        .lines()
        .find(|l| l.contains("orchestrator"))
        .unwrap_or_else(|| {
            panic!(
                "orchestrator is not listed:\n{}\n{}",
                listed.stdout, listed.stderr
            )
        });
    assert!(line.contains("connected"), "{}", listed.stdout);

    // And after uninstall OpenCode no longer knows it.
    uninstall(&repo, &["--global"]).await.assert_code(0);
    let listed = output(opencode(&bin, &repo, &["mcp", "list"]), "opencode mcp list").await;
    assert!(!listed.stdout.contains("orchestrator"), "{}", listed.stdout);
}

/// The scripted mission for the engine's sessions, and for OpenCode's agent a model that does what
/// the /task prompt asks: call `orchestrator_start_mission` with the objective, then
/// `orchestrator_wait_for_mission` with the mission's id, then report its result.
fn opencode_and_mission_brain(script: Script) -> impl Brain {
    let mission = ScriptedMission::new(script);
    move |request: &SeenRequest| {
        if !role_of(request).is_empty() || request.system.starts_with("You condense") {
            return mission.respond(request);
        }
        // OpenCode's own requests: the title agent offers no tools, the build agent offers ours.
        if !request.offers("orchestrator_start_mission") {
            return Reply::Text("Orchestrator mission".into());
        }
        let result_of = |tool: &str| {
            request
                .tool_results()
                .iter()
                .find(|(call, _, _)| call.name == tool)
                .map(|(_, content, is_error)| (content.to_string(), *is_error))
        };
        if let Some((content, _)) = result_of("orchestrator_wait_for_mission") {
            return Reply::Text(format!("Finished. {content}"));
        }
        match result_of("orchestrator_start_mission") {
            // As the template says: wait for the mission it started, by its id.
            Some((content, false)) => Reply::ToolCalls {
                text: format!("Started. {content}"),
                calls: vec![(
                    "orchestrator_wait_for_mission".into(),
                    json!({ "mission": started_id(&content) }).to_string(),
                )],
            },
            Some((content, true)) => Reply::Text(format!("The mission could not start: {content}")),
            None => Reply::ToolCalls {
                text: String::new(),
                calls: vec![(
                    "orchestrator_start_mission".into(),
                    json!({ "objective": objective_in(&last_user_text(request)) }).to_string(),
                )],
            },
        }
    }
}

/// The mission id in `start_mission`'s answer ("Mission ID started in …").
fn started_id(content: &str) -> String {
    content
        .split("Mission ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default()
        .to_string()
}

fn last_user_text(request: &SeenRequest) -> String {
    request
        .messages
        .iter()
        .rev()
        .find_map(|m| match m {
            SeenMessage::User { text } => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The objective the /task template placed between its first line and its instructions.
fn objective_in(prompt: &str) -> String {
    prompt
        .split_once("with this objective:")
        .and_then(|(_, rest)| rest.split_once("Call the `orchestrator_start_mission`"))
        // `opencode run` quotes an argument with spaces; a model would take the quotes off.
        .map(|(objective, _)| objective.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| format!("(the /task template was not found in: {prompt})"))
}

/// OpenCode's config: the fake server as an OpenAI-compatible provider (OpenCode bundles that SDK,
/// so nothing is downloaded), and a comment that must survive `install`. No price, and OpenCode's
/// own permission defaults, as in a user's config.
fn provider_config(server: &FakeServer) -> String {
    let config = FakeProvider {
        base_url: &server.openai_base_url(),
        model: MODEL,
        cost: None,
        headless: false,
    };
    format!(
        "// Written by the test: the fake model server as an OpenAI-compatible provider.\n{}",
        config.config()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    opencode_missing,
    ignore = "needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"
)]
async fn opencode_task_command_starts_a_mission_that_completes() {
    let bin = opencode_bin();
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a")],
        ..Script::default()
    };
    let server = FakeServer::start(opencode_and_mission_brain(script), FakeOptions::default())
        .await
        .expect("fake model server starts");
    // The global config, so the repository stays clean and the mission may start.
    let config = write_global_config(repo.home(), "opencode.jsonc", &provider_config(&server));
    install(&repo, &["--global"]).await.assert_code(0);

    let mut cmd = opencode(&bin, &repo, &["run", "--command", "task", "Add a.txt"]);
    // OpenCode passes its environment on to the MCP server, which passes it on to the mission.
    cmd.env("OPENAI_BASE_URL", server.openai_base_url())
        .env("OPENAI_API_KEY", "test-key")
        .env("ORCHESTRATOR_MODEL", MODEL);
    let ran = output(cmd, "opencode run --command task").await;
    ran.assert_code(0);
    // /task started the mission, waited for it and showed its result.
    assert!(
        ran.stdout.contains("Finished. Mission") && ran.stdout.contains("sealed"),
        "{}\n{}",
        ran.stdout,
        ran.stderr
    );

    // The store agrees (the loop only guards against a mission still writing its last record).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(180);
    let report = loop {
        let status = Run::cmd(&["status", "--json"]).run(&repo).await;
        let report: Value = serde_json::from_str(&status.stdout).unwrap_or(Value::Null);
        if report["status"] != "running" && report["status"] != Value::Null {
            break report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no finished mission: {}",
            status.stdout
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!(report["status"], "sealed", "{report}");
    assert_eq!(
        report["objective"], "Add a.txt",
        "$ARGUMENTS became the objective"
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    assert!(repo.files_on_main().contains(&"a.txt".to_string()));

    // Uninstall leaves the test's own config exactly as it was written, comment included.
    uninstall(&repo, &["--global"]).await.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&config).expect("read"),
        provider_config(&server)
    );
}
