//! Folds a mission's event stream into OpenTelemetry spans.
//!
//! Only [`EventEnvelope`]s are read; every timestamp comes from an event (`at`, and `at - duration_ms`
//! for model and tool calls), so spans describe when things happened, not when they were exported.
//! A span is returned as [`SpanData`] once it ends, ready for any [`SpanExporter`](opentelemetry_sdk::trace::SpanExporter).
//!
//! The tree: `mission` → phase (`discovery`, `planning`, `execution round N`, `integration`) → `unit <id>`
//! (a spawned unit under its parent unit) → `invoke_agent <role>` → `chat <model>` / `execute_tool <tool>`.
//! Names and `gen_ai.*` attributes follow the OpenTelemetry GenAI semantic conventions.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    Event as SpanEvent, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};
use orchestrator_protocol::{Event, EventEnvelope, Outcome, Phase, TokenUsage, UnitState, Verdict};

/// Longest string attribute we send; objectives and summaries can be long, collectors have limits.
const MAX_ATTRIBUTE_CHARS: usize = 4096;

/// Builds spans from one stream of events. Feed it every event in order with [`SpanTree::push`];
/// call [`SpanTree::finish`] when the stream ends to close whatever is still open.
#[derive(Debug)]
pub struct SpanTree {
    ids: RandomIdGenerator,
    scope: InstrumentationScope,
    /// `gen_ai.provider.name`, when the front end knows it (the events do not carry it).
    provider: Option<String>,
    mission: Option<MissionSpan>,
}

/// Everything open within one mission's root span.
#[derive(Debug)]
struct MissionSpan {
    trace: TraceId,
    root: Open,
    totals: Totals,
    phase: Option<(Phase, u32, Open)>,
    units: HashMap<String, OpenUnit>,
    sessions: HashMap<String, OpenSession>,
    /// Spawned unit → its parent unit, for the tree and for rolling totals up.
    parents: HashMap<String, String>,
    titles: HashMap<String, String>,
    last_at: SystemTime,
    finished: bool,
}

/// A span that has started and not yet ended.
#[derive(Debug)]
struct Open {
    id: SpanId,
    /// `None` for the root, and for a queued unit whose execution phase has not begun yet.
    parent: Option<SpanId>,
    name: String,
    kind: SpanKind,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    events: Vec<SpanEvent>,
    status: Status,
}

#[derive(Debug)]
struct OpenUnit {
    span: Open,
    /// Queued before its round's execution phase began: placed under that phase once it opens.
    pending: bool,
    state: UnitState,
    attempt: u32,
    totals: Totals,
}

#[derive(Debug)]
struct OpenSession {
    span: Open,
    unit: Option<String>,
    totals: Totals,
}

/// Tokens and estimated cost of the model calls below a span.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    usage: TokenUsage,
    cost_usd: f64,
    calls: u64,
}

/// Usage as the GenAI conventions put it: input counts every input token, cached ones too, and
/// the cache's reads and writes are told apart (only when there were any).
fn set_usage(span: &mut Open, usage: TokenUsage) {
    span.set("gen_ai.usage.input_tokens", int(usage.prompt_tokens()));
    span.set("gen_ai.usage.output_tokens", int(usage.output_tokens));
    if usage.cache_read_tokens > 0 {
        span.set(
            "gen_ai.usage.cache_read.input_tokens",
            int(usage.cache_read_tokens),
        );
    }
    if usage.cache_write_tokens > 0 {
        span.set(
            "gen_ai.usage.cache_creation.input_tokens",
            int(usage.cache_write_tokens),
        );
    }
}

impl Totals {
    fn add(&mut self, usage: TokenUsage, cost_usd: Option<f64>) {
        self.usage.add(usage);
        self.cost_usd += cost_usd.unwrap_or(0.0);
        self.calls += 1;
    }

    fn write(&self, span: &mut Open) {
        set_usage(span, self.usage);
        span.set("orchestrator.cost_usd", self.cost_usd);
        span.set("orchestrator.model_calls", int(self.calls));
    }
}

impl Open {
    fn new(id: SpanId, parent: Option<SpanId>, name: String, kind: SpanKind, start: SystemTime) -> Self {
        Open {
            id,
            parent,
            name,
            kind,
            start,
            attributes: Vec::new(),
            events: Vec::new(),
            status: Status::Unset,
        }
    }

    /// Sets an attribute, replacing an earlier value of the same key.
    fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        let value = clip_value(value.into());
        match self.attributes.iter_mut().find(|kv| kv.key.as_str() == key) {
            Some(kv) => kv.value = value,
            None => self.attributes.push(KeyValue::new(key, value)),
        }
    }

    fn event(&mut self, name: &'static str, at: SystemTime, attributes: Vec<KeyValue>) {
        let attributes = attributes
            .into_iter()
            .map(|kv| KeyValue::new(kv.key, clip_value(kv.value)))
            .collect();
        self.events.push(SpanEvent::new(name, at, attributes, 0));
    }

    fn error(&mut self, description: impl Into<String>) {
        self.status = Status::error(Cow::Owned(clip(&description.into())));
    }

    fn end(self, trace: TraceId, end: SystemTime, scope: &InstrumentationScope) -> SpanData {
        let mut events = SpanEvents::default();
        events.events = self.events;
        SpanData {
            span_context: SpanContext::new(trace, self.id, TraceFlags::SAMPLED, false, TraceState::NONE),
            parent_span_id: self.parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: false,
            span_kind: self.kind,
            name: Cow::Owned(self.name),
            start_time: self.start,
            // A clock step backwards between two events must not make a negative span.
            end_time: end.max(self.start),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events,
            links: SpanLinks::default(),
            status: self.status,
            instrumentation_scope: scope.clone(),
        }
    }
}

impl Default for SpanTree {
    fn default() -> Self {
        Self::new(None)
    }
}

impl SpanTree {
    pub fn new(provider: Option<String>) -> Self {
        SpanTree {
            ids: RandomIdGenerator::default(),
            scope: InstrumentationScope::builder("orchestrator")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            provider,
            mission: None,
        }
    }

    /// Takes one event; returns the spans it ended.
    pub fn push(&mut self, envelope: &EventEnvelope) -> Vec<SpanData> {
        let at: SystemTime = envelope.at.into();
        let mut done = Vec::new();
        if self.mission.as_ref().is_some_and(|m| m.finished) {
            self.mission = None;
        }
        let mission = self.mission.get_or_insert_with(|| {
            let trace = trace_id_for(&envelope.mission).unwrap_or_else(|| self.ids.new_trace_id());
            let mut root = Open::new(
                self.ids.new_span_id(),
                None,
                "mission".into(),
                SpanKind::Internal,
                at,
            );
            root.set("orchestrator.mission.id", envelope.mission.clone());
            MissionSpan {
                trace,
                root,
                totals: Totals::default(),
                phase: None,
                units: HashMap::new(),
                sessions: HashMap::new(),
                parents: HashMap::new(),
                titles: HashMap::new(),
                last_at: at,
                finished: false,
            }
        });
        mission.last_at = mission.last_at.max(at);
        let ctx = Ctx {
            ids: &self.ids,
            scope: &self.scope,
            provider: self.provider.as_deref(),
            at,
        };
        mission.apply(&ctx, &envelope.event, &mut done);
        done
    }

    /// The stream ended: closes every open span at the last event's time. A mission that did not
    /// report its end is marked as an error.
    pub fn finish(&mut self) -> Vec<SpanData> {
        let mut done = Vec::new();
        if let Some(mut mission) = self.mission.take() {
            if !mission.finished {
                mission
                    .root
                    .error("the event stream ended before the mission finished");
                let at = mission.last_at;
                mission.close_all(&self.scope, at, &mut done);
            }
        }
        done
    }
}

/// What every handler needs besides the mission's own state.
struct Ctx<'a> {
    ids: &'a RandomIdGenerator,
    scope: &'a InstrumentationScope,
    provider: Option<&'a str>,
    at: SystemTime,
}

impl MissionSpan {
    fn apply(&mut self, ctx: &Ctx, event: &Event, done: &mut Vec<SpanData>) {
        let at = ctx.at;
        match event {
            Event::MissionStarted {
                objective,
                base_commit,
                user_branch,
                integration_branch,
            } => {
                let root = &mut self.root;
                root.set("orchestrator.objective", objective.clone());
                root.set("orchestrator.base_commit", base_commit.clone());
                if let Some(branch) = user_branch {
                    root.set("orchestrator.user_branch", branch.clone());
                }
                root.set("orchestrator.integration_branch", integration_branch.clone());
            }
            Event::MissionResumed { phase, round } => {
                self.root.set("orchestrator.mission.resumed", true);
                self.enter_phase(ctx, *phase, *round, done);
            }
            Event::PhaseChanged { phase, round } => self.enter_phase(ctx, *phase, *round, done),
            Event::PreScanFinished { files, build, test } => {
                let mut attributes = vec![KeyValue::new("orchestrator.prescan.files", int(*files as u64))];
                if let Some(build) = build {
                    attributes.push(KeyValue::new("orchestrator.verify.build", build.clone()));
                }
                if let Some(test) = test {
                    attributes.push(KeyValue::new("orchestrator.verify.test", test.clone()));
                }
                self.phase_or_root().event("prescan_finished", at, attributes);
            }
            Event::DiscoveryFinished { .. } | Event::BaselineStarted { .. } | Event::EventsRelayed { .. } => {
            }
            Event::BaselineVerified { baseline } => {
                let attributes = vec![
                    KeyValue::new("orchestrator.baseline.passed", baseline.passed),
                    KeyValue::new("orchestrator.baseline.duration_ms", int(baseline.duration_ms)),
                    KeyValue::new(
                        "orchestrator.baseline.failed_tests",
                        int(baseline.failed_tests.len() as u64),
                    ),
                    KeyValue::new("orchestrator.baseline.warm", baseline.warm.join(",")),
                ];
                self.phase_or_root().event("baseline_verified", at, attributes);
            }
            Event::SessionStarted {
                session,
                role,
                unit,
                model,
                ..
            } => {
                let parent = unit
                    .as_ref()
                    .and_then(|u| self.units.get(u))
                    .map(|u| u.span.id)
                    .unwrap_or_else(|| self.phase_or_root_id());
                let mut span = Open::new(
                    ctx.ids.new_span_id(),
                    Some(parent),
                    format!("invoke_agent {role}"),
                    SpanKind::Internal,
                    at,
                );
                span.set("gen_ai.operation.name", "invoke_agent");
                span.set("gen_ai.agent.name", role.as_str());
                span.set("gen_ai.agent.id", session.clone());
                span.set("gen_ai.conversation.id", session.clone());
                span.set("gen_ai.request.model", model.clone());
                if let Some(provider) = ctx.provider {
                    span.set("gen_ai.provider.name", provider.to_string());
                }
                if let Some(unit) = unit {
                    span.set("orchestrator.unit.id", unit.clone());
                }
                // A session restarted after a resume replaces its earlier, unfinished span.
                if let Some(old) = self.sessions.remove(session) {
                    done.push(old.close(self.trace, at, ctx.scope));
                }
                self.sessions.insert(
                    session.clone(),
                    OpenSession {
                        span,
                        unit: unit.clone(),
                        totals: Totals::default(),
                    },
                );
            }
            Event::ModelCall {
                session,
                role,
                model,
                usage,
                cost_usd,
                duration_ms,
                ..
            } => {
                let parent = self
                    .sessions
                    .get(session)
                    .map(|s| s.span.id)
                    .unwrap_or_else(|| self.phase_or_root_id());
                let name = if model.is_empty() {
                    "chat".to_string()
                } else {
                    format!("chat {model}")
                };
                let mut span = Open::new(
                    ctx.ids.new_span_id(),
                    Some(parent),
                    name,
                    SpanKind::Client,
                    before(at, *duration_ms),
                );
                span.set("gen_ai.operation.name", "chat");
                if !model.is_empty() {
                    span.set("gen_ai.request.model", model.clone());
                }
                if let Some(provider) = ctx.provider {
                    span.set("gen_ai.provider.name", provider.to_string());
                }
                span.set("gen_ai.conversation.id", session.clone());
                span.set("gen_ai.agent.name", role.as_str());
                set_usage(&mut span, *usage);
                if let Some(cost) = cost_usd {
                    span.set("orchestrator.cost_usd", *cost);
                }
                done.push(span.end(self.trace, at, ctx.scope));
                self.add_usage(session, *usage, *cost_usd);
            }
            Event::Compacted {
                session,
                before_tokens,
                after_tokens,
            } => {
                if let Some(s) = self.sessions.get_mut(session) {
                    s.span.event(
                        "compacted",
                        at,
                        vec![
                            KeyValue::new("orchestrator.tokens_before", int(*before_tokens)),
                            KeyValue::new("orchestrator.tokens_after", int(*after_tokens)),
                        ],
                    );
                }
            }
            Event::ModelTraffic {
                model,
                limit,
                max_limit,
                peak_in_flight,
                rate_limited,
                retries,
                gave_up,
            } => self.root.event(
                "model_traffic",
                at,
                vec![
                    KeyValue::new("gen_ai.request.model", model.clone()),
                    KeyValue::new("orchestrator.traffic.limit", int(*limit as u64)),
                    KeyValue::new("orchestrator.traffic.max_limit", int(*max_limit as u64)),
                    KeyValue::new("orchestrator.traffic.peak_in_flight", int(*peak_in_flight as u64)),
                    KeyValue::new("orchestrator.traffic.rate_limited", int(*rate_limited)),
                    KeyValue::new("orchestrator.traffic.retries", int(*retries)),
                    KeyValue::new("orchestrator.traffic.gave_up", int(*gave_up)),
                ],
            ),
            Event::ToolCalled {
                session,
                tool,
                summary,
                ok,
                duration_ms,
            } => {
                let parent = self
                    .sessions
                    .get(session)
                    .map(|s| s.span.id)
                    .unwrap_or_else(|| self.phase_or_root_id());
                let mut span = Open::new(
                    ctx.ids.new_span_id(),
                    Some(parent),
                    format!("execute_tool {tool}"),
                    SpanKind::Internal,
                    before(at, *duration_ms),
                );
                span.set("gen_ai.operation.name", "execute_tool");
                span.set("gen_ai.tool.name", tool.clone());
                span.set("orchestrator.tool.summary", summary.clone());
                if !ok {
                    span.set("error.type", "tool_error");
                    span.error(format!("{tool} failed"));
                }
                done.push(span.end(self.trace, at, ctx.scope));
            }
            Event::SessionFinished {
                session, ok, turns, ..
            } => {
                if let Some(mut s) = self.sessions.remove(session) {
                    s.span.set("orchestrator.session.turns", int(u64::from(*turns)));
                    s.span.set("orchestrator.session.ok", *ok);
                    if !ok {
                        s.span.error("the session stopped before finishing its task");
                    }
                    done.push(s.close(self.trace, at, ctx.scope));
                }
            }
            Event::PlanRejected { attempt, problems } => self.phase_or_root().event(
                "plan_rejected",
                at,
                vec![
                    KeyValue::new("orchestrator.plan.attempt", int(u64::from(*attempt))),
                    KeyValue::new("orchestrator.plan.problems", problems.join("; ")),
                ],
            ),
            Event::PlanAwaitingApproval { attempt, units } => self.phase_or_root().event(
                "plan_awaiting_approval",
                at,
                vec![
                    KeyValue::new("orchestrator.plan.attempt", int(u64::from(*attempt))),
                    KeyValue::new("orchestrator.plan.units", int(units.len() as u64)),
                ],
            ),
            Event::PlanAnswered { attempt, answer } => self.phase_or_root().event(
                "plan_answered",
                at,
                vec![
                    KeyValue::new("orchestrator.plan.attempt", int(u64::from(*attempt))),
                    KeyValue::new("orchestrator.plan.answer", answer.as_str()),
                ],
            ),
            Event::PlanAccepted { round, units } => {
                for unit in units {
                    self.titles.insert(unit.id.clone(), unit.title.clone());
                }
                self.phase_or_root().event(
                    "plan_accepted",
                    at,
                    vec![
                        KeyValue::new("orchestrator.round", int(u64::from(*round))),
                        KeyValue::new("orchestrator.plan.units", int(units.len() as u64)),
                    ],
                );
            }
            Event::UnitsSpawned { parent, units } => {
                for unit in units {
                    self.titles.insert(unit.id.clone(), unit.title.clone());
                    self.parents.insert(unit.id.clone(), parent.clone());
                }
                if let Some(p) = self.units.get_mut(parent) {
                    let ids: Vec<&str> = units.iter().map(|u| u.id.as_str()).collect();
                    p.span.event(
                        "units_spawned",
                        at,
                        vec![KeyValue::new("orchestrator.unit.children", ids.join(", "))],
                    );
                }
            }
            Event::UnitState {
                unit,
                state,
                attempt,
                detail,
            } => self.unit_state(ctx, unit, *state, *attempt, detail.as_deref(), done),
            Event::UnitPrepared { unit, branch, base } => {
                if let Some(u) = self.units.get_mut(unit) {
                    u.span.set("orchestrator.unit.branch", branch.clone());
                    u.span.set("orchestrator.unit.base", base.clone());
                }
            }
            Event::UnitTaken {
                unit, worker, host, ..
            } => {
                // OpenTelemetry's semantic conventions name the machine `host.name`.
                if let Some(u) = self.units.get_mut(unit) {
                    u.span.set("orchestrator.unit.worker", worker.clone());
                    u.span.set("host.name", host.clone());
                }
            }
            Event::EvidenceRecorded { unit, evidence } => {
                let mut attributes = vec![
                    KeyValue::new("orchestrator.evidence.kind", evidence.kind.clone()),
                    KeyValue::new("orchestrator.evidence.command", evidence.command.clone()),
                    KeyValue::new("orchestrator.evidence.passed", evidence.passed()),
                    KeyValue::new("orchestrator.evidence.duration_ms", int(evidence.duration_ms)),
                ];
                if let Some(code) = evidence.exit_code {
                    attributes.push(KeyValue::new("orchestrator.evidence.exit_code", i64::from(code)));
                }
                self.unit_or_phase(unit.as_deref())
                    .event("evidence", at, attributes);
            }
            Event::ReviewFinished {
                unit,
                attempt,
                review,
                ..
            } => {
                let verdict = match review.verdict {
                    Verdict::Pass => "pass",
                    Verdict::Fail => "fail",
                };
                self.unit_or_phase(unit.as_deref()).event(
                    "review",
                    at,
                    vec![
                        KeyValue::new("orchestrator.review.verdict", verdict),
                        KeyValue::new("orchestrator.review.attempt", int(u64::from(*attempt))),
                        KeyValue::new("orchestrator.review.issues", int(review.issues.len() as u64)),
                    ],
                );
            }
            Event::CandidateFinished {
                unit,
                candidate,
                of,
                passed,
                ..
            } => self.unit_or_phase(Some(unit)).event(
                "candidate_finished",
                at,
                vec![
                    KeyValue::new("orchestrator.candidate", int(u64::from(*candidate))),
                    KeyValue::new("orchestrator.candidates", int(u64::from(*of))),
                    KeyValue::new("orchestrator.candidate.passed", *passed),
                ],
            ),
            Event::CandidatePicked {
                unit,
                candidate,
                reasons,
                by_runtime,
                ..
            } => self.unit_or_phase(Some(unit)).event(
                "candidate_picked",
                at,
                vec![
                    KeyValue::new("orchestrator.candidate", int(u64::from(*candidate))),
                    KeyValue::new("orchestrator.candidate.reasons", reasons.clone()),
                    KeyValue::new("orchestrator.candidate.by_runtime", *by_runtime),
                ],
            ),
            Event::MergeConflict { unit, files, attempt } => self.unit_or_phase(Some(unit)).event(
                "merge_conflict",
                at,
                vec![
                    KeyValue::new("orchestrator.merge.files", files.join(", ")),
                    KeyValue::new("orchestrator.merge.attempt", int(u64::from(*attempt))),
                ],
            ),
            Event::Merged { unit, into, commit } => self.unit_or_phase(Some(unit)).event(
                "merged",
                at,
                vec![
                    KeyValue::new("orchestrator.merge.into", into.clone()),
                    KeyValue::new("orchestrator.merge.commit", commit.clone()),
                ],
            ),
            Event::RoundFinished {
                round,
                passed,
                follow_up,
            } => self.root.event(
                "round_finished",
                at,
                vec![
                    KeyValue::new("orchestrator.round", int(u64::from(*round))),
                    KeyValue::new("orchestrator.round.passed", *passed),
                    KeyValue::new("orchestrator.round.follow_up", int(follow_up.len() as u64)),
                ],
            ),
            Event::DispatchChanged { paused } => self.root.event(
                if *paused {
                    "dispatch_paused"
                } else {
                    "dispatch_resumed"
                },
                at,
                Vec::new(),
            ),
            Event::UserMessage { unit, message } => {
                let attributes = vec![
                    KeyValue::new("orchestrator.unit", unit.clone()),
                    KeyValue::new("message", message.clone()),
                ];
                match self.units.get_mut(unit) {
                    Some(open) => open.span.event("user_message", at, attributes),
                    None => self.root.event("user_message", at, attributes),
                }
            }
            Event::Notice { message } => {
                self.root
                    .event("notice", at, vec![KeyValue::new("message", message.clone())]);
            }
            Event::ProjectFiles {
                instructions, roles, ..
            } => {
                let paths = |files: &[orchestrator_protocol::ProjectFile]| {
                    files.iter().map(|f| f.path.clone()).collect::<Vec<_>>().join(",")
                };
                let attributes = vec![
                    KeyValue::new("orchestrator.instructions", paths(instructions)),
                    KeyValue::new("orchestrator.role_files", paths(roles)),
                ];
                self.root.event("project_files", at, attributes);
            }
            Event::HookRan { run } => {
                let mut attributes = vec![
                    KeyValue::new("orchestrator.hook", run.hook.as_str()),
                    KeyValue::new("orchestrator.hook.passed", run.passed()),
                    KeyValue::new("orchestrator.hook.timed_out", run.timed_out),
                    KeyValue::new("orchestrator.duration_ms", int(run.duration_ms)),
                ];
                if let Some(code) = run.exit_code {
                    attributes.push(KeyValue::new("orchestrator.hook.exit_code", i64::from(code)));
                }
                match run.unit.as_ref().and_then(|unit| self.units.get_mut(unit)) {
                    Some(open) => open.span.event("hook_ran", at, attributes),
                    None => self.root.event("hook_ran", at, attributes),
                }
            }
            Event::MissionFinished {
                outcome,
                summary,
                result_commit,
                ..
            } => {
                let outcome_name = match outcome {
                    Outcome::Sealed => "sealed",
                    Outcome::Unsealed => "unsealed",
                    Outcome::Interrupted => "interrupted",
                };
                let root = &mut self.root;
                root.set("orchestrator.outcome", outcome_name);
                root.set("orchestrator.summary", summary.clone());
                if let Some(commit) = result_commit {
                    root.set("orchestrator.result_commit", commit.clone());
                }
                // An interrupted mission is resumable, not failed.
                if *outcome == Outcome::Unsealed {
                    let first = summary.lines().next().unwrap_or("the mission was not sealed");
                    root.error(format!("not sealed: {first}"));
                }
                self.close_all(ctx.scope, at, done);
                self.finished = true;
            }
        }
    }

    fn enter_phase(&mut self, ctx: &Ctx, phase: Phase, round: u32, done: &mut Vec<SpanData>) {
        if matches!(&self.phase, Some((p, r, _)) if *p == phase && *r == round) {
            return;
        }
        if let Some((_, _, span)) = self.phase.take() {
            done.push(span.end(self.trace, ctx.at, ctx.scope));
        }
        let name = match phase {
            Phase::Starting | Phase::Finished => return,
            Phase::Discovery => "discovery".to_string(),
            Phase::Planning => "planning".to_string(),
            Phase::Execution => format!("execution round {round}"),
            Phase::Integration => "integration".to_string(),
        };
        let mut span = Open::new(
            ctx.ids.new_span_id(),
            Some(self.root.id),
            name,
            SpanKind::Internal,
            ctx.at,
        );
        span.set("orchestrator.phase", phase.as_str());
        span.set("orchestrator.round", int(u64::from(round)));
        if phase == Phase::Execution {
            // Units are queued when the plan is accepted, just before their round's execution begins.
            for unit in self.units.values_mut().filter(|u| u.pending) {
                unit.pending = false;
                unit.span.parent = Some(span.id);
                unit.span.start = unit.span.start.max(span.start);
            }
        }
        self.phase = Some((phase, round, span));
    }

    fn unit_state(
        &mut self,
        ctx: &Ctx,
        unit: &str,
        state: UnitState,
        attempt: u32,
        detail: Option<&str>,
        done: &mut Vec<SpanData>,
    ) {
        if !self.units.contains_key(unit) {
            let parent_unit = self
                .parents
                .get(unit)
                .and_then(|p| self.units.get(p))
                .map(|p| p.span.id);
            let (parent, pending) = match parent_unit {
                Some(id) => (Some(id), false),
                None if state == UnitState::Queued => (None, true),
                None => (Some(self.phase_or_root_id()), false),
            };
            let mut span = Open::new(
                ctx.ids.new_span_id(),
                parent,
                format!("unit {unit}"),
                SpanKind::Internal,
                ctx.at,
            );
            span.set("orchestrator.unit.id", unit.to_string());
            if let Some(title) = self.titles.get(unit) {
                span.set("orchestrator.unit.title", title.clone());
            }
            if let Some(parent) = self.parents.get(unit) {
                span.set("orchestrator.unit.parent", parent.clone());
            }
            if let Some((_, round, _)) = &self.phase {
                span.set("orchestrator.round", int(u64::from(*round)));
            }
            self.units.insert(
                unit.to_string(),
                OpenUnit {
                    span,
                    pending,
                    state,
                    attempt,
                    totals: Totals::default(),
                },
            );
        }
        let Some(open) = self.units.get_mut(unit) else {
            return;
        };
        open.state = state;
        open.attempt = open.attempt.max(attempt);
        let mut attributes = vec![
            KeyValue::new("orchestrator.unit.state", state.as_str()),
            KeyValue::new("orchestrator.unit.attempt", int(u64::from(attempt))),
        ];
        if let Some(detail) = detail {
            attributes.push(KeyValue::new("orchestrator.unit.detail", detail.to_string()));
        }
        open.span.event("unit_state", ctx.at, attributes);
        if state.is_terminal() {
            if let Some(mut open) = self.units.remove(unit) {
                if state == UnitState::Failed {
                    open.span.error(detail.unwrap_or("the unit failed").to_string());
                }
                if let Some(detail) = detail {
                    open.span.set("orchestrator.unit.detail", detail.to_string());
                }
                let fallback = self.phase_or_root_id();
                done.push(open.close(self.trace, ctx.at, ctx.scope, fallback));
            }
        }
    }

    /// Adds a model call's usage to its session, its unit and the unit's ancestors, and the mission.
    fn add_usage(&mut self, session: &str, usage: TokenUsage, cost_usd: Option<f64>) {
        self.totals.add(usage, cost_usd);
        let Some(s) = self.sessions.get_mut(session) else {
            return;
        };
        s.totals.add(usage, cost_usd);
        let mut next = s.unit.clone();
        // Bounded by the number of known parents, so a malformed (cyclic) spawn record cannot loop.
        let mut hops = 0;
        while let Some(unit) = next {
            if let Some(u) = self.units.get_mut(&unit) {
                u.totals.add(usage, cost_usd);
            }
            next = self.parents.get(&unit).cloned();
            hops += 1;
            if hops > self.parents.len() {
                break;
            }
        }
    }

    fn phase_or_root_id(&self) -> SpanId {
        self.phase
            .as_ref()
            .map(|(_, _, span)| span.id)
            .unwrap_or(self.root.id)
    }

    fn phase_or_root(&mut self) -> &mut Open {
        match &mut self.phase {
            Some((_, _, span)) => span,
            None => &mut self.root,
        }
    }

    /// The unit's span while it is open, else the phase's (evidence and reviews of the whole mission).
    fn unit_or_phase(&mut self, unit: Option<&str>) -> &mut Open {
        let MissionSpan {
            units, phase, root, ..
        } = self;
        match (unit.and_then(|u| units.get_mut(u)), phase) {
            (Some(u), _) => &mut u.span,
            (None, Some((_, _, span))) => span,
            (None, None) => root,
        }
    }

    /// Ends sessions, units, the phase and the root, children first.
    fn close_all(&mut self, scope: &InstrumentationScope, at: SystemTime, done: &mut Vec<SpanData>) {
        let fallback = self.phase_or_root_id();
        for (_, s) in self.sessions.drain() {
            done.push(s.close(self.trace, at, scope));
        }
        for (_, u) in self.units.drain() {
            done.push(u.close(self.trace, at, scope, fallback));
        }
        if let Some((_, _, span)) = self.phase.take() {
            done.push(span.end(self.trace, at, scope));
        }
        let mut root = std::mem::replace(
            &mut self.root,
            Open::new(SpanId::INVALID, None, String::new(), SpanKind::Internal, at),
        );
        self.totals.write(&mut root);
        done.push(root.end(self.trace, at, scope));
    }
}

impl OpenSession {
    fn close(mut self, trace: TraceId, at: SystemTime, scope: &InstrumentationScope) -> SpanData {
        self.totals.write(&mut self.span);
        self.span.end(trace, at, scope)
    }
}

impl OpenUnit {
    fn close(
        mut self,
        trace: TraceId,
        at: SystemTime,
        scope: &InstrumentationScope,
        fallback: SpanId,
    ) -> SpanData {
        if self.span.parent.is_none() {
            self.span.parent = Some(fallback);
        }
        self.span.set("orchestrator.unit.state", self.state.as_str());
        self.span
            .set("orchestrator.unit.attempts", int(u64::from(self.attempt)));
        self.totals.write(&mut self.span);
        self.span.end(trace, at, scope)
    }
}

/// One trace per mission, across resumes: the trace id is derived from the mission id (two FNV-1a
/// hashes), so every run of a mission lands in the same trace. `None` for an unnamed stream.
fn trace_id_for(mission: &str) -> Option<TraceId> {
    if mission.is_empty() {
        return None;
    }
    let fnv = |seed: u64| {
        mission.bytes().fold(seed, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let high = fnv(0xcbf2_9ce4_8422_2325);
    let low = fnv(0x8422_2325_cbf2_9ce4);
    let id = (u128::from(high) << 64) | u128::from(low);
    // The all-zero id is invalid in OTLP.
    Some(TraceId::from(id.max(1)))
}

fn before(at: SystemTime, duration_ms: u64) -> SystemTime {
    at.checked_sub(Duration::from_millis(duration_ms)).unwrap_or(at)
}

/// OTLP integers are signed; token counts never come near the limit, but never wrap either.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_ATTRIBUTE_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

fn clip_value(value: Value) -> Value {
    match value {
        Value::String(s) if s.as_str().chars().count() > MAX_ATTRIBUTE_CHARS => Value::from(clip(s.as_str())),
        other => other,
    }
}

#[cfg(test)]
#[path = "spans_tests.rs"]
mod tests;
