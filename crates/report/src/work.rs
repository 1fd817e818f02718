//! Per unit: what it changed, the evidence it was judged on, and its reviews; then the same for the
//! integrated whole (stage 2).

use std::fmt::Write as _;

use orchestrator_protocol::{Evidence, Review, UnitState, Verdict};
use orchestrator_view::MissionView;

use crate::markdown::{cell_code, code, fenced, inline, tail};
use crate::{short, unit_label, Changes, Diff, FileChange};

/// Files listed per table; a unit that rewrote a whole tree still gives a readable report.
const MAX_FILES: usize = 100;
/// How much of a failing command's output is shown.
const TAIL_LINES: usize = 40;
const TAIL_CHARS: usize = 4000;

pub fn changes(view: &MissionView, changes: &Changes) -> String {
    let mut out = String::from("## What changed\n\n");
    match &changes.mission {
        Some(diff) => {
            let label = match &view.result_commit {
                Some(result) if *result == diff.commit => "the result",
                _ if view.outcome.is_none() => "the integration branch so far",
                _ => "the integration branch",
            };
            let _ = write!(
                out,
                "The whole mission, {} → {} ({label}): {}",
                code(short(&view.base_commit)),
                code(short(&diff.commit)),
                diff_body(diff)
            );
        }
        None => out.push_str("Nothing was integrated.\n\n"),
    }
    for row in view.tree() {
        let unit = row.unit;
        let _ = writeln!(out, "### {}\n", unit_label(unit));
        match (&unit.merged_commit, changes.units.get(&unit.id)) {
            (Some(_), Some(diff)) => {
                let into = match &unit.parent {
                    Some(parent) => format!("{}'s branch", code(parent)),
                    None => "the integration branch".to_string(),
                };
                let _ = write!(out, "Merged into {into} as {}", code(short(&diff.commit)));
                if !unit.children.is_empty() {
                    let children: Vec<String> = unit.children.iter().map(|c| code(c)).collect();
                    let _ = write!(out, " (with what {} changed)", children.join(", "));
                }
                let _ = write!(out, ": {}", diff_body(diff));
            }
            (Some(commit), None) => {
                let _ = writeln!(
                    out,
                    "Merged as {}; its files were not looked up.\n",
                    code(short(commit))
                );
            }
            (None, _) => {
                let _ = writeln!(out, "{}\n", not_merged(unit.state));
            }
        }
    }
    out
}

fn not_merged(state: UnitState) -> String {
    match state {
        UnitState::Failed => "Not merged: the unit failed.".into(),
        UnitState::Skipped => "Not merged: the unit was skipped (a dependency failed).".into(),
        UnitState::Passed => "Passed, with no merge recorded.".into(),
        state => format!("Not merged yet ({}).", state.as_str().replace('_', " ")),
    }
}

/// "3 files, +50 −2." and the table, or why the files are unknown.
fn diff_body(diff: &Diff) -> String {
    let files = match &diff.files {
        Ok(files) => files,
        Err(why) => return format!("git could not list the files ({}).\n\n", inline(why)),
    };
    if files.is_empty() {
        return "no file changed.\n\n".to_string();
    }
    let added: u64 = files.iter().filter_map(|f| f.added).sum();
    let removed: u64 = files.iter().filter_map(|f| f.removed).sum();
    let mut out = format!("{} file(s), +{added} −{removed}.\n\n", files.len());
    out.push_str("| file | added | removed |\n|---|--:|--:|\n");
    for file in files.iter().take(MAX_FILES) {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            cell_code(&file.path),
            count(file, file.added),
            count(file, file.removed)
        );
    }
    if files.len() > MAX_FILES {
        let _ = writeln!(out, "| … and {} more file(s) | | |", files.len() - MAX_FILES);
    }
    out.push('\n');
    out
}

fn count(file: &FileChange, lines: Option<u64>) -> String {
    match (lines, file.added.or(file.removed)) {
        (Some(n), _) => n.to_string(),
        (None, None) => "binary".to_string(),
        (None, Some(_)) => "–".to_string(),
    }
}

pub fn evidence(view: &MissionView) -> String {
    let mut out = String::from(
        "## Evidence\n\nThe build and test commands the runtime ran itself: in each unit's worktree (stage 1) \
         and on the integrated branch (stage 2).\n\n",
    );
    let mut any = false;
    for row in view.tree().into_iter().filter(|r| !r.unit.evidence.is_empty()) {
        any = true;
        let _ = writeln!(out, "### {}\n", unit_label(row.unit));
        out.push_str(&evidence_table(&row.unit.evidence));
    }
    if !view.integration_evidence.is_empty() {
        any = true;
        out.push_str("### Stage 2: the integrated branch\n\n");
        out.push_str(&evidence_table(&view.integration_evidence));
    }
    if !any {
        out.push_str(
            "No build or test command ran: none was configured or detected, or no unit got that far.\n",
        );
    }
    out
}

/// The runs as a table, then the output of each failing run.
fn evidence_table(runs: &[Evidence]) -> String {
    let mut out = String::from("| # | kind | command | result | duration |\n|--:|---|---|---|--:|\n");
    for (i, run) in runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} s |",
            i + 1,
            inline(&run.kind),
            cell_code(&run.command),
            result(run),
            run.duration_ms as f64 / 1000.0
        );
    }
    out.push('\n');
    for (i, run) in runs.iter().enumerate().filter(|(_, r)| !r.passed()) {
        let output = tail(&run.output_tail, TAIL_LINES, TAIL_CHARS);
        if output.is_empty() {
            let _ = writeln!(out, "Run {} printed nothing.\n", i + 1);
            continue;
        }
        let _ = writeln!(
            out,
            "Output of run {} ({}, {}):\n",
            i + 1,
            code(&run.command),
            result(run)
        );
        out.push_str(&fenced(&output, "text"));
        out.push('\n');
    }
    out
}

fn result(run: &Evidence) -> String {
    match (run.passed(), run.exit_code) {
        (true, _) => "passed".into(),
        (false, Some(code)) => format!("**failed** (exit {code})"),
        (false, None) if run.timed_out => "**timed out**".into(),
        (false, None) => "**killed**".into(),
    }
}

pub fn reviews(view: &MissionView) -> String {
    let mut out = String::from("## Reviews\n\n");
    let mut any = false;
    for row in view.tree().into_iter().filter(|r| !r.unit.reviews.is_empty()) {
        any = true;
        let _ = writeln!(out, "### {}\n", unit_label(row.unit));
        for (attempt, review) in &row.unit.reviews {
            out.push_str(&review_item(&format!("Attempt {attempt}"), review));
        }
        out.push('\n');
    }
    if !view.master_reviews.is_empty() {
        any = true;
        out.push_str("### Master review (the whole against the objective)\n\n");
        for (round, review) in &view.master_reviews {
            out.push_str(&review_item(&format!("Round {round}"), review));
        }
        out.push('\n');
    }
    if !any {
        out.push_str("No review has finished.\n");
    }
    out
}

fn review_item(label: &str, review: &Review) -> String {
    let verdict = match review.verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "fail",
    };
    let mut out = format!("- {label}: **{verdict}** — {}\n", inline(&review.summary));
    for issue in &review.issues {
        let file = issue
            .file
            .as_deref()
            .map(|f| format!(" in {}", code(f)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  - **{}**{file}: {}",
            inline(&issue.title),
            inline(&issue.description)
        );
    }
    out
}
