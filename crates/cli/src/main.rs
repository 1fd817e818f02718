//! `orchestrator`: the command-line front end. It parses flags, starts the engine, renders the
//! engine's event stream (human progress lines, or JSON lines with `--json`) and maps the outcome to
//! the exit status of docs/protocol.md.

mod approve;
mod install;
mod logs;
mod missions;
mod out;
mod progress;
mod report;
mod roles;
mod serve;
mod status;
mod telemetry;
mod tell;
mod terminal;
mod worker;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use orchestrator_core::config::{MissionSettings, Provider};
use orchestrator_core::{
    EngineError, EventBus, IfInterrupted, MissionControl, MissionOptions, MissionReport, ResumeOptions,
};
use out::{errln, outln};
use terminal::Output;
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
    /// Keep the missions in this PostgreSQL database (postgres://USER[:PASSWORD]@HOST[:PORT]/DB)
    /// instead of the repository's .orchestrator/state.db; several repositories may share one.
    #[arg(
        long,
        global = true,
        env = "ORCHESTRATOR_STORE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    store: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a mission in the current repository until it is sealed.
    Task(TaskArgs),
    /// Continue the repository's unfinished mission after a crash, kill or Ctrl-C.
    Resume(ResumeArgs),
    /// Every mission of the repository, newest first: id, objective, state, outcome, when, tokens, cost.
    Missions(missions::MissionsArgs),
    /// The mission, its task tree, sessions, tokens and evidence.
    Status(StatusArgs),
    /// The mission's event log.
    Logs(LogsArgs),
    /// Stop the running mission cleanly (resumable later).
    Cancel(CancelArgs),
    /// Answer the plan a mission started with --approve-plan waits with: approve it, reject it with
    /// feedback, or replace it with an edited plan.
    Approve(approve::ApproveArgs),
    /// Send a running unit's worker a message, given to it before its next model call (--all: every
    /// running worker).
    Tell(tell::TellArgs),
    /// Serve the Model Context Protocol on stdin/stdout: tools to start, follow and cancel missions.
    Mcp,
    /// Register the MCP server and a /task command in another tool's config.
    Install(install::InstallArgs),
    /// Remove exactly what `install` added.
    Uninstall(install::InstallArgs),
    /// Serve the HTTP API and web dashboard: start, watch and cancel missions from a browser.
    Serve(serve::ServeArgs),
    /// Write a finished (or unfinished) mission as a self-contained Markdown report.
    Report(report::ReportArgs),
    /// Remove the branches and worktrees that finished missions left, saying what was removed.
    Clean(CleanArgs),
    /// The roles a mission runs (built in, or from .orchestrator/roles/<role>.md): list, show, init.
    Roles(roles::RolesArgs),
    /// Run units of missions started with `--workers external`: claims them from the PostgreSQL
    /// store (--store), builds, verifies and reviews each, and pushes it to the mission's remote.
    Worker(worker::WorkerArgs),
}

#[derive(Args)]
struct CleanArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Only list what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// Also remove interrupted missions' branches and worktrees (their work is lost to `resume`).
    #[arg(long)]
    all: bool,
}

#[derive(Args)]
struct RepoArgs {
    /// The repository to work in.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
}

/// `--mission ID` of the commands that read or stop one mission.
#[derive(Args)]
struct MissionArg {
    /// The mission: its id, or the start of one that names no other (default: the latest).
    /// `orchestrator missions` lists them.
    #[arg(long, value_name = "ID")]
    mission: Option<String>,
}

#[derive(Args)]
struct CancelArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    mission: MissionArg,
}

#[derive(Args)]
struct RunFlags {
    /// Sessions in flight at once, across all roles and depths.
    #[arg(long, allow_negative_numbers = true, value_parser = whole_number::<usize>)]
    max_parallel: Option<usize>,
    /// How deep workers may split their units with `spawn`.
    #[arg(long, allow_negative_numbers = true, value_parser = whole_number::<u32>)]
    max_depth: Option<u32>,
    /// Verification rounds before the mission gives up.
    #[arg(long, allow_negative_numbers = true, value_parser = whole_number::<u32>)]
    rounds: Option<u32>,
    /// openai, anthropic or opencode.
    #[arg(long)]
    provider: Option<Provider>,
    /// With --provider opencode: a running `opencode serve` to use (its password from
    /// OPENCODE_SERVER_PASSWORD); without it, one is started and stopped with the mission.
    #[arg(long, value_name = "URL")]
    opencode_url: Option<String>,
    /// The model for every role (overrides ORCHESTRATOR_MODEL and config).
    #[arg(long)]
    model: Option<String>,
    /// Stop the mission cleanly when this many tokens are used.
    #[arg(long, allow_negative_numbers = true, value_parser = whole_number::<u64>)]
    budget_tokens: Option<u64>,
    /// Best of N: workers that build each unit side by side, 1 to 5; the reviewer keeps the best one
    /// that passes verification (`[limits] candidates`). Not retries: see `[limits] unit_attempts`.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole_number::<u32>)]
    attempts: Option<u32>,
    /// Who runs the units: `local` (this process, the default) or `external` (`orchestrator worker`
    /// processes on any host; needs a PostgreSQL store and --remote).
    #[arg(long, value_name = "local|external")]
    workers: Option<orchestrator_protocol::Workers>,
    /// With --workers external: the shared git remote (a URL or path) that workers fetch the
    /// mission's commits from and push their units to.
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
    /// Confine agent commands (Landlock): `on` (the default) or `off` to run them with all your access.
    #[arg(long, value_name = "on|off", value_parser = on_off)]
    sandbox: Option<bool>,
    /// Start even though no build, lint or test command was found or configured: reviews alone judge
    /// the work, and the outcome says "sealed without verification".
    #[arg(long)]
    no_verify: bool,
    /// Stop after planning and show the plan: nothing is executed until it is approved
    /// (`orchestrator approve`, or the terminal view's keys).
    #[arg(long)]
    approve_plan: bool,
    /// Print events as JSON lines on stdout.
    #[arg(long)]
    json: bool,
    /// Progress lines instead of the terminal view (which is shown when stdout and stderr are terminals).
    // Falsey parsing: ORCHESTRATOR_PLAIN=1 (or true, yes, on) turns it on, 0/false/no/off or empty off.
    #[arg(long, env = "ORCHESTRATOR_PLAIN", value_parser = clap::builder::FalseyValueParser::new())]
    plain: bool,
    /// Send the mission as OpenTelemetry traces to this OTLP/HTTP collector, e.g. http://localhost:4318
    /// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT do the same; off when unset).
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

/// A count from the command line: a whole number, with a word for the negative ones people try (clap's
/// own message suggests `-- -1`, which is wrong here). The ranges are checked with the config files'.
fn whole_number<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    if text.trim_start().starts_with('-') {
        return Err("must be a whole number, not negative".into());
    }
    text.trim()
        .parse()
        .map_err(|e| format!("must be a whole number ({e})"))
}

impl RunFlags {
    fn settings(&self) -> MissionSettings {
        MissionSettings {
            provider: self.provider,
            model: self.model.clone(),
            max_parallel: self.max_parallel,
            max_depth: self.max_depth,
            rounds: self.rounds,
            budget_tokens: self.budget_tokens,
            opencode_url: self.opencode_url.clone(),
            sandbox: self.sandbox,
            no_verify: self.no_verify.then_some(true),
            approve_plan: self.approve_plan.then_some(true),
            attempts: self.attempts,
            workers: self.workers,
            remote: self.remote.clone(),
        }
    }
}

/// `--sandbox on|off`.
fn on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected `on` or `off`, got `{other}`")),
    }
}

#[derive(Args)]
struct TaskArgs {
    /// What the mission should achieve.
    objective: String,
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    flags: RunFlags,
    /// Start although the working tree has uncommitted changes (they are never touched).
    #[arg(long)]
    allow_dirty: bool,
    /// Leave the result on the mission branch instead of fast-forwarding your branch.
    #[arg(long)]
    no_apply: bool,
    /// Keep the mission's branches when it is over (by default only a branch with work your branch
    /// lacks is kept).
    #[arg(long)]
    keep_branches: bool,
    /// First abandon the repository's interrupted mission: its worktrees and branches are removed
    /// (its work is lost to `resume`), its record, log and transcripts stay.
    #[arg(long)]
    abandon: bool,
}

#[derive(Args)]
struct ResumeArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The mission to continue: its id, or the start of one that names no other (default: the newest
    /// interrupted one). `orchestrator missions` lists them.
    #[arg(long, value_name = "ID")]
    mission: Option<String>,
    #[command(flatten)]
    flags: RunFlags,
}

#[derive(Args)]
struct StatusArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    mission: MissionArg,
    /// Print the status as one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct LogsArgs {
    #[command(flatten)]
    repo: RepoArgs,
    #[command(flatten)]
    mission: MissionArg,
    /// Print the raw JSON lines.
    #[arg(long)]
    json: bool,
    /// Keep printing new events until the mission stops.
    #[arg(long)]
    follow: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // clap uses 0 for --help/--version and 2 for usage errors, as docs/protocol.md does.
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORCHESTRATOR_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(terminal::LogWriter)
        // Colour only for a person at a terminal: logs piped to a file or CI stay plain text.
        .with_ansi(
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .init();
    orchestrator_core::set_store_url(cli.store.clone());
    if let Some(url) = &cli.store {
        // The missions `orchestrator mcp` starts run this binary again: they must use the same store.
        // Kept from git and agent commands as a secret variable (orchestrator_sandbox::is_secret_env).
        std::env::set_var(orchestrator_core::STORE_URL_VAR, url);
    }
    // Before any thread or agent command starts: the key in our environment is not readable through
    // /proc by the commands we run.
    orchestrator_sandbox::protect_process();
    // SAFETY: no other thread exists yet (the async runtime starts below).
    unsafe { orchestrator_sandbox::scrub_environment_block() };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Task(args) => task(args).await,
            Command::Resume(args) => resume(args).await,
            Command::Missions(args) => missions::run(args).await,
            Command::Status(args) => {
                status::run(&args.repo.repo, args.mission.mission.as_deref(), args.json).await
            }
            Command::Logs(args) => {
                let mission = args.mission.mission.as_deref();
                logs::run(&args.repo.repo, mission, args.json, args.follow).await
            }
            Command::Cancel(args) => cancel(&args).await,
            Command::Approve(args) => approve::run(args).await,
            Command::Tell(args) => tell::run(args).await,
            Command::Mcp => mcp().await,
            Command::Install(args) => install::install(args).await,
            Command::Uninstall(args) => install::uninstall(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Report(args) => report::run(args).await,
            Command::Clean(args) => clean(&args).await,
            Command::Roles(args) => roles::run(args).await,
            Command::Worker(args) => worker::run(args).await,
        }
    });
    ExitCode::from(code)
}

async fn task(args: TaskArgs) -> u8 {
    let control = MissionControl::new();
    let repo = args.repo.repo.clone();
    let options = MissionOptions {
        repo: args.repo.repo,
        objective: args.objective,
        allow_dirty: args.allow_dirty,
        apply: !args.no_apply,
        keep_branches: args.keep_branches,
        if_interrupted: if args.abandon {
            IfInterrupted::Abandon
        } else {
            IfInterrupted::Refuse
        },
        settings: args.flags.settings(),
        control: control.clone(),
    };
    drive(&args.flags, &repo, control, |bus, cancel| {
        orchestrator_core::run_task(options, bus, cancel)
    })
    .await
}

async fn resume(args: ResumeArgs) -> u8 {
    let control = MissionControl::new();
    let repo = args.repo.repo.clone();
    let options = ResumeOptions {
        repo: args.repo.repo,
        mission: args.mission,
        settings: args.flags.settings(),
        control: control.clone(),
    };
    drive(&args.flags, &repo, control, |bus, cancel| {
        orchestrator_core::resume(options, bus, cancel)
    })
    .await
}

/// Runs a mission with the terminal view or the progress printer on its event stream and Ctrl-C/SIGTERM
/// wired to a clean stop. `control` is the mission's own handle, for the view's pause key.
async fn drive<F, Fut>(flags: &RunFlags, repo: &Path, control: MissionControl, start: F) -> u8
where
    F: FnOnce(EventBus, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = Result<MissionReport, EngineError>>,
{
    let json = flags.json;
    let bus = EventBus::new();
    let traces = match telemetry::start(flags, &bus) {
        Ok(traces) => traces,
        Err(code) => return code,
    };
    let events = bus.subscribe();
    let cancel = CancellationToken::new();
    let printer = match Output::choose(json, flags.plain) {
        Output::Terminal => {
            let (repo, cancel) = (repo.to_path_buf(), cancel.clone());
            tokio::spawn(async move { terminal::show(events, &repo, control, cancel).await })
        }
        Output::Json => tokio::spawn(progress::render(events, true)),
        Output::Plain => {
            let repo = repo.to_path_buf();
            tokio::spawn(async move { progress::render_plain(events, &repo).await })
        }
    };
    watch_signals(cancel.clone());
    let result = start(bus.clone(), cancel).await;
    bus.close();
    let _ = printer.await;
    let code = match result {
        Ok(report) => {
            progress::print_report(&report, json);
            report.outcome.exit_code() as u8
        }
        Err(e) => {
            errln!("error: {e}");
            e.exit_code() as u8
        }
    };
    telemetry::finish(traces).await;
    code
}

async fn cancel(args: &CancelArgs) -> u8 {
    let mission = args.mission.mission.as_deref();
    let stopped = match orchestrator_core::repo_root(&args.repo.repo).await {
        Ok(root) => orchestrator_core::cancel_mission(&root, mission, Duration::from_secs(120)).await,
        Err(e) => Err(e),
    };
    out::sentence_or_error(stopped)
}

async fn clean(args: &CleanArgs) -> u8 {
    let cleaned = match orchestrator_core::repo_root(&args.repo.repo).await {
        Ok(root) => orchestrator_core::clean(&root, args.dry_run, args.all).await,
        Err(e) => Err(e),
    };
    match cleaned {
        Ok(report) => {
            outln!("{}", report.render());
            0
        }
        Err(e) => {
            errln!("error: {e}");
            e.exit_code() as u8
        }
    }
}

/// `orchestrator mcp`: serves until the client closes the connection.
async fn mcp() -> u8 {
    let served = match orchestrator_mcp::ServerOptions::from_process() {
        Ok(options) => orchestrator_mcp::serve_stdio(options).await,
        Err(e) => Err(e),
    };
    match served {
        Ok(()) => 0,
        Err(e) => {
            errln!("error: {e}");
            1
        }
    }
}

/// Ctrl-C or SIGTERM (what `orchestrator cancel` sends): stop cleanly — sessions aborted, work kept,
/// exit 3, resumable. A second Ctrl-C leaves at once.
fn watch_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM: {e}");
                return;
            }
        };
        let interrupted = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    // Ctrl-C in the user's editor (plan editing) reaches us too; it is the editor's.
                    if !orchestrator_tui::editor_open() {
                        break true;
                    }
                }
                _ = term.recv() => break false,
            }
        };
        // The terminal view says so itself; a line on stderr would scribble over it. SIGTERM comes
        // from `orchestrator cancel` (or a service manager), where no Ctrl-C is at hand.
        if !orchestrator_tui::is_active() {
            if interrupted {
                errln!("\nstopping the mission cleanly (Ctrl-C again to quit at once)…");
            } else {
                errln!("stopping the mission cleanly (asked to stop by `orchestrator cancel` or SIGTERM)…");
            }
        }
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            orchestrator_tui::restore();
            std::process::exit(3);
        }
    });
}
