//! The commander: owns a mission from the first checks to the seal, and picks it up again after a
//! crash, kill or cancel.
//!
//! Order of work: checks that can fail without side effects (repo, config, key, endpoint, dirty tree),
//! then the repo lock and the store, then discovery, planning, and rounds of execution + integration
//! until the master review passes or the round limit is reached. Every step is recorded in the
//! store's event log before it is acted on; `resume` replays that log and skips what is done.

mod rounds;
mod run;
mod start;

pub(crate) use start::open_store_at;
pub use start::{open_store, open_store_in, repo_root, resume, run_task, ResumeOptions};

use rounds::drive;
#[cfg(test)]
use rounds::{retry_units, sealed_commit};
use run::{interrupted, run_mission, Ending, Finish, Setup};
use start::{announce_dispatch_changes, mission_branch};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orchestrator_git::Repo;
use orchestrator_protocol::{Event, Outcome, Role, UnitSpec, UnitState};
use orchestrator_tools::{ToolOptions, Toolbox};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Overrides, Provider};
use crate::error::{EngineError, Result};
use crate::plan::{render_todo, TodoEntry};
use crate::replay::Replay;
use crate::session::Runtime;
use crate::verify::Verifier;

/// The state folder in the repo root; excluded from git through `.git/info/exclude`.
pub const STATE_DIR: &str = ".orchestrator";
const STORE_FILE: &str = "state.db";

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
    pub overrides: Overrides,
    /// The front end's handle to pause dispatch while the mission runs.
    pub control: crate::MissionControl,
}

/// The flags a mission was started with, stored so that `resume` runs it the same way.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct StoredOptions {
    apply: bool,
    #[serde(default)]
    keep_branches: bool,
    provider: Option<String>,
    model: Option<String>,
    max_parallel: Option<usize>,
    max_depth: Option<u32>,
    rounds: Option<u32>,
    budget_tokens: Option<u64>,
    #[serde(default)]
    opencode_url: Option<String>,
    #[serde(default)]
    sandbox: Option<bool>,
    #[serde(default)]
    no_verify: Option<bool>,
}

impl StoredOptions {
    fn from(options: &MissionOptions) -> Self {
        let o = &options.overrides;
        StoredOptions {
            apply: options.apply,
            keep_branches: options.keep_branches,
            provider: o.provider.map(|p| p.as_str().to_string()),
            model: o.model.clone(),
            max_parallel: o.max_parallel,
            max_depth: o.max_depth,
            rounds: o.rounds,
            budget_tokens: o.budget_tokens,
            opencode_url: o.opencode_url.clone(),
            sandbox: o.sandbox,
            no_verify: o.no_verify,
        }
    }

    /// The stored flags, with the ones given to `resume` taking precedence.
    fn overrides(&self, newer: &Overrides) -> Overrides {
        Overrides {
            provider: newer
                .provider
                .or_else(|| self.provider.as_deref().and_then(|p| p.parse::<Provider>().ok())),
            model: newer.model.clone().or_else(|| self.model.clone()),
            max_parallel: newer.max_parallel.or(self.max_parallel),
            max_depth: newer.max_depth.or(self.max_depth),
            rounds: newer.rounds.or(self.rounds),
            budget_tokens: newer.budget_tokens.or(self.budget_tokens),
            opencode_url: newer.opencode_url.clone().or_else(|| self.opencode_url.clone()),
            sandbox: newer.sandbox.or(self.sandbox),
            no_verify: newer.no_verify.or(self.no_verify),
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

/// Everything a running mission's units share.
pub(crate) struct Mission {
    pub id: String,
    pub objective: String,
    pub repo: Repo,
    pub rt: Runtime,
    pub config: Config,
    pub verifier: Verifier,
    pub context: String,
    pub worktrees: PathBuf,
    /// What earlier runs of this mission did (empty for a new mission).
    pub replay: Replay,
    /// 1 for the first run, +1 for each resume: keeps per-run session keys apart.
    pub run_index: u32,
    todo: Mutex<TodoBook>,
    /// Branches of units that ended; deleted together when the run ends (see `cleanup`).
    done_branches: Arc<Mutex<BTreeSet<String>>>,
    /// The worktrees registered when this run first needed to know: one `git worktree list` for all
    /// the resumed units that look for the worktree an earlier run left, instead of one each.
    registered: tokio::sync::OnceCell<Vec<PathBuf>>,
}

struct TodoBook {
    path: PathBuf,
    entries: BTreeMap<String, TodoEntry>,
    order: Vec<String>,
}

impl Mission {
    /// Unit branches live under `u/` so no unit id can collide with the integration branch.
    pub fn branch(&self, unit: &str) -> String {
        format!("orchestrator/{}/u/{unit}", self.id)
    }

    /// Unit worktrees live under `units/`, apart from the mission's `base` and `integration` trees.
    pub fn worktree_path(&self, unit: &str) -> PathBuf {
        self.worktrees.join("units").join(unit)
    }

    /// Marks a finished unit's branch for deletion at the end of the run.
    pub fn branch_done(&self, branch: String) {
        self.done_branches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(branch);
    }

    /// The worktrees registered in the repository, listed once per run. Each unit's worktree path is
    /// its own and a unit is prepared once per run, so a unit's entry cannot go stale before it looks.
    pub async fn registered_worktrees(&self) -> std::result::Result<&[PathBuf], orchestrator_git::GitError> {
        let list = self
            .registered
            .get_or_try_init(|| self.repo.list_worktrees())
            .await?;
        Ok(list)
    }

    /// Tokens a passed unit has cost on average so far (workers, reviewers and resolvers together).
    pub fn average_unit_tokens(&self) -> Option<u64> {
        let book = self.todo.lock().unwrap_or_else(|p| p.into_inner());
        let passed = book
            .entries
            .values()
            .filter(|e| e.state == UnitState::Passed)
            .count() as u64;
        if passed == 0 {
            return None;
        }
        let by_role = self.rt.bus.usage_by_role();
        let spent: u64 = [Role::Worker, Role::Reviewer, Role::ConflictResolver]
            .iter()
            .filter_map(|r| by_role.get(r))
            .map(|u| u.total())
            .sum();
        Some(spent / passed)
    }

    /// Records a unit's new state: one event, and the TODO mirror rewritten.
    pub fn set_state(
        &self,
        unit: &UnitSpec,
        round: u32,
        state: UnitState,
        attempt: u32,
        detail: Option<String>,
    ) {
        self.rt.bus.emit(Event::UnitState {
            unit: unit.id.clone(),
            state,
            attempt,
            detail: detail.clone(),
        });
        self.note_todo(unit, round, state, detail);
    }

    /// The units `parent` spawned (ids `parent.n`), in this run or an earlier one.
    pub fn children_of(&self, parent: &str) -> Vec<String> {
        let prefix = format!("{parent}.");
        let book = self.todo.lock().unwrap_or_else(|p| p.into_inner());
        book.order
            .iter()
            .filter(|id| id.strip_prefix(&prefix).is_some_and(|rest| !rest.contains('.')))
            .cloned()
            .collect()
    }

    /// How many units the mission holds so far: planned, spawned and follow-ups, of every round.
    pub fn units_known(&self) -> usize {
        self.todo.lock().unwrap_or_else(|p| p.into_inner()).entries.len()
    }

    /// Updates the TODO mirror only (for states already in the log, shown again after a resume).
    pub fn note_todo(&self, unit: &UnitSpec, round: u32, state: UnitState, detail: Option<String>) {
        let mut book = self.todo.lock().unwrap_or_else(|p| p.into_inner());
        if !book.entries.contains_key(&unit.id) {
            book.order.push(unit.id.clone());
        }
        book.entries.insert(
            unit.id.clone(),
            TodoEntry {
                unit: unit.clone(),
                round,
                state,
                note: detail,
            },
        );
        let mut text = render_todo(&self.objective, &self.id, &book.entries, &book.order);
        if let Some(store) = &self.rt.store {
            text = store.mask(&text);
        }
        if let Err(e) = std::fs::write(&book.path, text) {
            tracing::warn!("cannot write {}: {e}", book.path.display());
        }
    }
}

/// A session's tools in `root`; only a session that may write (`allow_write`) may change it, and its
/// `bash` runs in the mission's sandbox either way.
pub(crate) fn toolbox(root: &Path, allow_write: bool, config: &Config) -> Result<Toolbox> {
    let sandbox = config
        .sandbox
        .sandbox(allow_write.then_some(root))
        .map_err(|e| EngineError::Other(format!("cannot confine the session's commands: {e}")))?;
    let options = ToolOptions {
        allow_write,
        bash_timeout: config.bash_timeout,
        sandbox: Some(sandbox),
        ..ToolOptions::default()
    };
    Toolbox::new(root, options)
        .map_err(|e| EngineError::io(format!("cannot open worktree {}", root.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventBus;
    use crate::units::UnitOutcome;

    #[test]
    fn retried_units_keep_dependencies_among_themselves() {
        let unit = |id: &str, deps: &[&str]| UnitSpec {
            id: id.into(),
            title: id.into(),
            description: "d".into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            files: vec![],
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
            max_parallel: Some(4),
            budget_tokens: Some(10),
            ..Default::default()
        };
        let newer = Overrides {
            budget_tokens: Some(500),
            ..Default::default()
        };
        let merged = stored.overrides(&newer);
        assert_eq!(merged.max_parallel, Some(4));
        assert_eq!(merged.budget_tokens, Some(500));
    }
}
