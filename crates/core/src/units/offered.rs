//! A unit run by an external worker (`--workers external`, issue #20): the commander publishes
//! its base, offers it, waits for the result while the worker's events are relayed into the log,
//! then fetches the reviewed commit and merges it as if its own worker had built it.

use orchestrator_protocol::UnitState;
use orchestrator_store::{UnitState as QueueState, MAX_TAKEOVERS};

use super::unit::Reviewed;
use super::{MergeTarget, UnitOutcome, UnitRun};
use crate::offers::Offers;
use crate::session::Slot;
use crate::ticket::{holder_tag, worker_ref, Ticket, TicketResult, VerifyCommands, TICKET_VERSION};

impl UnitRun {
    pub(super) async fn execute_offered(
        &self,
        offers: &Offers,
        target: &MergeTarget,
        slot: &mut Slot,
    ) -> UnitOutcome {
        let mission = &self.mission;
        let base = target.head();
        if let Err(e) = offers.publish(&base).await {
            // Not the unit's fault: it is offered again when the mission is resumed.
            return UnitOutcome {
                reason: Some(format!("the unit's base could not be published: {e}")),
                ..UnitOutcome::interrupted(&self.unit)
            };
        }
        let ticket = self.ticket(base);
        self.state(UnitState::Queued, 0, Some("offered to the workers".into()));
        let done = match offers.offer(&ticket) {
            Ok(done) => done,
            Err(e) => {
                return UnitOutcome {
                    reason: Some(e),
                    ..UnitOutcome::interrupted(&self.unit)
                }
            }
        };
        let row = tokio::select! {
            row = done => row,
            // The worker goes on; a resumed commander finds its result in the queue.
            _ = mission.rt.cancel.cancelled() => {
                offers.forget(&self.unit.id);
                return UnitOutcome::interrupted(&self.unit);
            }
        };
        let Ok(row) = row else {
            return UnitOutcome::interrupted(&self.unit);
        };
        let result = row
            .result
            .clone()
            .and_then(|value| serde_json::from_value::<TicketResult>(value).ok());
        let Some(result) = result else {
            if row.state == QueueState::Failed && row.result.is_none() && row.takeovers >= MAX_TAKEOVERS {
                return self.failed(abandoned(&row), String::new());
            }
            let state = if row.state == QueueState::Done {
                "done"
            } else {
                "failed"
            };
            return self.failed(
                format!("the worker reported the unit {state} without a readable result"),
                String::new(),
            );
        };
        // Stopped, not judged: the mission's budget was spent on it. The next run offers it again.
        if result.interrupted {
            return match result.reason.as_deref() {
                Some(crate::units::BUDGET_SPENT) => UnitOutcome::out_of_budget(&self.unit),
                _ => UnitOutcome {
                    reason: result.reason,
                    ..UnitOutcome::interrupted(&self.unit)
                },
            };
        }
        if !result.passed {
            let mut outcome = self.failed(result.reason.unwrap_or_else(|| "failed".into()), result.summary);
            outcome.findings = result.findings;
            return outcome;
        }
        self.merge_pushed(offers, slot, target, result, (row.key.attempt, row.token))
            .await
    }

    /// Fetches what the worker pushed and merges it: only from the ref of the holder whose fenced
    /// result this is, and only the commit that result names.
    async fn merge_pushed(
        &self,
        offers: &Offers,
        slot: &mut Slot,
        target: &MergeTarget,
        result: TicketResult,
        (attempt, token): (u32, i64),
    ) -> UnitOutcome {
        let expected = worker_ref(&self.mission.id, &holder_tag(&self.unit.id, attempt, token));
        let commit = match (result.commit, result.pushed_ref) {
            (Some(commit), Some(pushed)) if pushed == expected => commit,
            _ => {
                return self.failed(
                    format!("the worker's result does not name a commit on {expected}; nothing was merged"),
                    result.summary,
                )
            }
        };
        let there = match offers.remote_commit(&expected).await {
            Ok(there) => there,
            // The remote did not answer: not the unit's fault, it is merged on `resume`.
            Err(e) => {
                return UnitOutcome {
                    reason: Some(e),
                    ..UnitOutcome::interrupted(&self.unit)
                }
            }
        };
        if there.as_deref() != Some(commit.as_str()) {
            let holds = there
                .as_deref()
                .map_or("nothing", crate::verify::short)
                .to_string();
            return self.failed(
                format!(
                    "the worker's result names {} but {expected} holds {holds}; nothing was merged",
                    crate::verify::short(&commit)
                ),
                result.summary,
            );
        }
        let branch = self.mission.branch(&self.unit.id);
        match offers.fetch(&expected, &branch).await {
            Ok(fetched) if fetched == commit => {}
            Ok(_) | Err(_) => {
                return UnitOutcome {
                    reason: Some(format!("cannot fetch {expected} from the shared remote")),
                    ..UnitOutcome::interrupted(&self.unit)
                }
            }
        }
        let reviewed = Reviewed {
            summary: result.summary,
            commit: Some(commit),
        };
        let outcome = self.merge_reviewed(slot, target, &branch, reviewed).await;
        if !outcome.interrupted {
            self.mission.branch_done(branch);
        }
        outcome
    }

    fn ticket(&self, base: String) -> Ticket {
        let mission = &self.mission;
        let verifier = &mission.verifier;
        let spent = mission.rt.tokens_spent();
        Ticket {
            version: TICKET_VERSION,
            objective: mission.objective.clone(),
            unit: self.unit.clone(),
            round: self.round,
            base,
            mission_base: mission.base_commit.clone(),
            remote: mission.config.remote.clone().unwrap_or_default(),
            context: mission.context.clone(),
            verify: VerifyCommands {
                install: verifier.install.clone(),
                build: verifier.build.clone(),
                lint: verifier.lint.clone(),
                test: verifier.test.clone(),
                protect_tests: verifier.protect_tests,
            },
            settings: mission.settings.clone(),
            budget_left: mission
                .rt
                .budget_tokens
                .map(|budget| budget.saturating_sub(spent)),
            budget_total: mission.rt.budget_tokens,
            units_known: mission.units_known(),
        }
    }
}

/// Why the store stopped handing out a unit whose every holder died (see `MAX_TAKEOVERS`).
fn abandoned(row: &orchestrator_store::WorkUnit) -> String {
    let last = row
        .holder
        .as_ref()
        .map(|h| {
            format!(
                " (the last: {} on {})",
                crate::leader::shown(&h.id),
                crate::leader::shown(&h.host)
            )
        })
        .unwrap_or_default();
    format!(
        "{} workers in turn took it and stopped renewing their lease{last}: crashed, killed or cut off while \
         building it, so it is not handed out again. Look at what its sessions ran (`orchestrator logs`)",
        row.takeovers + 1
    )
}

#[cfg(test)]
mod tests {
    use orchestrator_store::{Holder, UnitKey, UnitState, WorkUnit};

    use super::*;

    #[test]
    fn a_unit_every_holder_died_on_says_how_many_and_who_last() {
        let row = WorkUnit {
            key: UnitKey {
                mission: "m".into(),
                unit: "a".into(),
                attempt: 1,
            },
            state: UnitState::Failed,
            token: 4,
            holder: Some(Holder {
                id: "worker pid 7".into(),
                host: "host\u{1b}[31m-b".into(),
            }),
            expires_at_ms: None,
            expired: false,
            result: None,
            takeovers: MAX_TAKEOVERS,
            give_backs: 0,
        };
        let why = abandoned(&row);
        assert!(why.starts_with("3 workers in turn took it"), "{why}");
        assert!(why.contains("worker pid 7 on host"), "{why}");
        assert!(!why.contains('\u{1b}'), "a host's name is shown escaped: {why}");
    }
}
