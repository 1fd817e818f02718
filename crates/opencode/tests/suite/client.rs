//! The client against the real `opencode serve` (OPENCODE_BIN), offline, with the fake model server
//! as its provider.

use std::time::Duration;

use super::support::*;
use orchestrator_fake_model::{Reply, SeenRequest};
use orchestrator_opencode::{Auth, Client, CreateSession, Error, PromptRequest, Usage};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    opencode_missing,
    ignore = "needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"
)]
async fn a_session_writes_a_file_with_opencodes_write_tool_and_reports_usage() {
    let bin = opencode_bin();
    // The scripted model: write hello.txt with OpenCode's own `write` tool, then say it is done.
    let target = std::sync::Arc::new(std::sync::Mutex::new(std::path::PathBuf::new()));
    let brain_target = target.clone();
    let world = World::new(move |request: &SeenRequest| {
        if is_title_request(request) {
            return title_reply();
        }
        if !request.tool_results().is_empty() {
            return Reply::Text("Wrote hello.txt.".into());
        }
        let path = brain_target.lock().expect("lock").join("hello.txt");
        Reply::ToolCalls {
            text: String::new(),
            calls: vec![(
                "write".into(),
                json!({ "filePath": path, "content": "hello from opencode\n" }).to_string(),
            )],
        }
    })
    .await;
    *target.lock().expect("lock") = world.dir();
    let server = world.start(&bin).await;
    let client = server.client().expect("a client");

    let session = client
        .create_session(&world.dir(), &CreateSession::default())
        .await
        .expect("a session");
    assert_eq!(session.directory, world.dir().to_string_lossy(), "{session:?}");
    let reply = client
        .prompt(&world.dir(), &session.id, &PromptRequest::text("Write hello.txt"))
        .await
        .expect("the prompt is answered");
    assert_eq!(reply.error_message(), None, "{reply:?}\n{}", server.output());
    assert_eq!(reply.text(), "Wrote hello.txt.");
    assert_eq!(
        std::fs::read_to_string(world.dir().join("hello.txt")).expect("hello.txt was written"),
        "hello from opencode\n"
    );

    let messages = client
        .messages(&world.dir(), &session.id)
        .await
        .expect("messages");
    let tools: Vec<(&str, &str)> = messages
        .iter()
        .flat_map(|m| m.tool_calls())
        .map(|(tool, state)| (tool, state.status.as_str()))
        .collect();
    assert_eq!(tools, [("write", "completed")], "{messages:?}");
    let usage = Usage::of(&messages);
    assert_eq!(
        usage.assistant_messages, 2,
        "a tool-call step and the answer: {messages:?}"
    );
    assert!(usage.input > 0 && usage.output > 0, "{usage:?}");
    assert!(usage.cost > 0.0, "the configured price gives a cost: {usage:?}");
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    opencode_missing,
    ignore = "needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"
)]
async fn abort_stops_a_session_that_waits_on_the_model() {
    let bin = opencode_bin();
    let world = World::new(|request: &SeenRequest| {
        if is_title_request(request) {
            return title_reply();
        }
        Reply::Hang
    })
    .await;
    let server = world.start(&bin).await;
    let client = server.client().expect("a client");
    let dir = world.dir();
    let session = client
        .create_session(&dir, &CreateSession::default())
        .await
        .expect("a session");
    client
        .prompt_async(&dir, &session.id, &PromptRequest::text("Think forever"))
        .await
        .expect("the prompt is accepted");
    // Abort once the model call is under way: the session is busy before its assistant message
    // exists, and an abort that early leaves no assistant message to carry the error.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !world.model.requests().iter().any(|r| !is_title_request(r)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the model was never called"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(client
        .statuses(&dir)
        .await
        .expect("statuses")
        .contains_key(&session.id));
    assert!(client.abort(&dir, &session.id).await.expect("abort"));
    tokio::time::timeout(
        Duration::from_secs(30),
        client.wait_idle(&dir, &session.id, Duration::from_millis(100)),
    )
    .await
    .expect("idle soon after the abort")
    .expect("statuses");
    let messages = client.messages(&dir, &session.id).await.expect("messages");
    let last = messages.last().expect("messages");
    assert!(last.is_assistant(), "{messages:?}");
    let error = last.error_message().unwrap_or_default();
    assert!(error.contains("Abort"), "{error}");
    server.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    opencode_missing,
    ignore = "needs OpenCode: set OPENCODE_BIN (.ci/run installs it)"
)]
async fn a_wrong_password_is_refused_with_a_clear_error() {
    let bin = opencode_bin();
    let world = World::new(|_: &SeenRequest| title_reply()).await;
    let server = orchestrator_opencode::OpencodeServer::start(world.options(&bin).password("s3cret"))
        .await
        .unwrap_or_else(|e| panic!("opencode serve starts with a password: {e}"));
    // The server's own client carries the password.
    server.client().expect("client").health().await.expect("healthy");

    for auth in [Some(Auth::password("wrong")), None] {
        let client = Client::new(server.url(), auth).expect("client");
        let error = client.health().await.expect_err("refused");
        assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("401") && text.contains("password"), "{text}");
        let error = client
            .create_session(&world.dir(), &CreateSession::default())
            .await
            .expect_err("refused");
        assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
    }
    server.stop(Duration::from_secs(5)).await;
}
