//! Directory walking shared by `glob` and `grep`, built on ripgrep's `ignore` crate so results skip what
//! the project's .gitignore files exclude (build output, dependencies) exactly as git and ripgrep do.

use std::path::Path;

use ignore::{DirEntry, WalkBuilder};

/// A walk over `start`, a directory inside `root`, in sorted order.
///
/// Ignore files above `root` are not consulted: the root is a worktree, and a .gitignore further up
/// belongs to some other project (the worktree may even live inside the user's checkout). Because the
/// walk may start below the root, the .gitignore files between the two are added by hand.
pub(crate) fn walk(root: &Path, start: &Path) -> ignore::Walk {
    let mut builder = WalkBuilder::new(start);
    builder
        .hidden(false)
        .parents(false)
        .require_git(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(|entry| entry.file_name() != ".git");
    for dir in start.ancestors().skip(1) {
        if !dir.starts_with(root) {
            break;
        }
        let gitignore = dir.join(".gitignore");
        if gitignore.is_file() {
            // Errors in a .gitignore only weaken filtering; the walk is still correct without it.
            let _ = builder.add_ignore(gitignore);
        }
    }
    builder.build()
}

/// Whether an entry is a file whose contents may be shown: a regular file, or a symlink whose target
/// is a file inside the root (a symlink out must not leak what it points at).
pub(crate) fn is_readable_file(entry: &DirEntry, root: &Path) -> bool {
    if !entry.path_is_symlink() {
        return entry.file_type().is_some_and(|t| t.is_file());
    }
    std::fs::canonicalize(entry.path()).is_ok_and(|real| real.starts_with(root) && real.is_file())
}
