use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{Baseline, Evidence, HookRun, PlanAnswer, Review, Role, TokenUsage, UnitSpec, UnitState};

/// The phases of a mission, in order. A mission that fails its master review goes back to `Execution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Starting,
    Discovery,
    Planning,
    Execution,
    Integration,
    Finished,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Discovery => "discovery",
            Phase::Planning => "planning",
            Phase::Execution => "execution",
            Phase::Integration => "integration",
            Phase::Finished => "finished",
        }
    }
}

/// How a mission ended. Maps one-to-one onto the exit status in docs/protocol.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Verified and applied (exit 0).
    Sealed,
    /// Finished without being sealed: round limit, failed units or budget (exit 1).
    Unsealed,
    /// Interrupted or cancelled; resumable (exit 3).
    Interrupted,
}

impl Outcome {
    /// The outcome as people read it.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sealed => "sealed",
            Outcome::Unsealed => "not sealed",
            Outcome::Interrupted => "interrupted",
        }
    }

    pub fn exit_code(self) -> i32 {
        match self {
            Outcome::Sealed => 0,
            Outcome::Unsealed => 1,
            Outcome::Interrupted => 3,
        }
    }
}

/// Everything the engine reports. Front ends render these; the mission log stores them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    MissionStarted {
        objective: String,
        base_commit: String,
        /// The branch checked out when the mission started; `None` for a detached HEAD.
        user_branch: Option<String>,
        integration_branch: String,
    },
    PhaseChanged {
        phase: Phase,
        round: u32,
    },
    /// The deterministic pre-scan finished; `build`/`test` are the verification commands it settled on.
    PreScanFinished {
        files: usize,
        build: Option<String>,
        test: Option<String>,
    },
    /// The baseline (the project's commands on the base commit, once per mission) is about to run in
    /// its own worktree; recorded first, so a run killed meanwhile runs it again.
    BaselineStarted {
        commit: String,
    },
    /// The baseline ran: what failed before any unit, and what warms the units' builds.
    BaselineVerified {
        baseline: Baseline,
    },
    /// Phase 0 is done: the mission context every later session receives.
    DiscoveryFinished {
        context: String,
    },
    SessionStarted {
        session: String,
        role: Role,
        unit: Option<String>,
        model: String,
        /// What confines the session's commands, in words: where they may write, network, signals
        /// (or that they run unconfined, or under OpenCode's own permissions).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sandbox: Option<String>,
    },
    /// One model call finished; `usage` is that call's usage.
    ModelCall {
        session: String,
        role: Role,
        #[serde(default)]
        model: String,
        usage: TokenUsage,
        /// Estimated from the configured price table; `None` for a model without a price.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
        duration_ms: u64,
        /// How the reply was constrained, when it was: a forced tool call or the JSON-schema action
        /// envelope (see `Constraint`). Absent when the model was free to answer as it liked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        constraint: Option<Constraint>,
    },
    /// A session's older turns were summarised to keep it inside its model's context window.
    Compacted {
        session: String,
        before_tokens: u64,
        after_tokens: u64,
    },
    /// How the shared rate governor of one model fared (emitted when the mission ends).
    ModelTraffic {
        model: String,
        limit: usize,
        max_limit: usize,
        peak_in_flight: usize,
        rate_limited: u64,
        retries: u64,
        gave_up: u64,
    },
    ToolCalled {
        session: String,
        tool: String,
        /// A one-line summary of the arguments (never file contents).
        summary: String,
        ok: bool,
        /// How long the tool ran; 0 in logs written before it was recorded.
        #[serde(default)]
        duration_ms: u64,
    },
    SessionFinished {
        session: String,
        role: Role,
        ok: bool,
        turns: u32,
        usage: TokenUsage,
    },
    PlanRejected {
        attempt: u32,
        problems: Vec<String>,
    },
    PlanAccepted {
        round: u32,
        units: Vec<UnitSpec>,
    },
    /// `--approve-plan`: the planner's plan waits for a person's answer; nothing is executed until it
    /// is approved. `attempt` counts the plans put to the person (a rejected one is followed by the
    /// next); an answer names the attempt it answers.
    PlanAwaitingApproval {
        attempt: u32,
        units: Vec<UnitSpec>,
    },
    /// The person answered the waiting plan: approved, rejected with feedback, or replaced.
    PlanAnswered {
        attempt: u32,
        #[serde(flatten)]
        answer: PlanAnswer,
    },
    /// A worker split its unit.
    UnitsSpawned {
        parent: String,
        units: Vec<UnitSpec>,
    },
    UnitState {
        unit: String,
        state: UnitState,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A unit's branch and the commit it starts from, recorded before the branch is created.
    UnitPrepared {
        unit: String,
        branch: String,
        base: String,
    },
    EvidenceRecorded {
        /// The unit, or `None` for the integrated whole (stage 2).
        unit: Option<String>,
        evidence: Evidence,
    },
    ReviewFinished {
        unit: Option<String>,
        /// The unit's attempt, or the round for a master review.
        attempt: u32,
        review: Review,
        /// The commit the review judged (and verification ran on): what a passing unit merges and
        /// a passing round seals, also after a resume. Absent in logs written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        /// The specialist reviewer (`[review] extra` / `extra_master`) whose verdict this is; absent
        /// for the unit's own reviewer and the master reviewer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reviewer: Option<String>,
    },
    /// Best of N: one candidate of a unit finished its work and its verification. A failed one is out.
    CandidateFinished {
        unit: String,
        candidate: u32,
        /// How many candidates build the unit.
        of: u32,
        passed: bool,
        /// The commit that was verified, when the candidate got that far.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        /// Why it failed, or the worker's summary.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// Best of N: the candidate the unit goes on with (merged when its review passed), and why. The
    /// others are discarded.
    CandidatePicked {
        unit: String,
        candidate: u32,
        /// The candidates that passed verification (empty: none did, and the first goes on alone).
        passing: Vec<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        /// The reviewer's reasons, or the runtime's rule when it decided.
        reasons: String,
        /// The runtime chose (no valid pick from the reviewer, or fewer than two passed).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        by_runtime: bool,
    },
    MergeConflict {
        unit: String,
        files: Vec<String>,
        attempt: u32,
    },
    Merged {
        unit: String,
        into: String,
        commit: String,
    },
    RoundFinished {
        round: u32,
        passed: bool,
        /// Units for the next round, when the round did not pass.
        follow_up: Vec<UnitSpec>,
    },
    /// The mission continues after a crash, kill or cancel.
    MissionResumed {
        phase: Phase,
        round: u32,
    },
    /// A front end paused (or resumed) the dispatch of new units; running sessions go on.
    DispatchChanged {
        paused: bool,
    },
    /// A person's message (`orchestrator tell`) went into the worker session of `unit`, before its
    /// next model call; the worker's transcript holds it from here on.
    UserMessage {
        unit: String,
        message: String,
    },
    /// The project's own files that shape the sessions: the instruction files (AGENTS.md, CLAUDE.md)
    /// every session is given, read from the mission's base commit, root first; and the role files
    /// (`.orchestrator/roles/<role>.md`) that replace a built-in role. Emitted once per run, before the
    /// first session.
    ProjectFiles {
        #[serde(default)]
        instructions: Vec<ProjectFile>,
        #[serde(default)]
        roles: Vec<ProjectFile>,
        /// Files passed over or cut, and why.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        notes: Vec<String>,
    },
    /// A lifecycle hook from `[hooks]` ran: which, on what, how it ended and what it said.
    HookRan {
        #[serde(flatten)]
        run: HookRun,
    },
    /// `--workers external`: an `orchestrator worker` claimed the unit from the work queue (`worker`
    /// and `host` as it named itself, control characters shown escaped), with fencing token `token`;
    /// `taken_over_from` is the token of the holder whose lease expired, for a take-over.
    UnitTaken {
        unit: String,
        worker: String,
        host: String,
        token: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        taken_over_from: Option<i64>,
    },
    /// The commander took the events of an external worker's unit into the log (they precede
    /// this), up to position `upto` of what the unit's holder (`holder`: the unit, its queue attempt
    /// and the holder's fencing token, `a@t2`) wrote: where a resumed commander goes on reading, so
    /// nothing is logged (or its usage counted) twice.
    EventsRelayed {
        unit: String,
        holder: String,
        upto: usize,
    },
    /// A warning a person should see (e.g. the user's branch could not be fast-forwarded).
    Notice {
        message: String,
    },
    MissionFinished {
        outcome: Outcome,
        summary: String,
        usage: TokenUsage,
        /// The commit holding the integrated result.
        result_commit: Option<String>,
        /// Sealed although no build, lint or test command judged the work (`--no-verify`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        unverified: bool,
    },
}

/// One project file the sessions are given ([`Event::ProjectFiles`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectFile {
    /// Relative to the repository's root.
    pub path: String,
    /// The bytes of it the sessions are given.
    pub bytes: u64,
    /// Whether it was cut to the size limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cut: bool,
}

/// An event with its place in the mission's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub mission: String,
    #[serde(flatten)]
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_as_flat_json() {
        let env = EventEnvelope {
            seq: 7,
            at: Utc::now(),
            mission: "m1".into(),
            event: Event::UnitState {
                unit: "t1".into(),
                state: UnitState::Running,
                attempt: 1,
                detail: None,
            },
        };
        let line = serde_json::to_string(&env).unwrap();
        assert!(line.contains(r#""type":"unit_state""#), "{line}");
        assert!(line.contains(r#""state":"running""#), "{line}");
        let back: EventEnvelope = serde_json::from_str(&line).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn plan_answers_are_flat_json() {
        let event = Event::PlanAnswered {
            attempt: 2,
            answer: PlanAnswer::Reject {
                feedback: "smaller".into(),
            },
        };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(
            text,
            r#"{"type":"plan_answered","attempt":2,"answer":"reject","feedback":"smaller"}"#
        );
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
    }

    #[test]
    fn tool_calls_logged_before_durations_still_read() {
        let line = r#"{"seq":3,"at":"2025-01-01T00:00:00Z","mission":"m1","type":"tool_called","session":"s1","tool":"bash","summary":"ls","ok":true}"#;
        let env: EventEnvelope = serde_json::from_str(line).unwrap();
        assert!(matches!(env.event, Event::ToolCalled { duration_ms: 0, .. }));
    }

    #[test]
    fn hook_runs_are_flat_json() {
        let event = Event::HookRan {
            run: HookRun {
                hook: crate::HookKind::BeforeMerge,
                unit: Some("t1".into()),
                attempt: Some(2),
                command: "make check".into(),
                exit_code: Some(1),
                timed_out: false,
                duration_ms: 40,
                output_tail: "no".into(),
            },
        };
        let text = serde_json::to_string(&event).unwrap();
        assert!(
            text.starts_with(r#"{"type":"hook_ran","hook":"before_merge","unit":"t1","attempt":2,"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
        let start = r#"{"type":"hook_ran","hook":"mission_start","command":"true","exit_code":0,"timed_out":false,"duration_ms":3,"output_tail":""}"#;
        let Event::HookRan { run } = serde_json::from_str::<Event>(start).unwrap() else {
            panic!("a hook_ran event");
        };
        assert!(run.passed() && run.unit.is_none() && run.attempt.is_none());
    }

    #[test]
    fn outcome_maps_to_protocol_exit_codes() {
        assert_eq!(Outcome::Sealed.exit_code(), 0);
        assert_eq!(Outcome::Unsealed.exit_code(), 1);
        assert_eq!(Outcome::Interrupted.exit_code(), 3);
    }
}

/// How a model call's reply was constrained by the endpoint, recorded per call so a transcript says
/// what the model could and could not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// The request forced a tool call: OpenAI's `tool_choice: "required"`, Anthropic's `{"type": "any"}`.
    ToolChoice,
    /// The request carried a JSON-schema `response_format` (grammar-constrained decoding on llama.cpp,
    /// vLLM, Ollama): the reply is one JSON object naming a tool and its arguments, or the final answer.
    JsonSchema,
}
