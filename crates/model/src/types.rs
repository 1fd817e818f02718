use std::time::Duration;

use async_trait::async_trait;
pub use orchestrator_protocol::{Constraint, TokenUsage};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// A function tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: serde_json::Value,
}

/// A tool call as the model made it. `arguments` is the raw JSON text the model produced: it may be
/// malformed, and the engine (not the client) decides what to tell the model about that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// One message of a conversation, provider-neutral. The system prompt travels in [`ChatRequest::system`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    User {
        content: String,
    },
    Assistant {
        #[serde(default)]
        content: String,
        #[serde(default)]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call; consecutive results answer the calls of the preceding assistant turn.
    Tool {
        call_id: String,
        content: String,
        #[serde(default)]
        is_error: bool,
    },
}

impl Message {
    pub fn user(content: impl Into<String>) -> Self {
        Message::User {
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub system: String,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Whether the reply must be a tool call (constrained output where the endpoint offers it).
    #[serde(default)]
    pub tool_choice: ToolChoice,
    /// Names the requests that share a prefix (one per mission and role), so a provider routes them
    /// to the same prompt cache: OpenAI's `prompt_cache_key`. `None`: no key is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_key: Option<String>,
    /// Bytes at the start of the first message that every session of the role shares (a worker's
    /// mission objective and context, before its unit): where a prompt cache may cut so that the
    /// sessions share it. 0: no such part. Ignored where it does not fall inside that message's text.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub shared_head: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What the model may answer with. `Required`: a tool call, never plain text — for sessions that
/// must end with a submit call, so a small model cannot wander off into prose. Sent as OpenAI's
/// `tool_choice: "required"` and Anthropic's `tool_choice: {"type": "any"}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    #[default]
    Auto,
    Required,
    /// A call for this reply only, in a session that ends with a plain answer later (a worker's
    /// first turn). Constrained like `Required`, but whatever the request says in words stays as
    /// for `Auto`: a prompt that changed with the constraint would change the conversation's
    /// prefix between turns, and a server's prompt cache would evaluate it all again (25-40 s a
    /// turn for a 1.5B model on two cores).
    RequiredNow,
}

impl ToolChoice {
    /// Whether this reply must be a tool call.
    pub fn must_call(self) -> bool {
        !matches!(self, ToolChoice::Auto)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model finished its turn.
    EndTurn,
    /// The model wants tool results.
    ToolUse,
    /// The reply was cut by `max_tokens`.
    MaxTokens,
    /// The client cut the reply off: its text had fallen into a loop (see [`crate::Loop`]).
    Looped(crate::Loop),
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub content: String,
    pub tool_calls: Vec<ToolCall>,
    pub usage: TokenUsage,
    pub stop: StopReason,
    /// How the request that got this reply was constrained (`None`: the model was free).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<Constraint>,
}

/// How many bytes one reply may bring over the wire for each byte of
/// [`ClientConfig::max_reply_bytes`]: the JSON and event framing around streamed text is many times
/// the text (a delta of one token is some 200 bytes of JSON), and a non-streamed body escapes it.
pub const WIRE_BYTES_PER_REPLY_BYTE: usize = 8;

/// Connection settings shared by every client. `Debug` never prints the key.
#[derive(Clone)]
pub struct ClientConfig {
    /// For OpenAI-compatible servers this includes the version path (`https://api.openai.com/v1`);
    /// for Anthropic it does not (`https://api.anthropic.com`), as each ecosystem's env vars expect.
    pub base_url: String,
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// Time allowed until the response headers arrive.
    pub first_byte_timeout: Duration,
    /// Longest silence allowed between two chunks of a streamed reply.
    pub idle_timeout: Duration,
    /// The most one request may take, from sending it to the last byte of its reply (each retry is
    /// a request of its own). It bounds what `idle_timeout` cannot: a reply that keeps trickling in,
    /// or never ends. Running out fails the call with [`ModelError::ReplyTooSlow`].
    pub request_timeout: Duration,
    /// The largest reply accepted, in bytes of its text, reasoning and tool-call arguments together;
    /// the bytes received for it may be [`WIRE_BYTES_PER_REPLY_BYTE`] times this. This is what bounds
    /// the memory one call can take. Passing it fails the call with [`ModelError::ReplyTooLarge`].
    pub max_reply_bytes: usize,
    /// Retries for connection errors, 429 and 5xx (each waits with backoff and honours `Retry-After`).
    pub max_retries: u32,
    /// Longest single wait between retries.
    pub max_backoff: Duration,
    pub stream: bool,
    /// How replies are constrained; see [`OutputMode`].
    pub output: OutputMode,
    /// Whether a streamed reply whose text falls into a loop (the same piece, repeated; see
    /// [`crate::Loop`]) is cut off there, with [`StopReason::Looped`], instead of read to its end.
    pub cut_loops: bool,
    /// Whether requests carry prompt-cache hints: Anthropic `cache_control` breakpoints, OpenAI
    /// `prompt_cache_key` (dropped for good if the endpoint refuses the field).
    pub prompt_cache: bool,
}

/// How a client constrains replies. Whatever a server refuses (a 400 naming `tool_choice` or
/// `response_format`) is dropped for the rest of the client's life, and the request is asked again
/// with the next weaker constraint, so a wrong setting costs one request, never the mission.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputMode {
    /// Requests that must end in a call ([`ToolChoice::Required`]) are constrained: with the
    /// JSON-schema action envelope on a server whose model list says it runs llama.cpp, vLLM or
    /// Ollama (whose grammars force the shape where `tool_choice` often does not), with
    /// `tool_choice` anywhere else. Other requests are free.
    #[default]
    Auto,
    /// `tool_choice` for requests that must call; others free.
    ToolChoice,
    /// Every request that offers tools is answered in the action envelope (`response_format:
    /// json_schema`): one JSON object naming a tool and its arguments, or the final answer where an
    /// answer is allowed. For small local models, which write calls as prose when left free.
    JsonSchema,
    /// Nothing is forced.
    Off,
}

impl ClientConfig {
    pub fn new(base_url: impl Into<String>, api_key: Option<String>) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            api_key,
            connect_timeout: Duration::from_secs(10),
            first_byte_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
            // Far above what a model writes in one reply (8192 output tokens take a few minutes even
            // from a slow local model), yet an endless or dripping reply ends in bounded time.
            request_timeout: Duration::from_secs(600),
            // Some 2 million tokens: no real reply comes near, so only a flood meets it.
            max_reply_bytes: 8 * 1024 * 1024,
            max_retries: 4,
            max_backoff: Duration::from_secs(60),
            stream: true,
            output: OutputMode::Auto,
            cut_loops: true,
            prompt_cache: true,
        }
    }

    /// The same settings with client-side retries turned off, for a client wrapped in a
    /// [`crate::GovernedClient`]: the governor owns every retry (and its waits are shared by all
    /// sessions), so the client must report each failure at once instead of retrying on its own.
    pub fn without_retries(mut self) -> Self {
        self.max_retries = 0;
        self
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_reply_bytes", &self.max_reply_bytes)
            .field("max_retries", &self.max_retries)
            .field("max_backoff", &self.max_backoff)
            .field("stream", &self.stream)
            .field("prompt_cache", &self.prompt_cache)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot reach the model endpoint at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the model endpoint rejected the API key (HTTP {status}): {body}")]
    Auth { status: u16, body: String },
    /// `retry_after` is the wait the server asked for (`Retry-After`, `retry-after-ms`, or the reset
    /// time of an exhausted rate limit), when it said.
    #[error("the model endpoint is rate limiting (HTTP 429){}: {body}", asked_wait(*.retry_after))]
    RateLimited {
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("the model endpoint failed (HTTP {status}){}: {body}", asked_wait(*.retry_after))]
    Server {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("the model endpoint refused the request (HTTP {status}): {body}")]
    BadRequest { status: u16, body: String },
    #[error("the model endpoint timed out ({0})")]
    Timeout(String),
    #[error("the model endpoint sent a reply this client cannot read: {0}")]
    Protocol(String),
    #[error("the model call was cancelled")]
    Cancelled,
    /// A reply passed [`ClientConfig::max_reply_bytes`] of text, reasoning and tool-call arguments
    /// (or, `on_the_wire`, [`WIRE_BYTES_PER_REPLY_BYTE`] times that in bytes received) and was cut
    /// off. Not transient: a reply that floods once would most likely flood again, at the price of
    /// its tokens each time.
    #[error("{}", reply_too_large(*max_reply_bytes, *on_the_wire))]
    ReplyTooLarge {
        max_reply_bytes: usize,
        on_the_wire: bool,
    },
    /// A request was not done within [`ClientConfig::request_timeout`] and was cut off. Not
    /// transient: the same request would most likely take as long again.
    #[error(
        "the model's reply was not complete after {}, the most one request may take \
         (`endpoint.request_timeout_secs`), and was cut off; for a slow model or very long replies, \
         raise `request_timeout_secs` in the [endpoint] section of the config (orchestrator.toml)",
        human_duration(*request_timeout)
    )]
    ReplyTooSlow { request_timeout: Duration },
    /// Preflight: the endpoint answers, but does not serve this model.
    #[error(
        "the model endpoint does not serve the model `{model}` ({detail}){}",
        served(available)
    )]
    ModelNotFound {
        model: String,
        /// What its model list names, when it has one.
        available: Vec<String>,
        detail: String,
    },
    /// Preflight: what answers at the base URL is not a model API of this kind (a wrong path, a web
    /// server, a different API).
    #[error("{url} does not answer as a model API ({detail})")]
    NotAModelApi { url: String, detail: String },
    /// A [`crate::Governor`] kept retrying transient failures (rate limits, server errors, timeouts)
    /// for as long as it may wait on one call, and stopped. The mission can resume later.
    #[error("{reason}; giving up on this call after {attempts} attempt(s). Last error: {last}")]
    GaveUp {
        /// What went on and for how long, e.g. "rate limited for 15m".
        reason: String,
        waited: Duration,
        attempts: u32,
        last: Box<ModelError>,
    },
}

impl ModelError {
    /// Whether another attempt of the same request may succeed: connection failures, timeouts, 429,
    /// 408 and 5xx. Auth, bad requests, unreadable replies and cancellation are not transient.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ModelError::Unreachable { .. }
                | ModelError::RateLimited { .. }
                | ModelError::Server { .. }
                | ModelError::Timeout(_)
        )
    }

    /// The wait the server asked for, if this error carries one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ModelError::RateLimited { retry_after, .. } | ModelError::Server { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// "; it serves: a, b, c" (at most ten named), or nothing without a list.
fn served(available: &[String]) -> String {
    const SHOWN: usize = 10;
    match available.len() {
        0 => String::new(),
        n if n <= SHOWN => format!("; it serves: {}", available.join(", ")),
        n => format!(
            "; it serves {n} models, among them: {}",
            available[..SHOWN].join(", ")
        ),
    }
}

/// What [`ModelError::ReplyTooLarge`] says: the limit passed, the setting and what to do.
fn reply_too_large(max_reply_bytes: usize, on_the_wire: bool) -> String {
    let passed = if on_the_wire {
        format!(
            "{} received, {WIRE_BYTES_PER_REPLY_BYTE} times the most one reply may hold ({}, \
             `endpoint.max_reply_bytes`, with room for the JSON and event framing around it)",
            human_bytes(max_reply_bytes.saturating_mul(WIRE_BYTES_PER_REPLY_BYTE)),
            human_bytes(max_reply_bytes)
        )
    } else {
        format!(
            "{} of text, reasoning and tool-call arguments, the most one reply may hold \
             (`endpoint.max_reply_bytes`)",
            human_bytes(max_reply_bytes)
        )
    };
    format!(
        "the model's reply passed {passed}, and was cut off; that much is most likely a broken \
         endpoint or a model repeating itself. If replies this long are expected, raise \
         `max_reply_bytes` in the [endpoint] section of the config (orchestrator.toml)"
    )
}

/// A size as people write it: `8 MiB`, `1.5 KiB`, `900 bytes`; the exact count follows a rounded one.
fn human_bytes(bytes: usize) -> String {
    const UNITS: [(&str, usize); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    let Some((unit, size)) = UNITS.into_iter().find(|(_, size)| bytes >= *size) else {
        return format!("{bytes} bytes");
    };
    let (whole, rest) = (bytes / size, bytes % size);
    if rest == 0 {
        return format!("{whole} {unit}");
    }
    let tenths = (rest as u128 * 10 / size as u128) as usize;
    format!("{whole}.{tenths} {unit} ({bytes} bytes)")
}

/// " and asked to wait 2s", or nothing when the server did not say.
fn asked_wait(retry_after: Option<Duration>) -> String {
    retry_after.map_or_else(String::new, |wait| {
        format!(", asked to wait {}", human_duration(wait))
    })
}

/// A duration as people write it: `850ms`, `2.5s`, `1m30s`, `15m`, `2h5m`.
pub fn human_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        return format!("{millis}ms");
    }
    let seconds = duration.as_secs();
    if seconds < 60 {
        let tenths = (millis % 1000) / 100;
        return if tenths == 0 {
            format!("{seconds}s")
        } else {
            format!("{seconds}.{tenths}s")
        };
    }
    let (hours, minutes, seconds) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    let mut text = String::new();
    if hours > 0 {
        text.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        text.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 && hours == 0 {
        text.push_str(&format!("{seconds}s"));
    }
    text
}

/// A chat model behind some API.
#[async_trait]
pub trait ModelClient: Send + Sync {
    /// `openai` or `anthropic`, for messages and events.
    fn provider(&self) -> &'static str;

    /// One model turn. Retries transient failures (bounded by [`ClientConfig::max_retries`]) and returns
    /// the assembled reply whether or not it was streamed.
    async fn chat(
        &self,
        request: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, ModelError>;

    /// Proves, before a mission spends anything, that the endpoint is reachable, accepts the key and
    /// serves `model`: its model list, else `GET models/{model}`, else one tiny chat request.
    async fn preflight(&self, model: &str) -> Result<(), ModelError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(900), "900 bytes");
        assert_eq!(human_bytes(8 << 20), "8 MiB");
        assert_eq!(human_bytes(64 << 20), "64 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB (1536 bytes)");
        assert_eq!(human_bytes(1 << 30), "1 GiB");
    }

    #[test]
    fn limit_errors_name_the_limit_and_the_setting() {
        let size = ModelError::ReplyTooLarge {
            max_reply_bytes: 8 << 20,
            on_the_wire: false,
        }
        .to_string();
        assert!(
            size.starts_with("the model's reply passed 8 MiB of text"),
            "{size}"
        );
        assert!(size.contains("`endpoint.max_reply_bytes`") && size.contains("raise `max_reply_bytes`"));
        let wire = ModelError::ReplyTooLarge {
            max_reply_bytes: 8 << 20,
            on_the_wire: true,
        }
        .to_string();
        assert!(
            wire.starts_with("the model's reply passed 64 MiB received, 8 times"),
            "{wire}"
        );
        let slow = ModelError::ReplyTooSlow {
            request_timeout: Duration::from_secs(600),
        }
        .to_string();
        assert!(slow.contains("not complete after 10m") && slow.contains("`endpoint.request_timeout_secs`"));
        for error in [size, wire, slow] {
            assert!(!error.contains("  "), "{error}");
        }
    }
}
