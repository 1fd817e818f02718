//! A linked worktree's `.git` file is what tells git where its repository is, and it sits among the
//! files an agent may change. Pointed at a repository of the agent's own (with an fsmonitor, hooks or
//! filter drivers in its config), the orchestrator's next git call in that worktree would run them
//! outside any sandbox, and read a HEAD of the agent's choosing. So the link is taken from the
//! worktree's registration in the shared `.git` — which agents cannot write — and put back before git
//! runs there.

use std::path::{Path, PathBuf};

/// One linked worktree's registration in the shared `.git`: its admin folder
/// (`<common>/worktrees/<name>`) and the `.git` its `gitdir` file names, resolved against the admin
/// folder when relative. The one reading of those files that every caller shares.
pub(crate) struct Registration {
    pub admin: PathBuf,
    pub dot_git: PathBuf,
}

/// Every registration with a readable, non-empty `gitdir` (one small file each); none when the
/// repository has no linked worktrees.
pub(crate) fn registrations(common_dir: &Path) -> std::io::Result<Vec<Registration>> {
    let entries = match std::fs::read_dir(common_dir.join("worktrees")) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let admin = entry.path();
        let Ok(text) = std::fs::read_to_string(admin.join("gitdir")) else {
            continue;
        };
        let named = text.trim_end_matches(['\n', '\r']);
        if named.trim().is_empty() {
            continue;
        }
        // `join` keeps an absolute path as it is.
        let dot_git = admin.join(named);
        found.push(Registration { admin, dot_git });
    }
    Ok(found)
}

/// The admin folder whose `gitdir` file names `worktree`'s `.git`, if the worktree is registered.
pub(crate) async fn registered_admin_dir(common_dir: &Path, worktree: &Path) -> Option<PathBuf> {
    let wanted = [worktree.join(".git"), canonical(worktree).await.join(".git")];
    let common_dir = common_dir.to_path_buf();
    let found = tokio::task::spawn_blocking(move || registrations(&common_dir))
        .await
        .ok()?
        .ok()?;
    for registration in found {
        let named_canonical = match registration.dot_git.parent() {
            Some(parent) => canonical(parent).await.join(".git"),
            None => registration.dot_git.clone(),
        };
        if wanted.contains(&registration.dot_git) || wanted.contains(&named_canonical) {
            return Some(registration.admin);
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
