//! `orchestrator status`: the mission, its task tree, sessions, tokens and evidence.

use std::fmt::Write as _;
use std::path::Path;

use orchestrator_core::{CandidatePick, LeaderStatus, MissionStatus, StatusReport, UnitStatus};
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
            if let Err(e) = out::text(&render(&report)) {
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

/// Who leads the mission (its leader lease), and until when.
fn leader_line(leader: &LeaderStatus) -> String {
    let until = leader
        .expires_at
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "an unknown time".into());
    let state = if leader.expired {
        format!("lease expired at {until}; `orchestrator resume` takes the mission over")
    } else {
        format!("lease until {until}, renewed while it runs")
    };
    format!(
        "leader: {} on {} (token {}, {state})",
        orchestrator_core::leader::shown(&leader.holder),
        orchestrator_core::leader::shown(&leader.host),
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
