//! Plan approval from outside the mission's process (`orchestrator approve`): the answer is checked,
//! recorded in the store (so it holds while no process runs the mission, and `resume` takes it), and
//! the mission's process is woken with SIGUSR1, which hands the stored answer to the mission's
//! control as the same `AnswerPlan` operation an in-process front end sends. No file is polled.

use std::path::Path;
use std::sync::Arc;

use orchestrator_protocol::{EventEnvelope, PlanAnswer, UnitSpec};
use orchestrator_store::{MissionRecord, MissionStatus, Store};
use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};

use crate::control::MissionControl;
use crate::error::{EngineError, Result};
use crate::events::EventBus;
use crate::mission::open_store_at;
use crate::missions::find_mission;
use crate::replay::Replay;
use crate::status::mission_process;

/// A plan waiting for a person's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitingPlan {
    /// Which plan this is (2 after one rejection); an answer names it.
    pub attempt: u32,
    pub units: Vec<UnitSpec>,
}

impl WaitingPlan {
    /// The plan waiting in a mission's log (the whole log, read back from the store), if any.
    pub fn from_events(events: &[EventEnvelope]) -> Option<WaitingPlan> {
        WaitingPlan::from_replay(&Replay::from_events(events))
    }

    /// The plan of a mission's log, when one waits.
    pub fn from_replay(replay: &Replay) -> Option<WaitingPlan> {
        let units = replay.approval.waiting.clone()?;
        Some(WaitingPlan {
            attempt: replay.approval.attempt,
            units,
        })
    }
}

/// The mission `mission` names (the latest by default) and the plan it has waiting, if any.
pub fn waiting_plan(root: &Path, mission: Option<&str>) -> Result<(String, Option<WaitingPlan>)> {
    let store = open_store_at(root, false)?;
    let record = find_mission(&store, mission)?;
    let waiting = match record.status.is_unfinished() {
        true => waiting_in(&store, &record.id)?,
        false => None,
    };
    Ok((record.id, waiting))
}

fn waiting_in(store: &Store, mission: &str) -> Result<Option<WaitingPlan>> {
    let events = store
        .events_after(mission, None)
        .map_err(|e| EngineError::Usage(e.to_string()))?;
    Ok(WaitingPlan::from_replay(&Replay::from_events(&events)))
}

/// Answers the plan waiting in mission `mission` (the latest by default): exit 2 when none waits or
/// an edited plan fails the planner's checks (the plan then keeps waiting). Returns what happened,
/// in words.
pub async fn answer_plan(root: &Path, mission: Option<&str>, answer: PlanAnswer) -> Result<String> {
    let store = open_store_at(root, false)?;
    let record = find_mission(&store, mission)?;
    let id = record.id.clone();
    let waiting = match record.status.is_unfinished() {
        true => waiting_in(&store, &id)?,
        false => None,
    };
    let Some(waiting) = waiting else {
        return Err(EngineError::Conflict(format!(
            "mission {id} has no plan waiting for approval (it is {}); plans wait only in missions \
             started with --approve-plan, after planning",
            record.status
        )));
    };
    let answer = checked(answer)?;
    let what = match &answer {
        PlanAnswer::Approve => "approved",
        PlanAnswer::Reject { .. } => "rejected; the planner plans again with your feedback",
        PlanAnswer::Edit { .. } => "replaced with your edit",
    };
    store
        .put_plan_answer(&id, waiting.attempt, &answer)
        .map_err(|e| EngineError::Other(e.to_string()))?;
    if !wake(root, &record)? {
        return Ok(format!(
            "plan {} of mission {id} {what}; the mission is not running: `orchestrator resume --mission {id}` takes the answer",
            waiting.attempt
        ));
    }
    Ok(format!("plan {} of mission {id} {what}", waiting.attempt))
}

/// Wakes the process running `record`'s mission with SIGUSR1, so it reads what was stored for it;
/// false when no process runs the mission (the stored word waits for `resume`).
pub(crate) fn wake(root: &Path, record: &MissionRecord) -> Result<bool> {
    let live = record
        .pid
        .filter(|p| record.status == MissionStatus::Running && mission_process(root, *p))
        .and_then(|p| i32::try_from(p).ok());
    let Some(pid) = live else {
        return Ok(false);
    };
    // SAFETY: kill only sends a signal to the recorded mission process, which handles SIGUSR1 from
    // before it recorded its pid (see `install_wake_signal`).
    if unsafe { libc::kill(pid, libc::SIGUSR1) } != 0 {
        return Err(EngineError::Other(format!(
            "it is recorded, but the mission process {pid} cannot be woken: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(true)
}

/// An answer as the HTTP API and MCP take it: `answer` is `approve`, `reject` (with `feedback`, what
/// the planner should change) or `edit` (with `plan`, the new plan as `submit_plan` takes it:
/// `{"tasks": [...]}` or the bare list). An edit is checked as the planner's plan is.
pub fn plan_answer_from(
    answer: &str,
    feedback: Option<String>,
    plan: Option<serde_json::Value>,
) -> Result<PlanAnswer> {
    match (answer, feedback, plan) {
        ("approve", None, None) => Ok(PlanAnswer::Approve),
        ("reject", Some(feedback), None) if !feedback.trim().is_empty() => {
            Ok(PlanAnswer::Reject { feedback })
        }
        ("reject", _, None) => Err(EngineError::Usage(
            "a rejection needs `feedback`: what the planner should change".into(),
        )),
        ("edit", None, Some(plan)) => {
            let text = plan.to_string();
            crate::plan::parse_plan_text(&text)
                .map(|units| PlanAnswer::Edit { units })
                .map_err(|problems| refused_edit(&problems))
        }
        ("edit", _, None) => Err(EngineError::Usage(
            "an edit needs `plan`: the new plan as submit_plan takes it, {\"tasks\": [...]}".into(),
        )),
        ("approve" | "reject" | "edit", _, _) => Err(EngineError::Usage(
            "`feedback` goes only with `reject`, `plan` only with `edit`".into(),
        )),
        (other, _, _) => Err(EngineError::Usage(format!(
            "unknown answer `{other}`; answer with approve, reject (with feedback) or edit (with plan)"
        ))),
    }
}

/// An edited plan must pass the planner's checks before it is recorded.
fn checked(answer: PlanAnswer) -> Result<PlanAnswer> {
    let PlanAnswer::Edit { units } = answer else {
        return Ok(answer);
    };
    crate::plan::check_units(&units)
        .map(|units| PlanAnswer::Edit { units })
        .map_err(|problems| refused_edit(&problems))
}

/// Why an edited plan was refused, as `approve`, the API and MCP say it.
pub fn refused_edit(problems: &[String]) -> EngineError {
    EngineError::Usage(format!(
        "the edited plan is refused (the plan keeps waiting):\n- {}",
        problems.join("\n- ")
    ))
}

/// Installs the SIGUSR1 handler before the mission's pid is recorded: SIGUSR1's default action ends
/// a process, and tokio keeps a handler installed for the rest of the process once made.
pub(crate) fn install_wake_signal() {
    if let Err(e) = signal(SignalKind::user_defined1()) {
        tracing::warn!(
            "cannot watch SIGUSR1; `orchestrator approve` reaches this mission only on resume: {e}"
        );
    }
}

/// Hands what other processes stored for the mission to its control: the answer `orchestrator
/// approve` stored, and the messages `orchestrator tell` stored (with the tells of front ends in this
/// process, stored first). Once now (what was given while no process ran the mission), then on every
/// SIGUSR1 and every tell in this process. The mission removes an answer once it has taken it; a
/// message is marked delivered when its worker takes it.
pub(crate) fn forward_stored(
    store: Arc<Store>,
    mission: String,
    control: MissionControl,
    bus: EventBus,
) -> tokio::task::JoinHandle<()> {
    // Before any session starts: a resumed worker's first model call carries what waits for it.
    crate::inbox::forward(&store, &mission, control.mailbox(), &bus);
    tokio::spawn(async move {
        let mut wake = match signal(SignalKind::user_defined1()) {
            Ok(wake) => Some(wake),
            Err(e) => {
                tracing::warn!("cannot watch SIGUSR1: {e}");
                None
            }
        };
        loop {
            match store.plan_answer(&mission) {
                Ok(Some((attempt, answer))) => control.answer_plan(attempt, answer),
                Ok(None) => {}
                Err(e) => tracing::warn!("cannot read the stored plan answer: {e}"),
            }
            // Also on the first pass, though the inbox was just read: a SIGUSR1 sent before the
            // listener above existed is lost, so what it announced is read here.
            crate::inbox::forward(&store, &mission, control.mailbox(), &bus);
            let signalled = async {
                match wake.as_mut() {
                    Some(signals) => signals.recv().await.is_some(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                open = signalled => if !open { return },
                _ = crate::inbox::requested(control.mailbox()) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_from_json_say_what_is_missing() {
        assert_eq!(
            plan_answer_from("approve", None, None).unwrap(),
            PlanAnswer::Approve
        );
        let reject = plan_answer_from("reject", Some("smaller".into()), None).unwrap();
        assert_eq!(
            reject,
            PlanAnswer::Reject {
                feedback: "smaller".into()
            }
        );
        let error = |a, f: Option<&str>, p| {
            plan_answer_from(a, f.map(str::to_string), p)
                .unwrap_err()
                .to_string()
        };
        assert!(error("reject", None, None).contains("needs `feedback`"));
        assert!(error("edit", None, None).contains("needs `plan`"));
        assert!(error("approve", Some("x"), None).contains("only with `reject`"));
        assert!(error("maybe", None, None).contains("unknown answer `maybe`"));
        let cycle = json!([{"id": "a", "title": "A", "description": "d", "depends_on": ["a"]}]);
        assert!(error("edit", None, Some(cycle)).contains("depends on itself"));
        let plan = json!({"tasks": [{"id": "a", "title": "A", "description": "d", "depends_on": []}]});
        assert!(
            matches!(plan_answer_from("edit", None, Some(plan)), Ok(PlanAnswer::Edit { units }) if units.len() == 1)
        );
    }
}
