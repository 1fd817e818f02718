//! One worktree of the repository: where a session works, or where the merge queue merges.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cmd::{Mode, Output, Runner};
use crate::inproc::IndexCommit;
use crate::link;
use crate::parse;
use crate::repo::Shared;
use crate::GitError;

/// New files that tools leave behind as they run, never a unit's work: a worker's own `python3
/// test_calc.py` wrote `__pycache__/calc.cpython-311.pyc` into a repository without a
/// `.gitignore`, and it was committed, reviewed and nearly merged. Left out of what
/// [`Worktree::commit_all`] stages when untracked (the repository's own ignore rules apply as
/// well); a tracked file is staged whatever its name. Only names no project uses for its sources.
const TOOL_CACHES: [&str; 7] = [
    ":(exclude,glob)**/__pycache__/**",
    ":(exclude,glob)**/*.py[co]",
    ":(exclude,glob)**/.pytest_cache/**",
    ":(exclude,glob)**/.mypy_cache/**",
    ":(exclude,glob)**/.ruff_cache/**",
    ":(exclude,glob)**/node_modules/**",
    ":(exclude,glob)**/.DS_Store",
];

/// A worktree made by [`crate::Repo::add_worktree`] or [`crate::Repo::add_detached_worktree`].
/// Cheap to clone; safe to share between tasks (git itself serialises work on one worktree's index).
#[derive(Debug, Clone)]
pub struct Worktree {
    shared: Arc<Shared>,
    path: Arc<Path>,
    /// Its registration in the shared `.git` (see `link.rs`), looked up once; `None` inside when the
    /// worktree is not registered there (the main checkout).
    admin: Arc<tokio::sync::OnceCell<Option<PathBuf>>>,
}

/// How a merge ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The merge commit (or HEAD unchanged, when `rev` was already merged).
    Merged(String),
    /// The merge stopped on these paths (relative to the worktree); it is still in progress.
    Conflict(Vec<String>),
}

impl Worktree {
    pub(crate) fn new(shared: Arc<Shared>, path: PathBuf) -> Worktree {
        Worktree {
            shared,
            path: path.into(),
            admin: Arc::default(),
        }
    }

    /// The admin folder the shared `.git` registers for this worktree.
    async fn registered_admin(&self) -> Option<&Path> {
        self.admin
            .get_or_init(|| link::registered_admin_dir(&self.shared.common_dir, &self.path))
            .await
            .as_deref()
    }

    /// Puts the worktree's `.git` link back to its registration before git runs here (see `link.rs`).
    async fn guard_link(&self) {
        let Some(admin) = self.registered_admin().await else {
            return;
        };
        match link::restore_link(&self.path, admin).await {
            Ok(false) => {}
            Ok(true) => tracing::warn!(
                worktree = %self.path.display(),
                "the worktree's .git link had been changed; it was put back before running git"
            ),
            Err(e) => {
                tracing::warn!(worktree = %self.path.display(), "cannot check the worktree's .git link: {e}")
            }
        }
    }

    /// The worktree's top directory, absolute.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn git(&self) -> &Runner {
        &self.shared.git
    }

    async fn run(&self, args: &[&str], mode: Mode) -> Result<Output, GitError> {
        self.guard_link().await;
        self.git().run(&self.path, args, mode).await
    }

    async fn check(&self, args: &[&str], mode: Mode) -> Result<Output, GitError> {
        self.guard_link().await;
        self.git().check(&self.path, args, mode).await
    }

    /// The commit checked out here.
    pub async fn head(&self) -> Result<String, GitError> {
        if let Some(commit) = self.head_from_files().await {
            return Ok(commit);
        }
        let out = self
            .run(&["rev-parse", "-q", "--verify", "HEAD^{commit}"], Mode::READ)
            .await?;
        match out.code {
            Some(0) => Ok(out.line()),
            Some(1) if out.stderr.trim().is_empty() => Err(GitError::NoCommits),
            _ => Err(out.into_error()),
        }
    }

    /// HEAD read from the files git keeps it in (this worktree's `HEAD`, then the loose branch ref it
    /// names), without starting git: the merge queue asks after every merge. `None` when the files are
    /// not conclusive (a packed or reftable ref, an unborn branch, anything unexpected); git decides.
    async fn head_from_files(&self) -> Option<String> {
        let admin = self.admin_dir().await?;
        let head = tokio::fs::read_to_string(admin.join("HEAD")).await.ok()?;
        let head = head.trim_end();
        let value = match head.strip_prefix("ref: ") {
            Some(name) => {
                let safe = name.starts_with("refs/heads/")
                    && name
                        .split('/')
                        .all(|part| !part.is_empty() && part != "." && part != "..");
                if !safe {
                    return None;
                }
                // A loose ref always wins over a packed one, so when it exists it is the answer.
                tokio::fs::read_to_string(self.shared.common_dir.join(name))
                    .await
                    .ok()?
            }
            None => head.to_string(),
        };
        let value = value.trim_end();
        parse::is_object_name(value).then(|| value.to_string())
    }

    /// `git add -A` (but for new [`TOOL_CACHES`]) + commit (--no-verify). Ok(None) when there was
    /// nothing to commit.
    ///
    /// `git add -A` decides what goes in (ignore rules, filters, modes, nested repositories); the
    /// commit of that index is made in-process when it can be (see `inproc.rs`), else by `git
    /// commit`, which says itself when there is nothing to commit and prints the new commit's full
    /// name in its summary line (`core.abbrev=no`).
    pub async fn commit_all(&self, message: &str) -> Result<Option<String>, GitError> {
        self.stage_all().await?;
        let (path, text) = (self.path.to_path_buf(), message.to_string());
        match self
            .shared
            .run_in_process(move |git| git.commit_index(&path, &text))
            .await
        {
            Some(IndexCommit::Committed(commit)) => return Ok(Some(commit)),
            Some(IndexCommit::NothingToCommit) => return Ok(None),
            outcome => tracing::debug!(?outcome, "committing with git"),
        }
        let args = [
            "-c",
            "core.abbrev=no",
            "commit",
            "--no-verify",
            "--no-status",
            "-m",
            message,
        ];
        let out = self.run(&args, Mode::COMMIT).await?;
        if out.code == Some(1) && parse::nothing_to_commit(&out.stdout) {
            return Ok(None);
        }
        let out = out.checked()?;
        match parse::committed(&out.stdout) {
            Some(commit) => Ok(Some(commit)),
            // An unexpected summary: ask for HEAD rather than guess.
            None => self.head().await.map(Some),
        }
    }

    /// `git add -A`, but for new files that are [`TOOL_CACHES`]: tracked files are staged whatever
    /// they are.
    async fn stage_all(&self) -> Result<(), GitError> {
        self.check(&["add", "-u"], Mode::META).await?;
        let mut add = vec!["add", "-A", "--", "."];
        add.extend(TOOL_CACHES);
        self.check(&add, Mode::META).await?;
        Ok(())
    }

    /// The tree of HEAD: equal trees mean identical content, whatever the history.
    pub async fn tree_hash(&self) -> Result<String, GitError> {
        let out = self
            .check(&["rev-parse", "--verify", "HEAD^{tree}"], Mode::READ)
            .await?;
        Ok(out.line())
    }

    /// The commit checked out here and its tree: read in-process (HEAD from its files, the tree from
    /// the commit object), else from one git process.
    pub async fn head_and_tree(&self) -> Result<(String, String), GitError> {
        if let Some(head) = self.head_from_files().await {
            let commit = head.clone();
            if let Some(Ok(tree)) = self.shared.run_in_process(move |git| git.tree_of(&commit)).await {
                return Ok((head, tree));
            }
        }
        let out = self
            .run(&["rev-parse", "HEAD^{commit}", "HEAD^{tree}"], Mode::READ)
            .await?;
        let mut lines = out.stdout.lines();
        match (out.code, lines.next(), lines.next()) {
            (Some(0), Some(commit), Some(tree)) => Ok((commit.to_string(), tree.to_string())),
            // Let the single query tell an unborn branch (NoCommits) from other failures.
            _ => {
                self.head().await?;
                Err(out.into_error())
            }
        }
    }

    /// Whether anything is uncommitted here (staged, unstaged, or untracked-not-ignored).
    pub async fn has_changes(&self) -> Result<bool, GitError> {
        let mut args = vec![
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=normal",
            "--",
            ".",
        ];
        args.extend(TOOL_CACHES);
        let out = self.check(&args, Mode::READ).await?;
        Ok(!out.stdout.is_empty())
    }

    /// `git diff base HEAD` as a full patch with standard a/ b/ prefixes, without external diff
    /// drivers or textconv filters (`patch::GIT_DIFF_OPTIONS`). Rendered in-process when that gives
    /// git's text (see `patch.rs`), else by git.
    pub async fn diff_since(&self, base: &str) -> Result<String, GitError> {
        if let Some(head) = self.head_from_files().await {
            let base_commit = base.to_string();
            match self
                .shared
                .run_in_process(move |git| git.patch(&base_commit, &head))
                .await
            {
                Some(Ok(crate::patch::Patch::Text(patch))) => return Ok(patch),
                outcome => tracing::debug!(?outcome, "diff by git"),
            }
        }
        let mut args = vec!["diff"];
        args.extend(crate::patch::GIT_DIFF_OPTIONS);
        args.extend(["--end-of-options", base, "HEAD", "--"]);
        Ok(self.check(&args, Mode::READ).await?.stdout)
    }

    /// `git diff base` of the files as they are now, committed or not (untracked files left out), as
    /// a full patch like [`Worktree::diff_since`]: what a session has changed while it still works.
    pub async fn diff_of_files_since(&self, base: &str) -> Result<String, GitError> {
        let mut args = vec!["diff"];
        args.extend(crate::patch::GIT_DIFF_OPTIONS);
        args.extend(["--end-of-options", base, "--"]);
        Ok(self.check(&args, Mode::READ).await?.stdout)
    }

    /// The files here that git does not track and does not ignore, relative to the worktree: new
    /// files a session made that [`Worktree::diff_of_files_since`] leaves out.
    pub async fn untracked_files(&self) -> Result<Vec<String>, GitError> {
        let mut args = vec!["ls-files", "--others", "--exclude-standard", "-z", "--", "."];
        args.extend(TOOL_CACHES);
        let out = self.check(&args, Mode::READ).await?;
        Ok(out
            .stdout
            .split('\0')
            .filter(|path| !path.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// `git diff --stat base HEAD`, wide enough that long paths are not abbreviated.
    pub async fn diff_stat_since(&self, base: &str) -> Result<String, GitError> {
        let args = [
            "diff",
            "--no-color",
            "--stat=1000",
            "--stat-graph-width=40",
            "--end-of-options",
            base,
            "HEAD",
            "--",
        ];
        Ok(self.check(&args, Mode::READ).await?.stdout)
    }

    /// `git merge --no-ff -m message <rev>`. Merged(commit) or Conflict(paths with conflicts); on any other failure an error, leaving no merge in progress.
    pub async fn merge(&self, rev: &str, message: &str) -> Result<MergeOutcome, GitError> {
        // --no-autostash: local changes must make the merge fail, not be stashed and replayed.
        let args = [
            "merge",
            "--no-ff",
            "--no-edit",
            // The diffstat is for people; nobody reads it here.
            "--no-stat",
            "--no-autostash",
            "--no-verify-signatures",
            "-m",
            message,
            "--end-of-options",
            rev,
        ];
        let out = self.run(&args, Mode::COMMIT).await?;
        if out.success() {
            return Ok(MergeOutcome::Merged(self.head().await?));
        }
        let conflicts = self.conflicted_paths().await?;
        if !conflicts.is_empty() {
            return Ok(MergeOutcome::Conflict(conflicts));
        }
        if self.merge_in_progress().await? {
            if let Err(e) = self.abort_merge().await {
                tracing::warn!(path = %self.path.display(), error = %e, "could not abort failed merge");
            }
        }
        Err(out.into_error())
    }

    /// Paths with unresolved conflicts (unmerged index entries), relative to the worktree.
    pub async fn conflicted_paths(&self) -> Result<Vec<String>, GitError> {
        let out = self.check(&["ls-files", "--unmerged", "-z"], Mode::READ).await?;
        Ok(parse::unmerged_paths(&out.stdout))
    }

    /// This worktree's own git directory (`.git/worktrees/<name>`, or `.git` for the main worktree),
    /// read from its `.git`; `None` when that is not as git writes it.
    pub(crate) async fn admin_dir(&self) -> Option<PathBuf> {
        // The registration, not the worktree's own `.git` file, which an agent may have rewritten.
        if let Some(admin) = self.registered_admin().await {
            return Some(admin.to_path_buf());
        }
        let dotgit = self.path.join(".git");
        let meta = tokio::fs::symlink_metadata(&dotgit).await.ok()?;
        if meta.is_dir() {
            return Some(dotgit);
        }
        let text = tokio::fs::read_to_string(&dotgit).await.ok()?;
        let dir = text.lines().next()?.strip_prefix("gitdir: ")?;
        // Relative (worktree.useRelativePaths) is relative to the worktree.
        Some(self.path.join(dir))
    }

    /// Whether a merge was started here and not yet concluded or aborted.
    pub async fn merge_in_progress(&self) -> Result<bool, GitError> {
        // git itself decides this by MERGE_HEAD's existence; a file check saves a process per call
        // (a resumed mission asks for every unit it picks up).
        if let Some(admin) = self.admin_dir().await {
            if tokio::fs::try_exists(admin.join("HEAD")).await.unwrap_or(false) {
                return Ok(tokio::fs::try_exists(admin.join("MERGE_HEAD")).await?);
            }
        }
        let out = self
            .run(&["rev-parse", "-q", "--verify", "MERGE_HEAD"], Mode::READ)
            .await?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(out.into_error()),
        }
    }

    /// After conflicts were fixed in the files: stage everything (as [`Worktree::commit_all`]) and commit the merge (--no-edit). Error if conflict markers ("<<<<<<< ", ">>>>>>> " at line start) remain in any previously conflicted file.
    ///
    /// When markers remain nothing is staged, so the conflicts stay visible to `conflicted_paths`.
    pub async fn conclude_merge(&self) -> Result<String, GitError> {
        if !self.merge_in_progress().await? {
            return Err(GitError::NoMergeInProgress);
        }
        let mut remaining = Vec::new();
        for path in self.resolution_candidates().await? {
            if self.file_has_markers(&path).await? {
                remaining.push(path);
            }
        }
        if !remaining.is_empty() {
            return Err(GitError::ConflictMarkers(remaining));
        }
        self.stage_all().await?;
        // --cleanup=strip drops the commented "# Conflicts:" list git appends to MERGE_MSG.
        let args = ["commit", "--no-edit", "--no-verify", "--cleanup=strip", "-q"];
        self.check(&args, Mode::COMMIT).await?;
        self.head().await
    }

    /// Files that were conflicted: those still unmerged, plus those whose content differs from both
    /// parents. The second set catches a file someone already `git add`ed with markers in it, while a
    /// file taken as-is from either side (which may legitimately contain marker-like lines) is not
    /// suspected.
    async fn resolution_candidates(&self) -> Result<Vec<String>, GitError> {
        let mut candidates = self.conflicted_paths().await?;
        let changed = |against: &'static str| async move {
            let args = ["diff", "--name-only", "-z", "--no-renames", against, "--"];
            let out = self.check(&args, Mode::READ).await?;
            Ok::<_, GitError>(parse::nul_list(&out.stdout))
        };
        let from_ours: HashSet<String> = changed("HEAD").await?.into_iter().collect();
        for path in changed("MERGE_HEAD").await? {
            if from_ours.contains(&path) && !candidates.contains(&path) {
                candidates.push(path);
            }
        }
        Ok(candidates)
    }

    async fn file_has_markers(&self, relative: &str) -> Result<bool, GitError> {
        let file = self.path.join(relative);
        // Only regular files: a deleted path, a submodule directory or a symlink has no markers.
        match tokio::fs::symlink_metadata(&file).await {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        Ok(parse::has_conflict_markers(&tokio::fs::read(&file).await?))
    }

    /// Abandons the merge in progress, restoring the pre-merge state. Ok if there is none.
    pub async fn abort_merge(&self) -> Result<(), GitError> {
        if !self.merge_in_progress().await? {
            return Ok(());
        }
        self.check(&["merge", "--abort"], Mode::META).await.map(drop)
    }

    /// Like [`Worktree::reset_hard`], but first asks whether anything differs from `commit` (HEAD
    /// moved, tracked or untracked changes; in-process, else with `git status`) and resets only then:
    /// after a build or test run that left the tree as it was, no git process at all. Returns whether
    /// anything had to be undone.
    pub async fn reset_hard_if_changed(&self, commit: &str) -> Result<bool, GitError> {
        if let Some(differs) = self.differs_in_process(commit).await {
            if differs {
                self.reset_hard(commit).await?;
            }
            return Ok(differs);
        }
        let args = [
            "status",
            "--porcelain=v2",
            "--branch",
            "-z",
            "--untracked-files=normal",
            "--no-renames",
        ];
        let out = self.check(&args, Mode::READ).await?;
        if parse::status_is_clean_at(&out.stdout, commit) {
            return Ok(false);
        }
        self.reset_hard(commit).await?;
        Ok(true)
    }

    /// The status question of [`Worktree::reset_hard_if_changed`] answered in-process; `None` when git
    /// is to answer it (gix unavailable, or any error).
    async fn differs_in_process(&self, commit: &str) -> Option<bool> {
        self.guard_link().await;
        let (path, head) = (self.path.to_path_buf(), commit.to_string());
        match self
            .shared
            .run_in_process(move |git| git.worktree_differs(&path, &head))
            .await
        {
            Some(Ok(differs)) => Some(differs),
            outcome => {
                tracing::debug!(?outcome, "in-process status failed; asking git");
                None
            }
        }
    }

    /// `git reset --hard <commit>` alone: the checked-out branch moves to `commit` (a no-op when it is
    /// there already) and the index and files follow; untracked files stay. For a worktree whose
    /// branch was moved without it ([`crate::Repo::merge_into_branch`]): only the files that differ
    /// are written.
    pub async fn check_out(&self, commit: &str) -> Result<(), GitError> {
        let args = ["reset", "--hard", "-q", "--end-of-options", commit];
        self.check(&args, Mode::META).await.map(drop)
    }

    /// `git reset --hard <commit>` then `git clean -fd`: tracked and untracked changes are discarded,
    /// ignored files (build output) are kept, and any merge in progress is dropped.
    pub async fn reset_hard(&self, commit: &str) -> Result<(), GitError> {
        let args = ["reset", "--hard", "-q", "--end-of-options", commit];
        self.check(&args, Mode::META).await?;
        self.check(&["clean", "-fd", "-q"], Mode::META).await.map(drop)
    }
}
