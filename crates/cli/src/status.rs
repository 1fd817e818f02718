//! `orchestrator status`: the mission, its task tree, sessions, tokens and evidence.

use std::fmt::Write as _;
use std::path::Path;

use orchestrator_core::leader::shown;
use orchestrator_core::{
    CandidatePick, LeaderStatus, MissionStatus, StatusReport, UnitStatus, WorkUnitState, WorkUnitStatus,
};
use orchestrator_protocol::UnitState;

use crate::out::{self, errln, outln};

pub async fn run(repo: &Path, mission: Option<&str>, json: bool) -> u8 {
    let root = match orchestrator_core::repo_root(repo).await {
        Ok(root) => root,
        Err(e) => {
            errln!("error: {e}");
            return e.exit_code() as u8;
        }
    };
    match orchestrator_core::status_of(&root, mission) {
        Ok(report) if json => match serde_json::to_string_pretty(&report) {
            Ok(text) => {
                outln!("{text}");
                0
            }
            Err(e) => {
                errln!("error: {e}");
                1
            }
        },
        Ok(report) => {
            if let Err(e) = out::text(&orchestrator_view::terminal_safe(&render(&report))) {
                out::stdout_failed(e);
            }
            0
        }
        Err(e) => {
            errln!("error: {e}");
            e.exit_code() as u8
        }
    }
}

/// One phrase for where the mission stands: the recorded status and whether its process lives are one
/// fact to a reader ("running", or "interrupted" when a killed run left it marked running).
fn state_words(status: MissionStatus, running: bool, unverified: bool) -> &'static str {
    match (status, running) {
        (_, true) => "running",
        (MissionStatus::Sealed, false) if unverified => "sealed without verification",
        (MissionStatus::Running, false) => {
            "interrupted (its process is gone; `orchestrator resume` continues it)"
        }
        (MissionStatus::Interrupted, false) => "interrupted (`orchestrator resume` continues it)",
        (MissionStatus::Sealed, false) => "sealed",
        (MissionStatus::Unsealed, false) => "not sealed",
        (MissionStatus::Abandoned, false) => {
            "abandoned (its worktrees and branches were removed; its record stays)"
        }
    }
}

/// The status as a person reads it: a header, the unit tree, sessions and tokens.
pub fn render(report: &StatusReport) -> String {
    let mut out = String::new();
    let phase = report.phase.map(|p| p.as_str()).unwrap_or("starting");
    let _ = writeln!(
        out,
        "mission {} — {} (phase {phase}, round {})",
        report.mission,
        state_words(report.status, report.running, report.unverified),
        report.round.max(1)
    );
    let _ = writeln!(
        out,
        "objective: {}",
        report.objective.lines().next().unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "base {} → {}",
        short(&report.base_commit),
        report.integration_branch
    );
    if let Some(leader) = &report.leader {
        let _ = writeln!(out, "{}", leader_line(leader));
    }
    render_work_queue(&mut out, &report.work_units);
    let _ = writeln!(out, "units:");
    for unit in report.units.iter().filter(|u| u.parent.is_none()) {
        render_unit(&mut out, report, unit, 1);
    }
    let active = report.sessions.iter().filter(|s| s.active).count();
    let _ = writeln!(
        out,
        "sessions: {active} active, {} in all · tokens {} (in {}{}, out {}){}",
        report.sessions.len(),
        report.usage.total(),
        report.usage.input_tokens,
        cache_parts(&report.usage),
        report.usage.output_tokens,
        cost(report.cost_usd)
    );
    for role in &report.roles {
        let _ = writeln!(
            out,
            "  {}: {} tokens{}",
            role.role,
            role.usage.total(),
            cost(role.cost_usd)
        );
    }
    for session in report.sessions.iter().filter(|s| s.active) {
        let unit = session.unit.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "  {} {} on {unit} ({}, {} turns)",
            session.id, session.role, session.model, session.turns
        );
        if let Some(sandbox) = &session.sandbox {
            let _ = writeln!(out, "    sandbox: {sandbox}");
        }
    }
    if let Some(baseline) = &report.baseline {
        let event = orchestrator_protocol::Event::BaselineVerified {
            baseline: baseline.clone(),
        };
        if let Some(line) = orchestrator_view::describe(&event) {
            let _ = writeln!(out, "{line}");
        }
    }
    for e in &report.integration_evidence {
        let _ = writeln!(
            out,
            "integration {}: `{}` → {}",
            e.kind,
            e.command,
            exit(e.exit_code, e.timed_out)
        );
    }
    out
}

/// Best of N: which candidate the unit went on with, who chose it and the first line of why (the
/// reasons are the reviewer's words, so one line, cut).
fn pick_line(pick: &CandidatePick) -> String {
    let by = if pick.by_runtime {
        "the runtime's rule"
    } else {
        "the reviewer"
    };
    let passing = match pick.passing.as_slice() {
        [] => "none passed".to_string(),
        list => {
            let numbers: Vec<String> = list.iter().map(u32::to_string).collect();
            format!("passing: {}", numbers.join(", "))
        }
    };
    let reasons: String = pick
        .reasons
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(120)
        .collect();
    format!(
        "picked candidate {} by {by} ({passing}): {reasons}",
        pick.candidate
    )
}

fn render_unit(out: &mut String, report: &StatusReport, unit: &UnitStatus, depth: usize) {
    let mark = match unit.state {
        UnitState::Passed => "x",
        UnitState::Failed | UnitState::Skipped => "!",
        _ => " ",
    };
    let attempts = if unit.attempts > 1 {
        format!(", attempt {}", unit.attempts)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{}[{mark}] {} {} — {}{attempts}",
        "  ".repeat(depth),
        unit.id,
        unit.title,
        unit.state
    );
    if let Some(pick) = &unit.pick {
        let _ = writeln!(out, "{}    {}", "  ".repeat(depth), pick_line(pick));
    }
    if let Some(branch) = unit.branch.as_ref().filter(|_| !unit.state.is_terminal()) {
        let _ = writeln!(out, "{}    branch {branch}", "  ".repeat(depth));
    }
    for e in unit.evidence.iter().filter(|e| !e.passed()) {
        let _ = writeln!(
            out,
            "{}    {} `{}` → {}",
            "  ".repeat(depth),
            e.kind,
            e.command,
            exit(e.exit_code, e.timed_out)
        );
    }
    if let Some(detail) = unit
        .detail
        .as_ref()
        .filter(|_| matches!(unit.state, UnitState::Failed | UnitState::Skipped))
    {
        let _ = writeln!(
            out,
            "{}    {}",
            "  ".repeat(depth),
            detail.lines().next().unwrap_or_default()
        );
    }
    for child in report
        .units
        .iter()
        .filter(|c| c.parent.as_deref() == Some(unit.id.as_str()))
    {
        render_unit(out, report, child, depth + 1);
    }
}

/// The most leased units listed one by one; a queue is as wide as the mission's `max_parallel`, so
/// more is a store gone wrong (or hostile), and `status --json` still lists them all.
const MAX_HOLDERS_SHOWN: usize = 20;

/// The work queue: how many units stand where, and who holds each leased one. Nothing for a
/// mission without one (it runs its sessions itself).
fn render_work_queue(out: &mut String, units: &[WorkUnitStatus]) {
    if units.is_empty() {
        return;
    }
    let count = |state: WorkUnitState| units.iter().filter(|u| u.state == state).count();
    let _ = writeln!(
        out,
        "work queue: {} leased, {} ready, {} done, {} failed",
        count(WorkUnitState::Leased),
        count(WorkUnitState::Ready),
        count(WorkUnitState::Done),
        count(WorkUnitState::Failed)
    );
    let leased: Vec<&WorkUnitStatus> = units
        .iter()
        .filter(|u| u.state == WorkUnitState::Leased)
        .collect();
    for unit in leased.iter().take(MAX_HOLDERS_SHOWN) {
        let _ = writeln!(out, "  {}", holder_line(unit));
    }
    if leased.len() > MAX_HOLDERS_SHOWN {
        let _ = writeln!(
            out,
            "  … and {} more leased (`orchestrator status --json` lists them all)",
            leased.len() - MAX_HOLDERS_SHOWN
        );
    }
}

/// Who holds a leased unit and until when. Worker and host names come from other hosts: escaped
/// and cut, as the leader's are.
fn holder_line(unit: &WorkUnitStatus) -> String {
    let holder = shown(unit.holder.as_deref().unwrap_or("an unknown worker"));
    let host = shown(unit.host.as_deref().unwrap_or("an unknown host"));
    let until = shown_time(unit.expires_at);
    let lease = if unit.expired {
        format!(
            "lease expired at {until} (held by {holder} on {host}, token {}); the next claim takes it over",
            unit.token
        )
    } else {
        format!(
            "held by {holder} on {host} (token {}, lease until {until})",
            unit.token
        )
    };
    format!("{} (attempt {}): {lease}", shown(&unit.unit), unit.attempt)
}

fn shown_time(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "an unknown time".into())
}

/// Who leads the mission (its leader lease), and until when.
fn leader_line(leader: &LeaderStatus) -> String {
    let until = shown_time(leader.expires_at);
    let state = if leader.expired {
        format!("lease expired at {until}; `orchestrator resume` takes the mission over")
    } else {
        format!("lease until {until}, renewed while it runs")
    };
    format!(
        "leader: {} on {} (token {}, {state})",
        shown(&leader.holder),
        shown(&leader.host),
        leader.token
    )
}

fn cost(usd: f64) -> String {
    if usd > 0.0 {
        format!(" · ~${usd:.4}")
    } else {
        String::new()
    }
}

fn exit(code: Option<i32>, timed_out: bool) -> String {
    match (code, timed_out) {
        (_, true) => "timed out".into(),
        (Some(code), _) => format!("exit {code}"),
        (None, _) => "killed".into(),
    }
}

fn short(hash: &str) -> &str {
    hash.get(..10).unwrap_or(hash)
}

/// ", cache read R, cache write W" where the prompt cache was used; nothing otherwise.
fn cache_parts(usage: &orchestrator_protocol::TokenUsage) -> String {
    let mut text = String::new();
    if usage.cache_read_tokens > 0 {
        let _ = write!(text, ", cache read {}", usage.cache_read_tokens);
    }
    if usage.cache_write_tokens > 0 {
        let _ = write!(text, ", cache write {}", usage.cache_write_tokens);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, state: WorkUnitState, holder: Option<(&str, &str)>, expired: bool) -> WorkUnitStatus {
        WorkUnitStatus {
            unit: name.into(),
            attempt: 1,
            state,
            holder: holder.map(|(h, _)| h.to_string()),
            host: holder.map(|(_, h)| h.to_string()),
            token: 3,
            expires_at: chrono::DateTime::from_timestamp_millis(1_800_000_000_000),
            expired,
            takeovers: 0,
            give_backs: 0,
        }
    }

    fn queue(units: &[WorkUnitStatus]) -> String {
        let mut out = String::new();
        render_work_queue(&mut out, units);
        out
    }

    #[test]
    fn a_mission_without_a_work_queue_shows_none() {
        assert_eq!(queue(&[]), "");
    }

    #[test]
    fn the_work_queue_counts_units_and_names_each_holder() {
        let shown = queue(&[
            unit("a", WorkUnitState::Leased, Some(("w1", "host-a")), false),
            unit("b", WorkUnitState::Leased, Some(("w2", "host-b")), true),
            unit("c", WorkUnitState::Ready, None, false),
            unit("d", WorkUnitState::Done, Some(("w1", "host-a")), false),
        ]);
        assert_eq!(
            shown,
            "work queue: 2 leased, 1 ready, 1 done, 0 failed\n  \
             a (attempt 1): held by w1 on host-a (token 3, lease until 2027-01-15 08:00:00 UTC)\n  \
             b (attempt 1): lease expired at 2027-01-15 08:00:00 UTC (held by w2 on host-b, token 3); the \
             next claim takes it over\n"
        );
    }

    #[test]
    fn names_from_other_hosts_are_escaped_and_cut_and_a_flood_is_cut_short() {
        let long = "w".repeat(5_000);
        let mut units = vec![unit(
            "a\u{1b}[2J",
            WorkUnitState::Leased,
            Some(("evil\n\u{1b}]0;pwned\u{7}", &long)),
            false,
        )];
        units
            .extend((0..500).map(|n| unit(&format!("u{n}"), WorkUnitState::Leased, Some(("w", "h")), false)));
        let shown = queue(&units);
        assert!(!shown.contains('\u{1b}') && !shown.contains('\u{7}'), "{shown}");
        assert!(shown.contains("a\\u{1b}[2J (attempt 1): held by evil\\n\\u{1b}]0;pwned\\u{7} on www"));
        assert!(shown.lines().all(|l| l.chars().count() < 300), "names are cut");
        assert_eq!(shown.lines().count(), 1 + MAX_HOLDERS_SHOWN + 1, "{shown}");
        assert!(shown.ends_with("… and 481 more leased (`orchestrator status --json` lists them all)\n"));
    }
}
