//! `orchestrator logs`: the latest mission's event log, as lines or raw JSON, optionally followed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use orchestrator_core::STATE_DIR;
use orchestrator_protocol::{Event, EventEnvelope};
use tokio::io::{AsyncBufReadExt, BufReader};

pub async fn run(repo: &Path, json: bool, follow: bool) -> u8 {
    let Some(path) = latest_log(repo) else {
        eprintln!(
            "error: no mission has run in {} yet (no {STATE_DIR}/missions/*/events.jsonl)",
            repo.display()
        );
        return 2;
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return 1;
        }
    };
    let mut lines = BufReader::new(file).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => {
                let finished = print_line(&line, json);
                if finished && follow {
                    return 0;
                }
            }
            Ok(None) if follow => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return 1;
            }
        }
    }
}

/// Prints one stored event; true when it is the mission's last.
fn print_line(line: &str, json: bool) -> bool {
    let parsed: Option<EventEnvelope> = serde_json::from_str(line).ok();
    if json {
        println!("{line}");
    } else if let Some(env) = &parsed {
        let body = serde_json::to_value(&env.event)
            .map(|v| v.to_string())
            .unwrap_or_default();
        println!("{} #{} {body}", env.at.format("%H:%M:%S%.3f"), env.seq);
    } else {
        println!("(unreadable log line) {line}");
    }
    matches!(
        parsed,
        Some(EventEnvelope {
            event: Event::MissionFinished { .. },
            ..
        })
    )
}

fn latest_log(repo: &Path) -> Option<PathBuf> {
    let dir = repo.join(STATE_DIR).join("missions");
    let mut missions: Vec<PathBuf> = std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).collect();
    // Mission ids start with a UTC timestamp, so name order is start order.
    missions.sort();
    missions
        .into_iter()
        .rev()
        .map(|m| m.join("events.jsonl"))
        .find(|p| p.is_file())
}
