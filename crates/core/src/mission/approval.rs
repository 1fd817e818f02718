//! Planning, and with `--approve-plan` the wait for a person's answer before anything is executed:
//! the plan is logged as `plan_awaiting_approval` (so a resumed mission waits again), an answer is
//! logged as `plan_answered`, and a rejection sends the planner back to work with the feedback.

use std::path::Path;
use std::sync::Arc;

use orchestrator_protocol::{Event, HookKind, HookRun, Outcome, Phase, PlanAnswer, UnitSpec};
use orchestrator_tools::Toolbox;

use crate::config::Config;
use crate::hooks::{self, HookCall};
use crate::replay::ApprovalReplay;
use crate::roles::{self, Revision};
use crate::session::Runtime;

use super::rounds::budget_ending;
use super::run::{interrupted, Ending};

/// What planning needs from the mission.
pub(super) struct Planning<'a> {
    pub(super) rt: &'a Runtime,
    pub(super) config: &'a Config,
    pub(super) objective: &'a str,
    pub(super) context: &'a str,
    pub(super) tools: Arc<Toolbox>,
    /// The mission's base worktree, where the `after_plan` hook runs (read-only to it).
    pub(super) base_dir: &'a Path,
    pub(super) base_commit: &'a str,
}

/// The plan of round 1: the planner's, approved by a person when the mission asks for that (or a
/// plan waiting from an earlier run). `Err` is how the mission ends instead.
pub(super) async fn plan_round_one(
    planning: Planning<'_>,
    replay: &ApprovalReplay,
) -> std::result::Result<Vec<UnitSpec>, Ending> {
    if let Some(units) = &replay.approved {
        return Ok(units.clone());
    }
    let rt = planning.rt;
    let mut attempt = replay.attempt;
    // A plan shown before a kill waits again, also if the config no longer asks for approval: the
    // person was told it waits for them.
    let mut shown = replay.waiting.clone();
    let mut rejected = replay.rejected.clone();
    let mut rejections = 0;
    // The plan the `after_plan` hook refused last, with its command and what it said: the next
    // planner answers that (a plan the person approves has passed the hook).
    let mut refused: Option<(Vec<UnitSpec>, String, String)> = None;
    let mut refusals = 0;
    loop {
        let units = match shown.take() {
            Some(units) => units,
            None => {
                let revision = match &refused {
                    Some((units, command, feedback)) => Some(Revision {
                        attempt: refusals,
                        rejected: units,
                        feedback,
                        by_hook: Some(command),
                    }),
                    None => rejected.as_ref().map(|(units, feedback)| Revision {
                        attempt: attempt + 1,
                        rejected: units,
                        feedback,
                        by_hook: None,
                    }),
                };
                // Ordered before the hook and the person see it (rounds.rs orders later rounds).
                let units = crate::plan::order_for_sessions(
                    planning.config.max_parallel,
                    plan_once(&planning, revision).await?,
                );
                if let Some(run) = after_plan(&planning, &units, refusals + 1).await? {
                    refusals += 1;
                    if refusals >= planning.config.plan_attempts {
                        return Err(refused_too_often(&run, refusals));
                    }
                    refused = Some((units, run.command.clone(), hooks::plan_feedback(&run)));
                    continue;
                }
                refused = None;
                if !planning.config.approve_plan {
                    return Ok(units);
                }
                attempt += 1;
                units
            }
        };
        rt.bus.emit(Event::PlanAwaitingApproval {
            attempt,
            units: units.clone(),
        });
        let Some(answer) = wait_for_answer(rt, planning.config, attempt).await else {
            return Err(interrupted());
        };
        rt.bus.emit(Event::PlanAnswered {
            attempt,
            answer: answer.clone(),
        });
        forget_stored_answer(rt);
        match answer {
            PlanAnswer::Approve => return Ok(units),
            PlanAnswer::Edit { units } => return Ok(units),
            PlanAnswer::Reject { feedback } => {
                rejections += 1;
                if rejections >= planning.config.plan_attempts {
                    return Err(rejected_too_often(rejections));
                }
                rejected = Some((units, feedback));
            }
        }
    }
}

/// The `after_plan` hook on a new plan, in the base worktree with the plan on its stdin: `None`
/// when it passed (or none is configured), else the refusing run. `Err` is a cancel.
async fn after_plan(
    planning: &Planning<'_>,
    units: &[UnitSpec],
    attempt: u32,
) -> std::result::Result<Option<HookRun>, Ending> {
    let Some(hook) = planning.config.hooks.get(HookKind::AfterPlan) else {
        return Ok(None);
    };
    let rt = planning.rt;
    let call = HookCall {
        kind: HookKind::AfterPlan,
        dir: planning.base_dir,
        writable: false,
        mission: &rt.mission,
        unit: None,
        attempt: Some(attempt),
        env: vec![("ORCHESTRATOR_BASE_COMMIT", planning.base_commit.to_string())],
        input: serde_json::json!({
            "hook": HookKind::AfterPlan,
            "mission": rt.mission,
            "objective": planning.objective,
            "base_commit": planning.base_commit,
            "plan": { "tasks": units },
        }),
    };
    let run = hooks::run(hook, call, &planning.config.sandbox, &rt.cancel).await;
    if rt.cancel.is_cancelled() {
        return Err(interrupted());
    }
    rt.bus.emit(Event::HookRan { run: run.clone() });
    Ok((!run.passed()).then_some(run))
}

/// The mission stops when the `after_plan` hook refused as many plans as the planner has attempts:
/// not sealed, nothing executed, resumable once the hook or the objective is changed.
fn refused_too_often(run: &HookRun, refusals: u32) -> Ending {
    Ending {
        resumable: true,
        ..Ending::unsealed(format!(
            "{}\nIt refused {refusals} plan(s) in a row (limits.plan_attempts); nothing was executed. Change what \
             it checks or `[hooks] after_plan`, then `orchestrator resume` plans again.",
            hooks::plan_feedback(run)
        ))
    }
}

/// One planner session, first or after a rejection.
async fn plan_once(
    planning: &Planning<'_>,
    revision: Option<Revision<'_>>,
) -> std::result::Result<Vec<UnitSpec>, Ending> {
    let rt = planning.rt;
    rt.bus.emit(Event::PhaseChanged {
        phase: Phase::Planning,
        round: 1,
    });
    let tools = planning.tools.clone();
    match roles::plan(
        rt,
        planning.config,
        planning.objective,
        planning.context,
        tools,
        revision,
    )
    .await
    {
        Ok(plan) => Ok(plan),
        Err(_) if rt.budget_spent() => Err(budget_ending(rt, planning.config)),
        Err(_) if rt.cancel.is_cancelled() => Err(interrupted()),
        Err(reason) => Err(Ending::unsealed(reason)),
    }
}

/// Waits for an answer to plan `attempt`, through the mission's control (front ends in this process,
/// and answers stored by `orchestrator approve`, which the wake-up signal hands over). An edited plan
/// that fails the planner's checks is refused with a notice, and the plan goes on waiting. `None`
/// when the mission is cancelled first.
async fn wait_for_answer(rt: &Runtime, config: &Config, attempt: u32) -> Option<PlanAnswer> {
    let mut answers = rt.control.plan_answers();
    loop {
        tokio::select! {
            changed = answers.changed() => changed.ok()?,
            _ = rt.cancel.cancelled() => return None,
        }
        let Some((given, answer)) = answers.borrow_and_update().clone() else {
            continue;
        };
        if given != attempt {
            continue;
        }
        let PlanAnswer::Edit { units } = answer else {
            return Some(answer);
        };
        match checked_edit(&units, config.max_units) {
            Ok(units) => return Some(PlanAnswer::Edit { units }),
            Err(problems) => {
                forget_stored_answer(rt);
                rt.bus.emit(Event::Notice {
                    message: format!(
                        "the edited plan was refused; plan {attempt} still waits for approval:\n- {}",
                        problems.join("\n- ")
                    ),
                });
            }
        }
    }
}

/// An edited plan, checked as a planner's plan is, and against the mission's unit limit.
fn checked_edit(units: &[UnitSpec], max_units: usize) -> std::result::Result<Vec<UnitSpec>, Vec<String>> {
    let units = crate::plan::check_units(units)?;
    if units.len() > max_units {
        return Err(vec![format!(
            "the plan has {} units; this mission may hold {max_units} (limits.max_units)",
            units.len()
        )]);
    }
    Ok(units)
}

/// An answer taken (or refused) is gone from the store, so a later wake-up does not hand it over
/// again.
fn forget_stored_answer(rt: &Runtime) {
    if let Some(store) = &rt.store {
        if let Err(e) = store.clear_plan_answer(&rt.mission) {
            tracing::warn!("cannot remove the plan answer from the store: {e}");
        }
    }
}

/// The mission stops after as many rejections as the planner has attempts: cleanly, resumable (a
/// resume plans again with the last feedback, and that plan waits for approval again).
fn rejected_too_often(rejections: u32) -> Ending {
    Ending {
        outcome: Outcome::Interrupted,
        summary: format!(
            "the plan was rejected {rejections} time(s) (limits.plan_attempts); nothing was executed. \
             `orchestrator resume` plans again with your last feedback, and that plan waits for your approval; \
             `orchestrator task --abandon` gives the mission up."
        ),
        result_commit: None,
        resumable: true,
        unverified: false,
    }
}
