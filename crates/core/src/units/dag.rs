//! The scheduler: units run in dependency order, every ready unit at once, within the global cap.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use orchestrator_protocol::{UnitSpec, UnitState};

use super::{MergeTarget, UnitOutcome, UnitRun};
use crate::shared::Mission;

/// Runs units in dependency order, every ready unit at once (the global slot cap limits sessions).
/// A unit whose dependency did not pass is skipped; units that ended in an earlier run of the mission
/// are taken as they ended and never run again.
pub fn run_dag(
    mission: Arc<Mission>,
    units: Vec<UnitSpec>,
    depth: u32,
    target: Arc<MergeTarget>,
    round: u32,
) -> BoxFuture<'static, Vec<UnitOutcome>> {
    Box::pin(async move {
        let mut done: HashMap<String, UnitOutcome> = HashMap::new();
        let mut waiting = Vec::new();
        for unit in &units {
            match mission.replay.terminal(&unit.id) {
                Some(record) => {
                    mission.note_todo(unit, round, record.state, record.detail.clone());
                    let outcome = UnitOutcome {
                        unit: unit.clone(),
                        state: record.state,
                        summary: record.detail.clone().unwrap_or_default(),
                        reason: (record.state != UnitState::Passed)
                            .then(|| record.detail.clone())
                            .flatten(),
                        findings: None,
                        interrupted: false,
                    };
                    done.insert(unit.id.clone(), outcome);
                }
                None => waiting.push(unit.clone()),
            }
        }
        let mut running = FuturesUnordered::new();
        loop {
            // After a cancel or with the budget spent nothing new starts; what runs winds down.
            let stopping = mission.rt.cancel.is_cancelled() || mission.rt.budget_spent();
            let (ready, blocked) = if stopping {
                (Vec::new(), Vec::new())
            } else {
                next_ready(&mut waiting, &done)
            };
            for unit in blocked {
                let reason = format!("a dependency did not pass: {}", unit.depends_on.join(", "));
                mission.set_state(&unit, round, UnitState::Skipped, 0, Some(reason.clone()));
                let outcome = UnitOutcome {
                    unit,
                    state: UnitState::Skipped,
                    summary: String::new(),
                    reason: Some(reason),
                    findings: None,
                    interrupted: false,
                };
                done.insert(outcome.unit.id.clone(), outcome);
            }
            for unit in ready {
                running.push(run_unit(mission.clone(), unit, depth, target.clone(), round));
            }
            if running.is_empty() {
                if waiting.is_empty() || stopping {
                    break;
                }
                continue; // newly blocked units were just recorded; look again
            }
            if let Some(outcome) = running.next().await {
                done.insert(outcome.unit.id.clone(), outcome);
            }
        }
        for unit in waiting {
            let outcome = if mission.rt.cancel.is_cancelled() {
                UnitOutcome::interrupted(&unit)
            } else {
                UnitOutcome::out_of_budget(&unit)
            };
            done.insert(unit.id.clone(), outcome);
        }
        // Report in plan order.
        units.iter().filter_map(|u| done.remove(&u.id)).collect()
    })
}

/// Splits off the units whose dependencies are all done: those that can run, and those that never will.
pub(super) fn next_ready(
    waiting: &mut Vec<UnitSpec>,
    done: &HashMap<String, UnitOutcome>,
) -> (Vec<UnitSpec>, Vec<UnitSpec>) {
    let mut ready = Vec::new();
    let mut blocked = Vec::new();
    waiting.retain(|unit| {
        let states: Vec<Option<UnitState>> = unit
            .depends_on
            .iter()
            .map(|d| done.get(d).map(|o| o.state))
            .collect();
        if states
            .iter()
            .any(|s| matches!(s, Some(UnitState::Failed | UnitState::Skipped)))
        {
            blocked.push(unit.clone());
            false
        } else if states.iter().all(|s| *s == Some(UnitState::Passed)) {
            ready.push(unit.clone());
            false
        } else {
            true
        }
    });
    (ready, blocked)
}

fn run_unit(
    mission: Arc<Mission>,
    unit: UnitSpec,
    depth: u32,
    target: Arc<MergeTarget>,
    round: u32,
) -> BoxFuture<'static, UnitOutcome> {
    Box::pin(async move {
        let run = UnitRun {
            mission: mission.clone(),
            unit: unit.clone(),
            depth,
            round,
        };
        let outcome = run.execute(&target).await;
        if !outcome.interrupted {
            let detail = if outcome.state == UnitState::Passed {
                Some(first_chars(&outcome.summary, 200)).filter(|s| !s.is_empty())
            } else {
                outcome.reason.clone()
            };
            mission.set_state(&unit, round, outcome.state, 0, detail);
        }
        // A passed unit runs no worker again; a failed one may be retried in the next round, and a
        // message for it waits for that (or for the mission's end, which says it was not delivered).
        if outcome.state == UnitState::Passed {
            let waiting = mission.rt.control.mailbox().close(&unit.id);
            crate::inbox::not_delivered(&mission.rt.bus, waiting, "the unit had passed");
        }
        outcome
    })
}

fn first_chars(text: &str, max: usize) -> String {
    text.trim().chars().take(max).collect()
}
