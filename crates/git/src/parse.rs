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

/// Whether `git commit`'s stdout (exit 1) says there was nothing to commit (git's C-locale wording).
pub(crate) fn nothing_to_commit(stdout: &str) -> bool {
    stdout.contains("nothing to commit")
        || stdout.contains("nothing added to commit")
        || stdout.contains("no changes added to commit")
}

/// A full object name: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub(crate) fn is_object_name(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The commit named by `git commit`'s summary line with `core.abbrev=no`:
/// `[<branch> (root-commit)? <full hash>] <subject>` (`detached HEAD` in place of a branch). `None` when
/// the line is not of that shape.
pub(crate) fn committed(stdout: &str) -> Option<String> {
    let line = stdout.lines().find(|l| l.starts_with('['))?;
    // Branch names hold no spaces, so the hash is the first word ending in `]`; the subject may
    // contain anything, so it is never looked at.
    let word = line.split(' ').find(|w| w.ends_with(']'))?;
    let hash = word.strip_suffix(']')?;
    is_object_name(hash).then(|| hash.to_string())
}

/// Whether `git status --porcelain=v2 --branch -z` shows HEAD at `commit` with nothing changed or
/// untracked (ignored files are not listed). Headers are `# ...` records; every other record is a change.
pub(crate) fn status_is_clean_at(out: &str, commit: &str) -> bool {
    let mut head_ok = false;
    for record in out.split('\0').filter(|r| !r.is_empty()) {
        match record.strip_prefix("# ") {
            Some(header) => {
                if let Some(oid) = header.strip_prefix("branch.oid ") {
                    head_ok = oid == commit;
                }
            }
            None => return false,
        }
    }
    head_ok
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
    fn commit_summary_gives_the_full_hash() {
        let hash = "39929b33f66efb733d30ac66e5c70923be9bafc8";
        let root = format!("[master (root-commit) {hash}] x y]\n 1 file changed, 1 insertion(+)\n");
        assert_eq!(committed(&root).as_deref(), Some(hash));
        let branch = format!("[orchestrator/m1/u/t-1 {hash}] t-1: add [x] y]\n");
        assert_eq!(committed(&branch).as_deref(), Some(hash));
        let detached = format!("[detached HEAD {hash}] msg\n");
        assert_eq!(committed(&detached).as_deref(), Some(hash));
        assert_eq!(committed("[main 39929b3] short\n"), None);
        assert_eq!(committed("something else\n"), None);
    }

    #[test]
    fn nothing_to_commit_is_recognised() {
        assert!(nothing_to_commit(
            "On branch a\nnothing to commit, working tree clean\n"
        ));
        assert!(!nothing_to_commit(""));
    }

    #[test]
    fn clean_status_needs_the_same_head_and_no_records() {
        let head = "1111111111111111111111111111111111111111";
        let clean = format!("# branch.oid {head}\0# branch.head a\0");
        assert!(status_is_clean_at(&clean, head));
        assert!(!status_is_clean_at(
            &clean,
            "2222222222222222222222222222222222222222"
        ));
        let untracked = format!("# branch.oid {head}\0# branch.head a\0? new.txt\0");
        assert!(!status_is_clean_at(&untracked, head));
        let modified = [
            format!("# branch.oid {head}"),
            "# branch.head a".to_string(),
            "1 .M N... 100644 100644 100644 a b f.txt".to_string(),
        ]
        .join("\0");
        assert!(!status_is_clean_at(&modified, head));
        assert!(!status_is_clean_at("# branch.oid (initial)\0", head));
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
