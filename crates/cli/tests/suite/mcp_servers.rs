//! The user's MCP servers as agent tools (issue #18): `[mcp.<name>]` servers are started once per
//! mission, their tools offered to the roles that list them as `mcp__<name>__<tool>`, calls recorded
//! like built-in ones, and the servers stopped with the mission. The server is `fake-mcp`
//! (crates/fake-model/src/bin/fake-mcp.rs), driven by a worker scripted with `CALL` directives.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::support::*;
use orchestrator_fake_model::script::{role_of, PlanUnit, Script};
use orchestrator_fake_model::FakeServer;

/// The `fake-mcp` program of this build profile, built when the workspace's tests have not built it.
fn fake_mcp() -> PathBuf {
    let beside = binary().with_file_name("fake-mcp");
    if beside.is_file() {
        return beside;
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "orchestrator-fake-model",
            "--bin",
            "fake-mcp",
        ])
        .current_dir(workspace)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build --bin fake-mcp failed");
    beside
}

/// A config with the `docs` server (`fake-mcp` and `args`) and the roles that list it.
fn config(args: &[&str], extra: &str, roles: &[&str]) -> String {
    let mut command = vec![format!("{:?}", fake_mcp().display().to_string())];
    command.extend(args.iter().map(|a| format!("{a:?}")));
    let mut text = format!("[mcp.docs]\ncommand = [{}]\n{extra}\n", command.join(", "));
    for role in roles {
        text.push_str(&format!("[roles.{role}]\nmcp = [\"docs\"]\n"));
    }
    text
}

fn one_unit(description: &str) -> Script {
    Script {
        plan: vec![PlanUnit::new("a", "Use the docs server", description, &[])],
        ..Script::default()
    }
}

/// The results the fake model was shown for `tool`: (content, is_error). OpenAI's API has no error
/// flag: the client begins an error result with "Error: ".
fn results_of(server: &FakeServer, tool: &str) -> Vec<(String, bool)> {
    tool_results(server)
        .into_iter()
        .filter(|(name, _, _)| name == tool)
        .map(|(_, content, is_error)| {
            let is_error = is_error || content.starts_with("Error: ");
            (content, is_error)
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Whether the process is gone, polled for up to 20 s (a loaded machine reaps slowly).
async fn gone(pid: i32) -> bool {
    for _ in 0..400 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_calls_an_mcp_tool_its_result_reaches_the_next_request_and_the_server_stops() {
    let unused = "[mcp.unused]\ncommand = [\"/nonexistent/never-started\"]\n";
    let repo = TestRepo::new(&[("orchestrator.toml", &(config(&[], "", &["worker"]) + unused))]);
    let server = fake(one_unit(
        "CALL mcp__docs__echo {\"text\": \"hello from the worker\"}\nFILE a.txt := a",
    ))
    .await;
    let run = Run::task("Use the docs")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    run.assert_code(0);

    let results = results_of(&server, "mcp__docs__echo");
    let (content, is_error) = results
        .first()
        .expect("the worker's next request carries the result");
    assert!(
        !is_error && content.starts_with("echo: hello from the worker"),
        "{content}"
    );
    let workers: Vec<_> = requests_of(&server, "worker");
    assert!(
        workers.iter().all(|r| r.offers("mcp__docs__echo")),
        "offered to every worker request"
    );
    for role in ["planner", "reviewer", "master_reviewer", "scout"] {
        assert!(
            requests_of(&server, role)
                .iter()
                .all(|r| !r.tools.iter().any(|t| t.starts_with("mcp__"))),
            "a role that does not list the server is not offered its tools: {role}"
        );
    }
    let called: Vec<_> = run
        .events_of("tool_called")
        .into_iter()
        .filter(|e| e["tool"] == "mcp__docs__echo")
        .collect();
    assert_eq!(called.len(), 1, "recorded like a built-in tool");
    assert_eq!(called[0]["ok"], true);
    assert!(
        run.notices()
            .iter()
            .any(|n| n.contains("MCP server `docs` started") && n.contains("mcp__docs__echo")),
        "{:?}",
        run.notices()
    );
    assert!(
        run.notices()
            .iter()
            .any(|n| n.contains("MCP server `unused` is not started: no role lists it")),
        "a server no role lists is not started: {:?}",
        run.notices()
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));

    let pid: i32 = content
        .split("fake-mcp pid ")
        .nth(1)
        .and_then(|rest| rest.trim_end_matches(')').parse().ok())
        .expect("the server says its pid");
    assert!(gone(pid).await, "the MCP server {pid} outlived the mission");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_flooding_refusing_or_dying_server_gives_errors_and_the_mission_goes_on() {
    let script = one_unit(
        "CALL mcp__docs__hang {}\n\
         CALL mcp__docs__flood {\"chars\": 500000}\n\
         CALL mcp__docs__echo {\"words\": 3}\n\
         CALL mcp__docs__refuse {}\n\
         CALL mcp__docs__die {}\n\
         CALL mcp__docs__echo {\"text\": \"are you there\"}\n\
         FILE a.txt := a",
    );
    let repo = TestRepo::new(&[("orchestrator.toml", &config(&[], "timeout_secs = 2", &["worker"]))]);
    let server = fake(script).await;
    let run = Run::task("Use the docs")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    run.assert_code(0);

    let first = |tool: &str| results_of(&server, tool).into_iter().next().expect(tool);
    let (hang, is_error) = first("mcp__docs__hang");
    assert!(is_error && hang.contains("did not answer within 2 s"), "{hang}");
    let (flood, _) = first("mcp__docs__flood");
    // Cut to the tool-output bound like any tool's (the rest kept in a file the worker may read).
    assert!(flood.chars().count() <= 20_000, "{}", flood.len());
    assert!(
        flood.contains("left out here"),
        "{}",
        flood.replace("xxxxxxxxxx", "")
    );
    let echoes = results_of(&server, "mcp__docs__echo");
    assert!(
        echoes
            .iter()
            .any(|(c, e)| *e && c.contains("refused the call") && c.contains("echo needs a string `text`")),
        "the server's own error comes back: {echoes:?}"
    );
    assert!(
        echoes.iter().any(|(c, e)| *e && c.contains("is gone")),
        "a later call says the server is gone: {echoes:?}"
    );
    let (refused, is_error) = first("mcp__docs__refuse");
    assert!(
        is_error && refused.contains("refused: nothing to do"),
        "{refused}"
    );
    let (died, is_error) = first("mcp__docs__die");
    assert!(is_error, "{died}");
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"), "the worker went on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_not_given_the_server_cannot_call_its_tools() {
    // The server runs (the reviewer lists it), but the worker is not given it.
    let repo = TestRepo::new(&[("orchestrator.toml", &config(&[], "", &["reviewer"]))]);
    let server = fake(one_unit(
        "CALL mcp__docs__echo {\"text\": \"sneaky\"}\nFILE a.txt := a",
    ))
    .await;
    let run = Run::task("Use the docs")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    run.assert_code(0);
    let results = results_of(&server, "mcp__docs__echo");
    let (content, is_error) = results.first().expect("the refusal reaches the worker");
    assert!(
        *is_error && content.contains("Unknown tool `mcp__docs__echo`"),
        "{content}"
    );
    assert!(requests_of(&server, "worker")
        .iter()
        .all(|r| !r.offers("mcp__docs__echo")));
    assert!(requests_of(&server, "reviewer")
        .iter()
        .any(|r| r.offers("mcp__docs__echo")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_start_stops_the_mission_before_any_session() {
    let repo = TestRepo::new(&[("orchestrator.toml", &config(&["--fail-start"], "", &["worker"]))]);
    let server = fake(one_unit("FILE a.txt := a")).await;
    let run = Run::task("Use the docs")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    let finished = run.events_of("mission_finished");
    let summary = finished[0]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("MCP server `docs`") && summary.contains("told to fail at start"),
        "names the server and what it said: {summary}"
    );
    assert!(
        server
            .requests()
            .iter()
            .all(|r| role_of(r) != "scout" && role_of(r) != "planner"),
        "no session ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_listing_an_unknown_server_is_a_config_error() {
    let repo = TestRepo::new(&[("orchestrator.toml", "[roles.worker]\nmcp = [\"docs\"]\n")]);
    let server = fake(one_unit("FILE a.txt := a")).await;
    let run = Run::task("Use the docs").openai(&server).run(&repo).await;
    run.assert_code(2);
    assert!(
        run.stderr.contains("`[roles.worker] mcp` lists `docs`"),
        "{}",
        run.stderr
    );
    assert!(server.requests().is_empty(), "refused before any model call");
}

/// Runs a mission whose worker calls the server and then waits on a call that hangs, stops the
/// orchestrator with `signal` while it waits, and says whether the server outlived it.
async fn server_outlives_a_stop_by(signal: i32) -> (TestRepo, FakeServer, bool) {
    // The server logs each call as it arrives (so unconfined: the log is outside its temp folder).
    let log = tempfile::tempdir().unwrap();
    let calls = log.path().join("calls");
    let calls_arg = calls.display().to_string();
    let config = config(&["--calls", &calls_arg], "sandbox = false", &["worker"]);
    let repo = TestRepo::new(&[("orchestrator.toml", &config)]);
    let server = fake(one_unit(
        "CALL mcp__docs__echo {\"text\": \"hi\"}\nCALL mcp__docs__hang {}\nFILE a.txt := a",
    ))
    .await;
    let mut child = Run::task("Use the docs")
        .arg("--json")
        .openai(&server)
        .command(&repo)
        .spawn()
        .expect("the orchestrator starts");
    let mut pid = None;
    for _ in 0..2400 {
        pid = results_of(&server, "mcp__docs__echo")
            .first()
            .and_then(|(content, _)| {
                content
                    .split("fake-mcp pid ")
                    .nth(1)?
                    .trim_end_matches(')')
                    .parse::<i32>()
                    .ok()
            });
        if pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = pid.expect("the worker called the server within 120 s");
    assert!(alive(pid), "the server runs while the mission does");
    // Stopped while the server holds the hanging call (so the call is in the stored transcript).
    for _ in 0..2400 {
        let logged = std::fs::read_to_string(&calls).unwrap_or_default();
        if logged.lines().any(|l| l.starts_with("hang ")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let orchestrator = child.id().expect("running") as i32;
    // SAFETY: a signal to the child this test started.
    unsafe { libc::kill(orchestrator, signal) };
    tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("the orchestrator stops within 120 s")
        .expect("wait works");
    let outlived = !gone(pid).await;
    (repo, server, outlived)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_mission_stops_its_mcp_server() {
    assert!(
        !server_outlives_a_stop_by(libc::SIGINT).await.2,
        "Ctrl-C left the MCP server running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_orchestrator_leaves_no_mcp_server_behind_and_resume_reports_the_lost_call() {
    let (repo, server, outlived) = server_outlives_a_stop_by(libc::SIGKILL).await;
    assert!(!outlived, "kill -9 left the MCP server running");
    // The hanging call's result was lost with the process: an MCP call is not repeated on resume
    // (nothing says what it did), the model is told it was interrupted, and the work goes on.
    let resumed = Run::cmd(&["resume", "--json"]).openai(&server).run(&repo).await;
    resumed.assert_code(0);
    let hang = results_of(&server, "mcp__docs__hang");
    assert!(
        hang.iter()
            .any(|(c, e)| *e && c.contains("Interrupted: the orchestrator stopped while `mcp__docs__hang`")),
        "{hang:?}"
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_listing_ten_thousand_tools_is_offered_a_bounded_few() {
    let repo = TestRepo::new(&[(
        "orchestrator.toml",
        &config(&["--tools", "10000"], "", &["worker"]),
    )]);
    let server = fake(one_unit("CALL mcp__docs__extra_3 {}\nFILE a.txt := a")).await;
    let run = Run::task("Use the docs")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    run.assert_code(0);
    let workers = requests_of(&server, "worker");
    let offered = workers[0]
        .tools
        .iter()
        .filter(|t| t.starts_with("mcp__docs__"))
        .count();
    assert_eq!(offered, 64, "at most 64 tools of a server");
    assert!(
        run.notices()
            .iter()
            .any(|n| n.contains("more tools are not offered") && n.contains("tools = [...]")),
        "{:?}",
        run.notices()
    );
    let results = results_of(&server, "mcp__docs__extra_3");
    assert_eq!(results.first().map(|(c, _)| c.as_str()), Some("extra_3 ran"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_the_handshake_is_given_up_and_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    // Unconfined, so that it can say its pid outside its temp folder; then it only waits.
    let script = format!("echo $$ > {}; exec sleep 600", pid_file.display());
    let text = format!(
        "[mcp.mute]\ncommand = [\"sh\", \"-c\", {script:?}]\nsandbox = false\nstartup_timeout_secs = 2\n\
         [roles.worker]\nmcp = [\"mute\"]\n"
    );
    let repo = TestRepo::new(&[("orchestrator.toml", &text)]);
    let server = fake(one_unit("FILE a.txt := a")).await;
    let run = Run::task("Use the docs")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    let finished = run.events_of("mission_finished");
    let summary = finished[0]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("MCP server `mute`")
            && summary.contains("within 2 s")
            && summary.contains("`startup_timeout_secs` gives it longer"),
        "{summary}"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the server started")
        .trim()
        .parse()
        .expect("a pid");
    assert!(gone(pid).await, "the mute server {pid} outlived the failed start");
}

/// `fake-mcp --http` started by the test (a server someone else runs), and the URL it serves at.
struct HttpServer {
    child: tokio::process::Child,
    url: String,
}

impl HttpServer {
    async fn start(args: &[&str]) -> HttpServer {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(fake_mcp())
            .arg("--http")
            .args(args)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("fake-mcp starts");
        let stdout = child.stdout.take().expect("its stdout");
        let mut line = String::new();
        tokio::io::BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .expect("it says where it listens");
        let url = line
            .trim()
            .strip_prefix("listening ")
            .expect("a `listening URL` line")
            .to_string();
        HttpServer { child, url }
    }
}

const HTTP_TOKEN: &str = "tok-3141592-never-stored";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_is_called_with_its_token_and_its_hangs_and_death_are_survived() {
    let mut http = HttpServer::start(&["--token", HTTP_TOKEN]).await;
    let text = format!(
        "[mcp.docs]\nurl = {:?}\nbearer_token_env_var = \"FAKE_MCP_TOKEN\"\ntimeout_secs = 2\n\
         http_headers = {{ \"X-Team\" = \"core\" }}\n[roles.worker]\nmcp = [\"docs\"]\n",
        http.url
    );
    let repo = TestRepo::new(&[("orchestrator.toml", &text)]);
    let server = fake(one_unit(
        "CALL mcp__docs__echo {\"text\": \"over http\"}\n\
         CALL mcp__docs__headers {}\n\
         CALL mcp__docs__hang {}\n\
         CALL mcp__docs__die {}\n\
         CALL mcp__docs__echo {\"text\": \"are you there\"}\n\
         FILE a.txt := a",
    ))
    .await;
    let run = Run::task("Use the docs")
        .arg("--json")
        .openai(&server)
        .env("FAKE_MCP_TOKEN", HTTP_TOKEN)
        .run(&repo)
        .await;
    run.assert_code(0);

    let echoes = results_of(&server, "mcp__docs__echo");
    assert!(
        echoes.iter().any(|(c, e)| !e && c.starts_with("echo: over http")),
        "{echoes:?}"
    );
    let (headers, _) = results_of(&server, "mcp__docs__headers")
        .into_iter()
        .next()
        .expect("a headers result");
    assert!(headers.contains("x-team: core"), "{headers}");
    assert!(
        headers.contains("authorization: Bearer") && !headers.contains(HTTP_TOKEN),
        "the token was sent, and is masked wherever it is echoed: {headers}"
    );
    let (hang, is_error) = results_of(&server, "mcp__docs__hang")
        .into_iter()
        .next()
        .expect("a hang result");
    assert!(is_error && hang.contains("did not answer within 2 s"), "{hang}");
    assert!(
        echoes.iter().any(|(c, e)| *e && c.contains("is gone")),
        "a call after the server died is an error the worker reads: {echoes:?}"
    );
    assert!(
        run.notices()
            .iter()
            .any(|n| n.contains("MCP server `docs` started") && n.contains(&http.url)),
        "{:?}",
        run.notices()
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"), "the worker went on");
    let logs = Run::cmd(&["logs"]).run(&repo).await;
    assert!(!logs.stdout.contains(HTTP_TOKEN), "{}", logs.stdout);
    let store = std::fs::read(repo.path().join(".orchestrator/state.db")).expect("the store");
    let needle = HTTP_TOKEN.as_bytes();
    assert!(
        !store.windows(needle.len()).any(|w| w == needle),
        "the token never reaches the store"
    );
    let _ = http.child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_that_refuses_us_stops_the_mission_before_any_session_and_says_why() {
    let http = HttpServer::start(&["--token", HTTP_TOKEN]).await;
    let text = format!(
        "[mcp.docs]\nurl = {:?}\n[roles.worker]\nmcp = [\"docs\"]\n",
        http.url
    );
    let repo = TestRepo::new(&[("orchestrator.toml", &text)]);
    let server = fake(one_unit("FILE a.txt := a")).await;
    let run = Run::task("Use the docs")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    assert_ne!(run.code, Some(0), "{}", run.stderr);
    let finished = run.events_of("mission_finished");
    let summary = finished[0]["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("MCP server `docs`")
            && summary.contains("HTTP 401")
            && summary.contains("bearer_token_env_var"),
        "{summary}"
    );
    assert!(requests_of(&server, "worker").is_empty(), "no session ran");
    drop(http);
}
