//! One agent session: the conversation, tools and budget of a single role, and the seam where the
//! loop of turns plugs in.
//!
//! A [`TurnRunner`] runs the turns: the native loop ([`native`]) calls the model and runs the built-in
//! tools itself; `--provider opencode` hands the turns to an OpenCode server (opencode.rs).
//! Either way, orchestration tools (`spawn`, `submit_plan`, `submit_review`) go to the caller's
//! [`SessionHooks`], which is how planners, reviewers and spawning workers talk back to the engine.

mod native;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use orchestrator_model::{Message, ModelClient, ToolSpec};
use orchestrator_protocol::{Event, Role, TokenUsage};
use orchestrator_store::Store;
use orchestrator_tools::{ToolOutput, Toolbox};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::compact::ContextEstimator;
use crate::config::{CompactionSettings, RoleSettings};
use crate::events::EventBus;
use crate::pricing::PriceTable;

/// What every session of a mission shares.
pub struct Runtime {
    pub client: Arc<dyn ModelClient>,
    pub bus: EventBus,
    pub cancel: CancellationToken,
    /// The global cap on sessions in flight, across roles and depths.
    pub slots: Arc<Semaphore>,
    pub budget_tokens: Option<u64>,
    /// Where transcripts are kept, so an interrupted session continues from its last message.
    pub store: Option<Arc<Store>>,
    pub mission: String,
    pub prices: PriceTable,
    pub compaction: CompactionSettings,
    /// Who runs every session's turns: the native loop unless the mission runs on OpenCode.
    pub runner: Arc<dyn TurnRunner>,
    /// Pauses the dispatch of new units at a front end's request.
    pub control: crate::control::MissionControl,
    /// Every session's system prompt: its role's, then the project instructions.
    pub prompts: crate::prompts::Prompts,
    /// The user's MCP servers, whose tools go to the roles that list them (none until started).
    pub mcp: Arc<crate::mcp_servers::McpServers>,
    session_seq: AtomicU64,
    /// Put before every session id: an external worker's sessions, whose events go into a log the
    /// commander's sessions are numbered in too, must not take their ids.
    session_prefix: String,
    /// An external worker's lease on its unit: transcripts are written only while it holds it.
    transcript_fence: Option<orchestrator_store::Fence>,
    /// The mission's spend on every host, when its units run on several (the budget is checked
    /// against it).
    shared_spend: Option<Arc<crate::across_hosts::SharedSpend>>,
}

impl Runtime {
    /// `text` with the API key masked, for what leaves the runtime outside the event stream (commit
    /// messages); the events themselves are masked by the bus.
    pub fn mask(&self, text: &str) -> String {
        match &self.store {
            Some(store) => store.mask(text),
            None => text.to_string(),
        }
    }

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
            store: None,
            mission: String::new(),
            prices: PriceTable::new(),
            compaction: CompactionSettings {
                model: None,
                keep_recent: 0.3,
                tool_output_chars: 20_000,
            },
            runner: Arc::new(native::NativeLoop),
            control: crate::control::MissionControl::default(),
            prompts: crate::prompts::Prompts::default(),
            mcp: Arc::default(),
            session_seq: AtomicU64::new(1),
            session_prefix: String::new(),
            transcript_fence: None,
            shared_spend: None,
        }
    }

    /// Counts every model call of this process toward `spend`, and checks the budget against it:
    /// the mission spends on other hosts too.
    pub(crate) fn with_shared_spend(mut self, spend: Arc<crate::across_hosts::SharedSpend>) -> Self {
        self.shared_spend = Some(spend);
        self
    }

    /// Tokens the mission has spent: this process's count (with what earlier runs and relayed
    /// workers logged), or every host's when that is more.
    pub fn tokens_spent(&self) -> u64 {
        let here = self.bus.usage().total();
        match &self.shared_spend {
            Some(shared) => here.max(shared.total()),
            None => here,
        }
    }

    /// Counts a model call this process made (not one relayed from another host: that host counted it).
    pub(crate) fn record_spend(&self, usage: orchestrator_model::TokenUsage) {
        if let Some(shared) = &self.shared_spend {
            shared.record(usage.total());
        }
    }

    pub fn with_control(mut self, control: crate::control::MissionControl) -> Self {
        self.control = control;
        self
    }

    /// Prices for cost estimates, and how sessions keep inside their context window.
    pub fn with_context_rules(mut self, prices: PriceTable, compaction: CompactionSettings) -> Self {
        self.prices = prices;
        self.compaction = compaction;
        self
    }

    /// Offers the tools of `servers` to the sessions of the roles that list them.
    pub(crate) fn with_mcp(mut self, servers: Arc<crate::mcp_servers::McpServers>) -> Self {
        self.mcp = servers;
        self
    }

    /// Runs every session's turns on `runner` instead of the native loop.
    pub fn with_runner(mut self, runner: Arc<dyn TurnRunner>) -> Self {
        self.runner = runner;
        self
    }

    /// Keeps every session's transcript in `store` under `mission`.
    pub fn with_store(mut self, store: Arc<Store>, mission: &str) -> Self {
        self.store = Some(store);
        self.mission = mission.to_string();
        self
    }

    /// An external worker's runtime for one unit: session ids start with `prefix`, and transcript
    /// writes are fenced by the unit's lease.
    pub(crate) fn for_leased_unit(mut self, prefix: String, fence: orchestrator_store::Fence) -> Self {
        self.session_prefix = prefix;
        self.transcript_fence = Some(fence);
        self
    }

    fn next_session_id(&self, role: Role) -> String {
        format!(
            "{}{}-{}",
            self.session_prefix,
            role.as_str(),
            self.session_seq.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn transcript(&self, key: &str) -> Option<Transcript> {
        Some(Transcript {
            store: self.store.clone()?,
            mission: self.mission.clone(),
            // An external worker's sessions are its holder's own: a new holder starts afresh.
            key: format!("{}{key}", self.session_prefix),
            fence: self.transcript_fence.clone(),
            bus: self.bus.clone(),
        })
    }

    /// A write (`what`, for the log) of the mission's transcripts outside a session's own (OpenCode's
    /// attachment), made and judged as a session's are ([`write_unless_lost`]).
    pub(crate) fn write_transcript(
        &self,
        what: &str,
        write: impl FnOnce(&Store) -> Result<(), orchestrator_store::StoreError>,
    ) {
        if let Some(store) = &self.store {
            write_unless_lost(store, &self.bus, &self.mission, what, write);
        }
    }

    /// Whether the mission's token budget is used up.
    pub fn budget_spent(&self) -> bool {
        self.budget_tokens
            .is_some_and(|limit| self.tokens_spent() >= limit)
    }
}

/// A session's claim on one of the mission's concurrency slots. A session waiting on its children
/// releases its slot so that a tree of waiting parents can never starve the children it waits for.
pub struct Slot {
    slots: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Slot {
    /// A slot of its own, for tests of hooks that take one and never wait on it.
    #[cfg(test)]
    pub(crate) fn unshared() -> Slot {
        Slot {
            slots: Arc::new(Semaphore::new(1)),
            permit: None,
        }
    }

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

    /// Whether a finishing call this hook refused, sent again unchanged, is judged again. A hook whose
    /// refusals are bounded ("sent back once, then taken") says yes: the copy must count toward that
    /// bound, or a model that copies its history never gets past it. By default the copy is not
    /// judged again; it is taken out of the conversation with the refusal quoted.
    fn judges_repeats(&self) -> bool {
        false
    }

    /// A correction for a plain-text answer the session should not end with yet, or `None` to take
    /// it. A hook bounds its own rules (each should send back at most once per run); the session
    /// takes the answer after two send-backs in a run whatever the hook says.
    async fn recheck_answer(&self, _answer: &str) -> Option<String> {
        None
    }

    /// What the hook can add to a test run's output shown to the session (the tests after a change):
    /// which failures are the session's own doing, or why a pass proves less than it seems.
    async fn explain_tests(&self, _output: &str, _passed: bool) -> Option<String> {
        None
    }

    /// The error returned for a tool the session was not offered.
    fn not_offered(&self, name: &str, offered: &[String]) -> String {
        format!(
            "Unknown tool `{name}`. The tools available to you are: {}.",
            offered.join(", ")
        )
    }
}

/// Tool arguments with every `null` member left out, at any depth: `null` stands for "not given" in
/// what models send (OpenAI's strict mode asks for optional fields as nullable; grammar runtimes that
/// emit every property make a model write `"limit": null`), and every tool and hook reads an absent
/// field as its default, while a typed parse would refuse the null.
pub(crate) fn without_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, without_nulls(v)))
            .collect(),
        serde_json::Value::Array(items) => items.into_iter().map(without_nulls).collect(),
        other => other,
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

/// Runs a session's turns until it ends: the seam between the engine and an agent loop. The native
/// loop and OpenCode each keep their own state; what they share is the [`Session`] (its conversation,
/// transcript and usage) and the hooks.
#[async_trait]
pub trait TurnRunner: Send + Sync {
    async fn run_turns(
        &self,
        session: &mut Session,
        rt: &Runtime,
        hooks: &dyn SessionHooks,
        slot: &mut Slot,
    ) -> SessionEnd;

    /// What confines the session's commands, as `SessionStarted` reports it.
    fn confinement(&self, session: &Session) -> Option<String>;

    /// Whether a session may start before its worktree is complete. The native loop waits for
    /// `Session::tools_ready` before its first tool call; an agent server reads the directory itself.
    fn waits_for_worktree(&self) -> bool;
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
    /// The endpoint kept failing (429s, 5xx, timeouts) past the governor's bounded wait: not the
    /// session's fault, and worth resuming later.
    EndpointFailed(String),
}

/// How a person reads the end of a session, in reports and summaries (never Rust's debug text).
impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::Answered(_) => f.write_str("the session answered without the required call"),
            SessionEnd::Finished => f.write_str("the session finished"),
            SessionEnd::TurnLimit => f.write_str("the session ran out of turns"),
            SessionEnd::BudgetSpent => f.write_str("the token budget is spent"),
            SessionEnd::Cancelled => f.write_str("the session was cancelled"),
            SessionEnd::ModelFailed(e) => write!(f, "the model call failed: {e}"),
            SessionEnd::EndpointFailed(e) => write!(f, "the model endpoint kept failing: {e}"),
        }
    }
}

/// Where one session's messages are stored, keyed by what the session is for (e.g. `worker:t3`),
/// so the same session is found again after a restart.
struct Transcript {
    store: Arc<Store>,
    mission: String,
    key: String,
    /// Set for an external worker's sessions: written only while its lease holds.
    fence: Option<orchestrator_store::Fence>,
    /// Where a write the store refused because another commander leads the mission is reported.
    bus: EventBus,
}

/// Runs a transcript write (`what`, for the log) unless this commander lost the mission's lead:
/// from then on the store is the new leader's, as for events. A write the store refuses for that
/// reason (`LeaseLost`: the handle is fenced by the lead) loses the lead as a refused event
/// append does, stopping the mission; any other failure is logged, as before, and the session goes
/// on (its events are the mission's record; a transcript is what a resumed session continues).
fn write_unless_lost(
    store: &Store,
    bus: &EventBus,
    mission: &str,
    what: &str,
    write: impl FnOnce(&Store) -> Result<(), orchestrator_store::StoreError>,
) {
    if bus.lead_lost().is_some() {
        return;
    }
    match write(store) {
        Ok(()) => {}
        Err(orchestrator_store::StoreError::LeaseLost { .. }) => {
            bus.lose_lead(crate::leader::taken_over(store, mission));
        }
        Err(e) => tracing::error!("cannot store {what}: {e}"),
    }
}

impl Transcript {
    fn load(&self) -> Vec<Message> {
        match self.store.messages(&self.mission, &self.key) {
            Ok(values) => values
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect(),
            Err(e) => {
                tracing::warn!("cannot read the transcript of {}: {e}", self.key);
                Vec::new()
            }
        }
    }

    fn save(&self, index: usize, message: &Message) {
        let value = match serde_json::to_value(message) {
            Ok(value) => value,
            Err(e) => return tracing::warn!("cannot encode a message of {}: {e}", self.key),
        };
        let fence = self.fence.clone();
        self.write(&format!("a message of {}", self.key), |store| match &fence {
            Some(fence) => store.append_message_fenced(fence, &self.key, index, &value),
            None => store.append_message(&self.mission, &self.key, index, &value),
        });
    }

    /// Swaps the whole stored transcript for `values` (a compacted conversation), in one transaction.
    fn replace(&self, values: &[serde_json::Value]) {
        let fence = self.fence.clone();
        self.write(
            &format!("the compacted transcript of {}", self.key),
            |store| match &fence {
                Some(fence) => store.replace_messages_fenced(fence, &self.key, values),
                None => store.replace_messages(&self.mission, &self.key, values),
            },
        );
    }

    /// A worker's refused write (its unit's lease lost) is only logged: its lease keeper stops the
    /// unit. A commander's loses the mission's lead.
    fn write(&self, what: &str, write: impl FnOnce(&Store) -> Result<(), orchestrator_store::StoreError>) {
        if self.fence.is_some() {
            if let Err(e) = write(&self.store) {
                tracing::warn!("cannot store {what}: {e}");
            }
            return;
        }
        write_unless_lost(&self.store, &self.bus, &self.mission, what, write);
    }
}

/// See [`Session::tools_ready`]. Shared only because a session must be `Sync`.
pub(crate) type ToolsReady = futures::future::Shared<futures::future::BoxFuture<'static, Result<(), String>>>;

pub struct Session {
    pub id: String,
    pub role: Role,
    pub unit: Option<String>,
    pub(crate) settings: RoleSettings,
    pub(crate) toolbox: Arc<Toolbox>,
    pub(crate) tools: Vec<ToolSpec>,
    pub(crate) extra: BTreeSet<String>,
    /// The tools of the user's MCP servers offered to this session (its role's `mcp` list).
    pub(crate) mcp_tools: BTreeSet<String>,
    pub(crate) messages: Vec<Message>,
    /// Planners and reviewers must end with their submit tool, not with plain text.
    pub(crate) finish_tool: Option<&'static str>,
    pub turns: u32,
    pub usage: TokenUsage,
    transcript: Option<Transcript>,
    /// True when the conversation was loaded from the store: lost tool results must be repaired.
    resumed: bool,
    /// Turns the interrupted run of a resumed session already took (see [`turns_taken`]): the next
    /// run's budget is what they left.
    carried_turns: u32,
    estimator: ContextEstimator,
    /// After a compaction that could not get under the threshold (the task itself is that large), the
    /// next one waits until the conversation has grown again, instead of summarising every turn.
    compact_floor: u64,
    /// Awaited before the first tool call: a new worker's worktree is still being created while its
    /// first model call runs. An error ends the session (`ModelFailed`) before any tool runs.
    pub(crate) tools_ready: Option<ToolsReady>,
    /// The specialist reviewer this session is (`[review] extra`): its own system prompt.
    pub(crate) specialist: Option<String>,
    /// See [`SessionSpec::shared_head`].
    pub(crate) shared_head: usize,
    /// See [`SessionSpec::after_write`].
    pub(crate) after_write: Option<String>,
}

/// The turns a stored conversation already spent of its current run, so a crash or kill cannot hand a
/// looping session a fresh allowance. Scouts, planners and reviewers run once: every turn counts. A
/// worker (or resolver) runs again after each review, with the feedback as a new message: the turns
/// since the conversation's last user message count (a person's message, `orchestrator tell`, does
/// not begin a run).
fn turns_taken(role: Role, messages: &[Message]) -> u32 {
    let is_turn = |m: &&Message| matches!(m, Message::Assistant { .. });
    let count = match role {
        Role::Worker | Role::ConflictResolver => messages
            .iter()
            .rev()
            .take_while(|m| !matches!(m, Message::User { content } if !content.starts_with(crate::inbox::FROM_THE_USER)))
            .filter(is_turn)
            .count(),
        _ => messages.iter().filter(is_turn).count(),
    };
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// What a new session is for: the key its transcript is stored under (e.g. `worker:t3`), its role and
/// unit, model settings, tools and first message.
pub struct SessionSpec {
    key: String,
    role: Role,
    unit: Option<String>,
    settings: RoleSettings,
    toolbox: Arc<Toolbox>,
    extra_tools: Vec<ToolSpec>,
    first_message: String,
    tools_ready: Option<ToolsReady>,
    specialist: Option<String>,
    shared_head: usize,
    after_write: Option<String>,
}

impl SessionSpec {
    pub fn new(
        key: impl Into<String>,
        role: Role,
        settings: RoleSettings,
        toolbox: Arc<Toolbox>,
        first_message: String,
    ) -> Self {
        SessionSpec {
            key: key.into(),
            role,
            unit: None,
            settings,
            toolbox,
            extra_tools: Vec::new(),
            first_message,
            tools_ready: None,
            specialist: None,
            shared_head: 0,
            after_write: None,
        }
    }

    /// A command the runtime runs after each turn that changed a file, its result added to that
    /// turn's last tool result (`[verify] after_write`).
    pub(crate) fn after_write(mut self, command: Option<String>) -> Self {
        self.after_write = command;
        self
    }

    /// Bytes at the start of the first message every session of the role shares (see
    /// [`orchestrator_model::ChatRequest::shared_head`]).
    pub(crate) fn shared_head(mut self, bytes: usize) -> Self {
        self.shared_head = bytes;
        self
    }

    /// A specialist reviewer's session: the specialist's prompt instead of its role's.
    pub fn specialist(mut self, name: &str) -> Self {
        self.specialist = Some(name.to_string());
        self
    }

    /// The unit the session works on or judges.
    pub fn unit(mut self, unit: &str) -> Self {
        self.unit = Some(unit.to_string());
        self
    }

    /// Orchestration tools offered beside the toolbox's (answered by the session's hooks).
    pub fn extra_tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.extra_tools = tools;
        self
    }

    /// Awaited before the first tool call (see [`Session::tools_ready`]).
    pub(crate) fn tools_ready(mut self, ready: Option<ToolsReady>) -> Self {
        self.tools_ready = ready;
        self
    }
}

impl Session {
    /// A session as `spec` says; when the store holds a transcript for its key, the session continues it.
    pub fn new(rt: &Runtime, spec: SessionSpec) -> Self {
        let SessionSpec {
            key,
            role,
            unit,
            settings,
            toolbox,
            extra_tools,
            first_message,
            tools_ready,
            specialist,
            shared_head,
            after_write,
        } = spec;
        let mut tools = toolbox.specs();
        let extra: BTreeSet<String> = extra_tools.iter().map(|t| t.name.clone()).collect();
        tools.extend(extra_tools);
        let mcp_specs = rt.mcp.specs_for(&settings.mcp);
        let mcp_tools: BTreeSet<String> = mcp_specs.iter().map(|t| t.name.clone()).collect();
        tools.extend(mcp_specs);
        let finish_tool = match role {
            Role::Planner => Some("submit_plan"),
            Role::Reviewer | Role::MasterReviewer => Some("submit_review"),
            _ => None,
        };
        let transcript = rt.transcript(&key);
        let stored = transcript.as_ref().map(Transcript::load).unwrap_or_default();
        let resumed = !stored.is_empty();
        let carried_turns = turns_taken(role, &stored);
        let mut session = Session {
            id: rt.next_session_id(role),
            role,
            unit,
            settings,
            toolbox,
            tools,
            extra,
            mcp_tools,
            messages: stored,
            finish_tool,
            turns: 0,
            usage: TokenUsage::default(),
            transcript,
            resumed,
            carried_turns,
            estimator: ContextEstimator::new(),
            compact_floor: 0,
            tools_ready,
            specialist,
            shared_head,
            after_write,
        };
        if !resumed {
            session.push(Message::user(first_message));
        }
        session
    }

    /// The session's system prompt: its specialist's, else its role's.
    pub(crate) fn system_prompt(&self, rt: &Runtime) -> String {
        match &self.specialist {
            Some(name) => rt.prompts.specialist(self.role, name),
            None => rt.prompts.system(self.role),
        }
    }

    /// Appends to the conversation, storing the message first.
    fn push(&mut self, message: Message) {
        if let Some(transcript) = &self.transcript {
            transcript.save(self.messages.len(), &message);
        }
        self.messages.push(message);
    }

    /// Adds a user message, e.g. a failed review sent back to the worker, before running again. The same
    /// message is not added twice in a row (a resumed mission may repeat the step that sent it).
    pub fn push_user(&mut self, text: String) {
        if matches!(self.messages.last(), Some(Message::User { content }) if *content == text) {
            return;
        }
        self.push(Message::user(text));
    }

    /// Gives a worker the messages a person sent its unit (`orchestrator tell`), before its next
    /// model call: each becomes a user message of the conversation, stored with its `user_message`
    /// event and its inbox row's "delivered" mark in one transaction.
    pub(crate) fn take_mail(&mut self, rt: &Runtime) {
        let Some(unit) = self.unit.clone().filter(|_| self.role == Role::Worker) else {
            return;
        };
        // Keyed by the transcript: each candidate of a best-of-N unit reads every message once.
        let reader = self.store_key();
        for letter in rt.control.mailbox().take(&unit, &reader) {
            let message = Message::user(crate::inbox::worker_text(&letter.message));
            let transcript = self.transcript.as_ref().and_then(|t| {
                let value = serde_json::to_value(&message).ok()?;
                Some((t.key.clone(), self.messages.len(), value))
            });
            let delivery = orchestrator_store::Delivery {
                inbox: vec![letter.id],
                transcript,
            };
            rt.bus.emit_delivery(
                Event::UserMessage {
                    unit: unit.clone(),
                    message: letter.message,
                },
                &delivery,
            );
            self.messages.push(message);
        }
    }

    /// OpenCode hook: the key the transcript is stored under (the session id without a store).
    pub(crate) fn store_key(&self) -> String {
        self.transcript
            .as_ref()
            .map(|t| t.key.clone())
            .unwrap_or_else(|| self.id.clone())
    }

    /// OpenCode hook: records the final text of an OpenCode prompt as the assistant's reply.
    pub(crate) fn record_answer(&mut self, text: String) {
        self.push(Message::Assistant {
            content: text,
            tool_calls: Vec::new(),
        });
    }

    /// The final answer, when the conversation already ended with one (a resumed, finished session).
    pub(crate) fn finished_answer(&self) -> Option<String> {
        match self.messages.last() {
            Some(Message::Assistant { content, tool_calls })
                if tool_calls.is_empty() && self.finish_tool.is_none() =>
            {
                Some(content.clone())
            }
            _ => None,
        }
    }

    /// Runs model turns until the session ends. Can be called again after `push_user`.
    pub async fn run(&mut self, rt: &Runtime, hooks: &dyn SessionHooks, slot: &mut Slot) -> SessionEnd {
        // Emitted for every run, including a worker resumed with review feedback, so front ends can
        // count sessions in flight as started minus finished.
        let sandbox = rt.runner.confinement(self);
        rt.bus.emit(Event::SessionStarted {
            session: self.id.clone(),
            role: self.role,
            unit: self.unit.clone(),
            model: self.settings.model.clone(),
            sandbox,
        });
        let end = rt.runner.clone().run_turns(self, rt, hooks, slot).await;
        rt.bus.emit(Event::SessionFinished {
            session: self.id.clone(),
            role: self.role,
            ok: matches!(end, SessionEnd::Answered(_) | SessionEnd::Finished),
            turns: self.turns,
            usage: self.usage,
        });
        end
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
mod transcript_tests {
    use std::time::Duration;

    use orchestrator_store::{Holder, Store};
    use tokio_util::sync::CancellationToken;

    use super::*;

    const LONG: Duration = Duration::from_secs(600);

    fn holder(id: &str, host: &str) -> Holder {
        Holder {
            id: id.into(),
            host: host.into(),
        }
    }

    /// A commander's store handle fenced by its lead of m1, a transcript of it, the bus it reports
    /// to and the run's cancel token; and a second handle, as another commander has.
    fn leading() -> (tempfile::TempDir, Transcript, CancellationToken, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        let store = Arc::new(Store::open(&path).expect("store"));
        let lead = store
            .acquire_leader("m1", &holder("commander pid 1", "host-a"), LONG)
            .expect("leads");
        store.fence_by_leader("m1", lead.token);
        let bus = EventBus::new();
        let cancel = CancellationToken::new();
        bus.stop_on_store_error(cancel.clone());
        let transcript = Transcript {
            store,
            mission: "m1".into(),
            key: "worker:a".into(),
            fence: None,
            bus,
        };
        let other = Store::open_existing(&path).expect("second handle");
        (dir, transcript, cancel, other)
    }

    fn stored(store: &Store) -> Vec<Message> {
        store
            .messages("m1", "worker:a")
            .expect("read")
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("a message"))
            .collect()
    }

    #[test]
    fn a_transcript_write_refused_after_a_take_over_loses_the_lead_and_writes_nothing() {
        let (_dir, transcript, cancel, other) = leading();
        transcript.save(0, &Message::user("brief"));
        assert!(transcript.bus.lead_lost().is_none());
        let current = other.leader("m1").expect("read").expect("led");
        other
            .take_over_leader("m1", &holder("usurper\u{1b}[2J", "host-b"), LONG, current.token)
            .expect("taken");

        transcript.save(1, &Message::user("stale"));
        let why = transcript.bus.lead_lost().expect("the lead is lost");
        assert!(why.contains("by usurper\\u{1b}[2J on host-b"), "{why}");
        assert!(cancel.is_cancelled(), "the run stops");
        assert_eq!(stored(&other), vec![Message::user("brief")]);
    }

    #[test]
    fn a_compaction_refused_after_a_take_over_loses_the_lead_and_keeps_the_transcript() {
        let (_dir, transcript, cancel, other) = leading();
        transcript.save(0, &Message::user("brief"));
        transcript.save(1, &Message::user("more"));
        let current = other.leader("m1").expect("read").expect("led");
        other
            .take_over_leader("m1", &holder("usurper", "host-b"), LONG, current.token)
            .expect("taken");

        let summary = serde_json::to_value(Message::user("summary")).expect("encodes");
        transcript.replace(&[summary]);
        assert!(transcript.bus.lead_lost().is_some());
        assert!(cancel.is_cancelled());
        assert_eq!(
            stored(&other),
            vec![Message::user("brief"), Message::user("more")]
        );
    }

    #[test]
    fn once_the_lead_is_lost_nothing_more_is_written_even_where_the_store_would_take_it() {
        let (_dir, transcript, cancel, other) = leading();
        // Lost by a renewal that kept failing: nobody took the lead, so the store would still take
        // this commander's writes; the commander stops writing all the same.
        transcript.bus.lose_lead("its lease could not be renewed".into());
        transcript.save(0, &Message::user("after the loss"));
        transcript.replace(&[]);
        assert!(cancel.is_cancelled());
        assert!(stored(&other).is_empty());
    }
}
