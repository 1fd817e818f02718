//! `orchestrator missions`: every mission of the repository, newest first — a table for people, or
//! with `--json` one array of objects (docs/protocol.md).

use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, Utc};
use clap::Args;
use orchestrator_core::{shorten, MissionSummary};
use orchestrator_view::human_tokens;

use crate::out::{self, errln, outln};

/// How much of an objective the table shows; `--json` has all of it.
const OBJECTIVE_CHARS: usize = 60;

#[derive(Args)]
pub struct MissionsArgs {
    /// The repository to work in.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Print the missions as one JSON array.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: MissionsArgs) -> u8 {
    match list(&args.repo).await {
        Ok(missions) if args.json => print_json(&missions),
        Ok(missions) if missions.is_empty() => {
            outln!("no mission has run in this repository; start one with `orchestrator task \"…\"`");
            0
        }
        Ok(missions) => {
            if let Err(e) = out::text(&render(&missions)) {
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

async fn list(repo: &Path) -> orchestrator_core::Result<Vec<MissionSummary>> {
    let root = orchestrator_core::repo_root(repo).await?;
    orchestrator_core::missions(&root)
}

fn print_json(missions: &[MissionSummary]) -> u8 {
    match serde_json::to_string_pretty(missions) {
        Ok(text) => {
            outln!("{text}");
            0
        }
        Err(e) => {
            errln!("error: {e}");
            1
        }
    }
}

/// The table: one mission a line, columns aligned, the objective last (it is the longest).
pub fn render(missions: &[MissionSummary]) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "STATE".into(),
        "OUTCOME".into(),
        "STARTED".into(),
        "ENDED".into(),
        "TOKENS".into(),
        "COST".into(),
        "OBJECTIVE".into(),
    ]];
    rows.extend(missions.iter().map(row));
    let widths: Vec<usize> = (0..8)
        .map(|col| rows.iter().map(|r| r[col].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (col, cell) in row.iter().enumerate() {
            if col == 7 {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  ", width = widths[col]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn row(m: &MissionSummary) -> [String; 8] {
    let outcome = match (m.outcome.as_deref(), m.unverified) {
        (Some("sealed"), true) => "sealed (unverified)".to_string(),
        (Some(outcome), _) => outcome.to_string(),
        (None, _) => "-".into(),
    };
    [
        m.id.clone(),
        m.state.as_str().into(),
        outcome,
        time(m.started_at),
        time(m.ended_at),
        human_tokens(m.tokens),
        if m.cost_usd > 0.0 {
            format!("${:.4}", m.cost_usd)
        } else {
            "-".into()
        },
        shorten(m.objective.lines().next().unwrap_or_default(), OBJECTIVE_CHARS),
    ]
}

/// A time as the reader's clock shows it.
fn time(at: Option<DateTime<Utc>>) -> String {
    at.map(|t| t.with_timezone(&Local).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_else(|| "-".into())
}
