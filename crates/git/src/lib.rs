//! The git operations a mission needs: worktrees, branches, merges and the final fast-forward.
//!
//! Most operations run the user's own `git` command line through `tokio::process`, not libgit2: merges
//! with conflicts, checkouts, staging (`add -A`) and the final fast-forward then behave exactly as they
//! do for the user, and there is no C library to build. The steps that every unit repeats are done
//! in-process with gitoxide instead (see `inproc.rs`), because fifty units do them within a second and
//! each git process costs a few ms of CPU: adding a unit's worktree on a new branch and removing it,
//! committing the index `git add -A` staged, HEAD's tree, the status check after verification, the
//! reviewer's diff (`patch.rs`) and the merge queue's clean merge ([`Repo::merge_into_branch`]). Each
//! goes back to git whenever gitoxide might not do exactly what git does (filter drivers, submodules,
//! sparse checkout, attributes, conflicts, an operation in progress, any error).
//!
//! Every call is `git -C <dir>` with prompts and editors disabled (`GIT_TERMINAL_PROMPT=0`,
//! `GIT_EDITOR=true`, `GIT_MERGE_AUTOEDIT=no`), `LC_ALL=C` so git's messages can be recognised, and stdin
//! closed. Commands that commit or merge also get `-c commit.gpgsign=false -c core.hooksPath=/dev/null`
//! (the runtime verifies work itself; user hooks must not block or prompt), and the fallback identity
//! `orchestrator <orchestrator@localhost>` when the repository has no `user.email`.
//!
//! Up to 50 sessions use one [`Repo`] at once. Operations on metadata every worktree shares (worktree
//! registration, branch creation and deletion, shared refs) go through a lock inside `Repo`, and are
//! retried a few times if git still finds a `.lock` file taken (by the user's own git, say). Adding a
//! worktree at a free path and removing a live one touch only their own names and share the lock, so
//! they run in parallel; listing, pruning and other ref changes take it alone. Work inside one worktree
//! (commits, merges) needs no lock: each worktree has its own index and HEAD.
//!
//! git processes are the orchestrator's main cost (each is a few ms of CPU), so the common paths use as
//! few as they can: a commit reports its own name, the identity is looked up once, and finished
//! branches go in one `git branch -D`.
//!
//! Needs git 2.31 or later (`rev-parse --path-format`).

mod cmd;
mod error;
mod inproc;
mod link;
mod parse;
mod patch;
mod remote;
mod repo;
mod stale;
mod stats;
#[cfg(test)]
mod test_repo;
mod worktree;

pub use error::GitError;
pub use inproc::BranchMerge;
pub use remote::Push;
pub use repo::{FastForward, Repo};
pub use stale::Repaired;
pub use stats::FileStat;
pub use worktree::{MergeOutcome, Worktree};

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn shareable<T: Clone + Send + Sync + 'static>() {}
    fn error_like<T: std::error::Error + Send + Sync + 'static>() {}
    fn send<F: std::future::Future + Send>(_: F) {}

    /// The engine clones these handles into spawned tasks; every future must be `Send` for that.
    #[test]
    fn handles_and_futures_can_cross_tasks() {
        shareable::<Repo>();
        shareable::<Worktree>();
        error_like::<GitError>();
        // Only constructed, never polled: this is a compile-time check.
        #[allow(clippy::diverging_sub_expression, unreachable_code, unused_variables)]
        if false {
            let repo: Repo = unreachable!();
            let wt: Worktree = unreachable!();
            let p = Path::new("x");
            send(Repo::discover(p));
            send(repo.head_commit());
            send(repo.dirty_paths(&[]));
            send(repo.ensure_excluded("x"));
            send(repo.create_branch("a", "b"));
            send(repo.add_worktree(p, "b"));
            send(repo.add_worktree_on_branch(p, "b", "c"));
            send(repo.open_listed_worktree(p, &[]));
            send(repo.delete_branches(&["b"]));
            send(repo.branches_with_prefix("b/"));
            send(repo.remove_worktree(p));
            send(repo.list_worktrees());
            send(repo.fast_forward_checked_out("c"));
            send(repo.fast_forward_branch("b", "c"));
            send(wt.commit_all("m"));
            send(wt.merge("r", "m"));
            send(wt.conclude_merge());
            send(wt.abort_merge());
            send(wt.reset_hard("c"));
            send(wt.reset_hard_if_changed("c"));
            send(wt.head_and_tree());
            send(repo.merge_into_branch("b", "o", "t", "m"));
        }
    }
}
