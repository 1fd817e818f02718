//! Preflight: the cheap check made before a mission spends anything.

mod common;

use common::{base_url, client, config, for_each_api, start};
use orchestrator_fake_model::{Api, FakeOptions, Reply, SeenRequest};
use orchestrator_model::ModelError;

fn keyed() -> FakeOptions {
    FakeOptions {
        api_key: Some("sk-preflight-key".into()),
        ..FakeOptions::default()
    }
}

#[tokio::test]
async fn passes_with_the_right_key() {
    for_each_api(|api| async move {
        let server = start(|_: &SeenRequest| Reply::Text(String::new()), keyed()).await;
        let mut config = config(base_url(&server, api), true);
        config.api_key = Some("sk-preflight-key".into());
        let outcome = client(api, config).preflight().await;
        assert!(outcome.is_ok(), "{api:?}: {outcome:?}");
        assert_eq!(server.request_count(), 0, "preflight makes no chat request");
    })
    .await;
}

#[tokio::test]
async fn anthropic_tolerates_a_v1_suffix() {
    let server = start(
        |_: &SeenRequest| Reply::Text(String::new()),
        FakeOptions::default(),
    )
    .await;
    let config = config(format!("{}/v1/", server.anthropic_base_url()), true);
    assert!(client(Api::Anthropic, config).preflight().await.is_ok());
}

#[tokio::test]
async fn a_wrong_key_is_auth() {
    for_each_api(|api| async move {
        let server = start(|_: &SeenRequest| Reply::Text(String::new()), keyed()).await;
        let mut config = config(base_url(&server, api), true);
        config.api_key = Some("sk-not-the-key".into());
        let outcome = client(api, config).preflight().await;
        assert!(
            matches!(outcome, Err(ModelError::Auth { status: 401, .. })),
            "{api:?}: {outcome:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_missing_key_is_auth() {
    let server = start(|_: &SeenRequest| Reply::Text(String::new()), keyed()).await;
    let outcome = client(Api::OpenAi, config(server.openai_base_url(), true))
        .preflight()
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
            .preflight()
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
