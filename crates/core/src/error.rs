use thiserror::Error;

/// Errors that stop a mission before or while it runs. Each maps to an exit status of docs/protocol.md.
#[derive(Debug, Error)]
pub enum EngineError {
    /// Bad flags, config, environment or repository state: nothing was started (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The request does not fit the mission's state now: no plan waits, the mission or unit has
    /// finished, no worker runs. Nothing changed (exit 2, as usage; HTTP 409 rather than 422).
    #[error("{0}")]
    Conflict(String),
    /// Another live mission holds this repository (exit 4).
    #[error("{0}")]
    Locked(String),
    /// Stopped by Ctrl-C or cancel (exit 3).
    #[error("the mission was interrupted")]
    Interrupted,
    /// A model call that could not reach its endpoint after the retries: the mission stops unsealed
    /// and resumable, nothing is failed for it.
    #[error("the model endpoint kept failing: {0}")]
    EndpointFailed(String),
    #[error("git: {0}")]
    Git(#[from] orchestrator_git::GitError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

impl EngineError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            context: context.into(),
            source,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Usage(_) | EngineError::Conflict(_) => 2,
            EngineError::Locked(_) => 4,
            EngineError::Interrupted => 3,
            _ => 1,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
