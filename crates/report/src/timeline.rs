//! The timeline: what happened when, in minutes and seconds from the mission's start. Only what a
//! reader follows — phases, plans, units starting, failing checks, retries, merges, conflicts,
//! notices — not every model or tool call.

use std::collections::HashMap;
use std::fmt::Write as _;

use orchestrator_protocol::{Event, EventEnvelope, UnitState, Verdict};
use orchestrator_view::{clock, describe, first_line, MissionView};

use crate::markdown::inline;
use crate::summary::utc;

pub fn render(view: &MissionView, events: &[EventEnvelope]) -> String {
    let mut out = String::from("## Timeline\n\n");
    let Some(start) = view.started_at else {
        out.push_str("No event was recorded.\n");
        return out;
    };
    let _ = writeln!(out, "Minutes and seconds from the start ({}).\n", utc(start));
    let mut attempts: HashMap<&str, u32> = HashMap::new();
    for envelope in events {
        if let Some(line) = line(&envelope.event, &mut attempts) {
            let _ = writeln!(out, "- `{}` {}", clock(envelope.at - start), inline(&line));
        }
    }
    out
}

/// The event's line, or `None` for events the timeline leaves out. `attempts` remembers each unit's
/// attempt, so a unit shows once when it starts and once per retry.
fn line<'a>(event: &'a Event, attempts: &mut HashMap<&'a str, u32>) -> Option<String> {
    match event {
        Event::UnitState {
            unit,
            state,
            attempt,
            detail,
        } => unit_line(unit, *state, *attempt, detail.as_deref(), attempts),
        Event::MissionStarted { .. }
        | Event::PhaseChanged { .. }
        | Event::PlanAccepted { .. }
        | Event::PlanRejected { .. }
        | Event::UnitsSpawned { .. }
        | Event::CandidatePicked { .. }
        | Event::MergeConflict { .. }
        | Event::Merged { .. }
        | Event::RoundFinished { .. }
        | Event::MissionResumed { .. }
        | Event::DispatchChanged { .. }
        | Event::Notice { .. }
        | Event::HookRan { .. }
        | Event::UserMessage { .. }
        | Event::MissionFinished { .. } => describe(event),
        // Failures explain the retries that follow them; passing runs and reviews are in their sections.
        Event::EvidenceRecorded { evidence, .. } if !evidence.passed() => describe(event),
        Event::CandidateFinished { passed: false, .. } => describe(event),
        Event::ReviewFinished { unit: None, .. } => describe(event),
        Event::ReviewFinished { review, .. } if review.verdict == Verdict::Fail => describe(event),
        _ => None,
    }
}

fn unit_line<'a>(
    unit: &'a str,
    state: UnitState,
    attempt: u32,
    detail: Option<&str>,
    attempts: &mut HashMap<&'a str, u32>,
) -> Option<String> {
    let detail = detail.map(|d| format!(": {}", first_line(d))).unwrap_or_default();
    match state {
        UnitState::Running => match attempts.get(unit).copied() {
            None => {
                attempts.insert(unit, attempt);
                Some(format!("{unit} started"))
            }
            // Attempt 0: a parent picks up again once the units it spawned are done.
            Some(_) if attempt == 0 => Some(format!("{unit} continues after the units it spawned")),
            Some(previous) if attempt > previous => {
                attempts.insert(unit, attempt);
                Some(format!("{unit} attempt {attempt}{detail}"))
            }
            Some(_) => None,
        },
        UnitState::Passed => Some(format!("{unit} passed")),
        UnitState::Failed => Some(format!("{unit} failed after attempt {attempt}{detail}")),
        UnitState::Skipped => Some(format!("{unit} skipped{detail}")),
        _ => None,
    }
}
