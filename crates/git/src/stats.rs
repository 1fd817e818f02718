//! Read-only diff statistics: which files a range of commits changed, and by how many lines.

use crate::cmd::{Mode, Runner};
use crate::{GitError, Repo};

/// One file changed between two commits, as `git diff --numstat` counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    pub path: String,
    /// Lines added; `None` for a binary file.
    pub added: Option<u64>,
    /// Lines removed; `None` for a binary file.
    pub removed: Option<u64>,
}

impl Repo {
    /// The files changed from `from` to `to`. Renames count as a removal plus an addition
    /// (`--no-renames`), so every path is named once and the user's `diff.renames` cannot change counts.
    pub async fn diff_stat(&self, from: &str, to: &str) -> Result<Vec<FileStat>, GitError> {
        let args = [
            "diff",
            "--numstat",
            "-z",
            "--no-renames",
            "--no-ext-diff",
            "--end-of-options",
            from,
            to,
            "--",
        ];
        // Its own runner: a diff needs none of the state a `Repo` shares between worktrees.
        let out = Runner::new(Vec::new())
            .check(self.root(), args, Mode::READ)
            .await?;
        Ok(numstat(&out.stdout))
    }

    /// What the commit changed relative to its first parent: for a `--no-ff` merge, what the merged
    /// branch brought in.
    pub async fn first_parent_diff_stat(&self, commit: &str) -> Result<Vec<FileStat>, GitError> {
        self.diff_stat(&format!("{commit}^1"), commit).await
    }
}

/// Parses `git diff --numstat -z --no-renames`: records of "added\tremoved\tpath", NUL-terminated,
/// with "-" for both counts of a binary file.
fn numstat(out: &str) -> Vec<FileStat> {
    out.split('\0')
        .filter_map(|record| {
            let mut fields = record.splitn(3, '\t');
            let (added, removed, path) = (fields.next()?, fields.next()?, fields.next()?);
            Some(FileStat {
                path: path.to_string(),
                added: added.parse().ok(),
                removed: removed.parse().ok(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numstat_reads_text_binary_and_odd_paths() {
        let out = "3\t1\tsrc/a.rs\0-\t-\tlogo.png\x000\t2\tdir/with\ttab and space.txt\0";
        assert_eq!(
            numstat(out),
            vec![
                FileStat {
                    path: "src/a.rs".into(),
                    added: Some(3),
                    removed: Some(1)
                },
                FileStat {
                    path: "logo.png".into(),
                    added: None,
                    removed: None
                },
                FileStat {
                    path: "dir/with\ttab and space.txt".into(),
                    added: Some(0),
                    removed: Some(2)
                },
            ]
        );
    }

    #[test]
    fn numstat_of_nothing_is_empty() {
        assert!(numstat("").is_empty());
    }
}
