//! `orchestrator clean`: removes what missions left in the repository — `orchestrator/<mission>/...`
//! branches and worktrees under `.orchestrator/worktrees/` — and says what it removed. The mission
//! records (the store) stay, so `status`, `logs` and `report` still work.
//!
//! An interrupted mission's branches hold the work `resume` continues, so they stay unless `--all`
//! asks for them too. Clean holds the repository lock while it works, so no mission starts or runs
//! meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use orchestrator_git::Repo;
use orchestrator_store::MissionStatus;

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
        if self.branches.is_empty() && self.worktrees.is_empty() {
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
    let statuses = mission_statuses(repo.root());
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
    }
    Ok(report)
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

/// Each recorded mission's status; empty without a store.
fn mission_statuses(root: &Path) -> BTreeMap<String, MissionStatus> {
    let Ok(store) = open_store_at(root, false) else {
        return BTreeMap::new();
    };
    store
        .missions()
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.id, m.status))
        .collect()
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
