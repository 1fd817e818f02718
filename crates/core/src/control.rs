//! The engine's end of the operations a front end sends into a running mission ([`Op`]).
//!
//! Pausing holds the dispatch of new units: sessions already running go on, but no queued unit starts
//! until dispatch is resumed. Cancelling is the `CancellationToken` every mission is started with;
//! [`Steering`] puts both behind the protocol's [`Steer`], so a front end sends `Op`s alone.
//!
//! An answer to a plan waiting for approval (`--approve-plan`) is an `Op` too: a front end in the
//! mission's process sends it here; `orchestrator approve` in another process records it in the
//! store and wakes the mission's process with SIGUSR1, which hands the stored answer to this same
//! channel (see `approval.rs`).
//!
//! A message for a worker (`Op::Tell`) goes into the control's mailbox; the mission stores it, and
//! the worker's session takes it before its next model call (see `inbox.rs`).

use std::sync::Arc;

use orchestrator_protocol::{Op, PlanAnswer, Steer};
use tokio::sync::watch;

use crate::inbox::{Mailbox, Recipient};
use tokio_util::sync::CancellationToken;

/// A clone-able handle to steer a mission. Create one, hand a clone to `run_task`/`resume` through the
/// options, keep the other in the front end.
#[derive(Clone)]
pub struct MissionControl {
    paused: Arc<watch::Sender<bool>>,
    /// The latest answer to a waiting plan, with the attempt it answers: the mission takes the one
    /// for the plan it shows and ignores the others.
    plan_answer: Arc<watch::Sender<Option<(u32, PlanAnswer)>>>,
    /// Messages for workers (`Op::Tell`, `orchestrator tell`) on their way to their sessions.
    mail: Arc<Mailbox>,
}

impl Default for MissionControl {
    fn default() -> Self {
        MissionControl {
            paused: Arc::new(watch::Sender::new(false)),
            plan_answer: Arc::new(watch::Sender::new(None)),
            mail: Arc::default(),
        }
    }
}

impl std::fmt::Debug for MissionControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MissionControl")
            .field("paused", &self.is_paused())
            .finish()
    }
}

impl MissionControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// No queued unit starts until [`MissionControl::resume_dispatch`]; running sessions go on.
    pub fn pause_dispatch(&self) {
        self.paused
            .send_if_modified(|paused| !std::mem::replace(paused, true));
    }

    pub fn resume_dispatch(&self) {
        self.paused
            .send_if_modified(|paused| std::mem::replace(paused, false));
    }

    /// Pauses when running, resumes when paused; returns whether dispatch is paused now.
    pub fn toggle_dispatch(&self) -> bool {
        let mut now = false;
        self.paused.send_modify(|paused| {
            *paused = !*paused;
            now = *paused;
        });
        now
    }

    pub fn is_paused(&self) -> bool {
        *self.paused.borrow()
    }

    /// A receiver that sees every change of the paused flag.
    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }

    /// Answers the plan `attempt` waiting for approval; the latest answer replaces one not taken yet.
    pub fn answer_plan(&self, attempt: u32, answer: PlanAnswer) {
        self.plan_answer.send_replace(Some((attempt, answer)));
    }

    /// A receiver of every answer given (the one given before it was made included).
    pub(crate) fn plan_answers(&self) -> watch::Receiver<Option<(u32, PlanAnswer)>> {
        let mut answers = self.plan_answer.subscribe();
        answers.mark_changed();
        answers
    }

    /// Sends `message` to `to`'s worker: the mission checks and stores it, its worker reads it before
    /// its next model call (`user_message`), and a refusal shows as a notice. False when too many
    /// tells wait to be stored already (the message is dropped).
    pub fn tell(&self, to: Recipient, message: String) -> bool {
        self.mail.request(to, message)
    }

    pub(crate) fn mailbox(&self) -> &Mailbox {
        &self.mail
    }

    /// Waits while dispatch is paused; false when the mission is cancelled first.
    pub(crate) async fn wait_for_dispatch(&self, cancel: &CancellationToken) -> bool {
        let mut paused = self.paused.subscribe();
        tokio::select! {
            open = paused.wait_for(|paused| !*paused) => open.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }
}

/// A running mission's controls as one [`Steer`]: dispatch through its [`MissionControl`], `Cancel`
/// through its cancellation token.
#[derive(Clone, Debug)]
pub struct Steering {
    control: MissionControl,
    cancel: CancellationToken,
}

impl Steering {
    /// The controls of the mission started with `control` and `cancel`.
    pub fn new(control: MissionControl, cancel: CancellationToken) -> Self {
        Steering { control, cancel }
    }

    /// Whether dispatch is paused now (the engine confirms it with a `dispatch_changed` event).
    pub fn dispatch_paused(&self) -> bool {
        self.control.is_paused()
    }
}

impl Steer for Steering {
    fn send(&self, op: Op) {
        match op {
            Op::PauseDispatch => self.control.pause_dispatch(),
            Op::ResumeDispatch => self.control.resume_dispatch(),
            Op::Cancel => self.cancel.cancel(),
            Op::AnswerPlan { attempt, answer } => self.control.answer_plan(attempt, answer),
            Op::Tell { unit, message } => {
                if !self.control.tell(Recipient::from_op(unit), message) {
                    tracing::warn!("too many messages wait to be stored; one was dropped");
                }
            }
        }
    }

    fn cancel_requested(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn paused_dispatch_waits_until_resumed() {
        let control = MissionControl::new();
        let cancel = CancellationToken::new();
        assert!(
            control.wait_for_dispatch(&cancel).await,
            "open dispatch does not wait"
        );
        control.pause_dispatch();
        let waiter = {
            let (control, cancel) = (control.clone(), cancel.clone());
            tokio::spawn(async move { control.wait_for_dispatch(&cancel).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a paused dispatch must wait");
        control.resume_dispatch();
        assert!(waiter.await.unwrap());
    }

    #[tokio::test]
    async fn cancel_ends_a_paused_wait() {
        let control = MissionControl::new();
        let cancel = CancellationToken::new();
        assert!(control.toggle_dispatch());
        cancel.cancel();
        assert!(!control.wait_for_dispatch(&cancel).await);
    }
}
