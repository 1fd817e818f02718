//! Tool calls written into the text of a reply, as small local models often do when their server's
//! chat template does not turn them into native tool calls.
//!
//! Accepted, for offered tool names only:
//! - a JSON object `{"name": "read", "arguments": {...}}`, with `parameters`, `args` or `input` in
//!   place of `arguments`, and arguments given as an object or as a JSON string;
//! - `{"tool": "read", ...}` (or `tool_name`), whose arguments may also be the object's other keys;
//! - OpenAI's own shape `{"type": "function", "function": {"name": ..., "arguments": ...}}` and a
//!   `{"tool_calls": [...]}` wrapper;
//! - a JSON array of such objects (all of them calls, or it is not taken for one);
//! - wherever they appear: bare in the text, in a fenced code block, in Hermes/Qwen
//!   `<tool_call>...</tool_call>` tags, after Mistral's `[TOOL_CALLS]`, after Llama's `<|python_tag|>`;
//! - Mistral's newer `[TOOL_CALLS]read[ARGS]{...}` and Llama's `<function=read>{...}</function>`.
//!
//! Only a reply that IS its calls is taken: a lead-in line and code fences may stand around them, but a
//! reply with more prose than [`MAX_PROSE_AROUND_CALLS`] (a scout's report or a review quoting a call, a
//! model explaining what it would do) is an answer, and nothing in it runs. The engine looks here only
//! when a reply has no native tool calls.

use serde_json::{Map, Value};

use crate::ToolCall;

/// Text longer than this is not searched: no reply that is really a tool call is that long.
const MAX_TEXT_BYTES: usize = 512 * 1024;
/// Other text a reply may hold around the calls it writes and still be taken as those calls ("Let me
/// read it:", "```json"), in characters that are not whitespace.
pub const MAX_PROSE_AROUND_CALLS: usize = 200;
/// Parse attempts per text, so text full of unbalanced brackets cannot take long.
const MAX_ATTEMPTS: usize = 512;

/// The tool calls of offered tools written in `text`, in the order they appear, with ids
/// `text_call_1`, `text_call_2`, ... and arguments as JSON text. Empty for ordinary prose and for
/// JSON that is not a call of an offered tool.
pub fn tool_calls_from_text(text: &str, offered: &[&str]) -> Vec<ToolCall> {
    if offered.is_empty() {
        return Vec::new();
    }
    written_calls(text)
        .into_iter()
        .filter_map(|call| {
            let name = offered_name(&call.name, offered)?;
            Some((name, call.arguments))
        })
        .enumerate()
        .map(|(i, (name, arguments))| ToolCall {
            id: format!("text_call_{}", i + 1),
            name: name.to_string(),
            arguments: arguments_text(arguments),
        })
        .collect()
}

/// Every call written in `text`, whatever tool it names, in the order they appear: function tags
/// and `[TOOL_CALLS]` first claim their spans, then JSON values outside them.
/// None when the reply holds more than a lead-in of other text: then it is prose that quotes calls.
fn written_calls(text: &str) -> Vec<Call> {
    if text.len() > MAX_TEXT_BYTES {
        return Vec::new();
    }
    let mut found: Vec<(usize, Call)> = Vec::new();
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for (start, end, call) in mistral_calls(text).into_iter().chain(llama_function_calls(text)) {
        spans.push((start, end));
        found.push((start, call));
    }
    let tagged = spans.clone();
    for (start, end, value) in json_values(text, &tagged) {
        let calls = calls_in(&value);
        if !calls.is_empty() {
            spans.push((start, end));
        }
        found.extend(calls.into_iter().map(|call| (start, call)));
    }
    if found.is_empty() || prose_around(text, &mut spans) > MAX_PROSE_AROUND_CALLS {
        return Vec::new();
    }
    found.sort_by_key(|(start, _)| *start);
    found.into_iter().map(|(_, call)| call).collect()
}

/// How much of `text` outside the calls' `spans` is prose: characters that are not whitespace, not
/// code fences and not the wrapping tags models put around calls.
fn prose_around(text: &str, spans: &mut [(usize, usize)]) -> usize {
    const WRAPPERS: [&str; 6] = [
        "<tool_call>",
        "</tool_call>",
        "<|python_tag|>",
        "[TOOL_CALLS]",
        "</function>",
        "<|eom_id|>",
    ];
    spans.sort_unstable();
    let mut outside = String::new();
    let mut at = 0;
    for &(start, end) in spans.iter() {
        if start > at {
            outside.push_str(&text[at..start]);
            outside.push('\n');
        }
        at = at.max(end);
    }
    outside.push_str(&text[at.min(text.len())..]);
    let mut outside = outside.replace("```json", "").replace("```", "");
    for wrapper in WRAPPERS {
        outside = outside.replace(wrapper, "");
    }
    outside.chars().filter(|c| !c.is_whitespace()).count()
}

/// The JSON objects written in `text` (fenced or bare), in order: for a reply that gives a tool's
/// arguments without naming the tool.
pub fn json_objects_in_text(text: &str) -> Vec<Value> {
    if text.len() > MAX_TEXT_BYTES {
        return Vec::new();
    }
    json_values(text, &[])
        .into_iter()
        .map(|(_, _, value)| value)
        .filter(Value::is_object)
        .collect()
}

/// Names of tool-call-shaped objects in `text` that name no offered tool (`{"name": "mul",
/// "arguments": {…}}` from a model that invented a tool): such a reply is a wrong call, not an answer.
pub fn unknown_tool_names_in_text(text: &str, offered: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = written_calls(text)
        .into_iter()
        .map(|call| call.name)
        .filter(|name| offered_name(name, offered).is_none())
        .collect();
    names.dedup();
    names
}

/// A call as written, before its name is checked against the offered tools.
#[derive(Debug)]
struct Call {
    name: String,
    arguments: Value,
}

/// The offered name a written name stands for; `functions.read` (OpenAI's internal prefix, which
/// models sometimes echo) stands for `read`.
fn offered_name<'a>(name: &str, offered: &[&'a str]) -> Option<&'a str> {
    let name = name.trim();
    let name = name.strip_prefix("functions.").unwrap_or(name);
    offered.iter().find(|o| **o == name).copied()
}

/// Arguments as the JSON text a native call would carry. A string holding JSON is unwrapped; a
/// string holding something else is passed on raw, so the engine can tell the model it is not JSON.
fn arguments_text(arguments: Value) -> String {
    match arguments {
        Value::Null => "{}".to_string(),
        Value::String(raw) => match serde_json::from_str::<Value>(&raw) {
            Ok(parsed) => parsed.to_string(),
            Err(_) => raw,
        },
        other => other.to_string(),
    }
}

/// Every JSON object or array in `text` that does not start inside a `taken` range, with its byte
/// range. Values inside a found value are part of it, not found again.
fn json_values(text: &str, taken: &[(usize, usize)]) -> Vec<(usize, usize, Value)> {
    let mut values = Vec::new();
    let mut attempts = 0;
    let mut at = 0;
    while let Some(offset) = text[at..].find(['{', '[']) {
        let start = at + offset;
        if let Some(&(_, end)) = taken.iter().find(|(s, e)| (*s..*e).contains(&start)) {
            at = end;
            continue;
        }
        attempts += 1;
        if attempts > MAX_ATTEMPTS {
            break;
        }
        match parse_value_at(text, start) {
            Some((value, end)) => {
                values.push((start, end, value));
                at = end;
            }
            None => at = start + 1,
        }
    }
    values
}

/// The JSON value starting at byte `start`, and the byte offset just past it.
fn parse_value_at(text: &str, start: usize) -> Option<(Value, usize)> {
    let mut stream = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    match stream.next() {
        Some(Ok(value)) => Some((value, start + stream.byte_offset())),
        _ => None,
    }
}

/// The calls a JSON value represents: an object that is a call, a `tool_calls` wrapper, or an array
/// whose every element is a call. Anything else represents none.
fn calls_in(value: &Value) -> Vec<Call> {
    match value {
        Value::Array(items) if !items.is_empty() => {
            let calls: Vec<Call> = items.iter().filter_map(call_of).collect();
            if calls.len() == items.len() {
                calls
            } else {
                Vec::new()
            }
        }
        Value::Object(object) => match object.get("tool_calls") {
            Some(inner @ Value::Array(_)) => calls_in(inner),
            _ => call_of(value).into_iter().collect(),
        },
        _ => Vec::new(),
    }
}

/// Keys that may hold the arguments, in the order they are looked for.
const ARGUMENT_KEYS: [&str; 4] = ["arguments", "parameters", "args", "input"];
/// Keys that name the tool when it is called `{"tool": ..., <arguments inline>}`.
const TOOL_KEYS: [&str; 2] = ["tool", "tool_name"];
/// Keys that describe a call rather than being its arguments.
const CALL_KEYS: [&str; 6] = ["name", "tool", "tool_name", "type", "id", "function"];

/// One object read as a call, if it is one.
fn call_of(value: &Value) -> Option<Call> {
    let object = value.as_object()?;
    if let Some(Value::Object(function)) = object.get("function") {
        return call_of(&Value::Object(function.clone()));
    }
    let arguments = ARGUMENT_KEYS.iter().find_map(|key| object.get(*key)).cloned();
    let by_tool_key = TOOL_KEYS.iter().find_map(|key| object.get(*key)?.as_str());
    let name = by_tool_key
        .or_else(|| object.get("name")?.as_str())
        .or_else(|| object.get("function")?.as_str())?;
    let arguments = match arguments {
        Some(arguments) => arguments,
        // `{"tool": "read", "path": "a"}`: the other keys are the arguments. A bare `name` without
        // arguments is only a call if nothing else is in the object, so that ordinary data with a
        // `name` field is not taken for one.
        None => {
            let rest = other_keys(object);
            if by_tool_key.is_none() && !rest.is_empty() {
                return None;
            }
            Value::Object(rest)
        }
    };
    Some(Call {
        name: name.to_string(),
        arguments,
    })
}

fn other_keys(object: &Map<String, Value>) -> Map<String, Value> {
    object
        .iter()
        .filter(|(key, _)| !CALL_KEYS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Mistral's `[TOOL_CALLS]name[ARGS]{...}` (optionally `[CALL_ID]id` before `[ARGS]`), with the byte
/// range each occupies. The older `[TOOL_CALLS] [{...}]` form is plain JSON and found as such.
fn mistral_calls(text: &str) -> Vec<(usize, usize, Call)> {
    const MARK: &str = "[TOOL_CALLS]";
    let mut calls = Vec::new();
    let mut at = 0;
    while let Some(offset) = text[at..].find(MARK) {
        let start = at + offset;
        at = start + MARK.len();
        let rest = &text[at..];
        let Some(args_at) = rest.find("[ARGS]") else {
            continue;
        };
        let head = &rest[..args_at];
        let name = head.split("[CALL_ID]").next().unwrap_or(head).trim();
        if name.is_empty() || name.contains(['{', '[', '\n']) {
            continue;
        }
        let json_at = at + args_at + "[ARGS]".len();
        let json_at = json_at + (text[json_at..].len() - text[json_at..].trim_start().len());
        if let Some((arguments, end)) = parse_value_at(text, json_at) {
            calls.push((start, end, named(name, arguments)));
            at = end;
        }
    }
    calls
}

/// Llama 3.1's `<function=name>{...}</function>`, with the byte range each occupies.
fn llama_function_calls(text: &str) -> Vec<(usize, usize, Call)> {
    const OPEN: &str = "<function=";
    let mut calls = Vec::new();
    let mut at = 0;
    while let Some(offset) = text[at..].find(OPEN) {
        let start = at + offset;
        at = start + OPEN.len();
        let Some(close) = text[at..].find('>') else {
            break;
        };
        let name = text[at..at + close].trim();
        let json_at = at + close + 1;
        let json_at = json_at + (text[json_at..].len() - text[json_at..].trim_start().len());
        if name.is_empty() || name.contains(['<', '\n']) {
            continue;
        }
        if let Some((arguments, end)) = parse_value_at(text, json_at) {
            calls.push((start, end, named(name, arguments)));
            at = end;
        }
    }
    calls
}

fn named(name: &str, arguments: Value) -> Call {
    Call {
        name: name.to_string(),
        arguments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_tools_are_named_and_ordinary_data_is_not() {
        let offered = ["read", "write"];
        let invented = r#"{"name": "mul", "arguments": {"a": 2, "b": 3}}"#;
        assert_eq!(unknown_tool_names_in_text(invented, &offered), ["mul"]);
        let real = r#"{"name": "write", "arguments": {"path": "a"}}"#;
        assert!(unknown_tool_names_in_text(real, &offered).is_empty());
        let package = r#"{"name": "my-app", "version": "1.0.0"}"#;
        assert!(unknown_tool_names_in_text(package, &offered).is_empty());
    }

    #[test]
    fn calls_quoted_in_prose_are_not_taken() {
        let call = r#"{"name": "bash", "arguments": {"command": "rm -rf build"}}"#;
        let lead_in = format!("Let me clean the build first:\n```json\n{call}\n```");
        assert_eq!(
            found(&lead_in).len(),
            1,
            "a lead-in and a fence around a call are fine"
        );
        let report = format!(
            "## Build\nThe project builds with make; the CI workflow runs the tests with pytest and \
             checks formatting with black. The release script cleans first, roughly like this:\n{call}\n\
             That step is destructive, so workers should not run it. Tests live under tests/ and take \
             about a minute; fixtures are generated by conftest.py from the samples directory."
        );
        assert!(found(&report).is_empty(), "a report quoting a call is an answer");
        assert!(unknown_tool_names_in_text(&report.replace("bash", "mul"), &OFFERED).is_empty());
    }

    const OFFERED: [&str; 4] = ["read", "write", "list", "bash"];

    /// (name, arguments) of every call found.
    fn found(text: &str) -> Vec<(String, String)> {
        tool_calls_from_text(text, &OFFERED)
            .into_iter()
            .map(|c| (c.name, c.arguments))
            .collect()
    }

    fn one(name: &str, arguments: &str) -> Vec<(String, String)> {
        vec![(name.to_string(), arguments.to_string())]
    }

    #[test]
    fn a_bare_object_with_each_arguments_key() {
        for key in ["arguments", "parameters", "args", "input"] {
            let text = format!(r#"{{"name": "read", "{key}": {{"path": "src/lib.rs"}}}}"#);
            assert_eq!(found(&text), one("read", r#"{"path":"src/lib.rs"}"#), "{key}");
        }
    }

    #[test]
    fn arguments_given_as_a_json_string() {
        let text = r#"{"name": "bash", "arguments": "{\"command\": \"ls -la\"}"}"#;
        assert_eq!(found(text), one("bash", r#"{"command":"ls -la"}"#));
        let raw = r#"{"name": "bash", "arguments": "ls -la"}"#;
        assert_eq!(found(raw), one("bash", "ls -la"), "non-JSON is passed on raw");
        let null = r#"{"name": "list", "arguments": null}"#;
        assert_eq!(found(null), one("list", "{}"));
    }

    #[test]
    fn the_tool_key_with_inline_arguments() {
        assert_eq!(
            found(r#"{"tool": "read", "path": "a.txt"}"#),
            one("read", r#"{"path":"a.txt"}"#)
        );
        assert_eq!(
            found(r#"{"tool_name": "write", "args": {"path": "b", "content": "x"}}"#),
            one("write", r#"{"path":"b","content":"x"}"#)
        );
        assert_eq!(found(r#"{"tool": "list"}"#), one("list", "{}"));
        assert_eq!(found(r#"{"name": "list"}"#), one("list", "{}"));
    }

    #[test]
    fn a_fenced_block_among_prose() {
        let text = "I'll read the file first.\n\n```json\n{\"name\": \"read\", \"arguments\": {\"path\": \"README.md\"}}\n```\n";
        assert_eq!(found(text), one("read", r#"{"path":"README.md"}"#));
    }

    #[test]
    fn hermes_tool_call_tags() {
        let text = "<tool_call>\n{\"name\": \"read\", \"arguments\": {\"path\": \"a\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"list\", \"arguments\": {}}\n</tool_call>";
        let calls = tool_calls_from_text(text, &OFFERED);
        let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, vec!["text_call_1", "text_call_2"]);
        assert_eq!(
            found(text),
            vec![
                ("read".to_string(), r#"{"path":"a"}"#.to_string()),
                ("list".to_string(), "{}".to_string())
            ]
        );
    }

    #[test]
    fn mistral_forms() {
        let old = r#"[TOOL_CALLS] [{"name": "read", "arguments": {"path": "a"}}, {"name": "list", "arguments": {}}]"#;
        assert_eq!(found(old).len(), 2);
        let new =
            r#"[TOOL_CALLS]read[ARGS]{"path": "a"}[TOOL_CALLS]bash[CALL_ID]abc123[ARGS]{"command": "ls"}"#;
        assert_eq!(
            found(new),
            vec![
                ("read".to_string(), r#"{"path":"a"}"#.to_string()),
                ("bash".to_string(), r#"{"command":"ls"}"#.to_string())
            ]
        );
    }

    #[test]
    fn llama_forms() {
        let python_tag = r#"<|python_tag|>{"name": "bash", "parameters": {"command": "cargo test"}}"#;
        assert_eq!(found(python_tag), one("bash", r#"{"command":"cargo test"}"#));
        let function = r#"<function=read>{"path": "x.rs"}</function>"#;
        assert_eq!(found(function), one("read", r#"{"path":"x.rs"}"#));
    }

    #[test]
    fn openai_shapes_and_wrappers() {
        let shaped = r#"{"type": "function", "function": {"name": "read", "arguments": "{\"path\":\"a\"}"}}"#;
        assert_eq!(found(shaped), one("read", r#"{"path":"a"}"#));
        let wrapped = r#"{"tool_calls": [{"function": {"name": "list", "arguments": {}}}]}"#;
        assert_eq!(found(wrapped), one("list", "{}"));
        assert_eq!(
            found(r#"{"name": "functions.read", "arguments": {}}"#),
            one("read", "{}")
        );
    }

    #[test]
    fn a_json_array_of_calls() {
        let text = r#"[{"name": "read", "arguments": {"path": "a"}}, {"tool": "bash", "command": "ls"}]"#;
        assert_eq!(found(text).len(), 2);
        let mixed = r#"[{"name": "read", "arguments": {}}, {"city": "Paris"}]"#;
        assert!(found(mixed).is_empty(), "an array that is not all calls is data");
    }

    #[test]
    fn only_offered_tools() {
        assert!(found(r#"{"name": "delete_everything", "arguments": {}}"#).is_empty());
        let text = r#"[{"name": "read", "arguments": {}}, {"name": "unknown", "arguments": {}}]"#;
        assert_eq!(found(text), one("read", "{}"));
        assert!(tool_calls_from_text(r#"{"name": "read", "arguments": {}}"#, &[]).is_empty());
    }

    #[test]
    fn prose_and_other_json_are_not_calls() {
        for text in [
            "",
            "I have finished the task. All tests pass.",
            "The config is {\"debug\": true, \"level\": 3}.",
            r#"{"name": "read", "version": 2}"#,
            "Use arrays like [1, 2, 3] and maps like {a: 1}.",
            "```rust\nfn main() { println!(\"{}\", 1); }\n```",
            r#"{"answer": {"name": "read", "arguments": {}}}"#,
            "Unbalanced { [ { [ text that never closes",
        ] {
            assert!(found(text).is_empty(), "{text}");
        }
    }

    #[test]
    fn calls_inside_arguments_are_not_found_twice() {
        let text =
            r#"<function=write>{"path": "n.json", "content": {"name": "read", "arguments": {}}}</function>"#;
        assert_eq!(found(text).len(), 1);
        let nested = r#"{"name": "write", "arguments": {"content": "{\"name\": \"read\"}"}}"#;
        assert_eq!(found(nested).len(), 1);
    }

    #[test]
    fn calls_keep_their_order_across_forms() {
        let text = "First <function=list>{}</function> then\n```json\n{\"name\": \"read\", \"arguments\": {\"path\": \"a\"}}\n```";
        let names: Vec<String> = found(text).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["list", "read"]);
    }

    #[test]
    fn huge_or_pathological_text_is_cheap() {
        let brackets = "[{".repeat(50_000);
        assert!(found(&brackets).is_empty());
        let unterminated = format!("{{\"a\": \"{}", "{x".repeat(200_000));
        assert!(found(&unterminated).is_empty());
        let huge = "x".repeat(MAX_TEXT_BYTES + 1);
        assert!(found(&huge).is_empty());
    }
}
