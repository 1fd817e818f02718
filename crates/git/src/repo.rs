//! The user's repository: discovery, state queries, branches and worktree management.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::sync::RwLock;

use crate::cmd::{Mode, Output, Runner};
use crate::inproc::{BranchMerge, Identity, InProcess, NewWorktree};
use crate::parse::{self, WorktreeEntry};
use crate::{GitError, Worktree};

/// What a `Repo` and every `Worktree` made from it share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub root: PathBuf,
    pub common_dir: PathBuf,
    pub git: Runner,
    /// Guards metadata all worktrees share (worktree registrations, branches, shared refs,
    /// info/exclude). git guards these with lock files and *fails* rather than waits when one is taken,
    /// so dozens of sessions doing this at once would fail at random; in-process they queue here instead.
    ///
    /// Shared (read) mode is for the common operations that touch only their own names: adding a
    /// worktree at a free path (its own admin directory, its own new branch ref) and removing a live
    /// one. They run in parallel. Exclusive (write) mode is for everything that reads or repairs the
    /// registrations as a whole (listing, pruning, replacing a worktree) and for other ref changes, so a
    /// listing never sees a worktree half-registered.
    pub meta: RwLock<()>,
    /// The repository opened with gix for in-process work, opened on first use; `None` when gix
    /// cannot read it as git would (see `inproc.rs`): git does everything then.
    pub inproc: tokio::sync::OnceCell<Option<Arc<InProcess>>>,
}

impl Shared {
    /// The gix handle, opened once. The identity comes from `git var` so that it is the one `git
    /// commit` would use here (configuration, `GIT_AUTHOR_*` variables, the fallback identity).
    pub async fn in_process(&self) -> Result<Option<Arc<InProcess>>, GitError> {
        let opened = self
            .inproc
            .get_or_try_init(|| async {
                let out = self.git.check(&self.root, ["var", "-l"], Mode::COMMIT).await?;
                let ident = |var: &str| {
                    out.stdout
                        .lines()
                        .find_map(|l| l.strip_prefix(var)?.strip_prefix('='))
                        .and_then(Identity::parse_ident)
                };
                let (Some(author), Some(committer)) =
                    (ident("GIT_AUTHOR_IDENT"), ident("GIT_COMMITTER_IDENT"))
                else {
                    tracing::debug!("no identity from `git var -l`; git does everything");
                    return Ok::<_, GitError>(None);
                };
                let isolated = self.git.has_extra_env();
                match InProcess::open(&self.common_dir, isolated, author, committer) {
                    Ok(inproc) => Ok(Some(Arc::new(inproc))),
                    Err(why) => {
                        tracing::debug!(%why, "gix cannot open the repository; git does everything");
                        Ok(None)
                    }
                }
            })
            .await?;
        Ok(opened.clone())
    }

    /// Runs `job` on the in-process git thread; `None` when git is to do the work instead: gix cannot
    /// open the repository, or the job did not come back (logged).
    pub async fn run_in_process<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut crate::inproc::Context) -> T + Send + 'static,
    ) -> Option<T> {
        let inproc = self.in_process().await.ok()??;
        match inproc.run(job).await {
            Ok(answer) => Some(answer),
            Err(e) => {
                tracing::debug!("in-process git: {e}; git does it");
                None
            }
        }
    }
}

/// The user's repository, seen from its main worktree. Cheap to clone; safe to share between tasks.
#[derive(Debug, Clone)]
pub struct Repo {
    shared: Arc<Shared>,
}

/// Result of a fast-forward attempt. Nothing is ever forced, so anything else is reported, not overridden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FastForward {
    /// The branch now points at the commit (or already did).
    Done,
    /// The branch has commits the target lacks: it moved since the target was based on it.
    NotFastForward,
    /// git refused for another reason (local changes in the way, an operation in progress, the branch
    /// checked out elsewhere); git's message or ours, verbatim.
    Blocked(String),
}

/// A worktree path as the caller gave it (made absolute) and as git records it (symlinks resolved).
struct Location {
    abs: PathBuf,
    canon: PathBuf,
}

impl Location {
    async fn resolve(path: &Path, create_parent: bool) -> Result<Location, GitError> {
        // Absolute first: every git call runs with `-C <root>`, which would re-anchor a relative path.
        let abs = std::path::absolute(path)?;
        let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
            return Err(GitError::InvalidArgument(format!(
                "worktree path has no final name: {}",
                path.display()
            )));
        };
        if create_parent {
            tokio::fs::create_dir_all(parent).await?;
        }
        let canon = match tokio::fs::canonicalize(parent).await {
            Ok(parent) => parent.join(name),
            Err(e) if e.kind() == ErrorKind::NotFound => abs.clone(),
            Err(e) => return Err(e.into()),
        };
        Ok(Location { abs, canon })
    }

    fn is(&self, path: &Path) -> bool {
        path == self.abs || path == self.canon
    }
}

impl Repo {
    /// Finds the repository containing `path` and returns it rooted at its main worktree (also when
    /// `path` is inside a linked worktree). `NotARepo` when there is none, or only a bare repository.
    pub async fn discover(path: &Path) -> Result<Repo, GitError> {
        Repo::discover_with_env(path, Vec::new()).await
    }

    /// Like [`Repo::discover`], adding `env` to every git command this repository and its worktrees run.
    /// Tests use it to point `HOME`/`XDG_CONFIG_HOME` at an empty directory (and set
    /// `GIT_CONFIG_NOSYSTEM=1`) so they see no machine-wide git config, without touching the process
    /// environment that parallel tests share.
    pub async fn discover_with_env(path: &Path, env: Vec<(String, String)>) -> Result<Repo, GitError> {
        let git = Runner::new(env);
        let args = [
            "rev-parse",
            "--path-format=absolute",
            "--git-dir",
            "--git-common-dir",
        ];
        let out = git.run(path, args, Mode::READ).await?;
        if !out.success() {
            return Err(not_a_repo_or_error(out, path));
        }
        let mut lines = out.stdout.lines().map(PathBuf::from);
        let (Some(git_dir), Some(common_dir)) = (lines.next(), lines.next()) else {
            return Err(out.into_error());
        };
        let root = main_worktree_root(&git, path, &git_dir, &common_dir).await?;
        let shared = Shared {
            root,
            common_dir,
            git,
            meta: RwLock::new(()),
            inproc: tokio::sync::OnceCell::new(),
        };
        Ok(Repo {
            shared: Arc::new(shared),
        })
    }

    /// Top directory of the main worktree.
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// The repository's common git directory (`.git` of the main worktree), absolute.
    pub fn git_common_dir(&self) -> &Path {
        &self.shared.common_dir
    }

    pub(crate) fn git(&self) -> &Runner {
        &self.shared.git
    }

    /// Merges `theirs` (a full object name or a branch's short name) into branch `branch` (short
    /// name), which must be at commit `ours` (a full object name), without any worktree: the merge
    /// commit is written and the branch moved in-process (see `inproc.rs`).
    /// A worktree with `branch` checked out keeps its old files and index until it is checked out
    /// again (e.g. [`Worktree::reset_hard`]). [`BranchMerge::UseGit`] leaves everything as it was:
    /// merge with [`Worktree::merge`] then.
    pub async fn merge_into_branch(
        &self,
        branch: &str,
        ours: &str,
        theirs: &str,
        message: &str,
    ) -> Result<BranchMerge, GitError> {
        let Some(inproc) = self.in_process().await? else {
            return Ok(BranchMerge::UseGit("gix cannot open this repository".into()));
        };
        let reference = format!("refs/heads/{branch}");
        let (ours, theirs, message) = (ours.to_string(), theirs.to_string(), message.to_string());
        let started = std::time::Instant::now();
        let result = inproc
            .run(move |git| git.merge_into_branch(&reference, &ours, &theirs, &message))
            .await?;
        tracing::debug!(
            branch,
            outcome = ?result,
            elapsed_us = started.elapsed().as_micros() as u64,
            "in-process merge"
        );
        result
    }

    async fn in_process(&self) -> Result<Option<Arc<InProcess>>, GitError> {
        self.shared.in_process().await
    }

    /// The commit checked out in the main worktree; `None` before the first commit.
    pub async fn head_commit(&self) -> Result<Option<String>, GitError> {
        let args = ["rev-parse", "-q", "--verify", "HEAD^{commit}"];
        let out = self.git().run(self.root(), args, Mode::READ).await?;
        match out.code {
            Some(0) => Ok(Some(out.line())),
            // `-q --verify` exits 1 silently when HEAD does not resolve: an unborn branch.
            Some(1) if out.stderr.trim().is_empty() => Ok(None),
            _ => Err(out.into_error()),
        }
    }

    /// Short name of the branch checked out in the main worktree; `None` when HEAD is detached.
    pub async fn current_branch(&self) -> Result<Option<String>, GitError> {
        let args = ["symbolic-ref", "-q", "--short", "HEAD"];
        let out = self.git().run(self.root(), args, Mode::READ).await?;
        match out.code {
            Some(0) => Ok(Some(out.line())),
            Some(1) => Ok(None),
            _ => Err(out.into_error()),
        }
    }

    /// Paths with uncommitted changes (staged, unstaged, untracked-not-ignored), excluding any path under one of `ignore_prefixes` (e.g. ".orchestrator/").
    ///
    /// Paths are relative to the root; untracked directories are listed file by file, and a rename names
    /// both its old and new path.
    pub async fn dirty_paths(&self, ignore_prefixes: &[&str]) -> Result<Vec<String>, GitError> {
        let args = ["status", "--porcelain=v1", "-z", "--untracked-files=all"];
        let out = self.git().check(self.root(), args, Mode::READ).await?;
        let ignored = |path: &str| {
            ignore_prefixes
                .iter()
                .any(|prefix| path.starts_with(prefix) || path == prefix.trim_end_matches('/'))
        };
        Ok(parse::status_paths(&out.stdout)
            .into_iter()
            .filter(|p| !ignored(p))
            .collect())
    }

    /// Adds `pattern` to `<common dir>/info/exclude` unless a line equal to it exists (creating info/ if needed).
    ///
    /// info/exclude rather than .gitignore: it ignores our state without changing a tracked file.
    /// `.git/info/exclude` (its folder made when missing) and its text, empty when it does not exist.
    /// The caller holds the metadata lock.
    async fn read_exclude_file(&self) -> Result<(PathBuf, String), GitError> {
        let info = self.git_common_dir().join("info");
        tokio::fs::create_dir_all(&info).await?;
        let file = info.join("exclude");
        let existing = match tokio::fs::read(&file).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e.into()),
        };
        Ok((file, existing))
    }

    pub async fn ensure_excluded(&self, pattern: &str) -> Result<(), GitError> {
        if pattern.trim().is_empty() || pattern.contains(['\n', '\r']) {
            return Err(GitError::InvalidArgument(format!(
                "exclude pattern must be one non-empty line: {pattern:?}"
            )));
        }
        let _meta = self.shared.meta.write().await;
        let (file, existing) = self.read_exclude_file().await?;
        if existing.lines().any(|l| l.trim_end_matches('\r') == pattern) {
            return Ok(());
        }
        let separator = if existing.is_empty() || existing.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .await?;
        out.write_all(format!("{separator}{pattern}\n").as_bytes())
            .await?;
        out.flush().await?;
        Ok(())
    }

    /// Excludes what `dir` (a folder at the root) holds except its subfolders `keep`, which a team
    /// may commit (`/dir/*`, then `!/dir/<keep>/`), in place of an exclusion of the whole folder
    /// (`/dir/`) that is dropped: git cannot re-include anything under an excluded folder.
    pub async fn exclude_folder_except(&self, dir: &str, keep: &[&str]) -> Result<(), GitError> {
        let names = std::iter::once(dir).chain(keep.iter().copied());
        if names
            .into_iter()
            .any(|n| n.trim().is_empty() || n.contains(['\n', '\r', '/', '*', '!']))
        {
            return Err(GitError::InvalidArgument(format!(
                "folder names must be plain names: {dir:?}, {keep:?}"
            )));
        }
        let whole = format!("/{dir}/");
        let mut wanted = vec![format!("/{dir}/*")];
        wanted.extend(keep.iter().map(|k| format!("!/{dir}/{k}/")));
        let _meta = self.shared.meta.write().await;
        let (file, existing) = self.read_exclude_file().await?;
        let lines: Vec<&str> = existing.lines().map(|l| l.trim_end_matches('\r')).collect();
        if !lines.contains(&whole.as_str()) && wanted.iter().all(|w| lines.contains(&w.as_str())) {
            return Ok(());
        }
        let mut kept: Vec<String> = lines
            .iter()
            .filter(|l| **l != whole && !wanted.iter().any(|w| w == *l))
            .map(|l| l.to_string())
            .collect();
        kept.extend(wanted);
        // Written whole, then renamed: a crash leaves the old file or the new one, never half.
        let temp = file.with_file_name("exclude.orchestrator-tmp");
        tokio::fs::write(&temp, format!("{}\n", kept.join("\n"))).await?;
        tokio::fs::rename(&temp, &file).await?;
        Ok(())
    }

    /// The object name `rev` resolves to (not peeled: an annotated tag gives the tag object).
    /// `NoCommits` when `rev` is relative to HEAD and the repository has no commits.
    pub async fn rev_parse(&self, rev: &str) -> Result<String, GitError> {
        let args = ["rev-parse", "--verify", "--end-of-options", rev];
        let out = self.git().run(self.root(), args, Mode::READ).await?;
        if out.success() {
            return Ok(out.line());
        }
        if rev.starts_with("HEAD") && self.head_commit().await?.is_none() {
            return Err(GitError::NoCommits);
        }
        Err(out.into_error())
    }

    /// Whether commits `a` and `b` hold the same files (their trees are one object).
    pub async fn same_tree(&self, a: &str, b: &str) -> Result<bool, GitError> {
        let ours = self.rev_parse(&format!("{a}^{{tree}}")).await?;
        let theirs = self.rev_parse(&format!("{b}^{{tree}}")).await?;
        Ok(ours == theirs)
    }

    /// Whether the local branch `name` exists.
    pub async fn branch_exists(&self, name: &str) -> Result<bool, GitError> {
        let refname = format!("refs/heads/{name}");
        let args = [
            "rev-parse",
            "-q",
            "--verify",
            "--end-of-options",
            refname.as_str(),
        ];
        let out = self.git().run(self.root(), args, Mode::READ).await?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(out.into_error()),
        }
    }

    /// Creates branch `name` at `at`; fails if it exists. No upstream is recorded.
    pub async fn create_branch(&self, name: &str, at: &str) -> Result<(), GitError> {
        let _meta = self.shared.meta.write().await;
        let args = ["branch", "--no-track", "--", name, at];
        let out = self.git().run(self.root(), args, Mode::META).await?;
        if !out.success() && at.starts_with("HEAD") && self.head_commit().await?.is_none() {
            return Err(GitError::NoCommits);
        }
        out.checked().map(drop)
    }

    /// Deletes branch `name` even if unmerged (`-D`). Fails if it is checked out somewhere.
    pub async fn delete_branch(&self, name: &str) -> Result<(), GitError> {
        self.delete_branches(&[name]).await
    }

    /// Deletes all of `names` (`-D`) with one `git branch -D`: how a mission drops its finished units'
    /// branches at the end instead of one git process per unit. git deletes every branch it can and
    /// reports the others (missing, or checked out somewhere) in the error.
    pub async fn delete_branches<S: AsRef<str>>(&self, names: &[S]) -> Result<(), GitError> {
        if names.is_empty() {
            return Ok(());
        }
        let mut args = vec!["branch", "-D", "--"];
        args.extend(names.iter().map(AsRef::as_ref));
        let _meta = self.shared.meta.write().await;
        self.git().check(self.root(), args, Mode::META).await.map(drop)
    }

    /// The local branches whose names start with `prefix` (e.g. `orchestrator/m1/u/`), by short name.
    pub async fn branches_with_prefix(&self, prefix: &str) -> Result<Vec<String>, GitError> {
        if prefix.contains(['*', '?', '[', '\\']) {
            return Err(GitError::InvalidArgument(format!(
                "branch prefix must not contain glob characters: {prefix:?}"
            )));
        }
        let pattern = format!("refs/heads/{prefix}");
        // A pattern without glob characters matches by prefix in whole path components, so the prefix
        // must end at one: "orchestrator/m1/u/" lists everything below it.
        let args = [
            "for-each-ref",
            "--format=%(refname:strip=2)",
            "--end-of-options",
            pattern.as_str(),
        ];
        let out = self.git().check(self.root(), args, Mode::READ).await?;
        Ok(out
            .stdout
            .lines()
            .filter(|name| name.starts_with(prefix))
            .map(str::to_string)
            .collect())
    }

    /// Checks out the existing `branch` in a new worktree at `path`, creating parent directories. A
    /// worktree already at `path` (live or stale) is removed first, and a missing worktree still holding
    /// `branch` is pruned, so a crashed session's worktree can simply be re-added.
    pub async fn add_worktree(&self, path: &Path, branch: &str) -> Result<Worktree, GitError> {
        if !self.branch_exists(branch).await? {
            return Err(GitError::NoSuchBranch(branch.to_string()));
        }
        let loc = Location::resolve(path, true).await?;
        self.add_worktree_at(&loc, Checkout::Branch(branch)).await
    }

    /// Checks out `branch` in a new worktree at `path`, creating the branch at `start` first when it
    /// does not exist (same replacement rules as [`Repo::add_worktree`]). The common case, a new branch
    /// at a free path (nothing there, or an empty directory), is one `git worktree add -b` that runs in
    /// parallel with other sessions' adds.
    pub async fn add_worktree_on_branch(
        &self,
        path: &Path,
        branch: &str,
        start: &str,
    ) -> Result<Worktree, GitError> {
        let loc = Location::resolve(path, true).await?;
        let new = Checkout::NewBranch { branch, start };
        // An in-process add that gives up leaves the path as it found it.
        let free = is_free(&loc.abs).await?;
        if free && self.add_worktree_in_process(&loc, branch, start).await {
            return Ok(Worktree::new(self.shared.clone(), loc.abs));
        }
        if free {
            let out = {
                let _meta = self.shared.meta.read().await;
                self.git().run(self.root(), new.args(&loc), Mode::META).await?
            };
            if out.success() {
                return Ok(Worktree::new(self.shared.clone(), loc.abs));
            }
            if !out
                .stderr
                .contains(&format!("a branch named '{branch}' already exists"))
            {
                tracing::debug!(error = %out.message(), "worktree add -b failed; clearing the path and retrying");
            }
        }
        // The branch exists already (a resumed unit), or the path needs clearing first.
        if self.branch_exists(branch).await? {
            return self.add_worktree_at(&loc, Checkout::Branch(branch)).await;
        }
        match self.add_worktree_at(&loc, new).await {
            Err(_) if start.starts_with("HEAD") && self.head_commit().await?.is_none() => {
                Err(GitError::NoCommits)
            }
            result => result,
        }
    }

    /// The common case of [`Repo::add_worktree_on_branch`] in-process (see `inproc.rs`): true
    /// when the worktree was added; false when git is to do it (any doubt or error, logged), in which
    /// case the branch may exist by then.
    async fn add_worktree_in_process(&self, loc: &Location, branch: &str, start: &str) -> bool {
        let (path, branch, start) = (loc.abs.clone(), branch.to_string(), start.to_string());
        let started = std::time::Instant::now();
        let _meta = self.shared.meta.read().await;
        let outcome = self
            .shared
            .run_in_process(move |git| git.add_worktree_new_branch(&path, &branch, &start))
            .await;
        tracing::debug!(
            path = %loc.abs.display(),
            ?outcome,
            elapsed_us = started.elapsed().as_micros() as u64,
            "in-process worktree add"
        );
        matches!(outcome, Some(NewWorktree::Added))
    }

    /// A new worktree at `path` with `commit` checked out on a detached HEAD (same replacement rules).
    pub async fn add_detached_worktree(&self, path: &Path, commit: &str) -> Result<Worktree, GitError> {
        let loc = Location::resolve(path, true).await?;
        self.add_worktree_at(&loc, Checkout::Detached(commit)).await
    }

    /// `git worktree add` (checkout included). At a free path it is tried at once under the shared
    /// lock; when that fails (a stale registration at the path or holding the branch, a leftover
    /// directory) the path is cleared under the exclusive lock and the add repeated there.
    async fn add_worktree_at(&self, loc: &Location, checkout: Checkout<'_>) -> Result<Worktree, GitError> {
        if is_free(&loc.abs).await? {
            let out = {
                let _meta = self.shared.meta.read().await;
                self.git()
                    .run(self.root(), checkout.args(loc), Mode::META)
                    .await?
            };
            if out.success() {
                return Ok(Worktree::new(self.shared.clone(), loc.abs.clone()));
            }
            tracing::debug!(error = %out.message(), "worktree add failed; clearing the path and retrying");
        }
        let _meta = self.shared.meta.write().await;
        let holder = checkout.branch().map(|b| format!("refs/heads/{b}"));
        self.clear_worktree_path(loc, holder.as_deref()).await?;
        self.git()
            .check(self.root(), checkout.args(loc), Mode::META)
            .await?;
        Ok(Worktree::new(self.shared.clone(), loc.abs.clone()))
    }

    /// The worktree already registered at `path` with its directory present, kept as it is (uncommitted
    /// changes included): how a resumed mission picks up a crashed session's tree.
    pub async fn open_worktree(&self, path: &Path) -> Result<Option<Worktree>, GitError> {
        if !tokio::fs::try_exists(path).await.unwrap_or(false) {
            return Ok(None);
        }
        let registered = self.list_worktrees().await?;
        self.open_listed_worktree(path, &registered).await
    }

    /// Like [`Repo::open_worktree`], against `registered`, a [`Repo::list_worktrees`] taken earlier: a
    /// resumed mission looks up hundreds of units' worktrees with one listing instead of one each. The
    /// caller must know that nothing else added or removed a worktree at `path` since the listing.
    pub async fn open_listed_worktree(
        &self,
        path: &Path,
        registered: &[PathBuf],
    ) -> Result<Option<Worktree>, GitError> {
        let Ok(abs) = tokio::fs::canonicalize(path).await else {
            return Ok(None);
        };
        if !registered.iter().any(|p| p == &abs) {
            return Ok(None);
        }
        let worktree = Worktree::new(self.shared.clone(), abs);
        // `git worktree add` locks a worktree as "initializing" until its checkout is complete; one
        // still locked so was cut short (git killed with us), and its files are not to be trusted.
        if let Some(admin) = worktree.admin_dir().await {
            if let Ok(reason) = tokio::fs::read_to_string(admin.join("locked")).await {
                if reason.trim() == "initializing" {
                    tracing::info!(path = %path.display(), "worktree was left half-made; it will be replaced");
                    return Ok(None);
                }
            }
        }
        Ok(Some(worktree))
    }

    /// Removes the worktree at `path` (`--force`: its changes are discarded), pruning its registration
    /// if the directory is already gone. Ok if there is nothing there.
    pub async fn remove_worktree(&self, path: &Path) -> Result<(), GitError> {
        let loc = Location::resolve(path, false).await?;
        if tokio::fs::try_exists(&loc.abs).await? {
            // The usual case, a live worktree of ours: removed in-process, or with one `git worktree
            // remove`, in parallel with other sessions. Anything else (not a worktree, the main one)
            // goes the careful way.
            if self.remove_worktree_in_process(&loc.abs).await {
                return Ok(());
            }
            let out = {
                let _meta = self.shared.meta.read().await;
                self.git()
                    .run(self.root(), remove_args(&loc.abs), Mode::META)
                    .await?
            };
            if out.success() {
                return Ok(());
            }
            tracing::debug!(error = %out.message(), "worktree remove failed; clearing the path");
        }
        let _meta = self.shared.meta.write().await;
        self.clear_worktree_path(&loc, None).await
    }

    /// `git worktree remove --force --force` in-process; false (logged) when git is to do it.
    async fn remove_worktree_in_process(&self, path: &Path) -> bool {
        let target = path.to_path_buf();
        let _meta = self.shared.meta.read().await;
        match self
            .shared
            .run_in_process(move |git| git.remove_worktree(&target))
            .await
        {
            Some(Ok(())) => true,
            outcome => {
                tracing::debug!(path = %path.display(), ?outcome, "in-process worktree remove failed; using git");
                false
            }
        }
    }

    /// Every registered worktree, the main one first, as git records them (symlinks resolved), including
    /// registrations whose directory has disappeared.
    pub async fn list_worktrees(&self) -> Result<Vec<PathBuf>, GitError> {
        // Under the lock so the list never shows one of our worktrees half-registered.
        let _meta = self.shared.meta.write().await;
        Ok(self
            .worktree_entries()
            .await?
            .into_iter()
            .map(|e| e.path)
            .collect())
    }

    async fn worktree_entries(&self) -> Result<Vec<WorktreeEntry>, GitError> {
        let args = ["worktree", "list", "--porcelain"];
        let out = self.git().check(self.root(), args, Mode::READ).await?;
        Ok(parse::worktree_list(&out.stdout))
    }

    /// Makes `loc` free for a new worktree: removes a worktree registered there, prunes registrations
    /// whose directory is gone if they are at `loc` or hold `branch_ref`, and deletes a leftover
    /// directory of ours. Caller holds the metadata lock.
    ///
    /// `git worktree prune` is global, so it runs only when one of *our* registrations is stale: a
    /// user's worktree on an unplugged disk must not be unregistered as a side effect.
    async fn clear_worktree_path(&self, loc: &Location, branch_ref: Option<&str>) -> Result<(), GitError> {
        let entries = self.worktree_entries().await?;
        if entries.first().is_some_and(|main| loc.is(&main.path)) {
            return Err(GitError::InvalidArgument(format!(
                "{} is the main worktree",
                loc.abs.display()
            )));
        }
        let mut prune = false;
        for entry in entries.iter().skip(1) {
            let live = tokio::fs::try_exists(&entry.path).await?;
            if loc.is(&entry.path) && live {
                let out = self
                    .git()
                    .run(self.root(), remove_args(&entry.path), Mode::META)
                    .await?;
                if !out.success() && !self.remove_cut_short(&entry.path).await? {
                    return Err(out.into_error());
                }
            } else if !live && (loc.is(&entry.path) || entry.branch.as_deref() == branch_ref) {
                prune = true;
            }
        }
        if prune {
            let args = ["worktree", "prune"];
            self.git().check(self.root(), args, Mode::META).await?;
        }
        self.remove_leftover_dir(&loc.abs).await
    }

    /// Deletes the worktree at `dir` and its registration by hand when `git worktree add` (or ours,
    /// in-process) was killed before finishing it (see `stale.rs`): git refuses to remove such a
    /// worktree ("validation failed"), and a resumed mission must be able to make the unit's worktree
    /// again. False (nothing touched) for anything else, which git's refusal then reports.
    async fn remove_cut_short(&self, dir: &Path) -> Result<bool, GitError> {
        let Some(admin) = crate::link::registered_admin_dir(self.git_common_dir(), dir).await else {
            return Ok(false);
        };
        if !crate::stale::admin_cut_short(&admin) {
            return Ok(false);
        }
        tracing::info!(dir = %dir.display(), "removing a worktree that was cut short while being made");
        tokio::fs::remove_dir_all(dir).await?;
        tokio::fs::remove_dir_all(&admin).await?;
        Ok(true)
    }

    /// Deletes `dir` if it is the remains of one of this repository's worktrees whose registration is
    /// gone (its `.git` file points into our `worktrees/` admin area). Anything else is left for git to
    /// refuse, so no directory of the user's is ever deleted.
    async fn remove_leftover_dir(&self, dir: &Path) -> Result<(), GitError> {
        let Ok(dotgit) = tokio::fs::read_to_string(dir.join(".git")).await else {
            return Ok(());
        };
        let Some(admin) = dotgit.trim().strip_prefix("gitdir: ") else {
            return Ok(());
        };
        let ours = self.git_common_dir().join("worktrees");
        if Path::new(admin).starts_with(&ours) && !tokio::fs::try_exists(admin).await? {
            tracing::info!(dir = %dir.display(), "removing leftover worktree directory");
            tokio::fs::remove_dir_all(dir).await?;
        }
        Ok(())
    }

    /// Fast-forwards the checked-out branch of the main worktree to `commit` (`git merge --ff-only`), which updates the user's files only where git can do so safely. Returns FastForward::Done, ::NotFastForward (branch moved), ::Blocked(reason) (local changes in the way / other failure, with git's message). Never forces anything.
    ///
    /// With a detached HEAD the HEAD itself moves forward, under the same rules.
    pub async fn fast_forward_checked_out(&self, commit: &str) -> Result<FastForward, GitError> {
        let _meta = self.shared.meta.write().await;
        if let Some(operation) = self.operation_in_progress().await? {
            return Ok(FastForward::Blocked(format!(
                "a {operation} is in progress in {}",
                self.root().display()
            )));
        }
        let target = self.rev_parse(&format!("{commit}^{{commit}}")).await?;
        if let Some(head) = self.head_commit().await? {
            if head == target {
                return Ok(FastForward::Done);
            }
            if !self.is_ancestor(&head, &target).await? {
                return Ok(FastForward::NotFastForward);
            }
        }
        // --no-autostash: a user's merge.autoStash would stash their edits and re-apply them, which can
        // conflict inside their files. Signatures: the commits are ours and unsigned by design.
        let args = [
            "merge",
            "--ff-only",
            "--no-autostash",
            "--no-verify-signatures",
            "--end-of-options",
            &target,
        ];
        let out = self.git().run(self.root(), args, Mode::META).await?;
        Ok(match out.code {
            Some(0) => FastForward::Done,
            _ if out.message().contains("Not possible to fast-forward") => FastForward::NotFastForward,
            _ => FastForward::Blocked(out.message()),
        })
    }

    /// A sequencer operation the user left unfinished in the main worktree, during which moving HEAD
    /// would corrupt their work (a rebase even has HEAD detached, so `merge --ff-only` would go ahead).
    async fn operation_in_progress(&self) -> Result<Option<&'static str>, GitError> {
        // The main worktree's own git directory is the common directory.
        const MARKERS: &[(&str, &str)] = &[
            ("MERGE_HEAD", "merge"),
            ("rebase-merge", "rebase"),
            ("rebase-apply", "rebase or am"),
            ("CHERRY_PICK_HEAD", "cherry-pick"),
            ("REVERT_HEAD", "revert"),
            ("BISECT_LOG", "bisect"),
        ];
        for (file, operation) in MARKERS {
            if tokio::fs::try_exists(self.git_common_dir().join(file)).await? {
                return Ok(Some(operation));
            }
        }
        Ok(None)
    }

    /// Updates a branch that is NOT checked out anywhere to `commit` only if it is a fast-forward.
    ///
    /// Blocked if the branch is checked out in some worktree (moving it would desynchronise that tree).
    /// The ref update is a compare-and-swap, so a concurrent move is reported as NotFastForward.
    pub async fn fast_forward_branch(&self, branch: &str, commit: &str) -> Result<FastForward, GitError> {
        let _meta = self.shared.meta.write().await;
        let refname = format!("refs/heads/{branch}");
        let entries = self.worktree_entries().await?;
        if let Some(holder) = entries
            .iter()
            .find(|e| e.branch.as_deref() == Some(refname.as_str()))
        {
            return Ok(FastForward::Blocked(format!(
                "branch '{branch}' is checked out at {}",
                holder.path.display()
            )));
        }
        if !self.branch_exists(branch).await? {
            return Err(GitError::NoSuchBranch(branch.to_string()));
        }
        let old = self.rev_parse(&refname).await?;
        let new = self.rev_parse(&format!("{commit}^{{commit}}")).await?;
        if old == new {
            return Ok(FastForward::Done);
        }
        if !self.is_ancestor(&old, &new).await? {
            return Ok(FastForward::NotFastForward);
        }
        let args = [
            "update-ref",
            "-m",
            "orchestrator: fast-forward",
            &refname,
            &new,
            &old,
        ];
        let out = self.git().run(self.root(), args, Mode::META).await?;
        match out.code {
            Some(0) => Ok(FastForward::Done),
            _ if out.stderr.contains("but expected") => Ok(FastForward::NotFastForward),
            _ => Err(out.into_error()),
        }
    }

    /// Whether a line of a text file of `commit` matches `pattern` (a POSIX extended regular
    /// expression, as `git grep -E`): e.g. whether a test of some name was defined there.
    pub async fn matches_at(&self, commit: &str, pattern: &str) -> Result<bool, GitError> {
        let args = [
            "grep",
            "-q",
            "-I",
            "-E",
            "-e",
            pattern,
            "--end-of-options",
            commit,
            "--",
        ];
        let out = self.git().run(self.root(), args, Mode::READ).await?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(out.into_error()),
        }
    }

    /// Whether `ancestor` is reachable from `descendant` (a commit is its own ancestor).
    pub async fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, GitError> {
        let args = [
            "merge-base",
            "--is-ancestor",
            "--end-of-options",
            ancestor,
            descendant,
        ];
        let out = self.git().run(self.root(), args, Mode::READ).await?;
        match out.code {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => Err(out.into_error()),
        }
    }
}

/// Whether `git worktree add` can use `path` as it is: nothing there, or an empty directory (which
/// the engine makes first so a session's tools can be rooted there while git fills it).
async fn is_free(path: &Path) -> Result<bool, GitError> {
    match tokio::fs::read_dir(path).await {
        Ok(mut entries) => Ok(entries.next_entry().await?.is_none()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotADirectory => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What a new worktree checks out.
#[derive(Clone, Copy)]
enum Checkout<'a> {
    /// An existing branch.
    Branch(&'a str),
    /// A branch created at `start` by the same command (`-b`); fails if it exists.
    NewBranch { branch: &'a str, start: &'a str },
    /// A commit, on a detached HEAD.
    Detached(&'a str),
}

impl<'a> Checkout<'a> {
    fn branch(self) -> Option<&'a str> {
        match self {
            Checkout::Branch(branch) | Checkout::NewBranch { branch, .. } => Some(branch),
            Checkout::Detached(_) => None,
        }
    }

    /// `git worktree add` for this checkout at `loc`. `--no-track`: no upstream is recorded for a new
    /// branch, as `create_branch` does.
    fn args<'b>(self, loc: &'b Location) -> Vec<&'b OsStr>
    where
        'a: 'b,
    {
        let mut args: Vec<&OsStr> = ["worktree", "add", "--quiet"].map(OsStr::new).to_vec();
        let target = match self {
            Checkout::Branch(branch) => branch,
            Checkout::NewBranch { branch, start } => {
                args.extend(["--no-track", "-b", branch].map(OsStr::new));
                start
            }
            Checkout::Detached(commit) => {
                args.push(OsStr::new("--detach"));
                commit
            }
        };
        args.extend([OsStr::new("--"), loc.abs.as_os_str(), OsStr::new(target)]);
        args
    }
}

fn remove_args(path: &Path) -> [&OsStr; 6] {
    // --force twice: also when it has changes or is locked; the caller decided it goes.
    [
        OsStr::new("worktree"),
        OsStr::new("remove"),
        OsStr::new("--force"),
        OsStr::new("--force"),
        OsStr::new("--"),
        path.as_os_str(),
    ]
}

/// `NotARepo` for git's "not a git repository" and for a path it cannot even enter; otherwise git's error
/// (e.g. "dubious ownership"), which says more than NotARepo would.
fn not_a_repo_or_error(out: Output, path: &Path) -> GitError {
    let message = out.message();
    if message.contains("not a git repository") || message.contains("cannot change to") {
        GitError::NotARepo(path.to_path_buf())
    } else {
        out.into_error()
    }
}

/// The main worktree's top directory. From the main worktree, `--show-toplevel` is exact (it honours
/// `core.worktree` and `--separate-git-dir`). From a linked worktree or inside `.git`, the first record
/// of `worktree list` names the main worktree; if that is bare there is no worktree to work in.
async fn main_worktree_root(
    git: &Runner,
    path: &Path,
    git_dir: &Path,
    common_dir: &Path,
) -> Result<PathBuf, GitError> {
    if git_dir == common_dir {
        let top = git
            .run(path, ["rev-parse", "--show-toplevel"], Mode::READ)
            .await?;
        if top.success() && !top.line().is_empty() {
            return Ok(PathBuf::from(top.line()));
        }
    }
    let list = git
        .check(path, ["worktree", "list", "--porcelain"], Mode::READ)
        .await?;
    match parse::worktree_list(&list.stdout).into_iter().next() {
        Some(main) if !main.bare => Ok(main.path),
        _ => Err(GitError::NotARepo(path.to_path_buf())),
    }
}
