//! `orchestrator logs`: a mission's event log (the latest unless `--mission` names one) from the store, as lines a person reads (time,
//! then who did what) or raw JSON, optionally followed while the mission runs.

use std::path::Path;
use std::time::Duration;

use orchestrator_core::MissionStatus;
use orchestrator_protocol::{Event, EventEnvelope};
use orchestrator_view::human_tokens;

use crate::out::{errln, outln};

pub async fn run(repo: &Path, wanted: Option<&str>, json: bool, follow: bool) -> u8 {
    let found = orchestrator_core::open_store_in(repo)
        .and_then(|store| orchestrator_core::find_mission(&store, wanted).map(|m| (store, m)));
    let (store, mission) = match found {
        Ok(found) => found,
        Err(e) => {
            errln!("error: {e}");
            return e.exit_code() as u8;
        }
    };
    let mut after = None;
    loop {
        let events = match store.events_after(&mission.id, after) {
            Ok(events) => events,
            Err(e) => {
                errln!("error: {e}");
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
            outln!("{line}");
        }
        return;
    }
    outln!(
        "{}  {}",
        envelope.at.format("%H:%M:%S%.3f"),
        orchestrator_view::terminal_safe(&describe(&envelope.event))
    );
}

/// One event as a person reads it: the line every view's log shows, and for the bookkeeping events
/// the views leave out, a short one here — `logs` accounts for every event (`--json` has every field).
fn describe(event: &Event) -> String {
    if let Some(line) = orchestrator_view::describe(event) {
        return line;
    }
    match event {
        Event::PreScanFinished { files, build, test } => format!(
            "pre-scan: {files} files; build: {}; test: {}",
            build.as_deref().unwrap_or("none"),
            test.as_deref().unwrap_or("none")
        ),
        Event::DiscoveryFinished { context } => {
            format!("discovery finished ({} characters of context)", context.len())
        }
        Event::ModelCall {
            session,
            usage,
            duration_ms,
            cost_usd,
            ..
        } => format!(
            "{session}: model call, {} in{}, {} out, {:.1} s{}",
            human_tokens(usage.input_tokens),
            cached_parts(usage),
            human_tokens(usage.output_tokens),
            *duration_ms as f64 / 1000.0,
            cost_usd.map(|c| format!(", ~${c:.4}")).unwrap_or_default()
        ),
        Event::ModelTraffic {
            model,
            peak_in_flight,
            max_limit,
            rate_limited,
            retries,
            gave_up,
            ..
        } => format!(
            "{model}: peak {peak_in_flight}/{max_limit} requests in flight, {rate_limited} rate-limited, \
             {retries} retried, {gave_up} gave up"
        ),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| {
                v.get("type")
                    .and_then(|t| t.as_str())
                    .map(|t| t.replace('_', " "))
            })
            .unwrap_or_default(),
    }
}

/// ", 12k cached, 3k to cache" for a call that used the prompt cache; nothing otherwise.
fn cached_parts(usage: &orchestrator_protocol::TokenUsage) -> String {
    let mut text = String::new();
    if usage.cache_read_tokens > 0 {
        text.push_str(&format!(", {} cached", human_tokens(usage.cache_read_tokens)));
    }
    if usage.cache_write_tokens > 0 {
        text.push_str(&format!(", {} to cache", human_tokens(usage.cache_write_tokens)));
    }
    text
}
