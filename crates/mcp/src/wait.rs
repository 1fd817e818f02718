//! `wait_for_mission`: follows a mission until it ends, a plan waits for the user, the wait's time
//! is up or the client cancels the call, telling the client what changes on the way as MCP progress
//! notifications when it asked for them (a `progressToken` in the call's `_meta`).

use std::path::Path;
use std::time::Duration;

use orchestrator_core::StatusReport;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use rmcp::RoleServer;
use tokio::time::Instant;

use crate::error::ToolError;
use crate::follow::{Follower, ProgressCounter, Snapshot};

/// How long a wait lasts when the call names no time.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(600);
/// The longest wait a call may ask for, in seconds.
pub const MAX_WAIT_SECONDS: f64 = 3600.0;
/// How often the store is probed: a mission's steps take seconds, so twice a second misses
/// nothing a person would see and costs two small queries.
const TICK: Duration = Duration::from_millis(500);
/// With nothing changing, a progress notification still goes out this often: clients that reset
/// their request timeout on progress (OpenCode does) then keep waiting through a long step.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// The wait `timeout_seconds` asks for, refused when it is not a number of seconds in range.
pub fn timeout_of(seconds: Option<f64>) -> Result<Duration, ToolError> {
    let Some(seconds) = seconds else {
        return Ok(DEFAULT_WAIT);
    };
    if !(0.0..=MAX_WAIT_SECONDS).contains(&seconds) {
        return Err(ToolError::Other(format!(
            "timeout_seconds must be from 0 to {MAX_WAIT_SECONDS} seconds, not {seconds}; leave it out to wait {} s",
            DEFAULT_WAIT.as_secs()
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// How a wait ended.
#[derive(Debug)]
pub enum Ended {
    /// The mission is not running any more (finished, cancelled or its process died).
    Stopped,
    /// A plan waits for the user's answer: nothing happens until the client passes it on.
    PlanWaits(StatusReport),
    /// The time was up while the mission still runs.
    TimedOut(StatusReport),
    /// The client cancelled the call or went away.
    Cancelled,
}

/// Where progress notifications go: the caller's connection and the token its call carried.
struct Notifier {
    context: RequestContext<RoleServer>,
    token: ProgressToken,
    counter: ProgressCounter,
    last: Instant,
}

impl Notifier {
    fn new(context: &RequestContext<RoleServer>) -> Option<Self> {
        let token = context.meta.get_progress_token()?;
        Some(Notifier {
            context: context.clone(),
            token,
            counter: ProgressCounter::default(),
            last: Instant::now(),
        })
    }

    /// Sends one notification; `false` when the client is gone.
    async fn send(&mut self, snapshot: &Snapshot, message: String) -> bool {
        let (progress, total) = self.counter.next(snapshot);
        let mut param = ProgressNotificationParam::new(self.token.clone(), progress).with_message(message);
        param.total = total;
        self.last = Instant::now();
        self.context.peer.notify_progress(param).await.is_ok()
    }
}

/// Follows mission `id` of `root` for at most `timeout`.
pub async fn follow(
    root: &Path,
    id: &str,
    timeout: Duration,
    context: &RequestContext<RoleServer>,
) -> Result<Ended, ToolError> {
    let deadline = Instant::now() + timeout;
    let mut notifier = Notifier::new(context);
    let mut follower = Follower::new(root, Some(id.to_string()));
    let mut last: Option<StatusReport> = None;
    loop {
        let before = follower.snapshot().cloned();
        match follower.poll() {
            Ok(Some(report)) => {
                let snapshot = Snapshot::of(&report);
                if let Some(notifier) = notifier.as_mut() {
                    let message = snapshot.changes_since(before.as_ref());
                    if !notifier.send(&snapshot, message).await {
                        return Ok(Ended::Cancelled);
                    }
                }
                last = Some(report);
            }
            Ok(None) => {}
            // The first read decides whether there is anything to follow; later ones may meet a
            // store busy for a moment, and the next tick reads again.
            Err(e) if last.is_some() => tracing::warn!("reading mission {id}: {e}"),
            Err(e) => return Err(e),
        }
        let Some(report) = last.take() else {
            return Err(ToolError::Other(format!("mission {id} cannot be read")));
        };
        if !report.running {
            return Ok(Ended::Stopped);
        }
        if report.waiting_plan.is_some() {
            return Ok(Ended::PlanWaits(report));
        }
        if Instant::now() >= deadline {
            return Ok(Ended::TimedOut(report));
        }
        if let (Some(notifier), Some(snapshot)) = (notifier.as_mut(), follower.snapshot()) {
            if notifier.last.elapsed() >= HEARTBEAT {
                let snapshot = snapshot.clone();
                if !notifier
                    .send(&snapshot, format!("still {}", snapshot.standing()))
                    .await
                {
                    return Ok(Ended::Cancelled);
                }
            }
        }
        last = Some(report);
        let pause = TICK.min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            _ = context.ct.cancelled() => return Ok(Ended::Cancelled),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_is_bounded() {
        assert_eq!(timeout_of(None).ok(), Some(DEFAULT_WAIT));
        assert_eq!(timeout_of(Some(0.0)).ok(), Some(Duration::ZERO));
        assert_eq!(timeout_of(Some(2.5)).ok(), Some(Duration::from_millis(2500)));
        for bad in [-1.0, 3600.5, 1e300, f64::NAN, f64::INFINITY] {
            let error = timeout_of(Some(bad)).expect_err("refused").to_string();
            assert!(
                error.contains("timeout_seconds must be from 0 to 3600"),
                "{error}"
            );
        }
    }
}
