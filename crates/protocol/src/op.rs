//! Operations: what a front end asks of a running mission, the other direction of the event stream.
//! A front end sends [`Op`]s through a [`Steer`] and learns their effect from the events that follow
//! (`dispatch_changed`, `mission_finished`), so it needs no handle into the engine.

use serde::{Deserialize, Serialize};

use crate::PlanAnswer;

/// One request to a running mission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// No queued unit starts until `ResumeDispatch`; running sessions go on.
    PauseDispatch,
    ResumeDispatch,
    /// Stop cleanly: running sessions are aborted, merged work is kept, and the mission stays
    /// resumable.
    Cancel,
    /// Answers the plan waiting for approval (`plan_awaiting_approval` with this `attempt`); an
    /// answer to another attempt is ignored. The effect shows as `plan_answered`, or as a notice when
    /// an edited plan is refused.
    AnswerPlan {
        attempt: u32,
        #[serde(flatten)]
        answer: PlanAnswer,
    },
    /// A message from the person to a unit's worker (`unit`; `None`: every unit whose worker is
    /// running), given to the worker's session before its next model call. The effect shows as
    /// `user_message` when the worker takes it, or as a notice when it is refused (an unknown or
    /// finished unit, a message too long, a full inbox).
    Tell {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
        message: String,
    },
}

/// Where a front end's operations go: the engine's handle on a running mission, or a test's recorder.
pub trait Steer: Send + Sync {
    fn send(&self, op: Op);

    /// Whether the mission was asked to stop (by this front end or another way, e.g. a signal).
    fn cancel_requested(&self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_are_tagged_json() {
        let text = serde_json::to_string(&Op::PauseDispatch).unwrap();
        assert_eq!(text, r#"{"op":"pause_dispatch"}"#);
        let back: Op = serde_json::from_str(r#"{"op":"cancel"}"#).unwrap();
        assert_eq!(back, Op::Cancel);
        assert!(serde_json::from_str::<Op>(r#"{"op":"explode"}"#).is_err());
        let answer: Op = serde_json::from_str(
            r#"{"op":"answer_plan","attempt":2,"answer":"reject","feedback":"smaller"}"#,
        )
        .unwrap();
        assert_eq!(
            answer,
            Op::AnswerPlan {
                attempt: 2,
                answer: PlanAnswer::Reject {
                    feedback: "smaller".into()
                }
            }
        );
        let tell: Op = serde_json::from_str(r#"{"op":"tell","message":"use tabs"}"#).unwrap();
        assert_eq!(
            tell,
            Op::Tell {
                unit: None,
                message: "use tabs".into()
            }
        );
    }
}
