//! Successful turns, for both APIs, streamed and not: text, tool calls, usage, conversation round trips.

use super::common::{client_for, for_each_variant, label, simple_request, start};
use orchestrator_fake_model::{Api, FakeOptions, Reply, SeenMessage, SeenRequest};
use orchestrator_model::{ChatRequest, Message, StopReason, ToolCall};
use tokio_util::sync::CancellationToken;

fn calls(calls: &[(&str, &str)]) -> Reply {
    Reply::ToolCalls {
        text: String::new(),
        calls: calls
            .iter()
            .map(|(n, a)| (n.to_string(), a.to_string()))
            .collect(),
    }
}

#[tokio::test]
async fn plain_text_with_usage() {
    const TEXT: &str = "Hello there, this reply is long enough to be split."; // 51 chars
    for_each_variant(|api, stream| async move {
        let server = start(|_: &SeenRequest| Reply::Text(TEXT.into()), FakeOptions::default()).await;
        let reply = client_for(&server, api, stream)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", label(api, stream)));
        assert_eq!(reply.content, TEXT, "{}", label(api, stream));
        assert!(reply.tool_calls.is_empty());
        assert_eq!(reply.stop, StopReason::EndTurn);
        assert_eq!(
            (reply.usage.prompt_tokens(), reply.usage.output_tokens),
            (4, 12),
            "{}",
            label(api, stream)
        );
        let seen = server.requests();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].stream, stream);
    })
    .await;
}

#[tokio::test]
async fn one_tool_call_reassembled() {
    const ARGS: &str = r#"{"path": "src/main.rs", "start_line": 10, "end_line": 80}"#;
    for_each_variant(|api, stream| async move {
        let server = start(
            |_: &SeenRequest| calls(&[("read_file", ARGS)]),
            FakeOptions::default(),
        )
        .await;
        let reply = client_for(&server, api, stream)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", label(api, stream)));
        assert_eq!(reply.stop, StopReason::ToolUse, "{}", label(api, stream));
        assert_eq!(reply.tool_calls.len(), 1);
        let call = &reply.tool_calls[0];
        assert_eq!(call.name, "read_file");
        if api == Api::Anthropic && !stream {
            // A non-streamed Anthropic reply carries `input` as an object, so only its meaning
            // survives, not its spacing or key order.
            let parsed: serde_json::Value = serde_json::from_str(&call.arguments).expect("valid JSON");
            assert_eq!(
                parsed,
                serde_json::from_str::<serde_json::Value>(ARGS).expect("valid JSON")
            );
        } else {
            assert_eq!(call.arguments, ARGS, "{}", label(api, stream));
        }
        let prefix = if api == Api::OpenAi { "call_" } else { "toolu_" };
        assert!(call.id.starts_with(prefix), "id {}", call.id);
    })
    .await;
}

#[tokio::test]
async fn several_tool_calls_and_text_in_one_turn() {
    for_each_variant(|api, stream| async move {
        let server = start(
            |_: &SeenRequest| Reply::ToolCalls {
                text: "Let me look around first.".into(),
                calls: vec![
                    ("list_dir".into(), r#"{"path":"."}"#.into()),
                    ("read_file".into(), r#"{"path":"Cargo.toml"}"#.into()),
                    ("read_file".into(), "{}".into()),
                ],
            },
            FakeOptions::default(),
        )
        .await;
        let reply = client_for(&server, api, stream)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", label(api, stream)));
        assert_eq!(reply.content, "Let me look around first.");
        let got: Vec<(&str, &str)> = reply
            .tool_calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("list_dir", r#"{"path":"."}"#),
                ("read_file", r#"{"path":"Cargo.toml"}"#),
                ("read_file", "{}")
            ],
            "{}",
            label(api, stream)
        );
        let mut ids: Vec<&str> = reply.tool_calls.iter().map(|c| c.id.as_str()).collect();
        ids.dedup();
        assert_eq!(ids.len(), 3, "ids must be unique: {ids:?}");
        assert!(reply.usage.output_tokens >= 1);
    })
    .await;
}

#[tokio::test]
async fn invalid_json_arguments_pass_through_raw() {
    const RAW: &str = r#"{"path": "src/lib.rs", "content": "unterminated"#;
    for_each_variant(|api, stream| async move {
        let server = start(
            |_: &SeenRequest| calls(&[("write_file", RAW)]),
            FakeOptions::default(),
        )
        .await;
        let reply = client_for(&server, api, stream)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", label(api, stream)));
        assert_eq!(reply.tool_calls.len(), 1);
        assert_eq!(reply.tool_calls[0].arguments, RAW, "{}", label(api, stream));
    })
    .await;
}

fn conversation() -> ChatRequest {
    let call = |id: &str, name: &str, arguments: &str| ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: arguments.into(),
    };
    ChatRequest {
        cache_key: None,
        shared_head: 0,
        messages: vec![
            Message::user("fix the bug"),
            Message::Assistant {
                content: "Looking.".into(),
                tool_calls: vec![
                    call("id_1", "read_file", r#"{"path":"a.rs"}"#),
                    call("id_2", "list_dir", "{not json"),
                ],
            },
            Message::Tool {
                call_id: "id_1".into(),
                content: "fn main() {}".into(),
                is_error: false,
            },
            Message::Tool {
                call_id: "id_2".into(),
                content: "your arguments were not valid JSON".into(),
                is_error: true,
            },
            Message::user("also check the tests"),
        ],
        ..super::common::simple_request()
    }
}

#[tokio::test]
async fn conversation_with_tool_results_round_trips() {
    for_each_variant(|api, stream| async move {
        let server = start(|_: &SeenRequest| Reply::Text("ok".into()), FakeOptions::default()).await;
        client_for(&server, api, stream)
            .chat(&conversation(), &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", label(api, stream)));
        let seen = server.requests().remove(0);
        assert_eq!(seen.system, "You are a test.");
        assert_eq!(seen.model, "fake-model");
        assert_eq!(seen.max_tokens, Some(256));
        assert_eq!(seen.tools, vec!["read_file", "list_dir"]);
        assert_eq!(
            seen.messages.len(),
            5,
            "{}: {:?}",
            label(api, stream),
            seen.messages
        );
        assert_eq!(seen.first_user_text(), "fix the bug");
        assert_eq!(seen.assistant_turns(), 1);
        match &seen.messages[1] {
            SeenMessage::Assistant { text, tool_calls } => {
                assert_eq!(text, "Looking.");
                assert_eq!(tool_calls[0].arguments, r#"{"path":"a.rs"}"#);
                // Unreadable arguments go back as an empty object, which every server accepts.
                assert_eq!(tool_calls[1].arguments, "{}");
            }
            other => panic!("expected the assistant turn, got {other:?}"),
        }
        let results = seen.tool_results();
        assert_eq!(results.len(), 2);
        assert_eq!(
            (results[0].0.id.as_str(), results[0].1, results[0].2),
            ("id_1", "fn main() {}", false)
        );
        assert_eq!(results[1].0.name, "list_dir");
        // OpenAI has no error flag on tool results; Anthropic carries it.
        assert_eq!(results[1].2, api == Api::Anthropic);
        assert!(
            matches!(seen.last_message(), Some(SeenMessage::User { text }) if text == "also check the tests")
        );
    })
    .await;
}
