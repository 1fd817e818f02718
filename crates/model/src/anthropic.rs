//! Anthropic's messages API.

use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::loops::{Loop, LoopWatch};
use crate::sse::Event;
use crate::transport::{parse_json, secret_header, Failure, ReplyAssembly, Transport, PER_CALL_BYTES};
use crate::{
    ChatRequest, ChatResponse, ClientConfig, Constraint, Message, ModelClient, ModelError, StopReason,
    TokenUsage, ToolCall,
};

/// The API version this client speaks (the one every current model accepts).
const API_VERSION: &str = "2023-06-01";

/// A client for `POST {base_url}/v1/messages`.
pub struct AnthropicClient {
    transport: Transport,
}

impl AnthropicClient {
    /// `config.base_url` excludes the version path, e.g. `https://api.anthropic.com` (a trailing
    /// `/v1` is tolerated, since people paste it).
    pub fn new(mut config: ClientConfig) -> Result<Self, ModelError> {
        let trimmed = config.base_url.trim_end_matches('/');
        config.base_url = trimmed.strip_suffix("/v1").unwrap_or(trimmed).to_string();
        let mut headers = HeaderMap::new();
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        if let Some(key) = config.api_key.as_deref().filter(|k| !k.is_empty()) {
            headers.insert(HeaderName::from_static("x-api-key"), secret_header(key)?);
        }
        Ok(AnthropicClient {
            transport: Transport::new(config, headers)?,
        })
    }

    async fn send(
        &self,
        request: &ChatRequest,
        constraint: Option<Constraint>,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, ModelError> {
        let url = self.transport.url("v1/messages");
        let config = self.transport.config();
        let mut body = wire_request(request, config.stream);
        if config.prompt_cache {
            mark_cache_breakpoints(&mut body);
        }
        if constraint == Some(Constraint::ToolChoice) {
            body["tool_choice"] = json!({"type": "any"});
        }
        self.transport
            .with_retries("anthropic chat", cancel, || {
                self.transport
                    .exchange::<StreamAssembly>(&url, &body, parse_message)
            })
            .await
    }
}

#[async_trait]
impl ModelClient for AnthropicClient {
    fn provider(&self) -> &'static str {
        "anthropic"
    }

    async fn chat(
        &self,
        request: &ChatRequest,
        cancel: &CancellationToken,
    ) -> Result<ChatResponse, ModelError> {
        // Anthropic's API has no JSON-schema response format: `tool_choice` is its constraint.
        self.transport
            .constrained(request, false, |constraint| {
                self.send(request, constraint, cancel)
            })
            .await
    }

    async fn preflight(&self, model: &str) -> Result<(), ModelError> {
        let never = CancellationToken::new();
        let probe = crate::preflight::probe_request(model);
        // Anthropic pages its list (20 by default); 1000 is its maximum.
        crate::preflight::check(&self.transport, "v1/models?limit=1000", model, || {
            self.chat(&probe, &never)
        })
        .await
    }
}

// ---------------------------------------------------------------------------------------------
// Request

fn wire_request(request: &ChatRequest, stream: bool) -> Value {
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": wire_messages(&request.messages, request.shared_head),
        "stream": stream,
    });
    if !request.system.is_empty() {
        body["system"] = json!(request.system);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}))
            .collect();
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    body
}

/// The most `cache_control` breakpoints one request may carry (the API refuses a fifth).
pub(crate) const MAX_CACHE_BREAKPOINTS: usize = 4;

/// Marks where the prompt cache may cut: after the stable prefix (tools and system prompt, the
/// same for every session of a role), after the first block of the first message (the task, or its
/// shared head — the mission's objective and context, the same for every worker — when
/// [`head_blocks`] split it off), and after the last message (the history, which the next turn
/// resends and extends). The API caches the prefix up to each mark
/// and looks for earlier entries a few blocks back from it, so each turn reads what the turn
/// before wrote. Never more than [`MAX_CACHE_BREAKPOINTS`].
fn mark_cache_breakpoints(body: &mut Value) {
    // Marks already there count towards the API's limit too.
    let mut marked = count_marks(body);
    let mut mark = |block: Option<&mut Value>| {
        if let Some(Value::Object(block)) = block {
            if marked < MAX_CACHE_BREAKPOINTS && !block.contains_key("cache_control") {
                block.insert("cache_control".into(), json!({"type": "ephemeral"}));
                marked += 1;
            }
        }
    };
    // The system prompt as one text block, so it can carry a mark (it covers the tools before it).
    if let Some(Value::String(system)) = body.get("system").cloned() {
        body["system"] = json!([{"type": "text", "text": system}]);
        mark(body.pointer_mut("/system/0"));
    } else if let Some(Value::Array(tools)) = body.get_mut("tools") {
        mark(tools.last_mut());
    }
    let Some(Value::Array(messages)) = body.get_mut("messages") else {
        return;
    };
    let count = messages.len();
    if count > 1
        || messages
            .first()
            .is_some_and(|m| m["content"].as_array().is_some_and(|b| b.len() > 1))
    {
        mark(messages.first_mut().and_then(first_block));
    }
    mark(messages.last_mut().and_then(last_block));
}

/// How many `cache_control` breakpoints `value` holds.
fn count_marks(value: &Value) -> usize {
    match value {
        Value::Object(map) => {
            usize::from(map.contains_key("cache_control")) + map.values().map(count_marks).sum::<usize>()
        }
        Value::Array(items) => items.iter().map(count_marks).sum(),
        _ => 0,
    }
}

/// The first content block of a wire message.
fn first_block(message: &mut Value) -> Option<&mut Value> {
    message
        .get_mut("content")
        .and_then(Value::as_array_mut)
        .and_then(|blocks| blocks.first_mut())
}

/// The last content block of a wire message.
fn last_block(message: &mut Value) -> Option<&mut Value> {
    message
        .get_mut("content")
        .and_then(Value::as_array_mut)
        .and_then(|blocks| blocks.last_mut())
}

/// Said in place of an empty message, which the API rejects.
const EMPTY_PLACEHOLDER: &str = "(empty)";

/// Converts the conversation into content-block messages. The API requires user and assistant turns
/// to alternate, so same-role neighbours (tool results followed by the next user text, above all)
/// are merged into one message.
/// `shared_head`: bytes of the first message every session of the role shares; that part becomes a
/// text block of its own, where a cache breakpoint can go (the text the model reads is the same).
fn wire_messages(messages: &[Message], shared_head: usize) -> Vec<Value> {
    let mut turns: Vec<(&str, Vec<Value>)> = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let (role, blocks) = match message {
            Message::User { content } if index == 0 => ("user", head_blocks(content, shared_head)),
            Message::User { content } => ("user", text_blocks(content)),
            Message::Assistant { content, tool_calls } => {
                let mut blocks = text_blocks(content);
                blocks.extend(tool_calls.iter().map(tool_use_block));
                ("assistant", blocks)
            }
            Message::Tool {
                call_id,
                content,
                is_error,
            } => ("user", vec![tool_result_block(call_id, content, *is_error)]),
        };
        match turns.last_mut() {
            Some((last_role, last_blocks)) if *last_role == role => last_blocks.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    turns
        .into_iter()
        .map(|(role, blocks)| turn(role, blocks))
        .collect()
}

fn turn(role: &str, mut blocks: Vec<Value>) -> Value {
    // Tool results must open a user message; the sort is stable, so each group keeps its order.
    blocks.sort_by_key(|b| b["type"] != "tool_result");
    if blocks.is_empty() {
        blocks.push(json!({"type": "text", "text": EMPTY_PLACEHOLDER}));
    }
    json!({"role": role, "content": blocks})
}

/// The first message's text as its shared head and the rest, when the head is a proper part of it
/// (on a character boundary, neither empty nor the whole); else as one block.
fn head_blocks(text: &str, head: usize) -> Vec<Value> {
    match text.split_at_checked(head) {
        Some((shared, rest)) if !shared.is_empty() && !rest.is_empty() => {
            vec![
                json!({"type": "text", "text": shared}),
                json!({"type": "text", "text": rest}),
            ]
        }
        _ => text_blocks(text),
    }
}

/// Empty text blocks are rejected by the API, so empty text becomes no block at all.
fn text_blocks(text: &str) -> Vec<Value> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![json!({"type": "text", "text": text})]
    }
}

fn tool_use_block(call: &ToolCall) -> Value {
    json!({"type": "tool_use", "id": call.id, "name": call.name, "input": history_input(&call.arguments)})
}

/// `input` must be a JSON object. Arguments that are not one become `{}`: the engine has already told
/// the model, in the tool result, that its arguments were unreadable.
fn history_input(raw: &str) -> Value {
    match serde_json::from_str::<Value>(raw) {
        Ok(object @ Value::Object(_)) => object,
        _ => json!({}),
    }
}

fn tool_result_block(call_id: &str, content: &str, is_error: bool) -> Value {
    let mut block = json!({"type": "tool_result", "tool_use_id": call_id});
    // `content` is optional, and an empty string is better left out than sent.
    if !content.is_empty() {
        block["content"] = json!(content);
    }
    if is_error {
        block["is_error"] = json!(true);
    }
    block
}

// ---------------------------------------------------------------------------------------------
// Replies

#[derive(Debug, Default, Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// The kinds of input apart: Anthropic reports cache reads and writes beside `input_tokens`,
    /// never inside it. `None` when the object carries no count at all.
    fn token_usage(&self) -> Option<TokenUsage> {
        let parts = [
            self.input_tokens,
            self.output_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts.iter().any(Option::is_some).then(|| TokenUsage {
            input_tokens: self.input_tokens.unwrap_or(0),
            output_tokens: self.output_tokens.unwrap_or(0),
            cache_read_tokens: self.cache_read_input_tokens.unwrap_or(0),
            cache_write_tokens: self.cache_creation_input_tokens.unwrap_or(0),
        })
    }
}

#[derive(Debug, Deserialize)]
struct MessageReply {
    #[serde(default)]
    content: Vec<Value>,
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Usage,
}

fn parse_message(transport: &Transport, body: &[u8]) -> Result<ChatResponse, Failure> {
    let value: Value = parse_json(transport, body)?;
    if value.get("type").and_then(Value::as_str) == Some("error") {
        return Err(in_band_error(transport, &value));
    }
    let reply: MessageReply = serde_json::from_value(value)
        .map_err(|e| Failure::protocol(format!("the reply is not a message: {e}")))?;
    let mut content = String::new();
    let mut tool_calls = Vec::new();
    for block in &reply.content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => content.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => tool_calls.push(tool_call(block)?),
            _ => {} // thinking and other blocks carry nothing the engine uses
        }
    }
    Ok(ChatResponse {
        content,
        stop: stop_reason(reply.stop_reason.as_deref(), !tool_calls.is_empty()),
        tool_calls,
        usage: reply.usage.token_usage().unwrap_or_default(),
        constraint: None,
    })
}

fn tool_call(block: &Value) -> Result<ToolCall, Failure> {
    let field = |key: &str| {
        block
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| Failure::protocol(format!("a tool_use block has no {key}")))
    };
    Ok(ToolCall {
        id: field("id")?,
        name: field("name")?,
        arguments: input_arguments(block.get("input").unwrap_or(&Value::Null)),
    })
}

/// The raw arguments text of a tool_use `input`. A string input is taken as the raw text itself:
/// the real API never sends one, but it is how a non-streamed reply can carry arguments that are not
/// valid JSON (the fake model server does this), and passing it through beats failing.
fn input_arguments(input: &Value) -> String {
    match input {
        Value::String(raw) => raw.clone(),
        Value::Null => "{}".to_string(),
        other => other.to_string(),
    }
}

fn stop_reason(reason: Option<&str>, has_tool_calls: bool) -> StopReason {
    match reason {
        Some("tool_use") => StopReason::ToolUse,
        Some("max_tokens") => StopReason::MaxTokens,
        Some("end_turn" | "stop_sequence") | None if has_tool_calls => StopReason::ToolUse,
        Some("end_turn" | "stop_sequence") | None => StopReason::EndTurn,
        Some(other) => StopReason::Other(other.to_string()),
    }
}

/// `{"type": "error", "error": {"type": "overloaded_error", "message": …}}`, in a body or a stream.
fn in_band_error(transport: &Transport, value: &Value) -> Failure {
    let error = value.get("error").unwrap_or(value);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| error.to_string());
    let status = match error.get("type").and_then(Value::as_str).unwrap_or_default() {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "overloaded_error" => 529,
        _ => 500,
    };
    Failure::from_status(status, transport.quote(&message), None)
}

// ---------------------------------------------------------------------------------------------
// Streams

/// A content block being streamed.
#[derive(Debug)]
enum Block {
    Text(String),
    Tool {
        id: String,
        name: String,
        /// The `input_json_delta` pieces, concatenated verbatim.
        json: String,
        /// The `input` of `content_block_start` as arguments text, used if no pieces follow.
        start_arguments: String,
    },
    Other,
}

#[derive(Debug, Default)]
struct StreamAssembly {
    blocks: BTreeMap<u64, Block>,
    stop_reason: Option<String>,
    usage: TokenUsage,
    stopped: bool,
    /// See [`ReplyAssembly::size`].
    size: usize,
    watch: LoopWatch,
}

impl ReplyAssembly for StreamAssembly {
    /// Applies one event; true once `message_stop` arrived.
    fn apply(&mut self, transport: &Transport, event: &Event) -> Result<bool, Failure> {
        if event.data.trim().is_empty() {
            return Ok(false);
        }
        let data: Value = parse_json(transport, event.data.as_bytes())?;
        // The `type` inside the data is authoritative; the SSE event name only mirrors it.
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str());
        match kind {
            "message_start" => self.usage(data.pointer("/message/usage")),
            "content_block_start" => self.start_block(&data)?,
            "content_block_delta" => self.delta(&data)?,
            "message_delta" => {
                if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.stop_reason = Some(reason.to_string());
                }
                self.usage(data.get("usage"));
            }
            "message_stop" => {
                self.stopped = true;
                return Ok(true);
            }
            "error" => return Err(in_band_error(transport, &data)),
            _ => {} // ping, content_block_stop, and event types added after this was written
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
        self.blocks
            .into_values()
            .filter_map(|block| match block {
                Block::Text(text) => Some(text),
                _ => None,
            })
            .collect()
    }

    fn finish(self) -> Result<ChatResponse, Failure> {
        // Tolerate a missing message_stop after message_delta gave the stop reason.
        if !self.stopped && self.stop_reason.is_none() {
            return Err(Failure::protocol(
                "the stream ended before the reply was complete",
            ));
        }
        let mut content = String::new();
        let mut tool_calls = Vec::new();
        for block in self.blocks.into_values() {
            match block {
                Block::Text(text) => content.push_str(&text),
                Block::Tool {
                    id,
                    name,
                    json,
                    start_arguments,
                } => tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments: if json.is_empty() { start_arguments } else { json },
                }),
                Block::Other => {}
            }
        }
        Ok(ChatResponse {
            content,
            stop: stop_reason(self.stop_reason.as_deref(), !tool_calls.is_empty()),
            tool_calls,
            usage: self.usage,
            constraint: None,
        })
    }
}

impl StreamAssembly {
    fn usage(&mut self, usage: Option<&Value>) {
        let Some(usage) = usage.and_then(|u| Usage::deserialize(u).ok()) else {
            return;
        };
        // message_delta's counts are cumulative, so the latest value of each is its total; a count
        // an event leaves out keeps what message_start said.
        let latest = |new: Option<u64>, old: u64| new.unwrap_or(old);
        self.usage = TokenUsage {
            input_tokens: latest(usage.input_tokens, self.usage.input_tokens),
            output_tokens: latest(usage.output_tokens, self.usage.output_tokens),
            cache_read_tokens: latest(usage.cache_read_input_tokens, self.usage.cache_read_tokens),
            cache_write_tokens: latest(usage.cache_creation_input_tokens, self.usage.cache_write_tokens),
        };
    }

    fn index(data: &Value) -> Result<u64, Failure> {
        data.get("index")
            .and_then(Value::as_u64)
            .ok_or_else(|| Failure::protocol("a content block event has no index"))
    }

    fn start_block(&mut self, data: &Value) -> Result<(), Failure> {
        let index = Self::index(data)?;
        let block = data.get("content_block").unwrap_or(&Value::Null);
        let text = |key: &str| {
            block
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let block = match block.get("type").and_then(Value::as_str) {
            Some("text") => Block::Text(text("text")),
            Some("tool_use") => Block::Tool {
                id: text("id"),
                name: text("name"),
                json: String::new(),
                start_arguments: input_arguments(block.get("input").unwrap_or(&Value::Null)),
            },
            _ => Block::Other,
        };
        self.size += PER_CALL_BYTES
            + match &block {
                Block::Text(text) => text.len(),
                Block::Tool {
                    id,
                    name,
                    start_arguments,
                    ..
                } => id.len() + name.len() + start_arguments.len(),
                Block::Other => 0,
            };
        self.blocks.insert(index, block);
        Ok(())
    }

    fn delta(&mut self, data: &Value) -> Result<(), Failure> {
        let index = Self::index(data)?;
        let delta = data.get("delta").unwrap_or(&Value::Null);
        let piece = |key: &str| delta.get(key).and_then(Value::as_str).unwrap_or_default();
        match (
            self.blocks.get_mut(&index),
            delta.get("type").and_then(Value::as_str),
        ) {
            (Some(Block::Text(text)), Some("text_delta")) => {
                let piece = piece("text");
                self.size += piece.len();
                self.watch.feed(piece);
                text.push_str(piece);
            }
            (Some(Block::Tool { json, .. }), Some("input_json_delta")) => {
                let piece = piece("partial_json");
                self.size += piece.len();
                self.watch.feed(piece);
                json.push_str(piece);
            }
            // Thinking is not kept, but counted (and watched), so that endless thinking is a reply
            // too large, or a loop, too.
            (Some(_), Some("thinking_delta")) => {
                let piece = piece("thinking");
                self.size += piece.len();
                self.watch.feed(piece);
            }
            (None, _) => {
                return Err(Failure::protocol(format!(
                    "a delta for block {index}, which never started"
                )))
            }
            _ => {} // signature deltas, and deltas of a type their block does not take
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(id: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "read".into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn merges_tool_results_and_the_next_user_message() {
        let messages = vec![
            Message::user("start"),
            Message::Assistant {
                content: "looking".into(),
                tool_calls: vec![tool("t1", "{\"p\":1}"), tool("t2", "not json"), tool("t3", "[1]")],
            },
            Message::Tool {
                call_id: "t1".into(),
                content: "one".into(),
                is_error: false,
            },
            Message::Tool {
                call_id: "t2".into(),
                content: "bad args".into(),
                is_error: true,
            },
            Message::Tool {
                call_id: "t3".into(),
                content: String::new(),
                is_error: false,
            },
            Message::user("continue"),
        ];
        let wire = wire_messages(&messages, 0);
        assert_eq!(wire.len(), 3);
        assert_eq!(wire[1]["content"][1]["input"], json!({"p": 1}));
        assert_eq!(wire[1]["content"][2]["input"], json!({}));
        assert_eq!(wire[1]["content"][3]["input"], json!({}));
        let user = &wire[2];
        assert_eq!(user["role"], json!("user"));
        let kinds: Vec<&str> = user["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["type"].as_str())
            .collect();
        assert_eq!(kinds, vec!["tool_result", "tool_result", "tool_result", "text"]);
        assert_eq!(user["content"][1]["is_error"], json!(true));
        assert!(user["content"][2].get("content").is_none());
    }

    #[test]
    fn tool_results_come_first_and_empty_turns_get_a_placeholder() {
        let messages = vec![
            Message::user(""),
            Message::Assistant {
                content: "x".into(),
                tool_calls: vec![tool("t1", "{}")],
            },
            Message::user("note"),
            Message::Tool {
                call_id: "t1".into(),
                content: "r".into(),
                is_error: false,
            },
        ];
        let wire = wire_messages(&messages, 0);
        assert_eq!(wire[0]["content"][0]["text"], json!(EMPTY_PLACEHOLDER));
        assert_eq!(wire[2]["content"][0]["type"], json!("tool_result"));
        assert_eq!(wire[2]["content"][1]["text"], json!("note"));
    }

    #[test]
    fn builds_the_request_body() {
        let request = ChatRequest {
            cache_key: None,
            shared_head: 0,
            model: "claude".into(),
            system: "sys".into(),
            messages: vec![Message::user("hi")],
            tools: vec![crate::ToolSpec {
                name: "read".into(),
                description: "d".into(),
                parameters: json!({"type": "object"}),
            }],
            max_tokens: 10,
            temperature: None,
            tool_choice: Default::default(),
        };
        let body = wire_request(&request, false);
        assert_eq!(body["system"], json!("sys"));
        assert_eq!(body["tools"][0]["input_schema"], json!({"type": "object"}));
        assert!(body.get("temperature").is_none());
    }

    fn conversation(turns: usize) -> ChatRequest {
        let mut messages = vec![Message::user("task")];
        for n in 0..turns {
            messages.push(Message::Assistant {
                content: String::new(),
                tool_calls: vec![tool(&format!("t{n}"), "{}")],
            });
            messages.push(Message::Tool {
                call_id: format!("t{n}"),
                content: "r".into(),
                is_error: false,
            });
        }
        ChatRequest {
            cache_key: None,
            shared_head: 0,
            model: "claude".into(),
            system: "sys".into(),
            messages,
            tools: vec![crate::ToolSpec {
                name: "read".into(),
                description: "d".into(),
                parameters: json!({"type": "object"}),
            }],
            max_tokens: 10,
            temperature: None,
            tool_choice: Default::default(),
        }
    }

    #[test]
    fn breakpoints_mark_the_prefix_the_task_and_the_history() {
        let mut body = wire_request(&conversation(3), false);
        mark_cache_breakpoints(&mut body);
        assert_eq!(count_marks(&body), 3);
        assert_eq!(body["system"][0]["cache_control"], json!({"type": "ephemeral"}));
        assert!(body["messages"][0]["content"][0].get("cache_control").is_some());
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default();
        assert!(last["content"][0].get("cache_control").is_some(), "{last}");
        // One message: the task is the last message, marked once.
        let mut first = wire_request(&conversation(0), false);
        mark_cache_breakpoints(&mut first);
        assert_eq!(count_marks(&first), 2);
        // No system prompt: the last tool carries the prefix's mark.
        let mut bare = conversation(1);
        bare.system.clear();
        let mut body = wire_request(&bare, false);
        mark_cache_breakpoints(&mut body);
        assert!(body["tools"][0].get("cache_control").is_some());
    }

    #[test]
    fn the_shared_head_of_the_task_is_a_marked_block_of_its_own() {
        let mut request = conversation(2);
        request.messages[0] = Message::user("# Mission\nshared\n\n# Unit u1");
        request.shared_head = "# Mission\nshared\n\n".len();
        let mut body = wire_request(&request, false);
        mark_cache_breakpoints(&mut body);
        let task = &body["messages"][0]["content"];
        assert_eq!(task[0]["text"], json!("# Mission\nshared\n\n"));
        assert_eq!(task[1]["text"], json!("# Unit u1"));
        assert!(task[0].get("cache_control").is_some() && task[1].get("cache_control").is_none());
        assert_eq!(count_marks(&body), 3);
        // A first turn: the head and the whole task (the last message) are both marked.
        let mut first = request.clone();
        first.messages.truncate(1);
        let mut body = wire_request(&first, false);
        mark_cache_breakpoints(&mut body);
        assert_eq!(count_marks(&body), 3, "{body}");
        // A head that does not fit the text (too long, inside a character) leaves it whole.
        for head in [request.messages.len() * 1000, 1_000_000, 0] {
            let mut odd = request.clone();
            odd.shared_head = head;
            let body = wire_request(&odd, false);
            assert_eq!(
                body["messages"][0]["content"].as_array().map(Vec::len),
                Some(1),
                "{head}"
            );
        }
        let mut accented = request.clone();
        accented.messages[0] = Message::user("é and more");
        accented.shared_head = 1;
        let body = wire_request(&accented, false);
        assert_eq!(body["messages"][0]["content"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn breakpoints_never_pass_the_limit() {
        for turns in [0, 1, 2, 50] {
            let mut body = wire_request(&conversation(turns), false);
            // Marking twice (a retried request) adds none.
            mark_cache_breakpoints(&mut body);
            mark_cache_breakpoints(&mut body);
            assert!(count_marks(&body) <= MAX_CACHE_BREAKPOINTS, "{turns} turns");
        }
        // A body already full of marks gets none more.
        let mut body = wire_request(&conversation(3), false);
        for message in body["messages"].as_array_mut().into_iter().flatten() {
            if let Some(blocks) = message["content"].as_array_mut() {
                for block in blocks {
                    block["cache_control"] = json!({"type": "ephemeral"});
                }
            }
        }
        let before = count_marks(&body);
        mark_cache_breakpoints(&mut body);
        assert_eq!(count_marks(&body), before);
    }

    #[test]
    fn maps_stop_reasons() {
        assert_eq!(stop_reason(Some("end_turn"), false), StopReason::EndTurn);
        assert_eq!(stop_reason(Some("tool_use"), true), StopReason::ToolUse);
        assert_eq!(stop_reason(Some("max_tokens"), true), StopReason::MaxTokens);
        assert_eq!(
            stop_reason(Some("refusal"), false),
            StopReason::Other("refusal".into())
        );
    }

    #[test]
    fn thinking_text_and_calls_count_toward_the_size() {
        let Ok(transport) = Transport::new(ClientConfig::new("http://127.0.0.1:9", None), HeaderMap::new())
        else {
            panic!("transport")
        };
        let mut assembly = StreamAssembly::default();
        for data in [
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"hi"}}"#,
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"t","name":"x","input":{}}}"#,
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}}"#,
        ] {
            let event = Event {
                event: "message".into(),
                data: data.into(),
            };
            assert!(matches!(assembly.apply(&transport, &event), Ok(false)), "{data}");
        }
        let blocks = 3 * PER_CALL_BYTES;
        assert_eq!(assembly.size(), blocks + 3 + 2 + (1 + 1 + 2) + 7);
    }

    #[test]
    fn reads_cache_reads_and_writes_apart_from_input() {
        let usage: Usage = serde_json::from_value(json!({
            "input_tokens": 3, "output_tokens": 7,
            "cache_read_input_tokens": 10, "cache_creation_input_tokens": 20
        }))
        .unwrap_or_default();
        let usage = usage.token_usage().unwrap_or_default();
        assert_eq!(
            usage,
            TokenUsage {
                input_tokens: 3,
                output_tokens: 7,
                cache_read_tokens: 10,
                cache_write_tokens: 20,
            }
        );
        assert_eq!(usage.prompt_tokens(), 33);
        assert_eq!(Usage::default().token_usage(), None);
    }

    #[test]
    fn absurd_counts_saturate() {
        let usage: Usage = serde_json::from_value(json!({
            "input_tokens": u64::MAX, "output_tokens": u64::MAX,
            "cache_read_input_tokens": u64::MAX, "cache_creation_input_tokens": 5
        }))
        .unwrap_or_default();
        let mut usage = usage.token_usage().unwrap_or_default();
        assert_eq!(usage.total(), u64::MAX);
        usage.add(usage);
        assert_eq!(usage.cache_read_tokens, u64::MAX);
    }
}
