//! What a killed run leaves in git. git (and gitoxide) take a ref or an index by creating
//! `<name>.lock` and renaming it into place; a process killed in between leaves the `.lock`, and every
//! later write of that ref or index fails with "File exists" until someone deletes it. A worktree whose
//! `git worktree add` was killed has an admin area cut short (no HEAD yet, an empty `commondir`), which
//! makes every later `git worktree list` die ("failed to read .../commondir") and `git worktree remove`
//! refuse it. git repairs neither, because it cannot know whether the writer is still alive. The
//! caller can: a mission's refs and worktrees are written only by the process holding its lock.

use std::path::{Path, PathBuf};

use crate::error::GitError;
use crate::repo::Repo;

/// What [`Repo::repair_after_kill`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// Stale `.lock` files.
    pub locks: Vec<PathBuf>,
    /// Worktrees (folder and registration) whose creation never finished.
    pub worktrees: Vec<PathBuf>,
}

impl Repaired {
    pub fn is_empty(&self) -> bool {
        self.locks.is_empty() && self.worktrees.is_empty()
    }
}

impl Repo {
    /// Deletes the `.lock` files under `refs/heads/<ref_prefix>` and in the admin areas of the linked
    /// worktrees that live under `worktrees_dir`, and those worktrees whose creation was cut short
    /// (folder and registration; their branch stays). Only for a caller that knows no other process
    /// writes those refs and worktrees (a resumed mission holding its lock): anything else of the
    /// repository's, the user's refs and `packed-refs` included, is left alone.
    pub async fn repair_after_kill(
        &self,
        ref_prefix: &str,
        worktrees_dir: &Path,
    ) -> Result<Repaired, GitError> {
        let common = self.git_common_dir().to_path_buf();
        let refs = common.join("refs/heads").join(ref_prefix.trim_matches('/'));
        let worktrees_dir = match tokio::fs::canonicalize(worktrees_dir).await {
            Ok(dir) => dir,
            Err(_) => worktrees_dir.to_path_buf(),
        };
        let task = move || {
            let mut repaired = Repaired::default();
            remove_locks_below(&refs, &mut repaired.locks)?;
            for (admin, folder) in admin_dirs_under(&common, &worktrees_dir)? {
                if admin_cut_short(&admin) {
                    remove_dir_if_present(&folder)?;
                    std::fs::remove_dir_all(&admin)?;
                    repaired.worktrees.push(folder);
                } else {
                    remove_locks_in(&admin, &mut repaired.locks)?;
                }
            }
            Ok::<_, std::io::Error>(repaired)
        };
        let repaired = tokio::task::spawn_blocking(task)
            .await
            .map_err(|e| GitError::InvalidArgument(format!("the repair task failed: {e}")))??;
        for path in &repaired.locks {
            tracing::info!(lock = %path.display(), "removed a lock file a killed run left");
        }
        for path in &repaired.worktrees {
            tracing::info!(worktree = %path.display(), "removed a worktree a killed run left half-made");
        }
        Ok(repaired)
    }
}

/// Whether the worktree registered at `admin` was never finished: `git worktree add` writes `locked`
/// ("initializing"), `gitdir`, `commondir` and `HEAD` in that order and unlocks after the checkout, so
/// a missing HEAD, an empty `commondir` or the lock still there each mean it was cut short.
pub(crate) fn admin_cut_short(admin: &Path) -> bool {
    let initializing =
        std::fs::read_to_string(admin.join("locked")).is_ok_and(|reason| reason.trim() == "initializing");
    let empty_commondir = std::fs::metadata(admin.join("commondir")).is_ok_and(|m| m.len() == 0);
    initializing || empty_commondir || !admin.join("HEAD").exists()
}

fn remove_dir_if_present(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn is_lock(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "lock")
}

/// Every `*.lock` file in `dir` and its subfolders (ref names nest as folders). A missing `dir` has none.
fn remove_locks_below(dir: &Path, removed: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            remove_locks_below(&path, removed)?;
        } else if kind.is_file() && is_lock(&path) {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(())
}

/// The `*.lock` files directly in a worktree's admin area (`index.lock`, `HEAD.lock`, …). Its `locked`
/// file is no lock file: it marks a worktree as locked, which is git's business.
fn remove_locks_in(admin: &Path, removed: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(admin)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_file() && is_lock(&path) {
            std::fs::remove_file(&path)?;
            removed.push(path);
        }
    }
    Ok(())
}

/// The admin areas (`<common>/worktrees/<name>`) whose `gitdir` names a `.git` under `dir`, each with
/// the worktree folder it names.
fn admin_dirs_under(common: &Path, dir: &Path) -> std::io::Result<Vec<(PathBuf, PathBuf)>> {
    let found = crate::link::registrations(common)?;
    Ok(found
        .into_iter()
        .filter_map(|registration| {
            let folder = registration.dot_git.parent()?;
            // The worktree's folder may be gone (a stale registration); compare the path as written then.
            let folder = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_path_buf());
            (folder.starts_with(dir) && folder != dir).then_some((registration.admin, folder))
        })
        .collect())
}
