//! `orchestrator logs`: the latest mission's event log from the store, as lines a person reads (time,
//! who, what happened) or raw JSON, optionally followed while the mission runs.

use std::path::Path;
use std::time::Duration;

use orchestrator_core::MissionStatus;
use orchestrator_protocol::{Event, EventEnvelope};
use orchestrator_view::{first_line, human_tokens};

pub async fn run(repo: &Path, json: bool, follow: bool) -> u8 {
    let store = match orchestrator_core::open_store_in(repo) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code() as u8;
        }
    };
    let mission = match store.latest_mission() {
        Ok(Some(mission)) => mission,
        Ok(None) => {
            eprintln!("error: no mission has run in this repository yet");
            return 2;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut after = None;
    loop {
        let events = match store.events_after(&mission.id, after) {
            Ok(events) => events,
            Err(e) => {
                eprintln!("error: {e}");
                return 1;
            }
        };
        for event in &events {
            print_event(event, json);
            after = Some(event.seq);
        }
        if !follow {
            return 0;
        }
        let running = store
            .mission(&mission.id)
            .ok()
            .flatten()
            .is_some_and(|m| m.status == MissionStatus::Running);
        if !running && events.is_empty() {
            return 0;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_event(envelope: &EventEnvelope, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(envelope) {
            println!("{line}");
        }
        return;
    }
    let (who, what) = describe(&envelope.event);
    println!("{}  {who:<14} {what}", envelope.at.format("%H:%M:%S%.3f"));
}

/// One event as a person reads it: who it is about (a unit, a session, or the mission) and what
/// happened, on one line. `--json` keeps every field.
pub fn describe(event: &Event) -> (String, String) {
    let mission = || "mission".to_string();
    match event {
        Event::MissionStarted {
            objective,
            base_commit,
            user_branch,
            ..
        } => (
            mission(),
            format!(
                "started on {} at {}: {}",
                user_branch.as_deref().unwrap_or("detached HEAD"),
                short(base_commit),
                first_line(objective)
            ),
        ),
        Event::PhaseChanged { phase, round } if *round > 0 => {
            (mission(), format!("phase {} (round {round})", phase.as_str()))
        }
        Event::PhaseChanged { phase, .. } => (mission(), format!("phase {}", phase.as_str())),
        Event::PreScanFinished { files, build, test } => (
            mission(),
            format!(
                "pre-scan: {files} files; build: {}; test: {}",
                build.as_deref().unwrap_or("none"),
                test.as_deref().unwrap_or("none")
            ),
        ),
        Event::DiscoveryFinished { context } => (
            mission(),
            format!("discovery finished ({} characters of context)", context.len()),
        ),
        Event::SessionStarted {
            session, model, unit, ..
        } => (
            session.clone(),
            match unit {
                Some(unit) => format!("session started on {model} for {unit}"),
                None => format!("session started on {model}"),
            },
        ),
        Event::ModelCall {
            session,
            usage,
            duration_ms,
            cost_usd,
            ..
        } => (
            session.clone(),
            format!(
                "model call: {} in, {} out, {:.1} s{}",
                human_tokens(usage.input_tokens),
                human_tokens(usage.output_tokens),
                *duration_ms as f64 / 1000.0,
                cost_usd.map(|c| format!(", ~${c:.4}")).unwrap_or_default()
            ),
        ),
        Event::Compacted {
            session,
            before_tokens,
            after_tokens,
        } => (
            session.clone(),
            format!("compacted its context: ~{before_tokens} → ~{after_tokens} tokens"),
        ),
        Event::ModelTraffic {
            model,
            peak_in_flight,
            max_limit,
            rate_limited,
            retries,
            gave_up,
            ..
        } => (
            mission(),
            format!(
                "{model}: peak {peak_in_flight}/{max_limit} in flight, {rate_limited} rate-limited, \
                 {retries} retried, {gave_up} gave up"
            ),
        ),
        Event::ToolCalled {
            session,
            tool,
            summary,
            ok,
            ..
        } => (
            session.clone(),
            format!(
                "{tool} {}{}",
                first_line(summary),
                if *ok { "" } else { " (failed)" }
            ),
        ),
        Event::SessionFinished {
            session,
            ok,
            turns,
            usage,
            ..
        } => (
            session.clone(),
            format!(
                "session {} after {turns} turn(s), {} tokens",
                if *ok { "finished" } else { "failed" },
                human_tokens(usage.total())
            ),
        ),
        Event::PlanRejected { attempt, problems } => (
            mission(),
            format!("plan rejected (attempt {attempt}): {}", problems.join("; ")),
        ),
        Event::PlanAccepted { round, units } => (
            mission(),
            format!("plan for round {round}: {} unit(s)", units.len()),
        ),
        Event::UnitsSpawned { parent, units } => {
            let ids: Vec<&str> = units.iter().map(|u| u.id.as_str()).collect();
            (parent.clone(), format!("spawned {}", ids.join(", ")))
        }
        Event::UnitState {
            unit,
            state,
            attempt,
            detail,
        } => {
            let detail = detail
                .as_deref()
                .map(|d| format!(": {}", first_line(d)))
                .unwrap_or_default();
            (unit.clone(), format!("{state} (attempt {attempt}){detail}"))
        }
        Event::UnitPrepared { unit, branch, .. } => (unit.clone(), format!("worktree ready on {branch}")),
        Event::EvidenceRecorded { unit, evidence } => (
            unit.clone().unwrap_or_else(|| "integration".into()),
            format!(
                "{} `{}`: {} in {:.1} s",
                evidence.kind,
                evidence.command,
                match (evidence.exit_code, evidence.timed_out) {
                    (_, true) => "timed out".to_string(),
                    (Some(0), _) => "passed".to_string(),
                    (Some(code), _) => format!("failed (exit {code})"),
                    (None, _) => "killed".to_string(),
                },
                evidence.duration_ms as f64 / 1000.0
            ),
        ),
        Event::ReviewFinished { unit, review, .. } => (
            unit.clone().unwrap_or_else(|| "master review".into()),
            format!("review: {} — {}", review.verdict, first_line(&review.summary)),
        ),
        Event::MergeConflict { unit, files, attempt } => (
            unit.clone(),
            format!(
                "merge conflict in {} (resolver attempt {attempt})",
                files.join(", ")
            ),
        ),
        Event::Merged { unit, into, commit } => {
            (unit.clone(), format!("merged into {into} at {}", short(commit)))
        }
        Event::RoundFinished {
            round,
            passed,
            follow_up,
        } => (
            mission(),
            if *passed {
                format!("round {round} passed")
            } else {
                format!(
                    "round {round} not passed; {} unit(s) for the next round",
                    follow_up.len()
                )
            },
        ),
        Event::MissionResumed { phase, round } => (
            mission(),
            format!("resumed in phase {} (round {round})", phase.as_str()),
        ),
        Event::DispatchChanged { paused } => (
            mission(),
            if *paused {
                "dispatch paused"
            } else {
                "dispatch resumed"
            }
            .to_string(),
        ),
        Event::Notice { message } => (mission(), first_line(message).to_string()),
        Event::MissionFinished {
            outcome,
            summary,
            usage,
            ..
        } => (
            mission(),
            format!(
                "finished: {} — {} ({} tokens)",
                outcome.as_str(),
                first_line(summary),
                human_tokens(usage.total())
            ),
        ),
    }
}

fn short(hash: &str) -> &str {
    hash.get(..10).unwrap_or(hash)
}
