//! What the status and result tools say: one short paragraph for a person, and the data as JSON for
//! a model that wants the details.

use std::fmt::Write as _;
use std::path::Path;

use orchestrator_core::{MissionStatus, StatusReport};
use orchestrator_protocol::{Event, Outcome, TokenUsage, UnitState};
use serde::Serialize;

use crate::error::ToolError;

/// One line per fact: where the mission stands, its units, sessions and tokens.
pub fn summary(report: &StatusReport) -> String {
    let mut out = String::new();
    let phase = report.phase.map(|p| p.as_str()).unwrap_or("starting");
    let _ = writeln!(
        out,
        "Mission {}: {} (phase {phase}, round {}).",
        report.mission,
        state_words(report),
        report.round.max(1)
    );
    let _ = writeln!(out, "Objective: {}", first_line(&report.objective));
    let _ = writeln!(out, "Units: {}.", unit_counts(report));
    let active = report.sessions.iter().filter(|s| s.active).count();
    let _ = writeln!(
        out,
        "Sessions: {active} active, {} in all. Tokens: {}.",
        report.sessions.len(),
        report.usage.total()
    );
    let _ = write!(out, "Integration branch: {}.", report.integration_branch);
    if let Some(plan) = &report.waiting_plan {
        let _ = write!(
            out,
            "\nPlan {} waits for the user's approval; nothing runs until then. Show it to the user and pass \
             their answer to approve_plan (approve, reject with feedback, or edit):",
            plan.attempt
        );
        for line in orchestrator_view::plan_outline(&plan.units) {
            let _ = write!(out, "\n  {line}");
        }
    }
    out
}

fn state_words(report: &StatusReport) -> &'static str {
    match (report.status, report.running) {
        (MissionStatus::Running, true) => "running",
        // The store says running but no process runs it: it was killed.
        (MissionStatus::Running, false) | (MissionStatus::Interrupted, _) => {
            // Said so an MCP client can act on it, not only a person at a shell.
            "interrupted, not running (start_mission continues it; so does `orchestrator resume`)"
        }
        (MissionStatus::Sealed, _) => "sealed (verified and applied)",
        (MissionStatus::Unsealed, _) => "finished without being sealed",
        (MissionStatus::Abandoned, _) => "abandoned (its worktrees and branches were removed; never resumed)",
    }
}

fn unit_counts(report: &StatusReport) -> String {
    if report.units.is_empty() {
        return "none planned yet".into();
    }
    let count = |states: &[UnitState]| report.units.iter().filter(|u| states.contains(&u.state)).count();
    let passed = count(&[UnitState::Passed]);
    let failed = count(&[UnitState::Failed, UnitState::Skipped]);
    let queued = count(&[UnitState::Queued]);
    let active = report.units.len() - passed - failed - queued;
    format!(
        "{passed} of {} passed, {active} in progress, {queued} queued, {failed} failed or skipped",
        report.units.len()
    )
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The status a calling model needs to decide what to do next, without every evidence tail and
/// session: a big mission's full status runs to hundreds of kilobytes, which a model pays for.
#[derive(Debug, Clone, Serialize)]
pub struct CompactStatus<'a> {
    pub mission: &'a str,
    pub status: MissionStatus,
    pub running: bool,
    pub phase: Option<&'static str>,
    pub round: u32,
    pub outcome: Option<Outcome>,
    pub usage: TokenUsage,
    pub cost_usd: f64,
    pub integration_branch: &'a str,
    pub units: Vec<CompactUnit<'a>>,
    /// Sessions running now, as `role unit` (or the session name for mission-wide ones).
    pub active_sessions: Vec<String>,
    /// Stage 2 commands that failed, as `command (exit N)`.
    pub integration_failures: Vec<String>,
    /// The plan waiting for the user's approval, with every unit's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_plan: Option<&'a orchestrator_core::WaitingPlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompactUnit<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub state: UnitState,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
    /// The unit's failing build/test commands, as `command (exit N)`; their output is in `detail: true`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

pub fn compact(report: &StatusReport) -> CompactStatus<'_> {
    CompactStatus {
        mission: &report.mission,
        status: report.status,
        running: report.running,
        phase: report.phase.map(|p| p.as_str()),
        round: report.round,
        outcome: report.outcome,
        usage: report.usage,
        cost_usd: report.cost_usd,
        integration_branch: &report.integration_branch,
        units: report
            .units
            .iter()
            .map(|u| CompactUnit {
                id: &u.id,
                title: &u.title,
                state: u.state,
                attempts: u.attempts,
                detail: u.detail.as_deref().map(first_line),
                failures: failures(&u.evidence),
            })
            .collect(),
        active_sessions: report
            .sessions
            .iter()
            .filter(|s| s.active)
            .map(|s| match &s.unit {
                Some(unit) => format!("{} {unit}", s.role),
                None => s.id.clone(),
            })
            .collect(),
        integration_failures: failures(&report.integration_evidence),
        waiting_plan: report.waiting_plan.as_ref(),
    }
}

fn failures(evidence: &[orchestrator_protocol::Evidence]) -> Vec<String> {
    evidence
        .iter()
        .filter(|e| !e.passed())
        .map(|e| match (e.exit_code, e.timed_out) {
            (_, true) => format!("{} (timed out)", e.command),
            (Some(code), _) => format!("{} (exit {code})", e.command),
            (None, _) => format!("{} (killed)", e.command),
        })
        .collect()
}

/// A finished mission's result, as its `mission_finished` event recorded it.
#[derive(Debug, Clone, Serialize)]
pub struct MissionResult {
    pub mission: String,
    pub status: MissionStatus,
    pub running: bool,
    pub outcome: Option<Outcome>,
    pub summary: Option<String>,
    pub integration_branch: String,
    /// Whether the integration branch still exists: a finished mission removes it once the user's
    /// branch has all of it.
    pub branch_kept: bool,
    pub result_commit: Option<String>,
    pub usage: TokenUsage,
}

/// Reads the last `mission_finished` event of the report's mission from the repository's store.
/// `branch_kept`: whether the mission's integration branch still exists.
pub fn result(root: &Path, report: &StatusReport, branch_kept: bool) -> Result<MissionResult, ToolError> {
    let store = orchestrator_core::open_store_in(root)?;
    let events = store
        .events_after(&report.mission, None)
        .map_err(|e| ToolError::Other(format!("cannot read the mission's events: {e}")))?;
    let finished = events.iter().rev().find_map(|envelope| match &envelope.event {
        Event::MissionFinished {
            outcome,
            summary,
            result_commit,
            ..
        } => Some((*outcome, summary.clone(), result_commit.clone())),
        _ => None,
    });
    let (outcome, summary, result_commit) = match finished {
        // A resumed mission may have finished once as interrupted; that is not its result now.
        Some((outcome, summary, commit)) if !report.running => (Some(outcome), Some(summary), commit),
        _ => (None, None, None),
    };
    Ok(MissionResult {
        mission: report.mission.clone(),
        status: report.status,
        running: report.running,
        outcome,
        summary,
        integration_branch: report.integration_branch.clone(),
        branch_kept,
        result_commit,
        usage: report.usage,
    })
}

/// The result for a person: the outcome and what to do next, or the progress while it runs.
pub fn result_words(result: &MissionResult, report: &StatusReport) -> String {
    if result.running {
        return format!(
            "Mission {} is still running; no result yet.\n{}",
            result.mission,
            summary(report)
        );
    }
    let Some(outcome) = result.outcome else {
        return format!(
            "Mission {} has no result: it stopped before finishing. Call start_mission to continue it (or run `orchestrator resume` in the repository).\n{}",
            result.mission,
            summary(report)
        );
    };
    let mut out = String::new();
    let headline = match outcome {
        Outcome::Sealed if report.unverified => {
            "sealed without verification: integrated, judged by reviews only (--no-verify)"
        }
        Outcome::Sealed => "sealed: verified and integrated",
        Outcome::Unsealed => "finished without being sealed",
        Outcome::Interrupted => "interrupted (start_mission continues it; so does `orchestrator resume`)",
    };
    let _ = writeln!(out, "Mission {}: {headline}.", result.mission);
    if let Some(summary) = &result.summary {
        let _ = writeln!(out, "Summary: {summary}");
    }
    if result.branch_kept {
        let _ = writeln!(out, "Integration branch: {}", result.integration_branch);
    } else {
        let _ = writeln!(
            out,
            "Integration branch: {} (removed: your branch already has all of it)",
            result.integration_branch
        );
    }
    let commit = result.result_commit.as_deref().unwrap_or("none");
    let _ = write!(out, "Result commit: {commit}. Tokens: {}.", result.usage.total());
    out
}
