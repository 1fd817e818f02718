//! A linked worktree's `.git` file is what tells git where its repository is, and it sits among the
//! files an agent may change. Pointed at a repository of the agent's own (with an fsmonitor, hooks or
//! filter drivers in its config), the orchestrator's next git call in that worktree would run them
//! outside any sandbox, and read a HEAD of the agent's choosing. So the link is taken from the
//! worktree's registration in the shared `.git` — which agents cannot write — and put back before git
//! runs there.

use std::path::{Path, PathBuf};

/// The admin folder (`<common>/worktrees/<name>`) whose `gitdir` file names `worktree`'s `.git`, if
/// the worktree is registered there.
pub(crate) async fn registered_admin_dir(common_dir: &Path, worktree: &Path) -> Option<PathBuf> {
    let wanted = [worktree.join(".git"), canonical(worktree).await.join(".git")];
    let mut entries = tokio::fs::read_dir(common_dir.join("worktrees")).await.ok()?;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let admin = entry.path();
        let Ok(text) = tokio::fs::read_to_string(admin.join("gitdir")).await else {
            continue;
        };
        let named = PathBuf::from(text.trim_end_matches(['\n', '\r']));
        let named = if named.is_relative() {
            admin.join(named)
        } else {
            named
        };
        let named_canonical = match named.parent() {
            Some(parent) => canonical(parent).await.join(".git"),
            None => named.clone(),
        };
        if wanted.contains(&named) || wanted.contains(&named_canonical) {
            return Some(admin);
        }
    }
    None
}

/// Makes `worktree/.git` the plain file `gitdir: <admin>` again. `Ok(true)` when something else was
/// there (another target, a folder, a symlink) and was replaced.
pub(crate) async fn restore_link(worktree: &Path, admin: &Path) -> std::io::Result<bool> {
    let dotgit = worktree.join(".git");
    let meta = tokio::fs::symlink_metadata(&dotgit).await;
    if let Ok(meta) = &meta {
        if meta.is_file() {
            let text = tokio::fs::read_to_string(&dotgit).await.unwrap_or_default();
            if points_to(worktree, &text, admin).await {
                return Ok(false);
            }
        }
    }
    match meta {
        Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(&dotgit).await?,
        Ok(_) => tokio::fs::remove_file(&dotgit).await?,
        Err(_) => {}
    }
    tokio::fs::write(&dotgit, format!("gitdir: {}\n", admin.display())).await?;
    Ok(true)
}

/// Whether a `.git` file's text names `admin` (absolute, or relative to the worktree as
/// `worktree.useRelativePaths` writes it).
async fn points_to(worktree: &Path, text: &str, admin: &Path) -> bool {
    let mut lines = text.lines();
    let (Some(first), None) = (lines.next(), lines.next()) else {
        return false;
    };
    let Some(target) = first.strip_prefix("gitdir: ") else {
        return false;
    };
    let target = worktree.join(target);
    target == admin || canonical(&target).await == canonical(admin).await
}

async fn canonical(path: &Path) -> PathBuf {
    tokio::fs::canonicalize(path)
        .await
        .unwrap_or_else(|_| path.to_path_buf())
}
