//! `orchestrator mcp`: the real binary spoken to over stdio with hand-written JSON-RPC lines, as an
//! MCP client (OpenCode, Claude Code, …) would, against temporary repositories and the scripted fake
//! model. Writing the wire messages by hand keeps the test independent of the SDK the server uses.

use std::process::Stdio;
use std::time::Duration;

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script};
use orchestrator_fake_model::{FakeOptions, FakeServer};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// A connected MCP client: the server process and its two pipes.
struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// The answer to `initialize`.
    init: Value,
    /// Every notification the server sent, in order.
    notices: Vec<Value>,
}

impl Client {
    /// Starts `orchestrator mcp` in the repository and completes the MCP handshake.
    async fn connect(repo: &TestRepo, server: Option<&FakeServer>) -> Client {
        Client::connect_with(repo, server, Run::cmd(&["mcp"])).await
    }

    /// [`Client::connect`] with the server's command given (its flags).
    async fn connect_with(repo: &TestRepo, server: Option<&FakeServer>, mut run: Run) -> Client {
        if let Some(server) = server {
            // The server hands its environment on to the missions it starts.
            run = run.openai(server);
        }
        let mut cmd = run.command(repo);
        cmd.stdin(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("orchestrator mcp starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped")).lines();
        let mut client = Client {
            child,
            stdin,
            stdout,
            next_id: 1,
            init: Value::Null,
            notices: Vec::new(),
        };
        let init = client
            .request(
                "initialize",
                json!({
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "mcp-test", "version": "1"}
                }),
            )
            .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "orchestrator", "{init}");
        client.init = init;
        client.notify("notifications/initialized").await;
        client
    }

    async fn send(&mut self, message: Value) {
        let stdin = self.stdin.as_mut().expect("connected");
        let mut line = message.to_string();
        line.push('\n');
        stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to the server");
        stdin.flush().await.expect("flush");
    }

    async fn notify(&mut self, method: &str) {
        self.send(json!({"jsonrpc": "2.0", "method": method})).await;
    }

    /// Sends a request and returns the response with its id, keeping any notification in between.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.begin(method, params).await;
        self.response(id).await
    }

    /// Sends a request without waiting for its answer; returns its id.
    async fn begin(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        id
    }

    /// The next message from the server; a notification is also kept in `notices`.
    async fn next_message(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(180), self.stdout.next_line())
            .await
            .expect("the server sends within 180 s")
            .expect("read from the server")
            .expect("the server keeps the connection open");
        let message: Value = serde_json::from_str(&line).expect("the server writes JSON lines");
        if message.get("id").is_none() {
            self.notices.push(message.clone());
        }
        message
    }

    /// Reads until the response with `id`.
    async fn response(&mut self, id: u64) -> Value {
        loop {
            let message = self.next_message().await;
            if message["id"] == id {
                return message;
            }
        }
    }

    /// Reads until a notification `method` whose params satisfy `wanted`.
    async fn notice(&mut self, method: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        loop {
            let message = self.next_message().await;
            if message["method"] == method && wanted(&message["params"]) {
                return message;
            }
        }
    }

    /// The progress notifications received so far that carry `token`.
    fn progress(&self, token: &Value) -> Vec<Value> {
        self.notices
            .iter()
            .filter(|n| n["method"] == "notifications/progress" && n["params"]["progressToken"] == *token)
            .map(|n| n["params"].clone())
            .collect()
    }

    /// Calls a tool: (its text contents joined, whether it is a tool error).
    async fn call(&mut self, tool: &str, arguments: Value) -> (String, bool) {
        let response = self
            .request("tools/call", json!({"name": tool, "arguments": arguments}))
            .await;
        tool_answer(tool, &response)
    }

    /// Calls a tool asking for progress notifications under `token`.
    async fn call_with_progress(&mut self, tool: &str, arguments: Value, token: Value) -> (String, bool) {
        let params = json!({"name": tool, "arguments": arguments, "_meta": {"progressToken": token}});
        let response = self.request("tools/call", params).await;
        tool_answer(tool, &response)
    }

    /// Closes stdin, as a client that goes away does, and waits for the server to leave.
    async fn disconnect(mut self) {
        drop(self.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the server leaves when its client does")
            .expect("wait");
        assert!(status.success(), "orchestrator mcp exited with {status}");
    }
}

/// A `tools/call` response as (its text contents joined, whether it is a tool error).
fn tool_answer(tool: &str, response: &Value) -> (String, bool) {
    let result = &response["result"];
    assert!(result.is_object(), "tools/call {tool} has no result: {response}");
    let text = result["content"]
        .as_array()
        .expect("content is a list")
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    (text, result["isError"] == true)
}

fn one_file_plan() -> Script {
    Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a")],
        ..Script::default()
    }
}

/// Polls `mission_result` until the mission is no longer running; returns the last answer.
async fn wait_for_result(client: &mut Client) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (text, is_error) = client.call("mission_result", json!({})).await;
        assert!(!is_error, "mission_result failed: {text}");
        if !text.contains("still running") {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mission did not finish: {text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_list_names_the_tools_with_schemas() {
    let repo = TestRepo::new(&[]);
    let mut client = Client::connect(&repo, None).await;
    let listed = client.request("tools/list", json!({})).await;
    let tools = listed["result"]["tools"].as_array().expect("a tool list");
    let mut names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "approve_plan",
            "cancel_mission",
            "list_missions",
            "mission_result",
            "mission_status",
            "start_mission",
            "tell_worker",
            "wait_for_mission"
        ]
    );
    for tool in tools {
        assert!(
            tool["description"].as_str().is_some_and(|d| d.len() > 40),
            "{tool}"
        );
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
    }
    let start = tools
        .iter()
        .find(|t| t["name"] == "start_mission")
        .expect("start_mission");
    assert_eq!(start["inputSchema"]["required"], json!(["objective"]));
    for field in [
        "objective",
        "repo",
        "max_parallel",
        "max_depth",
        "rounds",
        "budget_tokens",
        "model",
        "allow_dirty",
    ] {
        assert!(
            start["inputSchema"]["properties"][field]["description"].is_string(),
            "{field} is described"
        );
    }
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mission_started_over_mcp_outlives_the_client_and_lands_on_the_branch() {
    let repo = TestRepo::new(&[]);
    let server = fake(one_file_plan()).await;
    let mut client = Client::connect(&repo, Some(&server)).await;
    let (started, is_error) = client
        .call(
            "start_mission",
            json!({"objective": "Add a.txt", "max_parallel": 2}),
        )
        .await;
    assert!(!is_error, "start_mission failed: {started}");
    assert!(started.contains("started"), "{started}");
    // The client goes away at once; the mission runs in its own process and process group.
    client.disconnect().await;

    let mut client = Client::connect(&repo, Some(&server)).await;
    let result = wait_for_result(&mut client).await;
    assert!(result.contains("sealed"), "{result}");
    assert!(result.contains("Result commit"), "{result}");
    // Applied: the integration branch went with the mission, and the result says so.
    assert!(
        result.contains("(removed: your branch already has all of it)"),
        "{result}"
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    assert!(
        repo.files_on_main().contains(&"a.txt".to_string()),
        "a.txt is committed on main"
    );

    let (status, is_error) = client.call("mission_status", json!({})).await;
    assert!(!is_error, "{status}");
    let json_line = status
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("the status as JSON");
    let report: Value = serde_json::from_str(json_line).expect("valid JSON");
    assert_eq!(report["status"], "sealed");
    assert!(status.contains("sealed"), "{status}");
    // Compact by default: states, not every command's output; `detail` asks for everything.
    let units = report["units"].as_array().expect("units");
    assert!(
        !units.is_empty() && units.iter().all(|u| u["state"] == "passed"),
        "{report}"
    );
    assert!(units.iter().all(|u| u.get("evidence").is_none()), "{report}");
    assert_eq!(report["active_sessions"], json!([]));
    let (detailed, _) = client.call("mission_status", json!({"detail": true})).await;
    let detailed: Value = detailed
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .expect("the detailed status as JSON");
    assert!(detailed["units"][0]["evidence"].is_array(), "{detailed}");
    assert!(
        detailed["sessions"].as_array().is_some_and(|s| !s.is_empty()),
        "{detailed}"
    );
    // The mission's output went to a log under .orchestrator/mcp/, and git does not see it.
    let logs = std::fs::read_dir(repo.path().join(".orchestrator/mcp"))
        .expect("the log folder")
        .count();
    assert_eq!(logs, 1);
    assert_eq!(repo.git(&["status", "--porcelain"]), "");
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dirty_tree_comes_back_as_a_tool_error_with_the_reason() {
    let repo = TestRepo::new(&[]);
    repo.write("README.md", "# changed and not committed\n");
    let server = fake(one_file_plan()).await;
    let mut client = Client::connect(&repo, Some(&server)).await;
    let (text, is_error) = client
        .call("start_mission", json!({"objective": "Add a.txt"}))
        .await;
    assert!(is_error, "a dirty tree must be refused: {text}");
    assert!(text.contains("uncommitted"), "{text}");
    assert!(text.contains("exit status 2"), "{text}");
    // Our log folder must not make the tree dirtier.
    assert_eq!(repo.git(&["status", "--porcelain"]), "M README.md");
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_tool_errors_that_say_what_to_do() {
    let repo = TestRepo::new(&[]);
    let mut client = Client::connect(&repo, None).await;
    let (text, is_error) = client
        .call("tell_worker", json!({"unit": "a", "message": "hi"}))
        .await;
    assert!(is_error && text.contains("no mission"), "{text}");
    let (text, is_error) = client.call("tell_worker", json!({"unit": "a"})).await;
    assert!(is_error && text.contains("message"), "{text}");
    for tool in ["mission_status", "mission_result", "cancel_mission"] {
        let (text, is_error) = client.call(tool, json!({})).await;
        assert!(is_error, "{tool}: {text}");
        assert!(text.contains("no mission"), "{tool}: {text}");
    }
    let (text, is_error) = client.call("start_mission", json!({"objective": "  "})).await;
    assert!(is_error && text.contains("objective"), "{text}");
    let outside = tempfile::tempdir().expect("tempdir");
    let (text, is_error) = client
        .call(
            "mission_status",
            json!({"repo": outside.path().to_string_lossy()}),
        )
        .await;
    assert!(is_error && text.contains("git"), "{text}");
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mission_stops_a_running_mission_resumably() {
    let repo = TestRepo::new(&[]);
    // Slow answers keep the mission running while it is cancelled.
    let options = FakeOptions {
        latency: Duration::from_millis(1500),
        ..FakeOptions::default()
    };
    let server = fake_with(one_file_plan(), options).await;
    let mut client = Client::connect(&repo, Some(&server)).await;
    let (started, is_error) = client
        .call("start_mission", json!({"objective": "Add a.txt"}))
        .await;
    assert!(!is_error, "{started}");
    let (status, is_error) = client.call("mission_status", json!({})).await;
    assert!(!is_error && status.contains("running"), "{status}");

    let (cancelled, is_error) = client.call("cancel_mission", json!({})).await;
    assert!(!is_error, "{cancelled}");
    assert!(cancelled.contains("stopped"), "{cancelled}");
    let (result, is_error) = client.call("mission_result", json!({})).await;
    assert!(!is_error, "{result}");
    assert!(
        result.contains("interrupted") || result.contains("resume"),
        "{result}"
    );
    assert_eq!(repo.read("a.txt"), None);
    client.disconnect().await;
}

/// Starts a slow one-file mission over MCP and cancels it, leaving it interrupted.
async fn interrupted_mission(repo: &TestRepo) -> (FakeServer, Client) {
    let options = FakeOptions {
        latency: Duration::from_millis(600),
        ..FakeOptions::default()
    };
    let server = fake_with(one_file_plan(), options).await;
    let mut client = Client::connect(repo, Some(&server)).await;
    let (started, is_error) = client
        .call("start_mission", json!({"objective": "Add a.txt"}))
        .await;
    assert!(!is_error, "{started}");
    let (cancelled, is_error) = client.call("cancel_mission", json!({})).await;
    assert!(!is_error && cancelled.contains("stopped"), "{cancelled}");
    (server, client)
}

/// An interrupted mission is the client's own earlier work: `start_mission` continues it instead
/// of starting another beside it, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_mission_resumes_an_interrupted_mission() {
    let repo = TestRepo::new(&[]);
    let (_server, mut client) = interrupted_mission(&repo).await;
    let (answer, is_error) = client
        .call("start_mission", json!({"objective": "Something else"}))
        .await;
    assert!(!is_error, "{answer}");
    assert!(
        answer.contains("resumed instead")
            && answer.contains("Add a.txt")
            && answer.contains("abandon_interrupted"),
        "{answer}"
    );
    let result = wait_for_result(&mut client).await;
    assert!(result.contains("sealed"), "{result}");
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    let missions = super::missions::missions_json(&repo).await;
    assert_eq!(missions.len(), 1, "no second mission: {missions:#?}");
    client.disconnect().await;
}

/// `list_missions` shows every mission with its state and says how an interrupted one goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_missions_names_an_interrupted_mission_and_how_it_goes_on() {
    let repo = TestRepo::new(&[]);
    let mut client = Client::connect(&repo, None).await;
    let (none, is_error) = client.call("list_missions", json!({})).await;
    assert!(!is_error && none.contains("No mission has run"), "{none}");
    client.disconnect().await;
    let (_server, mut client) = interrupted_mission(&repo).await;
    let (listed, is_error) = client.call("list_missions", json!({})).await;
    assert!(!is_error, "{listed}");
    assert!(
        listed.contains("interrupted") && listed.contains("Add a.txt"),
        "{listed}"
    );
    assert!(
        listed.contains("start_mission in this repository resumes it"),
        "{listed}"
    );
    let json_line = listed.lines().last().unwrap_or_default();
    let missions: Vec<Value> = serde_json::from_str(json_line).expect("the missions as JSON");
    assert_eq!(missions.len(), 1, "{missions:?}");
    assert_eq!(missions[0]["state"], "interrupted");
    let (refused, is_error) = client.call("list_missions", json!({"mision": "x"})).await;
    assert!(is_error && refused.contains("mision"), "{refused}");
    client.disconnect().await;
}

/// Only when asked: `abandon_interrupted` drops the interrupted mission and starts the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_mission_abandons_an_interrupted_mission_only_when_asked() {
    let repo = TestRepo::new(&[]);
    let (_server, mut client) = interrupted_mission(&repo).await;
    let (answer, is_error) = client
        .call(
            "start_mission",
            json!({"objective": "Add a.txt, again", "abandon_interrupted": true}),
        )
        .await;
    assert!(!is_error, "{answer}");
    assert!(answer.contains("started"), "{answer}");
    let result = wait_for_result(&mut client).await;
    assert!(result.contains("sealed"), "{result}");
    let missions = super::missions::missions_json(&repo).await;
    let states: Vec<&str> = missions.iter().filter_map(|m| m["state"].as_str()).collect();
    assert_eq!(states, ["finished", "abandoned"], "{missions:#?}");
    // An older mission is named by its id; a name that fits none is a tool error saying so.
    let old = missions[1]["id"].as_str().expect("id").to_string();
    let (status, is_error) = client.call("mission_status", json!({ "mission": old })).await;
    assert!(
        !is_error && status.contains(&old) && status.contains("abandoned"),
        "{status}"
    );
    let (unknown, is_error) = client.call("mission_result", json!({"mission": "zzz"})).await;
    assert!(is_error && unknown.contains("zzz"), "{unknown}");
    // A wrong type is a tool error that names the field, not a silent default.
    let (answer, is_error) = client
        .call(
            "start_mission",
            json!({"objective": "x", "abandon_interrupted": "yes"}),
        )
        .await;
    assert!(is_error, "{answer}");
    assert!(answer.contains("boolean"), "{answer}");
    client.disconnect().await;
}

/// Polls `mission_status` (bounded) until its text says plan `attempt` waits; returns the text.
async fn waiting_plan(client: &mut Client, attempt: u32) -> String {
    let wanted = format!("Plan {attempt} waits for the user's approval");
    for _ in 0..600 {
        let (text, is_error) = client.call("mission_status", json!({})).await;
        assert!(!is_error, "mission_status failed: {text}");
        if text.contains(&wanted) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("plan {attempt} never waited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_plan_is_shown_and_answered_over_mcp() {
    let repo = TestRepo::new(&[]);
    let server = fake(one_file_plan()).await;
    let mut client = Client::connect(&repo, Some(&server)).await;
    let (started, is_error) = client
        .call(
            "start_mission",
            json!({"objective": "Add a.txt", "approve_plan": true}),
        )
        .await;
    assert!(!is_error, "{started}");
    let status = waiting_plan(&mut client, 1).await;
    assert!(
        status.contains("a — Create a.txt") && status.contains("\"waiting_plan\""),
        "{status}"
    );
    assert!(requests_of(&server, "worker").is_empty());
    // No unit exists while the plan waits: nothing to tell yet.
    let (untold, is_error) = client
        .call("tell_worker", json!({"unit": "a", "message": "Use tabs."}))
        .await;
    assert!(is_error && untold.contains("no unit `a`"), "{untold}");

    let (refused, is_error) = client
        .call("approve_plan", json!({"answer": "edit", "plan": {"tasks": []}}))
        .await;
    assert!(is_error && refused.contains("no tasks"), "{refused}");
    let (rejected, is_error) = client
        .call(
            "approve_plan",
            json!({"answer": "reject", "feedback": "Call it b.txt"}),
        )
        .await;
    assert!(!is_error && rejected.contains("rejected"), "{rejected}");
    waiting_plan(&mut client, 2).await;
    let planners = requests_of(&server, "planner");
    assert!(has_user_message(
        planners.last().expect("a planner"),
        "Call it b.txt"
    ));
    let (approved, is_error) = client.call("approve_plan", json!({"answer": "approve"})).await;
    assert!(!is_error && approved.contains("approved"), "{approved}");
    let result = wait_for_result(&mut client).await;
    assert!(result.contains("sealed"), "{result}");
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    let (late, is_error) = client.call("approve_plan", json!({"answer": "approve"})).await;
    assert!(is_error && late.contains("no plan waiting"), "{late}");
    let (late, is_error) = client
        .call("tell_worker", json!({"unit": "a", "message": "Use tabs."}))
        .await;
    assert!(is_error && late.contains("is sealed"), "{late}");
    client.disconnect().await;
}

/// The mission id in `start_mission`'s answer ("Mission ID started in …").
fn mission_id(started: &str) -> String {
    started
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no mission id in: {started}"))
        .to_string()
}

/// Checks what every progress notification must be: numbers that only go up, never past the
/// total, and a message.
fn assert_progress_is_well_formed(notices: &[Value]) {
    let mut last = -1.0;
    for notice in notices {
        let progress = notice["progress"].as_f64().expect("a progress number");
        let total = notice["total"].as_f64().unwrap_or(f64::INFINITY);
        assert!(progress > last && progress <= total, "{notices:#?}");
        assert!(
            notice["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{notice}"
        );
        last = progress;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_mission_tells_progress_and_returns_the_result() {
    let repo = TestRepo::new(&[]);
    let server = fake(one_file_plan()).await;
    let mut client = Client::connect(&repo, Some(&server)).await;
    let (started, is_error) = client
        .call(
            "start_mission",
            json!({"objective": "Add a.txt", "approve_plan": true}),
        )
        .await;
    assert!(!is_error, "{started}");
    let id = mission_id(&started);

    // A plan waiting for the user ends the wait: nothing moves until the client passes an answer on.
    let token = json!("plan");
    let (waiting, is_error) = client
        .call_with_progress("wait_for_mission", json!({}), token.clone())
        .await;
    assert!(!is_error, "{waiting}");
    assert!(
        waiting.contains("its plan waits for the user's approval") && waiting.contains("a — Create a.txt"),
        "{waiting}"
    );
    let told = client.progress(&token);
    assert!(
        !told.is_empty(),
        "no progress notification: {:#?}",
        client.notices
    );
    assert_progress_is_well_formed(&told);

    let (approved, is_error) = client.call("approve_plan", json!({"answer": "approve"})).await;
    assert!(!is_error, "{approved}");
    let token = json!(7);
    let (result, is_error) = client
        .call_with_progress("wait_for_mission", json!({ "mission": id }), token.clone())
        .await;
    assert!(!is_error, "{result}");
    assert!(
        result.contains("sealed") && result.contains("Result commit"),
        "{result}"
    );
    let told = client.progress(&token);
    assert!(
        !told.is_empty(),
        "no progress notification: {:#?}",
        client.notices
    );
    assert_progress_is_well_formed(&told);
    // The last one completes the count (the unit, then the mission's end); the result is what
    // mission_result says.
    let last = told.last().expect("one");
    assert_eq!(
        (last["progress"].as_f64(), last["total"].as_f64()),
        (Some(2.0), Some(2.0)),
        "{told:#?}"
    );
    let (same, _) = client.call("mission_result", json!({})).await;
    assert_eq!(same, result);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));

    // A finished mission answers at once, and without a token nothing is sent.
    let before = client.notices.len();
    let (again, is_error) = client.call("wait_for_mission", json!({})).await;
    assert!(!is_error && again == result, "{again}");
    assert_eq!(client.notices.len(), before, "{:#?}", client.notices);
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_wait_says_the_mission_still_runs_and_bad_arguments_are_refused() {
    let repo = TestRepo::new(&[]);
    let mut client = Client::connect(&repo, None).await;
    let (text, is_error) = client.call("wait_for_mission", json!({})).await;
    assert!(is_error && text.contains("no mission"), "{text}");
    client.disconnect().await;

    // Slow answers keep the mission running through the short waits.
    let options = FakeOptions {
        latency: Duration::from_millis(1500),
        ..FakeOptions::default()
    };
    let server = fake_with(one_file_plan(), options).await;
    let mut client = Client::connect(&repo, Some(&server)).await;
    let (started, is_error) = client
        .call("start_mission", json!({"objective": "Add a.txt"}))
        .await;
    assert!(!is_error, "{started}");
    for seconds in [json!(1), json!(0)] {
        let (text, is_error) = client
            .call("wait_for_mission", json!({ "timeout_seconds": seconds }))
            .await;
        assert!(!is_error, "{text}");
        assert!(
            text.contains("is still running after") && text.contains("call wait_for_mission again"),
            "{text}"
        );
    }

    for (arguments, says) in [
        (
            json!({"timeout_seconds": -5}),
            "timeout_seconds must be from 0 to 3600",
        ),
        (
            json!({"timeout_seconds": 1e12}),
            "timeout_seconds must be from 0 to 3600",
        ),
        (json!({"timeout_seconds": "soon"}), "invalid type"),
        (json!({"mission": "zzz"}), "zzz"),
        (json!({"mission": ""}), "mission id"),
        (json!({"timeout": 5}), "unknown field"),
    ] {
        let (text, is_error) = client.call("wait_for_mission", arguments.clone()).await;
        assert!(is_error, "{arguments} was accepted: {text}");
        assert!(text.contains(says), "{arguments}: {text}");
    }

    // A mission that stopped answers at once with what there is.
    let (cancelled, is_error) = client.call("cancel_mission", json!({})).await;
    assert!(!is_error, "{cancelled}");
    let (text, is_error) = client.call("wait_for_mission", json!({})).await;
    assert!(!is_error, "{text}");
    assert!(text.contains("interrupted") || text.contains("resume"), "{text}");
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_stops_following() {
    let repo = TestRepo::new(&[]);
    let options = FakeOptions {
        latency: Duration::from_millis(600),
        ..FakeOptions::default()
    };
    let server = fake_with(one_file_plan(), options).await;
    let mut client = Client::connect(&repo, Some(&server)).await;
    let (started, is_error) = client
        .call("start_mission", json!({"objective": "Add a.txt"}))
        .await;
    assert!(!is_error, "{started}");
    let gone = json!("gone");
    let id = client
        .begin(
            "tools/call",
            json!({"name": "wait_for_mission", "arguments": {}, "_meta": {"progressToken": gone}}),
        )
        .await;
    // The wait is under way once it has told where the mission stands.
    client
        .notice("notifications/progress", |p| p["progressToken"] == "gone")
        .await;
    client
        .send(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id}}))
        .await;
    let told_before = client.progress(&gone).len();

    // Another wait follows the mission to its end; the cancelled one says nothing more (one
    // notification may have been on its way) and never answers.
    let (result, is_error) = client
        .call_with_progress("wait_for_mission", json!({}), json!("kept"))
        .await;
    assert!(!is_error && result.contains("sealed"), "{result}");
    assert!(!client.progress(&json!("kept")).is_empty());
    assert!(
        client.progress(&gone).len() <= told_before + 1,
        "{:#?}",
        client.notices
    );
    let (status, is_error) = client.call("mission_status", json!({})).await;
    assert!(!is_error && status.contains("sealed"), "{status}");
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribed_mission_resource_tells_its_changes() {
    let repo = TestRepo::new(&[]);
    let server = fake(one_file_plan()).await;
    let mut client = Client::connect(&repo, Some(&server)).await;
    let capabilities = &client.init["result"]["capabilities"]["resources"];
    assert_eq!(capabilities["subscribe"], true, "{}", client.init);

    let listed = client.request("resources/list", json!({})).await;
    assert_eq!(listed["result"]["resources"], json!([]), "{listed}");
    let templates = client.request("resources/templates/list", json!({})).await;
    assert_eq!(
        templates["result"]["resourceTemplates"][0]["uriTemplate"], "orchestrator://missions/{mission}",
        "{templates}"
    );
    // The latest mission may be subscribed before there is one: a new mission is its change.
    let latest = "orchestrator://missions/latest";
    let subscribed = client
        .request("resources/subscribe", json!({ "uri": latest }))
        .await;
    assert!(subscribed.get("error").is_none(), "{subscribed}");

    let (started, is_error) = client
        .call(
            "start_mission",
            json!({"objective": "Add a.txt", "approve_plan": true}),
        )
        .await;
    assert!(!is_error, "{started}");
    let id = mission_id(&started);
    client
        .notice("notifications/resources/updated", |p| p["uri"] == latest)
        .await;

    let uri = format!("orchestrator://missions/{id}");
    let listed = client.request("resources/list", json!({})).await;
    let uris: Vec<&str> = listed["result"]["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert_eq!(uris, [latest, uri.as_str()], "{listed}");
    let read = client.request("resources/read", json!({ "uri": uri })).await;
    let contents = &read["result"]["contents"][0];
    assert_eq!(contents["mimeType"], "application/json", "{read}");
    let status: Value = serde_json::from_str(contents["text"].as_str().expect("text")).expect("JSON");
    assert_eq!(status["mission"], id.as_str(), "{status}");

    let subscribed = client.request("resources/subscribe", json!({ "uri": uri })).await;
    assert!(subscribed.get("error").is_none(), "{subscribed}");
    let unsubscribed = client
        .request("resources/unsubscribe", json!({ "uri": latest }))
        .await;
    assert!(unsubscribed.get("error").is_none(), "{unsubscribed}");
    waiting_plan(&mut client, 1).await;
    let (approved, is_error) = client.call("approve_plan", json!({"answer": "approve"})).await;
    assert!(!is_error, "{approved}");
    client
        .notice("notifications/resources/updated", |p| p["uri"] == uri.as_str())
        .await;
    let (result, is_error) = client.call("wait_for_mission", json!({})).await;
    assert!(!is_error && result.contains("sealed"), "{result}");
    let read = client.request("resources/read", json!({ "uri": latest })).await;
    let status: Value = read["result"]["contents"][0]["text"]
        .as_str()
        .and_then(|t| serde_json::from_str(t).ok())
        .expect("the status as JSON");
    assert_eq!(status["status"], "sealed", "{status}");

    // Misuse: names that are no mission, or no resource of ours, are errors that say which.
    let long = format!("orchestrator://missions/{}", "x".repeat(100_000));
    for bad in [
        "orchestrator://missions/zzz",
        "orchestrator://missions/../../etc/passwd",
        "file:///etc/passwd",
        long.as_str(),
    ] {
        for method in ["resources/subscribe", "resources/read"] {
            let answer = client.request(method, json!({ "uri": bad })).await;
            let message = answer["error"]["message"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {bad}: {answer}"));
            assert!(message.len() < 600, "{message}");
        }
    }
    let answer = client
        .request("resources/read", json!({"uri": "orchestrator://missions/zzz"}))
        .await;
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("zzz")),
        "{answer}"
    );
    client.disconnect().await;
}

/// `orchestrator mcp --store postgres://…`: the mission it launches (this binary again) keeps to the
/// same store, where the server and the CLI find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn a_mission_started_over_mcp_keeps_to_the_postgres_store() {
    let schema = orchestrator_test_support::pg::fresh_schema();
    let repo = TestRepo::new(&[]);
    let server = fake(one_file_plan()).await;
    let run = Run::cmd(&["mcp", "--store", &schema.url]);
    let mut client = Client::connect_with(&repo, Some(&server), run).await;
    let (started, is_error) = client
        .call("start_mission", json!({"objective": "Add a.txt"}))
        .await;
    assert!(!is_error, "start_mission failed: {started}");
    let result = wait_for_result(&mut client).await;
    let logs: String = std::fs::read_dir(repo.path().join(".orchestrator/mcp"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .collect();
    assert!(
        result.contains("sealed"),
        "{result}\n--- the mission's log\n{logs}"
    );
    client.disconnect().await;
    assert!(!repo.path().join(".orchestrator/state.db").exists());
    let listed = Run::cmd(&["missions", "--json", "--store", &schema.url])
        .run(&repo)
        .await;
    listed.assert_code(0);
    let missions: Value = serde_json::from_str(&listed.stdout).expect("JSON");
    assert_eq!(missions.as_array().map(Vec::len), Some(1), "{missions}");
}
