//! Replies that fall into a loop are cut off as they stream (`ClientConfig::cut_loops`), and only
//! those: long, regular, honest replies come through whole.

use std::time::{Duration, Instant};

use orchestrator_fake_model::{Reply, SeenRequest};
use orchestrator_model::StopReason;
use tokio_util::sync::CancellationToken;

use super::common::*;

#[tokio::test]
async fn a_reply_repeating_one_line_is_cut_off_early_with_what_it_repeated() {
    for_each_api(|api| async move {
        let server = start(
            |_: &SeenRequest| Reply::Flood {
                piece: "    return a * b\n".into(),
            },
            Default::default(),
        )
        .await;
        let mut config = config(base_url(&server, api), true);
        // Were it not cut off as a loop, the size limit would end it, as an error: the test tells
        // the two apart by the outcome.
        config.max_reply_bytes = 1 << 20;
        let started = Instant::now();
        let reply = client(api, config)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", label(api, true)));
        assert!(started.elapsed() < Duration::from_secs(20));
        let StopReason::Looped(found) = &reply.stop else {
            panic!("{}: {:?}", label(api, true), reply.stop);
        };
        assert!("    return a * b\n".repeat(2).contains(&found.piece), "{found:?}");
        assert!(found.repeats >= 4 && found.bytes >= 1024, "{found:?}");
        // The history keeps two copies, not the kilobytes of the loop.
        assert!(reply.content.len() <= 2 * 17, "{:?}", reply.content);
        assert!(reply.tool_calls.is_empty());
        // The server's count never came: the tokens are estimated, not zero, so budgets see them.
        assert!(
            reply.usage.output_tokens >= 256 && reply.usage.input_tokens > 0,
            "{:?}",
            reply.usage
        );
        assert_eq!(server.request_count(), 1, "a loop is not retried");
    })
    .await;
}

#[tokio::test]
async fn a_grammar_whitespace_runaway_is_cut_off_sooner() {
    for_each_api(|api| async move {
        let server = start(
            |_: &SeenRequest| Reply::Flood { piece: "\n".into() },
            Default::default(),
        )
        .await;
        let reply = client_for(&server, api, true)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", label(api, true)));
        let StopReason::Looped(found) = &reply.stop else {
            panic!("{}: {:?}", label(api, true), reply.stop);
        };
        assert_eq!(found.piece, "\n");
        assert!(found.bytes < 1024, "{found:?}");
    })
    .await;
}

#[tokio::test]
async fn long_regular_replies_and_calls_come_through_whole() {
    // A test file of 400 cases: the same shape on every line, never the same bytes.
    let cases: String = (0..400)
        .map(|i| {
            format!(
                "    def test_mul_{i}(self):\n        self.assertEqual(mul({i}, 3), {})\n",
                i * 3
            )
        })
        .collect();
    // Three copies of a long block, a rule of 200 `=`, and a table of 120 zeros: patterns, not loops.
    let block: String = (0..60).map(|i| format!("w{i} ")).collect();
    let text = format!(
        "{}\n{}\n{}\n{cases}",
        block.repeat(3),
        "=".repeat(200),
        "0, ".repeat(120)
    );
    let arguments = serde_json::json!({"path": "test_calc.py", "content": cases}).to_string();
    for_each_variant(|api, stream| {
        let (text, arguments) = (text.clone(), arguments.clone());
        async move {
            let (reply_text, reply_arguments) = (text.clone(), arguments.clone());
            let server = start(
                move |request: &SeenRequest| match request.first_user_text() {
                    "hi" => Reply::Text(reply_text.clone()),
                    _ => Reply::ToolCalls {
                        text: String::new(),
                        calls: vec![("write".into(), reply_arguments.clone())],
                    },
                },
                Default::default(),
            )
            .await;
            let client = client_for(&server, api, stream);
            let reply = client
                .chat(&simple_request(), &CancellationToken::new())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", label(api, stream)));
            assert_eq!(reply.stop, StopReason::EndTurn, "{}", label(api, stream));
            assert_eq!(reply.content, text, "{}", label(api, stream));
            let mut request = simple_request();
            request.messages = vec![orchestrator_model::Message::user("write it")];
            let reply = client
                .chat(&request, &CancellationToken::new())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", label(api, stream)));
            assert_eq!(
                reply.tool_calls.len(),
                1,
                "{}: {:?}",
                label(api, stream),
                reply.stop
            );
            assert_eq!(reply.tool_calls[0].arguments, arguments);
        }
    })
    .await;
}

#[tokio::test]
async fn with_cut_loops_off_a_loop_runs_to_the_size_limit() {
    for_each_api(|api| async move {
        let server = start(
            |_: &SeenRequest| Reply::Flood {
                piece: "again ".into(),
            },
            Default::default(),
        )
        .await;
        let mut config = config(base_url(&server, api), true);
        config.max_reply_bytes = 64 * 1024;
        config.cut_loops = false;
        let error = client(api, config)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("the flood passes the size limit");
        assert!(
            matches!(error, orchestrator_model::ModelError::ReplyTooLarge { .. }),
            "{}: {error}",
            label(api, true)
        );
    })
    .await;
}
