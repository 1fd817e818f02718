//! Normalises request bodies of both APIs into [`SeenRequest`]s.
//!
//! The parsers are strict about structure (a real API would reject the request, so a client bug should
//! show up as a 400 here too) but lenient about optional fields.

use serde_json::{Map, Value};

use crate::cache::PromptPiece;
use crate::{Api, SeenMessage, SeenRequest, SeenToolCall};

/// Why a request body was rejected; becomes the message of a 400.
pub(crate) type ParseError = String;

/// Parses an OpenAI chat-completions request body. `seq` is filled in by the server.
pub(crate) fn parse_openai(body: &[u8]) -> Result<SeenRequest, ParseError> {
    let root = parse_object(body)?;
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for (i, message) in required_array(&root, "messages")?.iter().enumerate() {
        let message = message
            .as_object()
            .ok_or_else(|| format!("messages[{i}] is not an object"))?;
        let role = required_str(message, "role").map_err(|e| format!("messages[{i}]: {e}"))?;
        match role {
            "system" | "developer" => system.push(openai_content(message.get("content"))?),
            "user" => messages.push(SeenMessage::User {
                text: openai_content(message.get("content"))?,
            }),
            "assistant" => {
                messages.push(openai_assistant(message).map_err(|e| format!("messages[{i}]: {e}"))?)
            }
            "tool" => messages.push(SeenMessage::Tool {
                call_id: required_str(message, "tool_call_id")
                    .map_err(|e| format!("messages[{i}]: {e}"))?
                    .to_string(),
                content: openai_content(message.get("content"))?,
                // OpenAI has no error flag on tool results.
                is_error: false,
            }),
            other => return Err(format!("messages[{i}]: unknown role {other:?}")),
        }
    }
    let response_format = root
        .get("response_format")
        .and_then(|format| format.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut tools = openai_tools(&root)?;
    if response_format.as_deref() == Some("json_schema") {
        tools.extend(envelope_tools(&root));
        messages = envelope_messages(messages);
    }
    Ok(SeenRequest {
        seq: 0,
        api: Api::OpenAi,
        model: required_str(&root, "model")?.to_string(),
        system: system.join("\n\n"),
        messages,
        tools,
        stream: optional_bool(&root, "stream")?,
        max_tokens: optional_u64(&root, "max_tokens")?.or(optional_u64(&root, "max_completion_tokens")?),
        tool_choice: tool_choice(&root),
        response_format,
        temperature: root.get("temperature").and_then(Value::as_f64),
        prompt: openai_prompt(&root),
        prompt_cache_key: root
            .get("prompt_cache_key")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// The prompt as the cache reads it (see [`crate::cache`]): each tool, then each message.
fn openai_prompt(root: &Map<String, Value>) -> Vec<PromptPiece> {
    let listed = |key: &str| root.get(key).and_then(Value::as_array).into_iter().flatten();
    listed("tools")
        .chain(listed("messages"))
        .map(|value| PromptPiece {
            text: value.to_string(),
            breakpoint: false,
        })
        .collect()
}

/// The prompt as the cache reads it (see [`crate::cache`]): each tool, each system block, each
/// message's content blocks; `cache_control` marks a breakpoint and is not part of the text.
fn anthropic_prompt(root: &Map<String, Value>) -> Vec<PromptPiece> {
    fn piece(value: &Value, role: &str) -> PromptPiece {
        let mut value = value.clone();
        let breakpoint = value
            .as_object_mut()
            .and_then(|block| block.remove("cache_control"))
            .is_some();
        PromptPiece {
            text: format!("{role}:{value}"),
            breakpoint,
        }
    }
    let mut pieces: Vec<PromptPiece> = Vec::new();
    let listed = |value: Option<&Value>| -> Vec<Value> {
        match value {
            Some(Value::Array(items)) => items.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(other) => vec![other.clone()],
        }
    };
    pieces.extend(listed(root.get("tools")).iter().map(|t| piece(t, "tool")));
    pieces.extend(listed(root.get("system")).iter().map(|s| piece(s, "system")));
    for message in listed(root.get("messages")) {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        pieces.extend(listed(message.get("content")).iter().map(|b| piece(b, &role)));
    }
    pieces
}

/// The tools an action envelope's schema offers: its branches' `{"tool": {"const": NAME}}`.
fn envelope_tools(root: &Map<String, Value>) -> Vec<String> {
    root.get("response_format")
        .and_then(|format| format.pointer("/json_schema/schema/anyOf"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|branch| branch.pointer("/properties/tool/const").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// Reads an envelope conversation back into calls and results, as the model reads it: an assistant
/// turn of `{"tool": …, "arguments": …}` lines is its calls, `{"answer": …}` its text, and each
/// following `Result of NAME:` / `Error from NAME:` user message answers the next of those calls.
fn envelope_messages(messages: Vec<SeenMessage>) -> Vec<SeenMessage> {
    let mut pending: std::collections::VecDeque<String> = Default::default();
    let mut read = Vec::with_capacity(messages.len());
    for (index, message) in messages.into_iter().enumerate() {
        match message {
            SeenMessage::Assistant { text, tool_calls } if tool_calls.is_empty() => {
                let (text, calls) = envelope_turn(&text, index);
                pending = calls.iter().map(|c| c.id.clone()).collect();
                read.push(SeenMessage::Assistant {
                    text,
                    tool_calls: calls,
                });
            }
            SeenMessage::User { text } => {
                let result = ["Result of ", "Error from "]
                    .iter()
                    .find(|head| text.starts_with(*head))
                    .and_then(|head| Some((*head, text.split_once('\n')?.1)));
                match (result, pending.front()) {
                    (Some((head, content)), Some(_)) => read.push(SeenMessage::Tool {
                        call_id: pending.pop_front().unwrap_or_default(),
                        content: content.to_string(),
                        is_error: head == "Error from ",
                    }),
                    _ => read.push(SeenMessage::User { text }),
                }
            }
            other => read.push(other),
        }
    }
    read
}

/// One assistant envelope turn: its calls (ids made from the message's position) or its answer.
fn envelope_turn(text: &str, index: usize) -> (String, Vec<SeenToolCall>) {
    let mut calls = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            return (text.to_string(), Vec::new());
        };
        if let Some(answer) = object.get("answer").and_then(Value::as_str) {
            return (answer.to_string(), Vec::new());
        }
        let (Some(name), Some(arguments)) = (
            object.get("tool").and_then(Value::as_str),
            object.get("arguments"),
        ) else {
            return (text.to_string(), Vec::new());
        };
        calls.push(SeenToolCall {
            id: format!("envelope-{index}-{k}"),
            name: name.to_string(),
            arguments: match arguments {
                Value::String(raw) => raw.clone(),
                other => other.to_string(),
            },
        });
    }
    (String::new(), calls)
}

/// `tool_choice` as a word: a string as it is (OpenAI), an object's `type` (Anthropic, or OpenAI's
/// named `{"type": "function", …}`).
fn tool_choice(root: &serde_json::Map<String, Value>) -> Option<String> {
    match root.get("tool_choice")? {
        Value::String(word) => Some(word.clone()),
        Value::Object(choice) => choice.get("type").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// Whether an OpenAI request asked for a final usage chunk in its stream.
pub(crate) fn openai_wants_stream_usage(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
        })
        .unwrap_or(false)
}

/// Parses an Anthropic messages request body. `seq` is filled in by the server.
pub(crate) fn parse_anthropic(body: &[u8]) -> Result<SeenRequest, ParseError> {
    let root = parse_object(body)?;
    let mut messages = Vec::new();
    for (i, message) in required_array(&root, "messages")?.iter().enumerate() {
        let message = message
            .as_object()
            .ok_or_else(|| format!("messages[{i}] is not an object"))?;
        let role = required_str(message, "role").map_err(|e| format!("messages[{i}]: {e}"))?;
        let content = message
            .get("content")
            .ok_or_else(|| format!("messages[{i}]: missing content"))?;
        match role {
            "user" => anthropic_user(content, &mut messages).map_err(|e| format!("messages[{i}]: {e}"))?,
            "assistant" => {
                messages.push(anthropic_assistant(content).map_err(|e| format!("messages[{i}]: {e}"))?)
            }
            other => return Err(format!("messages[{i}]: unknown role {other:?}")),
        }
    }
    let system = match root.get("system") {
        None | Some(Value::Null) => String::new(),
        Some(value) => anthropic_text(value).map_err(|e| format!("system: {e}"))?,
    };
    Ok(SeenRequest {
        seq: 0,
        api: Api::Anthropic,
        model: required_str(&root, "model")?.to_string(),
        system,
        messages,
        tools: anthropic_tools(&root)?,
        stream: optional_bool(&root, "stream")?,
        max_tokens: optional_u64(&root, "max_tokens")?,
        tool_choice: tool_choice(&root),
        response_format: None,
        temperature: root.get("temperature").and_then(Value::as_f64),
        prompt: anthropic_prompt(&root),
        prompt_cache_key: None,
    })
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ParseError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the request body is not a JSON object".to_string()),
        Err(e) => Err(format!("the request body is not valid JSON: {e}")),
    }
}

fn required_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a str, ParseError> {
    map.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing or non-string field {key:?}"))
}

fn required_array<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a Vec<Value>, ParseError> {
    map.get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("missing or non-array field {key:?}"))
}

fn optional_bool(map: &Map<String, Value>, key: &str) -> Result<bool, ParseError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("field {key:?} is not a boolean")),
    }
}

fn optional_u64(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, ParseError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("field {key:?} is not a non-negative integer")),
    }
}

/// OpenAI message content: a string, null, or an array of `{type: "text", text}` parts.
fn openai_content(content: Option<&Value>) -> Result<String, ParseError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                // Non-text parts (images, audio) carry nothing a brain looks at.
                if part.get("type").and_then(Value::as_str) == Some("text") {
                    let piece = part
                        .get("text")
                        .and_then(Value::as_str)
                        .ok_or("a text content part has no text")?;
                    text.push_str(piece);
                }
            }
            Ok(text)
        }
        Some(_) => Err("content is neither a string, null nor an array of parts".to_string()),
    }
}

fn openai_assistant(message: &Map<String, Value>) -> Result<SeenMessage, ParseError> {
    let text = openai_content(message.get("content"))?;
    let mut tool_calls = Vec::new();
    if let Some(calls) = message.get("tool_calls").filter(|v| !v.is_null()) {
        let calls = calls.as_array().ok_or("tool_calls is not an array")?;
        for call in calls {
            tool_calls.push(openai_tool_call(call)?);
        }
    }
    Ok(SeenMessage::Assistant { text, tool_calls })
}

fn openai_tool_call(call: &Value) -> Result<SeenToolCall, ParseError> {
    let call = call.as_object().ok_or("a tool call is not an object")?;
    let function = call
        .get("function")
        .and_then(Value::as_object)
        .ok_or("a tool call has no function object")?;
    let arguments = match function.get("arguments") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        // Some clients send the object itself; keep it as JSON text so brains see one format.
        Some(other) => other.to_string(),
    };
    Ok(SeenToolCall {
        id: required_str(call, "id")?.to_string(),
        name: required_str(function, "name")?.to_string(),
        arguments,
    })
}

fn openai_tools(root: &Map<String, Value>) -> Result<Vec<String>, ParseError> {
    let Some(tools) = root.get("tools").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let tools = tools.as_array().ok_or("tools is not an array")?;
    tools
        .iter()
        .map(|tool| {
            tool.pointer("/function/name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| "a tool has no function.name".to_string())
        })
        .collect()
}

/// Anthropic text: a string or an array of blocks whose text blocks are concatenated.
fn anthropic_text(value: &Value) -> Result<String, ParseError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => {
            let mut text = String::new();
            for block in blocks {
                if block_type(block)? == "text" {
                    text.push_str(block_text(block)?);
                }
            }
            Ok(text)
        }
        _ => Err("expected a string or an array of content blocks".to_string()),
    }
}

fn block_type(block: &Value) -> Result<&str, ParseError> {
    block
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| "a content block has no type".to_string())
}

fn block_text(block: &Value) -> Result<&str, ParseError> {
    block
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| "a text block has no text".to_string())
}

/// One Anthropic user message may hold tool results and text; they become separate
/// [`SeenMessage`]s in block order, with adjacent text blocks joined into one user message.
fn anthropic_user(content: &Value, out: &mut Vec<SeenMessage>) -> Result<(), ParseError> {
    let blocks = match content {
        Value::String(s) => {
            out.push(SeenMessage::User { text: s.clone() });
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err("content is neither a string nor an array of blocks".to_string()),
    };
    let mut pending_text: Option<String> = None;
    for block in blocks {
        match block_type(block)? {
            "text" => pending_text
                .get_or_insert_with(String::new)
                .push_str(block_text(block)?),
            "tool_result" => {
                if let Some(text) = pending_text.take() {
                    out.push(SeenMessage::User { text });
                }
                out.push(anthropic_tool_result(block)?);
            }
            _ => {} // images, documents: nothing a brain looks at
        }
    }
    if let Some(text) = pending_text {
        out.push(SeenMessage::User { text });
    }
    Ok(())
}

fn anthropic_tool_result(block: &Value) -> Result<SeenMessage, ParseError> {
    let call_id = block
        .get("tool_use_id")
        .and_then(Value::as_str)
        .ok_or("a tool_result block has no tool_use_id")?;
    let content = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(value) => anthropic_text(value).map_err(|e| format!("tool_result content: {e}"))?,
    };
    let is_error = match block.get("is_error") {
        None | Some(Value::Null) => false,
        Some(value) => value.as_bool().ok_or("tool_result is_error is not a boolean")?,
    };
    Ok(SeenMessage::Tool {
        call_id: call_id.to_string(),
        content,
        is_error,
    })
}

fn anthropic_assistant(content: &Value) -> Result<SeenMessage, ParseError> {
    let blocks = match content {
        Value::String(s) => {
            return Ok(SeenMessage::Assistant {
                text: s.clone(),
                tool_calls: Vec::new(),
            })
        }
        Value::Array(blocks) => blocks,
        _ => return Err("content is neither a string nor an array of blocks".to_string()),
    };
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in blocks {
        match block_type(block)? {
            "text" => text.push_str(block_text(block)?),
            "tool_use" => tool_calls.push(anthropic_tool_use(block)?),
            _ => {} // thinking blocks and the like
        }
    }
    Ok(SeenMessage::Assistant { text, tool_calls })
}

fn anthropic_tool_use(block: &Value) -> Result<SeenToolCall, ParseError> {
    let field = |key: &str| {
        block
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("a tool_use block has no {key}"))
    };
    let input = block.get("input").ok_or("a tool_use block has no input")?;
    // The real API insists on an object; so does the fake, to catch clients sending raw strings.
    if !input.is_object() {
        return Err("tool_use input must be a JSON object".to_string());
    }
    Ok(SeenToolCall {
        id: field("id")?,
        name: field("name")?,
        arguments: input.to_string(),
    })
}

fn anthropic_tools(root: &Map<String, Value>) -> Result<Vec<String>, ParseError> {
    let Some(tools) = root.get("tools").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let tools = tools.as_array().ok_or("tools is not an array")?;
    tools
        .iter()
        .map(|tool| {
            tool.get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| "a tool has no name".to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bytes(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap_or_default()
    }

    #[test]
    fn openai_full_conversation() {
        let body = bytes(json!({
            "model": "m1",
            "max_tokens": 100,
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "read", "arguments": "{\"p\":1}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "list", "arguments": "{"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "file text"},
                {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "user", "content": [{"type": "text", "text": "go on"}]}
            ],
            "tools": [{"type": "function", "function": {"name": "read", "parameters": {}}},
                      {"type": "function", "function": {"name": "list"}}]
        }));
        let req = parse_openai(&body).expect("parses");
        assert_eq!(req.api, Api::OpenAi);
        assert_eq!(req.model, "m1");
        assert_eq!(req.system, "be brief");
        assert_eq!(req.max_tokens, Some(100));
        assert!(req.stream);
        assert!(openai_wants_stream_usage(&body));
        assert_eq!(req.tools, vec!["read", "list"]);
        assert_eq!(req.messages.len(), 5);
        assert_eq!(req.first_user_text(), "hello");
        assert_eq!(req.assistant_turns(), 1);
        let results = req.tool_results();
        assert_eq!(results.len(), 2);
        assert_eq!(results[0].0.name, "read");
        assert_eq!(results[0].0.arguments, "{\"p\":1}");
        assert_eq!(results[0].1, "file text");
        assert_eq!(results[1].0.arguments, "{");
        assert_eq!(results[1].1, "ab");
        assert!(matches!(req.last_message(), Some(SeenMessage::User { text }) if text == "go on"));
        assert!(req.offers("list") && !req.offers("write"));
    }

    #[test]
    fn openai_multiple_system_messages_and_defaults() {
        let body = bytes(json!({
            "model": "m",
            "max_completion_tokens": 7,
            "messages": [{"role": "system", "content": "a"}, {"role": "developer", "content": "b"}]
        }));
        let req = parse_openai(&body).expect("parses");
        assert_eq!(req.system, "a\n\nb");
        assert_eq!(req.max_tokens, Some(7));
        assert!(!req.stream);
        assert!(req.tools.is_empty());
        assert_eq!(req.first_user_text(), "");
        assert!(req.last_message().is_none());
        assert!(!openai_wants_stream_usage(&body));
    }

    #[test]
    fn openai_rejects_malformed_bodies() {
        for body in [
            b"not json".to_vec(),
            b"[1,2]".to_vec(),
            bytes(json!({"messages": []})),
            bytes(json!({"model": "m"})),
            bytes(json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})),
            bytes(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]})),
            bytes(json!({"model": "m", "messages": [{"role": "user", "content": 5}]})),
            bytes(json!({"model": "m", "stream": "yes", "messages": []})),
            bytes(json!({"model": "m", "max_tokens": -1, "messages": []})),
            bytes(json!({"model": "m", "messages": [], "tools": [{"type": "function"}]})),
            bytes(json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "x"}]}]})),
        ] {
            assert!(
                parse_openai(&body).is_err(),
                "accepted {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn anthropic_full_conversation() {
        let body = bytes(json!({
            "model": "claude",
            "max_tokens": 1024,
            "system": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}],
            "messages": [
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "let me look"},
                    {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"p": 1}},
                    {"type": "tool_use", "id": "toolu_2", "name": "list", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "file text"},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                     "content": [{"type": "text", "text": "no such dir"}]},
                    {"type": "text", "text": "go "},
                    {"type": "text", "text": "on"}
                ]}
            ],
            "tools": [{"name": "read", "input_schema": {}}, {"name": "list", "input_schema": {}}],
            "stream": false
        }));
        let req = parse_anthropic(&body).expect("parses");
        assert_eq!(req.api, Api::Anthropic);
        assert_eq!(req.system, "be brief");
        assert_eq!(req.max_tokens, Some(1024));
        assert_eq!(req.tools, vec!["read", "list"]);
        assert_eq!(req.messages.len(), 5, "{:?}", req.messages);
        match &req.messages[1] {
            SeenMessage::Assistant { text, tool_calls } => {
                assert_eq!(text, "let me look");
                assert_eq!(tool_calls.len(), 2);
                assert_eq!(tool_calls[0].arguments, "{\"p\":1}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let results = req.tool_results();
        assert_eq!(results.len(), 2);
        assert_eq!(
            (results[0].0.name.as_str(), results[0].1, results[0].2),
            ("read", "file text", false)
        );
        assert_eq!(
            (results[1].0.name.as_str(), results[1].1, results[1].2),
            ("list", "no such dir", true)
        );
        assert!(matches!(req.last_message(), Some(SeenMessage::User { text }) if text == "go on"));
    }

    #[test]
    fn anthropic_string_contents() {
        let body = bytes(json!({
            "model": "claude",
            "system": "sys",
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
        }));
        let req = parse_anthropic(&body).expect("parses");
        assert_eq!(req.system, "sys");
        assert_eq!(req.max_tokens, None);
        assert_eq!(req.assistant_turns(), 1);
        assert_eq!(req.first_user_text(), "hi");
    }

    #[test]
    fn anthropic_rejects_malformed_bodies() {
        for body in [
            b"{".to_vec(),
            bytes(json!({"model": "m"})),
            bytes(json!({"model": "m", "messages": [{"role": "system", "content": "x"}]})),
            bytes(json!({"model": "m", "messages": [{"role": "user"}]})),
            bytes(json!({"model": "m", "messages": [{"role": "user", "content": [{"text": "no type"}]}]})),
            bytes(
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}),
            ),
            bytes(
                json!({"model": "m", "messages": [{"role": "assistant", "content": [
                {"type": "tool_use", "id": "t", "name": "n", "input": "{\"raw\": 1}"}]}]}),
            ),
            bytes(json!({"model": "m", "system": 3, "messages": []})),
            bytes(json!({"model": "m", "messages": [], "tools": [{"input_schema": {}}]})),
        ] {
            assert!(
                parse_anthropic(&body).is_err(),
                "accepted {}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn unmatched_tool_results_are_left_out() {
        let body = bytes(json!({
            "model": "m",
            "messages": [{"role": "tool", "tool_call_id": "ghost", "content": "x"}]
        }));
        let req = parse_openai(&body).expect("parses");
        assert!(req.tool_results().is_empty());
    }
}
