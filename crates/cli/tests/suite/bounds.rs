//! Bounded, whatever the model sends: a tool call with huge arguments is refused with the numbers and
//! never resent, and big arguments that are allowed run in full but stay short in the history that
//! every later turn resends.

use super::support::*;
use orchestrator_fake_model::script::{PlanUnit, Script};
use orchestrator_fake_model::SeenMessage;

/// The largest tool-call arguments any worker request carried in its history.
fn largest_history_arguments(server: &orchestrator_fake_model::FakeServer) -> usize {
    requests_of(server, "worker")
        .iter()
        .flat_map(|r| r.messages.clone())
        .filter_map(|m| match m {
            SeenMessage::Assistant { tool_calls, .. } => tool_calls.iter().map(|c| c.arguments.len()).max(),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_arguments_are_refused_and_big_ones_stay_out_of_the_history() {
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Write files",
            "BIGFILE big.txt 200000\nBIGFILE huge.txt 3000000\nFILE a.txt := a",
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Write files").openai(&server).run(&repo).await;
    done.assert_code(0);
    // Allowed: written whole.
    assert_eq!(repo.read("big.txt").map(|t| t.len()), Some(200_000));
    // Refused, with the numbers, and the unit went on.
    assert_eq!(repo.read("huge.txt"), None);
    let refusal = tool_results(&server)
        .into_iter()
        .find(|(name, output, _)| name == "write" && output.contains("Not run: the arguments"))
        .expect("the refusal went back to the model");
    assert!(
        refusal.1.contains("one call may carry at most 1048576 bytes"),
        "{}",
        refusal.1
    );
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    // Neither was resent turn after turn.
    let largest = largest_history_arguments(&server);
    assert!(largest < 4_000, "the history resent {largest} bytes of arguments");
}

/// A worker that "answers" with a call to a tool that does not exist is corrected (with the real
/// tools), never taken as done; one that keeps at it fails its unit instead of passing review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_an_invented_tool_is_not_an_answer() {
    let config = "[verify]\ntest = \"true\"\n[limits]\nunit_attempts = 1\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Multiply",
            "FILE calc.py := def mul(a, b): return a * b\nANSWER {\"name\": \"mul\", \"arguments\": {\"a\": 2, \"b\": 3}}",
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Multiply")
        .arg("--rounds")
        .arg("1")
        .openai(&server)
        .run(&repo)
        .await;
    done.assert_code(1);
    let corrected = requests_of(&server, "worker").iter().any(|r| {
        r.messages.iter().any(|m| {
            matches!(m, SeenMessage::User { text } if text.starts_with("There is no tool `mul`") && text.contains("write"))
        })
    });
    assert!(corrected, "the worker was told the real tools");
    assert!(
        requests_of(&server, "reviewer").is_empty(),
        "the invented call never reached a review"
    );
}

/// A worker whose final answer quotes a tool call inside its report (as a scout or reviewer might quote
/// code) has answered: the quoted call never runs, and the unit goes on to review with that answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_quoted_in_a_report_does_not_run() {
    let repo = TestRepo::new(&[]);
    let quoted = r#"{"name": "write", "arguments": {"path": "pwned.txt", "content": "x"}}"#;
    let report = format!(
        "Added mul to calc.py and kept the module's style. The old release notes describe a helper that \
         was once called like {quoted} to stamp builds; I did not add it back, since nothing in the tests \
         needs it and the unit only asked for multiplication. The tests pass locally."
    );
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Multiply",
            &format!("FILE calc.py := def mul(a, b): return a * b\nANSWER {report}"),
            &[],
        )],
        ..Script::default()
    };
    let server = fake(script).await;
    let done = Run::task("Multiply").openai(&server).run(&repo).await;
    done.assert_code(0);
    assert_eq!(repo.read("pwned.txt"), None, "the quoted call ran");
    assert!(repo.read("calc.py").is_some());
}

/// Plays the script, but the worker of unit `a` calls `spawn` a second time once its first spawn
/// came back, as a small model did (getting children with the same ids, merged again and again).
struct SpawnTwice {
    inner: orchestrator_fake_model::script::ScriptedMission,
    again: std::sync::atomic::AtomicBool,
}

impl orchestrator_fake_model::Brain for SpawnTwice {
    fn respond(&self, request: &orchestrator_fake_model::SeenRequest) -> orchestrator_fake_model::Reply {
        use orchestrator_fake_model::script::{role_of, worker_unit};
        let after_children = matches!(
            request.last_message(),
            Some(SeenMessage::Tool { content, .. }) if content.starts_with("Sub-tasks finished")
        );
        if role_of(request) == "worker"
            && worker_unit(request).as_deref() == Some("a")
            && after_children
            && !self.again.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            let tasks = serde_json::json!({"tasks": [{"title": "again", "description": "FILE x.txt := x"}]});
            return orchestrator_fake_model::Reply::ToolCalls {
                text: String::new(),
                calls: vec![("spawn".into(), tasks.to_string())],
            };
        }
        self.inner.respond(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_splits_once() {
    let repo = TestRepo::new(&[]);
    let script = Script {
        plan: vec![PlanUnit::new(
            "a",
            "Split",
            "SPAWN part :: FILE p.txt := p\nFILE a.txt := a",
            &[],
        )],
        ..Script::default()
    };
    let brain = SpawnTwice {
        inner: orchestrator_fake_model::script::ScriptedMission::new(script),
        again: std::sync::atomic::AtomicBool::new(false),
    };
    let server = orchestrator_fake_model::FakeServer::start(brain, Default::default())
        .await
        .expect("fake server");
    let done = Run::task("Split").arg("--json").openai(&server).run(&repo).await;
    done.assert_code(0);
    assert_eq!(
        done.events_of("units_spawned").len(),
        1,
        "one split, no second set"
    );
    let refused = tool_results(&server)
        .into_iter()
        .any(|(name, output, _)| name == "spawn" && output.contains("already split itself into a.1"));
    assert!(refused, "the second spawn was refused with what exists");
    assert_eq!(repo.read("x.txt"), None);
    assert_eq!(repo.read("p.txt").as_deref(), Some("p"));
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
}

/// Plays the script, but the planner answers with its plan's arguments as text, with no tool call
/// (a small model did that), or with the same prose every time.
struct TextPlanner {
    inner: orchestrator_fake_model::script::ScriptedMission,
    prose: Option<&'static str>,
}

impl orchestrator_fake_model::Brain for TextPlanner {
    fn respond(&self, request: &orchestrator_fake_model::SeenRequest) -> orchestrator_fake_model::Reply {
        use orchestrator_fake_model::Reply;
        let reply = self.inner.respond(request);
        if orchestrator_fake_model::script::role_of(request) != "planner" {
            return reply;
        }
        match (self.prose, reply) {
            (Some(prose), _) => Reply::Text(prose.into()),
            (None, Reply::ToolCalls { calls, .. }) => {
                Reply::Text(calls.into_iter().next().map(|(_, args)| args).unwrap_or_default())
            }
            (None, other) => other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_given_as_bare_arguments_is_taken_as_the_call() {
    let repo = TestRepo::new(&[]);
    let brain = TextPlanner {
        inner: orchestrator_fake_model::script::ScriptedMission::new(Script {
            plan: vec![PlanUnit::file("a", "a.txt", "a")],
            ..Script::default()
        }),
        prose: None,
    };
    let server = orchestrator_fake_model::FakeServer::start(brain, Default::default())
        .await
        .expect("fake server");
    let done = Run::task("Write a").openai(&server).run(&repo).await;
    done.assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bad_reply_again_gets_the_exact_shape_of_the_call() {
    let repo = TestRepo::new(&[]);
    let brain = TextPlanner {
        inner: orchestrator_fake_model::script::ScriptedMission::new(Script {
            plan: vec![PlanUnit::file("a", "a.txt", "a")],
            ..Script::default()
        }),
        prose: Some("I will now plan the work."),
    };
    let server = orchestrator_fake_model::FakeServer::start(brain, Default::default())
        .await
        .expect("fake server");
    let done = Run::task("Write a").openai(&server).run(&repo).await;
    done.assert_code(1);
    let corrections: Vec<String> = requests_of(&server, "planner")
        .last()
        .map(|r| {
            r.messages
                .iter()
                .filter_map(|m| match m {
                    SeenMessage::User { text } if text.starts_with("You answered without") => {
                        Some(text.clone())
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(corrections.len() >= 2, "{corrections:?}");
    assert!(!corrections[0].contains("same reply"), "{}", corrections[0]);
    assert!(
        corrections[1].contains("You sent the same reply as before")
            && corrections[1].contains("submit_plan {\"tasks\":[{"),
        "{}",
        corrections[1]
    );
}

/// Refuses every request that forces a tool choice, as older llama.cpp builds and some proxies do.
struct NoToolChoice(orchestrator_fake_model::script::ScriptedMission);

impl orchestrator_fake_model::Brain for NoToolChoice {
    fn respond(&self, request: &orchestrator_fake_model::SeenRequest) -> orchestrator_fake_model::Reply {
        if request.tool_choice.is_some() {
            return orchestrator_fake_model::Reply::Error {
                status: 400,
                body: "'tool_choice' is not supported by this server".into(),
                retry_after: None,
            };
        }
        self.0.respond(request)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_must_submit_force_a_tool_call_where_the_endpoint_allows() {
    let script = || Script {
        plan: vec![PlanUnit::file("a", "a.txt", "a")],
        ..Script::default()
    };
    let repo = TestRepo::new(&[]);
    let server = fake(script()).await;
    Run::task("Write a")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    for role in ["planner", "reviewer", "master_reviewer"] {
        assert!(
            requests_of(&server, role)
                .iter()
                .all(|r| r.tool_choice.as_deref() == Some("required")),
            "{role} must answer with a call"
        );
    }
    // A worker's first reply must be a call (a look or a change); after that it is free.
    for r in requests_of(&server, "worker") {
        let expected = (r.assistant_turns() == 0).then_some("required");
        assert_eq!(r.tool_choice.as_deref(), expected, "worker request {}", r.seq);
    }

    // An endpoint that refuses it: asked once more without, and never again.
    let repo = TestRepo::new(&[]);
    let brain = NoToolChoice(orchestrator_fake_model::script::ScriptedMission::new(script()));
    let server = orchestrator_fake_model::FakeServer::start(brain, Default::default())
        .await
        .expect("fake server");
    Run::task("Write a")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    assert_eq!(repo.read("a.txt").as_deref(), Some("a"));
    let forced = server
        .requests()
        .iter()
        .filter(|r| r.tool_choice.is_some())
        .count();
    assert!(
        forced <= 1,
        "{forced} requests forced a tool choice after the refusal"
    );

    // Off in the config: never sent.
    let config = "[verify]\ntest = \"true\"\n[endpoint]\ntool_choice = false\n";
    let repo = TestRepo::new(&[("orchestrator.toml", config)]);
    let server = fake(script()).await;
    Run::task("Write a")
        .openai(&server)
        .run(&repo)
        .await
        .assert_code(0);
    assert!(server.requests().iter().all(|r| r.tool_choice.is_none()));
}
