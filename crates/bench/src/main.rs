//! `orchestrator-bench`: runs the benchmark suite and prints the Markdown report on stdout (progress
//! on stderr). Build the orchestrator first, in the same profile:
//!
//! ```sh
//! cargo build --release -p orchestrator-cli
//! cargo run --release -p orchestrator-bench -- [--units 1,10,50] [--latency-ms 0,500] [--repeat 3]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use orchestrator_bench::{locate_orchestrator, opencode, report, run_suite, workspace_root, Options};

#[derive(Parser)]
#[command(
    name = "orchestrator-bench",
    about = "Benchmarks the orchestrator against the fake model server"
)]
struct Args {
    /// The `orchestrator` binary (default: the one beside this program, e.g. target/release/orchestrator).
    #[arg(long)]
    orchestrator: Option<PathBuf>,
    /// Mission sizes (independent units; --max-parallel is set to the same number).
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    units: Vec<usize>,
    /// Fake model latency per call, in ms.
    #[arg(long = "latency-ms", value_delimiter = ',', default_value = "0,500")]
    latency_ms: Vec<u64>,
    /// Runs per (units, latency); the median-wall run is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Stored tasks for the resume measurement (0 skips it).
    #[arg(long, default_value_t = 1000)]
    resume_tasks: usize,
    /// Events for the Store::append_event micro-benchmark (0 skips it).
    #[arg(long, default_value_t = 20_000)]
    store_events: usize,
    /// Threads for the contended store micro-benchmark.
    #[arg(long, default_value_t = 8)]
    store_threads: usize,
    /// Also run the store micro-benchmark on this PostgreSQL server (postgres://…).
    #[arg(long, value_name = "URL")]
    store_pg: Option<String>,
    /// OpenCode for the reference line: `auto` (OPENCODE_BIN, then .ci/opencode), `off`, or a path.
    #[arg(long, default_value = "auto")]
    opencode: String,
    /// Concurrent OpenCode sessions.
    #[arg(long, default_value_t = 50)]
    opencode_sessions: usize,
    /// Also write every measurement as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Only the builds benchmark: a mission of this many units on a real project (see --ecosystem),
    /// its units building cold (`[verify] cache = "off"`) and warm (`"auto"`), against one cold build
    /// plus as many incremental ones. Needs the registry (`cargo fetch`; npm's for every cold install).
    #[arg(long)]
    builds: Option<usize>,
    /// The project --builds runs on: a Rust crate, or a TypeScript package installed with `npm ci`.
    #[arg(long, value_enum, default_value = "rust", requires = "builds")]
    ecosystem: orchestrator_bench::builds::Ecosystem,
    /// Keep each mission's stdout and stderr in this folder (with ORCHESTRATOR_LOG=debug: git timings).
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// Instead of the suite: billed tokens per sealed unit of a mission of this many units, with and
    /// without prompt caching, on both APIs (see docs/benchmarks.md).
    #[arg(long)]
    caching_units: Option<usize>,
    /// Instead of the suite: a mission of this many units built by external `orchestrator worker`
    /// processes (50 slots each) through the PostgreSQL store of --store-pg and a bare remote.
    #[arg(long, requires = "store_pg")]
    workers_units: Option<usize>,
    /// How many worker processes, one run each (with --workers-units).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    worker_counts: Vec<usize>,
    /// Fake model latency per call for --workers-units, in ms.
    #[arg(long, default_value_t = 2000)]
    call_ms: u64,
}

/// `--workers-units N`: issue #20's benchmark, with the machine it ran on.
async fn workers(orchestrator: &std::path::Path, args: &Args, units: usize) -> Result<()> {
    let progress = |line: &str| eprintln!("[bench] {line}");
    let machine = orchestrator_bench::machine::Machine::detect(orchestrator);
    let Some(url) = args.store_pg.as_deref() else {
        anyhow::bail!("--workers-units needs --store-pg postgres://…");
    };
    let runs = orchestrator_bench::workers::run_all(
        orchestrator,
        url,
        units,
        &args.worker_counts,
        Duration::from_millis(args.call_ms),
        &progress,
    )
    .await?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&runs)?)?;
    }
    println!("{}\n", machine_line(&machine));
    println!(
        "- command: `{}`\n",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    print!("{}", orchestrator_bench::workers::markdown(&runs));
    Ok(())
}

/// The machine a benchmark ran on, as the reports' first line gives it.
fn machine_line(machine: &orchestrator_bench::machine::Machine) -> String {
    format!(
        "{} · {} ({} CPUs, {:.1} GiB) · Linux {} · {} · load before: {}",
        machine.date,
        machine.cpu,
        machine.nproc,
        machine.ram_gib,
        machine.kernel,
        machine.commit,
        machine.load_before
    )
}

/// The caching benchmark alone, with the machine it ran on.
async fn caching(orchestrator: &std::path::Path, units: usize) -> Result<()> {
    let machine = orchestrator_bench::machine::Machine::detect(orchestrator);
    let progress = |line: &str| eprintln!("[bench] {line}");
    let runs = orchestrator_bench::caching::run_all(orchestrator, units, &progress).await?;
    println!(
        "- {}; {} × {} ({} logical CPUs), Linux {}; orchestrator built from commit {}",
        machine.date, machine.nproc, machine.cpu, machine.nproc, machine.kernel, machine.commit
    );
    println!(
        "- command: `{}`\n",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    print!("{}", orchestrator_bench::caching::markdown(&runs));
    Ok(())
}

/// `--builds N`: verification of N units on a real project, cold and warm (issue #19).
async fn builds(
    orchestrator: &std::path::Path,
    ecosystem: orchestrator_bench::builds::Ecosystem,
    units: usize,
    json: Option<&std::path::Path>,
) -> Result<()> {
    let progress = |line: &str| eprintln!("[bench] {line}");
    let machine = orchestrator_bench::machine::Machine::detect(orchestrator);
    let builds = orchestrator_bench::builds::run(orchestrator, ecosystem, units, &progress).await?;
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&builds)?)?;
    }
    println!("{}\n", machine_line(&machine));
    print!("{}", orchestrator_bench::builds::markdown(&builds));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let orchestrator = locate_orchestrator(args.orchestrator.as_deref())?;
    if let Some(units) = args.caching_units {
        return caching(&orchestrator, units).await;
    }
    if let Some(units) = args.workers_units {
        return workers(&orchestrator, &args, units).await;
    }
    if let Some(units) = args.builds {
        return builds(&orchestrator, args.ecosystem, units, args.json.as_deref()).await;
    }
    let (opencode, opencode_note) = match args.opencode.as_str() {
        "off" => (None, Some("skipped with --opencode off".to_string())),
        "auto" => match opencode::find(None, &workspace_root()) {
            Some(bin) => (Some(bin), None),
            None => (
                None,
                Some("no OpenCode binary found (set OPENCODE_BIN, or run .ci/run once to install it)".into()),
            ),
        },
        path => (opencode::find(Some(path.as_ref()), &workspace_root()), None),
    };
    let options = Options {
        orchestrator,
        units: args.units,
        latencies: args
            .latency_ms
            .iter()
            .map(|ms| Duration::from_millis(*ms))
            .collect(),
        repeat: args.repeat,
        resume_tasks: (args.resume_tasks > 0).then_some(args.resume_tasks),
        store_events: args.store_events,
        store_threads: args.store_threads,
        store_pg: args.store_pg,
        opencode,
        opencode_note,
        opencode_sessions: args.opencode_sessions,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        keep_logs: args.keep_logs,
    };
    if let Some(dir) = &options.keep_logs {
        std::fs::create_dir_all(dir)?;
    }
    let progress = |line: &str| eprintln!("[bench] {line}");
    let results = run_suite(&options, &progress).await?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)?;
    }
    print!("{}", report::markdown(&results));
    Ok(())
}
