//! Built-in agent tools (`read`, `list`, `glob`, `grep`, `bash`, `write`, `edit`), executed for model
//! sessions and confined to one worktree.

// The `Toolbox` that dispatches to these tools lands in a following commit.
#![allow(dead_code)]

mod args;
mod bash;
mod edit;
mod error;
mod glob;
mod grep;
mod list;
mod paths;
mod read;
mod text;
mod walk;

/// The result of one tool call, as sent back to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    pub content: String,
    /// Set when the call could not do what was asked (bad arguments, refused path, timeout, cancel).
    /// A command that ran and exited non-zero is not an error: its exit code is in `content`.
    pub is_error: bool,
}

impl ToolOutput {
    pub(crate) fn ok(content: String) -> Self {
        ToolOutput {
            content,
            is_error: false,
        }
    }

    pub(crate) fn error(content: String) -> Self {
        ToolOutput {
            content,
            is_error: true,
        }
    }
}
