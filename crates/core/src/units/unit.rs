//! The life of one unit: its worker session, runtime verification, stage 1 review, then the merge.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use orchestrator_git::Worktree;
use orchestrator_protocol::{Event, HookKind, HookRun, Review, Role, UnitSpec, UnitState, Verdict};

use super::{
    merge_into, spawn_spec, worker_brief, MergeTarget, UnitOutcome, UnitTree, WorkerHooks, BUDGET_SPENT,
    ENDPOINT_FAILED, LEAD_LOST,
};
use crate::hooks::{self, HookCall};
use crate::replay::SpecialistReviews;
use crate::roles::review_unit;
use crate::session::{Session, SessionEnd, SessionSpec, Slot};
use crate::shared::{unit_toolbox, Mission};
use crate::verify::{self, all_passed};

pub(super) struct UnitRun {
    pub(super) mission: Arc<Mission>,
    pub(super) unit: UnitSpec,
    pub(super) depth: u32,
    pub(super) round: u32,
}

/// What an earlier run already judged of one attempt: its review, the specialists' verdicts (looked
/// up by attempt) and the `before_merge` hook's verdict.
#[derive(Clone, Copy)]
pub(super) struct Known<'a> {
    pub(super) review: Option<&'a Review>,
    pub(super) specialists: &'a SpecialistReviews,
    pub(super) merge_hook: Option<&'a HookRun>,
}

/// What passed verification and review: the worker's summary and the commit that was judged.
#[derive(Default)]
pub(super) struct Reviewed {
    pub(super) summary: String,
    pub(super) commit: Option<String>,
}

/// Where an earlier run of the mission left this unit.
#[derive(Clone)]
pub(super) struct Resume {
    pub(super) state: UnitState,
    pub(super) attempt: u32,
    pub(super) reviews: std::collections::BTreeMap<u32, Review>,
    pub(super) reviewed_commits: std::collections::BTreeMap<u32, String>,
    /// The `before_merge` hook's verdicts by attempt.
    pub(super) merge_hooks: std::collections::BTreeMap<u32, HookRun>,
    /// The `[review] extra` specialists' verdicts by attempt.
    pub(super) specialist_reviews: SpecialistReviews,
}

/// What an earlier run judged of a unit's attempts: reviews and `before_merge` verdicts by attempt.
#[derive(Debug, Default)]
pub(super) struct Earlier {
    pub(super) reviews: std::collections::BTreeMap<u32, Review>,
    pub(super) merge_hooks: std::collections::BTreeMap<u32, HookRun>,
    pub(super) specialist_reviews: SpecialistReviews,
}

impl From<Resume> for Earlier {
    fn from(resume: Resume) -> Self {
        Earlier {
            reviews: resume.reviews,
            merge_hooks: resume.merge_hooks,
            specialist_reviews: resume.specialist_reviews,
        }
    }
}

impl Resume {
    /// Whether the earlier run got this unit through review — and the `before_merge` hook, when one
    /// is configured (`merge_hook`) — so it is merged, not built again; and the commit that review
    /// judged, where the log has it. A veto, or a hook that did not finish, sends the unit through
    /// its attempt again (verification runs again; the known review and verdict are not repeated).
    pub(super) fn passed_review(&self, merge_hook: bool) -> Option<Option<String>> {
        let hook_cleared = !merge_hook || self.merge_hooks.get(&self.attempt).is_some_and(HookRun::passed);
        let passed = self.state == UnitState::Merging
            || (self.state == UnitState::Reviewing
                && hook_cleared
                && self
                    .reviews
                    .get(&self.attempt)
                    .is_some_and(|rev| rev.verdict == Verdict::Pass));
        passed.then(|| self.reviewed_commits.get(&self.attempt).cloned())
    }

    /// [`Resume::passed_review`], and every specialist in `extra` passed the same attempt: a
    /// recorded specialist fail (or one never asked) sends the unit through its attempt again.
    pub(super) fn cleared(&self, merge_hook: bool, extra: &[String]) -> Option<Option<String>> {
        let specialists_passed = self.state == UnitState::Merging
            || extra.iter().all(|name| {
                self.specialist_reviews
                    .get(&(self.attempt, name.clone()))
                    .is_some_and(|(review, _)| review.verdict == Verdict::Pass)
            });
        self.passed_review(merge_hook).filter(|_| specialists_passed)
    }
}

impl UnitRun {
    pub(super) fn state(&self, state: UnitState, attempt: u32, detail: Option<String>) {
        self.mission
            .set_state(&self.unit, self.round, state, attempt, detail);
    }

    pub(super) fn failed(&self, reason: impl Into<String>, summary: String) -> UnitOutcome {
        UnitOutcome {
            unit: self.unit.clone(),
            state: UnitState::Failed,
            summary,
            reason: Some(reason.into()),
            findings: None,
            interrupted: self.mission.rt.cancel.is_cancelled(),
        }
    }

    pub(super) async fn execute(&self, target: &MergeTarget) -> UnitOutcome {
        let rt = &self.mission.rt;
        // A paused mission starts no new unit; units already running (and their children) go on.
        if !rt.control.wait_for_dispatch(&rt.cancel).await {
            return UnitOutcome::interrupted(&self.unit);
        }
        let Some(mut slot) = Slot::acquire(rt).await else {
            return UnitOutcome::interrupted(&self.unit);
        };
        if let Some(offers) = self.mission.offers.clone() {
            return self.execute_offered(&offers, target, &mut slot).await;
        }
        let record = self.mission.replay.units.get(&self.unit.id).cloned();
        let resume = record.as_ref().map(|r| Resume {
            state: r.state,
            attempt: r.attempt,
            reviews: r.reviews.clone(),
            reviewed_commits: r.reviewed_commits.clone(),
            merge_hooks: r.merge_hooks.clone(),
            specialist_reviews: r.specialist_reviews.clone(),
        });
        let extra = &self.mission.config.review_extra;
        // Best of N, unless an earlier run's pick already passed review (then it is merged below).
        let candidates = self.candidates();
        let merge_hook = self.mission.config.hooks.get(HookKind::BeforeMerge).is_some();
        if candidates > 1
            && resume
                .as_ref()
                .and_then(|r| r.cleared(merge_hook, extra))
                .is_none()
        {
            let n = self.affordable(candidates);
            if n > 1 {
                return self.execute_candidates(target, &mut slot, n).await;
            }
        }
        let branch = self.mission.branch(&self.unit.id);
        let path = self.mission.worktree_path(&self.unit.id);
        let prepared = self.prepare(
            target,
            record.as_ref().and_then(|r| r.prepared.clone()),
            &branch,
            &path,
        );
        let (base, tree) = match prepared.await {
            Ok(ready) => ready,
            Err(e) => {
                return self.failed(
                    format!("could not create the unit's worktree: {e}"),
                    String::new(),
                )
            }
        };
        let outcome = self
            .build_and_merge(&mut slot, target, &branch, &base, &tree, resume)
            .await;
        // A worktree that could not be made was reported in the outcome; its directory still goes.
        if let (true, Ok(worktree)) = (outcome.interrupted, tree.get().await) {
            // Keep the work on the unit's branch so `resume` finds it; only the worktree goes.
            let message = format!("{}: work in progress (interrupted)", self.unit.id);
            if let Err(e) = worktree.commit_all(&message).await {
                tracing::warn!("cannot save the interrupted work of {}: {e}", self.unit.id);
                return outcome; // leave the worktree in place rather than lose the work
            }
        }
        // A unit can end before its worktree was needed (merged from a review before a restart, or
        // failed early): the background `worktree add` must be over before the removal, or it would
        // register the worktree again afterwards and leave it behind the mission's cleanup.
        let _ = tree.get().await;
        if let Err(e) = self.mission.repo.remove_worktree(&path).await {
            tracing::warn!("cannot remove worktree {}: {e}", path.display());
        }
        // The empty directory made for a worktree that git did not create (a no-op otherwise).
        let _ = tokio::fs::remove_dir(&path).await;
        if !outcome.interrupted {
            // Deleted with all the others at the end of the run: one git process instead of one each.
            self.mission.branch_done(branch);
            if candidates > 1 {
                // An earlier run's candidates, when this run merged their pick or built alone.
                self.discard_leftovers().await;
            }
        }
        outcome
    }

    /// The unit's branch and worktree: recorded (as the write-ahead step) before the branch is made, and
    /// re-used when an earlier run left them. A new unit's worktree is made in the background (see
    /// [`UnitTree`]), except under OpenCode, whose sessions use the directory from their first moment.
    async fn prepare(
        &self,
        target: &MergeTarget,
        prepared: Option<(String, String)>,
        branch: &str,
        path: &Path,
    ) -> Result<(String, UnitTree), String> {
        let repo = &self.mission.repo;
        let base = match prepared {
            Some((_, base)) => {
                // An earlier run made the branch, and maybe left the worktree (a crash or a kill).
                let registered = self
                    .mission
                    .registered_worktrees()
                    .await
                    .map_err(|e| e.to_string())?;
                let found = repo
                    .open_listed_worktree(path, registered)
                    .await
                    .map_err(|e| e.to_string())?;
                if let Some(worktree) = found {
                    if worktree.merge_in_progress().await.map_err(|e| e.to_string())? {
                        worktree.abort_merge().await.map_err(|e| e.to_string())?;
                    }
                    return Ok((base, UnitTree::ready(worktree)));
                }
                base
            }
            // Never prepared, so there is no branch or worktree of this unit to pick up.
            None => {
                let base = target.head();
                self.mission.rt.bus.emit(Event::UnitPrepared {
                    unit: self.unit.id.clone(),
                    branch: branch.to_string(),
                    base: base.clone(),
                });
                if self.mission.rt.runner.waits_for_worktree() {
                    let tree =
                        UnitTree::start(repo.clone(), path.to_path_buf(), branch.to_string(), base.clone())
                            .await?;
                    return Ok((base, tree));
                }
                base
            }
        };
        let worktree = repo
            .add_worktree_on_branch(path, branch, &base)
            .await
            .map_err(|e| e.to_string())?;
        Ok((base, UnitTree::ready(worktree)))
    }

    /// The commit to merge: the reviewed one. Anything committed on the unit's branch after it was
    /// seen by no verification or review, so it is left out and the event log says so.
    async fn reviewed_commit(&self, branch: &str, reviewed: &str) -> String {
        let head = self.mission.repo.rev_parse(&format!("refs/heads/{branch}")).await;
        if head.as_deref().is_ok_and(|head| head != reviewed) {
            let head = head.unwrap_or_default();
            self.mission.rt.bus.emit(Event::Notice {
                message: format!(
                    "{}: its branch moved after review (to {}); only the reviewed {} is merged",
                    self.unit.id,
                    crate::verify::short(&head),
                    crate::verify::short(reviewed)
                ),
            });
        }
        reviewed.to_string()
    }

    async fn build_and_merge(
        &self,
        slot: &mut Slot,
        target: &MergeTarget,
        branch: &str,
        base: &str,
        tree: &UnitTree,
        resume: Option<Resume>,
    ) -> UnitOutcome {
        // A unit that passed review before a restart is not reviewed again: the commit that review
        // judged is merged (a log from before commits were recorded: the branch).
        let merge_hook = self.mission.config.hooks.get(HookKind::BeforeMerge).is_some();
        let extra = &self.mission.config.review_extra;
        let reviewed = if let Some(commit) = resume.as_ref().and_then(|r| r.cleared(merge_hook, extra)) {
            Reviewed {
                summary: String::new(),
                commit,
            }
        } else {
            match self.build_until_reviewed(slot, base, tree, resume).await {
                Ok(reviewed) => reviewed,
                Err(outcome) => return *outcome,
            }
        };
        self.merge_reviewed(slot, target, branch, reviewed).await
    }

    /// Merges what passed review into the target: the reviewed commit (or, from an old log, `branch`).
    pub(super) async fn merge_reviewed(
        &self,
        slot: &mut Slot,
        target: &MergeTarget,
        branch: &str,
        reviewed: Reviewed,
    ) -> UnitOutcome {
        let Reviewed { summary, commit } = reviewed;
        self.state(UnitState::Merging, 0, None);
        let theirs = match &commit {
            Some(commit) => self.reviewed_commit(branch, commit).await,
            None => branch.to_string(),
        };
        match merge_into(&self.mission, &self.unit, &theirs, target, slot).await {
            // Not merged: the integration branch is the new leader's to write.
            Err(reason) if reason.starts_with(LEAD_LOST) => UnitOutcome {
                reason: Some(reason),
                ..UnitOutcome::interrupted(&self.unit)
            },
            Ok(commit) => {
                self.mission.rt.bus.emit(Event::Merged {
                    unit: self.unit.id.clone(),
                    into: target.branch.clone(),
                    commit,
                });
                UnitOutcome {
                    unit: self.unit.clone(),
                    state: UnitState::Passed,
                    summary,
                    reason: None,
                    findings: None,
                    interrupted: false,
                }
            }
            Err(reason) if reason == BUDGET_SPENT => UnitOutcome::out_of_budget(&self.unit),
            Err(reason) if reason.starts_with(ENDPOINT_FAILED) => UnitOutcome {
                reason: Some(reason),
                ..UnitOutcome::interrupted(&self.unit)
            },
            Err(reason) => self.failed(reason, summary),
        }
    }

    /// The worker's loop: build, verify, review; feedback goes back to the same session.
    pub(super) async fn build_until_reviewed(
        &self,
        slot: &mut Slot,
        base: &str,
        tree: &UnitTree,
        resume: Option<Resume>,
    ) -> Result<Reviewed, Box<UnitOutcome>> {
        let mission = &self.mission;
        let fail = |reason: String| Box::new(self.failed(reason, String::new()));
        let can_spawn = self.depth < mission.config.max_depth
            && mission
                .config
                .role(Role::Worker)
                .tools
                .as_ref()
                .is_none_or(|tools| tools.iter().any(|t| t == "spawn"));
        let brief = worker_brief(mission, &self.unit, can_spawn);
        let key = format!("worker:{}", self.unit.id);
        let (mut session, hooks) = self
            .worker_session(tree, key, can_spawn, brief, None)
            .map_err(fail)?;
        let first = resume.as_ref().map(|r| r.attempt.max(1)).unwrap_or(1);
        let earlier = resume.map(Earlier::from).unwrap_or_default();
        self.work_until_reviewed(slot, base, tree, &mut session, &hooks, first, &earlier)
            .await
    }

    /// A worker session in `tree` under `key` (its transcript's), with `spawn` when `can_spawn`.
    /// `candidate`: (its number, of how many) when it is one of a unit's best-of-N candidates.
    pub(super) fn worker_session(
        &self,
        tree: &UnitTree,
        key: String,
        can_spawn: bool,
        brief: String,
        candidate: Option<(u32, u32)>,
    ) -> Result<(Session, WorkerHooks), String> {
        let mission = &self.mission;
        let tools = unit_toolbox(&tree.path, &mission.config, &self.unit).map_err(|e| e.to_string())?;
        let head = super::worker::mission_head(mission);
        let shared_head = if brief.starts_with(&head) { head.len() } else { 0 };
        let extra = if can_spawn { vec![spawn_spec()] } else { Vec::new() };
        let hooks = WorkerHooks {
            mission: mission.clone(),
            unit: self.unit.clone(),
            depth: self.depth,
            round: self.round,
            tree: tree.clone(),
            spawned: std::sync::atomic::AtomicBool::new(false),
            candidate,
            run_start: std::sync::Mutex::new(None),
            rechecks: Default::default(),
        };
        let spec = SessionSpec::new(
            key,
            Role::Worker,
            mission.config.role(Role::Worker).clone(),
            Arc::new(tools),
            brief,
        )
        .unit(&self.unit.id)
        .shared_head(shared_head)
        .extra_tools(extra)
        .after_write(
            mission
                .verifier
                .test
                .clone()
                .filter(|_| mission.config.verify_after_write),
        )
        .tools_ready((!tree.is_ready()).then(|| tree.gate()));
        Ok((Session::new(&mission.rt, spec), hooks))
    }

    /// Attempts `first..=limits.unit_attempts` of `session`: each answer is committed, verified and
    /// reviewed; feedback goes back to the same session. `earlier`: what an earlier run judged.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn work_until_reviewed(
        &self,
        slot: &mut Slot,
        base: &str,
        tree: &UnitTree,
        session: &mut Session,
        hooks: &WorkerHooks,
        first: u32,
        earlier: &Earlier,
    ) -> Result<Reviewed, Box<UnitOutcome>> {
        let mission = &self.mission;
        let rt = &mission.rt;
        let fail = |reason: String| Box::new(self.failed(reason, String::new()));
        let attempts = mission.config.unit_attempts;
        let mut last_feedback = String::new();
        // The commit whose verification failed last, with what the worker was told.
        let mut failed_verification: Option<(String, String)> = None;
        // Where each run starts: a new worktree at the base, one made earlier (a resumed unit, a
        // best-of-N candidate going on alone) at its own last commit.
        let mut run_start = match tree.is_ready() {
            true => match tree.get().await {
                Ok(worktree) => worktree.head().await.ok(),
                Err(_) => None,
            },
            false => Some(base.to_string()),
        };
        for attempt in first..=attempts {
            self.state(UnitState::Running, attempt, None);
            if let Some(start) = &run_start {
                hooks.runs_from(start);
            }
            let end = session.run(rt, hooks, slot).await;
            // From here on the worktree itself is needed (it is ready unless its creation failed).
            let worktree = tree
                .get()
                .await
                .map_err(|e| fail(format!("could not create the unit's worktree: {e}")))?;
            let summary = match end {
                SessionEnd::Answered(text) => text,
                // Half-done work is not reviewed: the attempt fails, and the next one continues it.
                SessionEnd::TurnLimit => {
                    last_feedback = self.attempt_failed(
                        attempt,
                        format!(
                            "Attempt {attempt} ran out of turns ({} model turns) before you answered; \
                             nothing was verified or reviewed. Continue where you stopped, finish the \
                             unit with fewer, larger steps, then answer with a short summary.",
                            mission.config.role(Role::Worker).max_turns
                        ),
                    );
                    if attempt < attempts {
                        session.push_user(last_feedback.clone());
                    }
                    continue;
                }
                SessionEnd::Finished => String::new(),
                SessionEnd::Cancelled => return Err(Box::new(UnitOutcome::interrupted(&self.unit))),
                // Not the unit's fault: it continues when the mission is resumed with more budget.
                SessionEnd::BudgetSpent => return Err(Box::new(UnitOutcome::out_of_budget(&self.unit))),
                SessionEnd::ModelFailed(e) => return Err(fail(format!("model error: {e}"))),
                SessionEnd::EndpointFailed(e) => {
                    return Err(Box::new(UnitOutcome::endpoint_failed(&self.unit, &e)))
                }
            };
            let title = rt.mask(&format!("{}: {}", self.unit.id, self.unit.title));
            if let Err(e) = worktree.commit_all(&title).await {
                return Err(fail(format!("could not commit the worker's changes: {e}")));
            }
            // The commit that verification runs on and the reviewer judges: what will be merged.
            let verified = worktree
                .head()
                .await
                .map_err(|e| fail(format!("could not read the worker's commit: {e}")))?;
            run_start = Some(verified.clone());
            // A claim of work with nothing to show is not passed on silently (a failed `write`
            // followed by "Wrote x." looks like this): the worker hears what the runtime saw.
            if self.changed_nothing(base, &verified).await && !claims_no_change(&summary) {
                last_feedback = self.attempt_failed(attempt, no_change_feedback(session));
                if attempt < attempts {
                    session.push_user(last_feedback.clone());
                }
                continue;
            }
            if let Some((_, told)) = failed_verification
                .as_ref()
                .filter(|(commit, _)| *commit == verified)
            {
                last_feedback =
                    self.attempt_failed(attempt, unchanged_since_failure(attempt, &verified, told));
                if attempt < attempts {
                    session.push_user(last_feedback.clone());
                }
                continue;
            }
            match self
                .check(
                    slot,
                    base,
                    &worktree,
                    &verified,
                    attempt,
                    Known {
                        review: earlier.reviews.get(&attempt),
                        specialists: &earlier.specialist_reviews,
                        merge_hook: earlier.merge_hooks.get(&attempt),
                    },
                )
                .await?
            {
                None => {
                    return Ok(Reviewed {
                        summary,
                        commit: Some(verified),
                    })
                }
                Some(feedback) => {
                    failed_verification = feedback
                        .starts_with(VERIFICATION_FAILED)
                        .then(|| (verified.clone(), feedback.clone()));
                    last_feedback = feedback;
                    if attempt < attempts {
                        session.push_user(last_feedback.clone());
                    }
                }
            }
        }
        let first_line = last_feedback.lines().next().unwrap_or_default();
        let mut outcome = self.failed(
            format!("did not pass after {attempts} attempt(s): {first_line}"),
            String::new(),
        );
        // The next round's retry starts from what the last attempt was told, not from scratch, and
        // sees the change it made: its worktree starts without it, but the parts that were right
        // (seen in the field: a correct function beside a broken test) need not be found again.
        let diff = match tree.get().await {
            Ok(worktree) => worktree.diff_since(base).await.ok(),
            Err(_) => None,
        };
        outcome.findings = Some(findings(&last_feedback, diff.as_deref()));
        Err(Box::new(outcome))
    }

    /// Records an attempt that ended before review (out of turns, or nothing changed) and returns
    /// the feedback for the worker.
    fn attempt_failed(&self, attempt: u32, feedback: String) -> String {
        self.mission.rt.bus.emit(Event::Notice {
            message: format!(
                "{}: attempt {attempt} failed before review: {}",
                self.unit.id,
                feedback.lines().next().unwrap_or_default()
            ),
        });
        feedback
    }

    /// Whether the unit's commit has the same tree as its base: the worker changed no file.
    pub(super) async fn changed_nothing(&self, base: &str, commit: &str) -> bool {
        self.mission.repo.same_tree(base, commit).await.unwrap_or(false)
    }

    /// Verification, review, then the `before_merge` hook. `None` when the unit passed; otherwise
    /// the feedback for the worker.
    async fn check(
        &self,
        slot: &mut Slot,
        base: &str,
        worktree: &Worktree,
        verified: &str,
        attempt: u32,
        known: Known<'_>,
    ) -> Result<Option<String>, Box<UnitOutcome>> {
        let mission = &self.mission;
        self.state(UnitState::Verifying, attempt, None);
        let could_not_run =
            |e: String| Box::new(self.failed(format!("verification could not run: {e}"), String::new()));
        let (evidence, restore) = mission
            .verifier
            .verify_restoring_later(worktree, &mission.rt.cancel)
            .await
            .map_err(could_not_run)?;
        // The reviewer's model call overlaps putting the worktree back; its tools wait for that.
        let result = self
            .review_verified(
                slot,
                base,
                worktree,
                verified,
                attempt,
                known.review,
                &evidence,
                restore.clone(),
            )
            .await;
        // Nothing reads or commits in the worktree before it is back at the tested commit.
        if let Some(restore) = restore {
            restore.await.map_err(could_not_run)?;
        }
        if let Some(feedback) = result? {
            return Ok(Some(feedback));
        }
        let branch = self.mission.branch(&self.unit.id);
        self.after_review(slot, &branch, base, worktree, verified, attempt, &evidence, known)
            .await
    }

    /// What still judges a commit its own review passed, in order: the `[review] extra`
    /// specialists, then the `before_merge` hook. The first fail or veto is the worker's feedback.
    /// Shared by a unit's attempts and a best-of-N pick, so neither can skip a judge.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn after_review(
        &self,
        slot: &mut Slot,
        branch: &str,
        base: &str,
        worktree: &Worktree,
        verified: &str,
        attempt: u32,
        evidence: &[orchestrator_protocol::Evidence],
        known: Known<'_>,
    ) -> Result<Option<String>, Box<UnitOutcome>> {
        let judged = self
            .specialists_judge(
                slot,
                base,
                worktree,
                verified,
                attempt,
                evidence,
                known.specialists,
            )
            .await?;
        if judged.is_some() {
            return Ok(judged);
        }
        self.before_merge(branch, base, worktree, verified, attempt, known.merge_hook)
            .await
    }

    /// The `[review] extra` specialists, in order, on a commit the unit's own review passed: the first
    /// fail is the worker's feedback, as a failed review is. A verdict an earlier run recorded for
    /// this attempt is not asked again.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn specialists_judge(
        &self,
        slot: &mut Slot,
        base: &str,
        worktree: &Worktree,
        verified: &str,
        attempt: u32,
        evidence: &[orchestrator_protocol::Evidence],
        known: &SpecialistReviews,
    ) -> Result<Option<String>, Box<UnitOutcome>> {
        let mission = &self.mission;
        for name in &mission.config.review_extra {
            // Every name was checked against the role files before the mission started.
            let Some(specialist) = mission.config.specialists.get(name) else {
                continue;
            };
            let review = match known.get(&(attempt, name.clone())) {
                Some((review, _)) => review.clone(),
                None => {
                    let review = review_unit(
                        mission,
                        &self.unit,
                        worktree,
                        base,
                        evidence,
                        attempt,
                        slot,
                        None,
                        Some(specialist),
                    )
                    .await
                    .map_err(|end| self.review_ended(end))?;
                    mission.rt.bus.emit(Event::ReviewFinished {
                        unit: Some(self.unit.id.clone()),
                        attempt,
                        review: review.clone(),
                        commit: Some(verified.to_string()),
                        reviewer: Some(name.clone()),
                    });
                    review
                }
            };
            if review.verdict == Verdict::Fail {
                return Ok(Some(specialist_feedback(name, &review)));
            }
        }
        Ok(None)
    }

    /// How a review session that ended without a verdict ends the unit.
    fn review_ended(&self, end: SessionEnd) -> Box<UnitOutcome> {
        Box::new(match end {
            SessionEnd::Cancelled => UnitOutcome::interrupted(&self.unit),
            SessionEnd::BudgetSpent => UnitOutcome::out_of_budget(&self.unit),
            // An outage stops the unit (not failed) and leaves the mission resumable, as for the
            // worker's own calls.
            SessionEnd::EndpointFailed(e) => UnitOutcome::endpoint_failed(&self.unit, &e),
            end => self.failed(format!("the review could not run: {end}"), String::new()),
        })
    }

    /// The `before_merge` hook on the reviewed commit, in the unit's worktree: a veto is the
    /// worker's feedback, as a failed review is. A verdict an earlier run recorded is not asked again.
    pub(super) async fn before_merge(
        &self,
        branch: &str,
        base: &str,
        worktree: &Worktree,
        verified: &str,
        attempt: u32,
        known: Option<&HookRun>,
    ) -> Result<Option<String>, Box<UnitOutcome>> {
        let mission = &self.mission;
        let Some(hook) = mission.config.hooks.get(HookKind::BeforeMerge) else {
            return Ok(None);
        };
        let run = match known {
            Some(run) => run.clone(),
            None => {
                let call = HookCall {
                    kind: HookKind::BeforeMerge,
                    dir: worktree.path(),
                    writable: true,
                    mission: &mission.id,
                    unit: Some(&self.unit.id),
                    attempt: Some(attempt),
                    env: vec![
                        ("ORCHESTRATOR_BRANCH", branch.to_string()),
                        ("ORCHESTRATOR_BASE_COMMIT", base.to_string()),
                        ("ORCHESTRATOR_COMMIT", verified.to_string()),
                    ],
                    input: serde_json::json!({
                        "hook": HookKind::BeforeMerge,
                        "mission": mission.id,
                        "objective": mission.objective,
                        "unit": self.unit,
                        "attempt": attempt,
                        "branch": branch,
                        "base_commit": base,
                        "commit": verified,
                    }),
                };
                let run = hooks::run(hook, call, &mission.config.sandbox, &mission.rt.cancel).await;
                if mission.rt.cancel.is_cancelled() {
                    return Err(Box::new(UnitOutcome::interrupted(&self.unit)));
                }
                // What the hook left in the worktree is not the reviewed work the worker goes on from.
                worktree.reset_hard_if_changed(verified).await.map_err(|e| {
                    Box::new(self.failed(
                        format!("could not restore the worktree after the before_merge hook: {e}"),
                        String::new(),
                    ))
                })?;
                mission.rt.bus.emit(Event::HookRan { run: run.clone() });
                run
            }
        };
        Ok((!run.passed()).then(|| hooks::veto_feedback(&run)))
    }

    /// After verification: failing evidence goes back to the worker, passing evidence to a review.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn review_verified(
        &self,
        slot: &mut Slot,
        base: &str,
        worktree: &Worktree,
        verified: &str,
        attempt: u32,
        known_review: Option<&Review>,
        evidence: &[orchestrator_protocol::Evidence],
        restore: Option<verify::Restore>,
    ) -> Result<Option<String>, Box<UnitOutcome>> {
        let mission = &self.mission;
        let bus = &mission.rt.bus;
        if mission.rt.cancel.is_cancelled() {
            return Err(Box::new(UnitOutcome::interrupted(&self.unit)));
        }
        for e in evidence {
            bus.emit(Event::EvidenceRecorded {
                unit: Some(self.unit.id.clone()),
                evidence: e.clone(),
            });
        }
        if !all_passed(evidence) {
            // Failing evidence fails the unit without spending a review.
            let broken = broken_tests(mission, evidence).await;
            return Ok(Some(verification_feedback(
                evidence,
                Some(worktree.path()),
                &broken,
            )));
        }
        self.state(UnitState::Reviewing, attempt, None);
        let review = match known_review {
            Some(review) => review.clone(),
            None => {
                let review = review_unit(
                    mission, &self.unit, worktree, base, evidence, attempt, slot, restore, None,
                )
                .await
                .map_err(|end| self.review_ended(end))?;
                bus.emit(Event::ReviewFinished {
                    unit: Some(self.unit.id.clone()),
                    attempt,
                    review: review.clone(),
                    commit: Some(verified.to_string()),
                    reviewer: None,
                });
                review
            }
        };
        Ok(match review.verdict {
            Verdict::Pass => None,
            Verdict::Fail => Some(review_feedback(&review)),
        })
    }
}

/// What a worker is told when the runtime's build or tests failed on its committed work.
/// How the feedback of a failed verification begins.
const VERIFICATION_FAILED: &str = "Stage 1 verification failed";

/// What a worker is told of its failed verification; with `root` (its worktree), where the names
/// the failure says are missing are defined (`hints.rs`).
pub(super) fn verification_feedback(
    evidence: &[orchestrator_protocol::Evidence],
    root: Option<&Path>,
    broken: &[String],
) -> String {
    let failed: String = evidence
        .iter()
        .filter(|e| !e.passed())
        .map(|e| e.output_tail.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let hint: String = [
        crate::hints::broken_tests_note(broken),
        root.and_then(|root| crate::hints::where_defined(&failed, root)),
    ]
    .into_iter()
    .flatten()
    .map(|hint| format!("{hint}\n\n"))
    .collect();
    format!(
        "{VERIFICATION_FAILED}: the runtime ran the build and tests on your committed work.\n\n{}\n{hint}\
         Fix the problem, run the tests yourself, then answer with a short summary.",
        verify::describe(evidence)
    )
}

/// The failing tests of `evidence` that passed on the mission's base commit.
pub(super) async fn broken_tests(
    mission: &crate::shared::Mission,
    evidence: &[orchestrator_protocol::Evidence],
) -> Vec<String> {
    defined_at_base(mission, crate::hints::newly_failed(evidence)).await
}

/// The tests a test run's `output` names as failed that passed on the mission's base commit (as
/// [`broken_tests`], for output that is not evidence: the tests after a change).
pub(super) async fn broken_tests_in(mission: &crate::shared::Mission, output: &str) -> Vec<String> {
    let failed = crate::test_count::failed_tests(output);
    defined_at_base(mission, crate::hints::with_short_names(failed.iter())).await
}

/// Those of `failed` (with their short names) that passed on the mission's base commit: the base's
/// tests ran, they were not among its failures, and a test of the name was defined there.
async fn defined_at_base(mission: &crate::shared::Mission, failed: Vec<(String, String)>) -> Vec<String> {
    if failed.is_empty() {
        return Vec::new();
    }
    let Some(baseline) = mission.verifier.baseline.clone() else {
        return Vec::new();
    };
    let known = baseline.await;
    let Some(base) = known.base.clone() else {
        return Vec::new();
    };
    if known.tests_ran.is_none_or(|n| n == 0) {
        return Vec::new();
    }
    let mut broken = Vec::new();
    for (failed, short) in failed {
        if known.failures.contains(&failed) {
            continue;
        }
        let Some(pattern) = crate::hints::test_definition_pattern(&short) else {
            continue;
        };
        if mission.repo.matches_at(&base, &pattern).await.unwrap_or(false) {
            broken.push(failed);
        }
    }
    broken
}

/// A worker that answered without changing anything since its commit failed verification: the
/// same commit would fail the same way, so it is not built and tested again (in the field the 1.5B
/// answered "the problem has been fixed" twice with the same tree); the attempt fails at once.
fn unchanged_since_failure(attempt: u32, commit: &str, feedback: &str) -> String {
    let told: Vec<&str> = feedback
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .take(12)
        .collect();
    format!(
        "Attempt {attempt}: you changed no file since your last attempt failed verification (your work \
         is still commit {}), so it fails the same way; it was not run again. What failed:\n{}\n\
         Change the files to fix that (check that your tool calls succeeded), then answer.",
        verify::short(commit),
        told.join("\n")
    )
}

pub(super) fn review_feedback(review: &Review) -> String {
    feedback_text(
        format!("Stage 1 review failed: {}\n", review.summary.trim()),
        review,
    )
}

/// What a worker is told when a specialist reviewer (`[review] extra`) failed its unit.
pub(super) fn specialist_feedback(name: &str, review: &Review) -> String {
    let head = format!(
        "Stage 1 review by the {name} specialist failed (the unit's own review passed): {}\n",
        review.summary.trim()
    );
    feedback_text(head, review)
}

fn feedback_text(mut text: String, review: &Review) -> String {
    for issue in &review.issues {
        let file = issue
            .file
            .as_deref()
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        let _ = writeln!(text, "- {}{file}: {}", issue.title, issue.description);
    }
    text.push_str("\nFix these in your worktree, then answer with a short summary.");
    text
}

/// How much of the last attempt's findings a failed unit carries into the next round's retry.
const FINDINGS_CHARS: usize = 6_000;
/// How much of the last attempt's diff goes with them.
const FINDINGS_DIFF_CHARS: usize = 4_000;

/// What a failed unit hands its retry: what its last attempt was told, then the diff it left.
pub(super) fn findings(last_feedback: &str, diff: Option<&str>) -> String {
    let mut text = crate::prompts::cut(last_feedback, FINDINGS_CHARS);
    if let Some(diff) = diff.filter(|d| !d.trim().is_empty()) {
        let diff = crate::prompts::cut(diff, FINDINGS_DIFF_CHARS);
        let _ = write!(
            text,
            "\n\nThe change that attempt made (not in your worktree: take what was right, leave what \
             was wrong):\n```diff\n{}\n```",
            diff.trim_end()
        );
    }
    text
}

/// The answer a worker gives when its unit truly needs no change (it is told this when its attempt
/// changed nothing).
pub(super) const NO_CHANGE: &str = "NO CHANGE NEEDED";

pub(super) fn claims_no_change(summary: &str) -> bool {
    summary.trim_start().to_ascii_uppercase().starts_with(NO_CHANGE)
}

/// What the runtime saw of an attempt that changed nothing, with the last failed tool call if any.
pub(super) fn no_change_feedback(session: &Session) -> String {
    let failed = session.messages.iter().rev().find_map(|m| match m {
        orchestrator_model::Message::Tool {
            content,
            is_error: true,
            ..
        } => Some(content.lines().next().unwrap_or_default().to_string()),
        _ => None,
    });
    let failed = failed
        .map(|e| {
            format!(
                " Your last failed tool call said: {}",
                crate::prompts::cut(&e, 300)
            )
        })
        .unwrap_or_default();
    format!(
        "The runtime sees no change: after this attempt your worktree is exactly as the unit started \
         (an empty diff), whatever your answer said.{failed}\n\
         Make the change the unit asks for (check that your tool calls succeeded), then answer. If the \
         unit truly needs no change, write no file: your final answer (not a tool call) is then a line \
         that starts with `{NO_CHANGE}:` and says why."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_diff_is_cut_and_an_empty_one_is_left_out() {
        // A worker that rewrote everything: the retry's brief still holds a bounded excerpt.
        let huge = "+x = 1\n".repeat(100_000);
        let text = findings("Stage 1 verification failed", Some(&huge));
        assert!(text.starts_with("Stage 1 verification failed"), "{}", &text[..80]);
        assert!(text.contains("```diff\n+x = 1"), "the diff's start is kept");
        assert!(text.contains("more bytes cut"), "the cut is said");
        assert!(
            text.len() < FINDINGS_CHARS + FINDINGS_DIFF_CHARS + 400,
            "{}",
            text.len()
        );
        // Feedback alone is bounded as before, and no empty diff block is added.
        let long_feedback = "y".repeat(50_000);
        let text = findings(&long_feedback, Some("  \n"));
        assert!(!text.contains("```diff"));
        assert!(text.len() < FINDINGS_CHARS + 200, "{}", text.len());
        assert!(!findings("told", None).contains("```diff"));
    }

    #[test]
    fn the_worker_sees_the_line_each_issue_is_about_and_which_were_not_confirmed() {
        let issue = |title: &str| orchestrator_protocol::ReviewIssue {
            title: title.into(),
            description: "mul belongs in calc.py".into(),
            file: Some("test_calc.py".into()),
        };
        let groundings = [
            Ok("def mul(a, b):".to_string()),
            Err("the quote is not in `calc.py`: \"return 0\"".to_string()),
        ];
        let review = Review {
            verdict: orchestrator_protocol::Verdict::Fail,
            summary: "wrong file".into(),
            issues: crate::grounded::annotated(vec![issue("Move mul"), issue("Wrong")], &groundings),
        };
        let text = review_feedback(&review);
        assert!(
            text.contains(
                "- Move mul (test_calc.py): mul belongs in calc.py\n  The line meant: \"def mul(a, b):\"\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "- Wrong (test_calc.py): (not confirmed by the runtime: the quote is not in `calc.py`"
            ),
            "{text}"
        );
    }
}
