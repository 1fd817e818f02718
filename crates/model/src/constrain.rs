//! Which constraint a request goes out with, and what the endpoint turned down.
//!
//! One policy for both clients: the configured [`OutputMode`], whether the request must end in a
//! call, whether the client can send the JSON-schema envelope at all (Anthropic's API cannot), and
//! what this endpoint refused before. A refusal (a 400 naming the field) drops that constraint for
//! the client's life and the request is asked again with the next weaker one, so a wrong guess
//! costs one request and the chain always ends: envelope → `tool_choice` → nothing.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::OnceCell;

use crate::{ChatRequest, Constraint, ModelError, OutputMode};

pub(crate) struct Constraints {
    mode: OutputMode,
    tool_choice_refused: AtomicBool,
    envelope_refused: AtomicBool,
    /// Whether the endpoint said it runs llama.cpp, vLLM or Ollama; asked once, on first need.
    grammar_server: OnceCell<bool>,
}

impl Constraints {
    pub(crate) fn new(mode: OutputMode) -> Self {
        Constraints {
            mode,
            tool_choice_refused: AtomicBool::new(false),
            envelope_refused: AtomicBool::new(false),
            grammar_server: OnceCell::new(),
        }
    }

    /// The constraint for `request`. `detect` asks the endpoint whether it is a grammar server; it
    /// runs at most once per client, and only in [`OutputMode::Auto`] for a request that must call.
    pub(crate) async fn choose<F, Fut>(
        &self,
        request: &ChatRequest,
        envelope_possible: bool,
        detect: F,
    ) -> Option<Constraint>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = bool>,
    {
        if request.tools.is_empty() {
            return None;
        }
        let must_call = request.tool_choice.must_call();
        let envelope = envelope_possible && !self.envelope_refused.load(Ordering::Relaxed);
        let tool_choice = must_call
            .then_some(Constraint::ToolChoice)
            .filter(|_| !self.tool_choice_refused.load(Ordering::Relaxed));
        match self.mode {
            OutputMode::Off => None,
            OutputMode::ToolChoice => tool_choice,
            OutputMode::JsonSchema if envelope => Some(Constraint::JsonSchema),
            OutputMode::JsonSchema => tool_choice,
            OutputMode::Auto if must_call && envelope => {
                if *self.grammar_server.get_or_init(detect).await {
                    Some(Constraint::JsonSchema)
                } else {
                    tool_choice
                }
            }
            OutputMode::Auto => tool_choice,
        }
    }

    /// Whether `error` is the endpoint turning `constraint` down; if so it is remembered (and
    /// logged once), and the caller asks again with [`Self::choose`].
    pub(crate) fn refused(&self, constraint: Constraint, error: &ModelError) -> bool {
        let ModelError::BadRequest { body, .. } = error else {
            return false;
        };
        let body = body.to_ascii_lowercase();
        let (flag, named, setting) = match constraint {
            Constraint::ToolChoice => (
                &self.tool_choice_refused,
                body.contains("tool_choice"),
                "tool_choice",
            ),
            Constraint::JsonSchema => (
                &self.envelope_refused,
                body.contains("response_format") || body.contains("json_schema") || body.contains("grammar"),
                "json_schema",
            ),
        };
        if named && !flag.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the model endpoint refused {setting} output; requests go on without it (set \
                 `output` in [endpoint] to stop trying)"
            );
        }
        named
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, ToolChoice, ToolSpec};

    fn request(tool_choice: ToolChoice) -> ChatRequest {
        ChatRequest {
            cache_key: None,
            shared_head: 0,
            model: "m".into(),
            system: String::new(),
            messages: vec![Message::user("go")],
            tools: vec![ToolSpec {
                name: "submit".into(),
                description: String::new(),
                parameters: serde_json::json!({"type": "object"}),
            }],
            max_tokens: 10,
            temperature: None,
            tool_choice,
        }
    }

    fn refusal(text: &str) -> ModelError {
        ModelError::BadRequest {
            status: 400,
            body: text.into(),
        }
    }

    async fn choose(c: &Constraints, choice: ToolChoice, grammar: bool) -> Option<Constraint> {
        c.choose(&request(choice), true, || async move { grammar }).await
    }

    #[tokio::test]
    async fn auto_uses_the_envelope_only_on_grammar_servers_and_only_where_a_call_is_due() {
        let c = Constraints::new(OutputMode::Auto);
        assert_eq!(choose(&c, ToolChoice::Auto, true).await, None);
        assert_eq!(
            choose(&c, ToolChoice::Required, true).await,
            Some(Constraint::JsonSchema)
        );
        let c = Constraints::new(OutputMode::Auto);
        assert_eq!(
            choose(&c, ToolChoice::Required, false).await,
            Some(Constraint::ToolChoice)
        );
        // Anthropic cannot send the envelope: tool_choice, and no detection asked.
        let asked = c
            .choose(&request(ToolChoice::Required), false, || async {
                panic!("not asked")
            })
            .await;
        assert_eq!(asked, Some(Constraint::ToolChoice));
    }

    #[tokio::test]
    async fn json_schema_covers_every_request_with_tools_and_falls_back_when_refused() {
        let c = Constraints::new(OutputMode::JsonSchema);
        assert_eq!(
            choose(&c, ToolChoice::Auto, false).await,
            Some(Constraint::JsonSchema)
        );
        assert!(!c.refused(Constraint::JsonSchema, &refusal("model not found")));
        assert!(c.refused(
            Constraint::JsonSchema,
            &refusal("'response_format' is not supported")
        ));
        assert_eq!(choose(&c, ToolChoice::Auto, false).await, None);
        assert_eq!(
            choose(&c, ToolChoice::Required, false).await,
            Some(Constraint::ToolChoice)
        );
        assert!(c.refused(Constraint::ToolChoice, &refusal("unknown field tool_choice")));
        assert_eq!(choose(&c, ToolChoice::Required, false).await, None);
    }

    #[tokio::test]
    async fn off_and_tool_choice_modes_never_send_the_envelope() {
        let off = Constraints::new(OutputMode::Off);
        assert_eq!(choose(&off, ToolChoice::Required, true).await, None);
        let tc = Constraints::new(OutputMode::ToolChoice);
        assert_eq!(
            choose(&tc, ToolChoice::Required, true).await,
            Some(Constraint::ToolChoice)
        );
        assert_eq!(choose(&tc, ToolChoice::Auto, true).await, None);
    }
}
