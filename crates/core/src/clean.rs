//! `orchestrator clean`: removes what missions left in the repository — `orchestrator/<mission>/...`
//! branches and worktrees under `.orchestrator/worktrees/` — and says what it removed. The mission
//! records (the store) stay, so `status`, `logs` and `report` still work.
//!
//! An interrupted mission's branches hold the work `resume` continues, so they stay unless `--all`
//! asks for them too. Clean holds the repository lock while it works, so no mission starts or runs
//! meanwhile.
//!
//! A mission whose units went to `orchestrator worker` processes (`--workers external`) also left
//! refs on the shared remote (`refs/heads/orchestrator/<mission>/…`: the integration head and each
//! holder's unit branch) and its rows in the store's work queue with the transcripts its workers
//! relayed their events through (in the mission's log by now): those go too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use orchestrator_git::{Push, Repo};
use orchestrator_store::{MissionRecord, MissionStatus, Store};

use crate::error::{EngineError, Result};
use crate::lock::RepoLock;
use crate::mission::{open_store_at, STATE_DIR};

/// Every mission's refs live under this prefix; the segment after it is the mission id.
const BRANCH_PREFIX: &str = "orchestrator/";

/// What `clean` did, or (with `dry_run`) would do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanReport {
    pub branches: Vec<String>,
    pub worktrees: Vec<PathBuf>,
    /// Refs removed from (or, dry, found on) `--workers external` missions' shared remotes.
    pub remote_refs: Vec<String>,
    /// Rows of the store's work queue removed (not counted in a dry run).
    pub queue_rows: usize,
    /// Missions left alone, with why and how to go on.
    pub kept: Vec<String>,
    pub dry_run: bool,
}

impl CleanReport {
    /// The report as a person reads it.
    pub fn render(&self) -> String {
        let verb = if self.dry_run { "would remove" } else { "removed" };
        let mut lines = Vec::new();
        for worktree in &self.worktrees {
            lines.push(format!("{verb} worktree {}", worktree.display()));
        }
        for branch in &self.branches {
            lines.push(format!("{verb} branch {branch}"));
        }
        for name in &self.remote_refs {
            lines.push(format!("{verb} {name} on the mission's remote"));
        }
        if self.queue_rows > 0 {
            lines.push(format!(
                "{verb} {} unit(s) of the store's work queue and their relayed transcripts",
                self.queue_rows
            ));
        }
        if self.branches.is_empty()
            && self.worktrees.is_empty()
            && self.remote_refs.is_empty()
            && self.queue_rows == 0
        {
            lines.push("nothing to clean: no branch or worktree of a finished mission is left".into());
        }
        lines.extend(self.kept.iter().cloned());
        lines.join("\n")
    }
}

/// Cleans the repository at `root`. `all` also removes interrupted missions' work.
pub async fn clean(root: &Path, dry_run: bool, all: bool) -> Result<CleanReport> {
    let repo = Repo::discover(root)
        .await
        .map_err(|_| EngineError::Usage(format!("{} is not inside a git repository", root.display())))?;
    let state = repo.root().join(STATE_DIR);
    // Without a state folder no mission has run here: nothing of ours to lock or read, but stray
    // branches (a deleted .orchestrator) are still ours to list.
    let _lock = if state.is_dir() {
        Some(RepoLock::acquire(&state, "clean")?)
    } else {
        None
    };
    let store = open_store_at(repo.root(), false).ok();
    let records = store.as_ref().and_then(|s| s.missions().ok()).unwrap_or_default();
    let statuses: BTreeMap<String, MissionStatus> =
        records.iter().map(|m| (m.id.clone(), m.status)).collect();
    let remotes: BTreeMap<String, String> = records
        .iter()
        .filter_map(|m| Some((m.id.clone(), remote_of(m)?)))
        .collect();
    let branches = repo
        .branches_with_prefix(BRANCH_PREFIX)
        .await
        .map_err(|e| EngineError::Other(format!("cannot list the orchestrator branches: {e}")))?;
    let mut by_mission: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for branch in branches {
        let mission = branch[BRANCH_PREFIX.len()..]
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        by_mission.entry(mission).or_default().push(branch);
    }
    let worktree_root = state.join("worktrees");
    let mut missions: BTreeSet<String> = by_mission.keys().cloned().collect();
    missions.extend(subfolders(&worktree_root));
    missions.extend(remotes.keys().cloned());

    let mut report = CleanReport {
        dry_run,
        ..CleanReport::default()
    };
    let registered = repo.list_worktrees().await.unwrap_or_default();
    for mission in missions {
        let status = statuses.get(&mission).copied();
        if status.is_some_and(MissionStatus::is_unfinished) && !all {
            report.kept.push(format!(
                "kept mission {mission} ({}): `orchestrator resume` continues it; `orchestrator clean --all` removes its work",
                status.map(|s| s.as_str()).unwrap_or("unfinished")
            ));
            continue;
        }
        let folder = worktree_root.join(&mission);
        let worktrees = worktrees_under(&registered, &folder);
        let branches = by_mission.remove(&mission).unwrap_or_default();
        if !dry_run {
            remove(&repo, &worktrees, &branches).await?;
            let _ = tokio::fs::remove_dir_all(&folder).await;
        }
        report.worktrees.extend(worktrees);
        report.branches.extend(branches);
        if let (Some(remote), Some(store)) = (remotes.get(&mission), &store) {
            clean_external(&repo, store, &mission, remote, &mut report).await;
        }
    }
    Ok(report)
}

/// At the end of a finished `--workers external` mission whose branches are not kept: the
/// workers' unit refs on its remote go (their commits are merged, or the mission gave them up), as
/// the local unit branches do, and its integration ref too when `integration_gone` (the user's
/// branch holds the result, so the local integration branch went). The queue's rows stay for
/// `status` until `orchestrator clean`. What cannot be removed is said, never an error.
pub(crate) async fn settle_remote(
    repo: &Repo,
    record: &MissionRecord,
    integration_gone: bool,
) -> Option<String> {
    let remote = remote_of(record)?;
    let mission = &record.id;
    let prefix = format!("refs/heads/{BRANCH_PREFIX}{mission}/");
    let integration = crate::ticket::integration_ref(mission);
    let note = match repo.remote_refs_with_prefix(&remote, &prefix).await {
        Ok(refs) => {
            let gone: Vec<(String, String)> = refs
                .into_iter()
                .filter(|(name, _)| name.starts_with(&format!("{prefix}w/")) || (integration_gone && *name == integration))
                .collect();
            match repo.delete_remote_refs(&remote, &gone).await {
                Ok(Push::Done) => None,
                Ok(Push::Rejected(why)) => Some(format!(
                    "some of the mission's refs on its remote moved and were kept ({}); `orchestrator clean` removes the rest",
                    crate::prompts::cut(&why, 300)
                )),
                Err(e) => Some(format!(
                    "the mission's refs on its remote were kept ({e}); `orchestrator clean` removes them"
                )),
            }
        }
        Err(e) => Some(format!(
            "the mission's refs on its remote were kept, as it could not be read ({e}); `orchestrator clean` removes them"
        )),
    };
    note.map(|n| without_password(&n, &remote))
}

/// The shared remote of a mission whose units went to external workers.
fn remote_of(record: &MissionRecord) -> Option<String> {
    let external = record.options.get("workers").and_then(|w| w.as_str()) == Some("external");
    let remote = record.options.get("remote").and_then(|r| r.as_str())?;
    (external && !remote.is_empty()).then(|| remote.to_string())
}

/// Removes a finished `--workers external` mission's refs on its remote and its work queue. What
/// cannot be reached is said and left, never an error: the local clean-up has been done.
async fn clean_external(repo: &Repo, store: &Store, mission: &str, remote: &str, report: &mut CleanReport) {
    let prefix = format!("refs/heads/{BRANCH_PREFIX}{mission}/");
    let kept_at = report.kept.len();
    match repo.remote_refs_with_prefix(remote, &prefix).await {
        Ok(refs) if report.dry_run => report.remote_refs.extend(refs.into_iter().map(|(name, _)| name)),
        Ok(refs) => match repo.delete_remote_refs(remote, &refs).await {
            Ok(Push::Done) => report.remote_refs.extend(refs.into_iter().map(|(name, _)| name)),
            Ok(Push::Rejected(refused)) => report.kept.push(format!(
                "kept some refs of mission {mission} on its remote: they moved since they were listed ({})",
                crate::prompts::cut(&refused, 300)
            )),
            Err(e) => report
                .kept
                .push(format!("kept the refs of mission {mission} on its remote: {e}")),
        },
        Err(e) => report.kept.push(format!(
            "kept the refs of mission {mission} on its remote, which could not be read: {e}"
        )),
    }
    // git may quote the remote's URL, password and all.
    for line in &mut report.kept[kept_at..] {
        *line = without_password(line, remote);
    }
    if report.dry_run {
        return;
    }
    match store.forget_work(mission) {
        Ok(rows) => report.queue_rows += rows,
        Err(e) => report
            .kept
            .push(format!("kept the work queue of mission {mission}: {e}")),
    }
}

/// `text` with the password of `remote` (a URL's `user:password@`) masked.
fn without_password(text: &str, remote: &str) -> String {
    match reqwest::Url::parse(remote)
        .ok()
        .and_then(|u| u.password().map(str::to_string))
    {
        Some(password) if !password.is_empty() => text.replace(&password, "***"),
        _ => text.to_string(),
    }
}

/// Removes one mission's worktrees and branches, as `clean --all` would, for `task --abandon`. The
/// caller holds the repository lock.
pub(crate) async fn clean_mission(repo: &Repo, mission: &str) -> Result<CleanReport> {
    let prefix = format!("{BRANCH_PREFIX}{mission}/");
    let folder = repo.root().join(STATE_DIR).join("worktrees").join(mission);
    // A kill while git wrote one of the mission's refs leaves a `.lock` file that would make the
    // branch deletion fail; no process writes them now (the lock is held), so they are stale.
    repo.repair_after_kill(&prefix, &folder).await?;
    let branches = repo
        .branches_with_prefix(&prefix)
        .await
        .map_err(|e| EngineError::Other(format!("cannot list the branches of mission {mission}: {e}")))?;
    let registered = repo.list_worktrees().await.unwrap_or_default();
    let worktrees = worktrees_under(&registered, &folder);
    remove(repo, &worktrees, &branches).await?;
    let _ = tokio::fs::remove_dir_all(&folder).await;
    Ok(CleanReport {
        branches,
        worktrees,
        ..CleanReport::default()
    })
}

fn worktrees_under(registered: &[PathBuf], folder: &Path) -> Vec<PathBuf> {
    registered
        .iter()
        .filter(|p| p.starts_with(folder))
        .cloned()
        .collect()
}

async fn remove(repo: &Repo, worktrees: &[PathBuf], branches: &[String]) -> Result<()> {
    for worktree in worktrees {
        repo.remove_worktree(worktree).await.map_err(|e| {
            EngineError::Other(format!("cannot remove the worktree {}: {e}", worktree.display()))
        })?;
    }
    if !branches.is_empty() {
        repo.delete_branches(branches)
            .await
            .map_err(|e| EngineError::Other(format!("cannot delete the branches: {e}")))?;
    }
    Ok(())
}

fn subfolders(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect()
}
