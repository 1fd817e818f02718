//! The benchmark program behind `cargo run --release -p orchestrator-bench`: orchestration overhead,
//! memory, CPU, start-up, resume and store throughput of the real `orchestrator` binary against the
//! scripted fake model server, with OpenCode's server as a reference line. See docs/benchmarks.md.
//!
//! It is a program, not a test: nothing here asserts a timing. The smoke test only checks that one
//! tiny scenario runs end to end and yields a well-formed report.

pub mod builds;
pub mod caching;
pub mod child;
pub mod machine;
pub mod mission;
pub mod opencode;
pub mod repo;
pub mod report;
pub mod resume;
pub mod store_bench;
pub mod workers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::machine::Machine;
use crate::mission::{MissionRun, Scenario};
use crate::opencode::{OpenCodeRun, OpenCodeScenario};
use crate::resume::ResumeRun;
use crate::store_bench::AppendBench;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub orchestrator: PathBuf,
    /// Mission sizes N (units; `--max-parallel` = N).
    pub units: Vec<usize>,
    pub latencies: Vec<Duration>,
    /// Runs per (N, latency); the run with the median wall time is reported.
    pub repeat: usize,
    /// Tasks in the store for the resume measurement; `None` skips it.
    pub resume_tasks: Option<usize>,
    /// Events for the `Store::append_event` micro-benchmark; 0 skips it.
    pub store_events: usize,
    /// Threads for the contended variant of the micro-benchmark.
    pub store_threads: usize,
    /// A PostgreSQL server to run the micro-benchmark on as well (`--store-pg URL`).
    pub store_pg: Option<String>,
    /// The OpenCode binary for the reference line; `None` skips it (with the reason in `opencode_note`).
    pub opencode: Option<PathBuf>,
    pub opencode_note: Option<String>,
    pub opencode_sessions: usize,
    /// The command line, for the report.
    pub command: String,
    /// Where to keep each mission's stdout and stderr (for profiling runs); `None` keeps nothing.
    pub keep_logs: Option<PathBuf>,
}

/// Everything measured, as the report and `--json` show it.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: Machine,
    pub command: String,
    pub repeat: usize,
    pub missions: Vec<MissionRun>,
    /// Wall times (ms) of every repeat of each reported mission, in run order.
    pub repeats_wall_ms: Vec<Vec<f64>>,
    /// Start-up (ms) of every mission run, repeats included: latency does not enter it, so all count.
    pub startups_ms: Vec<f64>,
    pub resume: Option<ResumeRun>,
    pub store: Vec<AppendBench>,
    pub opencode: Vec<OpenCodeRun>,
    pub opencode_note: Option<String>,
    pub load_after: String,
}

/// Runs the whole suite, reporting progress through `progress`.
pub async fn run_suite(options: &Options, progress: &dyn Fn(&str)) -> Result<Results> {
    let machine = Machine::detect(&options.orchestrator);
    let mut missions = Vec::new();
    let mut repeats_wall_ms = Vec::new();
    let mut startups_ms = Vec::new();
    for latency in &options.latencies {
        for &units in &options.units {
            let scenario = Scenario {
                units,
                latency: *latency,
                max_parallel: units,
            };
            let mut runs = Vec::new();
            for r in 1..=options.repeat.max(1) {
                progress(&format!(
                    "mission: {units} unit(s), {} ms latency, run {r}/{}",
                    latency.as_millis(),
                    options.repeat.max(1)
                ));
                let label = format!("mission-n{units}-l{}-r{r}", latency.as_millis());
                let keep = options.keep_logs.as_deref().map(|dir| (dir, label.as_str()));
                let run = mission::run(&options.orchestrator, scenario, keep)
                    .await
                    .with_context(|| format!("mission of {units} unit(s) at {} ms", latency.as_millis()))?;
                runs.push(run);
            }
            repeats_wall_ms.push(runs.iter().map(|r| r.usage.wall.as_secs_f64() * 1000.0).collect());
            startups_ms.extend(runs.iter().map(|r| r.startup.as_secs_f64() * 1000.0));
            runs.sort_by_key(|r| r.usage.wall);
            missions.push(runs.swap_remove(runs.len() / 2));
        }
    }
    let resume = match options.resume_tasks {
        Some(tasks) => {
            progress(&format!(
                "resume: filling a store with {tasks} tasks, then resuming"
            ));
            Some(resume::run(&options.orchestrator, tasks, options.keep_logs.as_deref()).await?)
        }
        None => None,
    };
    let mut store = Vec::new();
    if options.store_events > 0 {
        let backends = std::iter::once(None).chain(options.store_pg.clone().map(Some));
        for pg in backends {
            for threads in [1, options.store_threads.max(1)] {
                progress(&format!(
                    "store: {} appends from {threads} thread(s){}",
                    options.store_events,
                    if pg.is_some() { " on PostgreSQL" } else { "" }
                ));
                let events = options.store_events;
                let pg = pg.clone();
                let bench =
                    tokio::task::spawn_blocking(move || store_bench::append(events, threads, pg.as_deref()))
                        .await
                        .context("the store benchmark panicked")??;
                store.push(bench);
            }
        }
    }
    let mut opencode = Vec::new();
    let mut opencode_note = options.opencode_note.clone();
    if let Some(bin) = &options.opencode {
        // The brief's workload first (one turn), then LANDSCAPE.md's (one tool call), both without
        // snapshots as LANDSCAPE.md's headline figure was taken.
        for tool_call in [false, true] {
            let scenario = OpenCodeScenario {
                sessions: options.opencode_sessions,
                latency: Duration::ZERO,
                tool_call,
                snapshots: false,
            };
            progress(&format!(
                "opencode: {} concurrent {} sessions",
                scenario.sessions,
                if tool_call { "one-tool-call" } else { "one-turn" }
            ));
            // The reference line is OpenCode's behaviour, not ours: a failure there is reported in
            // the document instead of losing every figure measured before it.
            match opencode::run(bin, scenario).await {
                Ok(run) => opencode.push(run),
                Err(e) => {
                    progress(&format!("opencode: {e:#}"));
                    opencode_note = Some(format!("OpenCode run failed: {e:#}"));
                }
            }
        }
    }
    Ok(Results {
        machine,
        command: options.command.clone(),
        repeat: options.repeat.max(1),
        missions,
        repeats_wall_ms,
        startups_ms,
        resume,
        store,
        opencode,
        opencode_note,
        load_after: machine::load_average(),
    })
}

/// The workspace this crate belongs to (for `.ci/opencode` and the commit being measured).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The `orchestrator` binary: the path given, else the one built beside this program (the same
/// target folder and profile, e.g. target/release/orchestrator next to target/release/orchestrator-bench).
pub fn locate_orchestrator(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        if !path.is_file() {
            bail!("{} does not exist", path.display());
        }
        // Absolute: missions start it from inside their repositories.
        return std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()));
    }
    let exe = std::env::current_exe().context("cannot find this program's own path")?;
    // A test binary lives one level deeper, in target/<profile>/deps.
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("orchestrator");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no `orchestrator` binary beside {}; build it first (cargo build --release -p orchestrator-cli) or pass \
         --orchestrator PATH",
        exe.display()
    )
}
