//! The orchestration-tool path, proven against the real OpenCode: a `submit_review` tool served by
//! us over MCP (streamable HTTP on 127.0.0.1), called by the scripted model of an OpenCode session,
//! and each call attributed to the session that made it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::support::*;
use futures::FutureExt;
use orchestrator_fake_model::{Reply, SeenRequest};
use orchestrator_opencode::tool_bridge::server_name;
use orchestrator_opencode::{BridgeCall, BridgeReply, BridgeTool, CreateSession, PromptRequest, ToolBridge};
use serde_json::json;

fn submit_review() -> BridgeTool {
    let schema = json!({
        "type": "object",
        "properties": {
            "verdict": { "type": "string", "enum": ["pass", "fail"] },
            "summary": { "type": "string" }
        },
        "required": ["verdict", "summary"]
    });
    BridgeTool {
        name: "submit_review".into(),
        description: "Submit your review of the unit.".into(),
        input_schema: schema.as_object().cloned().unwrap_or_default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    opencode_missing,
    ignore = "needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"
)]
async fn two_sessions_call_submit_review_and_each_call_is_attributed_to_its_session() {
    let bin = opencode_bin();
    // The scripted reviewer calls whichever `*submit_review` tool it is offered, with its prompt as
    // the summary; offered more than one, it says so instead (the test then fails on its text).
    let world = World::new(|request: &SeenRequest| {
        if is_title_request(request) {
            return title_reply();
        }
        if let Some((_, content, is_error)) = request.tool_results().last() {
            return Reply::Text(format!("review submitted (error: {is_error}): {content}"));
        }
        let offered: Vec<&String> = request
            .tools
            .iter()
            .filter(|t| t.ends_with("submit_review"))
            .collect();
        match offered.as_slice() {
            [tool] => Reply::ToolCalls {
                text: String::new(),
                calls: vec![(
                    tool.to_string(),
                    json!({ "verdict": "pass", "summary": last_user_text(request) }).to_string(),
                )],
            },
            _ => Reply::Text(format!("offered review tools: {offered:?}")),
        }
    })
    .await;
    let calls: Arc<Mutex<Vec<BridgeCall>>> = Arc::default();
    let seen = calls.clone();
    let bridge = ToolBridge::start(Arc::new(move |call: BridgeCall| {
        let seen = seen.clone();
        async move {
            let reply = format!("review recorded for {}", call.session_key);
            seen.lock().expect("lock").push(call);
            BridgeReply::ok(reply)
        }
        .boxed()
    }))
    .await
    .expect("the bridge starts");

    let server = world.start(&bin).await;
    let client = server.client().expect("a client");
    let dir = world.dir();
    // Both reviewers work in the same folder, so they share OpenCode's instance and its MCP servers:
    // the per-prompt tools map is what keeps each one to its own.
    let keys = ["reviewer-t1", "reviewer-t2"];
    for key in keys {
        bridge.register(key, vec![submit_review()]);
        let status = client
            .add_mcp(&dir, &server_name(key), &bridge.mcp_config(key))
            .await
            .expect("the MCP server is added");
        assert_eq!(
            status[server_name(key)]["status"],
            "connected",
            "{status}\n{}",
            server.output()
        );
    }
    for key in keys {
        let session = client
            .create_session(&dir, &CreateSession::default())
            .await
            .expect("a session");
        let mut prompt = PromptRequest::text(format!("Review as {key}"));
        for other in keys.iter().filter(|k| **k != key) {
            prompt.tools.insert(format!("{}_*", server_name(other)), false);
        }
        let reply = client
            .prompt(&dir, &session.id, &prompt)
            .await
            .expect("the prompt is answered");
        assert_eq!(reply.error_message(), None, "{reply:?}");
        assert_eq!(
            reply.text(),
            format!("review submitted (error: false): review recorded for {key}"),
            "{reply:?}"
        );
        let messages = client.messages(&dir, &session.id).await.expect("messages");
        let tools: Vec<String> = messages
            .iter()
            .flat_map(|m| m.tool_calls())
            .map(|(tool, state)| format!("{tool}:{}", state.status))
            .collect();
        assert_eq!(tools, [format!("{}_submit_review:completed", server_name(key))]);
    }
    let calls = calls.lock().expect("lock").clone();
    let attributed: Vec<(String, String, serde_json::Value)> = calls
        .into_iter()
        .map(|c| (c.session_key, c.tool, c.arguments))
        .collect();
    assert_eq!(
        attributed,
        keys.map(|key| (
            key.to_string(),
            "submit_review".to_string(),
            json!({ "verdict": "pass", "summary": format!("Review as {key}") })
        ))
    );
    server.stop(Duration::from_secs(5)).await;
    bridge.stop();
}
