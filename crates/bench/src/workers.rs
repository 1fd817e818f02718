//! Issue #20's benchmark: one mission of N independent units at a fixed latency per model call, its
//! units built by 1, 2 or 4 `orchestrator worker` processes on this machine (slots 50 each) through a
//! PostgreSQL store and a bare git remote. Reported: wall time against the ideal critical path, the
//! store's transactions per unit (the server's own count, every process together), and the
//! commander's and workers' CPU.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use orchestrator_fake_model::script::ScriptedMission;
use orchestrator_fake_model::{FakeOptions, FakeServer};
use serde::Serialize;

use crate::child::{clean_command, Usage, Watched};
use crate::mission::{
    critical_turns, independent_units, orchestrator_command, role_turns, wait_with_timeout, MODEL, OBJECTIVE,
};
use crate::repo::BenchRepo;

/// Each worker process's slots.
pub const SLOTS: usize = 50;
/// How long one mission may take before the bench gives up on it.
const MISSION_TIMEOUT: Duration = Duration::from_secs(1200);

#[derive(Debug, Clone, Serialize)]
pub struct WorkersRun {
    pub workers: usize,
    pub units: usize,
    #[serde(serialize_with = "crate::mission::ser_ms")]
    pub latency: Duration,
    pub commander: Usage,
    /// The workers' own CPU together, and the most memory one of them held.
    #[serde(serialize_with = "crate::mission::ser_ms")]
    pub workers_cpu: Duration,
    pub worker_peak_rss_kib: u64,
    pub model_calls: usize,
    pub critical_turns: usize,
    #[serde(serialize_with = "crate::mission::ser_ms")]
    pub ideal: Duration,
    /// Transactions the server committed while the mission ran, all processes together.
    pub store_transactions: i64,
    pub sealed: bool,
}

impl WorkersRun {
    pub fn ratio(&self) -> f64 {
        self.commander.wall.as_secs_f64() / self.ideal.as_secs_f64().max(1e-9)
    }

    pub fn transactions_per_unit(&self) -> f64 {
        self.store_transactions as f64 / self.units.max(1) as f64
    }
}

/// Runs the mission once per entry of `worker_counts`, each on a fresh schema of `store_url`.
pub async fn run_all(
    orchestrator: &Path,
    store_url: &str,
    units: usize,
    worker_counts: &[usize],
    latency: Duration,
    progress: &dyn Fn(&str),
) -> Result<Vec<WorkersRun>> {
    let mut runs = Vec::new();
    for &workers in worker_counts {
        progress(&format!(
            "{units} units, {workers} worker(s), {} ms per call",
            latency.as_millis()
        ));
        let run = run(orchestrator, store_url, units, workers, latency).await?;
        progress(&format!(
            "  wall {:.1} s, ideal {:.1} s, {:.0} store transactions per unit",
            run.commander.wall.as_secs_f64(),
            run.ideal.as_secs_f64(),
            run.transactions_per_unit()
        ));
        runs.push(run);
    }
    Ok(runs)
}

async fn run(
    orchestrator: &Path,
    base_url: &str,
    units: usize,
    workers: usize,
    latency: Duration,
) -> Result<WorkersRun> {
    let repo = BenchRepo::new()?;
    let remote = repo.scratch().join("shared.git");
    let made = Command::new("git")
        .args(["init", "--bare", "--quiet"])
        .arg(&remote)
        .status()
        .context("cannot run git")?;
    if !made.success() {
        bail!("git init --bare failed");
    }
    let url = fresh_schema(base_url)?;
    let server = FakeServer::start(
        ScriptedMission::new(independent_units(units)),
        FakeOptions {
            latency,
            ..FakeOptions::default()
        },
    )
    .await
    .context("cannot start the fake model server")?;
    let before = committed_transactions(base_url)?;
    let mut command = orchestrator_command(orchestrator, &repo, &server)?;
    command.args([
        "task",
        OBJECTIVE,
        "--max-parallel",
        &units.to_string(),
        "--store",
        &url,
    ]);
    command.args(["--workers", "external", "--remote"]).arg(&remote);
    let commander = Watched::spawn(command)?;
    let mut pool = Vec::new();
    for n in 1..=workers {
        let dir = repo.scratch().join(format!("w{n}"));
        pool.push(Watched::spawn(worker_command(
            orchestrator,
            &repo,
            &server,
            &url,
            &dir,
            n,
        )?)?);
    }
    let usage = wait_with_timeout(commander, MISSION_TIMEOUT).await;
    let mut workers_cpu = Duration::ZERO;
    let mut worker_peak_rss_kib = 0;
    for worker in pool {
        let _ = worker.handle().signal(libc::SIGTERM);
        if let Ok(used) = wait_with_timeout(worker, Duration::from_secs(60)).await {
            workers_cpu += used.own_cpu;
            worker_peak_rss_kib = worker_peak_rss_kib.max(used.peak_rss_kib);
        }
    }
    let usage = usage?;
    let after = committed_transactions(base_url)?;
    if usage.exit_code != Some(0) {
        let stderr = std::fs::read_to_string(repo.scratch().join("stderr.txt")).unwrap_or_default();
        let start = stderr.len().saturating_sub(2000);
        let start = (start..stderr.len())
            .find(|i| stderr.is_char_boundary(*i))
            .unwrap_or(0);
        bail!(
            "the mission did not seal (exit {:?}): {}",
            usage.exit_code,
            &stderr[start..]
        );
    }
    let requests = server.requests();
    server.shutdown().await;
    let roles = role_turns(&requests);
    let critical = critical_turns(&roles, units.min(SLOTS * workers));
    Ok(WorkersRun {
        workers,
        units,
        latency,
        workers_cpu,
        worker_peak_rss_kib,
        model_calls: requests.len(),
        critical_turns: critical,
        ideal: latency * u32::try_from(critical).unwrap_or(u32::MAX),
        store_transactions: after - before,
        sealed: usage.exit_code == Some(0),
        commander: usage,
    })
}

fn worker_command(
    orchestrator: &Path,
    repo: &BenchRepo,
    server: &FakeServer,
    url: &str,
    dir: &Path,
    n: usize,
) -> Result<Command> {
    let mut command = clean_command(orchestrator, repo.home());
    let log = |stream: &str| -> Result<std::fs::File> {
        let path: PathBuf = repo.scratch().join(format!("worker{n}.{stream}.txt"));
        std::fs::File::create(&path).with_context(|| format!("cannot capture {}", path.display()))
    };
    command
        .current_dir(repo.scratch())
        .args([
            "worker",
            "--slots",
            &SLOTS.to_string(),
            "--store",
            url,
            "--workdir",
        ])
        .arg(dir)
        .env("OPENAI_BASE_URL", server.openai_base_url())
        .env("OPENAI_API_KEY", "bench-key")
        .env("ORCHESTRATOR_MODEL", MODEL)
        .env("ORCHESTRATOR_HOST", format!("bench-host-{n}"))
        .stdin(Stdio::null())
        .stdout(log("stdout")?)
        .stderr(log("stderr")?);
    Ok(command)
}

/// Runs a blocking PostgreSQL call on a thread of its own: the sync client starts a runtime of its
/// own, which cannot run inside ours.
fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    std::thread::spawn(f)
        .join()
        .map_err(|_| anyhow::anyhow!("a PostgreSQL call panicked"))?
}

fn fresh_schema(base_url: &str) -> Result<String> {
    let url = base_url.to_string();
    off_runtime(move || fresh_schema_here(&url))
}

fn committed_transactions(base_url: &str) -> Result<i64> {
    let url = base_url.to_string();
    off_runtime(move || committed_transactions_here(&url))
}

/// A schema of its own for one run (the store's tables are made on first use).
fn fresh_schema_here(base_url: &str) -> Result<String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let schema = format!("bench_workers_{nanos}");
    let mut client =
        postgres::Client::connect(base_url, postgres::NoTls).context("cannot reach the PostgreSQL server")?;
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .context("cannot create the run's schema")?;
    let sep = if base_url.contains('?') { '&' } else { '?' };
    Ok(format!("{base_url}{sep}options=-csearch_path%3D{schema}"))
}

/// The server's count of committed transactions in this database (`pg_stat_database`), which it
/// publishes with a short delay: read after a pause.
fn committed_transactions_here(base_url: &str) -> Result<i64> {
    std::thread::sleep(Duration::from_millis(700));
    let mut client =
        postgres::Client::connect(base_url, postgres::NoTls).context("cannot reach the PostgreSQL server")?;
    client.batch_execute("SELECT pg_stat_clear_snapshot()")?;
    let row = client.query_one(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        &[],
    )?;
    Ok(row.try_get(0)?)
}

/// The runs as a Markdown table.
pub fn markdown(runs: &[WorkersRun]) -> String {
    let mut out = String::from(
        "| workers × slots | units | ms per call | wall | ideal | wall / ideal | model calls | store transactions per unit | commander CPU | workers' CPU | commander peak RSS | a worker's peak RSS |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        out.push_str(&format!(
            "| {} × {SLOTS} | {} | {} | {:.1} s | {:.1} s | {:.2} | {} | {:.0} | {:.1} s | {:.1} s | {} MiB | {} MiB |\n",
            r.workers,
            r.units,
            r.latency.as_millis(),
            r.commander.wall.as_secs_f64(),
            r.ideal.as_secs_f64(),
            r.ratio(),
            r.model_calls,
            r.transactions_per_unit(),
            r.commander.own_cpu.as_secs_f64(),
            r.workers_cpu.as_secs_f64(),
            r.commander.peak_rss_kib / 1024,
            r.worker_peak_rss_kib / 1024,
        ));
    }
    out
}
