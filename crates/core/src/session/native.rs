//! The native loop of turns: call the model, run the tools it asks for, correct what a model gets
//! wrong, compact the conversation when it nears the context window, and repair what a crash lost.

use std::time::Instant;

use async_trait::async_trait;
use orchestrator_model::{ChatRequest, ChatResponse, Message, ModelError, StopReason, ToolCall};
use orchestrator_protocol::Event;
use orchestrator_tools::{summarize_call, ToolOutput};

use super::{error_output, HookResult, Runtime, Session, SessionEnd, SessionHooks, Slot, TurnRunner};
use crate::compact::{
    apply_compaction, plan_compaction, summary_request, truncate_for_context, ContextEstimator,
    SUMMARY_SYSTEM_PROMPT,
};

/// The engine's own loop of turns, used unless the mission runs on an agent server.
pub(super) struct NativeLoop;

#[async_trait]
impl TurnRunner for NativeLoop {
    async fn run_turns(
        &self,
        session: &mut Session,
        rt: &Runtime,
        hooks: &dyn SessionHooks,
        slot: &mut Slot,
    ) -> SessionEnd {
        session.run_turns(rt, hooks, slot).await
    }

    fn confinement(&self, session: &Session) -> Option<String> {
        session.toolbox.sandbox_description().map(str::to_string)
    }

    fn waits_for_worktree(&self) -> bool {
        true
    }
}

/// How many protocol corrections in a row a session gets before it is given up.
const MAX_CORRECTIONS: u32 = 3;

/// Repeats of a call the session does not run before it acts: a session that must submit is left
/// only its finishing tool (so a constrained endpoint makes the next reply that call), any other
/// session ends as a model failure.
const MAX_REPEATS: u32 = 2;

/// Answers a run's hooks may send back (`SessionHooks::recheck_answer`), whatever each hook's own
/// rules say: past it the answer is taken.
const MAX_RECHECKS: u32 = 2;

/// How much hotter each turn in a row that repeated itself samples.
const REPEAT_HEAT: f32 = 0.3;

/// Notices a model going round in circles: the same call again where nothing could have changed its
/// result. In a session that cannot write (scouts, planners, reviewers) that is any call it already
/// made; in one that can, the call of the turn just before (after an edit, running the tests
/// again is the point).
#[derive(Default)]
struct RepeatWatch {
    /// Calls made, each with the worktree version it was made at.
    seen: std::collections::HashSet<String>,
    last_turn: Vec<String>,
    /// Turns in a row that only repeated earlier calls.
    repeats: u32,
    /// Bumped whenever a call may have changed the worktree (a write or edit that took, any command
    /// that ran): a call repeated at the same version gets the same result, one after a change may not.
    version: u64,
}

impl RepeatWatch {
    /// Whether this turn's calls only repeat what the session already has the results of: calls made
    /// before with nothing changed since (a `read` then a failing `edit`, again and again), or the
    /// very calls of the turn before.
    ///
    /// `files_seen` is how many files the session has read in full: a `write` refused as a blind
    /// overwrite may be allowed once the file was read, so a write's identity includes it (a read's
    /// does not: re-reading everything each time a new file is learned would only cost turns).
    fn repeats(&mut self, calls: &[ToolCall], files_seen: usize) -> bool {
        // Both may be refused until the session has seen a file (a blind overwrite, a new file
        // outside the plan) and allowed after, so what the session has seen is part of them.
        let idents: Vec<String> = calls
            .iter()
            .map(|call| match call.name.as_str() {
                "write" | "insert" => format!("{files_seen}\u{0}{}", call_key(call)),
                _ => call_key(call),
            })
            .collect();
        let versioned: Vec<String> = idents
            .iter()
            .map(|ident| format!("{}\u{0}{ident}", self.version))
            .collect();
        let repeated = versioned.iter().all(|key| self.seen.contains(key)) || idents == self.last_turn;
        self.seen.extend(versioned);
        self.last_turn = idents;
        self.repeats = if repeated { self.repeats + 1 } else { 0 };
        repeated
    }

    /// Calls taken out of the conversation: a copy of one is no longer a repeat of something whose
    /// result the model can see, so it runs (and is judged) again.
    fn forget(&mut self, keys: &[String]) {
        self.seen
            .retain(|seen| !keys.iter().any(|key| seen.ends_with(&format!("\u{0}{key}"))));
        self.last_turn.clear();
    }

    /// The turn's calls may have changed the worktree.
    fn changed(&mut self) {
        self.version += 1;
    }
}

/// A call's identity: its tool and its arguments as JSON (as written, when they are not JSON).
fn call_key(call: &ToolCall) -> String {
    let arguments = serde_json::from_str::<serde_json::Value>(&call.arguments)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| call.arguments.clone());
    format!("{}\u{0}{arguments}", call.name)
}

/// What became of a refused finishing call sent again unchanged.
enum Rejudged {
    /// The hook does not judge repeats, or the turn has no such call.
    NotAsked,
    /// The hook refused it again, saying this.
    Refused(String),
    /// The session ended (the hook took the call, or the mission was cancelled).
    Ended(SessionEnd),
}

/// The most of the tests' output a note after a change carries (its head and tail).
const AFTER_WRITE_CHARS: usize = 2_000;

/// How the answer to a repeated call that was not run again begins.
const NOT_RUN_AGAIN: &str = "Not run: you already made exactly this call";

/// The largest arguments one tool call may carry. Bigger files are written in parts or generated.
const MAX_TOOL_ARGUMENT_BYTES: usize = 1024 * 1024;
/// Tool-call arguments up to this size stay in the history verbatim.
const HISTORY_ARGUMENT_BYTES: usize = 8 * 1024;
/// In longer arguments, string values longer than this are replaced in the history.
const HISTORY_STRING_CHARS: usize = 2 * 1024;
/// Starts the text that stands in the history for an argument value left out of it.
const OMITTED: &str = "[omitted from the history:";

/// A JSON value of the shape `schema` describes, with placeholders: what a correction shows a model
/// that keeps getting a call wrong. Depth-limited, so a recursive schema cannot loop.
fn skeleton(schema: &serde_json::Value) -> serde_json::Value {
    fn walk(schema: &serde_json::Value, depth: u32) -> serde_json::Value {
        use serde_json::Value;
        if depth > 4 {
            return Value::String("…".into());
        }
        if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
            let names: Vec<String> = choices.iter().map(|c| c.to_string().replace('"', "")).collect();
            return Value::String(names.join(" | "));
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => {
                let fields = schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|props| {
                        props
                            .iter()
                            .map(|(key, sub)| (key.clone(), walk(sub, depth + 1)))
                            .collect()
                    })
                    .unwrap_or_default();
                Value::Object(fields)
            }
            Some("array") => Value::Array(
                schema
                    .get("items")
                    .map(|items| vec![walk(items, depth + 1)])
                    .unwrap_or_default(),
            ),
            Some("integer") | Some("number") => Value::from(1),
            Some("boolean") => Value::Bool(true),
            _ => Value::String("…".into()),
        }
    }
    walk(schema, 0)
}

fn oversized_arguments(call: &ToolCall) -> String {
    format!(
        "Not run: the arguments of this `{}` call are {} bytes; one call may carry at most {} bytes. \
         Write big files in parts (several smaller files, or a first part and then `edit` calls), or \
         generate repetitive content with a command.",
        call.name,
        call.arguments.len(),
        MAX_TOOL_ARGUMENT_BYTES
    )
}

/// A tool call as the history keeps it: big string values (a file's content, a heredoc) replaced
/// by a note of their size. Small calls, and calls whose arguments are not JSON, are kept whole
/// up to the size limit (bigger ones are not run anyway).
fn slim_for_history(call: &ToolCall) -> ToolCall {
    if call.arguments.len() <= HISTORY_ARGUMENT_BYTES {
        return call.clone();
    }
    let arguments = match serde_json::from_str::<serde_json::Value>(&call.arguments) {
        Ok(serde_json::Value::Object(mut fields)) => {
            for value in fields.values_mut() {
                if let serde_json::Value::String(text) = value {
                    let chars = text.chars().count();
                    if chars > HISTORY_STRING_CHARS {
                        let head: String = text.chars().take(200).collect();
                        *text = format!("{OMITTED} {chars} characters, beginning: {head}…]");
                    }
                }
            }
            serde_json::Value::Object(fields).to_string()
        }
        _ => serde_json::json!({
            "_omitted": format!("{OMITTED} {} bytes of arguments that are not a JSON object]", call.arguments.len())
        })
        .to_string(),
    };
    ToolCall {
        arguments,
        ..call.clone()
    }
}

fn was_slimmed(call: &ToolCall) -> bool {
    call.arguments.contains(OMITTED)
}

/// Tools whose calls are safe to run again when their result was lost in a crash. The tools of the
/// user's MCP servers are not: nothing says what a call did (a hint in a tool's listing is the
/// server's word, not a promise), so a lost one is reported as interrupted.
const REPEATABLE: &[&str] = &[
    "read",
    "list",
    "glob",
    "grep",
    "write",
    "spawn",
    "submit_plan",
    "submit_review",
];

enum ToolTurn {
    Continue,
    Finished,
    Cancelled,
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Session {
    async fn run_turns(&mut self, rt: &Runtime, hooks: &dyn SessionHooks, slot: &mut Slot) -> SessionEnd {
        if let Some(answer) = self.finished_answer() {
            return SessionEnd::Answered(answer);
        }
        if self.resumed {
            if let Some(Err(e)) = self.await_tools().await {
                return SessionEnd::ModelFailed(e);
            }
        }
        if std::mem::take(&mut self.resumed) && self.repair_lost_results(rt, hooks, slot).await {
            return SessionEnd::Finished;
        }
        // A resumed session's first run continues the interrupted one: only what that left.
        let carried = std::mem::take(&mut self.carried_turns);
        let mut budget_for_run = self.settings.max_turns.saturating_sub(carried);
        let mut corrections = 0;
        let mut last_bad_reply: Option<String> = None;
        let mut watch = RepeatWatch::default();
        // How often this run's hooks sent an answer back (`SessionHooks::recheck_answer`).
        let mut rechecks = 0;
        // A resumed run that already made calls has looked; a fresh one (or feedback) has not.
        let mut called = carried > 0;
        loop {
            if rt.cancel.is_cancelled() {
                return SessionEnd::Cancelled;
            }
            if budget_for_run == 0 {
                return SessionEnd::TurnLimit;
            }
            if rt.budget_spent() || self.role_budget_spent(rt) {
                return SessionEnd::BudgetSpent;
            }
            budget_for_run -= 1;
            self.take_mail(rt);
            // A model that repeats itself at temperature 0 would repeat itself forever: each turn in
            // a row that repeated a call or a bad reply samples a little hotter.
            let stuck = watch.repeats + u32::from(last_bad_reply.is_some() && corrections > 0);
            let reply = match self.call_model(rt, stuck, called).await {
                Ok(reply) => reply,
                Err(ModelError::Cancelled) => return SessionEnd::Cancelled,
                Err(e) if e.is_transient() || matches!(e, ModelError::GaveUp { .. }) => {
                    return SessionEnd::EndpointFailed(e.to_string())
                }
                Err(e) => return SessionEnd::ModelFailed(e.to_string()),
            };
            // The calls run with their arguments in full; the history keeps big ones short, so a
            // 50 MB `write` is not resent with every later turn (nor stored in the transcript).
            self.push(Message::Assistant {
                content: reply.content.clone(),
                tool_calls: reply
                    .tool_calls
                    .iter()
                    .map(|c| match self.extra.contains(&c.name) {
                        // Plans, reviews and spawns are delivered again from the history on resume.
                        true => c.clone(),
                        false => slim_for_history(c),
                    })
                    .collect(),
            });
            if reply.tool_calls.is_empty() {
                let correction = match self.correction_for(&reply) {
                    Some(correction) => correction,
                    None if rechecks >= MAX_RECHECKS => return SessionEnd::Answered(reply.content),
                    None => {
                        rechecks += 1;
                        match hooks.recheck_answer(&reply.content).await {
                            Some(correction) => correction,
                            None => return SessionEnd::Answered(reply.content),
                        }
                    }
                };
                // A reply that breaks the protocol gets a precise correction, a bounded number of times.
                corrections += 1;
                if corrections > MAX_CORRECTIONS {
                    return SessionEnd::ModelFailed(format!(
                        "the model broke the protocol {MAX_CORRECTIONS} times in a row: {correction}"
                    ));
                }
                // The same bad reply again: repeating the same words would get the same reply, so
                // the correction now shows the exact shape of the expected call.
                let repeated = last_bad_reply.as_deref() == Some(reply.content.trim());
                last_bad_reply = Some(reply.content.trim().to_string());
                let correction = match (repeated, self.expected_call_shape()) {
                    (true, Some(shape)) => format!(
                        "{correction}\nYou sent the same reply as before. Make a tool call (not text) \
                         exactly of this shape, with your own values:\n{shape}"
                    ),
                    _ => correction,
                };
                self.push_user(correction);
                continue;
            }
            corrections = 0;
            called = true;
            if watch.repeats(&reply.tool_calls, self.toolbox.files_seen()) {
                // Under a JSON-schema grammar the shape is held already; showing it (with its
                // example values) only gives a small model something to copy.
                let show_shape = reply.constraint != Some(orchestrator_model::Constraint::JsonSchema);
                let refusal = match self
                    .judge_repeated_finish(rt, hooks, slot, &reply.tool_calls)
                    .await
                {
                    Rejudged::Ended(end) => return end,
                    Rejudged::Refused(refusal) => Some(refusal),
                    Rejudged::NotAsked => None,
                };
                if let Some(end) = self.answer_repeat(rt, &reply.tool_calls, &mut watch, show_shape, refusal)
                {
                    return end;
                }
                continue;
            }
            if let Some(Err(e)) = self.await_tools().await {
                return SessionEnd::ModelFailed(e);
            }
            match self.run_tool_calls(rt, hooks, slot, &reply.tool_calls).await {
                ToolTurn::Continue => {}
                ToolTurn::Finished => return SessionEnd::Finished,
                ToolTurn::Cancelled => return SessionEnd::Cancelled,
            }
            if self.may_have_changed_files(&reply.tool_calls) {
                watch.changed();
            }
        }
    }

    /// Whether one of `calls` (already run) may have changed the worktree: a `write` or `edit` that
    /// took, or a `bash` command that ran (whatever its exit code). Orchestration tools (`spawn`
    /// merges children) count too. Sessions that cannot write change nothing.
    fn may_have_changed_files(&self, calls: &[ToolCall]) -> bool {
        if !self.can_write() {
            return false;
        }
        calls.iter().any(|call| {
            let took =
                self.messages.iter().rev().any(
                    |m| matches!(m, Message::Tool { call_id, is_error: false, .. } if *call_id == call.id),
                );
            match call.name.as_str() {
                "read" | "list" | "glob" | "grep" => false,
                "write" | "edit" | "insert" | "bash" => took,
                _ => true,
            }
        })
    }

    /// The refused finishing call in `calls` sent again unchanged, if there is one.
    fn repeated_refused_finish<'c>(&self, calls: &'c [ToolCall]) -> Option<(&'c ToolCall, String)> {
        let tool = self.finish_tool?;
        let call = calls.iter().find(|c| c.name == tool)?;
        match self.earlier_result(call)? {
            (refusal, true) => Some((call, refusal)),
            (_, false) => None,
        }
    }

    /// Hands a refused finishing call sent again unchanged to a hook that judges repeats (see
    /// [`SessionHooks::judges_repeats`]). Accepted, the session ends like any accepted call: its
    /// result is recorded, and the turn's other calls (repeats themselves) are not run.
    async fn judge_repeated_finish(
        &mut self,
        rt: &Runtime,
        hooks: &dyn SessionHooks,
        slot: &mut Slot,
        calls: &[ToolCall],
    ) -> Rejudged {
        if !hooks.judges_repeats() {
            return Rejudged::NotAsked;
        }
        let Some((call, _)) = self.repeated_refused_finish(calls) else {
            return Rejudged::NotAsked;
        };
        let call = call.clone();
        let (output, ends) = self.run_tool_call(rt, hooks, slot, &call).await;
        if rt.cancel.is_cancelled() {
            return Rejudged::Ended(SessionEnd::Cancelled);
        }
        if !ends {
            return Rejudged::Refused(output.content);
        }
        for other in calls {
            let (content, is_error) = match other.id == call.id {
                true => (output.content.clone(), output.is_error),
                false => ("Not run: the session already ended.".to_string(), true),
            };
            self.push(Message::Tool {
                call_id: other.id.clone(),
                content,
                is_error,
            });
        }
        Rejudged::Ended(SessionEnd::Finished)
    }

    /// A refused finishing call (a plan or review the engine turned down) sent again unchanged: a
    /// small model copies what its history shows, so every turn that made that call leaves the
    /// conversation, and one message says what was wrong (`refusal`: what the hook said of the copy,
    /// if it judged it again; else the earlier refusal). The keys of the calls taken out, when it did.
    fn rewind_refused_finish(&mut self, calls: &[ToolCall], refusal: Option<String>) -> Option<Vec<String>> {
        let tool = self.finish_tool?;
        let (_, earlier) = self.repeated_refused_finish(calls)?;
        let refusal = refusal.unwrap_or(earlier);
        let keys: Vec<String> = calls.iter().map(call_key).collect();
        let mut dropped: std::collections::HashSet<String> = Default::default();
        let mut dropped_keys: Vec<String> = Vec::new();
        for message in &self.messages {
            if let Message::Assistant { tool_calls, .. } = message {
                if tool_calls.iter().any(|c| keys.contains(&call_key(c))) {
                    dropped.extend(tool_calls.iter().map(|c| c.id.clone()));
                    dropped_keys.extend(tool_calls.iter().map(call_key));
                }
            }
        }
        let kept: Vec<Message> = self
            .messages
            .iter()
            .filter(|m| match m {
                Message::Assistant { tool_calls, .. } => !tool_calls.iter().any(|c| dropped.contains(&c.id)),
                Message::Tool { call_id, .. } => !dropped.contains(call_id),
                Message::User { .. } => true,
            })
            .cloned()
            .collect();
        self.replace_messages(kept);
        self.push_user(format!(
            "Your `{tool}` call was refused, and you sent it again unchanged:\n{}\nIt has been taken out of \
             this conversation. Call `{tool}` again with new arguments that fix these problems.",
            crate::prompts::cut(&refusal, 600)
        ));
        Some(dropped_keys)
    }

    /// The result (and whether it was an error) of the latest earlier run of a call identical to `call`.
    fn earlier_result(&self, call: &ToolCall) -> Option<(String, bool)> {
        let key = call_key(call);
        let result_of = |id: &str| {
            self.messages.iter().find_map(|m| match m {
                Message::Tool {
                    call_id,
                    content,
                    is_error,
                } if call_id == id => Some((content.clone(), *is_error)),
                _ => None,
            })
        };
        // The latest time the call really ran: what the files say may have changed since the first
        // (a write refused as blind, later refused as changing nothing), and a repeat's own note
        // quotes nothing new.
        self.messages
            .iter()
            .rev()
            .filter_map(|m| match m {
                Message::Assistant { tool_calls, .. } => Some(tool_calls),
                _ => None,
            })
            .flatten()
            .filter(|c| c.id != call.id && call_key(c) == key)
            .filter_map(|c| result_of(&c.id))
            .find(|(content, _)| !content.starts_with(NOT_RUN_AGAIN))
    }

    /// Whether the conversation shows a call that may have changed the worktree (a write, edit,
    /// insert or command that ran), in this run or an earlier one (an attempt before feedback).
    fn has_written(&self) -> bool {
        self.messages.iter().any(|m| match m {
            Message::Assistant { tool_calls, .. } => tool_calls.iter().any(|c| {
                matches!(c.name.as_str(), "write" | "edit" | "insert" | "bash")
                    && self.messages.iter().any(
                        |r| matches!(r, Message::Tool { call_id, is_error: false, .. } if *call_id == c.id),
                    )
            }),
            // A compacted conversation no longer shows what was done: assume something was.
            Message::User { content } => content.starts_with(crate::compact::SUMMARY_PREFIX),
            _ => false,
        })
    }

    fn can_write(&self) -> bool {
        self.tools
            .iter()
            .any(|t| orchestrator_tools::WRITING_TOOLS.contains(&t.name.as_str()))
    }

    /// Answers a turn that only repeated calls without running them: their results are already in
    /// the conversation, and running them again would only get the same reply again. Past
    /// [`MAX_REPEATS`] a submitting session keeps only its finishing tool; any other ends.
    fn answer_repeat(
        &mut self,
        rt: &Runtime,
        calls: &[ToolCall],
        watch: &mut RepeatWatch,
        show_shape: bool,
        refusal: Option<String>,
    ) -> Option<SessionEnd> {
        let repeats = watch.repeats;
        let narrow = repeats >= MAX_REPEATS && self.finish_tool.is_some();
        if repeats > MAX_REPEATS && !narrow {
            let call = calls.first().map_or("", |c| c.name.as_str());
            return Some(SessionEnd::ModelFailed(format!(
                "the model went round in circles: it repeated the same `{call}` call {} times without \
                 using its result",
                repeats + 1
            )));
        }
        if narrow {
            let finish = self.finish_tool;
            self.tools.retain(|t| Some(t.name.as_str()) == finish);
        }
        if let Some(taken_out) = self.rewind_refused_finish(calls, refusal) {
            watch.forget(&taken_out);
            return None;
        }
        let shape = match self.expected_call_shape() {
            Some(shape) if show_shape => format!(", of this shape: {shape}"),
            _ => String::new(),
        };
        let next = match self.finish_tool {
            Some(tool) if narrow => format!(
                "You have repeated it {repeats} times, so `{tool}` is now the only tool: call it with \
                 your own answer for this task{shape}"
            ),
            Some(tool) => format!("When you know enough, call `{tool}` now{shape}"),
            // A worker that has changed nothing yet and answers now ends its attempt with nothing
            // done (the field's 1.5B read the same files until told this, then stopped).
            None if self.can_write() && watch.version == 0 && !self.has_written() => {
                let tools: Vec<&str> = self
                    .tools
                    .iter()
                    .map(|t| t.name.as_str())
                    .filter(|name| orchestrator_tools::WRITING_TOOLS.contains(name))
                    .collect();
                format!(
                    "You have changed no file yet: make the change your task asks for now (with {}). \
                     Answering now would end your attempt with nothing done.",
                    tools
                        .iter()
                        .map(|t| format!("`{t}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            None => "Take the next step: change something, run something else, or answer with a short \
                  summary when the work is done."
                .to_string(),
        };
        for call in calls {
            self.emit_tool(rt, &call.name, "repeated call, not run".into(), false, 0);
            // A refused call sent again gets its refusal quoted, not the shape again: a model that
            // copied the shape's example into a refused call would only copy it once more.
            let content = match self.earlier_result(call) {
                Some((refusal, true)) => format!(
                    "{NOT_RUN_AGAIN} and it was refused:\n{}\nSending it again gets the same answer: \
                     change what it says.",
                    crate::prompts::cut(&refusal, 600)
                ),
                _ => format!("{NOT_RUN_AGAIN}, and its result is above; it has not changed. {next}"),
            };
            self.push(Message::Tool {
                call_id: call.id.clone(),
                content,
                is_error: true,
            });
        }
        None
    }

    async fn await_tools(&mut self) -> Option<Result<(), String>> {
        Some(self.tools_ready.take()?.await)
    }

    /// What to tell the model when its reply without tool calls is not an acceptable end of the session.
    fn correction_for(&self, reply: &orchestrator_model::ChatResponse) -> Option<String> {
        if let StopReason::Looped(found) = &reply.stop {
            return Some(loop_correction(found));
        }
        if reply.stop == StopReason::MaxTokens {
            return Some(
                "Your reply was cut off at the output token limit. Continue in smaller steps: one tool call at a time, \
                 shorter files per write."
                    .into(),
            );
        }
        if let Some(tool) = self.finish_tool {
            return Some(format!(
                "You answered without calling a tool. Your session must end with a call to `{tool}`; call it now."
            ));
        }
        if reply.content.trim().is_empty() {
            return Some(
                "Your reply was empty. Continue the task with a tool call, or answer with a short summary when done."
                    .into(),
            );
        }
        // A reply that is a call to a tool that does not exist is a wrong call, never the session's
        // answer. Only a reply that is a call: prose that quotes some JSON stays an answer.
        let text = reply.content.trim_start();
        let call_shaped = ["{", "[", "```", "<function", "<tool_call"]
            .iter()
            .any(|start| text.starts_with(start));
        if !call_shaped {
            return None;
        }
        let offered: Vec<&str> = self.tools.iter().map(|t| t.name.as_str()).collect();
        let unknown = orchestrator_model::unknown_tool_names_in_text(&reply.content, &offered);
        if let Some(name) = unknown.first() {
            return Some(format!(
                "There is no tool `{}`. The tools you can call are: {}. Call one of them, or answer with a \
                 short summary (plain text, no tool-call JSON) when the work is done.",
                crate::prompts::cut(name, 80),
                offered.join(", ")
            ));
        }
        None
    }

    pub(crate) fn role_budget_spent(&self, rt: &Runtime) -> bool {
        self.settings.budget_tokens.is_some_and(|limit| {
            rt.bus
                .usage_by_role()
                .get(&self.role)
                .map(|u| u.total())
                .unwrap_or(0)
                >= limit
        })
    }

    /// One model call. `stuck`: turns in a row the model repeated itself; each raises the
    /// temperature by [`REPEAT_HEAT`] (up to 1.0) over the configured one.
    /// `called`: whether the session already called a tool in this run.
    async fn call_model(
        &mut self,
        rt: &Runtime,
        stuck: u32,
        called: bool,
    ) -> Result<orchestrator_model::ChatResponse, ModelError> {
        let system = self.system_prompt(rt);
        self.compact_if_needed(rt, &system).await?;
        let request = ChatRequest {
            model: self.settings.model.clone(),
            system,
            messages: self.messages.clone(),
            tools: self.tools.clone(),
            // Every session of a role in this mission shares its prefix (tools, system prompt, the
            // mission's objective and context): one cache key routes them to one cache.
            cache_key: Some(format!("{}:{}", rt.mission, self.role)),
            shared_head: self.shared_head,
            max_tokens: self.settings.max_tokens,
            temperature: match stuck {
                0 => self.settings.temperature,
                n => Some((self.settings.temperature.unwrap_or(0.0) + REPEAT_HEAT * n as f32).min(1.0)),
            },
            // A session that must end with a submit call may answer only with tool calls: where the
            // endpoint supports it, a small model cannot drift into prose instead.
            // So may a session that can write and has not yet called anything in this run: a
            // worker's first reply is a look or a change, never "the unit is complete" (a 1.5B
            // model answered so, twice, with an untouched tree).
            tool_choice: if self.finish_tool.is_some() {
                orchestrator_model::ToolChoice::Required
            } else if self.can_write() && !called {
                orchestrator_model::ToolChoice::RequiredNow
            } else {
                orchestrator_model::ToolChoice::Auto
            },
        };
        let started = Instant::now();
        let mut reply = rt.client.chat(&request, &rt.cancel).await?;
        self.turns += 1;
        self.usage.add(reply.usage);
        self.emit_call(rt, &request.model, &reply, started);
        // A reply cut off in a loop has estimated usage (the server's count never came), and
        // whatever calls its text began are not taken: the model is told none of it ran.
        if matches!(reply.stop, StopReason::Looped(_)) {
            return Ok(reply);
        }
        self.estimator
            .observe(self.messages.len(), reply.usage.prompt_tokens());
        if reply.tool_calls.is_empty() {
            reply.tool_calls = self.calls_in_text(&reply.content);
        }
        if reply.tool_calls.is_empty() {
            reply.tool_calls = self.bare_finish_call(&reply.content).into_iter().collect();
        }
        Ok(reply)
    }

    fn emit_call(&self, rt: &Runtime, model: &str, reply: &ChatResponse, started: Instant) {
        rt.record_spend(reply.usage);
        rt.bus.emit(Event::ModelCall {
            session: self.id.clone(),
            role: self.role,
            model: model.to_string(),
            usage: reply.usage,
            cost_usd: rt.prices.cost(model, reply.usage),
            duration_ms: started.elapsed().as_millis() as u64,
            constraint: reply.constraint,
        });
    }

    /// The call the session must end with, as a skeleton of its arguments: `submit_plan {"tasks":
    /// [{"title": "…", …}]}`. `None` for sessions that may end with text.
    fn expected_call_shape(&self) -> Option<String> {
        let (name, schema) = self.finish_schema()?;
        let example = match name {
            "submit_plan" => crate::plan::example_plan(),
            _ => skeleton(schema),
        };
        Some(format!("{name} {example}"))
    }

    /// The tool the session must end with, and the JSON schema of its arguments.
    fn finish_schema(&self) -> Option<(&'static str, &serde_json::Value)> {
        let name = self.finish_tool?;
        let spec = self.tools.iter().find(|t| t.name == name)?;
        Some((name, &spec.parameters))
    }

    /// A session that must end with one submit tool, answered with that tool's arguments alone (a
    /// small planner wrote `{"tasks": [...]}` and nothing else): an object with every required key
    /// of the tool's schema and no key it lacks can only be that call, so it is taken as it.
    fn bare_finish_call(&self, text: &str) -> Option<ToolCall> {
        let (name, schema) = self.finish_schema()?;
        let properties = schema.get("properties")?.as_object()?;
        let required: Vec<&str> = schema
            .get("required")?
            .as_array()?
            .iter()
            .filter_map(|r| r.as_str())
            .collect();
        if required.is_empty() {
            return None;
        }
        let fits = |object: &serde_json::Map<String, serde_json::Value>| {
            required.iter().all(|key| object.contains_key(*key))
                && object.keys().all(|key| properties.contains_key(key))
        };
        orchestrator_model::json_objects_in_text(text)
            .into_iter()
            .find(|value| value.as_object().is_some_and(fits))
            .map(|value| ToolCall {
                id: format!("t{}-bare", self.turns),
                name: name.to_string(),
                arguments: value.to_string(),
            })
    }

    /// Small local models often write a tool call as JSON in their text; take it as a call when it
    /// names an offered tool. Ids get the turn number so they stay unique in the conversation.
    fn calls_in_text(&self, text: &str) -> Vec<ToolCall> {
        let offered: Vec<&str> = self.tools.iter().map(|t| t.name.as_str()).collect();
        let mut calls = orchestrator_model::tool_calls_from_text(text, &offered);
        for call in &mut calls {
            call.id = format!("t{}-{}", self.turns, call.id);
        }
        calls
    }

    /// Before a call that would pass the compaction threshold, older turns are summarised (by the
    /// configured cheaper model) and replaced; the task and the recent turns stay verbatim.
    async fn compact_if_needed(&mut self, rt: &Runtime, system: &str) -> Result<(), ModelError> {
        let before = self.estimator.estimate(&self.messages, system, &self.tools);
        let window = self.settings.context_window as f64;
        if (before as f64) < window * self.settings.compact_at || before < self.compact_floor {
            return Ok(());
        }
        let keep = (window * rt.compaction.keep_recent) as u64;
        let Some(plan) = plan_compaction(&self.messages, keep) else {
            return Ok(());
        };
        let request = ChatRequest {
            model: rt
                .compaction
                .model
                .clone()
                .unwrap_or_else(|| self.settings.model.clone()),
            system: SUMMARY_SYSTEM_PROMPT.to_string(),
            messages: summary_request(&plan, &self.messages),
            tools: Vec::new(),
            cache_key: Some(format!("{}:compaction", rt.mission)),
            shared_head: 0,
            max_tokens: self.settings.max_tokens.min(4096),
            temperature: None,
            tool_choice: Default::default(),
        };
        let started = Instant::now();
        let reply = rt.client.chat(&request, &rt.cancel).await?;
        self.usage.add(reply.usage);
        self.emit_call(rt, &request.model, &reply, started);
        // Both sides of the event are measured the same way (the calibrated estimate is not
        // comparable with a fresh one).
        let before = ContextEstimator::new().estimate(&self.messages, system, &self.tools);
        let compacted = apply_compaction(&self.messages, &plan, &reply.content);
        self.replace_messages(compacted);
        self.estimator.reset();
        let after = self.estimator.estimate(&self.messages, system, &self.tools);
        self.compact_floor = after + keep / 2;
        rt.bus.emit(Event::Compacted {
            session: self.id.clone(),
            before_tokens: before,
            after_tokens: after,
        });
        Ok(())
    }

    /// Swaps the whole conversation (after compaction), in the store as one transaction.
    fn replace_messages(&mut self, messages: Vec<Message>) {
        if let Some(t) = &self.transcript {
            let values: Vec<serde_json::Value> = messages
                .iter()
                .filter_map(|m| serde_json::to_value(m).ok())
                .collect();
            t.replace(&values);
        }
        self.messages = messages;
    }

    /// Output too long for the context is cut, and kept whole in a file the model can `read`
    /// (under `.orchestrator/`, which git ignores in every worktree).
    fn fit_output(&self, rt: &Runtime, call: &ToolCall, output: ToolOutput) -> ToolOutput {
        // A tool's output goes back to the model: never with the API key in it (an agent that found
        // it somewhere would hand it to the model, and from there to commits and logs).
        let output = match &rt.store {
            Some(store) if store.contains_secret(&output.content) => ToolOutput {
                content: store.mask(&output.content),
                is_error: output.is_error,
            },
            _ => output,
        };
        let limit = rt.compaction.tool_output_chars;
        if output.content.chars().count() <= limit {
            return output;
        }
        let relative = format!(".orchestrator/outputs/{}-{}.txt", self.id, sanitize(&call.id));
        let path = self.toolbox.root().join(&relative);
        let saved = path
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .and_then(|_| std::fs::write(&path, &output.content));
        let kept_at = saved.is_ok().then_some(relative.as_str());
        ToolOutput {
            content: truncate_for_context(&output.content, limit, kept_at),
            is_error: output.is_error,
        }
    }

    /// Runs one turn's tool calls in order. A result that arrives after a cancel is not recorded: the
    /// call counts as lost, and a resumed session repeats it (or reports it interrupted).
    async fn run_tool_calls(
        &mut self,
        rt: &Runtime,
        hooks: &dyn SessionHooks,
        slot: &mut Slot,
        calls: &[ToolCall],
    ) -> ToolTurn {
        let mut finished = false;
        let mut wrote = false;
        for (n, call) in calls.iter().enumerate() {
            // Once a finishing call is accepted, later calls in the same turn are not run.
            let (output, ends) = if finished {
                (error_output("Not run: the session already ended.".into()), false)
            } else {
                self.run_tool_call(rt, hooks, slot, call).await
            };
            if rt.cancel.is_cancelled() {
                return ToolTurn::Cancelled;
            }
            finished |= ends;
            wrote |= !output.is_error && orchestrator_tools::WRITING_TOOLS.contains(&call.name.as_str());
            let mut output = self.fit_output(rt, call, output);
            if wrote && !finished && n + 1 == calls.len() {
                if let Some(checked) = self.check_after_write(rt, hooks).await {
                    output.content.push_str(&checked);
                }
                if rt.cancel.is_cancelled() {
                    return ToolTurn::Cancelled;
                }
            }
            self.push(Message::Tool {
                call_id: call.id.clone(),
                content: output.content,
                is_error: output.is_error,
            });
        }
        if finished {
            ToolTurn::Finished
        } else {
            ToolTurn::Continue
        }
    }

    /// The tests run by the runtime after a turn that changed a file (`[verify] after_write`), as a
    /// note for the end of that turn's last result: a small model sees what its change broke while
    /// it still works on it, instead of after it answered (a best-of-N candidate gets one answer).
    async fn check_after_write(&self, rt: &Runtime, hooks: &dyn SessionHooks) -> Option<String> {
        let command = self.after_write.as_deref()?;
        let started = Instant::now();
        let output = self
            .toolbox
            .run_command(command, AFTER_WRITE_CHARS, &rt.cancel)
            .await;
        // Paths as the model knows them: `File "test_calc.py"`, not the worktree's absolute path.
        let root = format!("{}/", self.toolbox.root().display());
        let content = output.content.replace(&root, "");
        let (head, body) = content.split_once('\n').unwrap_or((&content, ""));
        let passed = !output.is_error && head == "exit code: 0";
        self.emit_tool(
            rt,
            "tests after write",
            command.to_string(),
            passed,
            started.elapsed().as_millis() as u64,
        );
        let explained = hooks.explain_tests(body, passed).await;
        let hints: String = [
            explained.clone(),
            (!passed)
                .then(|| crate::hints::where_defined(body, self.toolbox.root()))
                .flatten(),
        ]
        .into_iter()
        .flatten()
        .map(|hint| format!("{hint}\n"))
        .collect();
        let next = match (passed, explained.is_some()) {
            (true, false) => "They pass. If your task is done, answer with a short summary.",
            (true, true) => "Fix that, then answer.",
            (false, _) => "Fix what fails, then answer.",
        };
        Some(format!(
            "\n\n[The runtime ran the tests after this change: `{command}` → {head}]\n{}\n{hints}{next}",
            body.trim_end()
        ))
    }

    /// After a restart, the last turn's tool calls may have no results. Calls that are safe to repeat
    /// run again (a finishing call re-delivers its plan or review); `bash` and `edit` are reported as
    /// interrupted instead, since running them twice could do harm. True when a finishing call ended
    /// the session.
    async fn repair_lost_results(&mut self, rt: &Runtime, hooks: &dyn SessionHooks, slot: &mut Slot) -> bool {
        let Some(last_turn) = self
            .messages
            .iter()
            .rposition(|m| matches!(m, Message::Assistant { .. }))
        else {
            return false;
        };
        let Message::Assistant { tool_calls, .. } = &self.messages[last_turn] else {
            return false;
        };
        let calls = tool_calls.clone();
        let answered: Vec<(String, bool)> = self.messages[last_turn..]
            .iter()
            .filter_map(|m| match m {
                Message::Tool {
                    call_id, is_error, ..
                } => Some((call_id.clone(), *is_error)),
                _ => None,
            })
            .collect();
        let mut finished = false;
        for call in calls {
            let answered_ok = answered
                .iter()
                .find(|(id, _)| *id == call.id)
                .map(|(_, err)| !err);
            let is_finish = self.finish_tool == Some(call.name.as_str());
            match answered_ok {
                // An accepted plan or review whose effect was lost with the process: deliver it again.
                Some(true) if is_finish => {
                    let (_, ends) = self.run_tool_call(rt, hooks, slot, &call).await;
                    finished |= ends;
                }
                Some(_) => {}
                // Repeated only with its arguments whole: a slimmed history entry is not the call.
                None if REPEATABLE.contains(&call.name.as_str()) && !was_slimmed(&call) => {
                    let (output, ends) = self.run_tool_call(rt, hooks, slot, &call).await;
                    finished |= ends;
                    let output = self.fit_output(rt, &call, output);
                    self.push(Message::Tool {
                        call_id: call.id.clone(),
                        content: output.content,
                        is_error: output.is_error,
                    });
                }
                None => {
                    let note = format!(
                        "Interrupted: the orchestrator stopped while `{}` was running, and its result was lost. It may or \
                         may not have taken effect; check before repeating it.",
                        call.name
                    );
                    self.push(Message::Tool {
                        call_id: call.id.clone(),
                        content: note,
                        is_error: true,
                    });
                }
            }
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
        if call.arguments.len() > MAX_TOOL_ARGUMENT_BYTES {
            self.emit_tool(rt, &call.name, "arguments over the size limit".into(), false, 0);
            return (error_output(oversized_arguments(call)), false);
        }
        let arguments = match parse_arguments(&call.name, &call.arguments) {
            Ok(arguments) => arguments,
            Err(message) => {
                self.emit_tool(rt, &call.name, "invalid arguments".into(), false, 0);
                return (error_output(message), false);
            }
        };
        let summary = summarize_call(&call.name, &arguments);
        let started = Instant::now();
        let (output, ends) = if self.extra.contains(&call.name) {
            match hooks.call(&call.name, arguments, slot).await {
                HookResult::Continue(output) => (output, false),
                HookResult::Finish(output) => (output, true),
            }
        } else if self.toolbox.provides(&call.name) {
            (self.toolbox.call(&call.name, &arguments, &rt.cancel).await, false)
        } else if self.mcp_tools.contains(&call.name) {
            (rt.mcp.call(&call.name, &arguments, &rt.cancel).await, false)
        } else {
            let offered: Vec<String> = self.tools.iter().map(|t| t.name.clone()).collect();
            (error_output(hooks.not_offered(&call.name, &offered)), false)
        };
        let duration_ms = started.elapsed().as_millis() as u64;
        self.emit_tool(rt, &call.name, summary, !output.is_error, duration_ms);
        (output, ends)
    }

    fn emit_tool(&self, rt: &Runtime, tool: &str, summary: String, ok: bool, duration_ms: u64) {
        rt.bus.emit(Event::ToolCalled {
            session: self.id.clone(),
            tool: tool.to_string(),
            summary,
            ok,
            duration_ms,
        });
    }
}

/// Tool arguments must be a JSON object; anything else is explained to the model, which tries again.
fn parse_arguments(tool: &str, raw: &str) -> Result<serde_json::Value, String> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(super::without_nulls(value)),
        Ok(_) => Err(format!(
            "The arguments of `{tool}` must be a JSON object matching the tool's schema. Call it again."
        )),
        Err(e) => Err(format!(
            "The arguments of `{tool}` are not valid JSON ({e}). Call the tool again with a JSON object matching its schema."
        )),
    }
}

/// What a model whose reply fell into a loop is told. Its reply was cut off and none of it was run;
/// the piece it repeated is quoted (short and visible), so it can see what went wrong.
fn loop_correction(found: &orchestrator_model::Loop) -> String {
    // Quoted as a string literal, so blank space and line breaks show; a long piece by its start.
    let piece = match found.piece.char_indices().nth(60) {
        Some((end, _)) => format!("{:?}…", &found.piece[..end]),
        None => format!("{:?}", found.piece),
    };
    format!(
        "Your reply fell into a loop: it repeated {piece} {} times in a row, so it was cut off there \
         and nothing in it was run. Start again with one short step: a single tool call with short \
         arguments. Text that really is that repetitive is better made by a command than typed out.",
        found.repeats
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, arguments: String) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments,
        }
    }

    #[test]
    fn a_refused_write_or_insert_sent_again_after_the_session_saw_a_file_is_not_a_repeat() {
        let mut watch = RepeatWatch::default();
        for tool in ["insert", "write"] {
            let again = [call(tool, format!(r#"{{"path": "src/{tool}.py"}}"#))];
            assert!(!watch.repeats(&again, 1));
            assert!(watch.repeats(&again, 1), "the same call, nothing learned since");
            assert!(
                !watch.repeats(&again, 2),
                "refused once, then a file was seen: runs again"
            );
        }
        let read = [call("read", r#"{"path": "a"}"#.into())];
        assert!(!watch.repeats(&read, 2));
        assert!(
            watch.repeats(&read, 3),
            "a read's identity does not count seen files"
        );
    }

    #[test]
    fn the_history_keeps_big_arguments_short_and_small_ones_whole() {
        let small = call(
            "write",
            serde_json::json!({"path": "a", "content": "hi"}).to_string(),
        );
        assert_eq!(slim_for_history(&small), small);
        assert!(!was_slimmed(&small));

        let content = "y".repeat(50_000);
        let big = call(
            "write",
            serde_json::json!({"path": "b.txt", "content": content}).to_string(),
        );
        let slim = slim_for_history(&big);
        let value: serde_json::Value = serde_json::from_str(&slim.arguments).unwrap();
        assert_eq!(value["path"], "b.txt", "short values stay");
        let note = value["content"].as_str().unwrap();
        assert!(
            note.starts_with(OMITTED) && note.contains("50000 characters"),
            "{note}"
        );
        assert!(slim.arguments.len() < 1_000);
        assert!(was_slimmed(&slim), "a slimmed call is never repeated on resume");

        let garbage = call("bash", format!("{{\"command\": \"{}", "z".repeat(20_000)));
        let slim = slim_for_history(&garbage);
        assert!(
            slim.arguments.len() < 200 && was_slimmed(&slim),
            "{}",
            slim.arguments
        );
    }

    #[test]
    fn a_resumed_session_counts_the_turns_it_already_took() {
        use crate::session::turns_taken;
        use orchestrator_protocol::Role;
        let turn = |text: &str| Message::Assistant {
            content: text.into(),
            tool_calls: Vec::new(),
        };
        let tool = |id: &str| Message::Tool {
            call_id: id.into(),
            content: "ok".into(),
            is_error: false,
        };
        let scout = vec![
            Message::user("look"),
            turn("1"),
            tool("a"),
            Message::user("a correction"),
            turn("2"),
            tool("b"),
            turn("3"),
        ];
        assert_eq!(turns_taken(Role::Scout, &scout), 3);
        assert_eq!(turns_taken(Role::Planner, &[]), 0);
        // A worker sent back with review feedback starts a new run at that message.
        let worker = vec![
            Message::user("brief"),
            turn("1"),
            turn("2"),
            Message::user("review feedback"),
            turn("3"),
        ];
        assert_eq!(turns_taken(Role::Worker, &worker), 1);
        // A person's message in the middle of a run does not give the worker a fresh allowance.
        let told = vec![
            Message::user("brief"),
            turn("1"),
            Message::user(crate::inbox::worker_text("use tabs")),
            turn("2"),
        ];
        assert_eq!(turns_taken(Role::Worker, &told), 2);
    }

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
