//! Parsers for git's machine-readable output.

use std::path::PathBuf;

/// One record of `git worktree list --porcelain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorktreeEntry {
    pub path: PathBuf,
    /// Full ref name (`refs/heads/x`) when a branch is checked out there.
    pub branch: Option<String>,
    pub bare: bool,
}

/// Parses `git worktree list --porcelain` (records separated by blank lines). The first record is the
/// main worktree. The non-`-z` form is used because `-z` needs git 2.36; a path containing a newline
/// would be misread, which we accept.
pub(crate) fn worktree_list(out: &str) -> Vec<WorktreeEntry> {
    let mut entries = Vec::new();
    for line in out.lines() {
        if let Some(path) = line.strip_prefix("worktree ") {
            entries.push(WorktreeEntry {
                path: PathBuf::from(path),
                branch: None,
                bare: false,
            });
        } else if let Some(entry) = entries.last_mut() {
            if let Some(branch) = line.strip_prefix("branch ") {
                entry.branch = Some(branch.to_string());
            } else if line == "bare" {
                entry.bare = true;
            }
        }
    }
    entries
}

/// Paths named by `git status --porcelain=v1 -z`: both sides of a rename or copy, since both changed.
pub(crate) fn status_paths(out: &str) -> Vec<String> {
    let mut fields = out.split('\0').filter(|f| !f.is_empty());
    let mut paths = Vec::new();
    while let Some(entry) = fields.next() {
        // "XY path": two status letters, a space, the path (relative to the worktree root).
        let (Some(xy), Some(path)) = (entry.get(..2), entry.get(3..)) else {
            continue;
        };
        paths.push(path.to_string());
        if xy.contains(['R', 'C']) {
            if let Some(original) = fields.next() {
                paths.push(original.to_string());
            }
        }
    }
    paths
}

/// Distinct paths of `git ls-files --unmerged -z` ("mode object stage\tpath"), in git's order.
pub(crate) fn unmerged_paths(out: &str) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    for record in out.split('\0') {
        if let Some((_, path)) = record.split_once('\t') {
            if paths.last().map(String::as_str) != Some(path) {
                paths.push(path.to_string());
            }
        }
    }
    paths
}

/// NUL-separated path lists (`--name-only -z`).
pub(crate) fn nul_list(out: &str) -> Vec<String> {
    out.split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Whether `content` still has a conflict marker line git writes ("<<<<<<< ours" / ">>>>>>> theirs").
/// The middle "=======" is not checked: it is common in ordinary text (Markdown/RST underlines).
pub(crate) fn has_conflict_markers(content: &[u8]) -> bool {
    content
        .split(|b| *b == b'\n')
        .any(|line| line.starts_with(b"<<<<<<< ") || line.starts_with(b">>>>>>> "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worktree_list_reads_branches_and_detached() {
        let out = "worktree /r\nHEAD 1111\nbranch refs/heads/main\n\n\
                   worktree /r/.orchestrator/w 1\nHEAD 2222\ndetached\nprunable gitdir file points to non-existent location\n\n";
        let list = worktree_list(out);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].branch.as_deref(), Some("refs/heads/main"));
        assert_eq!(list[1].path, PathBuf::from("/r/.orchestrator/w 1"));
        assert_eq!(list[1].branch, None);
        assert!(!list[1].bare);
    }

    #[test]
    fn status_paths_include_both_sides_of_renames() {
        let out = " M a.txt\0R  new name.txt\0old.txt\0?? dir/u.txt\0";
        assert_eq!(
            status_paths(out),
            ["a.txt", "new name.txt", "old.txt", "dir/u.txt"]
        );
    }

    #[test]
    fn unmerged_paths_are_distinct() {
        let out = [
            "100644 aaa 1\tf.txt",
            "100644 bbb 2\tf.txt",
            "100644 ccc 3\tf.txt",
            "100644 ddd 2\tg.txt",
            "",
        ]
        .join("\0");
        assert_eq!(unmerged_paths(&out), ["f.txt", "g.txt"]);
    }

    #[test]
    fn markers_only_at_line_start() {
        assert!(has_conflict_markers(
            b"a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> x\n"
        ));
        assert!(has_conflict_markers(b"ok\r\n>>>>>>> theirs\r\n"));
        assert!(!has_conflict_markers(b"Title\n=======\n  <<<<<<< not at start\n"));
    }
}
