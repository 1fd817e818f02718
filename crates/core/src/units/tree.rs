//! A unit's worktree, made in the background while the unit's first model call runs.

use std::path::PathBuf;

use futures::future::{BoxFuture, FutureExt, Shared};
use orchestrator_git::{Repo, Worktree};

/// A unit's worktree: ready, or still being made by a background task. A new unit's first model call
/// needs no files, so it runs while `git worktree add` does; the session's first tool call waits.
#[derive(Clone)]
pub(super) struct UnitTree {
    pub(super) path: PathBuf,
    pending: Shared<BoxFuture<'static, Result<Worktree, String>>>,
}

impl UnitTree {
    pub(super) fn ready(worktree: Worktree) -> Self {
        UnitTree {
            path: worktree.path().to_path_buf(),
            pending: futures::future::ready(Ok(worktree)).boxed().shared(),
        }
    }

    /// Starts `git worktree add -b` for a new unit in the background. The directory is made first
    /// (git fills an empty one) so the session's tools can be rooted there at once.
    pub(super) async fn start(
        repo: Repo,
        path: PathBuf,
        branch: String,
        base: String,
    ) -> Result<Self, String> {
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let making = path.clone();
        let task = tokio::spawn(async move {
            repo.add_worktree_on_branch(&making, &branch, &base)
                .await
                .map_err(|e| e.to_string())
        });
        let pending = async move {
            task.await
                .unwrap_or_else(|e| Err(format!("the worktree task failed: {e}")))
        };
        Ok(UnitTree {
            path,
            pending: pending.boxed().shared(),
        })
    }

    pub(super) async fn get(&self) -> Result<Worktree, String> {
        self.pending.clone().await
    }

    pub(super) fn is_ready(&self) -> bool {
        self.pending.peek().is_some()
    }

    /// What the session awaits before its first tool call.
    pub(super) fn gate(&self) -> crate::session::ToolsReady {
        let pending = self.pending.clone();
        async move {
            pending
                .await
                .map(drop)
                .map_err(|e| format!("could not create the unit's worktree: {e}"))
        }
        .boxed()
        .shared()
    }
}
