//! OpenAI chat completions, as spoken by OpenAI, vLLM, Ollama, llama.cpp, OpenRouter and friends.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::loops::{Loop, LoopWatch};
use crate::sse::Event;
use crate::transport::{parse_json, secret_header, Failure, ReplyAssembly, Transport, PER_CALL_BYTES};
use crate::{
    envelope, ChatRequest, ChatResponse, ClientConfig, Constraint, Message, ModelClient, ModelError,
    StopReason, TokenUsage, ToolCall, ToolChoice,
};

/// A client for `POST {base_url}/chat/completions`.
pub struct OpenAiClient {
    transport: Transport,
    /// The endpoint refused `prompt_cache_key` once: it is never sent again by this client.
    cache_key_refused: AtomicBool,
}

impl OpenAiClient {
    async fn send(
        &self,
        request: &ChatRequest,
        constraint: Option<Constraint>,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, ModelError> {
        let url = self.transport.url("chat/completions");
        let stream = self.transport.config().stream;
        let envelope = constraint == Some(Constraint::JsonSchema);
        let mut body = if envelope {
            envelope_request(request, stream)
        } else {
            let mut body = wire_request(request, stream);
            if constraint == Some(Constraint::ToolChoice) {
                body["tool_choice"] = json!("required");
            }
            body
        };
        if let Some(key) = self.cache_key(request) {
            body["prompt_cache_key"] = json!(key);
        }
        let reply = self
            .transport
            .with_retries("openai chat", cancel, || {
                self.transport
                    .exchange::<StreamAssembly>(&url, &body, parse_completion)
            })
            .await?;
        Ok(if envelope {
            envelope::read_reply(reply, new_call_id)
        } else {
            reply
        })
    }

    /// `config.base_url` includes the version path, e.g. `https://api.openai.com/v1`.
    pub fn new(config: ClientConfig) -> Result<Self, ModelError> {
        let mut headers = HeaderMap::new();
        // Local servers often run without a key; sending `Bearer ` with nothing would confuse some.
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            headers.insert(AUTHORIZATION, secret_header(&format!("Bearer {key}"))?);
        }
        Ok(OpenAiClient {
            transport: Transport::new(config, headers)?,
            cache_key_refused: AtomicBool::new(false),
        })
    }

    /// The `prompt_cache_key` this request goes out with, if any.
    fn cache_key<'r>(&self, request: &'r ChatRequest) -> Option<&'r str> {
        let config = self.transport.config();
        let allowed = config.prompt_cache && !self.cache_key_refused.load(Ordering::Relaxed);
        request.cache_key.as_deref().filter(|_| allowed)
    }

    /// Whether `error` is the endpoint refusing the `prompt_cache_key` a request carried (`sent`;
    /// servers that predate the field answer 400 naming it). Remembered, so the caller asks again
    /// once without it and no later request carries it; a refusal of a request sent without it is
    /// not this field's.
    fn refused_cache_key(&self, sent: bool, error: &ModelError) -> bool {
        let ModelError::BadRequest { body, .. } = error else {
            return false;
        };
        if !sent || !body.to_ascii_lowercase().contains("prompt_cache_key") {
            return false;
        }
        if !self.cache_key_refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the model endpoint refused prompt_cache_key; requests go on without it (set \
                 `prompt_cache = false` in [endpoint] to stop trying)"
            );
        }
        true
    }
}

#[async_trait]
impl ModelClient for OpenAiClient {
    fn provider(&self) -> &'static str {
        "openai"
    }

    async fn chat(
        &self,
        request: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, ModelError> {
        let ask = || {
            self.transport
                .constrained(request, true, |constraint| self.send(request, constraint, cancel))
        };
        // Decided before sending: a request in flight while another's refusal is remembered still
        // carried the key, and gets its one retry without it.
        let sent = self.cache_key(request).is_some();
        match ask().await {
            Err(error) if self.refused_cache_key(sent, &error) => ask().await,
            outcome => outcome,
        }
    }

    async fn preflight(&self, model: &str) -> Result<(), ModelError> {
        let never = CancellationToken::new();
        let probe = crate::preflight::probe_request(model);
        crate::preflight::check(&self.transport, "models", model, || self.chat(&probe, &never)).await
    }
}

// ---------------------------------------------------------------------------------------------
// Request

fn wire_request(request: &ChatRequest, stream: bool) -> Value {
    let mut messages = Vec::with_capacity(request.messages.len() + 1);
    if !request.system.is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    messages.extend(request.messages.iter().map(wire_message));
    let mut body = request_body(request, messages, stream);
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
            .collect();
    }
    body
}

/// The request in the action envelope's dialect: tools described in the system prompt, history in
/// envelopes, and the reply held to the envelope's schema (see [`envelope`]).
fn envelope_request(request: &ChatRequest, stream: bool) -> Value {
    // The system prompt says an answer is possible unless the session can never give one, so it
    // stays the same from turn to turn; the schema alone holds this reply to a call.
    let always_calls = request.tool_choice == ToolChoice::Required;
    let messages = envelope::wire_messages(&request.system, &request.tools, always_calls, &request.messages);
    let mut body = request_body(request, messages, stream);
    body["response_format"] = envelope::response_format(&request.tools, request.tool_choice.must_call());
    body
}

/// What every request carries besides its tools: model, messages, limits, streaming, sampling.
fn request_body(request: &ChatRequest, messages: Vec<Value>, stream: bool) -> Value {
    // `max_tokens` rather than `max_completion_tokens`: vLLM, Ollama and llama.cpp all accept it.
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens,
        "stream": stream,
    });
    if stream {
        body["stream_options"] = json!({"include_usage": true});
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    body
}

fn wire_message(message: &Message) -> Value {
    match message {
        Message::User { content } => json!({"role": "user", "content": content}),
        Message::Assistant { content, tool_calls } if tool_calls.is_empty() => {
            json!({"role": "assistant", "content": content})
        }
        Message::Assistant { content, tool_calls } => {
            let calls: Vec<Value> = tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": history_arguments(&c.arguments)}})
                })
                .collect();
            // The API's own shape: null content next to tool calls when the model said nothing.
            let content = if content.is_empty() {
                Value::Null
            } else {
                json!(content)
            };
            json!({"role": "assistant", "content": content, "tool_calls": calls})
        }
        Message::Tool {
            call_id,
            content,
            is_error,
        } => {
            // The chat-completions format has no error flag for tool results, so say it in the text.
            let content = if *is_error {
                format!("Error: {content}")
            } else {
                content.clone()
            };
            json!({"role": "tool", "tool_call_id": call_id, "content": content})
        }
    }
}

/// Arguments as they go back into the history. Invalid JSON becomes `{}`: some servers (vLLM's chat
/// templates among them) parse the history's arguments and reject the whole request otherwise, and
/// the engine has already told the model, in the tool result, that its arguments were unreadable.
fn history_arguments(raw: &str) -> String {
    match serde_json::from_str::<Value>(raw) {
        Ok(_) => raw.to_string(),
        Err(_) => "{}".to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Replies

#[derive(Debug, Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

impl From<Usage> for TokenUsage {
    /// OpenAI counts cached tokens inside `prompt_tokens`; taken out here, so plain input and cache
    /// reads never count twice. A server claiming more cached than prompt tokens gets the prompt.
    fn from(usage: Usage) -> Self {
        let cached = usage
            .prompt_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0)
            .min(usage.prompt_tokens);
        TokenUsage {
            input_tokens: usage.prompt_tokens - cached,
            output_tokens: usage.completion_tokens,
            cache_read_tokens: cached,
            cache_write_tokens: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Completion {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: ReplyMessage,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ReplyMessage {
    #[serde(default)]
    content: Value,
    #[serde(default)]
    tool_calls: Option<Vec<ReplyToolCall>>,
}

#[derive(Debug, Deserialize)]
struct ReplyToolCall {
    id: Option<String>,
    function: ReplyFunction,
}

#[derive(Debug, Deserialize)]
struct ReplyFunction {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: Value,
}

fn parse_completion(transport: &Transport, body: &[u8]) -> Result<ChatResponse, Failure> {
    let completion: Completion = parse_json(transport, body)?;
    if let Some(error) = &completion.error {
        return Err(in_band_error(transport, error));
    }
    let usage = completion.usage.map(TokenUsage::from).unwrap_or_default();
    let choice = completion
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| Failure::protocol("the reply has no choices"))?;
    let tool_calls: Vec<ToolCall> = choice
        .message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .map(|call| ToolCall {
            id: call.id.filter(|id| !id.is_empty()).unwrap_or_else(new_call_id),
            name: call.function.name,
            arguments: raw_arguments(call.function.arguments),
        })
        .collect();
    Ok(ChatResponse {
        content: content_text(&choice.message.content),
        stop: stop_reason(choice.finish_reason.as_deref(), !tool_calls.is_empty()),
        tool_calls,
        usage,
        constraint: None,
    })
}

/// Message content: normally a string or null; some servers send an array of text parts.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// Arguments are a JSON string per the spec; a few servers send the object itself.
fn raw_arguments(arguments: Value) -> String {
    match arguments {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Some local servers leave ids out; the engine needs one to pair results with calls.
fn new_call_id() -> String {
    format!("call_{:016x}", rand::random::<u64>())
}

fn stop_reason(finish: Option<&str>, has_tool_calls: bool) -> StopReason {
    match finish {
        Some("tool_calls" | "function_call") => StopReason::ToolUse,
        Some("length") => StopReason::MaxTokens,
        // Ollama and some vLLM versions say "stop" even when the turn ends in tool calls.
        Some("stop") | None if has_tool_calls => StopReason::ToolUse,
        Some("stop") | None => StopReason::EndTurn,
        Some(other) => StopReason::Other(other.to_string()),
    }
}

/// An error object inside a 200 reply (OpenRouter and some proxies report upstream failures so).
fn in_band_error(transport: &Transport, error: &Value) -> Failure {
    let detail = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string());
    let kind = [error.get("type"), error.get("code")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let status = match error.get("code").and_then(Value::as_u64) {
        Some(code @ 400..=599) => code as u16,
        _ if kind.contains("rate_limit") => 429,
        _ if kind.contains("invalid_request") || kind.contains("context_length") => 400,
        _ => 500,
    };
    Failure::from_status(status, transport.quote(&detail), None)
}

// ---------------------------------------------------------------------------------------------
// Streams

#[derive(Debug, Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<Usage>,
    error: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<Delta>,
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Delta {
    content: Option<String>,
    /// Reasoning text (`reasoning_content` from DeepSeek and vLLM, `reasoning` from OpenRouter and
    /// Ollama): not kept, but counted, so that endless reasoning is a reply too large like any other.
    reasoning_content: Option<String>,
    reasoning: Option<String>,
    tool_calls: Option<Vec<DeltaCall>>,
}

#[derive(Debug, Deserialize)]
struct DeltaCall {
    index: Option<u64>,
    id: Option<String>,
    function: Option<DeltaFunction>,
}

#[derive(Debug, Deserialize)]
struct DeltaFunction {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Debug, Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// The reply being put together from stream chunks.
#[derive(Debug, Default)]
struct StreamAssembly {
    content: String,
    /// By the `index` the server gives each call, which is how its argument pieces find it.
    calls: BTreeMap<u64, PartialCall>,
    /// The index of each call by its id, for servers that leave `index` out: looking an id up among
    /// all calls instead would make a reply of many calls cost time in the square of their number.
    ids: HashMap<String, u64>,
    last_index: Option<u64>,
    /// See [`ReplyAssembly::size`].
    size: usize,
    finish_reason: Option<String>,
    usage: TokenUsage,
    done: bool,
    watch: LoopWatch,
}

impl ReplyAssembly for StreamAssembly {
    /// Applies one event; true once the stream says it is over.
    fn apply(&mut self, transport: &Transport, event: &Event) -> Result<bool, Failure> {
        let data = event.data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: Chunk = parse_json(transport, data.as_bytes())?;
        if let Some(error) = &chunk.error {
            return Err(in_band_error(transport, error));
        }
        if let Some(usage) = chunk.usage {
            self.usage = usage.into();
        }
        // Only one choice is ever requested (n = 1).
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(delta) = choice.delta {
                self.apply_delta(delta);
            }
            if choice.finish_reason.is_some() {
                self.finish_reason = choice.finish_reason;
            }
        }
        Ok(false)
    }

    fn size(&self) -> usize {
        self.size
    }

    fn looped(&self) -> Option<&Loop> {
        self.watch.found()
    }

    fn text_so_far(self) -> String {
        self.content
    }

    fn finish(self) -> Result<ChatResponse, Failure> {
        // A finish reason without [DONE] is tolerated (some servers close right after it); neither
        // means the reply was cut off.
        if !self.done && self.finish_reason.is_none() {
            return Err(Failure::protocol(
                "the stream ended before the reply was complete",
            ));
        }
        let tool_calls: Vec<ToolCall> = self
            .calls
            .into_values()
            .map(|c| ToolCall {
                id: if c.id.is_empty() { new_call_id() } else { c.id },
                name: c.name,
                arguments: c.arguments,
            })
            .collect();
        Ok(ChatResponse {
            content: self.content,
            stop: stop_reason(self.finish_reason.as_deref(), !tool_calls.is_empty()),
            tool_calls,
            usage: self.usage,
            constraint: None,
        })
    }
}

impl StreamAssembly {
    fn apply_delta(&mut self, delta: Delta) {
        for reasoning in [&delta.reasoning_content, &delta.reasoning].into_iter().flatten() {
            self.size += reasoning.len();
            self.watch.feed(reasoning);
        }
        if let Some(text) = delta.content {
            self.size += text.len();
            self.watch.feed(&text);
            self.content.push_str(&text);
        }
        for call in delta.tool_calls.unwrap_or_default() {
            let index = self.call_index(&call);
            self.last_index = Some(index);
            let partial = self.calls.entry(index).or_insert_with(|| {
                self.size += PER_CALL_BYTES;
                PartialCall::default()
            });
            if let Some(id) = call.id.filter(|id| !id.is_empty() && partial.id.is_empty()) {
                self.size += id.len();
                self.ids.insert(id.clone(), index);
                partial.id = id;
            }
            if let Some(function) = call.function {
                // Names arrive whole in the first piece; a few servers repeat them later.
                if let Some(name) = function.name.filter(|n| !n.is_empty() && partial.name.is_empty()) {
                    self.size += name.len();
                    partial.name = name;
                }
                if let Some(arguments) = function.arguments {
                    self.size += arguments.len();
                    self.watch.feed(&arguments);
                    partial.arguments.push_str(&arguments);
                }
            }
        }
    }

    /// Which call a delta belongs to. Servers that leave `index` out get the OpenAI convention
    /// reconstructed: a new id starts a new call, anything else continues the last one.
    fn call_index(&self, call: &DeltaCall) -> u64 {
        if let Some(index) = call.index {
            return index;
        }
        let starts_new = call
            .id
            .as_deref()
            .is_some_and(|id| !id.is_empty() && !self.ids.contains_key(id));
        match self.last_index {
            Some(last) if !starts_new => last,
            _ => self.calls.keys().next_back().map_or(0, |k| k + 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ToolSpec;

    fn event(data: &str) -> Event {
        Event {
            event: "message".into(),
            data: data.into(),
        }
    }

    fn transport() -> Option<Transport> {
        Transport::new(ClientConfig::new("http://127.0.0.1:9", None), HeaderMap::new()).ok()
    }

    /// A worker's first turn is held to a call, its later turns are not: the prompt must read the
    /// same either way, or a local server's prompt cache starts over on the next turn.
    #[test]
    fn a_call_required_for_one_turn_changes_the_schema_not_the_prompt() {
        let mut request = ChatRequest {
            cache_key: None,
            shared_head: 0,
            model: "m".into(),
            system: "sys".into(),
            messages: vec![Message::user("hi")],
            tools: vec![ToolSpec {
                name: "read".into(),
                description: "reads".into(),
                parameters: json!({"type": "object"}),
            }],
            max_tokens: 99,
            temperature: None,
            tool_choice: ToolChoice::Auto,
        };
        let free = envelope_request(&request, true);
        request.tool_choice = ToolChoice::RequiredNow;
        let now = envelope_request(&request, true);
        request.tool_choice = ToolChoice::Required;
        let always = envelope_request(&request, true);
        assert_eq!(
            now["messages"], free["messages"],
            "the same prompt as a free turn"
        );
        let branches = |body: &Value| {
            body["response_format"]["json_schema"]["schema"]["anyOf"]
                .as_array()
                .map(Vec::len)
        };
        assert_eq!(branches(&free), Some(2), "a call or the answer");
        assert_eq!(branches(&now), Some(1), "a call only");
        assert_eq!(branches(&always), Some(1));
        let system = |body: &Value| {
            body["messages"][0]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        assert!(system(&now).contains("{\"answer\""), "{}", system(&now));
        assert!(!system(&always).contains("{\"answer\""), "{}", system(&always));
    }

    #[test]
    fn builds_the_request_body() {
        let request = ChatRequest {
            cache_key: None,
            shared_head: 0,
            model: "m".into(),
            system: "sys".into(),
            messages: vec![
                Message::user("hi"),
                Message::Assistant {
                    content: String::new(),
                    tool_calls: vec![
                        ToolCall {
                            id: "c1".into(),
                            name: "read".into(),
                            arguments: "{\"p\":1}".into(),
                        },
                        ToolCall {
                            id: "c2".into(),
                            name: "read".into(),
                            arguments: "{broken".into(),
                        },
                    ],
                },
                Message::Tool {
                    call_id: "c1".into(),
                    content: "text".into(),
                    is_error: false,
                },
            ],
            tools: vec![ToolSpec {
                name: "read".into(),
                description: "reads".into(),
                parameters: json!({"type": "object"}),
            }],
            max_tokens: 99,
            temperature: Some(0.5),
            tool_choice: Default::default(),
        };
        let body = wire_request(&request, true);
        assert_eq!(body["messages"][0], json!({"role": "system", "content": "sys"}));
        assert_eq!(body["messages"][2]["content"], Value::Null);
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["arguments"],
            json!("{\"p\":1}")
        );
        assert_eq!(
            body["messages"][2]["tool_calls"][1]["function"]["arguments"],
            json!("{}")
        );
        assert_eq!(
            body["messages"][3],
            json!({"role": "tool", "tool_call_id": "c1", "content": "text"})
        );
        assert_eq!(body["tools"][0]["function"]["name"], json!("read"));
        assert_eq!(body["max_tokens"], json!(99));
        assert_eq!(body["stream_options"]["include_usage"], json!(true));
        assert!(wire_request(&request, false).get("stream_options").is_none());
    }

    fn usage_of(value: Value) -> TokenUsage {
        serde_json::from_value::<Usage>(value)
            .map(TokenUsage::from)
            .unwrap_or_default()
    }

    #[test]
    fn cached_tokens_are_taken_out_of_the_prompt() {
        let usage = usage_of(json!({
            "prompt_tokens": 2000, "completion_tokens": 50,
            "prompt_tokens_details": {"cached_tokens": 1920}
        }));
        assert_eq!(
            (usage.input_tokens, usage.cache_read_tokens, usage.output_tokens),
            (80, 1920, 50)
        );
        assert_eq!(usage.prompt_tokens(), 2000, "nothing counted twice");
        let plain = usage_of(json!({"prompt_tokens": 10, "completion_tokens": 1}));
        assert_eq!((plain.input_tokens, plain.cache_read_tokens), (10, 0));
        let null = usage_of(json!({"prompt_tokens": 10, "prompt_tokens_details": null}));
        assert_eq!(null.input_tokens, 10);
    }

    #[test]
    fn absurd_cached_counts_saturate() {
        let more = usage_of(json!({
            "prompt_tokens": 100, "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": u64::MAX}
        }));
        assert_eq!((more.input_tokens, more.cache_read_tokens), (0, 100));
        let huge = usage_of(json!({
            "prompt_tokens": u64::MAX, "completion_tokens": u64::MAX,
            "prompt_tokens_details": {"cached_tokens": 1}
        }));
        assert_eq!(huge.total(), u64::MAX);
    }

    #[test]
    fn streamed_usage_reads_cached_tokens() {
        let Some(transport) = transport() else {
            panic!("transport")
        };
        let mut assembly = StreamAssembly::default();
        for data in [
            r#"{"choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":300,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":256}}}"#,
        ] {
            assert!(matches!(assembly.apply(&transport, &event(data)), Ok(false)));
        }
        let reply = assembly.finish().expect("complete");
        assert_eq!(
            (reply.usage.input_tokens, reply.usage.cache_read_tokens),
            (44, 256)
        );
    }

    #[test]
    fn maps_finish_reasons() {
        assert_eq!(stop_reason(Some("stop"), false), StopReason::EndTurn);
        assert_eq!(stop_reason(Some("stop"), true), StopReason::ToolUse);
        assert_eq!(stop_reason(Some("tool_calls"), true), StopReason::ToolUse);
        assert_eq!(stop_reason(Some("length"), false), StopReason::MaxTokens);
        assert_eq!(
            stop_reason(Some("content_filter"), false),
            StopReason::Other("content_filter".into())
        );
    }

    #[test]
    fn reassembles_calls_without_indexes() {
        let Some(transport) = transport() else {
            panic!("transport")
        };
        let mut assembly = StreamAssembly::default();
        for data in [
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"x","arguments":"{\"k\""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":":1}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"id":"b","function":{"name":"y","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}]}"#,
        ] {
            assert!(matches!(assembly.apply(&transport, &event(data)), Ok(false)));
        }
        let reply = assembly.finish().expect("complete");
        let calls: Vec<(&str, &str)> = reply
            .tool_calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(calls, vec![("x", "{\"k\":1}"), ("y", "{}")]);
    }

    #[test]
    fn reasoning_text_and_calls_count_toward_the_size() {
        let Some(transport) = transport() else {
            panic!("transport")
        };
        let mut assembly = StreamAssembly::default();
        for data in [
            r#"{"choices":[{"delta":{"reasoning_content":"think"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning":"more"}}]}"#,
            r#"{"choices":[{"delta":{"content":"hello"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"c","function":{"name":"x","arguments":"{"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"}"}}]}}]}"#,
        ] {
            assert!(matches!(assembly.apply(&transport, &event(data)), Ok(false)));
        }
        assert_eq!(assembly.size(), 5 + 4 + 5 + PER_CALL_BYTES + 1 + 1 + 2);
    }

    #[test]
    fn a_whole_envelope_followed_by_endless_blank_space_is_still_the_call() {
        // A JSON grammar lets a model go on with whitespace after its object is complete.
        let Some(transport) = transport() else {
            panic!("transport")
        };
        let mut assembly = StreamAssembly::default();
        let head = json!({"choices": [{"delta": {"content": "{\"tool\": \"read\", \"arguments\": {\"path\": \"a\"}}"}}]});
        assert!(matches!(
            assembly.apply(&transport, &event(&head.to_string())),
            Ok(false)
        ));
        let blank = json!({"choices": [{"delta": {"content": "\n  "}}]}).to_string();
        while assembly.looped().is_none() {
            assert!(assembly.size() < 4096, "the blank loop was not seen");
            assert!(matches!(assembly.apply(&transport, &event(&blank)), Ok(false)));
        }
        let found = assembly.looped().cloned().expect("a loop");
        let reply = crate::transport::cut_at_loop(assembly.text_so_far(), found, 100, 400);
        assert!(reply.content.len() < 60, "{:?}", reply.content);
        let reply = envelope::read_reply(reply, || "id".into());
        assert_eq!(reply.tool_calls.len(), 1, "{reply:?}");
        assert_eq!(reply.tool_calls[0].arguments, r#"{"path":"a"}"#);
        assert!(matches!(reply.stop, StopReason::Looped(_)));
    }

    #[test]
    fn in_stream_errors_are_classified() {
        let Some(transport) = transport() else {
            panic!("transport")
        };
        let mut assembly = StreamAssembly::default();
        let failure = assembly
            .apply(
                &transport,
                &event(r#"{"error":{"message":"upstream overloaded","code":502}}"#),
            )
            .expect_err("an error");
        assert!(failure.retry);
        assert!(matches!(failure.error, ModelError::Server { status: 502, .. }));
        let truncated = StreamAssembly::default().finish().expect_err("incomplete");
        assert!(matches!(truncated.error, ModelError::Protocol(_)));
    }
}
