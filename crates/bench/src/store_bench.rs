//! Micro-benchmark of `Store::append_event`, the write every engine event waits for (the event bus
//! writes each event to the store before anyone sees it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use orchestrator_protocol::{Event, EventEnvelope, Role, TokenUsage, UnitState};
use orchestrator_store::{MissionRecord, MissionStatus, Store};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct AppendBench {
    /// "SQLite" or "PostgreSQL".
    pub backend: String,
    pub events: usize,
    pub threads: usize,
    #[serde(serialize_with = "crate::mission::ser_ms")]
    pub elapsed: Duration,
}

impl AppendBench {
    pub fn per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn micros_per_event(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.events.max(1) as f64
    }
}

const MISSION: &str = "m-bench";

/// The mix a mission writes: per model call a `ModelCall`, per tool call a `ToolCalled`, and the
/// unit state changes around them; bodies of realistic size (a few hundred bytes of JSON).
fn event(i: u64) -> Event {
    let unit = format!("u{}", i % 50);
    let session = format!("worker-{}", i % 50);
    match i % 4 {
        0 => Event::ModelCall {
            session,
            role: Role::Worker,
            model: "scripted".into(),
            usage: TokenUsage {
                input_tokens: 1200 + i % 300,
                output_tokens: 40,
                ..Default::default()
            },
            cost_usd: Some(0.0024),
            duration_ms: 500,
            constraint: None,
        },
        1 => Event::ToolCalled {
            session,
            tool: "write".into(),
            summary: format!("write parts/{unit}.txt"),
            ok: true,
            duration_ms: 3,
        },
        2 => Event::UnitState {
            unit,
            state: UnitState::Verifying,
            attempt: 1,
            detail: None,
        },
        _ => Event::SessionFinished {
            session,
            role: Role::Worker,
            ok: true,
            turns: 2,
            usage: TokenUsage {
                input_tokens: 2500,
                output_tokens: 80,
                ..Default::default()
            },
        },
    }
}

/// A fresh store: SQLite in `dir`, or on the PostgreSQL server at `pg` under a repository name of
/// its own (so runs never see each other's events).
fn open(dir: &std::path::Path, pg: Option<&str>) -> Result<Arc<Store>> {
    let store = match pg {
        Some(url) => {
            let scope = format!(
                "bench-{}-{}",
                std::process::id(),
                Utc::now().timestamp_nanos_opt().unwrap_or(0)
            );
            Store::open_postgres(url, &scope).context("cannot open the PostgreSQL store")?
        }
        None => Store::open(&dir.join("state.db")).context("cannot open a fresh store")?,
    };
    store.set_secrets(vec!["bench-key".into()]);
    store.create_mission(&MissionRecord {
        id: MISSION.into(),
        objective: "store micro-benchmark".into(),
        base_commit: "0".repeat(40),
        user_branch: Some("main".into()),
        integration_branch: "orchestrator/m-bench/integration".into(),
        options: serde_json::json!({}),
        status: MissionStatus::Running,
        pid: None,
        created_at: String::new(),
        updated_at: String::new(),
    })?;
    Ok(Arc::new(store))
}

/// Appends `events` events to a fresh store in a temporary folder, from `threads` threads sharing it
/// (as sessions share the engine's one store). The envelopes are built outside the clock; encoding,
/// masking and the insert are inside it, as in the engine. `pg`: on that PostgreSQL server instead.
pub fn append(events: usize, threads: usize, pg: Option<&str>) -> Result<AppendBench> {
    let dir = tempfile::tempdir().context("cannot make a temporary folder")?;
    let store = open(dir.path(), pg)?;
    let threads = threads.max(1);
    let per_thread = events.div_ceil(threads);
    let batches: Vec<Vec<EventEnvelope>> = (0..threads)
        .map(|t| {
            (0..per_thread)
                .map(|i| {
                    let seq = (t * per_thread + i) as u64;
                    EventEnvelope {
                        seq,
                        at: Utc::now(),
                        mission: MISSION.into(),
                        event: event(seq),
                    }
                })
                .collect()
        })
        .collect();
    let total = per_thread * threads;
    let started = Instant::now();
    let workers: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let store = store.clone();
            std::thread::spawn(move || -> Result<()> {
                for envelope in &batch {
                    store.append_event(envelope)?;
                }
                Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker
            .join()
            .map_err(|_| anyhow::anyhow!("an appending thread panicked"))??;
    }
    let elapsed = started.elapsed();
    let stored = store.events_after(MISSION, None)?.len();
    anyhow::ensure!(stored == total, "{stored} of {total} events were stored");
    Ok(AppendBench {
        backend: if pg.is_some() { "PostgreSQL" } else { "SQLite" }.into(),
        events: total,
        threads,
        elapsed,
    })
}
