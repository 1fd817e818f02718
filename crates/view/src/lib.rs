//! The mission as a person sees it, folded from the engine's event stream.
//!
//! Every view of a mission — the terminal view, the web dashboard, `orchestrator report` — folds the same
//! [`EventEnvelope`]s into a [`MissionView`], so they agree with each other and none of them reads engine
//! internals. Folding is incremental (one event at a time, as they arrive) and also works on a whole
//! stored log, so a view opened late shows what a view opened at the start shows.

mod describe;
#[cfg(any(test, feature = "fixture"))]
pub mod fixture;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orchestrator_protocol::{
    Event, EventEnvelope, Evidence, Outcome, Phase, ProjectFile, Review, Role, TokenUsage, UnitSpec,
    UnitState,
};
use serde::Serialize;

pub use describe::{describe, first_line, human_tokens, terminal_safe};

/// How many log lines each unit keeps; older lines go first. A unit's full story stays in the store.
pub const UNIT_LOG_LINES: usize = 200;
/// Conflicting files a timeline span names; a model's merge can touch thousands.
const SPAN_CONFLICT_FILES: usize = 8;
/// Timeline spans kept per unit; past it the newest replaces the last (attempts are bounded far
/// below, so only a broken log gets here).
pub const UNIT_SPANS: usize = 200;
/// Minutes of usage kept apart; what comes later counts in the last one.
pub const USAGE_MINUTES: u32 = 48 * 60;

/// A mission's state as folded from its events.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MissionView {
    pub mission: String,
    pub objective: String,
    pub base_commit: String,
    pub user_branch: Option<String>,
    pub integration_branch: String,
    pub phase: Option<Phase>,
    pub round: u32,
    pub started_at: Option<DateTime<Utc>>,
    /// When the last event arrived: a mission whose clock stops here for long is stuck or gone.
    pub last_event_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: Option<Outcome>,
    /// Sealed although no build, lint or test command judged the work (`--no-verify`).
    pub unverified: bool,
    pub summary: Option<String>,
    pub result_commit: Option<String>,
    /// Whether the dispatch of new units is paused.
    pub paused: bool,
    /// Units in the order they were planned or spawned.
    pub units: Vec<UnitView>,
    /// Sessions in the order they started.
    pub sessions: Vec<SessionView>,
    pub usage: TokenUsage,
    /// Estimated from the price table; models without a price add nothing.
    pub cost_usd: f64,
    pub roles: BTreeMap<Role, Totals>,
    /// Stage 2: the integrated whole's build/test evidence and master reviews (by round).
    pub integration_evidence: Vec<Evidence>,
    /// The project's commands on the base commit, before any unit: pre-existing failures, warm state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<orchestrator_protocol::Baseline>,
    pub master_reviews: Vec<(u32, Review)>,
    pub notices: Vec<String>,
    /// Tokens and cost per minute from the start and per role, in time order.
    pub usage_by_minute: Vec<UsageBucket>,
    /// The instruction files (AGENTS.md, CLAUDE.md) every session was given, root first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instructions: Vec<ProjectFile>,
    /// The role files (`.orchestrator/roles/<role>.md`) that replaced built-in roles.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub role_files: Vec<ProjectFile>,
    /// The plan waiting for a person's answer (`--approve-plan`) while the mission's process waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_plan: Option<WaitingPlanView>,
    pub last_seq: Option<u64>,
}

/// A plan waiting for approval: the attempt an answer names, and its units.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitingPlanView {
    pub attempt: u32,
    pub units: Vec<UnitSpec>,
}

/// A plan as people read it: one line per unit, with what it waits for.
pub fn plan_outline(units: &[UnitSpec]) -> Vec<String> {
    units
        .iter()
        .map(|unit| {
            let after = if unit.depends_on.is_empty() {
                String::new()
            } else {
                format!(" (after {})", unit.depends_on.join(", "))
            };
            format!("{} — {}{after}", unit.id, first_line(&unit.title))
        })
        .collect()
}

/// Tokens and cost of a group of model calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    pub usage: TokenUsage,
    pub cost_usd: f64,
    pub calls: u64,
}

impl Totals {
    fn add(&mut self, usage: TokenUsage, cost_usd: Option<f64>) {
        self.usage.add(usage);
        self.cost_usd += cost_usd.unwrap_or(0.0);
        self.calls += 1;
    }
}

/// An `orchestrator worker` holding a unit, as it named itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitHolder {
    pub worker: String,
    pub host: String,
    /// The lease's fencing token: each take-over raises it.
    pub token: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitView {
    pub id: String,
    pub title: String,
    pub description: String,
    pub round: u32,
    /// The unit that spawned this one.
    pub parent: Option<String>,
    pub children: Vec<String>,
    pub depends_on: Vec<String>,
    pub files: Vec<String>,
    pub state: UnitState,
    pub attempt: u32,
    pub detail: Option<String>,
    pub branch: Option<String>,
    /// When the unit first left the queue, and when it reached a terminal state.
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub evidence: Vec<Evidence>,
    /// Reviews by attempt.
    pub reviews: Vec<(u32, Review)>,
    pub conflicts: Vec<Vec<String>>,
    pub merged_commit: Option<String>,
    /// The unit's own sessions (worker, reviewers, resolver), not its children's.
    pub totals: Totals,
    /// The latest lines of the unit's story, oldest first.
    pub log: Vec<LogLine>,
    /// `--workers external`: the worker that holds (or last held) the unit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<UnitHolder>,
    /// The unit's life as stretches of one state each, oldest first: the timeline's lane.
    pub spans: Vec<UnitSpan>,
}

/// A stretch of a unit's life in one state (queued: waiting for its dependencies or a slot).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitSpan {
    pub state: UnitState,
    pub attempt: u32,
    pub from: DateTime<Utc>,
    /// `None` while it lasts.
    pub to: Option<DateTime<Utc>>,
    /// Model calls the unit's own sessions finished during it, and their tokens.
    pub model_calls: u32,
    pub tokens: u64,
    /// Files a merge during it conflicted on (a conflict resolver then took over), bounded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
}

impl UnitView {
    /// Whether a stretch is work of an attempt that a later attempt replaced, or of the last attempt
    /// of a unit that failed: what the pictures mark as failed.
    pub fn span_failed(&self, span: &UnitSpan) -> bool {
        if span.state == UnitState::Queued || span.attempt == 0 {
            return false;
        }
        span.attempt < self.attempt || (self.state == UnitState::Failed && span.attempt == self.attempt)
    }
}

/// One role's model calls in one minute of the mission.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageBucket {
    /// Minutes from the mission's start.
    pub minute: u32,
    pub role: Role,
    pub calls: u64,
    pub usage: TokenUsage,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    pub at: DateTime<Utc>,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionView {
    pub id: String,
    pub role: Role,
    pub unit: Option<String>,
    pub model: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `None` while the session runs.
    pub ok: Option<bool>,
    pub turns: u32,
    pub totals: Totals,
    /// What the session did last (a tool call, a model call, a compaction), for "which one is stuck".
    pub last_action: Option<String>,
    pub last_action_at: Option<DateTime<Utc>>,
}

impl SessionView {
    pub fn is_live(&self) -> bool {
        self.ok.is_none()
    }
}

/// One line of the task tree: a unit and how deep it sits under spawning parents.
#[derive(Debug, Clone, Copy)]
pub struct TreeRow<'a> {
    pub unit: &'a UnitView,
    pub depth: usize,
}

/// Unit counts by state, for a one-line summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UnitCounts {
    pub total: usize,
    pub queued: usize,
    pub active: usize,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl MissionView {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds a whole log (e.g. read back from the store).
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a EventEnvelope>) -> Self {
        let mut view = Self::new();
        for event in events {
            view.apply(event);
        }
        view
    }

    /// Folds one event in. Events at or before the last one seen are ignored, so a front end may
    /// replay the stored log and then the live stream without counting anything twice.
    pub fn apply(&mut self, envelope: &EventEnvelope) {
        if self.last_seq.is_some_and(|last| envelope.seq <= last) {
            return;
        }
        self.last_seq = Some(envelope.seq);
        if self.mission.is_empty() {
            self.mission = envelope.mission.clone();
        }
        let at = envelope.at;
        self.started_at.get_or_insert(at);
        let previous = self.last_event_at.replace(at);
        if matches!(envelope.event, Event::MissionResumed { .. }) {
            // The earlier run's stretches ended when it was last heard from, not now.
            self.close_spans(previous.unwrap_or(at));
        }
        self.fold(&envelope.event, at);
        if let Some(unit) = self.unit_of(&envelope.event) {
            if let Some(text) = describe(&envelope.event) {
                self.log_unit(&unit, at, text);
            }
        }
    }

    fn fold(&mut self, event: &Event, at: DateTime<Utc>) {
        match event {
            Event::MissionStarted {
                objective,
                base_commit,
                user_branch,
                integration_branch,
            } => {
                self.objective = objective.clone();
                self.base_commit = base_commit.clone();
                self.user_branch = user_branch.clone();
                self.integration_branch = integration_branch.clone();
            }
            Event::PhaseChanged { phase, round } | Event::MissionResumed { phase, round } => {
                self.phase = Some(*phase);
                // The engine ends with round 0 ("no round"); the view keeps the round it ended in.
                if *round > 0 || *phase != Phase::Finished {
                    self.round = *round;
                }
                if matches!(event, Event::MissionResumed { .. }) {
                    self.reopen();
                }
            }
            Event::SessionStarted {
                session,
                role,
                unit,
                model,
                ..
            } => self.session_started(session, *role, unit.clone(), model, at),
            Event::ModelCall {
                session,
                role,
                usage,
                cost_usd,
                model,
                ..
            } => self.model_call(session, *role, model, *usage, *cost_usd, at),
            Event::ToolCalled {
                session,
                tool,
                summary,
                ok,
                ..
            } => {
                let failed = if *ok { "" } else { " (failed)" };
                self.session_action(session, at, format!("{tool} {summary}{failed}"));
            }
            Event::Compacted { session, .. } => {
                self.session_action(session, at, "compacted its context".into());
            }
            Event::SessionFinished {
                session, ok, turns, ..
            } => {
                if let Some(s) = self.session_mut(session) {
                    s.ok = Some(*ok);
                    s.turns = *turns;
                    s.finished_at = Some(at);
                }
            }
            Event::PlanAwaitingApproval { attempt, units } => {
                self.waiting_plan = Some(WaitingPlanView {
                    attempt: *attempt,
                    units: units.clone(),
                });
            }
            Event::PlanAnswered { .. } => self.waiting_plan = None,
            Event::PlanAccepted { round, units } => {
                self.waiting_plan = None;
                for spec in units {
                    self.add_unit(spec, *round, None, at);
                }
            }
            Event::UnitsSpawned { parent, units } => {
                let round = self.unit(parent).map(|u| u.round).unwrap_or(self.round);
                for spec in units {
                    self.add_unit(spec, round, Some(parent.clone()), at);
                }
            }
            Event::UnitState {
                unit,
                state,
                attempt,
                detail,
            } => self.unit_state(unit, *state, *attempt, detail.clone(), at),
            Event::UnitPrepared { unit, branch, .. } => {
                if let Some(u) = self.unit_mut(unit) {
                    u.branch = Some(branch.clone());
                }
            }
            Event::BaselineVerified { baseline } => self.baseline = Some(baseline.clone()),
            Event::EvidenceRecorded { unit, evidence } => match unit {
                Some(unit) => {
                    if let Some(u) = self.unit_mut(unit) {
                        u.evidence.push(evidence.clone());
                    }
                }
                None => self.integration_evidence.push(evidence.clone()),
            },
            Event::ReviewFinished {
                unit,
                attempt,
                review,
                ..
            } => match unit {
                Some(unit) => {
                    if let Some(u) = self.unit_mut(unit) {
                        u.reviews.push((*attempt, review.clone()));
                    }
                }
                None => self.master_reviews.push((*attempt, review.clone())),
            },
            Event::MergeConflict { unit, files, .. } => {
                if let Some(u) = self.unit_mut(unit) {
                    u.conflicts.push(files.clone());
                    if let Some(span) = u.spans.last_mut().filter(|s| s.to.is_none()) {
                        let room = SPAN_CONFLICT_FILES.saturating_sub(span.conflicts.len());
                        span.conflicts.extend(files.iter().take(room).cloned());
                    }
                }
            }
            Event::Merged { unit, commit, .. } => {
                if let Some(u) = self.unit_mut(unit) {
                    u.merged_commit = Some(commit.clone());
                }
            }
            Event::UnitTaken {
                unit,
                worker,
                host,
                token,
                ..
            } => {
                if let Some(u) = self.unit_mut(unit) {
                    u.holder = Some(UnitHolder {
                        worker: worker.clone(),
                        host: host.clone(),
                        token: *token,
                    });
                }
            }
            Event::DispatchChanged { paused } => self.paused = *paused,
            Event::Notice { message } => self.notices.push(message.clone()),
            // A resumed run reads them again; the latest run's say what sessions get now.
            Event::ProjectFiles {
                instructions, roles, ..
            } => {
                self.instructions = instructions.clone();
                self.role_files = roles.clone();
            }
            Event::MissionFinished {
                outcome,
                summary,
                result_commit,
                unverified,
                ..
            } => {
                self.outcome = Some(*outcome);
                self.unverified = *unverified;
                self.summary = Some(summary.clone());
                self.result_commit = result_commit.clone();
                self.finished_at = Some(at);
                self.paused = false;
                self.close_spans(at);
                // The plan still waits in the log, but no process waits with it until a resume.
                self.waiting_plan = None;
            }
            _ => {}
        }
    }

    /// A resumed mission runs again: what the earlier run left "live" ended with that run.
    fn reopen(&mut self) {
        self.outcome = None;
        self.finished_at = None;
        self.paused = false;
        for session in self.sessions.iter_mut().filter(|s| s.ok.is_none()) {
            session.ok = Some(false);
            session.last_action = Some("interrupted".into());
        }
    }

    fn session_started(
        &mut self,
        id: &str,
        role: Role,
        unit: Option<String>,
        model: &str,
        at: DateTime<Utc>,
    ) {
        if let Some(existing) = self.session_mut(id) {
            // A resumed session continues under its old name.
            existing.ok = None;
            existing.finished_at = None;
            existing.model = model.to_string();
            return;
        }
        self.sessions.push(SessionView {
            id: id.to_string(),
            role,
            unit,
            model: model.to_string(),
            started_at: at,
            finished_at: None,
            ok: None,
            turns: 0,
            totals: Totals::default(),
            last_action: None,
            last_action_at: None,
        });
    }

    fn model_call(
        &mut self,
        session: &str,
        role: Role,
        model: &str,
        usage: TokenUsage,
        cost_usd: Option<f64>,
        at: DateTime<Utc>,
    ) {
        self.usage.add(usage);
        self.cost_usd += cost_usd.unwrap_or(0.0);
        self.roles.entry(role).or_default().add(usage, cost_usd);
        let mut unit = None;
        if let Some(s) = self.session_mut(session) {
            s.totals.add(usage, cost_usd);
            s.turns = s.turns.max(s.totals.calls as u32);
            if !model.is_empty() {
                s.model = model.to_string();
            }
            s.last_action = Some(format!("model call ({} tokens)", human_tokens(usage.total())));
            s.last_action_at = Some(at);
            unit = s.unit.clone();
        }
        if let Some(u) = unit.and_then(|id| self.unit_mut(&id)) {
            u.totals.add(usage, cost_usd);
            if let Some(span) = u.spans.last_mut().filter(|s| s.to.is_none()) {
                span.model_calls += 1;
                span.tokens += usage.total();
            }
        }
        self.count_minute(role, usage, cost_usd, at);
    }

    /// Adds a call to its role's bucket of the minute it finished in.
    fn count_minute(&mut self, role: Role, usage: TokenUsage, cost_usd: Option<f64>, at: DateTime<Utc>) {
        let since = self.started_at.map_or(0, |start| (at - start).num_minutes());
        let minute = u32::try_from(since.max(0)).unwrap_or(u32::MAX).min(USAGE_MINUTES);
        // Calls come in time order: this minute's buckets are at the end.
        let bucket = self
            .usage_by_minute
            .iter_mut()
            .rev()
            .take_while(|b| b.minute >= minute)
            .find(|b| b.minute == minute && b.role == role);
        match bucket {
            Some(bucket) => {
                bucket.calls += 1;
                bucket.usage.add(usage);
                bucket.cost_usd += cost_usd.unwrap_or(0.0);
            }
            None => self.usage_by_minute.push(UsageBucket {
                minute,
                role,
                calls: 1,
                usage,
                cost_usd: cost_usd.unwrap_or(0.0),
            }),
        }
    }

    /// Ends every stretch still open at `at` (the mission ended, or its run was cut off).
    fn close_spans(&mut self, at: DateTime<Utc>) {
        for span in self.units.iter_mut().filter_map(|u| u.spans.last_mut()) {
            if span.to.is_none() {
                span.to = Some(at.max(span.from));
            }
        }
    }

    fn session_action(&mut self, session: &str, at: DateTime<Utc>, action: String) {
        if let Some(s) = self.session_mut(session) {
            s.last_action = Some(action);
            s.last_action_at = Some(at);
        }
    }

    fn add_unit(&mut self, spec: &UnitSpec, round: u32, parent: Option<String>, at: DateTime<Utc>) {
        if self.unit(&spec.id).is_some() {
            return;
        }
        if let Some(p) = parent.as_deref().and_then(|p| self.unit_mut(p)) {
            p.children.push(spec.id.clone());
        }
        self.units.push(UnitView {
            id: spec.id.clone(),
            title: spec.title.clone(),
            description: spec.description.clone(),
            round,
            parent,
            children: Vec::new(),
            depends_on: spec.depends_on.clone(),
            files: spec.files.clone(),
            state: UnitState::Queued,
            attempt: 0,
            detail: None,
            branch: None,
            started_at: None,
            finished_at: None,
            evidence: Vec::new(),
            reviews: Vec::new(),
            conflicts: Vec::new(),
            merged_commit: None,
            totals: Totals::default(),
            log: Vec::new(),
            holder: None,
            // Planned is waiting: for its dependencies, then for a slot.
            spans: vec![UnitSpan {
                state: UnitState::Queued,
                attempt: 0,
                from: at,
                to: None,
                model_calls: 0,
                tokens: 0,
                conflicts: Vec::new(),
            }],
        });
    }

    fn unit_state(
        &mut self,
        unit: &str,
        state: UnitState,
        attempt: u32,
        detail: Option<String>,
        at: DateTime<Utc>,
    ) {
        let Some(u) = self.unit_mut(unit) else { return };
        u.state = state;
        // The engine reports merge-time states without an attempt (0); the unit keeps the one it had.
        if attempt > 0 || state == UnitState::Queued {
            u.attempt = attempt;
        }
        u.detail = detail;
        if state != UnitState::Queued {
            u.started_at.get_or_insert(at);
        }
        u.finished_at = state.is_terminal().then_some(at);
        let attempt = u.attempt;
        if let Some(open) = u.spans.last_mut().filter(|s| s.to.is_none()) {
            if open.state == state && open.attempt == attempt {
                return;
            }
            open.to = Some(at.max(open.from));
        }
        if state.is_terminal() {
            return;
        }
        if u.spans.len() >= UNIT_SPANS {
            u.spans.pop();
        }
        u.spans.push(UnitSpan {
            state,
            attempt,
            from: at,
            to: None,
            model_calls: 0,
            tokens: 0,
            conflicts: Vec::new(),
        });
    }

    fn log_unit(&mut self, unit: &str, at: DateTime<Utc>, text: String) {
        if let Some(u) = self.unit_mut(unit) {
            if u.log.len() >= UNIT_LOG_LINES {
                u.log.remove(0);
            }
            u.log.push(LogLine { at, text });
        }
    }

    /// The unit an event belongs to, for its log.
    fn unit_of(&self, event: &Event) -> Option<String> {
        match event {
            Event::UnitState { unit, .. }
            | Event::UnitPrepared { unit, .. }
            | Event::UnitTaken { unit, .. }
            | Event::MergeConflict { unit, .. }
            | Event::UserMessage { unit, .. }
            | Event::CandidateFinished { unit, .. }
            | Event::CandidatePicked { unit, .. }
            | Event::Merged { unit, .. } => Some(unit.clone()),
            Event::UnitsSpawned { parent, .. } => Some(parent.clone()),
            Event::EvidenceRecorded { unit, .. } | Event::ReviewFinished { unit, .. } => unit.clone(),
            Event::SessionStarted { unit, .. } => unit.clone(),
            Event::HookRan { run } => run.unit.clone(),
            Event::ToolCalled { session, .. }
            | Event::Compacted { session, .. }
            | Event::SessionFinished { session, .. } => {
                self.sessions.iter().find(|s| &s.id == session)?.unit.clone()
            }
            _ => None,
        }
    }

    pub fn unit(&self, id: &str) -> Option<&UnitView> {
        self.units.iter().find(|u| u.id == id)
    }

    fn unit_mut(&mut self, id: &str) -> Option<&mut UnitView> {
        self.units.iter_mut().find(|u| u.id == id)
    }

    fn session_mut(&mut self, id: &str) -> Option<&mut SessionView> {
        self.sessions.iter_mut().rev().find(|s| s.id == id)
    }

    /// The units as a tree: each root (planned) unit followed by the units it spawned, depth first.
    pub fn tree(&self) -> Vec<TreeRow<'_>> {
        let mut rows = Vec::with_capacity(self.units.len());
        for root in self.units.iter().filter(|u| u.parent.is_none()) {
            self.push_subtree(root, 0, &mut rows);
        }
        rows
    }

    fn push_subtree<'a>(&'a self, unit: &'a UnitView, depth: usize, rows: &mut Vec<TreeRow<'a>>) {
        rows.push(TreeRow { unit, depth });
        for child in unit.children.iter().filter_map(|id| self.unit(id)) {
            // Spawn depth is bounded by the engine; the guard only protects against a corrupt log.
            if depth < 32 {
                self.push_subtree(child, depth + 1, rows);
            }
        }
    }

    /// Sessions running now.
    pub fn live_sessions(&self) -> impl Iterator<Item = &SessionView> {
        self.sessions.iter().filter(|s| s.is_live())
    }

    /// The live sessions of one unit.
    pub fn unit_sessions<'a>(&'a self, unit: &'a str) -> impl Iterator<Item = &'a SessionView> + 'a {
        self.sessions
            .iter()
            .filter(move |s| s.unit.as_deref() == Some(unit))
    }

    pub fn counts(&self) -> UnitCounts {
        let mut counts = UnitCounts {
            total: self.units.len(),
            ..UnitCounts::default()
        };
        for unit in &self.units {
            match unit.state {
                UnitState::Queued => counts.queued += 1,
                UnitState::Passed => counts.passed += 1,
                UnitState::Failed => counts.failed += 1,
                UnitState::Skipped => counts.skipped += 1,
                _ => counts.active += 1,
            }
        }
        counts
    }

    /// How long the mission has run: to its end when finished, else to `now`.
    pub fn elapsed(&self, now: DateTime<Utc>) -> chrono::Duration {
        match self.started_at {
            Some(start) => self.finished_at.unwrap_or(now) - start,
            None => chrono::Duration::zero(),
        }
    }
}

/// `mm:ss`, or `h:mm:ss` past an hour.
pub fn clock(duration: chrono::Duration) -> String {
    let secs = duration.num_seconds().max(0);
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{:02}:{:02}", secs / 60, secs % 60)
    }
}

#[cfg(test)]
mod tests;
