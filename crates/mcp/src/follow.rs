//! Following a mission through the repository's store, as `orchestrator logs --follow` does: a cheap
//! probe (the newest event's number, the record's status, whether its process lives) on every tick,
//! and the full status only when the probe moved. `wait_for_mission` and the resource subscriptions
//! are both built on it.

use std::path::{Path, PathBuf};

use orchestrator_core::{MissionStatus, StatusReport};
use orchestrator_protocol::{Outcome, Phase, UnitState};
use orchestrator_store::Store;

use crate::error::ToolError;

/// The parts of a mission's status a person following it cares about; two snapshots that differ
/// are a change worth telling.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub mission: String,
    pub status: MissionStatus,
    pub running: bool,
    pub phase: Option<Phase>,
    pub round: u32,
    pub units: Vec<(String, UnitState)>,
    pub outcome: Option<Outcome>,
    /// The attempt number of the plan waiting for the user's approval, if one waits.
    pub waiting_plan: Option<u32>,
}

/// At most this many changes are named in one message; the rest are counted.
const NAMED_CHANGES: usize = 4;

impl Snapshot {
    pub fn of(report: &StatusReport) -> Self {
        Snapshot {
            mission: report.mission.clone(),
            status: report.status,
            running: report.running,
            phase: report.phase,
            round: report.round,
            units: report.units.iter().map(|u| (u.id.clone(), u.state)).collect(),
            outcome: report.outcome,
            waiting_plan: report.waiting_plan.as_ref().map(|p| p.attempt),
        }
    }

    /// Units that have reached their end (passed, failed or skipped).
    pub fn done(&self) -> usize {
        self.units.iter().filter(|(_, s)| s.is_terminal()).count()
    }

    /// What changed since `before`, as one short line for a person (a fresh follow names where the
    /// mission stands).
    pub fn changes_since(&self, before: Option<&Snapshot>) -> String {
        let mut changes = Vec::new();
        let before = before.filter(|b| b.mission == self.mission);
        let Some(before) = before else {
            return format!("mission {}: {}", self.mission, self.standing());
        };
        if self.phase != before.phase || self.round != before.round {
            changes.push(format!(
                "phase {} (round {})",
                phase_name(self.phase),
                self.round.max(1)
            ));
        }
        if before.units.is_empty() && !self.units.is_empty() {
            changes.push(format!("{} units planned", self.units.len()));
        }
        for (id, state) in &self.units {
            let old = before.units.iter().find(|(b, _)| b == id).map(|(_, s)| *s);
            if old.is_some_and(|old| old != *state) {
                changes.push(format!("unit {id} {}", state.as_str()));
            }
        }
        if self.waiting_plan != before.waiting_plan {
            if let Some(attempt) = self.waiting_plan {
                changes.push(format!("plan {attempt} waits for the user's approval"));
            }
        }
        if self.running != before.running || self.status != before.status {
            changes.push(self.state_words());
        }
        if changes.is_empty() {
            return self.standing();
        }
        let more = changes.len().saturating_sub(NAMED_CHANGES);
        changes.truncate(NAMED_CHANGES);
        let mut line = changes.join("; ");
        if more > 0 {
            line.push_str(&format!("; {more} more changes"));
        }
        format!("{line} ({})", self.tally())
    }

    /// Where the mission stands, in one line.
    pub fn standing(&self) -> String {
        format!(
            "{}, phase {} (round {}), {}",
            self.state_words(),
            phase_name(self.phase),
            self.round.max(1),
            self.tally()
        )
    }

    fn tally(&self) -> String {
        if self.units.is_empty() {
            return "no units planned yet".into();
        }
        format!("{} of {} units done", self.done(), self.units.len())
    }

    fn state_words(&self) -> String {
        match (self.running, self.outcome) {
            (true, _) if self.waiting_plan.is_some() => "waiting for plan approval".into(),
            (true, _) => "running".into(),
            (false, Some(outcome)) => format!("finished: {}", outcome.as_str()),
            (false, None) => format!("stopped ({})", self.status),
        }
    }
}

fn phase_name(phase: Option<Phase>) -> &'static str {
    phase.map(|p| p.as_str()).unwrap_or("starting")
}

/// What a tick reads before deciding whether the full status is worth computing.
#[derive(Debug, Clone, PartialEq)]
struct Probe {
    mission: String,
    last_seq: Option<u64>,
    status: MissionStatus,
    alive: bool,
}

/// Follows one mission, or the repository's latest (re-resolved on every tick, so a new mission
/// counts as a change).
pub struct Follower {
    root: PathBuf,
    /// `None`: the latest mission.
    mission: Option<String>,
    store: Option<Store>,
    probe: Option<Probe>,
    snapshot: Option<Snapshot>,
}

impl Follower {
    /// A follower of `mission` (an exact id) or, with `None`, of the latest mission of `root`.
    pub fn new(root: &Path, mission: Option<String>) -> Self {
        Follower {
            root: root.to_path_buf(),
            mission,
            store: None,
            probe: None,
            snapshot: None,
        }
    }

    /// The last status seen, if any.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// Reads the mission's state; returns the new status when it changed since the last call (the
    /// first call that finds the mission counts as a change). A repository without missions yet is
    /// no error: nothing is there to change.
    pub fn poll(&mut self) -> Result<Option<StatusReport>, ToolError> {
        let Some(probe) = self.probe()? else {
            return Ok(None);
        };
        if self.probe.as_ref() == Some(&probe) {
            return Ok(None);
        }
        let report = orchestrator_core::status_of(&self.root, Some(&probe.mission))?;
        self.probe = Some(probe);
        let snapshot = Snapshot::of(&report);
        if self.snapshot.as_ref() == Some(&snapshot) {
            return Ok(None);
        }
        self.snapshot = Some(snapshot);
        Ok(Some(report))
    }

    fn probe(&mut self) -> Result<Option<Probe>, ToolError> {
        let store = match &self.store {
            Some(store) => store,
            None => match orchestrator_core::open_store_in(&self.root) {
                Ok(store) => self.store.insert(store),
                // No store yet: no mission has run; one may start later.
                Err(_) if self.mission.is_none() => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        let record = match &self.mission {
            Some(id) => store.mission(id),
            None => store.latest_mission(),
        }
        .map_err(|e| ToolError::Other(format!("cannot read the mission store: {e}")))?;
        let Some(record) = record else {
            return match &self.mission {
                Some(id) => Err(ToolError::Other(format!(
                    "mission {id} is no longer in the store"
                ))),
                None => Ok(None),
            };
        };
        let last_seq = store
            .last_seq(&record.id)
            .map_err(|e| ToolError::Other(format!("cannot read the mission's events: {e}")))?;
        Ok(Some(Probe {
            alive: record.pid.is_some_and(orchestrator_core::process_alive),
            mission: record.id,
            last_seq,
            status: record.status,
        }))
    }
}

/// MCP progress values must increase with every notification, and a total is what they count up
/// to. Progress counts finished units, plus one for the mission's end (integration and final
/// review), so the total is the number of units plus one, and unknown while none is planned.
/// Between two steps the value creeps up by ever smaller fractions (1/2, 2/3, 3/4, …), so it
/// always increases and stays below the next whole step.
#[derive(Debug, Default)]
pub struct ProgressCounter {
    whole: usize,
    steps: u32,
}

impl ProgressCounter {
    /// The (progress, total) of the next notification for `snapshot`.
    pub fn next(&mut self, snapshot: &Snapshot) -> (f64, Option<f64>) {
        let units = snapshot.units.len();
        let ended =
            matches!(snapshot.outcome, Some(Outcome::Sealed | Outcome::Unsealed)) && !snapshot.running;
        let reached = if ended && units > 0 {
            units + 1
        } else {
            snapshot.done()
        };
        if reached > self.whole {
            self.whole = reached;
            self.steps = 0;
        } else {
            self.steps = self.steps.saturating_add(1);
        }
        let fraction = f64::from(self.steps) / (f64::from(self.steps) + 1.0);
        let progress = self.whole as f64 + fraction;
        let total = (units > 0).then(|| ((units + 1) as f64).max(progress));
        (progress, total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(units: &[(&str, UnitState)], running: bool) -> Snapshot {
        Snapshot {
            mission: "m-1".into(),
            status: if running {
                MissionStatus::Running
            } else {
                MissionStatus::Sealed
            },
            running,
            phase: Some(Phase::Execution),
            round: 1,
            units: units.iter().map(|(id, s)| (id.to_string(), *s)).collect(),
            outcome: (!running).then_some(Outcome::Sealed),
            waiting_plan: None,
        }
    }

    #[test]
    fn progress_always_increases_and_ends_at_the_total() {
        use UnitState::{Passed, Queued, Running};
        let mut counter = ProgressCounter::default();
        let mut last = -1.0;
        let steps = [
            snapshot(&[], true),
            snapshot(&[], true),
            snapshot(&[("a", Queued), ("b", Queued)], true),
            snapshot(&[("a", Running), ("b", Queued)], true),
            snapshot(&[("a", Passed), ("b", Queued)], true),
            snapshot(&[("a", Passed), ("b", Passed)], true),
            snapshot(&[("a", Passed), ("b", Passed)], true),
        ];
        for step in &steps {
            let (progress, total) = counter.next(step);
            assert!(progress > last, "{progress} after {last}");
            assert_eq!(total.is_some(), !step.units.is_empty());
            assert!(total.is_none_or(|t| progress < t), "{progress} of {total:?}");
            last = progress;
        }
        let end = snapshot(&[("a", Passed), ("b", Passed)], false);
        assert_eq!(counter.next(&end), (3.0, Some(3.0)));
    }

    #[test]
    fn changes_name_units_and_the_end() {
        let before = snapshot(&[("a", UnitState::Running), ("b", UnitState::Queued)], true);
        let after = snapshot(&[("a", UnitState::Passed), ("b", UnitState::Queued)], true);
        assert_eq!(
            after.changes_since(Some(&before)),
            "unit a passed (1 of 2 units done)"
        );
        let end = snapshot(&[("a", UnitState::Passed), ("b", UnitState::Passed)], false);
        let line = end.changes_since(Some(&after));
        assert!(
            line.contains("unit b passed") && line.contains("finished: sealed"),
            "{line}"
        );
        assert!(end.changes_since(None).starts_with("mission m-1: finished"));
    }

    #[test]
    fn a_flood_of_changes_is_counted_not_listed() {
        let ids: Vec<String> = (0..50).map(|i| format!("u{i}")).collect();
        let queued: Vec<(&str, UnitState)> = ids.iter().map(|i| (i.as_str(), UnitState::Queued)).collect();
        let passed: Vec<(&str, UnitState)> = ids.iter().map(|i| (i.as_str(), UnitState::Passed)).collect();
        let line = snapshot(&passed, true).changes_since(Some(&snapshot(&queued, true)));
        assert!(line.contains("46 more changes") && line.len() < 200, "{line}");
    }
}
