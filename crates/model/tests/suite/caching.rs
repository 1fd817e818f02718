//! Prompt caching: cached tokens read apart from plain input, breakpoints and `prompt_cache_key`
//! on the wire, and an endpoint that refuses the key costs one request, once.

use orchestrator_fake_model::{Api, FakeOptions, Reply, SeenRequest};
use orchestrator_model::{ChatRequest, Message, ModelError};
use tokio_util::sync::CancellationToken;

use super::common::{base_url, client, client_for, config, for_each_variant, simple_request, start};

/// A request whose prefix is long enough for the fake's cache blocks, with a cache key.
fn long_request(task: &str) -> ChatRequest {
    ChatRequest {
        system: format!("You are a test. {}", "Shared context. ".repeat(200)),
        messages: vec![Message::user(task)],
        cache_key: Some("mission-1:worker".into()),
        ..simple_request()
    }
}

fn answers(_: &SeenRequest) -> Reply {
    Reply::Text("done".into())
}

#[tokio::test]
async fn a_repeated_prefix_is_reported_as_cached_input_apart_from_plain_input() {
    for_each_variant(|api, stream| async move {
        let server = start(answers, FakeOptions::default()).await;
        let client = client_for(&server, api, stream);
        let never = CancellationToken::new();
        let first = client
            .chat(&long_request("unit one"), &never)
            .await
            .expect("first");
        let second = client
            .chat(&long_request("unit two"), &never)
            .await
            .expect("second");
        assert_eq!(
            first.usage.cache_read_tokens, 0,
            "{api:?} {stream}: nothing cached yet"
        );
        assert!(
            second.usage.cache_read_tokens > second.usage.input_tokens,
            "{api:?} {stream}: most of the prompt is the shared prefix: {:?}",
            second.usage
        );
        if api == Api::Anthropic {
            assert!(first.usage.cache_write_tokens > 0, "{:?}", first.usage);
        }
        // The kinds never overlap: together they are the whole prompt, as without caching.
        let plain = start(
            answers,
            FakeOptions {
                no_prompt_cache: true,
                ..FakeOptions::default()
            },
        )
        .await;
        let uncached = client_for(&plain, api, stream)
            .chat(&long_request("unit two"), &never)
            .await
            .expect("uncached");
        assert_eq!(
            second.usage.prompt_tokens(),
            uncached.usage.prompt_tokens(),
            "{api:?} {stream}"
        );
        assert_eq!(
            uncached.usage.cache_read_tokens + uncached.usage.cache_write_tokens,
            0
        );
    })
    .await;
}

#[tokio::test]
async fn requests_carry_the_cache_hints_unless_turned_off() {
    for_each_variant(|api, stream| async move {
        let server = start(answers, FakeOptions::default()).await;
        let never = CancellationToken::new();
        let on = client_for(&server, api, stream);
        on.chat(&long_request("task"), &never).await.expect("on");
        let mut settings = config(base_url(&server, api), stream);
        settings.prompt_cache = false;
        client(api, settings)
            .chat(&long_request("task"), &never)
            .await
            .expect("off");
        let requests = server.requests();
        let marks = |r: &SeenRequest| r.prompt.iter().filter(|p| p.breakpoint).count();
        match api {
            Api::OpenAi => {
                assert_eq!(requests[0].prompt_cache_key.as_deref(), Some("mission-1:worker"));
                assert_eq!(requests[1].prompt_cache_key, None);
            }
            Api::Anthropic => {
                assert!((1..=4).contains(&marks(&requests[0])), "{:?}", requests[0].prompt);
                assert_eq!(marks(&requests[1]), 0);
            }
        }
    })
    .await;
}

const REFUSAL: &str = "Unrecognized request argument supplied: prompt_cache_key";

#[tokio::test]
async fn an_endpoint_refusing_the_cache_key_is_asked_again_once_without_it_and_never_again() {
    let refuses_key = |request: &SeenRequest| match request.prompt_cache_key {
        Some(_) => Reply::Error {
            status: 400,
            body: REFUSAL.into(),
            retry_after: None,
        },
        None => Reply::Text("fine".into()),
    };
    for stream in [false, true] {
        let server = start(refuses_key, FakeOptions::default()).await;
        let client = client_for(&server, Api::OpenAi, stream);
        let never = CancellationToken::new();
        let reply = client
            .chat(&long_request("a"), &never)
            .await
            .expect("answered without the key");
        assert_eq!(reply.content, "fine");
        client.chat(&long_request("b"), &never).await.expect("second");
        let keys: Vec<Option<String>> = server
            .requests()
            .into_iter()
            .map(|r| r.prompt_cache_key)
            .collect();
        assert_eq!(
            keys,
            vec![Some("mission-1:worker".to_string()), None, None],
            "remembered"
        );
    }
}

#[tokio::test]
async fn an_endpoint_that_always_names_the_cache_key_does_not_loop() {
    let always = |_: &SeenRequest| Reply::Error {
        status: 400,
        body: REFUSAL.into(),
        retry_after: None,
    };
    let server = start(always, FakeOptions::default()).await;
    let client = client_for(&server, Api::OpenAi, false);
    let never = CancellationToken::new();
    let error = client
        .chat(&long_request("a"), &never)
        .await
        .expect_err("refused");
    assert!(
        matches!(error, ModelError::BadRequest { status: 400, .. }),
        "{error}"
    );
    assert_eq!(server.request_count(), 2, "one retry without the key");
    let again = client.chat(&long_request("b"), &never).await;
    assert!(again.is_err());
    assert_eq!(server.request_count(), 3, "no key, no retry");
}

/// A server that lies about its cache: more cached than prompt tokens, counts at the edge of u64.
fn lying(api: Api, stream: bool) -> Reply {
    let max = u64::MAX;
    let body = match (api, stream) {
        (Api::OpenAi, false) => format!(
            r#"{{"choices":[{{"message":{{"content":"ok"}},"finish_reason":"stop"}}],
               "usage":{{"prompt_tokens":10,"completion_tokens":{max},
                         "prompt_tokens_details":{{"cached_tokens":{max}}}}}}}"#
        ),
        (Api::OpenAi, true) => format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"ok\"}},\"finish_reason\":\"stop\"}}]}}\n\n\
             data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":10,\"completion_tokens\":{max},\
             \"prompt_tokens_details\":{{\"cached_tokens\":999}}}}}}\n\ndata: [DONE]\n\n"
        ),
        (Api::Anthropic, false) => format!(
            r#"{{"type":"message","content":[{{"type":"text","text":"ok"}}],"stop_reason":"end_turn",
               "usage":{{"input_tokens":{max},"output_tokens":{max},
                         "cache_read_input_tokens":{max},"cache_creation_input_tokens":{max}}}}}"#
        ),
        (Api::Anthropic, true) => format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"usage\":\
             {{\"input_tokens\":{max},\"cache_read_input_tokens\":{max},\"cache_creation_input_tokens\":{max}}}}}}}\n\n\
             event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\
             \"content_block\":{{\"type\":\"text\",\"text\":\"ok\"}}}}\n\n\
             event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\
             \"usage\":{{\"output_tokens\":{max}}}}}\n\n\
             event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n"
        ),
    };
    Reply::Raw {
        status: 200,
        content_type: if stream {
            "text/event-stream"
        } else {
            "application/json"
        }
        .into(),
        body,
    }
}

#[tokio::test]
async fn absurd_cached_counts_saturate_and_never_go_negative() {
    for_each_variant(|api, stream| async move {
        let server = start(move |_: &SeenRequest| lying(api, stream), FakeOptions::default()).await;
        let reply = client_for(&server, api, stream)
            .chat(&long_request("x"), &CancellationToken::new())
            .await
            .unwrap_or_else(|e| panic!("{api:?} {stream}: {e}"));
        let usage = reply.usage;
        if api == Api::OpenAi {
            // Cached is clamped to the prompt: nothing is left as plain input, nothing goes below 0.
            assert_eq!(usage.prompt_tokens(), 10, "{api:?} {stream}: {usage:?}");
            assert_eq!((usage.input_tokens, usage.cache_read_tokens), (0, 10));
        }
        assert_eq!(usage.total(), u64::MAX, "{api:?} {stream}: saturates: {usage:?}");
        let mut sum = usage;
        sum.add(usage);
        assert_eq!(sum.total(), u64::MAX);
    })
    .await;
}
