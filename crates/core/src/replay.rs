//! Rebuilding a mission's state from its event log, so `resume` continues where it stopped.
//!
//! The event log is the write-ahead log: the engine records each step's event before (or, for git
//! results that git itself makes durable, right after) acting on it. Replaying it tells which phase
//! was reached, which units passed and merged (never run again), which were reviewed, and which
//! sessions were in flight.

use std::collections::{BTreeMap, HashMap};

use orchestrator_protocol::{
    Event, EventEnvelope, Evidence, HookKind, HookRun, Outcome, Phase, PlanAnswer, Review, Role, TokenUsage,
    UnitSpec, UnitState,
};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct UnitRecord {
    pub spec: UnitSpec,
    pub round: u32,
    pub state: UnitState,
    pub attempt: u32,
    pub detail: Option<String>,
    /// Branch and base commit, once prepared.
    pub prepared: Option<(String, String)>,
    /// Reviews by attempt.
    pub reviews: BTreeMap<u32, Review>,
    /// The commit each attempt's review judged, where the log recorded it.
    pub reviewed_commits: BTreeMap<u32, String>,
    pub merged: bool,
    /// The spawning unit, for children.
    pub parent: Option<String>,
    /// The latest verification of the unit.
    pub evidence: Vec<Evidence>,
    /// The `before_merge` hook's verdict on each attempt, where it ran.
    pub merge_hooks: BTreeMap<u32, HookRun>,
    /// Specialist reviewers' verdicts (`[review] extra`) by attempt and specialist.
    pub specialist_reviews: SpecialistReviews,
    /// Best of N: the candidate the unit went on with, the latest pick.
    pub pick: Option<CandidatePick>,
}

/// Which best-of-N candidate a unit went on with, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CandidatePick {
    pub candidate: u32,
    /// The candidates that passed verification.
    pub passing: Vec<u32>,
    pub reasons: String,
    /// The runtime's rule decided, not the reviewer.
    pub by_runtime: bool,
}

/// Specialist reviewers' verdicts by (attempt or round, specialist): the review and the commit it
/// judged, where the log has it.
pub type SpecialistReviews = BTreeMap<(u32, String), (Review, Option<String>)>;

/// One model session as the log tells it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    pub id: String,
    pub role: Role,
    pub unit: Option<String>,
    pub model: String,
    pub active: bool,
    pub turns: u32,
    pub usage: TokenUsage,
    /// Estimated cost of the session's calls with a known price.
    pub cost_usd: f64,
    pub compactions: u32,
    /// What confines the session's commands (see `Event::SessionStarted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// Where plan approval (`--approve-plan`) stands, as the log tells it.
#[derive(Debug, Clone, Default)]
pub struct ApprovalReplay {
    /// The last plan attempt put to a person (0: none).
    pub attempt: u32,
    /// The plan waiting for an answer now.
    pub waiting: Option<Vec<UnitSpec>>,
    /// The plan approved (or edited) but not yet accepted for round 1 (a kill in between).
    pub approved: Option<Vec<UnitSpec>>,
    /// The last rejected plan and the feedback it got.
    pub rejected: Option<(Vec<UnitSpec>, String)>,
}

impl ApprovalReplay {
    fn apply(&mut self, event: &Event) {
        match event {
            Event::PlanAwaitingApproval { attempt, units } => {
                self.attempt = self.attempt.max(*attempt);
                self.waiting = Some(units.clone());
                self.approved = None;
            }
            Event::PlanAnswered { answer, .. } => {
                let shown = self.waiting.take().unwrap_or_default();
                match answer {
                    PlanAnswer::Approve => self.approved = Some(shown),
                    PlanAnswer::Edit { units } => self.approved = Some(units.clone()),
                    PlanAnswer::Reject { feedback } => self.rejected = Some((shown, feedback.clone())),
                }
            }
            Event::PlanAccepted { round: 1, .. } => {
                self.waiting = None;
                self.approved = None;
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Replay {
    /// Plan approval's state.
    pub approval: ApprovalReplay,
    pub last_seq: Option<u64>,
    pub phase: Option<Phase>,
    pub round: u32,
    pub verify: Option<(Option<String>, Option<String>)>,
    /// The mission's baseline, once it ran: never run again.
    pub baseline: Option<orchestrator_protocol::Baseline>,
    pub context: Option<String>,
    pub plans: BTreeMap<u32, Vec<UnitSpec>>,
    pub units: HashMap<String, UnitRecord>,
    /// Round → (passed, follow-up units).
    pub rounds: BTreeMap<u32, (bool, Vec<UnitSpec>)>,
    pub master_reviews: BTreeMap<u32, Review>,
    /// The integrated commit each round's master review judged, where the log recorded it.
    pub master_reviewed_commits: BTreeMap<u32, String>,
    /// `[review] extra_master` specialists' verdicts by round and specialist.
    pub master_specialist_reviews: SpecialistReviews,
    pub finished: Option<Outcome>,
    /// Sealed although no command judged the work (`--no-verify`).
    pub unverified: bool,
    /// Tokens used by every model call so far, across runs.
    pub usage: TokenUsage,
    pub usage_by_role: BTreeMap<Role, TokenUsage>,
    pub cost_usd: f64,
    pub cost_by_role: BTreeMap<Role, f64>,
    /// How many times the mission was resumed before.
    pub resumes: u32,
    pub sessions: BTreeMap<String, SessionRecord>,
    /// The latest stage 2 verification.
    pub integration_evidence: Vec<Evidence>,
    /// Unit ids in the order they first appeared.
    pub order: Vec<String>,
    /// Every hook run, in order.
    pub hooks: Vec<HookRun>,
    /// External workers: how far each unit holder's events (by holder tag, `a@t2`) are in the log.
    pub relayed: BTreeMap<String, usize>,
}

impl Replay {
    pub fn from_events(events: &[EventEnvelope]) -> Replay {
        let mut replay = Replay::default();
        for envelope in events {
            replay.last_seq = Some(envelope.seq);
            replay.approval.apply(&envelope.event);
            replay.apply(&envelope.event);
        }
        replay
    }

    fn apply(&mut self, event: &Event) {
        match event {
            Event::PhaseChanged { phase, round } => {
                self.phase = Some(*phase);
                if *round > 0 {
                    self.round = *round;
                }
            }
            Event::PreScanFinished { build, test, .. } => self.verify = Some((build.clone(), test.clone())),
            Event::DiscoveryFinished { context } => self.context = Some(context.clone()),
            Event::EventsRelayed { holder, upto, .. } => {
                self.relayed.insert(holder.clone(), *upto);
            }
            Event::BaselineVerified { baseline } => self.baseline = Some(baseline.clone()),
            Event::PlanAccepted { round, units } => {
                self.plans.insert(*round, units.clone());
                for unit in units {
                    self.unit_mut(unit, *round);
                }
            }
            Event::UnitsSpawned { parent, units } => {
                let round = self.round;
                for unit in units {
                    self.unit_mut(unit, round).parent = Some(parent.clone());
                }
            }
            Event::EvidenceRecorded {
                unit: Some(unit),
                evidence,
            } => {
                if let Some(record) = self.units.get_mut(unit) {
                    if starts_a_verification(&record.evidence, &evidence.kind) {
                        record.evidence.clear();
                    }
                    record.evidence.push(evidence.clone());
                }
            }
            Event::EvidenceRecorded { unit: None, evidence } => {
                if starts_a_verification(&self.integration_evidence, &evidence.kind) {
                    self.integration_evidence.clear();
                }
                self.integration_evidence.push(evidence.clone());
            }
            Event::SessionStarted {
                session,
                role,
                unit,
                model,
                sandbox,
            } => {
                let record = self
                    .sessions
                    .entry(session.clone())
                    .or_insert_with(|| SessionRecord {
                        id: session.clone(),
                        role: *role,
                        unit: unit.clone(),
                        model: model.clone(),
                        active: true,
                        turns: 0,
                        usage: TokenUsage::default(),
                        cost_usd: 0.0,
                        compactions: 0,
                        sandbox: None,
                    });
                record.active = true;
                record.sandbox = sandbox.clone();
            }
            // Turns and usage come from the model calls, which also count earlier runs of a resumed session.
            Event::Compacted { session, .. } => {
                if let Some(record) = self.sessions.get_mut(session) {
                    record.compactions += 1;
                }
            }
            Event::SessionFinished { session, .. } => {
                if let Some(record) = self.sessions.get_mut(session) {
                    record.active = false;
                }
            }
            Event::UnitState {
                unit,
                state,
                attempt,
                detail,
            } => {
                if let Some(record) = self.units.get_mut(unit) {
                    record.state = *state;
                    if *attempt > 0 {
                        record.attempt = *attempt;
                    }
                    record.detail = detail.clone();
                }
            }
            Event::UnitPrepared { unit, branch, base } => {
                if let Some(record) = self.units.get_mut(unit) {
                    record.prepared = Some((branch.clone(), base.clone()));
                }
            }
            Event::ReviewFinished {
                unit: Some(unit),
                attempt,
                review,
                commit,
                reviewer: Some(reviewer),
            } => {
                if let Some(record) = self.units.get_mut(unit) {
                    let verdict = (review.clone(), commit.clone());
                    record
                        .specialist_reviews
                        .insert((*attempt, reviewer.clone()), verdict);
                }
            }
            Event::ReviewFinished {
                unit: None,
                attempt,
                review,
                commit,
                reviewer: Some(reviewer),
            } => {
                let verdict = (review.clone(), commit.clone());
                self.master_specialist_reviews
                    .insert((*attempt, reviewer.clone()), verdict);
            }
            Event::ReviewFinished {
                unit: Some(unit),
                attempt,
                review,
                commit,
                reviewer: None,
            } => {
                if let Some(record) = self.units.get_mut(unit) {
                    record.reviews.insert(*attempt, review.clone());
                    if let Some(commit) = commit {
                        record.reviewed_commits.insert(*attempt, commit.clone());
                    }
                }
            }
            Event::ReviewFinished {
                unit: None,
                attempt,
                review,
                commit,
                reviewer: None,
            } => {
                self.master_reviews.insert(*attempt, review.clone());
                if let Some(commit) = commit {
                    self.master_reviewed_commits.insert(*attempt, commit.clone());
                }
            }
            Event::Merged { unit, .. } => {
                if let Some(record) = self.units.get_mut(unit) {
                    record.merged = true;
                }
            }
            Event::CandidatePicked {
                unit,
                candidate,
                passing,
                reasons,
                by_runtime,
                ..
            } => {
                if let Some(record) = self.units.get_mut(unit) {
                    record.pick = Some(CandidatePick {
                        candidate: *candidate,
                        passing: passing.clone(),
                        reasons: reasons.clone(),
                        by_runtime: *by_runtime,
                    });
                }
            }
            Event::RoundFinished {
                round,
                passed,
                follow_up,
            } => {
                self.rounds.insert(*round, (*passed, follow_up.clone()));
            }
            Event::MissionFinished {
                outcome, unverified, ..
            } => {
                self.finished = Some(*outcome);
                self.unverified = *unverified;
            }
            Event::ModelCall {
                session, usage, role, ..
            } => {
                self.usage.add(*usage);
                self.usage_by_role.entry(*role).or_default().add(*usage);
                if let Some(record) = self.sessions.get_mut(session) {
                    record.turns += 1;
                    record.usage.add(*usage);
                }
            }
            Event::MissionResumed { .. } => self.resumes += 1,
            Event::HookRan { run } => {
                if let (HookKind::BeforeMerge, Some(unit), Some(attempt)) = (run.hook, &run.unit, run.attempt)
                {
                    if let Some(record) = self.units.get_mut(unit) {
                        record.merge_hooks.insert(attempt, run.clone());
                    }
                }
                self.hooks.push(run.clone());
            }
            _ => {}
        }
    }

    fn unit_mut(&mut self, spec: &UnitSpec, round: u32) -> &mut UnitRecord {
        if !self.units.contains_key(&spec.id) {
            self.order.push(spec.id.clone());
        }
        self.units.entry(spec.id.clone()).or_insert_with(|| UnitRecord {
            spec: spec.clone(),
            round,
            state: UnitState::Queued,
            attempt: 0,
            detail: None,
            prepared: None,
            reviews: BTreeMap::new(),
            reviewed_commits: BTreeMap::new(),
            merged: false,
            parent: None,
            evidence: Vec::new(),
            merge_hooks: BTreeMap::new(),
            specialist_reviews: BTreeMap::new(),
            pick: None,
        })
    }

    /// Whether a run of the hook (not one judging a unit) already passed: a resumed mission does
    /// not run it again.
    pub fn hook_passed(&self, kind: HookKind) -> bool {
        self.hooks
            .iter()
            .any(|run| run.hook == kind && run.unit.is_none() && run.passed())
    }

    /// The terminal state of a unit, if it reached one.
    pub fn terminal(&self, unit: &str) -> Option<&UnitRecord> {
        self.units.get(unit).filter(|r| r.state.is_terminal())
    }
}

/// Whether evidence of `kind` begins a new verification rather than continues the last one: an
/// install always comes first, a build comes first unless an install just ran, and any other kind
/// seen again belongs to a later run.
fn starts_a_verification(previous: &[orchestrator_protocol::Evidence], kind: &str) -> bool {
    kind == "install"
        || previous.iter().any(|e| e.kind == kind)
        || (kind == "build" && previous.last().is_none_or(|e| e.kind != "install"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_protocol::Verdict;

    #[test]
    fn an_install_begins_a_verification_and_its_build_continues_it() {
        let ran = |kinds: &[&str]| -> Vec<orchestrator_protocol::Evidence> {
            kinds
                .iter()
                .map(|k| orchestrator_protocol::Evidence {
                    kind: k.to_string(),
                    ..Default::default()
                })
                .collect()
        };
        assert!(starts_a_verification(&ran(&["build", "test"]), "install"));
        assert!(!starts_a_verification(&ran(&["install"]), "build"));
        assert!(starts_a_verification(&ran(&["build", "test"]), "build"));
        assert!(starts_a_verification(&ran(&[]), "build"));
        assert!(!starts_a_verification(&ran(&["install", "build"]), "test"));
        assert!(starts_a_verification(&ran(&["lint", "test"]), "lint"));
    }

    fn env(seq: u64, event: Event) -> EventEnvelope {
        EventEnvelope {
            seq,
            at: chrono::Utc::now(),
            mission: "m".into(),
            event,
        }
    }

    #[test]
    fn plan_approval_is_replayed() {
        let unit = |id: &str| UnitSpec {
            id: id.into(),
            title: id.into(),
            description: "d".into(),
            depends_on: vec![],
            files: vec![],
            attempts: None,
        };
        let waiting = |attempt, id: &str| Event::PlanAwaitingApproval {
            attempt,
            units: vec![unit(id)],
        };
        let answered = |answer| Event::PlanAnswered { attempt: 1, answer };
        let replay = |events: Vec<Event>| {
            let envelopes: Vec<EventEnvelope> = events
                .into_iter()
                .enumerate()
                .map(|(i, e)| env(i as u64, e))
                .collect();
            Replay::from_events(&envelopes).approval
        };
        let shown = replay(vec![waiting(1, "a")]);
        assert_eq!((shown.attempt, shown.waiting), (1, Some(vec![unit("a")])));
        let feedback = PlanAnswer::Reject {
            feedback: "no".into(),
        };
        let rejected = replay(vec![waiting(1, "a"), answered(feedback)]);
        assert_eq!(rejected.waiting, None);
        assert_eq!(rejected.rejected, Some((vec![unit("a")], "no".into())));
        let edited = replay(vec![
            waiting(1, "a"),
            answered(PlanAnswer::Edit {
                units: vec![unit("e")],
            }),
        ]);
        assert_eq!(edited.approved, Some(vec![unit("e")]));
        let accepted = replay(vec![
            waiting(1, "a"),
            answered(PlanAnswer::Approve),
            Event::PlanAccepted {
                round: 1,
                units: vec![unit("a")],
            },
        ]);
        assert_eq!((accepted.waiting, accepted.approved), (None, None));
    }

    #[test]
    fn hook_runs_are_replayed_per_unit_attempt() {
        let unit = UnitSpec {
            id: "a".into(),
            title: "A".into(),
            description: "d".into(),
            depends_on: vec![],
            files: vec![],
            attempts: None,
        };
        let run = |hook, unit: Option<&str>, attempt: Option<u32>, exit_code| HookRun {
            hook,
            unit: unit.map(str::to_string),
            attempt,
            command: "check".into(),
            exit_code: Some(exit_code),
            timed_out: false,
            duration_ms: 1,
            output_tail: String::new(),
        };
        let events = vec![
            env(
                0,
                Event::HookRan {
                    run: run(HookKind::MissionStart, None, None, 0),
                },
            ),
            env(
                1,
                Event::PlanAccepted {
                    round: 1,
                    units: vec![unit],
                },
            ),
            env(
                2,
                Event::HookRan {
                    run: run(HookKind::BeforeMerge, Some("a"), Some(1), 1),
                },
            ),
            env(
                3,
                Event::HookRan {
                    run: run(HookKind::BeforeMerge, Some("a"), Some(2), 0),
                },
            ),
            env(
                4,
                Event::HookRan {
                    run: run(HookKind::AfterSeal, None, None, 2),
                },
            ),
        ];
        let replay = Replay::from_events(&events);
        let merges = &replay.units["a"].merge_hooks;
        assert!(!merges[&1].passed() && merges[&2].passed());
        assert!(replay.hook_passed(HookKind::MissionStart));
        assert!(
            !replay.hook_passed(HookKind::AfterSeal),
            "a failed run is not a pass"
        );
        assert!(
            !replay.hook_passed(HookKind::BeforeMerge),
            "unit verdicts are the unit's"
        );
        assert_eq!(replay.hooks.len(), 4);
    }

    #[test]
    fn compactions_are_counted_per_session() {
        let events = vec![
            env(
                1,
                Event::SessionStarted {
                    session: "w".into(),
                    role: Role::Worker,
                    unit: None,
                    model: "m".into(),
                    sandbox: None,
                },
            ),
            env(
                2,
                Event::Compacted {
                    session: "w".into(),
                    before_tokens: 900,
                    after_tokens: 100,
                },
            ),
            env(
                3,
                Event::Compacted {
                    session: "w".into(),
                    before_tokens: 900,
                    after_tokens: 100,
                },
            ),
        ];
        assert_eq!(Replay::from_events(&events).sessions["w"].compactions, 2);
    }

    #[test]
    fn replays_units_reviews_and_rounds() {
        let unit = UnitSpec {
            id: "a".into(),
            title: "A".into(),
            description: "d".into(),
            depends_on: vec![],
            files: vec![],
            attempts: None,
        };
        let review = Review {
            verdict: Verdict::Pass,
            summary: "ok".into(),
            issues: vec![],
        };
        let events = vec![
            env(
                0,
                Event::PhaseChanged {
                    phase: Phase::Planning,
                    round: 1,
                },
            ),
            env(
                1,
                Event::DiscoveryFinished {
                    context: "ctx".into(),
                },
            ),
            env(
                2,
                Event::PlanAccepted {
                    round: 1,
                    units: vec![unit.clone()],
                },
            ),
            env(
                3,
                Event::UnitPrepared {
                    unit: "a".into(),
                    branch: "b".into(),
                    base: "c".into(),
                },
            ),
            env(
                4,
                Event::UnitState {
                    unit: "a".into(),
                    state: UnitState::Reviewing,
                    attempt: 2,
                    detail: None,
                },
            ),
            env(
                5,
                Event::ReviewFinished {
                    unit: Some("a".into()),
                    attempt: 2,
                    review: review.clone(),
                    commit: Some("c0ffee".into()),
                    reviewer: None,
                },
            ),
            env(
                6,
                Event::UnitState {
                    unit: "a".into(),
                    state: UnitState::Merging,
                    attempt: 0,
                    detail: None,
                },
            ),
        ];
        let replay = Replay::from_events(&events);
        assert_eq!(replay.last_seq, Some(6));
        assert_eq!(replay.context.as_deref(), Some("ctx"));
        let a = &replay.units["a"];
        assert_eq!((a.state, a.attempt), (UnitState::Merging, 2));
        assert_eq!(a.prepared, Some(("b".into(), "c".into())));
        assert_eq!(a.reviews[&2], review);
        assert_eq!(a.reviewed_commits[&2], "c0ffee");
        assert!(replay.terminal("a").is_none());
    }
}
