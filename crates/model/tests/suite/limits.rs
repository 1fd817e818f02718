//! The bounds on one reply, for both APIs and both streaming modes: its size (an endless reply ends
//! with a clear error instead of eating memory) and the time one request may take (a reply dripping
//! in under the idle timeout still ends), and big replies within the bounds arriving whole.

use std::sync::Arc;
use std::time::Duration;

use super::common::{base_url, client, config, for_each_api, for_each_variant, label, simple_request, start};
use orchestrator_fake_model::{FakeOptions, Reply, SeenRequest};
use orchestrator_model::{ChatResponse, GovernedClient, GovernorConfig, ModelClient, ModelError};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const KIB: usize = 1024;

/// What an endless reply repeats: long, so that in a stream the text outweighs the JSON around it.
fn flood_piece() -> String {
    "all work and no play makes a model repeat itself; ".repeat(20)
}

#[tokio::test]
async fn an_endless_reply_fails_at_the_size_limit_and_is_not_retried() {
    for_each_variant(|api, stream| async move {
        let server = start(
            |_: &SeenRequest| Reply::Flood { piece: flood_piece() },
            FakeOptions::default(),
        )
        .await;
        let mut config = config(base_url(&server, api), stream);
        config.max_reply_bytes = 256 * KIB;
        // The flood repeats one piece, which the loop watch would cut off first (see loops.rs);
        // the size limit is what bounds a flood that is no loop, and is tested alone here.
        config.cut_loops = false;
        // Far more than the flood needs to pass the limit: were it not cut by size, the call would
        // end here with `ReplyTooSlow` and fail the test, rather than hang it.
        config.request_timeout = Duration::from_secs(60);
        let error = client(api, config)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("an endless reply fails");
        // Streamed, the text passes the limit first; a whole body is refused once it holds more
        // than a reply may, framing included, since it cannot be parsed before it ends.
        let ModelError::ReplyTooLarge {
            max_reply_bytes,
            on_the_wire,
        } = error
        else {
            panic!("{}: {error}", label(api, stream));
        };
        assert_eq!(
            (max_reply_bytes, on_the_wire),
            (256 * KIB, !stream),
            "{}",
            label(api, stream)
        );
        let message = error.to_string();
        assert!(
            message.contains("256 KiB") && message.contains("`endpoint.max_reply_bytes`"),
            "{message}"
        );
        assert!(!error.is_transient());
        assert_eq!(
            server.request_count(),
            1,
            "{}: a flood is not retried",
            label(api, stream)
        );
    })
    .await;
}

#[tokio::test]
async fn an_endless_stream_of_empty_deltas_fails_at_the_wire_limit() {
    for_each_api(|api| async move {
        let stream = true;
        let server = start(
            |_: &SeenRequest| Reply::Flood { piece: String::new() },
            FakeOptions::default(),
        )
        .await;
        let mut config = config(base_url(&server, api), stream);
        config.max_reply_bytes = 64 * KIB;
        config.request_timeout = Duration::from_secs(60);
        let error = client(api, config)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("an endless reply fails");
        assert!(
            matches!(
                error,
                ModelError::ReplyTooLarge {
                    on_the_wire: true,
                    ..
                }
            ),
            "{}: {error}",
            label(api, stream)
        );
        assert!(error.to_string().contains("512 KiB received"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn the_size_limit_counts_text_and_arguments_as_assembled() {
    for_each_variant(|api, stream| async move {
        // Arguments go in a few big deltas, so their framing is small beside them.
        let server = start(
            |request: &SeenRequest| {
                let size = if request.first_user_text() == "small" {
                    60
                } else {
                    70
                };
                Reply::ToolCalls {
                    text: String::new(),
                    calls: vec![(
                        "write".into(),
                        json!({"content": "x".repeat(size * KIB)}).to_string(),
                    )],
                }
            },
            FakeOptions::default(),
        )
        .await;
        let mut config = config(base_url(&server, api), stream);
        config.max_reply_bytes = 64 * KIB;
        config.cut_loops = false; // the filler repeats; measured here is the size limit alone
        let client = client(api, config);
        let mut request = simple_request();
        request.messages = vec![orchestrator_model::Message::user("small")];
        let reply = client.chat(&request, &CancellationToken::new()).await;
        assert!(reply.is_ok(), "{}: {reply:?}", label(api, stream));
        request.messages = vec![orchestrator_model::Message::user("big")];
        let error = client
            .chat(&request, &CancellationToken::new())
            .await
            .expect_err("too big");
        assert!(
            matches!(
                error,
                ModelError::ReplyTooLarge {
                    max_reply_bytes: 65536,
                    on_the_wire: false,
                }
            ),
            "{}: {error}",
            label(api, stream)
        );
    })
    .await;
}

/// About `seconds` of reply at 50 ms a piece (each piece is some 12 characters).
fn drip(seconds: u64) -> Reply {
    Reply::Drip {
        text: "drip, drip. ".repeat(seconds as usize * 20),
        every: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn a_slow_drip_fails_at_the_deadline_and_is_not_retried() {
    for_each_variant(|api, stream| async move {
        let server = start(|_: &SeenRequest| drip(30), FakeOptions::default()).await;
        let mut config = config(base_url(&server, api), stream);
        // Each piece comes well within the idle timeout (5 s here); only the deadline can end it.
        config.request_timeout = Duration::from_millis(400);
        let error = client(api, config)
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("too slow");
        assert!(
            matches!(
                error,
                ModelError::ReplyTooSlow { request_timeout } if request_timeout == Duration::from_millis(400)
            ),
            "{}: {error}",
            label(api, stream)
        );
        let message = error.to_string();
        assert!(
            message.contains("400ms") && message.contains("`endpoint.request_timeout_secs`"),
            "{message}"
        );
        assert_eq!(server.request_count(), 1, "{}: not retried", label(api, stream));
    })
    .await;
}

#[tokio::test]
async fn a_drip_that_ends_within_the_deadline_is_a_reply() {
    for_each_variant(|api, stream| async move {
        let server = start(
            |_: &SeenRequest| Reply::Drip {
                text: "slow but sure".into(),
                every: Duration::from_millis(20),
            },
            FakeOptions::default(),
        )
        .await;
        let reply = client(api, config(base_url(&server, api), stream))
            .chat(&simple_request(), &CancellationToken::new())
            .await;
        assert_eq!(
            reply.map(|r| r.content).ok().as_deref(),
            Some("slow but sure"),
            "{}",
            label(api, stream)
        );
    })
    .await;
}

#[tokio::test]
async fn the_governor_does_not_retry_a_flood_either() {
    for_each_variant(|api, stream| async move {
        let server = start(
            |_: &SeenRequest| Reply::Flood { piece: flood_piece() },
            FakeOptions::default(),
        )
        .await;
        let mut config = config(base_url(&server, api), stream);
        config.max_reply_bytes = 128 * KIB;
        config.cut_loops = false; // as above: the size limit alone
        let inner: Arc<dyn ModelClient> = Arc::from(client(api, config.without_retries()));
        let governed = GovernedClient::new(inner, GovernorConfig::default());
        let error = governed
            .chat(&simple_request(), &CancellationToken::new())
            .await
            .expect_err("a flood fails");
        assert!(
            matches!(error, ModelError::ReplyTooLarge { .. }),
            "{}: {error}",
            label(api, stream)
        );
        assert_eq!(server.request_count(), 1, "{}", label(api, stream));
    })
    .await;
}

/// The arguments of the one call in `reply`, parsed (a whole Anthropic reply carries them as a JSON
/// object, which comes back re-serialised).
fn arguments(reply: &ChatResponse) -> Value {
    reply
        .tool_calls
        .first()
        .and_then(|call| serde_json::from_str(&call.arguments).ok())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn four_mib_of_tool_arguments_in_small_chunks_arrive_whole() {
    // Multi-byte characters and escapes, cut wherever the 1000-byte chunks fall.
    let content = "ünïcödé \"quoted\" line\n€ ".repeat(4 * KIB * KIB / 32);
    let expected = json!({"path": "big.txt", "content": content});
    let sent = expected.to_string();
    assert!(sent.len() > 4 * KIB * KIB);
    for_each_variant(|api, stream| {
        let (expected, sent) = (expected.clone(), sent.clone());
        async move {
            let server = start(
                move |_: &SeenRequest| Reply::Chunked {
                    reply: Box::new(Reply::ToolCalls {
                        text: "Writing it.".into(),
                        calls: vec![("write".into(), sent.clone())],
                    }),
                    bytes: 1000,
                },
                FakeOptions::default(),
            )
            .await;
            // The default limits: a 4 MiB reply is well within them. (The filler repeats, which
            // the loop watch would cut off: it is off, to see the size limits alone.)
            let mut config = config(base_url(&server, api), stream);
            config.cut_loops = false;
            let reply = client(api, config)
                .chat(&simple_request(), &CancellationToken::new())
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", label(api, stream)));
            assert_eq!(reply.content, "Writing it.", "{}", label(api, stream));
            assert_eq!(reply.tool_calls.len(), 1);
            assert_eq!(reply.tool_calls[0].name, "write");
            assert!(
                arguments(&reply) == expected,
                "{}: the arguments differ",
                label(api, stream)
            );
        }
    })
    .await;
}
