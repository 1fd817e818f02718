//! Built-in agent tools (`read`, `list`, `glob`, `grep`, `bash`, `write`, `edit`), executed for model
//! sessions and confined to one worktree.

// The `Toolbox` that dispatches to these tools lands in a following commit.
#![allow(dead_code)]

mod args;
mod edit;
mod error;
mod glob;
mod grep;
mod list;
mod paths;
mod read;
mod text;
mod walk;

