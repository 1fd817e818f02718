//! The plan: every unit as the planner (or a spawning worker) described it, as a tree, with how it ended.

use std::fmt::Write as _;

use orchestrator_protocol::UnitState;
use orchestrator_view::{first_line, MissionView, TreeRow, UnitView};

use crate::markdown::{code, inline, paragraphs};

pub fn render(view: &MissionView) -> String {
    let mut out = String::from("## Plan\n\n");
    if view.units.is_empty() {
        out.push_str("No plan was accepted.\n");
        return out;
    }
    let spawned = view.units.iter().filter(|u| u.parent.is_some()).count();
    let planned = view.units.len() - spawned;
    let _ = writeln!(
        out,
        "{planned} unit(s) planned, {spawned} spawned by workers (indented under the unit that \
         spawned them).\n"
    );
    let rounds = view.units.iter().map(|u| u.round).max() != view.units.iter().map(|u| u.round).min();
    let mut round = None;
    for row in view.tree() {
        if rounds && row.depth == 0 && round != Some(row.unit.round) {
            round = Some(row.unit.round);
            let _ = writeln!(out, "### Round {}\n", row.unit.round);
        }
        out.push_str(&item(row));
    }
    out
}

/// One unit as a list item at its depth, its description indented beneath.
fn item(row: TreeRow<'_>) -> String {
    let unit = row.unit;
    let indent = "  ".repeat(row.depth);
    let mut line = format!(
        "{indent}- {} **{}** — {}",
        code(&unit.id),
        inline(&unit.title),
        ending(unit)
    );
    if !unit.depends_on.is_empty() {
        let deps: Vec<String> = unit.depends_on.iter().map(|d| code(d)).collect();
        let _ = write!(line, " · after {}", deps.join(", "));
    }
    line.push('\n');
    line.push_str(&paragraphs(&unit.description, &format!("{indent}  ")));
    line
}

/// "passed after 2 attempts", "failed: `cargo test` failed (exit 101)", "running (attempt 1)".
fn ending(unit: &UnitView) -> String {
    let state = unit.state.as_str().replace('_', " ");
    let attempts = match unit.attempt {
        0 | 1 => String::new(),
        n => format!(" after {n} attempts"),
    };
    let detail = unit
        .detail
        .as_deref()
        .map(|d| format!(": {}", inline(first_line(d))))
        .unwrap_or_default();
    match unit.state {
        UnitState::Passed => format!("{state}{attempts}"),
        UnitState::Failed | UnitState::Skipped => format!("**{state}**{attempts}{detail}"),
        UnitState::Queued => state,
        _ => format!("{state} (attempt {})", unit.attempt.max(1)),
    }
}
