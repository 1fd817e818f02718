//! What a commander hands an `orchestrator worker` for one unit, and what comes back (issue #20).
//! Both travel as JSON through the store's work queue; the commits travel through the mission's
//! shared git remote, under the ref names made here.
//!
//! A worker's events reach the mission's log through the commander, its one writer: the worker
//! writes them, fenced by its lease, as a "relay" transcript of the unit, and the commander reads
//! that transcript as it grows and emits each event on its own bus.

use orchestrator_protocol::{Event, MissionSettings, UnitSpec};
use serde::{Deserialize, Serialize};

/// Which shape of ticket this build writes; a worker refuses (fails) a ticket from a newer one.
pub(crate) const TICKET_VERSION: u32 = 1;

/// Everything a worker needs to build one unit: the rest it reads from the repository at `base`
/// (its `orchestrator.toml`, role files and instructions) and from its own host (model endpoint
/// and key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ticket {
    pub version: u32,
    pub objective: String,
    pub unit: UnitSpec,
    pub round: u32,
    /// The commit the unit starts from; on the remote's integration ref (or an ancestor of it).
    pub base: String,
    /// The commit the mission started from: a worker runs the mission's baseline there once (its
    /// pre-existing test failures, the build outputs its units start warm from). Empty: none.
    #[serde(default)]
    pub mission_base: String,
    pub remote: String,
    /// The mission context from discovery, which every worker brief carries.
    pub context: String,
    pub verify: VerifyCommands,
    /// The mission's own settings (as `resume` would use them): model, sandbox, limits.
    pub settings: MissionSettings,
    /// The mission's tokens left when the unit was offered: the worker's budget for it when the
    /// ticket has no `budget_total` (a commander from before budgets were shared).
    pub budget_left: Option<u64>,
    /// The mission's whole budget: the worker checks it against what every host has spent
    /// (`across_hosts::SharedSpend`), so units running at once cannot each spend what is left.
    #[serde(default)]
    pub budget_total: Option<u64>,
    /// How many units the mission held when the unit was offered (this one among them): a worker
    /// whose unit spawns counts them toward `limits.max_units`. 0 from a commander before spawning
    /// on workers.
    #[serde(default)]
    pub units_known: usize,
}

/// The commands that judge the unit, as the commander resolved them for the whole mission, so a
/// worker judges exactly as the commander would.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct VerifyCommands {
    pub install: Option<String>,
    pub build: Option<String>,
    pub lint: Option<String>,
    pub test: Option<String>,
    /// `[verify] protect_tests` of the commander's config (older tickets: off).
    #[serde(default)]
    pub protect_tests: bool,
}

/// How a worker's run of a unit ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TicketResult {
    pub passed: bool,
    pub summary: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// What the last attempt was told, for the next round's retry.
    #[serde(default)]
    pub findings: Option<String>,
    /// The commit that passed verification and review, pushed to `pushed_ref` on the remote.
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub pushed_ref: Option<String>,
    /// Stopped for a reason that is not the unit's (budget, endpoint, cancel): the commander offers
    /// it again on `resume`, not as a failure.
    #[serde(default)]
    pub interrupted: bool,
}

/// The remote ref the commander publishes the mission's integration head to.
pub(crate) fn integration_ref(mission: &str) -> String {
    format!("refs/heads/orchestrator/{mission}/integration")
}

/// Who holds a unit, as names go: the unit, the queue row's attempt (a unit offered again after an
/// interruption is a new row, whose tokens start again) and the holder's token. `a@t2`, or
/// `a@a2t1` for a later attempt.
pub(crate) fn holder_tag(unit: &str, attempt: u32, token: i64) -> String {
    if attempt <= 1 {
        format!("{unit}@t{token}")
    } else {
        format!("{unit}@a{attempt}t{token}")
    }
}

/// [`holder_tag`] of what a claim handed out.
pub(crate) fn fence_tag(fence: &orchestrator_store::Fence) -> String {
    holder_tag(&fence.key.unit, fence.key.attempt, fence.token)
}

/// The remote ref a unit's holder pushes its work to. The holder is in the name: each has a ref of
/// its own, so a replaced holder cannot touch its successor's, and the commander merges only the
/// commit the store's fenced result names.
pub(crate) fn worker_ref(mission: &str, tag: &str) -> String {
    format!("refs/heads/orchestrator/{mission}/w/{tag}")
}

/// The transcript a unit's holder relays its events through.
pub(crate) fn relay_session(tag: &str) -> String {
    format!("relay:{tag}")
}

/// The prefix of every session id of a unit's holder (see `Runtime::for_leased_unit`).
pub(crate) fn session_prefix(tag: &str) -> String {
    format!("{tag}/")
}

/// Whether an event a unit's holder relayed goes into the mission's log: only what a worker's run
/// of that unit emits — its sessions (by their prefix), the unit's states short of the merge, its
/// evidence, reviews and hooks, notices, and the whole life of the sub-units it spawned (they run
/// and merge into the unit on the worker). Anything else (another unit's events, the unit's own
/// merge, a plan, the mission's end) is the commander's alone to say, whatever a worker wrote.
pub(crate) fn relayable(event: &Event, unit: &str, tag: &str) -> bool {
    use orchestrator_protocol::UnitState as S;
    let prefix = session_prefix(tag);
    let below = |u: &str| descends_from(u, unit);
    let of_tree = |u: &Option<String>| u.as_deref().is_some_and(|u| u == unit || below(u));
    match event {
        Event::SessionStarted { session, .. }
        | Event::ModelCall { session, .. }
        | Event::ToolCalled { session, .. }
        | Event::SessionFinished { session, .. }
        | Event::Compacted { session, .. } => session.starts_with(&prefix),
        Event::UnitState { unit: u, state, .. } => {
            below(u)
                || (u == unit
                    && matches!(
                        state,
                        S::Running | S::Verifying | S::Reviewing | S::WaitingOnChildren
                    ))
        }
        Event::UnitsSpawned { parent, units } => {
            (parent == unit || below(parent))
                && units.iter().all(|child| {
                    child
                        .id
                        .strip_prefix(parent.as_str())
                        .and_then(|rest| rest.strip_prefix('.'))
                        .is_some_and(is_position)
                })
        }
        Event::UnitPrepared { unit: u, .. }
        | Event::Merged { unit: u, .. }
        | Event::MergeConflict { unit: u, .. } => below(u),
        Event::EvidenceRecorded { unit: u, .. } | Event::ReviewFinished { unit: u, .. } => of_tree(u),
        Event::CandidateFinished { unit: u, .. } | Event::CandidatePicked { unit: u, .. } => u == unit,
        Event::HookRan { run } => of_tree(&run.unit),
        Event::Notice { .. } => true,
        _ => false,
    }
}

/// Whether `id` names a sub-unit spawned (at any depth) below `unit`: `unit.2`, `unit.2.1`. Spawned
/// ids are their parent's and a position (`plan::parse_spawn`).
fn descends_from(id: &str, unit: &str) -> bool {
    id.strip_prefix(unit)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| rest.split('.').all(is_position))
}

/// A spawned unit's position among its siblings: 1, 2, … (a few digits).
fn is_position(text: &str) -> bool {
    (1..=4).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_protocol::{Role, TokenUsage, UnitState};

    #[test]
    fn only_the_holders_own_unit_events_are_relayed() {
        let session = |id: &str| Event::SessionStarted {
            session: id.into(),
            role: Role::Worker,
            unit: Some("a".into()),
            model: "m".into(),
            sandbox: None,
        };
        assert!(relayable(&session("a@t2/worker-1"), "a", "a@t2"));
        // Another holder's, another unit's, or an unprefixed (a commander's) session: not relayed.
        assert!(!relayable(&session("a@t1/worker-1"), "a", "a@t2"));
        assert!(!relayable(&session("b@t2/worker-1"), "a", "a@t2"));
        assert!(!relayable(&session("worker-1"), "a", "a@t2"));
        let call = Event::ModelCall {
            session: "a@t2/reviewer-2".into(),
            role: Role::Reviewer,
            model: "m".into(),
            usage: TokenUsage::default(),
            cost_usd: None,
            duration_ms: 1,
            constraint: None,
        };
        assert!(relayable(&call, "a", "a@t2"));
        let state = |unit: &str, state| Event::UnitState {
            unit: unit.into(),
            state,
            attempt: 1,
            detail: None,
        };
        assert!(relayable(&state("a", UnitState::Verifying), "a", "a@t2"));
        assert!(
            !relayable(&state("a", UnitState::Passed), "a", "a@t2"),
            "the commander says passed"
        );
        assert!(!relayable(&state("b", UnitState::Running), "a", "a@t2"));
        let merged = Event::Merged {
            unit: "a".into(),
            into: "x".into(),
            commit: "c".into(),
        };
        assert!(!relayable(&merged, "a", "a@t2"), "only the commander merges");
        let finished = Event::MissionFinished {
            outcome: orchestrator_protocol::Outcome::Sealed,
            summary: String::new(),
            usage: TokenUsage::default(),
            result_commit: None,
            unverified: false,
        };
        assert!(!relayable(&finished, "a", "a@t2"));
    }

    #[test]
    fn the_holders_sub_units_are_relayed_whole_and_nobody_elses() {
        let spec = |id: &str| UnitSpec {
            id: id.into(),
            title: id.into(),
            description: "d".into(),
            depends_on: vec![],
            files: vec![],
            attempts: None,
        };
        let spawned = |parent: &str, ids: &[&str]| Event::UnitsSpawned {
            parent: parent.into(),
            units: ids.iter().map(|id| spec(id)).collect(),
        };
        assert!(relayable(&spawned("a", &["a.1", "a.2"]), "a", "a@t2"));
        assert!(relayable(&spawned("a.2", &["a.2.1"]), "a", "a@t2"));
        // Another unit's tree, ids that are not positions below their parent, or the plan's own
        // dotted ids passed off as children: refused.
        for (parent, ids) in [
            ("b", &["b.1"][..]),
            ("a", &["b.1"][..]),
            ("a", &["a.x"][..]),
            ("a", &["a.01"][..]),
            ("a", &["a.1.1"][..]),
            ("ab", &["ab.1"][..]),
            ("a", &["a.1", "a"][..]),
        ] {
            assert!(!relayable(&spawned(parent, ids), "a", "a@t2"), "{parent} {ids:?}");
        }
        let state = |unit: &str, state| Event::UnitState {
            unit: unit.into(),
            state,
            attempt: 1,
            detail: None,
        };
        assert!(relayable(&state("a.1", UnitState::Passed), "a", "a@t2"));
        assert!(relayable(&state("a.1.3", UnitState::Failed), "a", "a@t2"));
        assert!(relayable(&state("a", UnitState::WaitingOnChildren), "a", "a@t2"));
        assert!(!relayable(&state("a", UnitState::Passed), "a", "a@t2"));
        assert!(!relayable(&state("a1", UnitState::Passed), "a", "a@t2"));
        assert!(!relayable(&state("b.1", UnitState::Passed), "a", "a@t2"));
        let merged = |unit: &str| Event::Merged {
            unit: unit.into(),
            into: "orchestrator/m/h/a@t2/u/a".into(),
            commit: "c".into(),
        };
        assert!(
            relayable(&merged("a.1"), "a", "a@t2"),
            "into its parent, on the worker"
        );
        assert!(!relayable(&merged("a"), "a", "a@t2"));
    }
}
