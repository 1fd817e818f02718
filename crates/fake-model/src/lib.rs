//! A scripted fake model server, OpenAI- and Anthropic-compatible, for tests and offline demos.
//!
//! [`FakeServer::start`] binds `127.0.0.1:0` and answers `POST /v1/chat/completions` (OpenAI),
//! `POST /v1/messages` (Anthropic) and `GET /v1/models`, streaming or not, exactly as the real APIs
//! format their replies. What it answers is decided by a [`Brain`] the test supplies, which sees every
//! request normalised into a [`SeenRequest`] whichever API it came through. [`Faults`] wraps a brain
//! to inject the failures of a loaded endpoint (429, 500, dropped streams, hangs) and of weak models.

pub mod cache;
pub mod faults;
mod parse;
mod render;
pub mod script;
mod server;

use std::time::Duration;

pub use faults::{FaultKind, FaultLog, FaultPlan, Faults};
pub use server::FakeServer;

/// Which wire API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    OpenAi,
    Anthropic,
}

/// A tool call found in an assistant message of a request.
#[derive(Debug, Clone)]
pub struct SeenToolCall {
    pub id: String,
    pub name: String,
    /// The raw JSON text (for Anthropic, the `input` object serialised back to JSON).
    pub arguments: String,
}

/// One message of a request, normalised from either API.
#[derive(Debug, Clone)]
pub enum SeenMessage {
    User {
        text: String,
    },
    Assistant {
        text: String,
        tool_calls: Vec<SeenToolCall>,
    },
    Tool {
        call_id: String,
        content: String,
        is_error: bool,
    },
}

/// A chat request as the fake server received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// Arrival order, from 0.
    pub seq: u64,
    pub api: Api,
    pub model: String,
    /// OpenAI: the system message(s); Anthropic: the `system` field (string or blocks).
    pub system: String,
    pub messages: Vec<SeenMessage>,
    /// Names of the tools offered.
    pub tools: Vec<String>,
    pub stream: bool,
    pub max_tokens: Option<u64>,
    /// The tool choice the request forced: OpenAI's `tool_choice` string (`required`, …) or
    /// Anthropic's `tool_choice.type` (`any`, …); `None` when the request left it to the model.
    pub tool_choice: Option<String>,
    /// OpenAI's `response_format.type` (`json_schema`, `json_object`, …); `None` without one. Under
    /// `json_schema` the server plays a grammar-constrained model speaking the orchestrator's action
    /// envelope: the tools are the schema's `{"tool": {"const": NAME}}` branches, the history's
    /// envelopes and `Result of NAME:` messages read back as calls and results, and the brain's reply
    /// goes out as one envelope (its first call, or its text as the answer).
    pub response_format: Option<String>,
    /// The sampling temperature asked for, if any.
    pub temperature: Option<f64>,
    /// The prompt in pieces, as the server's prompt cache reads it (see [`cache`]).
    pub prompt: Vec<cache::PromptPiece>,
    /// OpenAI's `prompt_cache_key`, if the request carried one.
    pub prompt_cache_key: Option<String>,
}

impl SeenRequest {
    /// The text of the first user message, or `""` if there is none.
    pub fn first_user_text(&self) -> &str {
        self.messages
            .iter()
            .find_map(|m| match m {
                SeenMessage::User { text } => Some(text.as_str()),
                _ => None,
            })
            .unwrap_or("")
    }

    pub fn offers(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t == tool)
    }

    pub fn last_message(&self) -> Option<&SeenMessage> {
        self.messages.last()
    }

    /// Every tool result paired with the call it answers, in conversation order. A result whose
    /// call id matches no earlier assistant call is left out: there is nothing to pair it with.
    pub fn tool_results(&self) -> Vec<(&SeenToolCall, &str, bool)> {
        let mut calls: Vec<&SeenToolCall> = Vec::new();
        let mut results = Vec::new();
        for message in &self.messages {
            match message {
                SeenMessage::Assistant { tool_calls, .. } => calls.extend(tool_calls.iter()),
                SeenMessage::Tool {
                    call_id,
                    content,
                    is_error,
                } => {
                    // The latest call with that id wins, should a model ever reuse an id.
                    if let Some(call) = calls.iter().rev().find(|c| &c.id == call_id) {
                        results.push((*call, content.as_str(), *is_error));
                    }
                }
                SeenMessage::User { .. } => {}
            }
        }
        results
    }

    pub fn assistant_turns(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| matches!(m, SeenMessage::Assistant { .. }))
            .count()
    }
}

/// What the fake server answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Text(String),
    ToolCalls {
        text: String,
        /// (tool name, raw JSON arguments). The arguments are sent verbatim even if they are not
        /// valid JSON, so clients can be tested on what a confused model produces.
        calls: Vec<(String, String)>,
    },
    /// HTTP error with a JSON error body in the API's style, optional Retry-After header (seconds).
    /// `body` is the error message; if it is already a JSON object it is sent as it is.
    Error {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// Accept the request and never answer (until shutdown), to test timeouts.
    Hang,
    /// Start answering `text` (status 200, the first half of the events when streamed, half the JSON
    /// body otherwise), then drop the connection, as a server or proxy that dies mid-reply does.
    DropStream {
        text: String,
    },
    /// Arbitrary raw response body (to test malformed replies).
    Raw {
        status: u16,
        content_type: String,
        body: String,
    },
    /// A reply that never ends: `piece` as text, over and over, as fast as the client reads, until it
    /// hangs up (or the server shuts down). Streamed, one text delta per piece; not streamed, a JSON
    /// body whose text never closes (with an empty `piece`, a body that stops after its start). What
    /// a broken endpoint or a model stuck in a loop sends, to test that a client bounds a reply's size.
    Flood {
        piece: String,
    },
    /// `text` sent one piece every `every`: streamed, one event at a time (each text delta is a piece);
    /// not streamed, the JSON body cut into as many pieces. Every pause is shorter than an idle timeout
    /// can catch while the whole reply takes as long as the pieces add up to, to test a client's
    /// deadline for a whole request.
    Drip {
        text: String,
        every: Duration,
    },
    /// The body of `reply` (a [`Reply::Text`] or [`Reply::ToolCalls`]) cut into body chunks of
    /// `bytes` bytes, wherever that falls (inside an event, inside a UTF-8 character), as a real
    /// network delivers a big event in many pieces; other replies are sent as they are.
    Chunked {
        reply: Box<Reply>,
        bytes: usize,
    },
}

/// Decides what the fake server answers. Called once per request, synchronously.
pub trait Brain: Send + Sync + 'static {
    fn respond(&self, request: &SeenRequest) -> Reply;
}

impl<F> Brain for F
where
    F: Fn(&SeenRequest) -> Reply + Send + Sync + 'static,
{
    fn respond(&self, request: &SeenRequest) -> Reply {
        self(request)
    }
}

/// Behaviour of the server itself, apart from what the brain answers.
#[derive(Debug, Clone, Default)]
pub struct FakeOptions {
    /// Waited before answering each request (while it counts as in flight).
    pub latency: Duration,
    /// If set, requests carrying another key (`Authorization: Bearer` for OpenAI, `x-api-key` for
    /// Anthropic) get a 401 in the API's style.
    pub api_key: Option<String>,
    /// The models served, as a strict server (OpenAI, vLLM, Ollama) serves them: listed by
    /// `/v1/models`, found by `/v1/models/{id}`, and a chat for any other model gets a 404
    /// `model_not_found`. `None` serves every name, as llama.cpp does: the list shows `fake-model` and
    /// `fake-model-large`, and `/v1/models/{id}` finds whatever is asked.
    pub models: Option<Vec<String>>,
    /// What `/v1/models` says owns each model (`orchestrator` when unset): `llamacpp`, `vllm` or
    /// `library` make the server look like llama.cpp, vLLM or Ollama to a client that detects them.
    pub owned_by: Option<String>,
    /// Turns the server's prompt cache off (see [`cache`]): every request reports plain input only.
    pub no_prompt_cache: bool,
}
