//! The commander: owns a mission from the first checks to the seal, and picks it up again after a
//! crash, kill or cancel.
//!
//! Order of work: checks that can fail without side effects (repo, config, key, endpoint, dirty tree),
//! then the repo lock and the store, then discovery, planning, and rounds of execution + integration
//! until the master review passes or the round limit is reached. Every step is recorded in the
//! store's event log before it is acted on; `resume` replays that log and skips what is done.

mod approval;
mod rounds;
mod run;
mod start;

pub(crate) use start::{has_store, open_store_at};
pub use start::{open_store, open_store_in, repo_root, resume, run_task, ResumeOptions};

use rounds::drive;
pub(crate) use rounds::project_prompts;
#[cfg(test)]
use rounds::{retry_units, sealed_commit};
use run::{interrupted, run_mission, Claimed, Ending, Finish, Setup};
use start::{announce_dispatch_changes, mission_branch};

use std::path::PathBuf;

use orchestrator_protocol::Outcome;
use serde::{Deserialize, Serialize};

use crate::config::MissionSettings;

/// The state folder in the repo root; excluded from git through `.git/info/exclude`.
pub const STATE_DIR: &str = ".orchestrator";
pub(crate) const STORE_FILE: &str = "state.db";

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct MissionOptions {
    pub repo: PathBuf,
    pub objective: String,
    pub allow_dirty: bool,
    /// Fast-forward the user's branch when sealed (`--no-apply` turns it off).
    pub apply: bool,
    /// Keep the mission's branches when it is over (`--keep-branches`); by default only a branch
    /// holding work the user's branch lacks is kept.
    pub keep_branches: bool,
    /// What to do about the repository's interrupted missions.
    pub if_interrupted: IfInterrupted,
    pub settings: MissionSettings,
    /// The front end's handle to pause dispatch while the mission runs.
    pub control: crate::control::MissionControl,
}

/// What starting a mission does when the repository holds an interrupted one (not run by a live
/// process; a live one refuses through the repository lock, exit 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfInterrupted {
    /// Refuse the start (exit 2), naming it and the ways on: `orchestrator task` does this.
    Refuse,
    /// Abandon it first (`task --abandon`, the API's `abandon_interrupted`): its worktrees and
    /// branches go, its record stays.
    Abandon,
}

/// The flags a mission was started with, stored so that `resume` runs it the same way.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredOptions {
    apply: bool,
    #[serde(default)]
    keep_branches: bool,
    #[serde(flatten)]
    settings: MissionSettings,
}

impl StoredOptions {
    fn from(options: &MissionOptions) -> Self {
        StoredOptions {
            apply: options.apply,
            keep_branches: options.keep_branches,
            settings: options.settings.clone(),
        }
    }
}

/// How the mission ended, for the front end's last words and exit status.
#[derive(Debug, Clone)]
pub struct MissionReport {
    pub mission: String,
    pub outcome: Outcome,
    /// Sealed although no build, lint or test command judged the work (`--no-verify`).
    pub unverified: bool,
    pub summary: String,
    pub integration_branch: String,
    /// Whether the integration branch is still there: a finished mission's branch goes once the
    /// user's branch has everything on it.
    pub branch_kept: bool,
    pub result_commit: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventBus;
    use crate::units::UnitOutcome;
    use orchestrator_protocol::{Event, UnitSpec, UnitState};

    #[test]
    fn retried_units_keep_dependencies_among_themselves() {
        let unit = |id: &str, deps: &[&str]| UnitSpec {
            id: id.into(),
            title: id.into(),
            description: "d".into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            files: vec![],
            attempts: None,
        };
        let outcome = |u: UnitSpec, state| UnitOutcome {
            unit: u,
            state,
            summary: String::new(),
            reason: Some("x".into()),
            findings: None,
            interrupted: false,
        };
        let outcomes = vec![
            outcome(unit("a", &[]), UnitState::Passed),
            outcome(unit("b", &["a"]), UnitState::Failed),
            outcome(unit("c", &["a", "b"]), UnitState::Skipped),
        ];
        let next = retry_units(&outcomes, 2);
        assert_eq!(next.len(), 2);
        assert_eq!(next[0].id, "b-r2");
        assert!(next[0].depends_on.is_empty());
        assert_eq!(next[1].depends_on, vec!["b-r2"]);
        assert!(next[0].description.contains("did not pass: x"));
    }

    #[test]
    fn a_retry_of_a_retry_tells_of_the_last_attempt_only() {
        let failed = |unit: UnitSpec, findings: &str| UnitOutcome {
            unit,
            state: UnitState::Failed,
            summary: String::new(),
            reason: Some(format!("reason {findings}")),
            findings: Some(findings.into()),
            interrupted: false,
        };
        let first = UnitSpec {
            id: "a".into(),
            title: "a".into(),
            description: "Add mul.".into(),
            depends_on: vec![],
            files: vec![],
            attempts: None,
        };
        let second = retry_units(&[failed(first, "round one's error")], 2).remove(0);
        assert!(second.description.contains("round one's error"));
        let third = retry_units(&[failed(second, "round two's error")], 3).remove(0);
        assert_eq!(third.id, "a-r2-r3");
        assert!(third
            .description
            .starts_with("Add mul.\n\nA previous attempt did not pass: reason round two's error"));
        assert!(third.description.contains("round two's error"));
        assert!(!third.description.contains("round one"), "{}", third.description);
        assert_eq!(third.description.matches("A previous attempt").count(), 1);
    }

    #[test]
    fn a_seal_takes_the_verified_commit_not_what_came_after() {
        let bus = EventBus::new();
        let mut events = bus.subscribe();
        let verified = "a".repeat(40);
        let later = "b".repeat(40);
        assert_eq!(
            sealed_commit(&bus, Some(verified.clone()), later.clone()),
            verified
        );
        assert_eq!(
            sealed_commit(&bus, Some(verified.clone()), verified.clone()),
            verified
        );
        assert_eq!(
            sealed_commit(&bus, None, later.clone()),
            later,
            "a resumed seal has only the head"
        );
        bus.close();
        let notices: Vec<String> = std::iter::from_fn(|| events.try_recv().ok())
            .filter_map(|e| match &e.event {
                Event::Notice { message } => Some(message.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(
            notices[0].contains("only the verified aaaaaaaaaaaa is taken"),
            "{notices:?}"
        );
    }

    #[test]
    fn resume_flags_override_stored_ones() {
        let stored = StoredOptions {
            settings: MissionSettings {
                max_parallel: Some(4),
                budget_tokens: Some(10),
                ..Default::default()
            },
            ..Default::default()
        };
        let newer = MissionSettings {
            budget_tokens: Some(500),
            ..Default::default()
        };
        let merged = newer.or(&stored.settings);
        assert_eq!(merged.max_parallel, Some(4));
        assert_eq!(merged.budget_tokens, Some(500));
    }
}
