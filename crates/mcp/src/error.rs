use orchestrator_core::EngineError;
use thiserror::Error;

/// Why a tool call failed. Its text goes back to the MCP client as a tool error, so it says what to
/// do about it.
#[derive(Debug, Error)]
pub enum ToolError {
    /// The engine refused or failed (not a repository, no mission yet, …).
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The mission process stopped before it started the mission; `output` is what it printed.
    #[error("the mission did not start (exit status {code}):\n{output}")]
    NotStarted { code: String, output: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl ToolError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ToolError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Why the server stopped serving.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("{0}")]
    Setup(String),
    #[error("the MCP client did not complete the handshake: {0}")]
    Initialize(String),
    #[error("the MCP service task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
