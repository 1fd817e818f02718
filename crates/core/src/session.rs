//! One agent session: the loop of model turns and tool calls for a single role.
//!
//! The session runs built-in tools itself and hands orchestration tools (`spawn`, `submit_plan`,
//! `submit_review`) to the caller's [`SessionHooks`], which is how planners, reviewers and spawning
//! workers talk back to the engine.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use orchestrator_model::{ChatRequest, Message, ModelClient, ModelError, ToolCall, ToolSpec};
use orchestrator_protocol::{Event, Role, TokenUsage};
use orchestrator_tools::{summarize_call, ToolOutput, Toolbox};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::RoleSettings;
use crate::events::EventBus;
use crate::prompts::system_prompt;

/// What every session of a mission shares.
pub struct Runtime {
    pub client: Arc<dyn ModelClient>,
    pub bus: EventBus,
    pub cancel: CancellationToken,
    /// The global cap on sessions in flight, across roles and depths.
    pub slots: Arc<Semaphore>,
    pub budget_tokens: Option<u64>,
    session_seq: AtomicU64,
}

impl Runtime {
    pub fn new(
        client: Arc<dyn ModelClient>,
        bus: EventBus,
        cancel: CancellationToken,
        max_parallel: usize,
        budget_tokens: Option<u64>,
    ) -> Self {
        Runtime {
            client,
            bus,
            cancel,
            slots: Arc::new(Semaphore::new(max_parallel)),
            budget_tokens,
            session_seq: AtomicU64::new(1),
        }
    }

    fn next_session_id(&self, role: Role) -> String {
        format!(
            "{}-{}",
            role.as_str(),
            self.session_seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn budget_spent(&self) -> bool {
        self.budget_tokens
            .is_some_and(|limit| self.bus.usage().total() >= limit)
    }
}

/// A session's claim on one of the mission's concurrency slots. A session waiting on its children
/// releases its slot so that a tree of waiting parents can never starve the children it waits for.
pub struct Slot {
    slots: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Slot {
    pub async fn acquire(rt: &Runtime) -> Option<Slot> {
        let mut slot = Slot {
            slots: rt.slots.clone(),
            permit: None,
        };
        slot.reacquire(&rt.cancel).await.then_some(slot)
    }

    pub fn release(&mut self) {
        self.permit = None;
    }

    /// Waits for a slot again; false when cancelled first.
    pub async fn reacquire(&mut self, cancel: &CancellationToken) -> bool {
        if self.permit.is_some() {
            return true;
        }
        tokio::select! {
            permit = self.slots.clone().acquire_owned() => {
                self.permit = permit.ok();
                self.permit.is_some()
            }
            _ = cancel.cancelled() => false,
        }
    }
}

/// What an orchestration tool call did.
pub enum HookResult {
    /// Report this to the model and go on.
    Continue(ToolOutput),
    /// Report this and end the session (an accepted plan or review).
    Finish(ToolOutput),
}

#[async_trait]
pub trait SessionHooks: Send + Sync {
    /// Handles a call to one of the session's extra tools, with arguments already parsed to an object.
    async fn call(&self, name: &str, arguments: serde_json::Value, slot: &mut Slot) -> HookResult;

    /// The error returned for a tool the session was not offered.
    fn not_offered(&self, name: &str, offered: &[String]) -> String {
        format!(
            "Unknown tool `{name}`. The tools available to you are: {}.",
            offered.join(", ")
        )
    }
}

/// Hooks for sessions without orchestration tools.
pub struct NoHooks;

#[async_trait]
impl SessionHooks for NoHooks {
    async fn call(&self, name: &str, _arguments: serde_json::Value, _slot: &mut Slot) -> HookResult {
        HookResult::Continue(error_output(format!("Unknown tool `{name}`.")))
    }
}

/// Why a session stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEnd {
    /// The model answered without a tool call; the text is its result.
    Answered(String),
    /// A hook accepted a finishing call (plan or review).
    Finished,
    TurnLimit,
    BudgetSpent,
    Cancelled,
    ModelFailed(String),
}

pub struct Session {
    pub id: String,
    pub role: Role,
    pub unit: Option<String>,
    settings: RoleSettings,
    toolbox: Arc<Toolbox>,
    tools: Vec<ToolSpec>,
    extra: BTreeSet<String>,
    messages: Vec<Message>,
    /// Planners and reviewers must end with their submit tool, not with plain text.
    finish_tool: Option<&'static str>,
    pub turns: u32,
    pub usage: TokenUsage,
}

impl Session {
    pub fn new(
        rt: &Runtime,
        role: Role,
        unit: Option<String>,
        settings: RoleSettings,
        toolbox: Arc<Toolbox>,
        extra_tools: Vec<ToolSpec>,
        first_message: String,
    ) -> Self {
        let mut tools = toolbox.specs();
        let extra: BTreeSet<String> = extra_tools.iter().map(|t| t.name.clone()).collect();
        tools.extend(extra_tools);
        let finish_tool = match role {
            Role::Planner => Some("submit_plan"),
            Role::Reviewer | Role::MasterReviewer => Some("submit_review"),
            _ => None,
        };
        Session {
            id: rt.next_session_id(role),
            role,
            unit,
            settings,
            toolbox,
            tools,
            extra,
            messages: vec![Message::user(first_message)],
            finish_tool,
            turns: 0,
            usage: TokenUsage::default(),
        }
    }

    /// Adds a user message, e.g. a failed review sent back to the worker, before running again.
    pub fn push_user(&mut self, text: String) {
        self.messages.push(Message::user(text));
    }

    /// Runs model turns until the session ends. Can be called again after `push_user`.
    pub async fn run(&mut self, rt: &Runtime, hooks: &dyn SessionHooks, slot: &mut Slot) -> SessionEnd {
        // Emitted for every run, including a worker resumed with review feedback, so front ends can
        // count sessions in flight as started minus finished.
        rt.bus.emit(Event::SessionStarted {
            session: self.id.clone(),
            role: self.role,
            unit: self.unit.clone(),
            model: self.settings.model.clone(),
        });
        let end = self.run_turns(rt, hooks, slot).await;
        rt.bus.emit(Event::SessionFinished {
            session: self.id.clone(),
            role: self.role,
            ok: matches!(end, SessionEnd::Answered(_) | SessionEnd::Finished),
            turns: self.turns,
            usage: self.usage,
        });
        end
    }

    async fn run_turns(&mut self, rt: &Runtime, hooks: &dyn SessionHooks, slot: &mut Slot) -> SessionEnd {
        let mut budget_for_run = self.settings.max_turns;
        loop {
            if rt.cancel.is_cancelled() {
                return SessionEnd::Cancelled;
            }
            if budget_for_run == 0 {
                return SessionEnd::TurnLimit;
            }
            if rt.budget_spent() {
                return SessionEnd::BudgetSpent;
            }
            budget_for_run -= 1;
            let reply = match self.call_model(rt).await {
                Ok(reply) => reply,
                Err(ModelError::Cancelled) => return SessionEnd::Cancelled,
                Err(e) => return SessionEnd::ModelFailed(e.to_string()),
            };
            self.messages.push(Message::Assistant {
                content: reply.content.clone(),
                tool_calls: reply.tool_calls.clone(),
            });
            if reply.tool_calls.is_empty() {
                match self.finish_tool {
                    None => return SessionEnd::Answered(reply.content),
                    Some(tool) => {
                        self.push_user(format!(
                            "You answered without calling a tool. Your session must end with a call to `{tool}`; call it now."
                        ));
                        continue;
                    }
                }
            }
            if self.run_tool_calls(rt, hooks, slot, &reply.tool_calls).await {
                return SessionEnd::Finished;
            }
        }
    }

    async fn call_model(&mut self, rt: &Runtime) -> Result<orchestrator_model::ChatResponse, ModelError> {
        let request = ChatRequest {
            model: self.settings.model.clone(),
            system: system_prompt(self.role),
            messages: self.messages.clone(),
            tools: self.tools.clone(),
            max_tokens: self.settings.max_tokens,
            temperature: self.settings.temperature,
        };
        let started = Instant::now();
        let reply = rt.client.chat(&request, &rt.cancel).await?;
        self.turns += 1;
        self.usage.add(reply.usage);
        rt.bus.emit(Event::ModelCall {
            session: self.id.clone(),
            role: self.role,
            usage: reply.usage,
            duration_ms: started.elapsed().as_millis() as u64,
        });
        Ok(reply)
    }

    /// Runs one turn's tool calls in order; true when a hook finished the session.
    async fn run_tool_calls(
        &mut self,
        rt: &Runtime,
        hooks: &dyn SessionHooks,
        slot: &mut Slot,
        calls: &[ToolCall],
    ) -> bool {
        let mut finished = false;
        for call in calls {
            // Once a finishing call is accepted, later calls in the same turn are not run.
            let (output, ends) = if finished {
                (error_output("Not run: the session already ended.".into()), false)
            } else {
                self.run_tool_call(rt, hooks, slot, call).await
            };
            finished |= ends;
            self.messages.push(Message::Tool {
                call_id: call.id.clone(),
                content: output.content,
                is_error: output.is_error,
            });
        }
        finished
    }

    async fn run_tool_call(
        &self,
        rt: &Runtime,
        hooks: &dyn SessionHooks,
        slot: &mut Slot,
        call: &ToolCall,
    ) -> (ToolOutput, bool) {
        let arguments = match parse_arguments(&call.name, &call.arguments) {
            Ok(arguments) => arguments,
            Err(message) => {
                self.emit_tool(rt, &call.name, "invalid arguments".into(), false);
                return (error_output(message), false);
            }
        };
        let summary = summarize_call(&call.name, &arguments);
        let (output, ends) = if self.extra.contains(&call.name) {
            match hooks.call(&call.name, arguments, slot).await {
                HookResult::Continue(output) => (output, false),
                HookResult::Finish(output) => (output, true),
            }
        } else if self.toolbox.provides(&call.name) {
            (self.toolbox.call(&call.name, &arguments, &rt.cancel).await, false)
        } else {
            let offered: Vec<String> = self.tools.iter().map(|t| t.name.clone()).collect();
            (error_output(hooks.not_offered(&call.name, &offered)), false)
        };
        self.emit_tool(rt, &call.name, summary, !output.is_error);
        (output, ends)
    }

    fn emit_tool(&self, rt: &Runtime, tool: &str, summary: String, ok: bool) {
        rt.bus.emit(Event::ToolCalled {
            session: self.id.clone(),
            tool: tool.to_string(),
            summary,
            ok,
        });
    }
}

/// Tool arguments must be a JSON object; anything else is explained to the model, which tries again.
fn parse_arguments(tool: &str, raw: &str) -> Result<serde_json::Value, String> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err(format!(
            "The arguments of `{tool}` must be a JSON object matching the tool's schema. Call it again."
        )),
        Err(e) => Err(format!(
            "The arguments of `{tool}` are not valid JSON ({e}). Call the tool again with a JSON object matching its schema."
        )),
    }
}

pub fn error_output(content: String) -> ToolOutput {
    ToolOutput {
        content,
        is_error: true,
    }
}

pub fn ok_output(content: String) -> ToolOutput {
    ToolOutput {
        content,
        is_error: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_must_be_a_json_object() {
        assert!(parse_arguments("read", r#"{"path":"a"}"#).is_ok());
        assert!(parse_arguments("list", "").is_ok());
        let err = parse_arguments("read", r#"{"path":"#).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        let err = parse_arguments("read", "[1]").unwrap_err();
        assert!(err.contains("JSON object"), "{err}");
    }
}
