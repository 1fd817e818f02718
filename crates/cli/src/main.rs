//! `orchestrator`: the command-line front end. It parses flags, starts the engine, renders the
//! engine's event stream (human progress lines, or JSON lines with `--json`) and maps the outcome to
//! the exit status of PROTOCOL.md.

mod logs;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use orchestrator_core::config::{Overrides, Provider};
use orchestrator_core::{run_task, EngineError, EventBus, MissionOptions};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "Turns one large objective into parallel, verified work by AI coding agents on your git repository"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a mission in the current repository until it is sealed.
    Task(TaskArgs),
    /// Show the event log of the repository's latest mission.
    Logs(LogsArgs),
}

#[derive(Args)]
struct TaskArgs {
    /// What the mission should achieve.
    objective: String,
    /// The repository to work in.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Sessions in flight at once, across all roles and depths.
    #[arg(long)]
    max_parallel: Option<usize>,
    /// How deep workers may split their units with `spawn`.
    #[arg(long)]
    max_depth: Option<u32>,
    /// Verification rounds before the mission gives up.
    #[arg(long)]
    rounds: Option<u32>,
    /// openai, anthropic or opencode.
    #[arg(long)]
    provider: Option<Provider>,
    /// The model for every role (overrides ORCHESTRATOR_MODEL and config).
    #[arg(long)]
    model: Option<String>,
    /// Stop the mission cleanly when this many tokens are used.
    #[arg(long)]
    budget_tokens: Option<u64>,
    /// Print events as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// Start although the working tree has uncommitted changes (they are never touched).
    #[arg(long)]
    allow_dirty: bool,
    /// Leave the result on the mission branch instead of fast-forwarding your branch.
    #[arg(long)]
    no_apply: bool,
}

#[derive(Args)]
struct LogsArgs {
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Print the raw JSON lines.
    #[arg(long)]
    json: bool,
    /// Keep printing new events until the mission finishes.
    #[arg(long)]
    follow: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap uses 0 for --help/--version and 2 for usage errors, as PROTOCOL.md does.
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORCHESTRATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Task(args) => task(args).await,
            Command::Logs(args) => logs::run(&args.repo, args.json, args.follow).await,
        }
    });
    ExitCode::from(code)
}

async fn task(args: TaskArgs) -> u8 {
    let bus = EventBus::new();
    let events = bus.subscribe();
    let printer = tokio::spawn(progress::render(events, args.json));
    let cancel = CancellationToken::new();
    watch_ctrl_c(cancel.clone());
    let options = MissionOptions {
        repo: args.repo,
        objective: args.objective,
        allow_dirty: args.allow_dirty,
        apply: !args.no_apply,
        overrides: Overrides {
            provider: args.provider,
            model: args.model,
            max_parallel: args.max_parallel,
            max_depth: args.max_depth,
            rounds: args.rounds,
            budget_tokens: args.budget_tokens,
        },
    };
    let result = run_task(options, bus.clone(), cancel).await;
    bus.close();
    let _ = printer.await;
    match result {
        Ok(report) => {
            progress::print_report(&report, args.json);
            report.outcome.exit_code() as u8
        }
        Err(e) => {
            report_error(&e);
            e.exit_code() as u8
        }
    }
}

fn report_error(e: &EngineError) {
    eprintln!("error: {e}");
}

/// First Ctrl-C: stop cleanly (sessions aborted, state flushed, exit 3). Second: leave at once.
fn watch_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping the mission cleanly (Ctrl-C again to quit at once)…");
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(3);
            }
        }
    });
}
