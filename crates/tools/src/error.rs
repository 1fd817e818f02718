//! Why a tool call failed. Every variant becomes an error *result* for the model, never a panic or an
//! engine error: the session goes on and the model can correct itself, so messages say what to change.

use std::io;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ToolError {
    #[error("arguments must be a JSON object, got {0}")]
    NotAnObject(&'static str),
    #[error("missing required argument `{name}` ({expected})")]
    MissingArgument {
        name: &'static str,
        expected: &'static str,
    },
    #[error("argument `{name}` must be {expected}, got {got}")]
    WrongType {
        name: &'static str,
        expected: &'static str,
        got: String,
    },
    #[error("unknown argument `{name}`; `{tool}` accepts: {accepted}")]
    UnknownArgument {
        name: String,
        tool: &'static str,
        accepted: String,
    },
    #[error("path `{0}` resolves outside the worktree; only paths inside it are allowed")]
    OutsideRoot(String),
    #[error("path `{0}` is inside .git, which tools may not modify")]
    InsideGitDir(String),
    #[error("path `{0}` goes through a symlink that cannot be resolved")]
    BrokenSymlink(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// A well-formed call that cannot be carried out; the message says why and what to do instead.
    #[error("{0}")]
    Refused(String),
    #[error("the call was cancelled")]
    Cancelled,
}

impl ToolError {
    pub(crate) fn io(path: impl Into<String>, source: io::Error) -> Self {
        ToolError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn refused(message: impl Into<String>) -> Self {
        ToolError::Refused(message.into())
    }
}
