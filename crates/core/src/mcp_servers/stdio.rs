//! A stdio server: a program of ours, started for the mission in its base worktree under the same
//! supervisor as agent commands, speaking MCP on its stdin and stdout.
//!
//! The process is ours, not rmcp's child-process transport's: that one kills the process it
//! spawned when dropped, which here is the supervisor — killed first, it would leave the server to
//! init. Ours is prepared (environment, confinement, supervisor) by `orchestrator-sandbox`, and
//! stopped by cutting its lifeline.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchestrator_sandbox::{Lifeline, Policy, Sandbox};
use rmcp::model::Tool;
use rmcp::service::RunningService;
use rmcp::RoleClient;
use tokio::io::AsyncReadExt;

use super::{cut, handshake, Link};
use crate::config::McpStdio;

/// How much of a server's stderr is kept (its end), to explain a failed start or a death.
const STDERR_TAIL: usize = 2_048;

/// A running server's process and what stops it.
pub(super) struct Process {
    /// Dropping it kills the server and everything it started (see `orchestrator_sandbox::supervise`).
    lifeline: Mutex<Option<Lifeline>>,
    /// The supervisor's process, reaped once the lifeline is cut.
    child: tokio::sync::Mutex<Option<tokio::process::Child>>,
    stderr: Arc<Mutex<String>>,
    /// Keeps the server's private temp folder while it runs.
    _sandbox: Sandbox,
}

impl Process {
    /// The end of what the server wrote on stderr.
    pub(super) fn stderr_tail(&self) -> String {
        self.stderr.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Kills the server's whole tree (the supervisor does, once its lifeline is cut).
    pub(super) fn cut_lifeline(&self) {
        drop(self.lifeline.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    /// Waits for the supervisor to end, up to `within`; false when it did not.
    pub(super) async fn reap(&self, within: Duration) -> bool {
        match self.child.lock().await.take() {
            Some(mut child) => tokio::time::timeout(within, child.wait()).await.is_ok(),
            None => true,
        }
    }
}

/// Starts the program and lists its tools, all within `within`.
pub(super) async fn start(
    name: &str,
    settings: &McpStdio,
    base: &Path,
    within: Duration,
) -> Result<(RunningService<RoleClient, ()>, Vec<Tool>, Link), String> {
    let sandbox = Sandbox::new(
        settings.sandbox,
        &Policy {
            writable: Vec::new(),
            network: settings.network,
            env: settings.env.clone(),
        },
    )
    .map_err(|e| format!("{e} (or set `sandbox = false` in [mcp.{name}] to run it unconfined)"))?;
    let program = &settings.command[0];
    let mut command = tokio::process::Command::new(program);
    command.args(&settings.command[1..]);
    // The base worktree is the mission's checkout of its starting commit, never the user's own.
    let cwd = match &settings.cwd {
        Some(dir) => base.join(dir),
        None => base.to_path_buf(),
    };
    command.current_dir(&cwd);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Declared before the process: on an early return the process handle goes first (dropping it
    // does nothing to the process), then the lifeline, which kills the server's tree.
    let lifeline = sandbox
        .apply(&mut command)
        .map_err(|e| format!("cannot prepare `{program}`: {e}"))?;
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start `{program}` in {}: {e}", cwd.display()))?;
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        return Err("its stdin and stdout could not be opened".into());
    };
    let stderr = Arc::new(Mutex::new(String::new()));
    let reader = child
        .stderr
        .take()
        .map(|pipe| tokio::spawn(keep_tail(pipe, stderr.clone())));
    match handshake((stdout, stdin), within).await {
        Ok((service, tools)) => {
            let process = Process {
                lifeline: Mutex::new(Some(lifeline)),
                child: tokio::sync::Mutex::new(Some(child)),
                stderr,
                _sandbox: sandbox,
            };
            Ok((service, tools, Link::Process(Box::new(process))))
        }
        Err(e) => {
            // What the server said before it failed: a server that exits at once closes its
            // stderr, so its reader ends; one that hangs is waited for only briefly.
            if let Some(reader) = reader {
                let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
            }
            let text = stderr.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let said = match text.trim() {
                "" => String::new(),
                text => format!("; its stderr ends with: {}", cut(text, 500)),
            };
            Err(format!("{e}{said}"))
        }
    }
}

/// Reads a server's stderr to its end, keeping only its last [`STDERR_TAIL`] bytes (and logging it).
async fn keep_tail(mut stderr: tokio::process::ChildStderr, tail: Arc<Mutex<String>>) {
    let mut buffer = [0u8; 4096];
    loop {
        match stderr.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let chunk = String::from_utf8_lossy(&buffer[..n]);
                tracing::debug!(target: "mcp_server", "{}", chunk.trim_end());
                let mut kept = tail.lock().unwrap_or_else(|p| p.into_inner());
                kept.push_str(&chunk);
                if kept.len() > STDERR_TAIL {
                    let mut start = kept.len() - STDERR_TAIL;
                    while !kept.is_char_boundary(start) {
                        start += 1;
                    }
                    kept.drain(..start);
                }
            }
        }
    }
}
