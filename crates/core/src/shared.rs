//! What every part of a running mission shares: its identity, repository, runtime, config and
//! verifier, the TODO mirror, and the toolbox each session gets. Commander, units and roles all
//! stand on this; it imports none of them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orchestrator_git::Repo;
use orchestrator_protocol::{Event, Role, UnitSpec, UnitState};
use orchestrator_tools::{ToolOptions, Toolbox};

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::plan::{render_todo, TodoEntry};
use crate::replay::Replay;
use crate::session::Runtime;
use crate::verify::Verifier;

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
    pub todo: Mutex<TodoBook>,
    /// Branches of units that ended; deleted together when the run ends (see `cleanup`).
    pub done_branches: Arc<Mutex<BTreeSet<String>>>,
    /// The worktrees registered when this run first needed to know: one `git worktree list` for all
    /// the resumed units that look for the worktree an earlier run left, instead of one each.
    pub registered: tokio::sync::OnceCell<Vec<PathBuf>>,
    /// The commit the mission started from (its baseline's).
    pub base_commit: String,
    /// The settings the mission was started with (what a resume and an external worker use).
    pub settings: orchestrator_protocol::MissionSettings,
    /// With `--workers external`: the queue its units are offered to instead of run here.
    pub offers: Option<Arc<crate::offers::Offers>>,
    /// Unit branches are `<branch_root>/u/<unit>`: `orchestrator/<mission>` for a commander; on an
    /// external worker a root of the unit's holder, so spawned sub-units of a unit taken over on the
    /// same host never meet the branches its earlier holder left.
    pub branch_root: String,
    /// Units of the mission this process does not hold in its TODO book: on an external worker, how
    /// many the commander knew when it offered the unit (its own unit among them), so `limits.max_units`
    /// holds for spawns there too. 0 for a commander, which knows them all.
    pub units_elsewhere: usize,
}

/// The TODO mirror: every unit's latest state, in the order units became known.
pub(crate) struct TodoBook {
    path: PathBuf,
    entries: BTreeMap<String, TodoEntry>,
    order: Vec<String>,
}

impl TodoBook {
    /// An empty book mirrored to `path`.
    pub fn new(path: PathBuf) -> Self {
        TodoBook {
            path,
            entries: BTreeMap::new(),
            order: Vec::new(),
        }
    }
}

impl Mission {
    /// Unit branches live under `u/` so no unit id can collide with the integration branch.
    pub fn branch(&self, unit: &str) -> String {
        format!("{}/u/{unit}", self.branch_root)
    }

    /// The branch root of a commander of mission `id` (see [`Mission::branch_root`]).
    pub fn commander_branch_root(id: &str) -> String {
        format!("orchestrator/{id}")
    }

    /// Unit worktrees live under `units/`, apart from the mission's `base` and `integration` trees.
    pub fn worktree_path(&self, unit: &str) -> PathBuf {
        self.worktrees.join("units").join(unit)
    }

    /// Best of N: candidate `number`'s branch. Under the unit branches' `u/` (cleaned with them); `@`
    /// is in no unit id, so it names no other unit's branch.
    pub fn candidate_branch(&self, unit: &str, number: u32) -> String {
        format!("{}@c{number}", self.branch(unit))
    }

    /// Best of N: the folder holding a unit's candidate worktrees, one per number (`<folder>/<n>`), so
    /// the comparing reviewer reads them all from one root.
    pub fn candidates_path(&self, unit: &str) -> PathBuf {
        self.worktrees.join("candidates").join(unit)
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
        let here = self.todo.lock().unwrap_or_else(|p| p.into_inner()).entries.len();
        // The held unit is in both counts.
        here + self.units_elsewhere.saturating_sub(usize::from(here > 0))
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

/// The tools of a `role`'s session in `root`: only workers and conflict resolvers may change it, the
/// role's `tools` setting limits what is offered, and `bash` runs in the mission's sandbox either way.
pub(crate) fn toolbox(root: &Path, role: Role, config: &Config) -> Result<Toolbox> {
    toolbox_limited(root, role, config.role(role).tools.clone(), config)
}

/// A worker's tools in its unit's worktree: `unit` is the name it was given, which small models
/// take for a folder (see `ToolOptions::not_folders`).
pub(crate) fn unit_toolbox(
    root: &Path,
    config: &Config,
    unit: &orchestrator_protocol::UnitSpec,
) -> Result<Toolbox> {
    let mut toolbox = toolbox_with(
        root,
        Role::Worker,
        config.role(Role::Worker).tools.clone(),
        config,
        vec![unit.id.clone()],
    )?;
    toolbox.plan_files(unit.files.clone());
    Ok(toolbox)
}

/// A toolbox for `role` offering only `only` (`None`: all the role may have): a specialist
/// reviewer's own `tools` list.
pub(crate) fn toolbox_limited(
    root: &Path,
    role: Role,
    only: Option<Vec<String>>,
    config: &Config,
) -> Result<Toolbox> {
    toolbox_with(root, role, only, config, Vec::new())
}

fn toolbox_with(
    root: &Path,
    role: Role,
    only: Option<Vec<String>>,
    config: &Config,
    not_folders: Vec<String>,
) -> Result<Toolbox> {
    let allow_write = matches!(role, Role::Worker | Role::ConflictResolver);
    let sandbox = config
        .sandbox
        .sandbox(allow_write.then_some(root))
        .map_err(|e| EngineError::Other(format!("cannot confine the session's commands: {e}")))?;
    let options = ToolOptions {
        allow_write,
        bash_timeout: config.bash_timeout,
        sandbox: Some(sandbox),
        only,
        not_folders,
        rewrites_may_drop: config.rewrites_may_drop,
        ..ToolOptions::default()
    };
    Toolbox::new(root, options)
        .map_err(|e| EngineError::io(format!("cannot open worktree {}", root.display()), e))
}
