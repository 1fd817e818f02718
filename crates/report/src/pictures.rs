//! The mission as two pictures, in Mermaid so that they render wherever Markdown with Mermaid does
//! (GitHub, GitLab, many editors): the plan as a dependency graph (units coloured by state, spawned
//! units under their parent) and the work as a Gantt chart (one section per unit, one bar per
//! stretch of its life: waiting, work, verification, review, merge; a failed attempt's bars marked).
//!
//! Both are drawn from the view's fold (`UnitView::spans`), the same data the dashboard and the
//! terminal draw. Titles come from models: everything put in a diagram is reduced to characters
//! that cannot end a label, a line or the block.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use orchestrator_protocol::UnitState;
use orchestrator_view::{MissionView, UnitSpan, UnitView};

/// Units drawn at most; a larger plan says how many were left out.
pub const MAX_UNITS: usize = 300;
/// Characters of a title kept in a diagram.
const TITLE_CHARS: usize = 40;

pub fn render(view: &MissionView) -> String {
    let mut out = String::from("## Pictures\n\n");
    if view.units.is_empty() {
        out.push_str("No plan was accepted, so there is nothing to draw.\n");
        return out;
    }
    let _ = writeln!(
        out,
        "The plan, each unit coloured by its state (an arrow from a unit to one that waits for it; a dotted \
         one to a unit it spawned):\n\n```mermaid\n{}```\n",
        graph(view)
    );
    let _ = writeln!(
        out,
        "What ran when, one row per unit (wait: for dependencies or a slot; a failed attempt's bars in red):\
         \n\n```mermaid\n{}```",
        gantt(view)
    );
    out
}

/// `graph TD`: nodes `u<index>` (unit ids may hold characters Mermaid reads as syntax).
pub fn graph(view: &MissionView) -> String {
    let units = drawn(view);
    let node = |id: &str| units.iter().position(|u| u.id == id).map(|i| format!("u{i}"));
    let mut out = String::from("graph TD\n");
    for (i, unit) in units.iter().enumerate() {
        let label = format!("{} · {}", clean(&unit.id, 24), clean(&unit.title, TITLE_CHARS));
        let _ = writeln!(out, "  u{i}[\"{label}\"]:::{}", unit.state.as_str());
    }
    for unit in units {
        let Some(to) = node(&unit.id) else { continue };
        for from in unit.depends_on.iter().filter_map(|d| node(d)) {
            let _ = writeln!(out, "  {from} --> {to}");
        }
        if let Some(parent) = unit.parent.as_deref().and_then(node) {
            let _ = writeln!(out, "  {parent} -.-> {to}");
        }
    }
    if let Some(more) = view.units.len().checked_sub(MAX_UNITS).filter(|n| *n > 0) {
        let _ = writeln!(out, "  more[\"… and {more} more units\"]");
    }
    for (state, style) in STYLES {
        let _ = writeln!(out, "  classDef {} {style}", state.as_str());
    }
    out
}

pub(crate) const STYLES: [(UnitState, &str); 9] = [
    (UnitState::Queued, "fill:#f4f4f5,stroke:#a1a1aa,color:#27272a"),
    (UnitState::Running, "fill:#dbeafe,stroke:#2563eb,color:#1e3a8a"),
    (
        UnitState::WaitingOnChildren,
        "fill:#e0e7ff,stroke:#6366f1,color:#312e81",
    ),
    (UnitState::Verifying, "fill:#fef9c3,stroke:#ca8a04,color:#713f12"),
    (UnitState::Reviewing, "fill:#fae8ff,stroke:#a21caf,color:#701a75"),
    (UnitState::Merging, "fill:#ccfbf1,stroke:#0d9488,color:#134e4a"),
    (UnitState::Passed, "fill:#dcfce7,stroke:#16a34a,color:#14532d"),
    (UnitState::Failed, "fill:#fee2e2,stroke:#dc2626,color:#7f1d1d"),
    (
        UnitState::Skipped,
        "fill:#f4f4f5,stroke:#71717a,color:#71717a,stroke-dasharray:4",
    ),
];

/// `gantt` in seconds since 1970 (`dateFormat X`), shown as the time of day.
pub fn gantt(view: &MissionView) -> String {
    let mut out = String::from("gantt\n  dateFormat X\n  axisFormat %H:%M:%S\n");
    let now = view.finished_at.or(view.last_event_at);
    for unit in drawn(view) {
        let bars: Vec<String> = unit
            .spans
            .iter()
            .filter_map(|span| bar(unit, span, now))
            .collect();
        if bars.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  section {} {}",
            clean(&unit.id, 24),
            clean(&unit.title, TITLE_CHARS)
        );
        for line in bars {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

/// One stretch as a task line: `work #2 :crit, 1764842400, 1764842418`.
fn bar(unit: &UnitView, span: &UnitSpan, now: Option<DateTime<Utc>>) -> Option<String> {
    let end = span.to.or(now)?.max(span.from);
    let mut notes = Vec::new();
    if span.attempt > 1 {
        notes.push(format!("attempt {}", span.attempt));
    }
    if span.model_calls > 0 {
        let s = if span.model_calls == 1 { "" } else { "s" };
        notes.push(format!("{} model call{s}", span.model_calls));
    }
    if !span.conflicts.is_empty() {
        // File names are the model's choice: cleaned like any title.
        notes.push(format!("conflict in {}", clean(&span.conflicts.join(" "), 60)));
    }
    let mut name = stretch_name(span.state).to_string();
    if !notes.is_empty() {
        name.push_str(&format!(" ({})", notes.join(", ")));
    }
    let mut tags = Vec::new();
    if unit.span_failed(span) {
        tags.push("crit");
    }
    if span.to.is_none() {
        tags.push("active");
    }
    let tags: String = tags.iter().map(|t| format!("{t}, ")).collect();
    Some(format!(
        "{name} :{tags}{}, {}",
        span.from.timestamp(),
        end.timestamp()
    ))
}

pub(crate) fn stretch_name(state: UnitState) -> &'static str {
    match state {
        UnitState::Queued => "wait",
        UnitState::Running => "work",
        UnitState::WaitingOnChildren => "children",
        UnitState::Verifying => "verify",
        UnitState::Reviewing => "review",
        UnitState::Merging => "merge",
        UnitState::Passed => "passed",
        UnitState::Failed => "failed",
        UnitState::Skipped => "skipped",
    }
}

pub(crate) fn drawn(view: &MissionView) -> &[UnitView] {
    &view.units[..view.units.len().min(MAX_UNITS)]
}

/// Text a diagram can hold: letters, digits, spaces and harmless punctuation; the rest becomes a
/// space, so that a title can close neither a label (`"`, `]`), a task (`:`), a line, nor the block
/// (a backtick), and Mermaid reads no entity (`#`, `;`) or markup (`<`) in it.
fn clean(text: &str, max_chars: usize) -> String {
    let kept: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || " .,_-+/()'!?=&@%*".contains(c) {
                c
            } else {
                ' '
            }
        })
        .collect();
    let words: Vec<&str> = kept.split_whitespace().collect();
    let joined = words.join(" ");
    match joined.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", joined[..end].trim_end()),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_cannot_break_out_of_a_diagram() {
        let hostile = "x\"] --> y\n```\n<script>alert(1)</script> : done, 0, 9; #quot; `end`";
        let cleaned = clean(hostile, 200);
        for bad in ['"', ']', '\n', '`', '<', '>', ':', ';', '#'] {
            assert!(!cleaned.contains(bad), "{bad:?} in {cleaned}");
        }
        assert_eq!(clean("a   b", 10), "a b");
        assert_eq!(clean("abcdefghij", 4), "abcd…");
        assert_eq!(clean("Évaluer l'arbre", 40), "Évaluer l'arbre");
    }
}
