//! Best of N: N workers build one unit side by side (candidates), each in its own worktree and
//! branch; the runtime verifies each; one candidate goes on — the reviewer's pick among those that
//! passed, the only one that passed, or (none passed) the first — and the others are discarded.
//!
//! The candidate round is the unit's attempt 1. The one that goes on is merged when its review
//! passed; otherwise its own session continues with the feedback, attempts 2..=`unit_attempts`,
//! like any unit. A resumed mission runs a round that had not ended again from the start (new
//! sessions; what the earlier run left is removed first); a unit whose pick had passed review is
//! merged without another round.

use std::path::PathBuf;

use orchestrator_git::Worktree;
use orchestrator_protocol::{Event, Evidence, UnitState, Verdict};

use super::unit::{
    claims_no_change, findings, no_change_feedback, review_feedback, verification_feedback, Earlier, Known,
    Reviewed,
};
use super::worker::{candidate_brief, DEFAULT_UNIT_TOKENS};
use super::{MergeTarget, UnitOutcome, UnitRun, UnitTree, WorkerHooks};
use crate::plan::MAX_CANDIDATES;
use crate::replay::SpecialistReviews;
use crate::roles::{compare_candidates, CandidateView, Pick};
use crate::session::{Session, SessionEnd, Slot};
use crate::verify::all_passed;

/// One candidate of a unit: where it worked, its session, and how its attempt ended.
struct Candidate {
    number: u32,
    branch: String,
    path: PathBuf,
    worktree: Option<Worktree>,
    session: Option<(Session, WorkerHooks)>,
    result: Tried,
}

/// How a candidate's one attempt ended.
enum Tried {
    /// Its commit passed verification.
    Passed {
        commit: String,
        summary: String,
        evidence: Vec<Evidence>,
    },
    /// Out: what its worker would be told.
    Failed { feedback: String },
    /// Not the candidate's doing (a cancel, the budget, the endpoint): the unit stops so.
    Stopped(Box<UnitOutcome>),
}

/// What the unit does after the round: merge the kept candidate, or let it go on with feedback.
enum Judged {
    Passed { summary: String, commit: String },
    Feedback(String),
}

impl UnitRun {
    /// How many candidates build this unit: the plan's `attempts`, else the mission's `--attempts`.
    /// Spawned sub-units build alone: their parent is one worker's split, not a unit to compare.
    pub(super) fn candidates(&self) -> u32 {
        if self.depth > 0 {
            return 1;
        }
        candidates_for(self.unit.attempts, self.mission.config.candidates)
    }

    /// `wanted` candidates, fewer when what is left of the token budget would not pay for them (at
    /// what a unit has cost so far), with a notice; at least 1.
    pub(super) fn affordable(&self, wanted: u32) -> u32 {
        let mission = &self.mission;
        let Some(limit) = mission.rt.budget_tokens else {
            return wanted;
        };
        let remaining = limit.saturating_sub(mission.rt.tokens_spent());
        let per_unit = mission
            .average_unit_tokens()
            .unwrap_or(DEFAULT_UNIT_TOKENS)
            .max(1);
        let can = (remaining / per_unit).clamp(1, u64::from(wanted)) as u32;
        if can < wanted {
            mission.rt.bus.emit(Event::Notice {
                message: format!(
                    "{}: {wanted} candidates would need about {} tokens (about {per_unit} each) and \
                     {remaining} are left of the budget; {can} build it instead",
                    self.unit.id,
                    per_unit.saturating_mul(u64::from(wanted))
                ),
            });
        }
        can
    }

    /// The unit's life with `n` candidates: the round, the choice, then a merge or the kept
    /// candidate's further attempts. Every candidate's worktree is gone when it returns.
    pub(super) async fn execute_candidates(
        &self,
        target: &MergeTarget,
        slot: &mut Slot,
        n: u32,
    ) -> UnitOutcome {
        self.discard_leftovers().await;
        let base = target.head();
        self.state(UnitState::Running, 1, Some(format!("best of {n}")));
        // Each candidate takes its own slot; holding this one meanwhile could starve them.
        slot.release();
        let rounds = (1..=n).map(|number| self.run_candidate(number, n, &base));
        let mut candidates = futures::future::join_all(rounds).await;
        let (outcome, kept) = self.decide(slot, target, &base, &mut candidates).await;
        for candidate in &candidates {
            // A kept candidate whose review passed, stopped before its merge: `resume` merges its
            // commit, so its branch stays until then.
            let keep_branch = outcome.interrupted && kept == Some(candidate.number);
            self.discard(candidate, keep_branch).await;
        }
        outcome
    }

    /// One candidate's attempt: its worktree and session, its answer committed, then verified.
    async fn run_candidate(&self, number: u32, of: u32, base: &str) -> Candidate {
        let mission = &self.mission;
        let mut candidate = Candidate {
            number,
            branch: mission.candidate_branch(&self.unit.id, number),
            path: mission.candidates_path(&self.unit.id).join(number.to_string()),
            worktree: None,
            session: None,
            result: Tried::Failed {
                feedback: String::new(),
            },
        };
        candidate.result = match Slot::acquire(&mission.rt).await {
            Some(mut slot) => self.try_candidate(&mut candidate, of, base, &mut slot).await,
            None => Tried::Stopped(Box::new(UnitOutcome::interrupted(&self.unit))),
        };
        let (passed, commit, detail) = match &candidate.result {
            Tried::Passed { commit, summary, .. } => (true, Some(commit.clone()), summary.clone()),
            Tried::Failed { feedback } => (false, None, feedback.clone()),
            Tried::Stopped(_) => return candidate,
        };
        mission.rt.bus.emit(Event::CandidateFinished {
            unit: self.unit.id.clone(),
            candidate: number,
            of,
            passed,
            commit,
            detail: Some(crate::prompts::cut(detail.trim(), 2_000)).filter(|d| !d.is_empty()),
        });
        candidate
    }

    async fn try_candidate(&self, candidate: &mut Candidate, of: u32, base: &str, slot: &mut Slot) -> Tried {
        let mission = &self.mission;
        let rt = &mission.rt;
        let number = candidate.number;
        let out = |feedback: String| Tried::Failed { feedback };
        let worktree = match mission
            .repo
            .add_worktree_on_branch(&candidate.path, &candidate.branch, base)
            .await
        {
            Ok(worktree) => worktree,
            Err(e) => return out(format!("Its worktree could not be created: {e}")),
        };
        candidate.worktree = Some(worktree.clone());
        let tree = UnitTree::ready(worktree.clone());
        // A fresh session for every round, also for a round run again after a resume: the log's
        // length names this run (no run of the mission appends to it after another starts).
        let run = mission.replay.last_seq.map_or(0, |seq| seq + 1);
        let key = format!("worker:{}:c{number}:{run}", self.unit.id);
        let brief = candidate_brief(mission, &self.unit, number, of);
        let (mut session, hooks) = match self.worker_session(&tree, key, false, brief, Some((number, of))) {
            Ok(made) => made,
            Err(e) => return out(format!("Its session could not start: {e}")),
        };
        hooks.runs_from(base);
        let end = session.run(rt, &hooks, slot).await;
        let summary = match end {
            SessionEnd::Answered(text) => text,
            SessionEnd::Finished => String::new(),
            SessionEnd::TurnLimit => {
                let feedback = format!(
                    "Your attempt ran out of turns ({} model turns) before you answered; nothing was \
                     verified. Continue where you stopped, finish the unit with fewer, larger steps, then \
                     answer with a short summary.",
                    mission.config.role(orchestrator_protocol::Role::Worker).max_turns
                );
                candidate.session = Some((session, hooks));
                return out(feedback);
            }
            SessionEnd::Cancelled => return Tried::Stopped(Box::new(UnitOutcome::interrupted(&self.unit))),
            SessionEnd::BudgetSpent => {
                return Tried::Stopped(Box::new(UnitOutcome::out_of_budget(&self.unit)))
            }
            SessionEnd::EndpointFailed(e) => {
                return Tried::Stopped(Box::new(UnitOutcome::endpoint_failed(&self.unit, &e)))
            }
            SessionEnd::ModelFailed(e) => return out(format!("Its model failed: {e}")),
        };
        let result = self.verify_candidate(&worktree, base, &session, summary).await;
        candidate.session = Some((session, hooks));
        result
    }

    /// Commits a candidate's work and runs the build and tests on it.
    async fn verify_candidate(
        &self,
        worktree: &Worktree,
        base: &str,
        session: &Session,
        summary: String,
    ) -> Tried {
        let mission = &self.mission;
        let rt = &mission.rt;
        let out = |feedback: String| Tried::Failed { feedback };
        let title = rt.mask(&format!("{}: {}", self.unit.id, self.unit.title));
        if let Err(e) = worktree.commit_all(&title).await {
            return out(format!("Its changes could not be committed: {e}"));
        }
        let commit = match worktree.head().await {
            Ok(commit) => commit,
            Err(e) => return out(format!("Its commit could not be read: {e}")),
        };
        if self.changed_nothing(base, &commit).await && !claims_no_change(&summary) {
            return out(no_change_feedback(session));
        }
        let evidence = match mission.verifier.verify(worktree, &rt.cancel).await {
            Ok(evidence) => evidence,
            Err(e) => return out(format!("Verification could not run: {e}")),
        };
        if rt.cancel.is_cancelled() {
            return Tried::Stopped(Box::new(UnitOutcome::interrupted(&self.unit)));
        }
        for e in &evidence {
            rt.bus.emit(Event::EvidenceRecorded {
                unit: Some(self.unit.id.clone()),
                evidence: e.clone(),
            });
        }
        if all_passed(&evidence) {
            Tried::Passed {
                commit,
                summary,
                evidence,
            }
        } else {
            let broken = super::unit::broken_tests(mission, &evidence).await;
            out(verification_feedback(&evidence, Some(worktree.path()), &broken))
        }
    }

    /// After the round: which candidate goes on, how it was judged, and the unit's outcome. Also
    /// returns the kept candidate's number.
    async fn decide(
        &self,
        slot: &mut Slot,
        target: &MergeTarget,
        base: &str,
        candidates: &mut [Candidate],
    ) -> (UnitOutcome, Option<u32>) {
        let rt = &self.mission.rt;
        if let Some(stop) = candidates.iter().find_map(|c| match &c.result {
            Tried::Stopped(outcome) => Some(outcome.as_ref().clone()),
            _ => None,
        }) {
            return (stop, None);
        }
        if !slot.reacquire(&rt.cancel).await {
            return (UnitOutcome::interrupted(&self.unit), None);
        }
        let (index, judged) = match self.choose(slot, base, candidates).await {
            Ok(chosen) => chosen,
            Err(outcome) => return (*outcome, None),
        };
        let kept = candidates[index].number;
        // The others go now: their worktrees are no use to the one that goes on.
        for (i, candidate) in candidates.iter().enumerate() {
            if i != index {
                self.discard(candidate, false).await;
            }
        }
        let candidate = &mut candidates[index];
        let outcome = match judged {
            Judged::Passed { summary, commit } => {
                // The pick passed review; the `[review] extra` specialists, then the project's
                // `before_merge` hook, still have their say.
                let veto = match &candidate.worktree {
                    Some(worktree) => match self
                        .after_pick_review(slot, base, candidate, worktree, &commit)
                        .await
                    {
                        Ok(veto) => veto,
                        Err(outcome) => return (*outcome, Some(kept)),
                    },
                    None => None,
                };
                match veto {
                    Some(feedback) => self.go_on(slot, target, base, candidate, feedback).await,
                    None => {
                        let reviewed = Reviewed {
                            summary,
                            commit: Some(commit),
                        };
                        self.merge_reviewed(slot, target, &candidate.branch, reviewed)
                            .await
                    }
                }
            }
            Judged::Feedback(feedback) => self.go_on(slot, target, base, candidate, feedback).await,
        };
        (outcome, Some(kept))
    }

    /// The specialists' verdicts, then the `before_merge` hook's, on a pick that passed its review:
    /// the first fail or veto is the feedback its worker goes on from.
    async fn after_pick_review(
        &self,
        slot: &mut Slot,
        base: &str,
        candidate: &Candidate,
        worktree: &Worktree,
        commit: &str,
    ) -> Result<Option<String>, Box<UnitOutcome>> {
        let evidence = match &candidate.result {
            Tried::Passed { evidence, .. } => evidence.clone(),
            _ => Vec::new(),
        };
        // A pick is judged in one run: a resumed mission builds the candidates again unless the
        // log shows the pick through every judge (see `Resume::cleared`).
        let none_known = SpecialistReviews::default();
        let known = Known {
            review: None,
            specialists: &none_known,
            merge_hook: None,
        };
        self.after_review(
            slot,
            &candidate.branch,
            base,
            worktree,
            commit,
            1,
            &evidence,
            known,
        )
        .await
    }

    /// Which candidate goes on (its index), and the judgement of its attempt 1.
    async fn choose(
        &self,
        slot: &mut Slot,
        base: &str,
        candidates: &[Candidate],
    ) -> Result<(usize, Judged), Box<UnitOutcome>> {
        let passing: Vec<usize> = (0..candidates.len())
            .filter(|i| matches!(candidates[*i].result, Tried::Passed { .. }))
            .collect();
        match passing.as_slice() {
            [] => {
                self.picked(
                    &candidates[0],
                    &[],
                    "none passed verification; the first goes on alone with its findings".into(),
                    true,
                );
                let feedback = match &candidates[0].result {
                    Tried::Failed { feedback } => feedback.clone(),
                    _ => String::new(),
                };
                Ok((0, Judged::Feedback(feedback)))
            }
            [only] => {
                let candidate = &candidates[*only];
                let numbers = [candidate.number];
                self.picked(
                    candidate,
                    &numbers,
                    "the only candidate that passed verification".into(),
                    true,
                );
                let Tried::Passed {
                    commit,
                    summary,
                    evidence,
                } = &candidate.result
                else {
                    unreachable!("filtered to passing")
                };
                let Some(worktree) = &candidate.worktree else {
                    return Err(Box::new(
                        self.failed("a passing candidate has no worktree", String::new()),
                    ));
                };
                self.state(UnitState::Reviewing, 1, None);
                let feedback = self
                    .review_verified(slot, base, worktree, commit, 1, None, evidence, None)
                    .await?;
                Ok((*only, judge(feedback, summary, commit)))
            }
            _ => self.compare(slot, base, candidates, &passing).await,
        }
    }

    /// Two or more passed: one reviewer compares them and keeps one.
    async fn compare(
        &self,
        slot: &mut Slot,
        base: &str,
        candidates: &[Candidate],
        passing: &[usize],
    ) -> Result<(usize, Judged), Box<UnitOutcome>> {
        let mission = &self.mission;
        self.state(UnitState::Reviewing, 1, None);
        let mut views = Vec::new();
        for &i in passing {
            let candidate = &candidates[i];
            let (
                Tried::Passed {
                    summary, evidence, ..
                },
                Some(worktree),
            ) = (&candidate.result, &candidate.worktree)
            else {
                continue;
            };
            let diff = worktree
                .diff_since(base)
                .await
                .unwrap_or_else(|e| format!("(diff unavailable: {e})"));
            views.push(CandidateView {
                number: candidate.number,
                summary: summary.clone(),
                diff,
                evidence: evidence.clone(),
            });
        }
        let failed: Vec<u32> = candidates
            .iter()
            .filter(|c| !matches!(c.result, Tried::Passed { .. }))
            .map(|c| c.number)
            .collect();
        let root = mission.candidates_path(&self.unit.id);
        let pick = match compare_candidates(mission, &self.unit, &root, &views, &failed, slot).await {
            Ok(pick) => pick,
            Err(end) => return Err(Box::new(self.review_stopped(end))),
        };
        let Pick {
            candidate: number,
            review,
            reasons,
            by_runtime,
        } = pick;
        // The hook only takes a passing number, and its fallback is one; checked again all the same:
        // a candidate that failed verification is never merged.
        let Some(index) = passing.iter().copied().find(|i| candidates[*i].number == number) else {
            return Err(Box::new(self.failed(
                format!("the comparing review kept candidate {number}, which did not pass verification"),
                String::new(),
            )));
        };
        let numbers: Vec<u32> = passing.iter().map(|i| candidates[*i].number).collect();
        self.picked(&candidates[index], &numbers, reasons, by_runtime);
        let Tried::Passed { commit, summary, .. } = &candidates[index].result else {
            unreachable!("found among the passing")
        };
        mission.rt.bus.emit(Event::ReviewFinished {
            unit: Some(self.unit.id.clone()),
            attempt: 1,
            review: review.clone(),
            commit: Some(commit.clone()),
            reviewer: None,
        });
        let feedback = match review.verdict {
            Verdict::Pass => None,
            Verdict::Fail => Some(review_feedback(&review)),
        };
        Ok((index, judge(feedback, summary, commit)))
    }

    /// How a review session that ended without a verdict ends the unit (as for a single review).
    fn review_stopped(&self, end: SessionEnd) -> UnitOutcome {
        match end {
            SessionEnd::Cancelled => UnitOutcome::interrupted(&self.unit),
            SessionEnd::BudgetSpent => UnitOutcome::out_of_budget(&self.unit),
            SessionEnd::EndpointFailed(e) => UnitOutcome::endpoint_failed(&self.unit, &e),
            end => self.failed(
                format!("the comparing review could not run: {end}"),
                String::new(),
            ),
        }
    }

    /// Records which candidate goes on, and why.
    fn picked(&self, candidate: &Candidate, passing: &[u32], reasons: String, by_runtime: bool) {
        let commit = match &candidate.result {
            Tried::Passed { commit, .. } => Some(commit.clone()),
            _ => None,
        };
        self.mission.rt.bus.emit(Event::CandidatePicked {
            unit: self.unit.id.clone(),
            candidate: candidate.number,
            passing: passing.to_vec(),
            commit,
            reasons,
            by_runtime,
        });
    }

    /// The kept candidate's further attempts (2..=`unit_attempts`) in its own session and worktree.
    async fn go_on(
        &self,
        slot: &mut Slot,
        target: &MergeTarget,
        base: &str,
        candidate: &mut Candidate,
        feedback: String,
    ) -> UnitOutcome {
        let attempts = self.mission.config.unit_attempts;
        let (Some(worktree), Some((session, hooks)), true) = (
            candidate.worktree.clone(),
            candidate.session.as_mut(),
            attempts > 1,
        ) else {
            let diff = match &candidate.worktree {
                Some(worktree) => worktree.diff_since(base).await.ok(),
                None => None,
            };
            let first_line = feedback.lines().next().unwrap_or_default();
            let mut outcome = self.failed(
                format!(
                    "did not pass after 1 attempt (candidate {}): {first_line}",
                    candidate.number
                ),
                String::new(),
            );
            outcome.findings = Some(findings(&feedback, diff.as_deref()));
            return outcome;
        };
        session.push_user(feedback);
        let tree = UnitTree::ready(worktree);
        match self
            .work_until_reviewed(slot, base, &tree, session, hooks, 2, &Earlier::default())
            .await
        {
            Ok(reviewed) => {
                self.merge_reviewed(slot, target, &candidate.branch, reviewed)
                    .await
            }
            Err(outcome) => *outcome,
        }
    }

    /// Removes a candidate's worktree (once: a loser is discarded as soon as the pick is made, and
    /// again with the rest when the unit ends); its branch goes with the run's finished branches.
    async fn discard(&self, candidate: &Candidate, keep_branch: bool) {
        let repo = &self.mission.repo;
        if candidate.path.exists() {
            if let Err(e) = repo.remove_worktree(&candidate.path).await {
                tracing::warn!("cannot remove worktree {}: {e}", candidate.path.display());
            }
            let _ = tokio::fs::remove_dir(&candidate.path).await;
        }
        if !keep_branch {
            self.mission.branch_done(candidate.branch.clone());
        }
    }

    /// What an earlier run's candidates of this unit left (a round that had not ended): worktrees and
    /// branches, removed before the round starts again, so no candidate starts from old work.
    pub(super) async fn discard_leftovers(&self) {
        let mission = &self.mission;
        let folder = mission.candidates_path(&self.unit.id);
        if let Ok(registered) = mission.repo.list_worktrees().await {
            for path in registered.iter().filter(|p| p.starts_with(&folder)) {
                if let Err(e) = mission.repo.remove_worktree(path).await {
                    tracing::warn!("cannot remove worktree {}: {e}", path.display());
                }
            }
        }
        let _ = tokio::fs::remove_dir_all(&folder).await;
        // Git lists by whole path components: every unit branch, then this unit's candidates.
        let unit_branches = format!("{}/u/", mission.branch_root);
        let prefix = format!("{}@c", mission.branch(&self.unit.id));
        let listed = mission.repo.branches_with_prefix(&unit_branches).await;
        let listed = listed.map(|all| {
            all.into_iter()
                .filter(|b| b.starts_with(&prefix))
                .collect::<Vec<_>>()
        });
        match listed {
            Ok(branches) if !branches.is_empty() => {
                if let Err(e) = mission.repo.delete_branches(&branches).await {
                    tracing::warn!("cannot delete the earlier candidates of {}: {e}", self.unit.id);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot list the earlier candidates of {}: {e}", self.unit.id),
        }
    }
}

/// A candidate's attempt 1 as judged: passed (no feedback), or the feedback to go on with.
fn judge(feedback: Option<String>, summary: &str, commit: &str) -> Judged {
    match feedback {
        None => Judged::Passed {
            summary: summary.to_string(),
            commit: commit.to_string(),
        },
        Some(feedback) => Judged::Feedback(feedback),
    }
}

/// How many candidates build a planned unit: what the person chose (`--attempts`, `[limits]
/// candidates`), raised for a risky unit by the plan's `attempts`, never lowered by it. A small
/// model under a grammar fills every optional field, and wrote `"attempts": 1` into a plan that the
/// person had asked to build best of 3.
fn candidates_for(planned: Option<u32>, chosen: u32) -> u32 {
    planned.map_or(chosen, |n| n.max(chosen)).clamp(1, MAX_CANDIDATES)
}

#[cfg(test)]
mod count_tests {
    use super::*;

    #[test]
    fn a_plan_raises_the_candidates_of_a_unit_and_never_lowers_them() {
        assert_eq!(candidates_for(None, 3), 3);
        assert_eq!(candidates_for(Some(1), 3), 3, "the person's best of 3 stands");
        assert_eq!(candidates_for(Some(4), 1), 4, "a risky unit gets more");
        assert_eq!(candidates_for(Some(0), 0), 1);
        assert_eq!(candidates_for(Some(u32::MAX), 1), MAX_CANDIDATES, "bounded");
    }
}
