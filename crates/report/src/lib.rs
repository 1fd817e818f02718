//! `orchestrator report`: a mission as one self-contained Markdown document — the outcome, the plan,
//! its pictures (Mermaid), what each unit changed, the evidence and reviews it was judged on, tokens
//! and cost, and a timeline — or the same as one HTML file with the pictures inline ([`render_html`]).
//!
//! [`render`] is pure: it reads a folded [`MissionView`], the mission's events (for the timeline) and
//! the [`Changes`] the caller gathered from git, so the same input always gives the same document.
//! Everything models wrote (titles, descriptions, summaries) and everything commands printed is
//! escaped (see [`markdown`]), so it can neither break the document's structure nor inject formatting.

mod html;
pub mod markdown;
mod pictures;
mod plan;
mod summary;
mod svg;
mod timeline;
mod usage;
mod work;

use std::collections::BTreeMap;

use orchestrator_protocol::EventEnvelope;
use orchestrator_view::MissionView;

/// What the mission's commits changed, gathered from git by the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// By unit id: what the unit's merge commit brought in (the merge against its first parent).
    pub units: BTreeMap<String, Diff>,
    /// The whole mission: from its base commit to its result (or, unfinished, to the integration
    /// branch as it stands). `None` when there is nothing to compare yet.
    pub mission: Option<Diff>,
}

/// The files changed up to one commit.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    /// The commit the changes end at.
    pub commit: String,
    /// The files, or why git could not tell (e.g. the commit no longer exists).
    pub files: Result<Vec<FileChange>, String>,
}

/// One changed file and its line counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    /// Lines added; `None` for a binary file.
    pub added: Option<u64>,
    /// Lines removed; `None` for a binary file.
    pub removed: Option<u64>,
}

/// The whole report. Sections appear in the order a reader asks their questions: how did it end,
/// what was planned, what changed, on what evidence, at what cost, and when.
pub fn render(view: &MissionView, events: &[EventEnvelope], changes: &Changes) -> String {
    let sections = [
        summary::render(view),
        plan::render(view),
        pictures::render(view),
        work::changes(view, changes),
        work::evidence(view),
        work::reviews(view),
        usage::render(view),
        timeline::render(view, events),
    ];
    // Each section ends with one line break; one blank line goes between sections.
    let sections: Vec<&str> = sections.iter().map(|s| s.trim_end_matches('\n')).collect();
    let mut out = sections.join("\n\n");
    out.push('\n');
    out.push_str(&format!(
        "\n---\n\nWritten by `orchestrator report` from the mission's event log ({} events).\n",
        events.len()
    ));
    out
}

/// The same report as one self-contained HTML file, its pictures inline as SVG.
pub fn render_html(view: &MissionView, events: &[EventEnvelope], changes: &Changes) -> String {
    html::document(view, &render(view, events, changes))
}

/// The mission's pictures as SVG, for a page to show: what `render_html` draws, and the usage chart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pictures {
    /// The plan as a layered graph.
    pub graph: String,
    /// One lane per unit over the mission's time.
    pub timeline: String,
    /// Tokens per role over time, as stacked bars.
    pub usage: String,
}

pub fn pictures_svg(view: &MissionView) -> Pictures {
    Pictures {
        graph: svg::graph(view),
        timeline: svg::timeline(view),
        usage: svg::usage(view),
    }
}

/// A commit as people quote it: its first ten characters.
fn short(commit: &str) -> &str {
    commit.get(..10).unwrap_or(commit)
}

/// `t1 Tokenizer` as a heading or list label: the id as code, the title escaped.
fn unit_label(unit: &orchestrator_view::UnitView) -> String {
    format!("{} {}", markdown::code(&unit.id), markdown::inline(&unit.title))
}

/// 12,345.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `$0.0123`, or `–` when nothing was priced.
fn dollars(cost: f64) -> String {
    if cost > 0.0 {
        format!("${cost:.4}")
    } else {
        "–".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn unpriced_cost_is_a_dash() {
        assert_eq!(dollars(0.0), "–");
        assert_eq!(dollars(0.01234), "$0.0123");
    }
}
