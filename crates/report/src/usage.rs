//! Tokens and estimated cost: per role, then per unit (each unit's own sessions).

use std::fmt::Write as _;

use orchestrator_protocol::Role;
use orchestrator_view::{MissionView, Totals};

use crate::markdown::{cell_code, inline};
use crate::{dollars, thousands};

const HEADER: &str = "| calls | input | cache read | cache write | output | total | cost |\n";
const ALIGN: &str = "|--:|--:|--:|--:|--:|--:|--:|\n";

pub fn render(view: &MissionView) -> String {
    let mut out = String::from("## Tokens and cost\n\n");
    if view.sessions.is_empty() {
        out.push_str("No model session ran.\n");
        return out;
    }
    let priced = if view.cost_usd > 0.0 {
        "Costs are estimates from the price table."
    } else {
        "No model used had a price configured, so no cost is shown."
    };
    let _ = writeln!(out, "{priced}\n\n### Per role\n");
    let _ = write!(out, "| role | sessions {HEADER}|---|--:{ALIGN}");
    for (role, totals) in &view.roles {
        let sessions = view.sessions.iter().filter(|s| s.role == *role).count();
        let _ = writeln!(out, "| {role} | {sessions} | {}", cells(totals));
    }
    let all = Totals {
        usage: view.usage,
        cost_usd: view.cost_usd,
        calls: view.roles.values().map(|t| t.calls).sum(),
    };
    let _ = writeln!(out, "| **all** | {} | {}\n", view.sessions.len(), cells(&all));
    out.push_str(&per_unit(view, &all));
    let over_time = over_time(view);
    if !over_time.is_empty() {
        out.push('\n');
        out.push_str(&over_time);
    }
    out
}

/// Each unit's own sessions (worker, reviewers, conflict resolver), then what ran outside any unit.
fn per_unit(view: &MissionView, all: &Totals) -> String {
    let mut out = format!("### Per unit\n\n| unit {HEADER}|---{ALIGN}");
    let mut outside = *all;
    for row in view.tree() {
        let totals = &row.unit.totals;
        let (o, u) = (&mut outside.usage, &totals.usage);
        o.input_tokens = o.input_tokens.saturating_sub(u.input_tokens);
        o.cache_read_tokens = o.cache_read_tokens.saturating_sub(u.cache_read_tokens);
        o.cache_write_tokens = o.cache_write_tokens.saturating_sub(u.cache_write_tokens);
        o.output_tokens = o.output_tokens.saturating_sub(u.output_tokens);
        outside.cost_usd -= totals.cost_usd;
        outside.calls = outside.calls.saturating_sub(totals.calls);
        let label = format!("{} {}", cell_code(&row.unit.id), inline(&row.unit.title));
        let _ = writeln!(out, "| {label} | {}", cells(totals));
    }
    // Float subtraction leaves dust where nothing outside the units was priced.
    if outside.cost_usd < 1e-9 {
        outside.cost_usd = 0.0;
    }
    let _ = writeln!(
        out,
        "| outside units (scouts, planner, master review) | {}",
        cells(&outside)
    );
    out
}

/// "calls | input | cache read | cache write | output | total | cost |": input is what was read
/// without the prompt cache, so the three input columns add up to the whole prompt.
fn cells(totals: &Totals) -> String {
    format!(
        "{} | {} | {} | {} | {} | {} | {} |",
        totals.calls,
        thousands(totals.usage.input_tokens),
        thousands(totals.usage.cache_read_tokens),
        thousands(totals.usage.cache_write_tokens),
        thousands(totals.usage.output_tokens),
        thousands(totals.usage.total()),
        dollars(totals.cost_usd)
    )
}

/// Rows of the table over time at most: a long mission's minutes are grouped.
const TIME_ROWS: u32 = 24;

/// Tokens (and cost) per role over the mission's time, in up to [`TIME_ROWS`] equal periods.
pub fn over_time(view: &MissionView) -> String {
    let buckets = &view.usage_by_minute;
    let Some(last) = buckets.iter().map(|b| b.minute).max() else {
        return String::new();
    };
    let width = (last + 1).div_ceil(TIME_ROWS).max(1);
    let roles: Vec<Role> = view.roles.keys().copied().collect();
    let mut out =
        String::from("### Over time\n\nTokens (input and output) per role, by minutes from the start.\n\n");
    let _ = write!(out, "| minutes |");
    for role in &roles {
        let _ = write!(out, " {role} |");
    }
    let _ = write!(out, " all | cost |\n|---|");
    out.push_str(&"--:|".repeat(roles.len() + 2));
    out.push('\n');
    for period in 0..=(last / width) {
        let (from, to) = (period * width, period * width + width);
        let inside: Vec<_> = buckets
            .iter()
            .filter(|b| b.minute >= from && b.minute < to)
            .collect();
        if inside.is_empty() {
            continue;
        }
        let tokens = |role: Option<Role>| -> u64 {
            inside
                .iter()
                .filter(|b| role.is_none_or(|r| b.role == r))
                .map(|b| b.usage.total())
                .sum()
        };
        let _ = write!(out, "| {from}–{to} |");
        for role in &roles {
            let _ = write!(out, " {} |", thousands(tokens(Some(*role))));
        }
        let cost: f64 = inside.iter().map(|b| b.cost_usd).sum();
        let _ = writeln!(out, " {} | {} |", thousands(tokens(None)), dollars(cost));
    }
    out
}
