//! The parts of OpenCode's data model the engine needs, read leniently: OpenCode adds fields often,
//! so unknown fields are ignored and unknown part kinds become [`Part::Other`] instead of errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A session as `POST /session` and `GET /session/{id}` return it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub id: String,
    /// The folder the session works in (the `directory` it was created for).
    pub directory: String,
    #[serde(default)]
    pub title: String,
    #[serde(rename = "parentID", default)]
    pub parent_id: Option<String>,
}

/// One permission rule (`{permission, pattern, action}`); a session's rules are checked in order,
/// the last match wins. `permission` is a tool name or an OpenCode permission (`edit`, `bash`, ...),
/// wildcards allowed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PermissionRule {
    pub permission: String,
    pub pattern: String,
    /// `allow`, `deny` or `ask`.
    pub action: String,
}

impl PermissionRule {
    pub fn new(permission: &str, pattern: &str, action: &str) -> Self {
        PermissionRule {
            permission: permission.into(),
            pattern: pattern.into(),
            action: action.into(),
        }
    }
}

/// The body of `POST /session`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CreateSession {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(rename = "parentID", skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Rules for this session only. A headless session has nobody to answer an `ask`, so the engine
    /// sets what it allows and denies up front.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permission: Option<Vec<PermissionRule>>,
}

/// A model as OpenCode names it: the provider's id in OpenCode's config and the model's id there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelRef {
    #[serde(rename = "providerID")]
    pub provider_id: String,
    #[serde(rename = "modelID")]
    pub model_id: String,
}

impl ModelRef {
    /// Parses `provider/model` (the form OpenCode's config and CLI use); the model id may contain `/`.
    pub fn parse(text: &str) -> Option<ModelRef> {
        let (provider, model) = text.split_once('/')?;
        (!provider.is_empty() && !model.is_empty()).then(|| ModelRef {
            provider_id: provider.into(),
            model_id: model.into(),
        })
    }
}

/// The body of `POST /session/{id}/message` and `POST /session/{id}/prompt_async`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PromptRequest {
    pub parts: Vec<PromptPart>,
    /// None: the model configured in OpenCode (the user's choice).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
    /// OpenCode's agent (`build` by default, `plan` is read-only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Extra system prompt for this turn.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Tool id -> enabled, for this prompt. MCP tools are named `<server>_<tool>`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, bool>,
}

impl PromptRequest {
    pub fn text(text: impl Into<String>) -> Self {
        PromptRequest {
            parts: vec![PromptPart::Text { text: text.into() }],
            ..PromptRequest::default()
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PromptPart {
    Text { text: String },
}

/// Token counts as OpenCode reports them per assistant message (and per step).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
pub struct Tokens {
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    #[serde(default)]
    pub reasoning: f64,
    #[serde(default)]
    pub cache: CacheTokens,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
pub struct CacheTokens {
    #[serde(default)]
    pub read: f64,
    #[serde(default)]
    pub write: f64,
}

/// A message's metadata (`info`): user or assistant; the assistant's carries usage, cost and error.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageInfo {
    pub id: String,
    #[serde(rename = "sessionID")]
    pub session_id: String,
    pub role: String,
    #[serde(rename = "modelID", default)]
    pub model_id: Option<String>,
    #[serde(rename = "providerID", default)]
    pub provider_id: Option<String>,
    /// Dollars, from the price in OpenCode's model data (0 for models without one).
    #[serde(default)]
    pub cost: Option<f64>,
    #[serde(default)]
    pub tokens: Option<Tokens>,
    /// Set when the turn failed: `{name, data: {message, ...}}` (e.g. `MessageAbortedError`).
    #[serde(default)]
    pub error: Option<Value>,
    /// Why the model stopped (`stop`, `tool-calls`, `length`, ...).
    #[serde(default)]
    pub finish: Option<String>,
    #[serde(default)]
    pub time: Option<MessageTime>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub struct MessageTime {
    pub created: u64,
    #[serde(default)]
    pub completed: Option<u64>,
}

/// One message with its parts, as `GET /session/{id}/message` lists them.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    pub info: MessageInfo,
    #[serde(default)]
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Part {
    Text {
        #[serde(default)]
        text: String,
        #[serde(default)]
        synthetic: Option<bool>,
    },
    Tool {
        #[serde(rename = "callID", default)]
        call_id: String,
        tool: String,
        state: ToolState,
    },
    StepFinish {
        #[serde(default)]
        reason: Option<String>,
        #[serde(default)]
        cost: f64,
        #[serde(default)]
        tokens: Tokens,
    },
    #[serde(other)]
    Other,
}

/// A tool call's state: `pending`, `running`, `completed` (with `output`) or `error` (with `error`).
#[derive(Debug, Clone, Deserialize)]
pub struct ToolState {
    pub status: String,
    #[serde(default)]
    pub input: Option<Value>,
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

impl Message {
    pub fn is_assistant(&self) -> bool {
        self.info.role == "assistant"
    }

    /// The message's text, its non-synthetic text parts joined.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self
            .parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text, synthetic } if *synthetic != Some(true) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        texts.join("\n")
    }

    /// The error OpenCode recorded on this (assistant) message, as `Name: message`.
    pub fn error_message(&self) -> Option<String> {
        let error = self.info.error.as_ref()?;
        let name = error.get("name").and_then(Value::as_str).unwrap_or("error");
        let message = error
            .pointer("/data/message")
            .and_then(Value::as_str)
            .unwrap_or("");
        Some(if message.is_empty() {
            name.to_string()
        } else {
            format!("{name}: {message}")
        })
    }

    /// The tool calls in this message, in order.
    pub fn tool_calls(&self) -> impl Iterator<Item = (&str, &ToolState)> {
        self.parts.iter().filter_map(|p| match p {
            Part::Tool { tool, state, .. } => Some((tool.as_str(), state)),
            _ => None,
        })
    }
}

/// What a session has used, summed over its assistant messages. OpenCode reports this after each
/// model step, so it is known after the fact, never before a call.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    pub reasoning: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    /// Dollars.
    pub cost: f64,
    pub assistant_messages: u32,
}

impl Usage {
    pub fn of(messages: &[Message]) -> Usage {
        let mut usage = Usage::default();
        for message in messages.iter().filter(|m| m.is_assistant()) {
            usage.assistant_messages += 1;
            usage.cost += message.info.cost.unwrap_or(0.0);
            if let Some(t) = message.info.tokens {
                // Counts arrive as JSON numbers; they are whole, and never negative in practice.
                usage.input += t.input.max(0.0) as u64;
                usage.output += t.output.max(0.0) as u64;
                usage.reasoning += t.reasoning.max(0.0) as u64;
                usage.cache_read += t.cache.read.max(0.0) as u64;
                usage.cache_write += t.cache.write.max(0.0) as u64;
            }
        }
        usage
    }

    pub fn total(&self) -> u64 {
        self.input + self.output + self.reasoning + self.cache_read + self.cache_write
    }
}

/// A session's run state from `GET /session/status` (sessions missing there are idle).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SessionStatus {
    Idle,
    Busy,
    Retry {
        #[serde(default)]
        attempt: u64,
        #[serde(default)]
        message: String,
    },
    #[serde(other)]
    Other,
}

/// One event of `GET /event`: `{type, properties}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub properties: Value,
}

impl Event {
    /// The session an event is about, where it names one.
    pub fn session_id(&self) -> Option<&str> {
        let p = &self.properties;
        p.get("sessionID")
            .or_else(|| p.pointer("/info/sessionID"))
            .or_else(|| p.pointer("/part/sessionID"))
            .and_then(Value::as_str)
    }
}

/// An MCP server to add at run time (`POST /mcp`). Only `remote` is modelled: that is what the tool
/// bridge serves.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteMcp {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub url: String,
    pub enabled: bool,
    /// Our bridge needs no OAuth; without this OpenCode probes for it.
    pub oauth: bool,
    /// Milliseconds OpenCode waits when it fetches the server's tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

impl RemoteMcp {
    pub fn new(url: impl Into<String>) -> Self {
        RemoteMcp {
            kind: "remote",
            url: url.into(),
            enabled: true,
            oauth: false,
            timeout: None,
        }
    }
}
