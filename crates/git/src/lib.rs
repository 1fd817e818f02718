//! The git operations a mission needs: worktrees, branches, merges and the final fast-forward.
//!
//! Everything runs the user's own `git` command line through `tokio::process`, not libgit2 or gitoxide:
//! worktrees, merges and conflicts then behave exactly as they do for the user (gitoxide does not fully
//! implement merging or worktree management), and there is no C library to build.

// The runner and parsers land before the Repo/Worktree API that uses them.
#![allow(dead_code)]

mod cmd;
mod error;
mod parse;

pub use error::GitError;
