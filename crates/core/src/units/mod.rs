//! Phase 1: the DAG scheduler and the life of one unit — worker session, runtime verification,
//! stage 1 review, merge (with a conflict resolver when needed). Spawned children run through the
//! same path and merge into their parent's branch.
//!
//! `dag` schedules, `unit` is one unit's life, `worker` what its worker is told and `spawn`,
//! `merge` the merge queue, `tree` the worktree made in the background.

mod candidates;
mod dag;
mod merge;
mod offered;
mod tree;
mod unit;
mod worker;

use orchestrator_protocol::{UnitSpec, UnitState};

pub use dag::run_dag;
pub use merge::MergeTarget;
pub(crate) use merge::LEAD_LOST as LEAD_LOST_NOTE;
use merge::{merge_into, LEAD_LOST};
use tree::UnitTree;
use unit::UnitRun;
use worker::{spawn_spec, worker_brief, WorkerHooks};
#[cfg(test)]
use {dag::next_ready, unit::review_feedback, unit::Resume};

#[derive(Debug, Clone)]
pub struct UnitOutcome {
    pub unit: UnitSpec,
    /// Passed, Failed or Skipped.
    pub state: UnitState,
    /// The worker's own summary.
    pub summary: String,
    pub reason: Option<String>,
    /// What the last attempt of a failed unit was told (verification output, review issues): the
    /// next round's retry starts from it.
    pub findings: Option<String>,
    /// Stopped by a cancel: not an ending, the unit continues on `resume`.
    pub interrupted: bool,
}

/// Builds `unit` in `worktree` (checked out at `base`) until it passes verification and review,
/// leaving the merge to whoever asked: an external worker's part of a unit (issue #20). Returns the
/// worker's summary and the commit that passed, or how the unit ended otherwise.
pub(crate) async fn build_for_commander(
    mission: std::sync::Arc<crate::shared::Mission>,
    unit: UnitSpec,
    round: u32,
    base: &str,
    worktree: orchestrator_git::Worktree,
) -> Result<(String, String), UnitOutcome> {
    let run = UnitRun {
        mission: mission.clone(),
        unit,
        // Offered units are the plan's (or follow-ups): the top of their tree. Sub-units they spawn
        // run here, on the worker, and merge into this unit's worktree.
        depth: 0,
        round,
    };
    let Some(mut slot) = crate::session::Slot::acquire(&mission.rt).await else {
        return Err(UnitOutcome::interrupted(&run.unit));
    };
    let wanted = run.candidates();
    let n = if wanted > 1 { run.affordable(wanted) } else { 1 };
    if n > 1 {
        // Best of N here too: the kept candidate's reviewed commit is handed back, not merged.
        let target = MergeTarget::hand_back(worktree, mission.branch(&run.unit.id), base.to_string());
        let outcome = run.execute_candidates(&target, &mut slot, n).await;
        return match outcome.state {
            UnitState::Passed => Ok((outcome.summary, target.head())),
            _ => Err(outcome),
        };
    }
    let tree = UnitTree::ready(worktree.clone());
    let reviewed = run
        .build_until_reviewed(&mut slot, base, &tree, None)
        .await
        .map_err(|outcome| *outcome)?;
    let commit = match reviewed.commit {
        Some(commit) => commit,
        None => worktree
            .head()
            .await
            .map_err(|e| run.failed(e.to_string(), String::new()))?,
    };
    Ok((reviewed.summary, commit))
}

/// The start of the reason of a unit stopped because the model endpoint kept failing.
pub const ENDPOINT_FAILED: &str = "the model endpoint kept failing";

/// The reason of a unit stopped by a spent token budget (mission or role): resumable, not failed.
pub const BUDGET_SPENT: &str = "the token budget is spent";

impl UnitOutcome {
    fn out_of_budget(unit: &UnitSpec) -> Self {
        UnitOutcome {
            reason: Some(BUDGET_SPENT.into()),
            ..UnitOutcome::interrupted(unit)
        }
    }

    fn endpoint_failed(unit: &UnitSpec, error: &str) -> Self {
        UnitOutcome {
            reason: Some(format!("{ENDPOINT_FAILED}: {error}")),
            ..UnitOutcome::interrupted(unit)
        }
    }

    /// The model endpoint kept failing for this unit; the mission stops, resumable.
    pub fn endpoint_stop(&self) -> Option<&str> {
        self.reason
            .as_deref()
            .filter(|r| self.interrupted && r.starts_with(ENDPOINT_FAILED))
    }

    pub fn out_of_budget_stop(&self) -> bool {
        self.interrupted && self.reason.as_deref() == Some(BUDGET_SPENT)
    }

    fn interrupted(unit: &UnitSpec) -> Self {
        UnitOutcome {
            unit: unit.clone(),
            state: UnitState::Failed,
            summary: String::new(),
            reason: Some("interrupted".into()),
            findings: None,
            interrupted: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_protocol::{Review, Verdict};
    use std::collections::HashMap;

    fn resume(state: UnitState, attempt: u32, verdict: Option<Verdict>, commit: Option<&str>) -> Resume {
        let review = |verdict| Review {
            verdict,
            summary: String::new(),
            issues: Vec::new(),
        };
        Resume {
            state,
            attempt,
            reviews: verdict.map(|v| (attempt, review(v))).into_iter().collect(),
            reviewed_commits: commit.map(|c| (attempt, c.to_string())).into_iter().collect(),
            merge_hooks: Default::default(),
            specialist_reviews: Default::default(),
        }
    }

    #[test]
    fn a_resumed_unit_merges_the_commit_its_review_judged() {
        let passed = resume(UnitState::Reviewing, 2, Some(Verdict::Pass), Some("c0ffee"));
        assert_eq!(passed.passed_review(false), Some(Some("c0ffee".to_string())));
        let merging = resume(UnitState::Merging, 1, Some(Verdict::Pass), Some("beef"));
        assert_eq!(merging.passed_review(false), Some(Some("beef".to_string())));
        // A log from before commits were recorded: the unit still is not built again.
        let old_log = resume(UnitState::Reviewing, 1, Some(Verdict::Pass), None);
        assert_eq!(old_log.passed_review(false), Some(None));
        // A failed or missing review, or a unit still being built: built (and reviewed) again.
        assert_eq!(
            resume(UnitState::Reviewing, 1, Some(Verdict::Fail), Some("x")).passed_review(false),
            None
        );
        assert_eq!(
            resume(UnitState::Reviewing, 1, None, None).passed_review(false),
            None
        );
        assert_eq!(
            resume(UnitState::Running, 1, Some(Verdict::Pass), Some("x")).passed_review(false),
            None
        );
    }

    #[test]
    fn a_resumed_unit_merges_only_past_the_before_merge_hook() {
        let verdict = |exit_code| orchestrator_protocol::HookRun {
            hook: orchestrator_protocol::HookKind::BeforeMerge,
            unit: Some("t1".into()),
            attempt: Some(2),
            command: "check".into(),
            exit_code: Some(exit_code),
            timed_out: false,
            duration_ms: 1,
            output_tail: String::new(),
        };
        let mut reviewed = resume(UnitState::Reviewing, 2, Some(Verdict::Pass), Some("c0ffee"));
        // The hook never finished: the attempt is checked again (its review is known).
        assert_eq!(reviewed.passed_review(true), None);
        reviewed.merge_hooks.insert(2, verdict(1));
        assert_eq!(reviewed.passed_review(true), None, "a recorded veto is not lost");
        reviewed.merge_hooks.insert(2, verdict(0));
        assert_eq!(reviewed.passed_review(true), Some(Some("c0ffee".to_string())));
        // A veto of an earlier attempt says nothing of this one.
        let mut later = resume(UnitState::Reviewing, 3, Some(Verdict::Pass), Some("beef"));
        later.merge_hooks.insert(2, verdict(1));
        assert_eq!(later.passed_review(true), None);
        assert_eq!(later.passed_review(false), Some(Some("beef".to_string())));
    }

    #[test]
    fn a_resumed_unit_merges_only_past_every_specialist_of_its_attempt() {
        let review = |verdict| Review {
            verdict,
            summary: String::new(),
            issues: Vec::new(),
        };
        let extra = ["security-reviewer".to_string()];
        let key = |attempt: u32| (attempt, extra[0].clone());
        let mut reviewed = resume(UnitState::Reviewing, 2, Some(Verdict::Pass), Some("c0ffee"));
        // Killed between the unit's own review and the specialist's: the specialist is asked.
        assert_eq!(reviewed.cleared(false, &extra), None);
        assert_eq!(reviewed.cleared(false, &[]), Some(Some("c0ffee".to_string())));
        reviewed
            .specialist_reviews
            .insert(key(2), (review(Verdict::Fail), None));
        assert_eq!(
            reviewed.cleared(false, &extra),
            None,
            "a recorded fail is never merged past"
        );
        reviewed
            .specialist_reviews
            .insert(key(2), (review(Verdict::Pass), None));
        assert_eq!(reviewed.cleared(false, &extra), Some(Some("c0ffee".to_string())));
        // A pass of an earlier attempt says nothing of this one.
        let mut later = resume(UnitState::Reviewing, 3, Some(Verdict::Pass), Some("beef"));
        later
            .specialist_reviews
            .insert(key(2), (review(Verdict::Pass), None));
        assert_eq!(later.cleared(false, &extra), None);
        // A unit that reached the merge had passed them all.
        let merging = resume(UnitState::Merging, 1, Some(Verdict::Pass), Some("beef"));
        assert_eq!(merging.cleared(false, &extra), Some(Some("beef".to_string())));
    }

    fn unit(id: &str, deps: &[&str]) -> UnitSpec {
        UnitSpec {
            id: id.into(),
            title: id.into(),
            description: "d".into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            files: vec![],
            attempts: None,
        }
    }

    #[test]
    fn ready_units_wait_for_passed_dependencies_and_skip_failed_ones() {
        let mut waiting = vec![unit("a", &[]), unit("b", &["a"]), unit("c", &["x"])];
        let mut done = HashMap::new();
        let (ready, blocked) = next_ready(&mut waiting, &done);
        assert_eq!(ready.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), vec!["a"]);
        assert!(blocked.is_empty());
        done.insert(
            "x".to_string(),
            UnitOutcome {
                unit: unit("x", &[]),
                state: UnitState::Failed,
                summary: String::new(),
                reason: None,
                findings: None,
                interrupted: false,
            },
        );
        done.insert(
            "a".to_string(),
            UnitOutcome {
                unit: unit("a", &[]),
                state: UnitState::Passed,
                summary: String::new(),
                reason: None,
                findings: None,
                interrupted: false,
            },
        );
        let (ready, blocked) = next_ready(&mut waiting, &done);
        assert_eq!(ready[0].id, "b");
        assert_eq!(blocked[0].id, "c");
        assert!(waiting.is_empty());
    }

    #[tokio::test]
    async fn a_worktree_made_in_the_background_gates_the_tools() {
        let (dir, repo) = crate::test_repo::committed_repo().await;
        let base = repo.head_commit().await.expect("head").expect("a commit");

        let path = dir.path().join(".orchestrator/units/u1");
        let tree = UnitTree::start(repo.clone(), path.clone(), "u/u1".into(), base.clone())
            .await
            .expect("started");
        // The directory exists at once, so a toolbox can be rooted there.
        assert!(path.is_dir());
        tree.gate().await.expect("the worktree was made");
        assert!(tree.is_ready());
        let worktree = tree.get().await.expect("worktree");
        assert_eq!(worktree.head().await.expect("head"), base);
        assert!(path.join("README").exists());

        // A failure reaches both the gate and the unit, with the reason.
        let bad = UnitTree::start(
            repo,
            dir.path().join(".orchestrator/units/u2"),
            "u/u2".into(),
            "no-such-commit".into(),
        )
        .await
        .expect("started");
        let gate = bad.gate().await.expect_err("no worktree");
        assert!(gate.contains("could not create the unit's worktree"), "{gate}");
        assert!(bad.get().await.is_err());
    }

    #[test]
    fn review_feedback_lists_issues() {
        let review = Review {
            verdict: Verdict::Fail,
            summary: "broken".into(),
            issues: vec![orchestrator_protocol::ReviewIssue {
                title: "t".into(),
                description: "d".into(),
                file: Some("f.rs".into()),
            }],
        };
        let text = review_feedback(&review);
        assert!(text.contains("broken") && text.contains("- t (f.rs): d"));
    }
}
