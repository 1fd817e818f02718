//! One module per test file, all in the one test binary of `../all.rs`.

mod common;
mod concurrency;
mod fast_forward;
mod fast_paths;
mod hardening;
mod inproc_merge;
mod inproc_worktree;
mod repo;
mod stats;
mod worktree;
mod worktrees_resume;
