//! `resume` of a mission with many stored tasks. The store is made the honest way: a real mission is
//! run until its log holds the wanted number of tasks, then killed with SIGKILL, as a crash would.
//!
//! One plan may hold at most 200 units (`MAX_UNITS` in crates/core/src/plan.rs), so 1,000 tasks are
//! 200 planned units that each `spawn` 4 sub-units: the shape a large mission really takes.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use orchestrator_fake_model::script::{PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{FakeOptions, FakeServer};
use orchestrator_protocol::Event;
use orchestrator_store::Store;
use serde::Serialize;

use crate::child::{Usage, Watched};
use crate::mission::{count_events, orchestrator_command, ser_ms, wait_with_timeout, OBJECTIVE};
use crate::repo::BenchRepo;

/// The most units one plan may hold (the engine's `MAX_UNITS`).
const MAX_PLAN: usize = 200;
/// Model latency while the store is being filled: slow enough that the mission is mid-flight (units
/// running, most queued) when it is killed, as a real crash would find it.
const FILL_LATENCY: Duration = Duration::from_millis(500);
pub const FILL_PARALLEL: usize = 50;
/// How long filling the store may take.
const FILL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the resumed mission runs after its first model request before it is killed too; long
/// enough for its memory to reach the steady state of a full slot cap.
pub const RESUMED_RUN: Duration = Duration::from_secs(3);
/// How long the fake server is given to finish reading what a killed process sent.
const DRAIN: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Serialize)]
pub struct ResumeRun {
    /// Units (planned and spawned) in the store when the mission was killed.
    pub tasks: usize,
    pub events: usize,
    /// Size of the store (database and its write-ahead log) at the kill.
    pub store_bytes: u64,
    /// From spawning `orchestrator resume` to its first model request.
    #[serde(serialize_with = "ser_ms")]
    pub resume_to_first_request: Duration,
    /// The resumed process, killed [`RESUMED_RUN`] after its first request.
    pub resumed: Usage,
    /// `orchestrator status --json` on the same store.
    #[serde(serialize_with = "ser_ms")]
    pub status_wall: Duration,
}

/// A plan whose units spawn children so that the mission holds about `tasks` tasks in all, and the
/// exact number it will hold (planned units plus their children).
pub fn spawning_plan(tasks: usize) -> (Script, usize) {
    let parents = tasks.clamp(1, MAX_PLAN);
    let children = tasks.saturating_sub(parents) / parents;
    let plan = (1..=parents)
        .map(|p| {
            let description = if children == 0 {
                format!("FILE parts/p{p}.txt := part {p}")
            } else {
                (1..=children)
                    .map(|c| format!("SPAWN piece {c} :: FILE parts/p{p}/c{c}.txt := piece {c} of part {p}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            PlanUnit::new(&format!("p{p}"), &format!("Part {p}"), &description, &[])
        })
        .collect();
    let script = Script {
        plan,
        ..Script::default()
    };
    (script, parents * (1 + children))
}

/// With `keep_logs`, the stderr of the killed run and of the resumed one are copied there as
/// `resume-fill.stderr` and `resume-resume.stderr`.
pub async fn run(orchestrator: &Path, tasks: usize, keep_logs: Option<&Path>) -> Result<ResumeRun> {
    let keep = |name: &str, repo: &BenchRepo| -> Result<()> {
        if let Some(dir) = keep_logs {
            let to = dir.join(format!("resume-{name}.stderr"));
            std::fs::copy(repo.scratch().join("stderr.txt"), &to)
                .with_context(|| format!("cannot keep {}", to.display()))?;
        }
        Ok(())
    };
    let repo = BenchRepo::new()?;
    let options = FakeOptions {
        latency: FILL_LATENCY,
        ..FakeOptions::default()
    };
    let (script, expected) = spawning_plan(tasks);
    let server = FakeServer::start(ScriptedMission::new(script), options)
        .await
        .context("cannot start the fake model server")?;

    // 1. Fill the store: run the mission until its log holds every task, then kill it.
    let mut command = orchestrator_command(orchestrator, &repo, &server)?;
    command.args(["task", OBJECTIVE, "--max-parallel", &FILL_PARALLEL.to_string()]);
    let watched = Watched::spawn(command)?;
    let handle = watched.handle();
    let waiter = tokio::task::spawn_blocking(move || watched.wait());
    let stored = wait_for_tasks(&repo.store_path(), expected, FILL_TIMEOUT).await;
    handle.signal(libc::SIGKILL)?;
    let filled = waiter.await.context("the waiting thread panicked")??;
    let stored = stored?;
    if filled.exit_code.is_some() {
        bail!(
            "the mission ended on its own (exit {:?}) before it was killed",
            filled.exit_code
        );
    }
    keep("fill", &repo)?;
    let events = count_events(&repo.store_path())?;
    let store_bytes = file_size(&repo.store_path()) + file_size(&repo.store_path().with_extension("db-wal"));

    // 2. Resume it, and time the way to its first model request. A request the killed process had
    // sent may still be being read by the server; let it land first so it is not taken for the
    // resumed process's.
    tokio::time::sleep(DRAIN).await;
    let before = server.request_count();
    let mut command = orchestrator_command(orchestrator, &repo, &server)?;
    command.arg("resume");
    let watched = Watched::spawn(command)?;
    let spawned = watched.started;
    let handle = watched.handle();
    let waiter = tokio::task::spawn_blocking(move || watched.wait());
    let first = loop {
        if let Some(at) = server.arrivals().get(before).copied() {
            break at;
        }
        if waiter.is_finished() {
            let stderr = std::fs::read_to_string(repo.scratch().join("stderr.txt")).unwrap_or_default();
            bail!("`orchestrator resume` exited before any model request:\n{stderr}");
        }
        if spawned.elapsed() > FILL_TIMEOUT {
            handle.signal(libc::SIGKILL)?;
            bail!(
                "`orchestrator resume` made no model request within {} s",
                FILL_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let resume_to_first_request = first.saturating_duration_since(spawned);
    tokio::time::sleep(RESUMED_RUN).await;
    handle.signal(libc::SIGKILL)?;
    let resumed = waiter.await.context("the waiting thread panicked")??;
    keep("resume", &repo)?;
    server.shutdown().await;

    // 3. `status` on the same store.
    let mut command = crate::child::clean_command(orchestrator, repo.home());
    command
        .args(["status", "--json"])
        .current_dir(repo.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let status = wait_with_timeout(Watched::spawn(command)?, Duration::from_secs(60)).await?;
    Ok(ResumeRun {
        tasks: stored,
        events,
        store_bytes,
        resume_to_first_request,
        resumed,
        status_wall: status.wall,
    })
}

/// Polls the store (read through the store crate, as `status` does) until `expected` tasks are in
/// its log; returns how many there were.
async fn wait_for_tasks(path: &Path, expected: usize, timeout: Duration) -> Result<usize> {
    let started = Instant::now();
    let mut units: HashSet<String> = HashSet::new();
    let mut store: Option<(Store, String)> = None;
    let mut after = None;
    loop {
        if started.elapsed() > timeout {
            bail!(
                "only {} of {expected} tasks were stored within {} s",
                units.len(),
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        if store.is_none() {
            // Until the mission has created its store and record there is nothing to read.
            let Ok(opened) = Store::open_existing(path) else {
                continue;
            };
            let Ok(Some(mission)) = opened.latest_mission() else {
                continue;
            };
            store = Some((opened, mission.id));
        }
        let Some((store, mission)) = &store else { continue };
        for envelope in store.events_after(mission, after)? {
            after = Some(envelope.seq);
            match envelope.event {
                Event::PlanAccepted { units: list, .. } | Event::UnitsSpawned { units: list, .. } => {
                    units.extend(list.into_iter().map(|u| u.id));
                }
                _ => {}
            }
        }
        if units.len() >= expected {
            return Ok(units.len());
        }
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
