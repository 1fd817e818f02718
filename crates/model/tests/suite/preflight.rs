//! Preflight: the check made before a mission spends anything — the endpoint answers, takes the key
//! and serves the model — against servers that obey, lie, or are not model APIs at all.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::common::{base_url, client, config, for_each_api, start};
use orchestrator_fake_model::{Api, FakeOptions, Reply, SeenRequest};
use orchestrator_model::ModelError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn keyed() -> FakeOptions {
    FakeOptions {
        api_key: Some("sk-preflight-key".into()),
        ..FakeOptions::default()
    }
}

fn strict(models: &[&str]) -> FakeOptions {
    FakeOptions {
        models: Some(models.iter().map(|m| m.to_string()).collect()),
        ..FakeOptions::default()
    }
}

fn text(_: &SeenRequest) -> Reply {
    Reply::Text("OK".into())
}

#[tokio::test]
async fn passes_with_the_right_key_and_a_listed_model() {
    for_each_api(|api| async move {
        let server = start(text, keyed()).await;
        let mut config = config(base_url(&server, api), true);
        config.api_key = Some("sk-preflight-key".into());
        let outcome = client(api, config).preflight("fake-model").await;
        assert!(outcome.is_ok(), "{api:?}: {outcome:?}");
        assert_eq!(server.request_count(), 0, "a listed model costs no chat request");
    })
    .await;
}

#[tokio::test]
async fn a_model_found_by_id_costs_no_chat_request() {
    // The fake without a list serves every name and finds it under /v1/models/{id}, as OpenAI does for
    // aliases its list spells otherwise.
    for_each_api(|api| async move {
        let server = start(text, FakeOptions::default()).await;
        let outcome = client(api, config(base_url(&server, api), true))
            .preflight("qwen2.5-coder:1.5b")
            .await;
        assert!(outcome.is_ok(), "{api:?}: {outcome:?}");
        assert_eq!(server.request_count(), 0);
    })
    .await;
}

#[tokio::test]
async fn a_model_the_server_does_not_serve_is_refused_naming_what_it_serves() {
    for_each_api(|api| async move {
        let server = start(text, strict(&["qwen2.5-coder:7b", "llama3:latest"])).await;
        let outcome = client(api, config(base_url(&server, api), true))
            .preflight("gpt-4.1")
            .await;
        let Err(error @ ModelError::ModelNotFound { .. }) = outcome else {
            panic!("{api:?}: {outcome:?}");
        };
        let message = error.to_string();
        assert!(message.contains("`gpt-4.1`"), "{message}");
        assert!(
            message.contains("it serves: qwen2.5-coder:7b, llama3:latest"),
            "{message}"
        );
        assert!(message.contains("HTTP 404"), "{message}");
        assert_eq!(server.request_count(), 1, "one probe, never retried");
    })
    .await;
}

#[tokio::test]
async fn ollama_latest_tags_need_no_probe() {
    let server = start(text, strict(&["llama3:latest"])).await;
    let outcome = client(Api::OpenAi, config(server.openai_base_url(), true))
        .preflight("llama3")
        .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(server.request_count(), 0);
}

#[tokio::test]
async fn an_openai_base_url_without_v1_is_not_a_model_api() {
    // Ollama's mistake: http://localhost:11434 instead of .../v1 — every path answers 404.
    let server = start(text, FakeOptions::default()).await;
    let base = format!("http://{}", server.addr());
    let outcome = client(Api::OpenAi, config(base, true)).preflight("llama3").await;
    assert!(
        matches!(outcome, Err(ModelError::NotAModelApi { .. })),
        "{outcome:?}"
    );
    assert_eq!(
        server.request_count(),
        0,
        "the chat request never reached the model"
    );
}

#[tokio::test]
async fn anthropic_tolerates_a_v1_suffix() {
    let server = start(text, FakeOptions::default()).await;
    let config = config(format!("{}/v1/", server.anthropic_base_url()), true);
    let outcome = client(Api::Anthropic, config).preflight("claude-test").await;
    assert!(outcome.is_ok(), "{outcome:?}");
}

#[tokio::test]
async fn a_wrong_key_is_auth() {
    for_each_api(|api| async move {
        let server = start(text, keyed()).await;
        let mut config = config(base_url(&server, api), true);
        config.api_key = Some("sk-not-the-key".into());
        let outcome = client(api, config).preflight("fake-model").await;
        assert!(
            matches!(outcome, Err(ModelError::Auth { status: 401, .. })),
            "{api:?}: {outcome:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_missing_key_is_auth() {
    let server = start(text, keyed()).await;
    let outcome = client(Api::OpenAi, config(server.openai_base_url(), true))
        .preflight("fake-model")
        .await;
    assert!(matches!(outcome, Err(ModelError::Auth { .. })), "{outcome:?}");
}

#[tokio::test]
async fn nobody_listening_is_unreachable() {
    for_each_api(|api| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("has an address");
        drop(listener);
        let outcome = client(api, config(format!("http://{addr}"), true))
            .preflight("fake-model")
            .await;
        assert!(
            matches!(outcome, Err(ModelError::Unreachable { .. })),
            "{api:?}: {outcome:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_bad_base_url_is_refused_up_front() {
    for url in ["not a url", "ftp://example.invalid/v1"] {
        let outcome = orchestrator_model::OpenAiClient::new(config(url.into(), true));
        assert!(matches!(outcome, Err(ModelError::Unreachable { .. })), "{url}");
    }
}

/// A server that answers every request with the same response, counting them.
async fn same_answer(
    status: &'static str,
    content_type: &'static str,
    body: String,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("has an address");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            tokio::spawn(async move {
                let mut request = [0u8; 16 * 1024];
                let _ = socket.read(&mut request).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (format!("http://{addr}/v1"), hits)
}

#[tokio::test]
async fn a_server_answering_501_is_refused_at_once() {
    let page = format!(
        "<!DOCTYPE html><html><head><title>501 Not Implemented</title></head><body>{}</body></html>",
        "<p>This server does not implement the method.</p>\n".repeat(200)
    );
    let (base, hits) = same_answer("501 Not Implemented", "text/html", page).await;
    let outcome = client(Api::OpenAi, config(base, true)).preflight("gpt-4.1").await;
    let Err(error @ ModelError::NotAModelApi { .. }) = outcome else {
        panic!("{outcome:?}");
    };
    let message = error.to_string();
    assert!(message.contains("HTTP 501"), "{message}");
    assert!(message.contains("501 Not Implemented"), "{message}");
    assert!(
        message.len() < 400,
        "the page is summarised, not quoted whole: {message}"
    );
    // The list, the model by id, one chat: no retries of a status that will not heal.
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_web_page_answering_200_is_not_a_model_api() {
    let (base, _) = same_answer(
        "200 OK",
        "text/html",
        "<html><body>Welcome to nginx!</body></html>".into(),
    )
    .await;
    for_each_api(|api| {
        let base = base.clone();
        async move {
            let outcome = client(api, config(base, false)).preflight("gpt-4.1").await;
            assert!(
                matches!(outcome, Err(ModelError::NotAModelApi { .. })),
                "{api:?}: {outcome:?}"
            );
        }
    })
    .await;
}
