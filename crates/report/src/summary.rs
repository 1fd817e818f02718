//! The top of the report: title, how the mission ended, notices, and the facts table.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use orchestrator_protocol::Outcome;
use orchestrator_view::{clock, first_line, human_tokens, MissionView};

use crate::markdown::{cell_code, code, inline, paragraphs};
use crate::{dollars, short};

pub fn render(view: &MissionView) -> String {
    let mut out = String::new();
    let title = view.objective.lines().next().unwrap_or_default();
    let title = if title.trim().is_empty() {
        "(no objective recorded)"
    } else {
        title
    };
    let _ = writeln!(out, "# Mission report: {}\n", inline(title));
    let _ = writeln!(out, "{}\n", outcome_line(view));
    if let Some(rest) = view.summary.as_deref().and_then(|s| s.trim().split_once('\n')) {
        let _ = writeln!(out, "{}", paragraphs(rest.1, ""));
    }
    if view.outcome.is_none() {
        out.push_str(&still_open(view));
    }
    if !view.notices.is_empty() {
        let _ = writeln!(out, "Notices:\n");
        for notice in &view.notices {
            let _ = writeln!(out, "- {}", inline(notice));
        }
        out.push('\n');
    }
    out.push_str(&facts(view));
    if view.objective.trim().lines().count() > 1 {
        let _ = writeln!(out, "\nThe objective in full:\n");
        out.push_str(&paragraphs(&view.objective, "> "));
    }
    out
}

/// How it ended, in one line; an unfinished mission says so first, since everything below is partial.
fn outcome_line(view: &MissionView) -> String {
    let summary = view
        .summary
        .as_deref()
        .map(|s| format!(" {}", inline(first_line(s.trim()))))
        .unwrap_or_default();
    match view.outcome {
        Some(Outcome::Sealed) if view.unverified => format!("**Sealed without verification.**{summary}"),
        Some(Outcome::Sealed) => format!("**Sealed.**{summary}"),
        Some(Outcome::Unsealed) => format!("**Not sealed.**{summary}"),
        Some(Outcome::Interrupted) => {
            format!("**Interrupted** — `orchestrator resume` continues it.{summary}")
        }
        None => {
            let phase = view.phase.map(|p| p.as_str()).unwrap_or("starting");
            let as_of = view.last_event_at.map(utc).unwrap_or_else(|| "its start".into());
            format!(
                "**Not finished.** This report shows the mission as of its last event ({as_of}), in phase \
                 {phase}, round {}. It may still be running; if it was stopped, `orchestrator resume` \
                 continues it.",
                view.round.max(1)
            )
        }
    }
}

/// What an unfinished mission had under way at its last event.
fn still_open(view: &MissionView) -> String {
    let mut out = String::new();
    if view.paused {
        out.push_str("The dispatch of new units was paused.\n\n");
    }
    let live: Vec<String> = view
        .live_sessions()
        .map(|s| match &s.unit {
            Some(unit) => format!("{} on {}", code(&s.id), code(unit)),
            None => code(&s.id),
        })
        .collect();
    if !live.is_empty() {
        let _ = writeln!(out, "Sessions open at the last event: {}.\n", live.join(", "));
    }
    out
}

fn facts(view: &MissionView) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Mission", cell_code(&view.mission)),
        (
            "Objective",
            inline(view.objective.lines().next().unwrap_or_default()),
        ),
    ];
    if let Some(start) = view.started_at {
        rows.push(("Started", utc(start)));
        let end = view.finished_at.or(view.last_event_at).unwrap_or(start);
        let finished = match view.finished_at {
            Some(at) => utc(at),
            None => "not finished".to_string(),
        };
        rows.push(("Finished", finished));
        let so_far = if view.finished_at.is_some() { "" } else { " so far" };
        rows.push(("Duration", format!("{}{so_far}", clock(end - start))));
    }
    rows.push(("Base → result", commits(view)));
    if let Some(branch) = &view.user_branch {
        rows.push(("Your branch", cell_code(branch)));
    }
    rows.push(("Integration branch", cell_code(&view.integration_branch)));
    rows.push(("Rounds", view.round.max(1).to_string()));
    rows.push(("Units", unit_counts(view)));
    rows.push(("Tokens", tokens(view)));
    let models: BTreeSet<&str> = view.sessions.iter().map(|s| s.model.as_str()).collect();
    if !models.is_empty() {
        let models: Vec<String> = models.into_iter().map(cell_code).collect();
        rows.push(("Models", models.join(", ")));
    }
    if !view.instructions.is_empty() {
        rows.push(("Project instructions", project_files(&view.instructions)));
    }
    if !view.role_files.is_empty() {
        rows.push(("Role files", project_files(&view.role_files)));
    }
    let mut out = String::from("| | |\n|---|---|\n");
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    out
}

/// The project files every session was given, each as code, a cut one marked.
fn project_files(files: &[orchestrator_protocol::ProjectFile]) -> String {
    files
        .iter()
        .map(|f| {
            format!(
                "{}{}",
                cell_code(&f.path),
                if f.cut { " (cut to the limit)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn commits(view: &MissionView) -> String {
    let base = if view.base_commit.is_empty() {
        "(unknown)".to_string()
    } else {
        cell_code(short(&view.base_commit))
    };
    let result = match &view.result_commit {
        Some(commit) => cell_code(short(commit)),
        None if view.outcome.is_some() => "no result commit".to_string(),
        None => "not yet".to_string(),
    };
    format!("{base} → {result}")
}

fn unit_counts(view: &MissionView) -> String {
    let counts = view.counts();
    let mut parts = vec![
        format!("{} passed", counts.passed),
        format!("{} failed", counts.failed),
    ];
    if counts.skipped > 0 {
        parts.push(format!("{} skipped", counts.skipped));
    }
    if counts.active + counts.queued > 0 {
        parts.push(format!("{} unfinished", counts.active + counts.queued));
    }
    format!("{} in all: {}", counts.total, parts.join(", "))
}

fn tokens(view: &MissionView) -> String {
    let cost = match dollars(view.cost_usd).as_str() {
        "–" => String::new(),
        cost => format!(", estimated {cost}"),
    };
    let usage = &view.usage;
    let mut cached = String::new();
    if usage.cache_read_tokens > 0 {
        cached.push_str(&format!(", cache read {}", human_tokens(usage.cache_read_tokens)));
    }
    if usage.cache_write_tokens > 0 {
        cached.push_str(&format!(
            ", cache write {}",
            human_tokens(usage.cache_write_tokens)
        ));
    }
    format!(
        "{} (input {}{cached}, output {}){cost}",
        human_tokens(usage.total()),
        human_tokens(usage.input_tokens),
        human_tokens(usage.output_tokens)
    )
}

pub fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use orchestrator_protocol::{Event, EventEnvelope, TokenUsage};
    use orchestrator_view::fixture::sealed_mission;

    use super::*;

    fn ended(outcome: Outcome, summary: &str) -> MissionView {
        let mut events: Vec<EventEnvelope> = sealed_mission();
        if let Some(last) = events.last_mut() {
            last.event = Event::MissionFinished {
                outcome,
                summary: summary.into(),
                usage: TokenUsage::default(),
                result_commit: None,
                unverified: false,
            };
        }
        MissionView::from_events(&events)
    }

    #[test]
    fn an_interrupted_mission_says_how_to_continue() {
        let top = render(&ended(Outcome::Interrupted, "cancelled"));
        assert!(
            top.contains("**Interrupted** — `orchestrator resume` continues it. cancelled\n"),
            "{top}"
        );
        assert!(
            top.contains("| Base → result | `0123456789` → no result commit |"),
            "{top}"
        );
    }

    #[test]
    fn a_long_summary_keeps_its_first_line_up_top_and_the_rest_below() {
        let top = render(&ended(
            Outcome::Unsealed,
            "2 units failed\n# t1: tests fail\nsee | below",
        ));
        assert!(
            top.contains("**Not sealed.** 2 units failed\n\n\\# t1: tests fail\nsee \\| below\n"),
            "{top}"
        );
    }
}
