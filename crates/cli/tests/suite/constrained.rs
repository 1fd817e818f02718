//! Constrained output: where the endpoint can hold a reply to a shape, sessions that must submit are
//! held to it, and `output = "json_schema"` puts every session in the action envelope (one JSON
//! object per reply: a call or the answer), which is what lets small local models call tools at all.
//! A server that refuses a constraint costs one request, and the mission goes on with a weaker one.

use super::support::*;
use orchestrator_fake_model::script::{role_of, PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{Brain, FakeOptions, FakeServer, Reply, SeenRequest};

fn script() -> Script {
    Script {
        plan: vec![
            PlanUnit::file("a", "a.txt", "a"),
            PlanUnit::new("b", "Write b", "FILE b.txt := b", &["a"]),
        ],
        ..Script::default()
    }
}

/// The `constraint` of every model call the run reported, by role.
fn constraints(done: &Finished, role: &str) -> Vec<Option<String>> {
    done.events_of("model_call")
        .iter()
        .filter(|e| e["role"] == role)
        .map(|e| e["constraint"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_mission_runs_in_the_action_envelope_when_configured() {
    let config = "[verify]\ntest = \"true\"\n[endpoint]\noutput = \"json_schema\"\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(script()).await;
    let done = Run::task("Write a and b")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    assert_eq!(repo.read("b.txt").as_deref(), Some("b"));
    // Every request that offered tools went out in the envelope, with no `tool_choice` beside it.
    let requests = server.requests();
    let with_tools: Vec<&SeenRequest> = requests.iter().filter(|r| !r.tools.is_empty()).collect();
    assert!(with_tools.len() >= 6, "{} requests", with_tools.len());
    for request in &with_tools {
        assert_eq!(
            request.response_format.as_deref(),
            Some("json_schema"),
            "{}",
            role_of(request)
        );
        assert_eq!(request.tool_choice, None);
    }
    // The worker's history came back as calls and results, which the scripted worker followed.
    assert!(requests_of(&server, "worker")
        .iter()
        .any(|r| !r.tool_results().is_empty()));
    // A worker's first turn is held to a call and its later ones are not, but its system prompt is
    // the same on every turn (a changing prefix would defeat a local server's prompt cache).
    let workers = requests_of(&server, "worker");
    let first = workers.first().expect("a worker request");
    assert!(workers.len() >= 2);
    for request in &workers {
        assert_eq!(
            request.system, first.system,
            "a worker's system prompt changed between turns"
        );
    }
    // Recorded per call.
    for role in ["scout", "planner", "worker", "reviewer", "master_reviewer"] {
        let seen = constraints(&done, role);
        assert!(!seen.is_empty(), "{role} made calls");
        assert!(
            seen.iter().all(|c| c.as_deref() == Some("json_schema")),
            "{role}: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_llama_cpp_server_holds_submitting_sessions_and_first_worker_turns_to_the_envelope() {
    let repo = TestRepo::new(&[]);
    let options = FakeOptions {
        owned_by: Some("llamacpp".into()),
        ..FakeOptions::default()
    };
    let server = fake_with(script(), options).await;
    let done = Run::task("Write a and b")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("b.txt").as_deref(), Some("b"));
    for role in ["planner", "reviewer", "master_reviewer"] {
        let requests = requests_of(&server, role);
        assert!(!requests.is_empty());
        assert!(
            requests
                .iter()
                .all(|r| r.response_format.as_deref() == Some("json_schema") && r.tool_choice.is_none()),
            "{role} is held to the envelope"
        );
        assert!(constraints(&done, role)
            .iter()
            .all(|c| c.as_deref() == Some("json_schema")));
    }
    assert!(requests_of(&server, "scout")
        .iter()
        .all(|r| r.response_format.is_none() && r.tool_choice.is_none()));
    assert!(
        constraints(&done, "scout").iter().all(Option::is_none),
        "scouts are free"
    );
    // A worker's first reply is held to a call; after that it is free.
    for r in requests_of(&server, "worker") {
        let held = r.response_format.as_deref() == Some("json_schema");
        assert_eq!(held, r.assistant_turns() == 0, "worker request {}", r.seq);
    }
}

/// A grammar server that turns the JSON-schema format down, as some builds and proxies do.
struct NoResponseFormat(ScriptedMission);

impl Brain for NoResponseFormat {
    fn respond(&self, request: &SeenRequest) -> Reply {
        if request.response_format.is_some() {
            return Reply::Error {
                status: 400,
                body: "response_format is not supported with this model".into(),
                retry_after: None,
            };
        }
        self.0.respond(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_envelope_costs_one_request_and_the_mission_goes_on_with_tool_choice() {
    let repo = TestRepo::new(&[]);
    let options = FakeOptions {
        owned_by: Some("vllm".into()),
        ..FakeOptions::default()
    };
    let server = FakeServer::start(NoResponseFormat(ScriptedMission::new(script())), options)
        .await
        .expect("fake server");
    let done = Run::task("Write a and b")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("b.txt").as_deref(), Some("b"));
    let asked = server
        .requests()
        .iter()
        .filter(|r| r.response_format.is_some())
        .count();
    assert_eq!(asked, 1, "the envelope was asked for {asked} times");
    assert!(requests_of(&server, "reviewer")
        .iter()
        .all(|r| r.tool_choice.as_deref() == Some("required")));
    assert!(constraints(&done, "planner")
        .iter()
        .all(|c| c.as_deref() == Some("tool_choice")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_has_no_envelope_and_keeps_its_tool_choice() {
    let config = "[verify]\ntest = \"true\"\n[endpoint]\noutput = \"json_schema\"\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(script()).await;
    Run::task("Write a and b")
        .arg("--provider")
        .arg("anthropic")
        .env("ANTHROPIC_BASE_URL", &server.anthropic_base_url())
        .env("ANTHROPIC_API_KEY", "test-key")
        .run(&repo)
        .await
        .assert_code(0);
    assert!(server.requests().iter().all(|r| r.response_format.is_none()));
    assert!(requests_of(&server, "planner")
        .iter()
        .all(|r| r.tool_choice.as_deref() == Some("any")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_output_mode_is_a_config_error_that_names_the_choices() {
    let config = "[endpoint]\noutput = \"grammar\"\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(script()).await;
    let done = Run::task("Write a").openai(&server).run(&repo).await;
    done.assert_code(2);
    assert!(done.stderr.contains("json_schema"), "{}", done.stderr);
    assert!(server.requests().is_empty());
}

/// A grammar runtime that emits every property (node-llama-cpp's does; OpenAI's strict mode asks for
/// optional fields as nullable) has the model write `null` for what it leaves out. Every tool and
/// submit call reads a `null` as "not given".
struct NullFiller(ScriptedMission);

impl Brain for NullFiller {
    fn respond(&self, request: &SeenRequest) -> Reply {
        let call = |name: &str, arguments: serde_json::Value| Reply::ToolCalls {
            text: String::new(),
            calls: vec![(name.into(), arguments.to_string())],
        };
        match (role_of(request), request.assistant_turns()) {
            ("planner", 0) => call(
                "submit_plan",
                serde_json::json!({"tasks": [{"id": "a", "title": "Write a", "description": "FILE a.txt := a",
                    "depends_on": null, "files": null}]}),
            ),
            ("worker", 0) => call(
                "read",
                serde_json::json!({"path": "README.md", "offset": null, "limit": null}),
            ),
            ("reviewer", 0) => call(
                "submit_review",
                serde_json::json!({"verdict": "pass", "summary": "fine", "issues": null, "checked": null}),
            ),
            _ => self.0.respond(request),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nulls_for_optional_arguments_are_read_as_not_given() {
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a")],
        ..Script::default()
    };
    let server = FakeServer::start(NullFiller(ScriptedMission::new(script)), FakeOptions::default())
        .await
        .expect("fake server");
    let done = Run::task("Write a")
        .arg("--json")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    assert!(done.events_of("plan_rejected").is_empty());
    let reads: Vec<_> = done
        .events_of("tool_called")
        .into_iter()
        .filter(|e| e["tool"] == "read")
        .collect();
    assert!(reads.iter().all(|e| e["ok"] == true), "{reads:?}");
}
