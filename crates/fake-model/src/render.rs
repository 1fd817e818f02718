//! Renders answers in each API's wire format: JSON bodies, SSE streams and error bodies, shaped like
//! the real services' so clients written against the fake also work against the real thing.

use serde_json::{json, Value};

use crate::cache::CacheUsage;
use crate::{Api, SeenMessage, SeenRequest};

/// A tool call about to be sent, with the id the server gave it.
#[derive(Debug, Clone)]
pub(crate) struct OutCall {
    pub id: String,
    pub name: String,
    /// Raw JSON text, sent verbatim even when invalid.
    pub arguments: String,
}

/// A successful answer, ready to render.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// `chatcmpl-N` or `msg_N`.
    pub id: String,
    pub model: String,
    pub text: String,
    pub calls: Vec<OutCall>,
    /// The whole prompt's estimate; `cache` says how much of it the prompt cache served.
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache: CacheUsage,
}

/// Approximate token count: a quarter of the characters, at least 1, as cheap tokenisers guess.
pub(crate) fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64 / 4).max(1)
}

/// Characters of everything a model would read in this request.
pub(crate) fn request_chars(request: &SeenRequest) -> usize {
    let messages: usize = request
        .messages
        .iter()
        .map(|m| match m {
            SeenMessage::User { text } => text.chars().count(),
            SeenMessage::Assistant { text, tool_calls } => {
                text.chars().count()
                    + tool_calls
                        .iter()
                        .map(|c| c.name.chars().count() + c.arguments.chars().count())
                        .sum::<usize>()
            }
            SeenMessage::Tool { content, .. } => content.chars().count(),
        })
        .sum();
    request.system.chars().count() + messages
}

impl Answer {
    fn output_chars(text: &str, calls: &[OutCall]) -> usize {
        text.chars().count()
            + calls
                .iter()
                .map(|c| c.name.chars().count() + c.arguments.chars().count())
                .sum::<usize>()
    }

    pub(crate) fn new(id: String, request: &SeenRequest, text: String, calls: Vec<OutCall>) -> Self {
        let output_tokens = estimate_tokens(Self::output_chars(&text, &calls));
        Answer {
            id,
            model: request.model.clone(),
            input_tokens: estimate_tokens(request_chars(request)),
            output_tokens,
            cache: CacheUsage::default(),
            text,
            calls,
        }
    }
}

/// The reply a grammar-constrained model gives under the action envelope's schema: one object, so
/// the first call (a grammar admits no second), or the text as the answer.
pub(crate) fn envelope(text: String, calls: Vec<(String, String)>) -> String {
    match calls.into_iter().next() {
        Some((name, arguments)) => {
            let arguments = serde_json::from_str::<Value>(&arguments).unwrap_or(Value::String(arguments));
            json!({"tool": name, "arguments": arguments}).to_string()
        }
        None => json!({"answer": text}).to_string(),
    }
}

/// Splits `s` into at most `parts` pieces of similar length on character boundaries (at least one
/// piece, possibly empty), so streamed strings arrive in several chunks as they do from real models.
pub(crate) fn split(s: &str, parts: usize) -> Vec<&str> {
    let chars = s.chars().count();
    let size = chars.div_ceil(parts.max(1)).max(1);
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut count = 0;
    for (offset, _) in s.char_indices() {
        if count == size {
            pieces.push(&s[start..offset]);
            start = offset;
            count = 0;
        }
        count += 1;
    }
    pieces.push(&s[start..]);
    pieces
}

/// Text is streamed in pieces of about this many characters.
const TEXT_PIECE_CHARS: usize = 12;
/// Tool-call arguments are streamed in this many pieces (fewer if very short).
const ARGUMENT_PIECES: usize = 4;

fn text_pieces(text: &str) -> Vec<&str> {
    split(text, text.chars().count().div_ceil(TEXT_PIECE_CHARS))
}

// ---------------------------------------------------------------------------------------------
// OpenAI

fn openai_finish_reason(answer: &Answer) -> &'static str {
    if answer.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    }
}

/// OpenAI counts cached tokens inside `prompt_tokens` and says how many in its details.
fn openai_usage(answer: &Answer) -> Value {
    json!({
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
        "prompt_tokens_details": {"cached_tokens": answer.cache.read},
    })
}

/// Anthropic reports plain input, cache reads and cache writes apart.
fn anthropic_usage(answer: &Answer, output_tokens: u64) -> Value {
    let plain = answer
        .input_tokens
        .saturating_sub(answer.cache.read)
        .saturating_sub(answer.cache.written);
    json!({
        "input_tokens": plain,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": answer.cache.read,
        "cache_creation_input_tokens": answer.cache.written,
    })
}

pub(crate) fn openai_json(answer: &Answer) -> String {
    let mut message = json!({"role": "assistant", "content": answer.text});
    if !answer.calls.is_empty() {
        // The real API sends null content alongside tool calls when there is no text.
        if answer.text.is_empty() {
            message["content"] = Value::Null;
        }
        message["tool_calls"] = answer
            .calls
            .iter()
            .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}))
            .collect();
    }
    json!({
        "id": answer.id,
        "object": "chat.completion",
        "created": 0,
        "model": answer.model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": openai_finish_reason(answer)}],
        "usage": openai_usage(answer),
    })
    .to_string()
}

/// One `chat.completion.chunk` event.
fn openai_chunk(answer: &Answer, delta: Value, finish: Value, include_usage: bool) -> String {
    let mut chunk = json!({
        "id": answer.id,
        "object": "chat.completion.chunk",
        "created": 0,
        "model": answer.model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    if include_usage {
        chunk["usage"] = Value::Null;
    }
    format!("data: {chunk}\n\n")
}

/// The whole SSE body of a streamed OpenAI answer, one string per event.
pub(crate) fn openai_sse(answer: &Answer, include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| openai_chunk(answer, delta, finish, include_usage);
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    if !answer.text.is_empty() {
        for piece in text_pieces(&answer.text) {
            events.push(chunk(json!({"content": piece}), Value::Null));
        }
    }
    for (index, call) in answer.calls.iter().enumerate() {
        let head = json!({"tool_calls": [{"index": index, "id": call.id, "type": "function",
                                          "function": {"name": call.name, "arguments": ""}}]});
        events.push(chunk(head, Value::Null));
        for piece in split(&call.arguments, ARGUMENT_PIECES) {
            let delta = json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]});
            events.push(chunk(delta, Value::Null));
        }
    }
    events.push(chunk(json!({}), json!(openai_finish_reason(answer))));
    if include_usage {
        let usage = json!({"id": answer.id, "object": "chat.completion.chunk", "created": 0,
                           "model": answer.model, "choices": [], "usage": openai_usage(answer)});
        events.push(format!("data: {usage}\n\n"));
    }
    events.push("data: [DONE]\n\n".to_string());
    events
}

// ---------------------------------------------------------------------------------------------
// Anthropic

fn anthropic_stop_reason(answer: &Answer) -> &'static str {
    if answer.calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    }
}

/// Non-streamed replies must carry `input` as JSON. Arguments that are not valid JSON are sent as a
/// JSON string holding the raw text: the real API never does this, but it is the only way to hand a
/// client malformed arguments without a stream, and clients treat a string input as raw arguments.
fn anthropic_input(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_string()))
}

pub(crate) fn anthropic_json(answer: &Answer) -> String {
    let mut content = Vec::new();
    if !answer.text.is_empty() || answer.calls.is_empty() {
        content.push(json!({"type": "text", "text": answer.text}));
    }
    for call in &answer.calls {
        content.push(json!({"type": "tool_use", "id": call.id, "name": call.name,
                            "input": anthropic_input(&call.arguments)}));
    }
    json!({
        "id": answer.id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": anthropic_stop_reason(answer),
        "stop_sequence": null,
        "usage": anthropic_usage(answer, answer.output_tokens),
    })
    .to_string()
}

fn anthropic_event(data: Value) -> String {
    let name = data
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("unknown")
        .to_string();
    format!("event: {name}\ndata: {data}\n\n")
}

fn anthropic_message_start(answer: &Answer) -> String {
    anthropic_event(json!({
        "type": "message_start",
        "message": {"id": answer.id, "type": "message", "role": "assistant", "model": answer.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": anthropic_usage(answer, 1)},
    }))
}

/// The whole SSE body of a streamed Anthropic answer, one string per event.
pub(crate) fn anthropic_sse(answer: &Answer) -> Vec<String> {
    let mut events = vec![anthropic_message_start(answer)];
    let mut index = 0;
    if !answer.text.is_empty() {
        events.push(anthropic_event(
            json!({"type": "content_block_start", "index": index,
                                           "content_block": {"type": "text", "text": ""}}),
        ));
        // The real API interleaves pings; clients must skip them.
        events.push(anthropic_event(json!({"type": "ping"})));
        for piece in text_pieces(&answer.text) {
            events.push(anthropic_event(
                json!({"type": "content_block_delta", "index": index,
                                               "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        events.push(anthropic_event(
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for call in &answer.calls {
        events.push(anthropic_event(
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}}),
        ));
        for piece in split(&call.arguments, ARGUMENT_PIECES) {
            events.push(anthropic_event(
                json!({"type": "content_block_delta", "index": index,
                                               "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        events.push(anthropic_event(
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    events.push(anthropic_event(json!({
        "type": "message_delta",
        "delta": {"stop_reason": anthropic_stop_reason(answer), "stop_sequence": null},
        "usage": {"output_tokens": answer.output_tokens},
    })));
    events.push(anthropic_event(json!({"type": "message_stop"})));
    events
}

// ---------------------------------------------------------------------------------------------
// Endless answers

/// Stands in for the text while a whole JSON body is rendered, to find where the text goes.
const TEXT_MARK: &str = "\u{1}flood-text-goes-here\u{1}";

/// An endless text answer of `piece` repeated: what is sent once, and what repeats after it forever.
/// Streamed, the opening events and one text delta; not streamed, the JSON body up to the inside of
/// its text string, and `piece` escaped as the inside of a JSON string (so the string never closes).
pub(crate) fn flood(
    api: Api,
    stream: bool,
    answer: &Answer,
    piece: &str,
    include_usage: bool,
) -> (String, String) {
    match (api, stream) {
        (Api::OpenAi, true) => (
            openai_chunk(
                answer,
                json!({"role": "assistant", "content": ""}),
                Value::Null,
                include_usage,
            ),
            openai_chunk(answer, json!({"content": piece}), Value::Null, include_usage),
        ),
        (Api::Anthropic, true) => {
            let start = anthropic_event(json!({"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}));
            let delta = anthropic_event(json!({"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": piece}}));
            (anthropic_message_start(answer) + &start, delta)
        }
        (_, false) => {
            let marked = Answer {
                text: TEXT_MARK.to_string(),
                ..answer.clone()
            };
            let body = match api {
                Api::OpenAi => openai_json(&marked),
                Api::Anthropic => anthropic_json(&marked),
            };
            let escaped_mark = Value::String(TEXT_MARK.into()).to_string();
            let head = body
                .find(&escaped_mark)
                .map_or(body.as_str(), |at| &body[..at + 1]) // keeps the opening quote
                .to_string();
            let escaped = Value::String(piece.into()).to_string();
            let inside = escaped[1..escaped.len() - 1].to_string();
            (head, inside)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// The error `type` each API uses for an HTTP status.
fn error_type(api: Api, status: u16) -> &'static str {
    match (api, status) {
        (Api::OpenAi, 401) => "invalid_request_error",
        (Api::OpenAi, 429) => "rate_limit_exceeded",
        (Api::OpenAi, 500..) => "server_error",
        (Api::OpenAi, _) => "invalid_request_error",
        (Api::Anthropic, 401) => "authentication_error",
        (Api::Anthropic, 403) => "permission_error",
        (Api::Anthropic, 404) => "not_found_error",
        (Api::Anthropic, 413) => "request_too_large",
        (Api::Anthropic, 429) => "rate_limit_error",
        (Api::Anthropic, 529) => "overloaded_error",
        (Api::Anthropic, 500..) => "api_error",
        (Api::Anthropic, _) => "invalid_request_error",
    }
}

/// An error body in the API's style. A `message` that already is a JSON object is sent unchanged,
/// so tests can also hand over a complete body of their own.
pub(crate) fn error_body(api: Api, status: u16, message: &str) -> String {
    if let Ok(Value::Object(_)) = serde_json::from_str::<Value>(message) {
        return message.to_string();
    }
    let kind = error_type(api, status);
    match api {
        Api::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
        Api::Anthropic => json!({"type": "error", "error": {"type": kind, "message": message}}),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str, calls: &[(&str, &str)]) -> Answer {
        Answer {
            id: "x_1".into(),
            model: "m".into(),
            text: text.into(),
            calls: calls
                .iter()
                .enumerate()
                .map(|(i, (n, a))| OutCall {
                    id: format!("call_{i}"),
                    name: n.to_string(),
                    arguments: a.to_string(),
                })
                .collect(),
            input_tokens: 3,
            output_tokens: 4,
            cache: CacheUsage::default(),
        }
    }

    #[test]
    fn split_keeps_every_character() {
        for (s, parts) in [
            ("", 4),
            ("{}", 4),
            ("héllo wörld", 3),
            ("abcdefghij", 4),
            ("a", 1),
        ] {
            let pieces = split(s, parts);
            assert_eq!(pieces.concat(), s);
            assert!(pieces.len() <= parts.max(1));
        }
        assert_eq!(split("abcdefgh", 4), vec!["ab", "cd", "ef", "gh"]);
    }

    #[test]
    fn estimates_at_least_one_token() {
        assert_eq!(estimate_tokens(0), 1);
        assert_eq!(estimate_tokens(40), 10);
    }

    #[test]
    fn openai_stream_carries_usage_and_done() {
        let events = openai_sse(&answer("hi", &[("read", "{\"path\":\"a.txt\"}")]), true);
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]\n\n"));
        let usage = &events[events.len() - 2];
        assert!(usage.contains("\"prompt_tokens\":3") && usage.contains("\"choices\":[]"));
        let argument_chunks = events.iter().filter(|e| e.contains("\"arguments\":\"")).count();
        assert!(argument_chunks >= 3, "arguments not split: {events:?}");
        assert!(events
            .iter()
            .any(|e| e.contains("\"finish_reason\":\"tool_calls\"")));
    }

    #[test]
    fn anthropic_json_keeps_invalid_arguments_as_a_string() {
        let body: Value = serde_json::from_str(&anthropic_json(&answer(
            "",
            &[("a", "{oops"), ("b", "{\"k\":1}")],
        )))
        .unwrap_or_default();
        assert_eq!(body["content"][0]["input"], json!("{oops"));
        assert_eq!(body["content"][1]["input"], json!({"k": 1}));
        assert_eq!(body["stop_reason"], json!("tool_use"));
    }

    #[test]
    fn anthropic_stream_has_the_event_sequence() {
        let events = anthropic_sse(&answer("hello", &[("a", "{}")]));
        let names: Vec<&str> = events
            .iter()
            .filter_map(|e| e.lines().next())
            .map(|l| l.trim_start_matches("event: "))
            .collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(names.last(), Some(&"message_stop"));
        assert!(names.contains(&"ping"));
        assert_eq!(names.iter().filter(|n| **n == "content_block_start").count(), 2);
    }

    #[test]
    fn error_bodies_follow_each_style() {
        let openai: Value =
            serde_json::from_str(&error_body(Api::OpenAi, 429, "slow down")).unwrap_or_default();
        assert_eq!(openai["error"]["message"], json!("slow down"));
        let anthropic: Value =
            serde_json::from_str(&error_body(Api::Anthropic, 529, "busy")).unwrap_or_default();
        assert_eq!(anthropic["error"]["type"], json!("overloaded_error"));
        assert_eq!(error_body(Api::OpenAi, 500, "{\"custom\":1}"), "{\"custom\":1}");
    }
}
