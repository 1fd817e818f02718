//! Git work done inside the orchestrator's process with gitoxide (`gix`), for the steps that every
//! unit repeats and that are cheap in-process but cost a git process (1.7-10 ms of CPU each on a small
//! VM) when run by the command line. Fifty units do each of them within a second, and on two CPUs
//! those processes were most of the orchestrator's overhead (docs/benchmarks.md).
//!
//! - **Adding a worktree** is `git worktree add -b`: the branch is created with a `branch: Created from`
//!   reflog entry, then the worktree is registered exactly as git lays it out (`worktrees/<name>/` with
//!   `gitdir`, `commondir`, `HEAD` and the `locked` "initializing" marker until the checkout is done),
//!   the files are checked out through the repository's attributes and the index is written.
//! - **Removing** one is `git worktree remove --force --force`.
//! - **Committing** the index that `git add -A` staged is `git commit -m`: HEAD's tree with the changed
//!   entries, one parent, a `commit: …` reflog entry.
//! - **Reading**: HEAD's tree, whether a worktree differs from a commit (`git status`), and the review
//!   diff (`git diff`, rendered by `patch.rs`).
//! - **Merging** computes merge-ort's result as gix implements it, writes the tree and a two-parent
//!   merge commit as loose objects, and moves the branch (with a `commit (merge): …` reflog entry) only
//!   if it is still at the expected commit, without touching any worktree: the caller checks the target
//!   out once, when it next needs the files.
//!
//! Whatever gix might not do exactly as git does goes back to the git command line, which stays the
//! judge: any conflict gix reports (even one it could resolve), several merge bases, a repository gix
//! cannot open (SHA-256, reftable, an unknown extension), configured filter drivers (LFS and the
//! like run external programs on checkout), submodules, an operation in progress, or any error at all.
//!
//! All of it runs on one thread of its own that keeps one opened repository: the work is serial
//! anyway (one merge queue; each step well under a millisecond or two of CPU), a repository handle
//! and its object cache are reused, and the allocator does not grow an arena per blocking thread.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use gix::bstr::ByteSlice;
use gix::refs::transaction::PreviousValue;

use crate::GitError;

/// The in-process git thread of one [`crate::Repo`]; it ends when this is dropped.
pub(crate) struct InProcess {
    jobs: mpsc::Sender<Job>,
}

type Job = Box<dyn FnOnce(&mut Context) + Send>;

/// What the thread owns: the repository, opened once at its common directory.
pub(crate) struct Context {
    repo: gix::Repository,
    author: Identity,
    committer: Identity,
    /// Checkout settings, read on the first worktree add.
    checkout: Option<gix::worktree::state::checkout::Options>,
    /// Opened without the user's and the system's configuration (tests with a private `HOME`).
    isolated: bool,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess").finish_non_exhaustive()
    }
}

/// Name and e-mail of an author or committer, as `git var` resolves them (config, environment and the
/// runner's fallback identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub name: String,
    pub email: String,
}

/// How an in-process merge ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchMerge {
    /// The merge commit, now at the tip of the branch.
    Merged(String),
    /// `theirs` is already part of `ours`: nothing was written (as `git merge` says "Already up to date").
    AlreadyMerged,
    /// Not merged in-process (conflicts, or something gix does not do as git would); the branch is
    /// unchanged and the reason says why. Merge with git in a worktree instead.
    UseGit(String),
}

/// How an in-process commit of a worktree's index ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IndexCommit {
    /// The new commit, now at HEAD.
    Committed(String),
    /// The index is HEAD's tree: nothing was written.
    NothingToCommit,
    /// Nothing was written, for the reason given; `git commit` is to do it.
    UseGit(String),
}

/// How an in-process `worktree add -b` ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NewWorktree {
    /// The branch was created and the worktree checked out at the path.
    Added,
    /// Nothing was done, for the reason given; git does it. The branch may exist by then (made here
    /// before the worktree failed), which the git path handles like a resumed unit's branch.
    UseGit(String),
}

/// Opening options: the repository's own and the user's git configuration (merge and rename
/// settings live there), but none of the environment variables that would point gix at other object
/// directories; with `isolated` (tests that give git a private `HOME`) no user or system configuration.
fn open_options(isolated: bool) -> gix::open::Options {
    if isolated {
        return gix::open::Options::isolated();
    }
    let mut permissions = gix::open::Permissions::default();
    permissions.env.objects = gix::sec::Permission::Deny;
    permissions.env.git_prefix = gix::sec::Permission::Deny;
    gix::open::Options::default().permissions(permissions)
}

impl InProcess {
    /// Opens the repository whose common directory is `common_dir` and starts the thread. An error
    /// means "use git for everything": gix cannot read this repository as git would.
    pub fn open(
        common_dir: &Path,
        isolated: bool,
        author: Identity,
        committer: Identity,
    ) -> Result<InProcess, String> {
        let mut repo = gix::open_opts(common_dir, open_options(isolated)).map_err(|e| e.to_string())?;
        if repo.object_hash() != gix::hash::Kind::Sha1 {
            return Err(format!("object format {:?}", repo.object_hash()));
        }
        // Trees are read once per merge side and again for the next merge's base: a small cache avoids
        // inflating them again (gix's own advice for tree diffs).
        repo.object_cache_size_if_unset(4 << 20);
        let mut context = Context::new(repo, author, committer, isolated)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("orchestrator-git".into())
            .spawn(move || {
                for job in queue {
                    // A panicking job drops its reply sender, so its caller sees an error and uses git;
                    // the thread goes on serving the others.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut context)));
                }
            })
            .map_err(|e| format!("cannot start the in-process git thread: {e}"))?;
        Ok(InProcess { jobs })
    }

    /// Runs `job` on the thread and waits for its answer without blocking the runtime.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Context) -> T + Send + 'static,
    ) -> Result<T, GitError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |context: &mut Context| {
                let _ = reply.send(job(context));
            }))
            .map_err(|_| in_process_error("the in-process git thread has stopped"))?;
        answer
            .await
            .map_err(|_| in_process_error("the in-process git job failed (see the log)"))
    }
}

impl Context {
    /// The identity `git var` resolved is set in the repository's in-memory configuration too, so that
    /// the reflog entries gix writes (a new branch, a moved one) name whom git would name, also where
    /// no identity is configured at all.
    fn new(
        mut repo: gix::Repository,
        author: Identity,
        committer: Identity,
        isolated: bool,
    ) -> Result<Context, String> {
        use gix::config::tree::{Author, Committer};
        let mut config = repo.config_snapshot_mut();
        let values = [
            (&Committer::NAME, &committer.name),
            (&Committer::EMAIL, &committer.email),
            (&Author::NAME, &author.name),
            (&Author::EMAIL, &author.email),
        ];
        for (key, value) in values {
            config
                .set_value(key, value.as_str())
                .map_err(|e| format!("identity {value:?}: {e}"))?;
        }
        config.commit().map_err(|e| format!("identity: {e}"))?;
        Ok(Context {
            repo,
            author,
            committer,
            checkout: None,
            isolated,
        })
    }

    /// Merges `theirs` (a full object name or a branch's short name) into `branch` (a full ref name
    /// under `refs/heads/`), which must be at `ours` (a full object name), with a merge commit of two
    /// parents and `message`.
    pub fn merge_into_branch(
        &mut self,
        branch: &str,
        ours: &str,
        theirs: &str,
        message: &str,
    ) -> Result<BranchMerge, GitError> {
        let repo = &self.repo;
        let ours_id = parse_id(ours)?;
        let theirs_id = resolve(repo, theirs)?;
        let options = match repo.tree_merge_options() {
            Ok(options) => options,
            Err(e) => return Ok(BranchMerge::UseGit(format!("merge options: {e}"))),
        };
        let labels = gix::merge::blob::builtin_driver::text::Labels {
            ancestor: None,
            current: Some(branch.as_bytes().as_bstr()),
            other: Some(theirs.as_bytes().as_bstr()),
        };
        let merged = match repo.merge_commits(ours_id, theirs_id, labels, options.into()) {
            Ok(merged) => merged,
            Err(e) => return Ok(BranchMerge::UseGit(format!("gix merge: {e}"))),
        };
        let bases = merged.merge_bases.as_ref().map(|b| b.len()).unwrap_or(0);
        if merged
            .merge_bases
            .as_ref()
            .is_some_and(|bases| bases.iter().any(|b| *b == theirs_id))
        {
            return Ok(BranchMerge::AlreadyMerged);
        }
        if bases != 1 {
            return Ok(BranchMerge::UseGit(format!("{bases} merge bases")));
        }
        let mut tree_merge = merged.tree_merge;
        if !tree_merge.conflicts.is_empty() {
            let paths: Vec<String> = tree_merge
                .conflicts
                .iter()
                .map(|c| c.ours.location().to_str_lossy().into_owned())
                .collect();
            return Ok(BranchMerge::UseGit(format!("conflicts in {}", paths.join(", "))));
        }
        let tree = tree_merge.tree.write().map_err(in_process_error)?.detach();
        match self.commit(repo, branch, message, tree, [ours_id, theirs_id]) {
            Ok(commit) => Ok(BranchMerge::Merged(commit)),
            // The objects are written but unreferenced (git's gc drops them); the branch did not move,
            // because its lock was taken or it is no longer at `ours`.
            Err(e) => Ok(BranchMerge::UseGit(format!("updating {branch}: {e}"))),
        }
    }

    /// The tree of `commit` (a full object name), as `git rev-parse <commit>^{tree}` says.
    pub fn tree_of(&self, commit: &str) -> Result<String, String> {
        let id = parse_id(commit).map_err(|e| e.to_string())?;
        let commit = self.repo.find_commit(id).map_err(|e| e.to_string())?;
        let tree = commit.tree_id().map_err(|e| e.to_string())?;
        Ok(tree.to_string())
    }

    /// Whether the linked worktree at `path` differs from commit `head` (a full object name): HEAD
    /// elsewhere, staged or unstaged changes to tracked files, or untracked files that are not
    /// ignored. What `git status --porcelain=v2 --branch --untracked-files=normal` tells, without
    /// writing anything (the index is not refreshed).
    pub fn worktree_differs(&self, path: &Path, head: &str) -> Result<bool, String> {
        let expected = parse_id(head).map_err(|e| e.to_string())?;
        // Opened afresh each time: a unit is checked once per attempt, so keeping fifty opened
        // repositories would cost memory for nothing.
        let repo = gix::open_opts(path, open_options(self.isolated)).map_err(|e| e.to_string())?;
        Self::differs(&repo, expected)
    }

    fn differs(repo: &gix::Repository, expected: gix::ObjectId) -> Result<bool, String> {
        if repo.head_id().map_err(|e| e.to_string())?.detach() != expected {
            return Ok(true);
        }
        let mut changes = repo
            .status(gix::progress::Discard)
            .map_err(|e| e.to_string())?
            .untracked_files(gix::status::UntrackedFiles::Collapsed)
            .index_worktree_rewrites(None)
            // A unit's worktree is small, and fifty of them are checked at once: no extra threads.
            .index_worktree_options_mut(|options| options.thread_limit = Some(1))
            .into_iter(Vec::<gix::bstr::BString>::new())
            .map_err(|e| e.to_string())?;
        match changes.next() {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(e.to_string()),
        }
    }

    /// `git commit -m <message>` of the index of the linked worktree at `path` (after `git add -A`
    /// there): the tree is HEAD's with the entries that differ in the index replaced, added or
    /// removed, the commit has HEAD as its parent and the identity `git var` resolved, and HEAD's
    /// branch moves with a `commit: …` reflog entry. The index itself is left as it is (it already
    /// holds what was committed). A merge or other operation in progress, conflicted or intent-to-add
    /// entries, a sparse index, a detached or unborn HEAD, a commit encoding or per-worktree
    /// configuration are git's to handle.
    pub fn commit_index(&self, path: &Path, message: &str) -> IndexCommit {
        self.try_commit_index(path, message)
            .unwrap_or_else(IndexCommit::UseGit)
    }

    fn try_commit_index(&self, path: &Path, message: &str) -> Result<IndexCommit, String> {
        use gix::diff::index::ChangeRef;
        let Some(message) = clean_message(message) else {
            return Ok(IndexCommit::UseGit("an empty message".into()));
        };
        let repo = gix::open_opts(path, open_options(self.isolated)).map_err(|e| e.to_string())?;
        let config = repo.config_snapshot();
        for key in ["i18n.commitEncoding", "extensions.worktreeConfig"] {
            if config.string(key).is_some() {
                return Ok(IndexCommit::UseGit(format!("{key} is set")));
            }
        }
        if let Some(operation) = repo.state() {
            // A merge (or cherry-pick, revert, rebase) in progress: git commits it with its parents.
            return Ok(IndexCommit::UseGit(format!("{operation:?} in progress")));
        }
        let head = repo.head().map_err(|e| e.to_string())?;
        if head.referent_name().is_none() || head.is_unborn() {
            return Ok(IndexCommit::UseGit("HEAD is not on a branch with commits".into()));
        }
        let parent = repo.head_commit().map_err(|e| e.to_string())?;
        let parent_tree = parent.tree_id().map_err(|e| e.to_string())?.detach();
        let index = repo.open_index().map_err(|e| e.to_string())?;
        if index.is_sparse() {
            return Ok(IndexCommit::UseGit("a sparse index".into()));
        }
        let unusual = index.entries().iter().any(|entry| {
            entry.stage() != gix::index::entry::Stage::Unconflicted
                || entry.flags.contains(gix::index::entry::Flags::INTENT_TO_ADD)
        });
        if unusual {
            return Ok(IndexCommit::UseGit("conflicted or intent-to-add entries".into()));
        }
        let mut edits: Vec<(
            gix::bstr::BString,
            Option<(gix::index::entry::Mode, gix::ObjectId)>,
        )> = Vec::new();
        let mut renamed = false;
        repo.tree_index_status(
            &parent_tree,
            &index,
            None,
            gix::status::tree_index::TrackRenames::Disabled,
            |change, _, _| {
                match change {
                    ChangeRef::Addition {
                        location,
                        entry_mode,
                        id,
                        ..
                    }
                    | ChangeRef::Modification {
                        location,
                        entry_mode,
                        id,
                        ..
                    } => edits.push((location.into_owned(), Some((entry_mode, id.into_owned())))),
                    ChangeRef::Deletion { location, .. } => edits.push((location.into_owned(), None)),
                    // Not with renames disabled; refuse rather than guess.
                    ChangeRef::Rewrite { .. } => renamed = true,
                }
                Ok(std::ops::ControlFlow::Continue(()))
            },
        )
        .map_err(|e| e.to_string())?;
        if renamed {
            return Ok(IndexCommit::UseGit("a rename in the index".into()));
        }
        if edits.is_empty() {
            return Ok(IndexCommit::NothingToCommit);
        }
        let mut editor = repo.edit_tree(parent_tree).map_err(|e| e.to_string())?;
        for (location, target) in &edits {
            match target {
                Some((mode, id)) => {
                    let Some(mode) = mode.to_tree_entry_mode() else {
                        return Ok(IndexCommit::UseGit(format!("an unknown mode at {location}")));
                    };
                    editor
                        .upsert(location.as_bstr(), mode.kind(), *id)
                        .map_err(|e| e.to_string())?;
                }
                None => {
                    editor.remove(location.as_bstr()).map_err(|e| e.to_string())?;
                }
            }
        }
        let tree = editor.write().map_err(|e| e.to_string())?.detach();
        if tree == parent_tree {
            return Ok(IndexCommit::NothingToCommit);
        }
        let commit = self
            .commit(&repo, "HEAD", &message, tree, [parent.id])
            .map_err(|e| format!("committing: {e}"))?;
        Ok(IndexCommit::Committed(commit))
    }

    /// A commit of `tree` with `parents`, signed now by the identity `git var` resolved, moving
    /// `reference` (with its reflog) only if it is still at the first parent.
    fn commit(
        &self,
        repo: &gix::Repository,
        reference: &str,
        message: &str,
        tree: gix::ObjectId,
        parents: impl IntoIterator<Item = gix::ObjectId>,
    ) -> Result<String, gix::Error> {
        let now = gix::date::Time::now_local_or_utc();
        let (mut author_time, mut committer_time) = (Default::default(), Default::default());
        let author = self.author.signature(now);
        let committer = self.committer.signature(now);
        let commit = repo.commit_as(
            committer.to_ref(&mut committer_time),
            author.to_ref(&mut author_time),
            reference,
            message,
            tree,
            parents,
        )?;
        Ok(commit.to_string())
    }

    /// `git diff <base> <head>` as [`crate::patch`] renders it (both full object names).
    pub fn patch(&self, base: &str, head: &str) -> Result<crate::patch::Patch, String> {
        let base = parse_id(base).map_err(|e| e.to_string())?;
        let head = parse_id(head).map_err(|e| e.to_string())?;
        crate::patch::between(&self.repo, base, head)
    }

    /// `git worktree add -b <branch> <path> <start>`: `branch` (a short name) must not exist, `path`
    /// must be absent or an empty directory, `start` is a full object name.
    pub fn add_worktree_new_branch(&mut self, path: &Path, branch: &str, start: &str) -> NewWorktree {
        let start_id = match parse_id(start) {
            Ok(id) => id,
            Err(e) => return NewWorktree::UseGit(e.to_string()),
        };
        let tree = match self.checkout_tree(start_id) {
            Ok(tree) => tree,
            Err(why) => return NewWorktree::UseGit(why),
        };
        if let Err(why) = self.not_registered(path) {
            return NewWorktree::UseGit(why);
        }
        let name = format!("refs/heads/{branch}");
        let log = format!("branch: Created from {start}");
        // MustNotExist: a branch that exists (a resumed unit's) is git's to check out as it is.
        if let Err(e) = self
            .repo
            .reference(name.as_str(), start_id, PreviousValue::MustNotExist, log)
        {
            return NewWorktree::UseGit(format!("creating {name}: {e}"));
        }
        match self.check_out_linked(path, &name, tree) {
            Ok(()) => NewWorktree::Added,
            Err(why) => NewWorktree::UseGit(why),
        }
    }

    /// The tree `start` checks out, if an in-process checkout of it is the same as git's: not with
    /// filter drivers (LFS and the like run the user's programs), sparse checkout, per-worktree config
    /// or relative worktree links (git copies or rewrites files for those), nor with submodules.
    fn checkout_tree(&self, start: gix::ObjectId) -> Result<gix::ObjectId, String> {
        let config = self.repo.config_snapshot();
        if config
            .plumbing()
            .sections_by_name("filter")
            .is_some_and(|mut sections| sections.next().is_some())
        {
            return Err("filter drivers are configured".into());
        }
        for key in [
            "core.sparseCheckout",
            "extensions.worktreeConfig",
            "worktree.useRelativePaths",
        ] {
            if config.boolean(key).unwrap_or(false) {
                return Err(format!("{key} is set"));
            }
        }
        let tree = self
            .repo
            .find_commit(start)
            .map_err(|e| format!("reading {start}: {e}"))?
            .tree()
            .map_err(|e| format!("reading the tree of {start}: {e}"))?;
        if tree.find_entry(".gitmodules").is_some() {
            return Err("the tree has submodules".into());
        }
        Ok(tree.id)
    }

    /// Refuses a path that a registration already names (a missing worktree's, say): git decides what
    /// to do with it. One small file per registered worktree is read.
    fn not_registered(&self, path: &Path) -> Result<(), String> {
        let dot_git = canonical_to_be(path)?.join(".git");
        let found = crate::link::registrations(self.repo.common_dir())
            .map_err(|e| format!("listing worktrees: {e}"))?;
        if found.iter().any(|registration| registration.dot_git == dot_git) {
            return Err(format!("a worktree is registered at {}", path.display()));
        }
        Ok(())
    }

    /// Registers the linked worktree at `path` with HEAD on `branch` (a full ref name), checks `tree`
    /// out there and writes its index; on any failure nothing of it is left (the registration and the
    /// files go, an empty directory that was there stays).
    fn check_out_linked(&mut self, path: &Path, branch: &str, tree: gix::ObjectId) -> Result<(), String> {
        let common_dir = self.repo.common_dir().to_path_buf();
        let context = gix_worktree::add::Context::new(&common_dir);
        // Dropped without `persist`, this rolls the registration and the checkout back.
        let prepared = gix_worktree::add::prepare(path, context, Default::default())
            .map_err(|e| format!("registering {}: {e}", path.display()))?;
        std::fs::write(prepared.git_dir().join("HEAD"), format!("ref: {branch}\n"))
            .map_err(|e| format!("writing HEAD: {e}"))?;
        let (state, _) = self
            .repo
            .index_from_tree(&tree)
            .map_err(|e| format!("an index of {tree}: {e}"))?
            .into_parts();
        let mut index = gix::index::File::from_state(state, prepared.git_dir().join("index"));
        let options = self.checkout_options()?;
        let objects = self
            .repo
            .objects
            .clone()
            .into_arc()
            .map_err(|e| format!("the object database: {e}"))?;
        let outcome = gix::worktree::state::checkout(
            &mut index,
            prepared.work_dir(),
            objects,
            &gix::progress::Discard,
            &gix::progress::Discard,
            &AtomicBool::new(false),
            options,
        )
        .map_err(|e| format!("checkout: {e}"))?;
        if !outcome.errors.is_empty() || !outcome.collisions.is_empty() {
            return Err(format!(
                "checkout had {} error(s) and {} collision(s)",
                outcome.errors.len(),
                outcome.collisions.len()
            ));
        }
        index
            .write(Default::default())
            .map_err(|e| format!("writing the index: {e}"))?;
        prepared
            .persist()
            .map_err(|e| format!("unlocking the worktree: {e}"))
    }

    /// The repository's checkout settings (attributes, end-of-line conversion, file system
    /// capabilities), read once.
    fn checkout_options(&mut self) -> Result<gix::worktree::state::checkout::Options, String> {
        if let Some(options) = &self.checkout {
            return Ok(options.clone());
        }
        let source = gix::worktree::stack::state::attributes::Source::IdMapping;
        let mut options = self
            .repo
            .checkout_options(source)
            .map_err(|e| format!("checkout options: {e}"))?;
        options.destination_is_initially_empty = true;
        self.checkout = Some(options.clone());
        Ok(options)
    }

    /// `git worktree remove --force --force <path>` for a linked worktree of this repository: its
    /// files (changes included) and its registration go; its branch stays. Anything that does not
    /// look exactly like one of our linked worktrees is refused, untouched.
    pub fn remove_worktree(&mut self, path: &Path) -> Result<(), String> {
        let path = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let dot_git = path.join(".git");
        let link = std::fs::read_to_string(&dot_git).map_err(|e| format!("{}: {e}", dot_git.display()))?;
        let admin = link
            .trim_end()
            .strip_prefix("gitdir: ")
            .ok_or_else(|| format!("{} is not a linked worktree's .git file", dot_git.display()))?;
        let admin = std::fs::canonicalize(path.join(admin)).map_err(|e| format!("{admin}: {e}"))?;
        let worktrees = std::fs::canonicalize(self.repo.common_dir().join("worktrees"))
            .map_err(|e| format!("the worktrees folder: {e}"))?;
        if admin.parent() != Some(worktrees.as_path()) {
            return Err(format!("{} is not a worktree of this repository", path.display()));
        }
        let back = std::fs::read_to_string(admin.join("gitdir")).map_err(|e| format!("gitdir: {e}"))?;
        if std::fs::canonicalize(admin.join(back.trim_end())).ok().as_deref() != Some(dot_git.as_path()) {
            return Err(format!("the registration {} names another path", admin.display()));
        }
        // git's order: the files, then the registration (a registration without files is pruned).
        std::fs::remove_dir_all(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
        std::fs::remove_dir_all(&admin).map_err(|e| format!("removing {}: {e}", admin.display()))
    }
}

/// `path` with its parent's symbolic links resolved, as git records a worktree's location; `path`
/// itself need not exist yet.
fn canonical_to_be(path: &Path) -> Result<std::path::PathBuf, String> {
    if let Ok(path) = std::fs::canonicalize(path) {
        return Ok(path);
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|parent| parent.join(name))
            .map_err(|e| format!("{}: {e}", parent.display())),
        _ => Err(format!("{} has no final name", path.display())),
    }
}

impl Identity {
    /// Parses `git var GIT_AUTHOR_IDENT`'s output, `Name <email> 1700000000 +0100`.
    pub fn parse_ident(line: &str) -> Option<Identity> {
        let (name, rest) = line.trim().split_once(" <")?;
        let (email, _) = rest.split_once('>')?;
        Some(Identity {
            name: name.trim().to_string(),
            email: email.to_string(),
        })
    }

    fn signature(&self, time: gix::date::Time) -> gix::actor::Signature {
        gix::actor::Signature {
            name: self.name.as_str().into(),
            email: self.email.as_str().into(),
            time,
        }
    }
}

/// git's clean-up of a `-m` message (`--cleanup=whitespace`): trailing white space cut from every
/// line, blank lines at the start and end dropped and runs of them folded into one, a final newline.
/// `None` when nothing is left (git refuses an empty message).
fn clean_message(message: &str) -> Option<String> {
    let mut out = String::new();
    let mut blank_run = false;
    for line in message.lines().map(str::trim_end) {
        if line.is_empty() {
            blank_run = !out.is_empty();
            continue;
        }
        if blank_run {
            out.push('\n');
            blank_run = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    (!out.is_empty()).then_some(out)
}

/// A full object name, or a branch's short name (`u/unit`) peeled to its commit.
fn resolve(repo: &gix::Repository, rev: &str) -> Result<gix::ObjectId, GitError> {
    if let Ok(id) = parse_id(rev) {
        return Ok(id);
    }
    let mut reference = repo
        .find_reference(format!("refs/heads/{rev}").as_str())
        .map_err(|_| GitError::NoSuchBranch(rev.to_string()))?;
    let id = reference.peel_to_id().map_err(in_process_error)?;
    Ok(id.detach())
}

fn parse_id(hex: &str) -> Result<gix::ObjectId, GitError> {
    gix::ObjectId::from_hex(hex.as_bytes())
        .map_err(|e| GitError::InvalidArgument(format!("not a full object name: {hex}: {e}")))
}

fn in_process_error(e: impl std::fmt::Display) -> GitError {
    GitError::Io(std::io::Error::other(format!("in-process git: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_git_var_identities() {
        let id = Identity::parse_ident("Ada Lovelace <ada@example.com> 1700000000 +0100\n");
        assert_eq!(
            id,
            Some(Identity {
                name: "Ada Lovelace".into(),
                email: "ada@example.com".into()
            })
        );
        assert_eq!(
            Identity::parse_ident("orchestrator <orchestrator@localhost> 1 +0000").map(|i| i.email),
            Some("orchestrator@localhost".into())
        );
        assert_eq!(Identity::parse_ident("no email here"), None);
    }
}

#[cfg(test)]
mod worktree_tests {
    use super::*;
    use crate::test_repo::{make_executable, Scratch};

    /// As `Repo` opens it for a repository without any configured identity.
    fn context(repo: &Scratch) -> Context {
        let fallback = Identity {
            name: "orchestrator".into(),
            email: "orchestrator@localhost".into(),
        };
        Context::new(repo.open(), fallback.clone(), fallback, true).expect("context")
    }

    #[test]
    fn status_in_process_sees_what_git_status_sees() {
        let repo = Scratch::new();
        repo.write(".gitignore", "target/\n");
        repo.write("README", "hello\n");
        let base = repo.commit().to_string();
        let mut git = context(&repo);
        let path = repo.root.parent().expect("parent").join("wt");
        assert_eq!(
            git.add_worktree_new_branch(&path, "u/s", &base),
            NewWorktree::Added
        );
        let differs = |git: &Context| git.worktree_differs(&path, &base).expect("status");

        assert!(!differs(&git), "a fresh checkout is clean");
        std::fs::create_dir_all(path.join("target")).expect("mkdir");
        std::fs::write(path.join("target/out"), "build\n").expect("write");
        assert!(!differs(&git), "ignored output is no change");
        std::fs::write(path.join("junk.txt"), "u\n").expect("write");
        assert!(differs(&git), "an untracked file");
        std::fs::remove_file(path.join("junk.txt")).expect("rm");
        std::fs::create_dir_all(path.join("new/dir")).expect("mkdir");
        std::fs::write(path.join("new/dir/f"), "u\n").expect("write");
        assert!(differs(&git), "an untracked directory");
        std::fs::remove_dir_all(path.join("new")).expect("rm");
        std::fs::write(path.join("README"), "edited\n").expect("write");
        assert!(differs(&git), "a modified file");
        std::fs::write(path.join("README"), "hello\n").expect("write");
        assert!(!differs(&git), "edited back");
        std::fs::remove_file(path.join("README")).expect("rm");
        assert!(differs(&git), "a deleted file");
        repo.git_in(&path, &["checkout", "--", "README"]);
        repo.git_in(&path, &["commit", "-q", "--allow-empty", "-m", "moved"]);
        assert!(differs(&git), "HEAD moved");
        repo.git_in(&path, &["reset", "-q", "--hard", &base]);
        assert!(!differs(&git));
        // Staged, with the file itself back as committed: still a change for git status.
        std::fs::write(path.join("README"), "staged\n").expect("write");
        repo.git_in(&path, &["add", "README"]);
        std::fs::write(path.join("README"), "hello\n").expect("write");
        assert!(differs(&git), "a staged change");
        assert!(git.worktree_differs(&repo.root.join("nowhere"), &base).is_err());
    }

    #[test]
    fn remove_refuses_what_is_not_a_linked_worktree_of_this_repository() {
        let repo = Scratch::new();
        repo.write("README", "hello\n");
        let base = repo.commit().to_string();
        let mut git = context(&repo);
        // The main worktree, and a directory that is no worktree at all.
        assert!(git.remove_worktree(&repo.root).is_err());
        let plain = repo.root.parent().expect("parent").join("plain");
        std::fs::create_dir_all(&plain).expect("mkdir");
        assert!(git.remove_worktree(&plain).is_err());
        assert!(plain.exists());
        // Another repository's worktree.
        let other = Scratch::new();
        other.write("f", "x\n");
        let other_base = other.commit().to_string();
        let mut other_git = context(&other);
        let foreign = repo.root.parent().expect("parent").join("foreign");
        assert_eq!(
            other_git.add_worktree_new_branch(&foreign, "u/x", &other_base),
            NewWorktree::Added
        );
        assert!(git.remove_worktree(&foreign).is_err());
        assert!(foreign.join(".git").exists(), "left untouched");
        // Ours, with uncommitted changes: removed like `worktree remove --force --force`.
        let ours = repo.root.parent().expect("parent").join("ours");
        assert_eq!(
            git.add_worktree_new_branch(&ours, "u/o", &base),
            NewWorktree::Added
        );
        std::fs::write(ours.join("scratch"), "x\n").expect("write");
        git.remove_worktree(&ours).expect("remove");
        assert!(!ours.exists());
        assert!(!repo.git(&["worktree", "list"]).contains("ours"));
        assert!(
            repo.git(&["branch", "--list", "u/o"]).contains("u/o"),
            "the branch stays"
        );
        // The branch's reflog names the identity git would use.
        let log = repo.git(&["reflog", "show", "--format=%gn <%ge> %gs", "u/o"]);
        assert!(
            log.starts_with("orchestrator <orchestrator@localhost> branch: Created from"),
            "{log}"
        );
    }

    #[test]
    fn an_index_commit_has_the_tree_git_write_tree_makes() {
        let repo = Scratch::new();
        repo.write("README", "hello\n");
        repo.write("src/a.rs", "a\n");
        repo.write("src/deep/b.rs", "b\n");
        repo.write("gone/x", "x\n");
        repo.write("tool.sh", "echo\n");
        let base = repo.commit().to_string();
        let mut git = context(&repo);
        let path = repo.root.parent().expect("parent").join("wt");
        assert_eq!(
            git.add_worktree_new_branch(&path, "u/c", &base),
            NewWorktree::Added
        );
        let wt = |args: &[&str]| repo.git_in(&path, args);

        // Staged as `git add -A` stages them: every kind of change.
        std::fs::write(path.join("README"), "changed\n").expect("write");
        std::fs::write(path.join("src/deep/new.rs"), "new\n").expect("write");
        std::fs::create_dir_all(path.join("fresh/dir")).expect("mkdir");
        std::fs::write(path.join("fresh/dir/f"), "").expect("write");
        std::fs::remove_dir_all(path.join("gone")).expect("rm");
        std::os::unix::fs::symlink("README", path.join("link")).expect("symlink");
        make_executable(&path.join("tool.sh"));
        wt(&["add", "-A"]);
        let expected_tree = wt(&["write-tree"]).trim().to_string();

        let IndexCommit::Committed(commit) = git.commit_index(&path, "  u/c: title  \n\n\n body \n\n") else {
            panic!("expected an in-process commit");
        };
        assert_eq!(wt(&["rev-parse", "HEAD"]).trim(), commit);
        assert_eq!(wt(&["rev-parse", "u/c"]).trim(), commit);
        assert_eq!(wt(&["rev-parse", "HEAD^{tree}"]).trim(), expected_tree);
        assert_eq!(wt(&["rev-parse", "HEAD^"]).trim(), base);
        assert_eq!(wt(&["log", "-1", "--format=%B"]), "  u/c: title\n\n body\n\n");
        assert_eq!(
            wt(&["log", "-1", "--format=%an <%ae>|%cn <%ce>"]).trim(),
            "orchestrator <orchestrator@localhost>|orchestrator <orchestrator@localhost>"
        );
        assert_eq!(
            wt(&["status", "--porcelain"]),
            "",
            "the index is what was committed"
        );
        let log = wt(&["reflog", "show", "--format=%gs", "u/c"]);
        assert!(
            log.starts_with("commit: ") && log.lines().next().unwrap_or_default().ends_with("u/c: title"),
            "{log}"
        );
        repo.git(&["fsck", "--no-progress", "--strict"]);

        // Nothing staged: nothing written.
        assert_eq!(git.commit_index(&path, "again"), IndexCommit::NothingToCommit);
        assert_eq!(wt(&["rev-parse", "HEAD"]).trim(), commit);
        // What git handles itself.
        assert!(matches!(git.commit_index(&path, " \n\n"), IndexCommit::UseGit(_)));
        std::fs::write(path.join("later.txt"), "l\n").expect("write");
        wt(&["add", "-N", "later.txt"]);
        assert!(matches!(git.commit_index(&path, "ita"), IndexCommit::UseGit(_)));
        wt(&["reset", "-q", "later.txt"]);
        std::fs::write(path.join(".git-merge-probe"), "").expect("write");
        let merge_head =
            std::path::PathBuf::from(wt(&["rev-parse", "--absolute-git-dir"]).trim()).join("MERGE_HEAD");
        std::fs::write(&merge_head, format!("{base}\n")).expect("MERGE_HEAD");
        wt(&["add", "-A"]);
        assert!(matches!(git.commit_index(&path, "merge"), IndexCommit::UseGit(_)));
        std::fs::remove_file(&merge_head).expect("rm");
        wt(&["checkout", "-q", "--detach"]);
        wt(&["add", "-A"]);
        assert!(matches!(
            git.commit_index(&path, "detached"),
            IndexCommit::UseGit(_)
        ));
    }

    #[test]
    fn messages_are_cleaned_as_git_cleans_a_dash_m_message() {
        assert_eq!(clean_message("title").as_deref(), Some("title\n"));
        assert_eq!(
            clean_message("\n\n  a  \n\n\n\nb\t\n\n").as_deref(),
            Some("  a\n\nb\n")
        );
        assert_eq!(clean_message(" \n\t\n"), None);
    }
}
