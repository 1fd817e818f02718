//! `orchestrator worker`: runs units of missions started with `--workers external` (issue #20).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use orchestrator_core::{run_worker, WorkerOptions, MAX_SLOTS, STORE_URL_VAR};
use tokio_util::sync::CancellationToken;

use crate::out::{errln, outln};

#[derive(Args)]
pub struct WorkerArgs {
    /// How many units this worker runs at once (its own cap; each mission's --max-parallel holds
    /// across all workers).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=MAX_SLOTS as i64))]
    slots: u32,
    /// Where the worker keeps its copies of the missions' remotes and the units' worktrees.
    #[arg(long, value_name = "DIR", default_value = "orchestrator-worker")]
    workdir: PathBuf,
    /// How long a unit's lease lasts unless renewed, in seconds (renewed every third of it).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_secs: u64,
    /// Stop once no unit runs and none waits (for scripts); by default it waits for work until
    /// Ctrl-C or SIGTERM.
    #[arg(long)]
    until_idle: bool,
}

pub async fn run(args: WorkerArgs) -> u8 {
    let Some(store_url) = std::env::var(STORE_URL_VAR).ok().filter(|u| !u.trim().is_empty()) else {
        errln!(
            "error: `orchestrator worker` needs the missions' PostgreSQL store: --store postgres://… \
             (or {STORE_URL_VAR})"
        );
        return 2;
    };
    let options = WorkerOptions {
        store_url,
        slots: args.slots as usize,
        workdir: args.workdir,
        lease: Duration::from_secs(args.lease_secs),
        until_idle: args.until_idle,
    };
    let cancel = CancellationToken::new();
    stop_on_signals(cancel.clone());
    match run_worker(options, cancel).await {
        Ok(report) => {
            outln!(
                "worker stopped: {} unit(s) run, {} passed, {} failed, {} given back or taken over",
                report.units,
                report.passed,
                report.failed,
                report.let_go
            );
            0
        }
        Err(e) => {
            errln!("error: {e}");
            e.exit_code().clamp(0, 255) as u8
        }
    }
}

/// Ctrl-C or SIGTERM: the running units' sessions stop and are given back for other workers.
fn stop_on_signals(cancel: CancellationToken) {
    tokio::spawn(async move {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        errln!("stopping: the running units are given back to the queue…");
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(3);
        }
    });
}
