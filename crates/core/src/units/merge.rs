//! The merge queue: where finished units merge (the integration worktree, or a spawning parent's
//! worktree), one merge at a time per target, with a conflict resolver when git cannot merge alone.

use std::sync::Arc;

use orchestrator_git::{BranchMerge, MergeOutcome, Worktree};
use orchestrator_protocol::{Event, Role, UnitSpec};

use super::{BUDGET_SPENT, ENDPOINT_FAILED};
use crate::session::{Session, SessionEnd, SessionSpec, Slot};
use crate::shared::{toolbox, Mission};
use crate::verify::{self, all_passed};

/// Where finished units merge: the integration worktree, or a spawning parent's worktree. The lock is
/// the merge queue: one merge at a time into one target.
pub struct MergeTarget {
    pub worktree: Worktree,
    /// The branch checked out in `worktree`.
    pub branch: String,
    /// The commit the branch is at. The merge queue is the only writer while the target is in use, so
    /// it is kept here instead of asking git for every unit's base and every merge.
    head: std::sync::Mutex<String>,
    /// The commit whose files and index `worktree` has. Behind `head` after in-process merges, until
    /// [`MergeTarget::check_out`].
    checked_out: std::sync::Mutex<String>,
    /// Clean merges may be made in-process, without the worktree (see `Repo::merge_into_branch`): only
    /// for the mission's integration worktree, which nobody works in while units merge and which a
    /// resumed run resets to its branch anyway. A parent unit's worktree keeps git merges: the parent
    /// goes on working in it, and a resumed parent would commit a lagging checkout as a change.
    in_process: bool,
    /// Nothing is merged: the reviewed commit is only handed back, as the target's head. An external
    /// worker's unit built best of N ends so: the commander merges what the worker pushes.
    hand_back: bool,
    lock: tokio::sync::Mutex<()>,
}

impl MergeTarget {
    /// `head` must be the commit checked out in `worktree`.
    pub fn new(worktree: Worktree, branch: String, head: String) -> Self {
        MergeTarget {
            worktree,
            branch,
            checked_out: std::sync::Mutex::new(head.clone()),
            head: std::sync::Mutex::new(head),
            in_process: false,
            hand_back: false,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// A target that merges nothing: a unit's reviewed commit becomes its head (see
    /// [`MergeTarget::hand_back`]). `worktree` is not written.
    pub fn hand_back(worktree: Worktree, branch: String, head: String) -> Self {
        MergeTarget {
            hand_back: true,
            ..MergeTarget::new(worktree, branch, head)
        }
    }

    /// The mission's integration target: like [`MergeTarget::new`], with in-process clean merges.
    /// Call [`MergeTarget::check_out`] before using the worktree's files.
    pub fn integration(worktree: Worktree, branch: String, head: String) -> Self {
        MergeTarget {
            in_process: true,
            ..MergeTarget::new(worktree, branch, head)
        }
    }

    /// The commit the target is at: the base for a new unit.
    pub fn head(&self) -> String {
        self.head.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_head(&self, commit: String) {
        *self.head.lock().unwrap_or_else(|p| p.into_inner()) = commit;
    }

    /// Brings the worktree's files and index up to the branch after in-process merges: one `git reset
    /// --hard` for any number of merges, and nothing when there were none.
    pub async fn check_out(&self) -> Result<(), orchestrator_git::GitError> {
        let head = self.head();
        let current = self.checked_out.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if current == head {
            return Ok(());
        }
        self.worktree.check_out(&head).await?;
        *self.checked_out.lock().unwrap_or_else(|p| p.into_inner()) = head;
        Ok(())
    }

    /// After a merge in the worktree: its files are the head's.
    fn set_checked_out_head(&self) {
        *self.checked_out.lock().unwrap_or_else(|p| p.into_inner()) = self.head();
    }
}

/// The merge commit's message: the unit's id and title, never with the API key in it.
/// How a merge refused for a lost lead begins: the unit is interrupted, not failed.
pub(crate) const LEAD_LOST: &str = "not merged: this commander lost the mission's lead";

fn merge_message(mission: &Mission, unit: &UnitSpec) -> String {
    mission.rt.mask(&format!("Merge {}: {}", unit.id, unit.title))
}

/// Merges a reviewed unit (`theirs`: its reviewed commit, or its branch) into its target. Conflicts go to a resolver session, whose merge is
/// verified again; after the attempts run out the target is put back as it was.
pub(super) async fn merge_into(
    mission: &Arc<Mission>,
    unit: &UnitSpec,
    theirs: &str,
    target: &MergeTarget,
    slot: &mut Slot,
) -> Result<String, String> {
    let _queue = target.lock.lock().await;
    // One writer of the integration branch: the commander holding the mission's lead. Checked with
    // the queue held, so no merge starts after the lead was found lost.
    if let Some(why) = mission.rt.bus.lead_lost() {
        return Err(format!("{LEAD_LOST} ({why})"));
    }
    if target.hand_back {
        let commit = mission
            .repo
            .rev_parse(theirs)
            .await
            .map_err(|e| format!("cannot read the reviewed commit {theirs}: {e}"))?;
        target.set_head(commit.clone());
        return Ok(commit);
    }
    let before = target.head();
    let message = merge_message(mission, unit);
    if target.in_process {
        match mission
            .repo
            .merge_into_branch(&target.branch, &before, theirs, &message)
            .await
        {
            Ok(BranchMerge::Merged(commit)) => {
                target.set_head(commit.clone());
                return Ok(commit);
            }
            Ok(BranchMerge::AlreadyMerged) => return Ok(before),
            Ok(BranchMerge::UseGit(why)) => tracing::debug!(unit = %unit.id, %why, "merging with git"),
            Err(e) => tracing::warn!(unit = %unit.id, "in-process merge failed, merging with git: {e}"),
        }
    }
    merge_in_worktree(mission, unit, theirs, target, slot, &before, &message).await
}

/// `git merge` in the target's worktree (checked out first), with the conflict resolver on conflicts.
async fn merge_in_worktree(
    mission: &Arc<Mission>,
    unit: &UnitSpec,
    theirs: &str,
    target: &MergeTarget,
    slot: &mut Slot,
    before: &str,
    message: &str,
) -> Result<String, String> {
    target.check_out().await.map_err(|e| e.to_string())?;
    let worktree = &target.worktree;
    let merged = worktree.merge(theirs, message).await;
    let result = match merged {
        Ok(MergeOutcome::Merged(commit)) => Ok(commit),
        Ok(MergeOutcome::Conflict(conflicts)) => {
            let result = resolve_conflicts(mission, unit, theirs, worktree, conflicts, slot).await;
            if result.is_err() {
                if worktree.merge_in_progress().await.unwrap_or(false) {
                    let _ = worktree.abort_merge().await;
                }
                let _ = worktree.reset_hard(before).await;
            }
            result
        }
        Err(e) => Err(e.to_string()),
    };
    match &result {
        Ok(commit) => target.set_head(commit.clone()),
        // Normally still `before`; after a failed undo, whatever git says it is now.
        Err(_) => match worktree.head().await {
            Ok(head) => target.set_head(head),
            Err(e) => tracing::warn!("cannot read the head of {}: {e}", target.branch),
        },
    }
    target.set_checked_out_head();
    result
}

/// `theirs` is what is being merged: the unit's reviewed commit (or its branch).
async fn resolve_conflicts(
    mission: &Arc<Mission>,
    unit: &UnitSpec,
    theirs: &str,
    worktree: &Worktree,
    mut conflicts: Vec<String>,
    slot: &mut Slot,
) -> Result<String, String> {
    let rt = &mission.rt;
    let tools = Arc::new(
        toolbox(worktree.path(), Role::ConflictResolver, &mission.config).map_err(|e| e.to_string())?,
    );
    let attempts = mission.config.merge_attempts;
    let mut first = format!(
        "Merging unit {} ({}) stopped on conflicts in: {}.\n\nThe unit's description:\n{}\n\nResolve every conflict.",
        unit.id,
        unit.title,
        conflicts.join(", "),
        unit.description
    );
    let mut session: Option<Session> = None;
    for attempt in 1..=attempts {
        rt.bus.emit(Event::MergeConflict {
            unit: unit.id.clone(),
            files: conflicts.clone(),
            attempt,
        });
        let session = session.get_or_insert_with(|| {
            let spec = SessionSpec::new(
                format!("resolver:{}:{}", unit.id, mission.run_index),
                Role::ConflictResolver,
                mission.config.role(Role::ConflictResolver).clone(),
                tools.clone(),
                std::mem::take(&mut first),
            );
            Session::new(rt, spec.unit(&unit.id))
        });
        match session.run(rt, &crate::session::NoHooks, slot).await {
            SessionEnd::Answered(_) | SessionEnd::TurnLimit | SessionEnd::Finished => {}
            SessionEnd::Cancelled => return Err("cancelled".into()),
            SessionEnd::BudgetSpent => return Err(BUDGET_SPENT.into()),
            SessionEnd::EndpointFailed(e) => return Err(format!("{ENDPOINT_FAILED}: {e}")),
            other => return Err(format!("the conflict resolver failed: {other}")),
        }
        let before_conclude = worktree.head().await.map_err(|e| e.to_string())?;
        let commit = match worktree.conclude_merge().await {
            Ok(commit) => commit,
            Err(e) => {
                session.push_user(format!(
                    "The merge cannot be concluded yet: {e}\nFix it, then answer again."
                ));
                continue;
            }
        };
        let evidence = mission
            .verifier
            .verify(worktree, &rt.cancel)
            .await
            .map_err(|e| e.to_string())?;
        for e in &evidence {
            rt.bus.emit(Event::EvidenceRecorded {
                unit: Some(unit.id.clone()),
                evidence: e.clone(),
            });
        }
        if all_passed(&evidence) {
            return Ok(commit);
        }
        // Undo the merge commit and merge again so the resolver sees the conflicts with the evidence.
        worktree
            .reset_hard(&before_conclude)
            .await
            .map_err(|e| e.to_string())?;
        match worktree
            .merge(theirs, &merge_message(mission, unit))
            .await
            .map_err(|e| e.to_string())?
        {
            MergeOutcome::Merged(commit) => return Ok(commit),
            MergeOutcome::Conflict(files) => conflicts = files,
        }
        session.push_user(format!(
            "Your resolution merged, but the build or tests then failed:\n{}\nThe merge was redone; conflicts are in: {}. \
             Resolve them again so that the build and tests pass.",
            verify::describe(&evidence),
            conflicts.join(", ")
        ));
    }
    Err(format!(
        "merge conflicts in {} could not be resolved in {attempts} attempt(s)",
        conflicts.join(", ")
    ))
}
