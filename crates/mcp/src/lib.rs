//! `orchestrator mcp`: a Model Context Protocol server on stdio, so that any MCP client (OpenCode,
//! Claude Code, Codex, …) can start a mission in the background, follow it, read its result and
//! cancel it.
//!
//! The server never runs a mission in its own process: `start_mission` launches `orchestrator task
//! --json` as a detached child, so a mission outlives the client that started it, and everything else
//! reads the repository's mission store, the same way `orchestrator status` does.

mod error;
mod follow;
mod launch;
mod params;
mod report;
mod resources;
mod server;
mod wait;

use std::path::PathBuf;
use std::time::Duration;

use rmcp::ServiceExt;

pub use error::{ServeError, ToolError};
pub use params::{ApprovePlanParams, RepoParams, StartMissionParams, WaitParams};
pub use server::OrchestratorMcp;

/// How the server launches and finds missions.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The `orchestrator` binary that runs missions (the running binary, in the CLI).
    pub exe: PathBuf,
    /// The repository used when a tool call names none: the folder the client started the server in.
    pub default_repo: PathBuf,
    /// How long `start_mission` waits for the mission to report that it started.
    pub start_timeout: Duration,
}

impl ServerOptions {
    pub fn new(exe: PathBuf, default_repo: PathBuf) -> Self {
        ServerOptions {
            exe,
            default_repo,
            start_timeout: Duration::from_secs(120),
        }
    }

    /// Missions run by this very binary, in the folder the client started the server in.
    pub fn from_process() -> Result<Self, ServeError> {
        let exe = std::env::current_exe()
            .map_err(|e| ServeError::Setup(format!("cannot find this binary: {e}")))?;
        let cwd = std::env::current_dir()
            .map_err(|e| ServeError::Setup(format!("cannot read the working directory: {e}")))?;
        Ok(ServerOptions::new(exe, cwd))
    }
}

/// Serves MCP on stdin/stdout until the client closes the connection.
pub async fn serve_stdio(options: ServerOptions) -> Result<(), ServeError> {
    let running = OrchestratorMcp::new(options)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| ServeError::Initialize(e.to_string()))?;
    running.waiting().await.map_err(ServeError::Join)?;
    Ok(())
}
