//! Built-in agent tools (`read`, `list`, `glob`, `grep`, `bash`, `write`, `edit`), executed for model
//! sessions and confined to one worktree.

// The tools and the `Toolbox` that uses these building blocks land in the following commits.
#![allow(dead_code)]

mod args;
mod error;
mod paths;
mod text;
