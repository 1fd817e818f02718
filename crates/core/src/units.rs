//! Phase 1: the DAG scheduler and the life of one unit — worker session, runtime verification,
//! stage 1 review, merge (with a conflict resolver when needed). Spawned children run through the
//! same path and merge into their parent's branch.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::stream::{FuturesUnordered, StreamExt};
use orchestrator_git::{BranchMerge, MergeOutcome, Repo, Worktree};
use orchestrator_model::ToolSpec;
use orchestrator_protocol::{Event, Review, Role, UnitSpec, UnitState, Verdict};
use serde_json::json;

use crate::mission::{toolbox, Mission};
use crate::plan::parse_spawn;
use crate::roles::review_unit;
use crate::session::{error_output, ok_output, HookResult, Session, SessionEnd, SessionHooks, Slot};
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
            lock: tokio::sync::Mutex::new(()),
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

/// Runs units in dependency order, every ready unit at once (the global slot cap limits sessions).
/// A unit whose dependency did not pass is skipped; units that ended in an earlier run of the mission
/// are taken as they ended and never run again.
pub fn run_dag(
    mission: Arc<Mission>,
    units: Vec<UnitSpec>,
    depth: u32,
    target: Arc<MergeTarget>,
    round: u32,
) -> BoxFuture<'static, Vec<UnitOutcome>> {
    Box::pin(async move {
        let mut done: HashMap<String, UnitOutcome> = HashMap::new();
        let mut waiting = Vec::new();
        for unit in &units {
            match mission.replay.terminal(&unit.id) {
                Some(record) => {
                    mission.note_todo(unit, round, record.state, record.detail.clone());
                    let outcome = UnitOutcome {
                        unit: unit.clone(),
                        state: record.state,
                        summary: record.detail.clone().unwrap_or_default(),
                        reason: (record.state != UnitState::Passed)
                            .then(|| record.detail.clone())
                            .flatten(),
                        findings: None,
                        interrupted: false,
                    };
                    done.insert(unit.id.clone(), outcome);
                }
                None => waiting.push(unit.clone()),
            }
        }
        let mut running = FuturesUnordered::new();
        loop {
            // After a cancel or with the budget spent nothing new starts; what runs winds down.
            let stopping = mission.rt.cancel.is_cancelled() || mission.rt.budget_spent();
            let (ready, blocked) = if stopping {
                (Vec::new(), Vec::new())
            } else {
                next_ready(&mut waiting, &done)
            };
            for unit in blocked {
                let reason = format!("a dependency did not pass: {}", unit.depends_on.join(", "));
                mission.set_state(&unit, round, UnitState::Skipped, 0, Some(reason.clone()));
                let outcome = UnitOutcome {
                    unit,
                    state: UnitState::Skipped,
                    summary: String::new(),
                    reason: Some(reason),
                    findings: None,
                    interrupted: false,
                };
                done.insert(outcome.unit.id.clone(), outcome);
            }
            for unit in ready {
                running.push(run_unit(mission.clone(), unit, depth, target.clone(), round));
            }
            if running.is_empty() {
                if waiting.is_empty() || stopping {
                    break;
                }
                continue; // newly blocked units were just recorded; look again
            }
            if let Some(outcome) = running.next().await {
                done.insert(outcome.unit.id.clone(), outcome);
            }
        }
        for unit in waiting {
            let outcome = if mission.rt.cancel.is_cancelled() {
                UnitOutcome::interrupted(&unit)
            } else {
                UnitOutcome::out_of_budget(&unit)
            };
            done.insert(unit.id.clone(), outcome);
        }
        // Report in plan order.
        units.iter().filter_map(|u| done.remove(&u.id)).collect()
    })
}

/// Splits off the units whose dependencies are all done: those that can run, and those that never will.
fn next_ready(
    waiting: &mut Vec<UnitSpec>,
    done: &HashMap<String, UnitOutcome>,
) -> (Vec<UnitSpec>, Vec<UnitSpec>) {
    let mut ready = Vec::new();
    let mut blocked = Vec::new();
    waiting.retain(|unit| {
        let states: Vec<Option<UnitState>> = unit
            .depends_on
            .iter()
            .map(|d| done.get(d).map(|o| o.state))
            .collect();
        if states
            .iter()
            .any(|s| matches!(s, Some(UnitState::Failed | UnitState::Skipped)))
        {
            blocked.push(unit.clone());
            false
        } else if states.iter().all(|s| *s == Some(UnitState::Passed)) {
            ready.push(unit.clone());
            false
        } else {
            true
        }
    });
    (ready, blocked)
}

fn run_unit(
    mission: Arc<Mission>,
    unit: UnitSpec,
    depth: u32,
    target: Arc<MergeTarget>,
    round: u32,
) -> BoxFuture<'static, UnitOutcome> {
    Box::pin(async move {
        let run = UnitRun {
            mission: mission.clone(),
            unit: unit.clone(),
            depth,
            round,
        };
        let outcome = run.execute(&target).await;
        if !outcome.interrupted {
            let detail = if outcome.state == UnitState::Passed {
                Some(first_chars(&outcome.summary, 200)).filter(|s| !s.is_empty())
            } else {
                outcome.reason.clone()
            };
            mission.set_state(&unit, round, outcome.state, 0, detail);
        }
        outcome
    })
}

fn first_chars(text: &str, max: usize) -> String {
    text.trim().chars().take(max).collect()
}

/// A unit's worktree: ready, or still being made by a background task. A new unit's first model call
/// needs no files, so it runs while `git worktree add` does; the session's first tool call waits.
#[derive(Clone)]
struct UnitTree {
    path: PathBuf,
    pending: Shared<BoxFuture<'static, Result<Worktree, String>>>,
}

impl UnitTree {
    fn ready(worktree: Worktree) -> Self {
        UnitTree {
            path: worktree.path().to_path_buf(),
            pending: futures::future::ready(Ok(worktree)).boxed().shared(),
        }
    }

    /// Starts `git worktree add -b` for a new unit in the background. The directory is made first
    /// (git fills an empty one) so the session's tools can be rooted there at once.
    async fn start(repo: Repo, path: PathBuf, branch: String, base: String) -> Result<Self, String> {
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let making = path.clone();
        let task = tokio::spawn(async move {
            repo.add_worktree_on_branch(&making, &branch, &base)
                .await
                .map_err(|e| e.to_string())
        });
        let pending = async move {
            task.await
                .unwrap_or_else(|e| Err(format!("the worktree task failed: {e}")))
        };
        Ok(UnitTree {
            path,
            pending: pending.boxed().shared(),
        })
    }

    async fn get(&self) -> Result<Worktree, String> {
        self.pending.clone().await
    }

    fn is_ready(&self) -> bool {
        self.pending.peek().is_some()
    }

    /// What the session awaits before its first tool call.
    fn gate(&self) -> crate::session::ToolsReady {
        let pending = self.pending.clone();
        async move {
            pending
                .await
                .map(drop)
                .map_err(|e| format!("could not create the unit's worktree: {e}"))
        }
        .boxed()
        .shared()
    }
}

struct UnitRun {
    mission: Arc<Mission>,
    unit: UnitSpec,
    depth: u32,
    round: u32,
}

/// What passed verification and review: the worker's summary and the commit that was judged.
#[derive(Default)]
struct Reviewed {
    summary: String,
    commit: Option<String>,
}

/// Where an earlier run of the mission left this unit.
#[derive(Clone)]
struct Resume {
    state: UnitState,
    attempt: u32,
    reviews: std::collections::BTreeMap<u32, Review>,
    reviewed_commits: std::collections::BTreeMap<u32, String>,
}

impl Resume {
    /// Whether the earlier run got this unit through review (it is then merged, not built again),
    /// and the commit that review judged, where the log has it.
    fn passed_review(&self) -> Option<Option<String>> {
        let passed = self.state == UnitState::Merging
            || (self.state == UnitState::Reviewing
                && self
                    .reviews
                    .get(&self.attempt)
                    .is_some_and(|rev| rev.verdict == Verdict::Pass));
        passed.then(|| self.reviewed_commits.get(&self.attempt).cloned())
    }
}

impl UnitRun {
    fn state(&self, state: UnitState, attempt: u32, detail: Option<String>) {
        self.mission
            .set_state(&self.unit, self.round, state, attempt, detail);
    }

    fn failed(&self, reason: impl Into<String>, summary: String) -> UnitOutcome {
        UnitOutcome {
            unit: self.unit.clone(),
            state: UnitState::Failed,
            summary,
            reason: Some(reason.into()),
            findings: None,
            interrupted: self.mission.rt.cancel.is_cancelled(),
        }
    }

    async fn execute(&self, target: &MergeTarget) -> UnitOutcome {
        let rt = &self.mission.rt;
        // A paused mission starts no new unit; units already running (and their children) go on.
        if !rt.control.wait_for_dispatch(&rt.cancel).await {
            return UnitOutcome::interrupted(&self.unit);
        }
        let Some(mut slot) = Slot::acquire(rt).await else {
            return UnitOutcome::interrupted(&self.unit);
        };
        let record = self.mission.replay.units.get(&self.unit.id).cloned();
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
        let resume = record.map(|r| Resume {
            state: r.state,
            attempt: r.attempt,
            reviews: r.reviews,
            reviewed_commits: r.reviewed_commits,
        });
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
        if let Err(e) = self.mission.repo.remove_worktree(&path).await {
            tracing::warn!("cannot remove worktree {}: {e}", path.display());
        }
        // The empty directory made for a worktree that git did not create (a no-op otherwise).
        let _ = tokio::fs::remove_dir(&path).await;
        if !outcome.interrupted {
            // Deleted with all the others at the end of the run: one git process instead of one each.
            self.mission.branch_done(branch);
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
                if self.mission.rt.opencode.is_none() {
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
        let Reviewed { summary, commit } =
            if let Some(commit) = resume.as_ref().and_then(Resume::passed_review) {
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
        self.state(UnitState::Merging, 0, None);
        let theirs = match &commit {
            Some(commit) => self.reviewed_commit(branch, commit).await,
            None => branch.to_string(),
        };
        match merge_into(&self.mission, &self.unit, &theirs, target, slot).await {
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
    async fn build_until_reviewed(
        &self,
        slot: &mut Slot,
        base: &str,
        tree: &UnitTree,
        resume: Option<Resume>,
    ) -> Result<Reviewed, Box<UnitOutcome>> {
        let mission = &self.mission;
        let rt = &mission.rt;
        let fail = |reason: String| Box::new(self.failed(reason, String::new()));
        let tools = toolbox(&tree.path, true, &mission.config).map_err(|e| fail(e.to_string()))?;
        let can_spawn = self.depth < mission.config.max_depth;
        let extra = if can_spawn { vec![spawn_spec()] } else { Vec::new() };
        let hooks = WorkerHooks {
            mission: mission.clone(),
            unit: self.unit.clone(),
            depth: self.depth,
            round: self.round,
            tree: tree.clone(),
            spawned: std::sync::atomic::AtomicBool::new(false),
        };
        let mut session = Session::new(
            rt,
            &format!("worker:{}", self.unit.id),
            Role::Worker,
            Some(self.unit.id.clone()),
            mission.config.role(Role::Worker).clone(),
            Arc::new(tools),
            extra,
            worker_brief(mission, &self.unit, can_spawn),
        );
        if !tree.is_ready() {
            session.tools_ready = Some(tree.gate());
        }
        let attempts = mission.config.unit_attempts;
        let first = resume.as_ref().map(|r| r.attempt.max(1)).unwrap_or(1);
        let known_reviews = resume.map(|r| r.reviews).unwrap_or_default();
        let mut last_feedback = String::new();
        for attempt in first..=attempts {
            self.state(UnitState::Running, attempt, None);
            let end = session.run(rt, &hooks, slot).await;
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
            // A claim of work with nothing to show is not passed on silently (a failed `write`
            // followed by "Wrote x." looks like this): the worker hears what the runtime saw.
            if self.changed_nothing(base, &verified).await && !claims_no_change(&summary) {
                last_feedback = self.attempt_failed(attempt, no_change_feedback(&session));
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
                    known_reviews.get(&attempt),
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
        // The next round's retry starts from what the last attempt was told, not from scratch.
        outcome.findings = Some(crate::roles::cut(&last_feedback, FINDINGS_CHARS));
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
    async fn changed_nothing(&self, base: &str, commit: &str) -> bool {
        let repo = &self.mission.repo;
        match (
            repo.rev_parse(&format!("{base}^{{tree}}")).await,
            repo.rev_parse(&format!("{commit}^{{tree}}")).await,
        ) {
            (Ok(before), Ok(after)) => before == after,
            _ => false,
        }
    }

    /// Verification then review. `None` when the unit passed; otherwise the feedback for the worker.
    async fn check(
        &self,
        slot: &mut Slot,
        base: &str,
        worktree: &Worktree,
        verified: &str,
        attempt: u32,
        known_review: Option<&Review>,
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
                known_review,
                &evidence,
                restore.clone(),
            )
            .await;
        // Nothing reads or commits in the worktree before it is back at the tested commit.
        if let Some(restore) = restore {
            restore.await.map_err(could_not_run)?;
        }
        result
    }

    /// After verification: failing evidence goes back to the worker, passing evidence to a review.
    #[allow(clippy::too_many_arguments)]
    async fn review_verified(
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
            return Ok(Some(format!(
                "Stage 1 verification failed: the runtime ran the build and tests on your committed work.\n\n{}\n\
                 Fix the problem, run the tests yourself, then answer with a short summary.",
                verify::describe(evidence)
            )));
        }
        self.state(UnitState::Reviewing, attempt, None);
        let review = match known_review {
            Some(review) => review.clone(),
            None => {
                let review = match review_unit(
                    mission, &self.unit, worktree, base, evidence, attempt, slot, restore,
                )
                .await
                {
                    Ok(review) => review,
                    Err(SessionEnd::Cancelled) => return Err(Box::new(UnitOutcome::interrupted(&self.unit))),
                    Err(SessionEnd::BudgetSpent) => {
                        return Err(Box::new(UnitOutcome::out_of_budget(&self.unit)))
                    }
                    // An outage stops the unit (not failed) and leaves the mission resumable, as
                    // for the worker's own calls.
                    Err(SessionEnd::EndpointFailed(e)) => {
                        return Err(Box::new(UnitOutcome::endpoint_failed(&self.unit, &e)))
                    }
                    Err(end) => {
                        return Err(Box::new(
                            self.failed(format!("the review could not run: {end}"), String::new()),
                        ))
                    }
                };
                bus.emit(Event::ReviewFinished {
                    unit: Some(self.unit.id.clone()),
                    attempt,
                    review: review.clone(),
                    commit: Some(verified.to_string()),
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

fn review_feedback(review: &Review) -> String {
    let mut text = format!("Stage 1 review failed: {}\n", review.summary.trim());
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

fn worker_brief(mission: &Mission, unit: &UnitSpec, can_spawn: bool) -> String {
    let mut text = format!(
        "# Objective of the mission\n{}\n\n# Mission context\n{}\n\n# Your unit: {} — {}\n{}\n",
        mission.objective, mission.context, unit.id, unit.title, unit.description
    );
    if !unit.depends_on.is_empty() {
        let _ = writeln!(
            text,
            "\nUnits {} are already merged into your starting point.",
            unit.depends_on.join(", ")
        );
    }
    if !unit.files.is_empty() {
        let _ = writeln!(
            text,
            "\nFiles the planner expects you to touch: {}",
            unit.files.join(", ")
        );
    }
    if can_spawn {
        text.push_str("\nYou may split this unit with `spawn` if it is too large for one session.\n");
    }
    text
}

fn spawn_spec() -> ToolSpec {
    ToolSpec {
        name: "spawn".into(),
        description:
            "Split your unit: start sub-workers, each in its own worktree branched from yours. Returns when \
                      they have finished and been reviewed; their work is then merged into your worktree."
                .into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "tasks": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "title": {"type": "string"},
                            "description": {"type": "string"},
                            "depends_on": {"type": "array", "items": {"type": "string"}, "description": "titles of sibling tasks"}
                        },
                        "required": ["title", "description"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["tasks"],
            "additionalProperties": false
        }),
    }
}

/// How much of the last attempt's findings a failed unit carries into the next round's retry.
const FINDINGS_CHARS: usize = 6_000;

/// The answer a worker gives when its unit truly needs no change (it is told this when its attempt
/// changed nothing).
const NO_CHANGE: &str = "NO CHANGE NEEDED";

fn claims_no_change(summary: &str) -> bool {
    summary.trim_start().to_ascii_uppercase().starts_with(NO_CHANGE)
}

/// What the runtime saw of an attempt that changed nothing, with the last failed tool call if any.
fn no_change_feedback(session: &Session) -> String {
    let failed = session.messages.iter().rev().find_map(|m| match m {
        orchestrator_model::Message::Tool {
            content,
            is_error: true,
            ..
        } => Some(content.lines().next().unwrap_or_default().to_string()),
        _ => None,
    });
    let failed = failed
        .map(|e| format!(" Your last failed tool call said: {}", crate::roles::cut(&e, 300)))
        .unwrap_or_default();
    format!(
        "The runtime sees no change: after this attempt your worktree is exactly as the unit started \
         (an empty diff), whatever your answer said.{failed}\n\
         Make the change the unit asks for (check that your tool calls succeeded), then answer. If the \
         unit truly needs no change, answer with a line that starts with `{NO_CHANGE}:` and why."
    )
}

/// The worker's orchestration tool: `spawn`.
struct WorkerHooks {
    mission: Arc<Mission>,
    unit: UnitSpec,
    depth: u32,
    round: u32,
    tree: UnitTree,
    /// Whether this session's unit has split itself already: a unit splits once.
    spawned: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl SessionHooks for WorkerHooks {
    async fn call(&self, name: &str, arguments: serde_json::Value, slot: &mut Slot) -> HookResult {
        if name != "spawn" {
            return HookResult::Continue(error_output(format!("Unknown tool `{name}`.")));
        }
        let children = match parse_spawn(&self.unit.id, arguments) {
            Ok(children) => children,
            Err(problems) => {
                return HookResult::Continue(error_output(format!(
                    "spawn refused:\n- {}\nFix the call and try again.",
                    problems.join("\n- ")
                )))
            }
        };
        if let Some(refusal) = self.already_split(&children) {
            return HookResult::Continue(error_output(refusal));
        }
        if let Some(refusal) = self
            .over_unit_cap(&children)
            .or_else(|| self.over_budget(children.len()))
        {
            return HookResult::Continue(error_output(refusal));
        }
        HookResult::Continue(self.spawn(children, slot).await)
    }

    fn not_offered(&self, name: &str, offered: &[String]) -> String {
        if name == "spawn" {
            return format!(
                "spawn refused: this unit is at depth {} and the mission's spawning depth limit is {}. Build the unit yourself.",
                self.depth, self.mission.config.max_depth
            );
        }
        format!(
            "Unknown tool `{name}`. The tools available to you are: {}.",
            offered.join(", ")
        )
    }
}

/// What one unit is assumed to cost before any unit of the mission has finished.
const DEFAULT_UNIT_TOKENS: u64 = 30_000;

impl WorkerHooks {
    /// A unit splits once. A second `spawn` would get children numbered like the first ones (ids are
    /// positions), so it is refused with what exists; a resumed parent repeating the spawn it made
    /// before the restart (the same children) goes on as before.
    fn already_split(&self, children: &[UnitSpec]) -> Option<String> {
        let earlier = self.mission.children_of(&self.unit.id);
        let repeat_after_resume = !self.spawned.load(std::sync::atomic::Ordering::SeqCst)
            && children
                .iter()
                .all(|c| self.mission.replay.units.contains_key(&c.id));
        if (earlier.is_empty() && !self.spawned.load(std::sync::atomic::Ordering::SeqCst))
            || repeat_after_resume
        {
            return None;
        }
        Some(format!(
            "spawn refused: this unit already split itself into {} (their results came back from that \
             call). A unit splits once: build what is left yourself, in your worktree.",
            earlier.join(", ")
        ))
    }

    /// A spawn that would take the mission past `limits.max_units` is refused, with the numbers: a
    /// model that spawns without end stops here, not at thousands of queued units.
    fn over_unit_cap(&self, children: &[UnitSpec]) -> Option<String> {
        // A resumed parent repeating its spawn adds nothing new.
        let known = &self.mission.replay.units;
        let children = children.iter().filter(|c| !known.contains_key(&c.id)).count();
        let cap = self.mission.config.max_units;
        let held = self.mission.units_known();
        (held + children > cap).then(|| {
            format!(
                "spawn refused: the mission holds {held} units and may hold {cap} in all (limits.max_units); \
                 {children} more would pass that. Build the unit yourself, or spawn fewer."
            )
        })
    }

    /// A spawn that would likely exceed the mission's remaining budget is refused, with the numbers.
    fn over_budget(&self, children: usize) -> Option<String> {
        let mission = &self.mission;
        let limit = mission.config.budget_tokens?;
        let used = mission.rt.bus.usage().total();
        let remaining = limit.saturating_sub(used);
        let per_unit = mission.average_unit_tokens().unwrap_or(DEFAULT_UNIT_TOKENS);
        let needed = per_unit.saturating_mul(children as u64);
        (needed > remaining).then(|| {
            format!(
                "spawn refused: the mission has {remaining} tokens of its budget left, and {children} sub-unit(s) \
                 would need about {needed} (about {per_unit} per unit so far). Build the unit yourself, or spawn fewer."
            )
        })
    }
    async fn spawn(&self, children: Vec<UnitSpec>, slot: &mut Slot) -> orchestrator_tools::ToolOutput {
        let mission = &self.mission;
        // Ready: the session's first tool call waited for it.
        let worktree = match self.tree.get().await {
            Ok(worktree) => worktree,
            Err(e) => return error_output(format!("spawn failed: your worktree could not be created: {e}")),
        };
        // Children branch from the parent's work so far.
        let committed = match worktree
            .commit_all(&format!("{}: work before spawning", self.unit.id))
            .await
        {
            Ok(committed) => committed,
            Err(e) => return error_output(format!("spawn failed: could not commit your work first: {e}")),
        };
        // A resumed parent repeats its spawn call; children already known keep their recorded state.
        let known = children.iter().all(|c| mission.replay.units.contains_key(&c.id));
        if !known {
            mission.rt.bus.emit(Event::UnitsSpawned {
                parent: self.unit.id.clone(),
                units: children.clone(),
            });
            for child in &children {
                mission.set_state(child, self.round, UnitState::Queued, 0, None);
            }
        }
        mission.set_state(&self.unit, self.round, UnitState::WaitingOnChildren, 0, None);
        let head = match committed {
            Some(commit) => commit,
            None => match worktree.head().await {
                Ok(head) => head,
                Err(e) => return error_output(format!("spawn failed: could not read your commit: {e}")),
            },
        };
        let target = Arc::new(MergeTarget::new(
            worktree.clone(),
            mission.branch(&self.unit.id),
            head,
        ));
        // A waiting parent gives its slot to the children, so waiting trees cannot deadlock the cap.
        slot.release();
        self.spawned.store(true, std::sync::atomic::Ordering::SeqCst);
        let outcomes = run_dag(mission.clone(), children, self.depth + 1, target, self.round).await;
        if !slot.reacquire(&mission.rt.cancel).await {
            return error_output("spawn interrupted: the mission was cancelled".into());
        }
        mission.set_state(&self.unit, self.round, UnitState::Running, 0, None);
        ok_output(describe_children(&outcomes))
    }
}

fn describe_children(outcomes: &[UnitOutcome]) -> String {
    let mut text = String::from("Sub-tasks finished:\n");
    for o in outcomes {
        let detail = match (&o.reason, o.summary.trim()) {
            (Some(reason), _) => reason.clone(),
            (None, summary) => summary.to_string(),
        };
        let _ = writeln!(
            text,
            "- {} `{}`: {} — {}",
            o.unit.id, o.unit.title, o.state, detail
        );
    }
    let passed = outcomes.iter().filter(|o| o.state == UnitState::Passed).count();
    let _ = write!(
        text,
        "{passed} of {} passed; the passed ones are merged into your worktree. Finish your unit (do any failed part yourself).",
        outcomes.len()
    );
    text
}

/// The merge commit's message: the unit's id and title, never with the API key in it.
fn merge_message(mission: &Mission, unit: &UnitSpec) -> String {
    mission.rt.mask(&format!("Merge {}: {}", unit.id, unit.title))
}

/// Merges a reviewed unit (`theirs`: its reviewed commit, or its branch) into its target. Conflicts go to a resolver session, whose merge is
/// verified again; after the attempts run out the target is put back as it was.
async fn merge_into(
    mission: &Arc<Mission>,
    unit: &UnitSpec,
    theirs: &str,
    target: &MergeTarget,
    slot: &mut Slot,
) -> Result<String, String> {
    let _queue = target.lock.lock().await;
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
    let tools = Arc::new(toolbox(worktree.path(), true, &mission.config).map_err(|e| e.to_string())?);
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
            Session::new(
                rt,
                &format!("resolver:{}:{}", unit.id, mission.run_index),
                Role::ConflictResolver,
                Some(unit.id.clone()),
                mission.config.role(Role::ConflictResolver).clone(),
                tools.clone(),
                Vec::new(),
                std::mem::take(&mut first),
            )
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

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    #[test]
    fn a_resumed_unit_merges_the_commit_its_review_judged() {
        let passed = resume(UnitState::Reviewing, 2, Some(Verdict::Pass), Some("c0ffee"));
        assert_eq!(passed.passed_review(), Some(Some("c0ffee".to_string())));
        let merging = resume(UnitState::Merging, 1, Some(Verdict::Pass), Some("beef"));
        assert_eq!(merging.passed_review(), Some(Some("beef".to_string())));
        // A log from before commits were recorded: the unit still is not built again.
        let old_log = resume(UnitState::Reviewing, 1, Some(Verdict::Pass), None);
        assert_eq!(old_log.passed_review(), Some(None));
        // A failed or missing review, or a unit still being built: built (and reviewed) again.
        assert_eq!(
            resume(UnitState::Reviewing, 1, Some(Verdict::Fail), Some("x")).passed_review(),
            None
        );
        assert_eq!(resume(UnitState::Reviewing, 1, None, None).passed_review(), None);
        assert_eq!(
            resume(UnitState::Running, 1, Some(Verdict::Pass), Some("x")).passed_review(),
            None
        );
    }

    fn unit(id: &str, deps: &[&str]) -> UnitSpec {
        UnitSpec {
            id: id.into(),
            title: id.into(),
            description: "d".into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            files: vec![],
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
