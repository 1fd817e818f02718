//! Shared helpers: every client test runs against the fake model server on 127.0.0.1, for both APIs
//! and (where it matters) both streaming modes.

use std::future::Future;
use std::time::Duration;

use orchestrator_fake_model::{Api, Brain, FakeOptions, FakeServer};
use orchestrator_model::{
    AnthropicClient, ChatRequest, ClientConfig, Message, ModelClient, OpenAiClient, ToolSpec,
};

/// Every (API, streaming) combination.
pub const VARIANTS: [(Api, bool); 4] = [
    (Api::OpenAi, false),
    (Api::OpenAi, true),
    (Api::Anthropic, false),
    (Api::Anthropic, true),
];

pub const APIS: [Api; 2] = [Api::OpenAi, Api::Anthropic];

/// Runs `test` for every variant at once, so slow scenarios (Retry-After) cost their time only once.
pub async fn for_each_variant<F, Fut>(test: F)
where
    F: Fn(Api, bool) -> Fut,
    Fut: Future<Output = ()>,
{
    futures::future::join_all(VARIANTS.iter().map(|&(api, stream)| test(api, stream))).await;
}

pub async fn for_each_api<F, Fut>(test: F)
where
    F: Fn(Api) -> Fut,
    Fut: Future<Output = ()>,
{
    futures::future::join_all(APIS.iter().map(|&api| test(api))).await;
}

pub async fn start(brain: impl Brain, options: FakeOptions) -> FakeServer {
    FakeServer::start(brain, options)
        .await
        .expect("the fake model server starts")
}

pub fn base_url(server: &FakeServer, api: Api) -> String {
    match api {
        Api::OpenAi => server.openai_base_url(),
        Api::Anthropic => server.anthropic_base_url(),
    }
}

/// Small timeouts and backoffs so failure scenarios finish in well under a second.
pub fn config(base_url: String, stream: bool) -> ClientConfig {
    ClientConfig {
        connect_timeout: Duration::from_secs(2),
        first_byte_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        max_retries: 2,
        max_backoff: Duration::from_millis(20),
        stream,
        ..ClientConfig::new(base_url, None)
    }
}

pub fn client(api: Api, config: ClientConfig) -> Box<dyn ModelClient> {
    match api {
        Api::OpenAi => Box::new(OpenAiClient::new(config).expect("valid config")),
        Api::Anthropic => Box::new(AnthropicClient::new(config).expect("valid config")),
    }
}

/// A client for `server` with the test defaults.
pub fn client_for(server: &FakeServer, api: Api, stream: bool) -> Box<dyn ModelClient> {
    client(api, config(base_url(server, api), stream))
}

pub fn tool(name: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: format!("the {name} tool"),
        parameters: serde_json::json!({"type": "object", "properties": {}}),
    }
}

/// "You are a test." (15 chars) + "hi" (2 chars): the fake estimates 17 / 4 = 4 input tokens.
pub fn simple_request() -> ChatRequest {
    ChatRequest {
        cache_key: None,
        shared_head: 0,
        model: "fake-model".into(),
        system: "You are a test.".into(),
        messages: vec![Message::user("hi")],
        tools: vec![tool("read_file"), tool("list_dir")],
        max_tokens: 256,
        temperature: None,
        tool_choice: Default::default(),
    }
}

pub fn label(api: Api, stream: bool) -> String {
    format!("{api:?} stream={stream}")
}
