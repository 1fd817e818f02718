//! The one error type of this crate.

use std::path::PathBuf;

/// What can go wrong when the orchestrator drives git.
///
/// `Command` is the common case: git ran and refused. It carries the command line (without the fixed
/// `-c` safety options every call adds) and git's own message, so the engine can show the user exactly
/// what git said instead of a paraphrase.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// git exited unsuccessfully. `code` is `None` when git was killed by a signal. `stderr` is trimmed;
    /// when git wrote nothing there (some commands report on stdout) it holds trimmed stdout instead.
    #[error("`{args}` failed ({}): {stderr}", exit_label(*.code))]
    Command {
        args: String,
        code: Option<i32>,
        stderr: String,
    },
    /// The path is not inside a git working tree (or does not exist, or is a bare repository).
    #[error("not a git repository (or any parent up to the filesystem root): {}", .0.display())]
    NotARepo(PathBuf),
    /// The operation needs a commit but the repository has none yet.
    #[error("the repository has no commits yet")]
    NoCommits,
    /// A branch the operation needs does not exist.
    #[error("no branch named '{0}'")]
    NoSuchBranch(String),
    /// `conclude_merge` found conflict markers left in these files; nothing was staged or committed.
    #[error("conflict markers remain in: {}", .0.join(", "))]
    ConflictMarkers(Vec<String>),
    /// `conclude_merge` was called but the worktree has no merge in progress.
    #[error("no merge is in progress")]
    NoMergeInProgress,
    /// An argument git would misread (an option-like name, a multi-line pattern, a path without a name).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// git could not be started, or a file next to it could not be read or written.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn exit_label(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("exit {code}"),
        None => "killed by a signal".to_string(),
    }
}
