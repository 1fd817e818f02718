//! `orchestrator logs`: the latest mission's event log from the store, as lines or raw JSON,
//! optionally followed while the mission runs.

use std::path::Path;
use std::time::Duration;

use orchestrator_core::MissionStatus;
use orchestrator_protocol::{Event, EventEnvelope};

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
    let body = serde_json::to_value(&envelope.event)
        .map(|v| v.to_string())
        .unwrap_or_default();
    let body = match &envelope.event {
        Event::DiscoveryFinished { context } => format!(
            "{{\"type\":\"discovery_finished\",\"context\":\"({} chars)\"}}",
            context.len()
        ),
        _ => body,
    };
    println!("{} #{} {body}", envelope.at.format("%H:%M:%S%.3f"), envelope.seq);
}
