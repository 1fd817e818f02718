//! The action envelope: tool calling for models that cannot call tools, through the one thing every
//! grammar-capable OpenAI-compatible server (llama.cpp, vLLM, Ollama) constrains reliably — a
//! JSON-schema `response_format`.
//!
//! Small local models left free answer with prose or with calls written as text in a dozen shapes;
//! `tool_choice: "required"` is ignored by some chat templates. Under a JSON-schema grammar every
//! reply is exactly one object, `{"tool": NAME, "arguments": {...}}` for a call or `{"answer": TEXT}`
//! for the final answer (left out of the schema where the session must call), and the arguments are
//! held to the tool's own parameter schema. The tools are described in the system prompt instead of
//! the `tools` field (servers differ on mixing the two), and the history is written back in the
//! same shape the model produced, so what it reads is what it wrote and a server's prefix cache
//! keeps whole turns.
//!
//! Key order matters here: grammars (llama.cpp's among them) make the model write properties in
//! the schema's order, so the tool's name comes before its arguments, and a tool's own parameters
//! keep the order they were written in (a file's path before its content). The workspace builds
//! serde_json with `preserve_order` for this.

use serde_json::{json, Value};

use crate::{ChatResponse, Message, StopReason, ToolCall, ToolSpec};

/// The `response_format` for a request offering `tools`; `must_call` leaves the answer out.
pub(crate) fn response_format(tools: &[ToolSpec], must_call: bool) -> Value {
    json!({
        "type": "json_schema",
        "json_schema": {"name": "action", "strict": true, "schema": schema(tools, must_call)},
    })
}

/// One branch per tool (its name as a constant, its arguments held to its parameter schema), and
/// the answer unless a call is required.
pub(crate) fn schema(tools: &[ToolSpec], must_call: bool) -> Value {
    let mut branches: Vec<Value> = tools
        .iter()
        .map(|tool| {
            json!({
                "type": "object",
                "properties": {
                    "tool": {"const": tool.name},
                    "arguments": tool.parameters,
                },
                "required": ["tool", "arguments"],
                "additionalProperties": false,
            })
        })
        .collect();
    if !must_call {
        branches.push(json!({
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": false,
        }));
    }
    json!({"anyOf": branches})
}

/// What the system prompt gains: the reply's shape and the tools, each with its argument schema.
/// `always_calls`: the session can never answer (it ends with a submit call), so the answer's
/// shape is left out; a session held to a call for one turn only is told of both.
pub(crate) fn instructions(tools: &[ToolSpec], always_calls: bool) -> String {
    let mut text = String::from(
        "# How to reply\nEvery reply is exactly one JSON object and nothing else.\n\
         To call a tool: {\"tool\": \"<tool name>\", \"arguments\": {<the tool's arguments>}}\n",
    );
    if always_calls {
        text.push_str("You must call one of the tools below; a plain answer is not possible here.\n");
    } else {
        text.push_str(
            "When the work is done: {\"answer\": \"<your final answer>\"}\n\
             The result of each call comes back in the next message.\n",
        );
    }
    text.push_str("\n# Tools\n");
    for tool in tools {
        text.push_str(&format!(
            "- {}: {}\n  arguments: {}\n",
            tool.name,
            tool.description.trim(),
            tool.parameters
        ));
    }
    text
}

/// The whole `messages` array: the system prompt with the instructions, the history in envelopes,
/// and each tool result as a user message naming its tool.
pub(crate) fn wire_messages(
    system: &str,
    tools: &[ToolSpec],
    always_calls: bool,
    messages: &[Message],
) -> Vec<Value> {
    let system = if system.is_empty() {
        instructions(tools, always_calls)
    } else {
        format!("{system}\n\n{}", instructions(tools, always_calls))
    };
    let mut wire = vec![json!({"role": "system", "content": system})];
    let mut names: Vec<(&str, &str)> = Vec::new();
    for message in messages {
        wire.push(match message {
            Message::User { content } => json!({"role": "user", "content": content}),
            Message::Assistant { content, tool_calls } => {
                names.extend(tool_calls.iter().map(|c| (c.id.as_str(), c.name.as_str())));
                json!({"role": "assistant", "content": assistant_text(content, tool_calls)})
            }
            Message::Tool {
                call_id,
                content,
                is_error,
            } => {
                let tool = names
                    .iter()
                    .rev()
                    .find(|(id, _)| id == call_id)
                    .map_or("the tool", |(_, name)| name);
                let head = if *is_error { "Error from" } else { "Result of" };
                json!({"role": "user", "content": format!("{head} {tool}:\n{content}")})
            }
        });
    }
    wire
}

/// An assistant turn as the envelope would have produced it: one object per call (a turn from
/// before the envelope may hold several), or the answer.
fn assistant_text(content: &str, calls: &[ToolCall]) -> String {
    if calls.is_empty() {
        return json!({"answer": content}).to_string();
    }
    calls
        .iter()
        .map(|call| {
            // Unreadable arguments go back as the text they were: the model was told so already.
            let arguments = serde_json::from_str::<Value>(&call.arguments)
                .unwrap_or_else(|_| Value::String(call.arguments.clone()));
            json!({"tool": call.name, "arguments": arguments}).to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads an envelope reply into a call or an answer. A reply that is not an envelope (cut by
/// `max_tokens` inside a string, or a server that ignored the format) is left as the text it is,
/// for the engine's own recovery to judge; it is never guessed at here.
pub(crate) fn read_reply(mut reply: ChatResponse, new_id: impl Fn() -> String) -> ChatResponse {
    if !reply.tool_calls.is_empty() {
        return reply;
    }
    let Ok(Value::Object(mut object)) = serde_json::from_str::<Value>(unfenced(&reply.content)) else {
        return reply;
    };
    match (
        object.remove("tool"),
        object.remove("arguments"),
        object.remove("answer"),
    ) {
        (Some(Value::String(name)), Some(arguments), None) if object.is_empty() => {
            let arguments = match arguments {
                Value::String(text) => text,
                other => other.to_string(),
            };
            reply.tool_calls.push(ToolCall {
                id: new_id(),
                name,
                arguments,
            });
            reply.content.clear();
            if reply.stop == StopReason::EndTurn {
                reply.stop = StopReason::ToolUse;
            }
        }
        (None, None, Some(Value::String(answer))) if object.is_empty() => reply.content = answer,
        _ => {}
    }
    reply
}

/// The text inside a ```json fence, should a server that ignored the grammar have added one.
fn unfenced(text: &str) -> &str {
    let text = text.trim();
    text.strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .and_then(|inner| inner.strip_suffix("```"))
        .map_or(text, str::trim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenUsage;

    fn tools() -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: "read".into(),
            description: "Read a file.".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
        }]
    }

    fn reply(content: &str) -> ChatResponse {
        ChatResponse {
            content: content.into(),
            tool_calls: Vec::new(),
            usage: TokenUsage::default(),
            stop: StopReason::EndTurn,
            constraint: None,
        }
    }

    #[test]
    fn the_schema_has_a_branch_per_tool_and_the_answer_only_where_allowed() {
        let free = schema(&tools(), false);
        assert_eq!(free["anyOf"].as_array().map(Vec::len), Some(2));
        assert_eq!(free["anyOf"][0]["properties"]["tool"], json!({"const": "read"}));
        assert_eq!(free["anyOf"][0]["properties"]["arguments"], tools()[0].parameters);
        assert_eq!(free["anyOf"][1]["required"], json!(["answer"]));
        let must = schema(&tools(), true);
        assert_eq!(must["anyOf"].as_array().map(Vec::len), Some(1));
        assert!(!instructions(&tools(), true).contains("\"answer\""));
    }

    #[test]
    fn a_call_and_an_answer_are_read_and_anything_else_is_left_as_text() {
        let call = read_reply(reply(r#"{"tool": "read", "arguments": {"path": "a"}}"#), || {
            "c1".into()
        });
        assert_eq!(call.tool_calls.len(), 1);
        assert_eq!(call.tool_calls[0].name, "read");
        assert_eq!(call.tool_calls[0].arguments, r#"{"path":"a"}"#);
        assert_eq!(call.stop, StopReason::ToolUse);
        assert!(call.content.is_empty());

        let answer = read_reply(reply(r#"{"answer": "done"}"#), || "c1".into());
        assert_eq!(answer.content, "done");
        assert!(answer.tool_calls.is_empty());

        // Cut inside a string by max_tokens, an extra field, a fenced call: judged, never guessed.
        for text in [
            r#"{"tool": "read", "arguments": {"path": "a"#,
            r#"{"tool": "read", "arguments": {}, "also": 1}"#,
            "plain prose",
        ] {
            let kept = read_reply(reply(text), || "c1".into());
            assert_eq!(kept.content, text);
            assert!(kept.tool_calls.is_empty());
        }
        let fenced = read_reply(reply("```json\n{\"answer\": \"x\"}\n```"), || "c1".into());
        assert_eq!(fenced.content, "x");
    }

    #[test]
    fn the_history_is_written_in_the_shape_the_model_answers_in() {
        let history = vec![
            Message::user("go"),
            Message::Assistant {
                content: String::new(),
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "read".into(),
                    arguments: r#"{"path":"a"}"#.into(),
                }],
            },
            Message::Tool {
                call_id: "c1".into(),
                content: "text of a".into(),
                is_error: false,
            },
            Message::Assistant {
                content: "done".into(),
                tool_calls: Vec::new(),
            },
        ];
        let wire = wire_messages("You are a worker.", &tools(), false, &history);
        assert_eq!(wire.len(), 5);
        let system = wire[0]["content"].as_str().unwrap_or_default();
        assert!(system.starts_with("You are a worker.\n\n# How to reply"));
        assert!(system.contains("- read: Read a file."));
        assert_eq!(
            wire[2]["content"],
            json!(r#"{"tool":"read","arguments":{"path":"a"}}"#)
        );
        assert_eq!(
            wire[3],
            json!({"role": "user", "content": "Result of read:\ntext of a"})
        );
        assert_eq!(wire[4]["content"], json!(r#"{"answer":"done"}"#));
    }
}
