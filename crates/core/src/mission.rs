//! The commander: owns a mission from the first checks to the seal, and picks it up again after a
//! crash, kill or cancel.
//!
//! Order of work: checks that can fail without side effects (repo, config, key, endpoint, dirty tree),
//! then the repo lock and the store, then discovery, planning, and rounds of execution + integration
//! until the master review passes or the round limit is reached. Every step is recorded in the
//! store's event log before it is acted on; `resume` replays that log and skips what is done.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orchestrator_git::{FastForward, Repo, Worktree};
use orchestrator_model::GovernedClient;
use orchestrator_protocol::{Event, Outcome, Phase, Role, UnitSpec, UnitState};
use orchestrator_store::{MissionRecord, MissionStatus, Store, StoreError};
use orchestrator_tools::{ToolOptions, Toolbox};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::client::{clients_from_env, preflight, Clients};
use crate::config::{self, Config, Overrides, Provider};
use crate::error::{EngineError, Result};
use crate::events::EventBus;
use crate::lock::RepoLock;
use crate::plan::{render_todo, TodoEntry};
use crate::prescan;
use crate::replay::Replay;
use crate::roles;
use crate::session::Runtime;
use crate::units::{self, MergeTarget, UnitOutcome};
use crate::verify::{self, Verifier};

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

/// Runs `orchestrator task`. Errors are returned only for problems found before the mission starts
/// (exit 2 or 4); once started, every ending is a [`MissionReport`].
pub async fn run_task(
    options: MissionOptions,
    bus: EventBus,
    cancel: CancellationToken,
) -> Result<MissionReport> {
    if options.objective.trim().is_empty() {
        return Err(EngineError::Usage(
            "the objective is empty; say what the mission should achieve".into(),
        ));
    }
    let repo = discover_repo(&options.repo).await?;
    let base = repo.head_commit().await?.ok_or_else(|| {
        EngineError::Usage("the repository has no commits yet; commit your starting point first.".into())
    })?;
    let user_branch = repo.current_branch().await?;
    let config = load_config(&repo, &options.overrides)?;
    config.sandbox.check()?;
    let clients = clients_from_env(&config)?;
    if !options.allow_dirty {
        refuse_dirty(&repo).await?;
    }
    refuse_unverifiable(&config, repo.root())?;
    let opencode = engine_preflight(&config, &repo, &clients).await?;

    let id = new_mission_id();
    let (lock, store) = claim_repo(&repo, &id, &clients)
        .await
        .inspect_err(|_| stop_soon(&opencode))?;
    let record = MissionRecord {
        id: id.clone(),
        objective: options.objective.clone(),
        base_commit: base,
        user_branch,
        integration_branch: mission_branch(&id),
        options: serde_json::to_value(StoredOptions::from(&options)).unwrap_or_default(),
        status: MissionStatus::Running,
        pid: Some(std::process::id()),
        created_at: String::new(),
    };
    store.create_mission(&record).map_err(store_error)?;
    bus.attach(&id, 0, Default::default(), Default::default(), store.clone());
    let report = run_mission(
        record,
        Finish {
            apply: options.apply,
            keep_branches: options.keep_branches,
        },
        repo,
        config,
        clients.mission,
        Replay::default(),
        store,
        &bus,
        cancel,
        opencode.clone(),
        options.control.clone(),
    )
    .await;
    if let Some(engine) = &opencode {
        engine.stop().await;
    }
    drop(lock);
    Ok(report)
}

/// What `orchestrator resume` may change about the mission it continues.
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    pub repo: PathBuf,
    pub overrides: Overrides,
    pub control: crate::MissionControl,
}

/// Runs `orchestrator resume`: continues the repository's unfinished mission where it stopped.
pub async fn resume(
    options: ResumeOptions,
    bus: EventBus,
    cancel: CancellationToken,
) -> Result<MissionReport> {
    let repo = discover_repo(&options.repo).await?;
    let store = Arc::new(open_store(&repo, false)?);
    let record = store.latest_mission().map_err(store_error)?.ok_or_else(|| {
        EngineError::Usage("no mission has run in this repository; start one with `orchestrator task`".into())
    })?;
    if !record.status.is_unfinished() {
        return Err(EngineError::Usage(format!(
            "the latest mission {} is already finished ({}); nothing to resume. Start a new one with `orchestrator task`.",
            record.id, record.status
        )));
    }
    let stored: StoredOptions = serde_json::from_value(record.options.clone()).unwrap_or_default();
    let config = load_config(&repo, &stored.overrides(&options.overrides))?;
    config.sandbox.check()?;
    let clients = clients_from_env(&config)?;
    let opencode = engine_preflight(&config, &repo, &clients).await?;
    let (lock, store) = claim_repo(&repo, &record.id, &clients)
        .await
        .inspect_err(|_| stop_soon(&opencode))?;
    let events = store.events_after(&record.id, None).map_err(store_error)?;
    let replay = Replay::from_events(&events);
    let next_seq = replay.last_seq.map(|s| s + 1).unwrap_or(0);
    bus.attach(
        &record.id,
        next_seq,
        replay.usage,
        replay.usage_by_role.clone(),
        store.clone(),
    );
    bus.emit(Event::MissionResumed {
        phase: replay.phase.unwrap_or(Phase::Starting),
        round: replay.round,
    });
    let report = run_mission(
        record,
        Finish {
            apply: stored.apply,
            keep_branches: stored.keep_branches,
        },
        repo,
        config,
        clients.mission,
        replay,
        store,
        &bus,
        cancel,
        opencode.clone(),
        options.control.clone(),
    )
    .await;
    if let Some(engine) = &opencode {
        engine.stop().await;
    }
    drop(lock);
    Ok(report)
}

/// The endpoint check: the native providers' preflight, or (OpenCode hook) the OpenCode server
/// started or reached, which runs every session.
async fn engine_preflight(
    config: &Config,
    repo: &Repo,
    clients: &Clients,
) -> Result<Option<Arc<crate::opencode::OpencodeEngine>>> {
    if config.provider != Provider::OpenCode {
        preflight(clients.preflight.as_ref(), config).await?;
        return Ok(None);
    }
    let engine = crate::opencode::OpencodeEngine::start(config.opencode_url.as_deref(), repo.root()).await?;
    Ok(Some(engine))
}

/// Stops an OpenCode server we started when the mission does not go ahead.
fn stop_soon(engine: &Option<Arc<crate::opencode::OpencodeEngine>>) {
    if let Some(engine) = engine.clone() {
        tokio::spawn(async move { engine.stop().await });
    }
}

async fn discover_repo(path: &Path) -> Result<Repo> {
    Repo::discover(path).await.map_err(|_| {
        EngineError::Usage(format!(
            "{} is not inside a git repository. Run orchestrator in your project's repository, or pass --repo DIR.",
            path.display()
        ))
    })
}

fn load_config(repo: &Repo, overrides: &Overrides) -> Result<Config> {
    let mut layers = Vec::new();
    if let Some(path) = config::user_config_path() {
        layers.push(config::load_file(&path)?);
    }
    layers.push(config::load_file(&repo.root().join("orchestrator.toml"))?);
    let env_model = std::env::var("ORCHESTRATOR_MODEL")
        .ok()
        .filter(|m| !m.trim().is_empty());
    config::resolve(&layers, overrides, env_model)
}

/// Takes the repo lock and opens the store, in that order: only the lock holder writes the store.
async fn claim_repo(repo: &Repo, mission: &str, clients: &Clients) -> Result<(RepoLock, Arc<Store>)> {
    repo.ensure_excluded(&format!("/{STATE_DIR}/")).await?;
    let lock = RepoLock::acquire(&repo.root().join(STATE_DIR), mission)?;
    let store = Arc::new(open_store(repo, true)?);
    store.set_secrets(clients.secrets.clone());
    Ok((lock, store))
}

/// The repository's mission store; `create` makes it when missing.
pub fn open_store(repo: &Repo, create: bool) -> Result<Store> {
    open_store_at(repo.root(), create)
}

/// The store of the repository containing `path`, for commands that read it (`logs`).
pub fn open_store_in(path: &Path) -> Result<Store> {
    let root = crate::mission::repo_root_sync(path)?;
    open_store_at(&root, false)
}

/// The top of the repository containing `path`.
pub async fn repo_root(path: &Path) -> Result<PathBuf> {
    Ok(discover_repo(path).await?.root().to_path_buf())
}

fn repo_root_sync(path: &Path) -> Result<PathBuf> {
    // `logs` runs before any async work; ask git directly.
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--show-toplevel"])
        .current_dir(path)
        .output()
        .map_err(|e| EngineError::io("cannot run git", e))?;
    if !out.status.success() {
        return Err(EngineError::Usage(format!(
            "{} is not inside a git repository",
            path.display()
        )));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

pub(crate) fn open_store_at(root: &Path, create: bool) -> Result<Store> {
    let dir = root.join(STATE_DIR);
    // Private to the user, also when a store from before was 0755: it holds every transcript.
    if create || dir.is_dir() {
        orchestrator_store::private_dir(&dir)
            .map_err(|e| EngineError::io(format!("cannot make {} private to you", dir.display()), e))?;
    }
    let path = dir.join(STORE_FILE);
    let opened = if create {
        Store::open(&path)
    } else {
        Store::open_existing(&path)
    };
    opened.map_err(|e| match e {
        StoreError::Missing(_) => EngineError::Usage(
            "no mission has run in this repository; start one with `orchestrator task`".into(),
        ),
        other => EngineError::Usage(other.to_string()),
    })
}

fn store_error(e: StoreError) -> EngineError {
    EngineError::Other(e.to_string())
}

async fn refuse_dirty(repo: &Repo) -> Result<()> {
    let dirty = repo.dirty_paths(&[&format!("{STATE_DIR}/")]).await?;
    if dirty.is_empty() {
        return Ok(());
    }
    let shown: Vec<&str> = dirty.iter().take(10).map(String::as_str).collect();
    let more = if dirty.len() > 10 {
        format!(" and {} more", dirty.len() - 10)
    } else {
        String::new()
    };
    Err(EngineError::Usage(format!(
        "the working tree has uncommitted changes ({}{more}). Commit or stash them first, or pass --allow-dirty: \
         the mission starts from the last commit and never touches your uncommitted files.",
        shown.join(", ")
    )))
}

/// Tells every front end when dispatch is paused or resumed, whoever asked for it.
/// Before anything is spent: some command must judge the agents' work, or the user must say that
/// reviews alone will (`--no-verify`). Otherwise a mission could seal on nothing but claims.
fn refuse_unverifiable(config: &Config, root: &Path) -> Result<()> {
    if config.no_verify
        || config.verify_build.is_some()
        || config.verify_lint.is_some()
        || config.verify_test.is_some()
    {
        return Ok(());
    }
    if let (None, None) = prescan::detect_commands(root) {
        return Err(EngineError::Usage(
            "no build, lint or test command would judge the agents' work: none is configured, and none was \
             found (Cargo.toml, go.mod, package.json scripts, a Makefile with build or test targets, Python \
             project files, CI workflows).\n\
             Name them in orchestrator.toml:\n  [verify]\n  build = \"…\"\n  test = \"…\"\n\
             or start with --no-verify to let the reviewers alone judge the work (the outcome then says \
             \"sealed without verification\")."
                .into(),
        ));
    }
    Ok(())
}

fn announce_dispatch_changes(control: &crate::MissionControl, bus: &EventBus) -> tokio::task::JoinHandle<()> {
    let mut changes = control.watch();
    let bus = bus.clone();
    tokio::spawn(async move {
        let mut announced = *changes.borrow_and_update();
        if announced {
            bus.emit(Event::DispatchChanged { paused: true });
        }
        while changes.changed().await.is_ok() {
            let paused = *changes.borrow_and_update();
            if paused != announced {
                announced = paused;
                bus.emit(Event::DispatchChanged { paused });
            }
        }
    })
}

fn mission_branch(mission: &str) -> String {
    format!("orchestrator/{mission}/integration")
}

fn new_mission_id() -> String {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    format!("m{stamp}-{:04x}", rand::random::<u16>())
}

/// What to do with the result and the branches when the mission is over.
#[derive(Debug, Clone, Copy)]
struct Finish {
    apply: bool,
    keep_branches: bool,
}

/// One run of a mission, new or resumed, to its end. Never fails: every ending is a report.
#[allow(clippy::too_many_arguments)]
async fn run_mission(
    record: MissionRecord,
    finish: Finish,
    repo: Repo,
    config: Config,
    client: Arc<GovernedClient>,
    replay: Replay,
    store: Arc<Store>,
    bus: &EventBus,
    cancel: CancellationToken,
    opencode: Option<Arc<crate::opencode::OpencodeEngine>>,
    control: crate::MissionControl,
) -> MissionReport {
    let id = record.id.clone();
    let _ = store.set_status(&id, MissionStatus::Running, Some(std::process::id()));
    if replay.last_seq.is_none() {
        bus.emit(Event::MissionStarted {
            objective: record.objective.clone(),
            base_commit: record.base_commit.clone(),
            user_branch: record.user_branch.clone(),
            integration_branch: record.integration_branch.clone(),
        });
    }
    let rt = Runtime::new(
        client.clone(),
        bus.clone(),
        cancel,
        config.max_parallel,
        config.budget_tokens,
    )
    .with_store(store.clone(), &id)
    .with_context_rules(config.prices.clone(), config.compaction.clone())
    .with_opencode(opencode)
    .with_control(control.clone());
    let announcer = announce_dispatch_changes(&control, bus);
    let setup = Setup {
        repo: repo.clone(),
        worktrees: repo.root().join(STATE_DIR).join("worktrees").join(&id),
        base: record.base_commit.clone(),
        objective: record.objective.clone(),
        integration_branch: record.integration_branch.clone(),
        done_branches: Arc::default(),
    };
    let ending = match drive(&id, &setup, rt, config, replay).await {
        Ok(ending) => ending,
        Err(EngineError::Interrupted) => interrupted(),
        Err(e @ EngineError::EndpointFailed(_)) => Ending {
            resumable: true,
            ..Ending::unsealed(format!(
                "{e}\nContinue with `orchestrator resume` once the endpoint answers."
            ))
        },
        Err(e) => Ending::unsealed(format!("the mission stopped on an error: {e}")),
    };
    announcer.abort();
    let Ending {
        outcome,
        mut summary,
        result_commit,
        resumable,
        unverified,
    } = ending;
    if let Some(error) = bus.store_error() {
        summary.push_str(&format!(
            "\nthe mission store could not be written ({error}); resume may repeat work"
        ));
    }
    if outcome == Outcome::Sealed && finish.apply {
        if let (Some(branch), Some(commit)) = (&record.user_branch, &result_commit) {
            summary.push('\n');
            summary.push_str(&apply_result(&repo, branch, commit, &record.integration_branch, bus).await);
        }
    }
    // A finished mission (nothing will resume it) takes its branches with it unless asked to keep them.
    let over = !resumable && outcome != Outcome::Interrupted;
    let settle = over && !finish.keep_branches;
    cleanup(&setup, &id, settle).await;
    let mut branch_kept = true;
    if settle {
        let kept = settle_integration(&setup, record.user_branch.as_deref(), bus).await;
        branch_kept = kept.is_some();
        if let Some(note) = kept {
            summary.push('\n');
            summary.push_str(&note);
        }
    }
    for (model, stats) in client.stats() {
        bus.emit(Event::ModelTraffic {
            model,
            limit: stats.limit,
            max_limit: stats.max_limit,
            peak_in_flight: stats.peak_in_flight,
            rate_limited: stats.rate_limited,
            retries: stats.retries,
            gave_up: stats.gave_up,
        });
    }
    let status = match (outcome, resumable) {
        (Outcome::Sealed, _) => MissionStatus::Sealed,
        (Outcome::Interrupted, _) | (_, true) => MissionStatus::Interrupted,
        _ => MissionStatus::Unsealed,
    };
    bus.emit(Event::PhaseChanged {
        phase: Phase::Finished,
        round: 0,
    });
    bus.emit(Event::MissionFinished {
        outcome,
        summary: summary.clone(),
        usage: bus.usage(),
        result_commit: result_commit.clone(),
        unverified,
    });
    let _ = store.set_status(&id, status, None);
    MissionReport {
        mission: id,
        outcome,
        unverified,
        summary,
        integration_branch: record.integration_branch,
        branch_kept,
        result_commit,
    }
}

struct Setup {
    repo: Repo,
    worktrees: PathBuf,
    base: String,
    objective: String,
    integration_branch: String,
    /// The mission's unit branches that can go: their units ended (this run or an earlier one).
    done_branches: Arc<Mutex<BTreeSet<String>>>,
}

/// How a run ended. `resumable` marks an unsealed stop that `resume` may continue (a spent budget).
struct Ending {
    outcome: Outcome,
    summary: String,
    result_commit: Option<String>,
    resumable: bool,
    /// Sealed with no build, lint or test command run on the work (`--no-verify`).
    unverified: bool,
}

impl Ending {
    fn unsealed(summary: String) -> Self {
        Ending {
            outcome: Outcome::Unsealed,
            summary,
            result_commit: None,
            resumable: false,
            unverified: false,
        }
    }
}

fn interrupted() -> Ending {
    Ending {
        outcome: Outcome::Interrupted,
        summary: "the mission was interrupted; continue it with `orchestrator resume`".into(),
        result_commit: None,
        resumable: true,
        unverified: false,
    }
}

/// Discovery, planning and rounds, each skipped when the replay shows it done.
async fn drive(id: &str, setup: &Setup, rt: Runtime, config: Config, replay: Replay) -> Result<Ending> {
    let repo = &setup.repo;
    let base_tree = repo
        .add_detached_worktree(&setup.worktrees.join("base"), &setup.base)
        .await?;
    let (integration, integration_head) = open_integration(setup).await?;
    rt.bus.emit(Event::Notice {
        message: config.sandbox.summary(),
    });

    let read_only = Arc::new(toolbox(base_tree.path(), false, &config)?);
    let (context, build, test) = match (&replay.context, &replay.verify) {
        (Some(context), Some((build, test))) => (context.clone(), build.clone(), test.clone()),
        _ => {
            rt.bus.emit(Event::PhaseChanged {
                phase: Phase::Discovery,
                round: 0,
            });
            let mut scan = prescan::scan(base_tree.path());
            let build = config.verify_build.clone().or(scan.build.clone());
            let test = config.verify_test.clone().or(scan.test.clone());
            // The scouts and the mission context get the commands that will judge the work, not
            // what the pre-scan guessed before the config was applied.
            scan.build = build.clone();
            scan.test = test.clone();
            rt.bus.emit(Event::PreScanFinished {
                files: scan.file_count,
                build: build.clone(),
                test: test.clone(),
            });
            let context = roles::discover(&rt, &config, &setup.objective, &scan, read_only.clone()).await;
            if rt.budget_spent() {
                return Ok(budget_ending(&rt, &config));
            }
            if rt.cancel.is_cancelled() {
                return Ok(interrupted());
            }
            rt.bus.emit(Event::DiscoveryFinished {
                context: context.clone(),
            });
            (context, build, test)
        }
    };
    let plan = match replay.plans.get(&1) {
        Some(plan) => plan.clone(),
        None => {
            rt.bus.emit(Event::PhaseChanged {
                phase: Phase::Planning,
                round: 1,
            });
            match roles::plan(&rt, &config, &setup.objective, &context, read_only).await {
                Ok(plan) => plan,
                Err(_) if rt.budget_spent() => return Ok(budget_ending(&rt, &config)),
                Err(_) if rt.cancel.is_cancelled() => return Ok(interrupted()),
                Err(reason) => return Ok(Ending::unsealed(reason)),
            }
        }
    };
    let verifier = Verifier {
        build: config.verify_build.clone().or(build),
        lint: config.verify_lint.clone(),
        test: config.verify_test.clone().or(test),
        timeout: config.verify_timeout,
        permits: Semaphore::new(config.max_parallel_verify),
        sandbox: config.sandbox.clone(),
    };
    verifier_notice(&rt, &verifier);
    let mission = Arc::new(Mission {
        id: id.to_string(),
        objective: setup.objective.clone(),
        repo: repo.clone(),
        rt,
        config,
        verifier,
        context,
        worktrees: setup.worktrees.clone(),
        run_index: replay.resumes + 1,
        replay,
        todo: Mutex::new(TodoBook {
            path: repo.root().join(STATE_DIR).join("todo.md"),
            entries: BTreeMap::new(),
            order: Vec::new(),
        }),
        done_branches: setup.done_branches.clone(),
        registered: tokio::sync::OnceCell::new(),
    });
    // Units that ended in an earlier run may have left their branch (a kill before the run's end).
    for unit in mission.replay.units.keys() {
        if mission.replay.terminal(unit).is_some() {
            mission.branch_done(mission.branch(unit));
        }
    }
    run_rounds(&mission, plan, integration, integration_head, &setup.base).await
}

/// Says which commands will judge the work, before any unit is built.
fn verifier_notice(rt: &Runtime, verifier: &Verifier) {
    rt.bus.emit(Event::Notice {
        message: verifier.describe_commands(),
    });
}

/// The integration worktree and its head: the one a crashed run left (a half-done merge undone), or
/// a new one (on the branch an earlier run left, or a new branch at the mission's base).
async fn open_integration(setup: &Setup) -> Result<(Worktree, String)> {
    let repo = &setup.repo;
    let path = setup.worktrees.join("integration");
    if let Some(worktree) = repo.open_worktree(&path).await? {
        if worktree.merge_in_progress().await? {
            worktree.abort_merge().await?;
        }
        let head = worktree.head().await?;
        worktree.reset_hard(&head).await?;
        return Ok((worktree, head));
    }
    let worktree = repo
        .add_worktree_on_branch(&path, &setup.integration_branch, &setup.base)
        .await?;
    let head = worktree.head().await?;
    Ok((worktree, head))
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

async fn run_rounds(
    mission: &Arc<Mission>,
    plan: Vec<UnitSpec>,
    integration: Worktree,
    integration_head: String,
    base: &str,
) -> Result<Ending> {
    let target = Arc::new(MergeTarget::integration(
        integration.clone(),
        mission_branch(&mission.id),
        integration_head,
    ));
    let replay = &mission.replay;
    let first_round = replay.round.max(1);
    let mut units = replay.plans.get(&first_round).cloned().unwrap_or(plan);
    let rounds = mission.config.rounds.max(first_round);
    for round in first_round..=rounds {
        let bus = &mission.rt.bus;
        if replay.plans.contains_key(&round) {
            for unit in &units {
                if let Some(record) = replay.units.get(&unit.id) {
                    mission.note_todo(unit, round, record.state, record.detail.clone());
                }
            }
        } else {
            bus.emit(Event::PlanAccepted {
                round,
                units: units.clone(),
            });
            for unit in &units {
                mission.set_state(unit, round, UnitState::Queued, 0, None);
            }
        }
        bus.emit(Event::PhaseChanged {
            phase: Phase::Execution,
            round,
        });
        let outcomes = units::run_dag(mission.clone(), units.clone(), 0, target.clone(), round).await;
        // The units' merges moved the branch; stage 2, the master reviewer and the next round need
        // its files (one checkout for the whole wave).
        target.check_out().await?;
        if outcomes.iter().any(UnitOutcome::out_of_budget_stop) || mission.rt.budget_spent() {
            return Ok(budget_ending(&mission.rt, &mission.config));
        }
        if let Some(reason) = outcomes.iter().find_map(UnitOutcome::endpoint_stop) {
            return Ok(Ending {
                resumable: true,
                unverified: false,
                ..Ending::unsealed(format!(
                    "{reason}\nContinue with `orchestrator resume` once the endpoint answers."
                ))
            });
        }
        if mission.rt.cancel.is_cancelled() || outcomes.iter().any(|o| o.interrupted) {
            return Ok(interrupted());
        }
        // `verified`: the commit stage 2 verified and the master reviewer judged, when this run did.
        let (follow_up, verified) = match replay.rounds.get(&round) {
            Some((true, _)) => (None, None),
            Some((false, follow_up)) => (Some(follow_up.clone()), None),
            None => match round_result(mission, &integration, base, &outcomes, round).await? {
                RoundResult::Passed { verified } => (None, Some(verified)),
                RoundResult::FollowUp(units) => (Some(units), None),
            },
        };
        let Some(follow_up) = follow_up else {
            if !replay.rounds.contains_key(&round) {
                bus.emit(Event::RoundFinished {
                    round,
                    passed: true,
                    follow_up: Vec::new(),
                });
            }
            let head = integration.head().await?;
            let unverified = !mission.verifier.has_commands();
            let mut summary = sealed_summary(&outcomes, round);
            if unverified {
                summary = format!(
                    "sealed without verification: no build, lint or test command ran on the work \
                     (--no-verify); only reviews judged it\n{summary}"
                );
            }
            return Ok(Ending {
                outcome: Outcome::Sealed,
                summary,
                result_commit: Some(sealed_commit(bus, verified, head)),
                resumable: false,
                unverified,
            });
        };
        if mission.rt.cancel.is_cancelled() {
            return Ok(interrupted());
        }
        if !replay.rounds.contains_key(&round) {
            bus.emit(Event::RoundFinished {
                round,
                passed: false,
                follow_up: follow_up.clone(),
            });
        }
        if round == rounds {
            return Ok(Ending::unsealed(unsealed_summary(rounds, &follow_up)));
        }
        units = replay.plans.get(&(round + 1)).cloned().unwrap_or(follow_up);
    }
    Ok(Ending::unsealed("no rounds were run".into()))
}

/// `None` when the round passed; otherwise the units of the next round.
/// How a round ended: passed stage 2 and the master review at the commit they saw, or work for the
/// next round.
enum RoundResult {
    Passed { verified: String },
    FollowUp(Vec<UnitSpec>),
}

async fn round_result(
    mission: &Arc<Mission>,
    integration: &Worktree,
    base: &str,
    outcomes: &[UnitOutcome],
    round: u32,
) -> Result<RoundResult> {
    if outcomes.iter().all(|o| o.state == UnitState::Passed) {
        mission.rt.bus.emit(Event::PhaseChanged {
            phase: Phase::Integration,
            round,
        });
        integrate(mission, integration, base, outcomes, round).await
    } else {
        Ok(RoundResult::FollowUp(retry_units(outcomes, round + 1)))
    }
}

/// The commit a sealed mission hands over: exactly the one stage 2 verified and the master reviewer
/// judged. Anything committed on the integration branch after that was seen by no verification, so
/// it is left out, and the event log says so.
fn sealed_commit(bus: &EventBus, verified: Option<String>, head: String) -> String {
    match verified {
        Some(verified) if verified != head => {
            bus.emit(Event::Notice {
                message: format!(
                    "the integration branch moved after stage 2 (to {}); only the verified {} is taken",
                    verify::short(&head),
                    verify::short(&verified)
                ),
            });
            verified
        }
        _ => head,
    }
}

/// A stop for a spent budget: unsealed (exit 1) but resumable with a larger one, saying what each
/// role used.
fn budget_ending(rt: &Runtime, config: &Config) -> Ending {
    let used = rt.bus.usage().total();
    let limit = config
        .budget_tokens
        .map(|l| format!(" of {l}"))
        .unwrap_or_default();
    let roles: Vec<String> = rt
        .bus
        .usage_by_role()
        .iter()
        .map(|(role, usage)| {
            let cap = config
                .role(*role)
                .budget_tokens
                .map(|l| format!(" (role budget {l})"))
                .unwrap_or_default();
            format!("  {role}: {} tokens{cap}", usage.total())
        })
        .collect();
    let summary = format!(
        "the token budget is spent: {used}{limit} tokens used. Continue with `orchestrator resume --budget-tokens N` \
         (or raise the role's budget_tokens in orchestrator.toml).\nBy role:\n{}",
        roles.join("\n")
    );
    Ending {
        resumable: true,
        unverified: false,
        ..Ending::unsealed(summary)
    }
}

/// Stage 2: the runtime's full build and tests on the integrated branch, then the master review.
/// `None` means the round passed; otherwise the units of the next round.
async fn integrate(
    mission: &Arc<Mission>,
    integration: &Worktree,
    base: &str,
    outcomes: &[UnitOutcome],
    round: u32,
) -> Result<RoundResult> {
    let bus = &mission.rt.bus;
    // What stage 2 tests and the master reviewer judges: the branch as it is now.
    let verified = integration.head().await?;
    let evidence = mission
        .verifier
        .verify(integration, &mission.rt.cancel)
        .await
        .map_err(EngineError::Other)?;
    for e in &evidence {
        bus.emit(Event::EvidenceRecorded {
            unit: None,
            evidence: e.clone(),
        });
    }
    if mission.rt.cancel.is_cancelled() {
        return Err(EngineError::Interrupted);
    }
    if !verify::all_passed(&evidence) {
        let unit = UnitSpec {
            id: format!("r{}-1", round + 1),
            title: "Make the integrated build and tests pass".into(),
            description: format!(
                "After merging every unit, the runtime's build and tests fail on the integrated result.\n\n{}\n\
                 Find the cause and fix it.",
                verify::describe(&evidence)
            ),
            depends_on: Vec::new(),
            files: Vec::new(),
        };
        return Ok(RoundResult::FollowUp(vec![unit]));
    }
    // A master review from before a restart counts only for the commit it judged.
    let known = mission.replay.master_reviews.get(&round).filter(|_| {
        mission
            .replay
            .master_reviewed_commits
            .get(&round)
            .is_none_or(|judged| *judged == verified)
    });
    let review = match known {
        Some(review) => review.clone(),
        None => {
            let review = roles::master_review(mission, integration, base, outcomes, &evidence, round).await?;
            bus.emit(Event::ReviewFinished {
                unit: None,
                attempt: round,
                review: review.clone(),
                commit: Some(verified.clone()),
            });
            review
        }
    };
    if review.verdict == orchestrator_protocol::Verdict::Pass {
        return Ok(RoundResult::Passed { verified });
    }
    Ok(RoundResult::FollowUp(follow_up_units(&review, round + 1)))
}

fn follow_up_units(review: &orchestrator_protocol::Review, next_round: u32) -> Vec<UnitSpec> {
    let mut follow_up: Vec<UnitSpec> = review
        .issues
        .iter()
        .enumerate()
        .map(|(i, issue)| UnitSpec {
            id: format!("r{next_round}-{}", i + 1),
            title: issue.title.clone(),
            description: match &issue.file {
                Some(file) => format!("{}\n\n(File: {file})", issue.description),
                None => issue.description.clone(),
            },
            depends_on: Vec::new(),
            files: issue.file.iter().cloned().collect(),
        })
        .collect();
    if follow_up.is_empty() {
        follow_up.push(UnitSpec {
            id: format!("r{next_round}-1"),
            title: "Address the master review".into(),
            description: review.summary.clone(),
            depends_on: Vec::new(),
            files: Vec::new(),
        });
    }
    follow_up
}

/// Units that failed or were skipped, again, under new ids; dependencies on merged units are dropped.
fn retry_units(outcomes: &[UnitOutcome], next_round: u32) -> Vec<UnitSpec> {
    let retried: BTreeMap<&str, String> = outcomes
        .iter()
        .filter(|o| o.state != UnitState::Passed)
        .map(|o| (o.unit.id.as_str(), format!("{}-r{next_round}", o.unit.id)))
        .collect();
    outcomes
        .iter()
        .filter(|o| o.state != UnitState::Passed)
        .map(|o| UnitSpec {
            id: retried[o.unit.id.as_str()].clone(),
            title: o.unit.title.clone(),
            description: match &o.findings {
                Some(findings) => format!(
                    "{}\n\nA previous attempt did not pass: {}\nWhat that attempt was last told:\n{findings}",
                    o.unit.description,
                    o.reason.as_deref().unwrap_or("no reason recorded")
                ),
                None => format!(
                    "{}\n\nA previous attempt did not pass: {}",
                    o.unit.description,
                    o.reason.as_deref().unwrap_or("no reason recorded")
                ),
            },
            depends_on: o
                .unit
                .depends_on
                .iter()
                .filter_map(|d| retried.get(d.as_str()).cloned())
                .collect(),
            files: o.unit.files.clone(),
        })
        .collect()
}

fn sealed_summary(outcomes: &[UnitOutcome], round: u32) -> String {
    format!(
        "sealed in round {round}: {} unit(s) of the last round passed review and the master review",
        outcomes.len()
    )
}

fn unsealed_summary(rounds: u32, missing: &[UnitSpec]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|u| format!("  - {}: {}", u.id, u.title))
        .collect();
    format!(
        "not sealed after {rounds} round(s); still missing:\n{}",
        list.join("\n")
    )
}

/// Fast-forwards the user's branch to the result, never forcing anything.
async fn apply_result(repo: &Repo, branch: &str, commit: &str, integration: &str, bus: &EventBus) -> String {
    let short = verify::short(commit);
    if repo
        .rev_parse(&format!("refs/heads/{branch}"))
        .await
        .ok()
        .as_deref()
        == Some(commit)
    {
        // A mission that changed nothing: say so rather than claim a move.
        let message = format!("{branch} already has the result ({short}); nothing to fast-forward");
        bus.emit(Event::Notice {
            message: message.clone(),
        });
        return message;
    }
    let checked_out = repo.current_branch().await.ok().flatten();
    let result = if checked_out.as_deref() == Some(branch) {
        repo.fast_forward_checked_out(commit).await
    } else {
        repo.fast_forward_branch(branch, commit).await
    };
    let message = match result {
        Ok(FastForward::Done) => format!("{branch} fast-forwarded to {short}"),
        Ok(FastForward::NotFastForward) => {
            format!("{branch} has moved since the mission started, so it was left alone; merge {integration} yourself")
        }
        Ok(FastForward::Blocked(why)) => {
            format!("{branch} was left alone ({why}); the result is on {integration}")
        }
        Err(e) => format!("{branch} was left alone ({e}); the result is on {integration}"),
    };
    bus.emit(Event::Notice {
        message: message.clone(),
    });
    message
}

/// Removes the mission's worktrees, then the branches of units that ended — or, with
/// `every_unit_branch` (a finished mission), all its unit branches. Otherwise unit branches of units
/// that did not end hold unfinished work and stay for `resume`. The integration branch is
/// [`settle_integration`]'s.
async fn cleanup(setup: &Setup, mission: &str, every_unit_branch: bool) {
    let repo = &setup.repo;
    if let Ok(list) = repo.list_worktrees().await {
        for path in list.iter().filter(|p| p.starts_with(&setup.worktrees)) {
            if let Err(e) = repo.remove_worktree(path).await {
                tracing::warn!("cannot remove worktree {}: {e}", path.display());
            }
        }
    }
    let _ = tokio::fs::remove_dir_all(&setup.worktrees).await;
    let done = std::mem::take(&mut *setup.done_branches.lock().unwrap_or_else(|p| p.into_inner()));
    if done.is_empty() && !every_unit_branch {
        return;
    }
    // Only branches that exist: one listing, so one missing branch cannot fail the whole batch.
    let existing = match repo
        .branches_with_prefix(&format!("orchestrator/{mission}/u/"))
        .await
    {
        Ok(existing) => existing,
        Err(e) => return tracing::warn!("cannot list the mission's unit branches: {e}"),
    };
    let gone: Vec<&String> = existing
        .iter()
        .filter(|b| every_unit_branch || done.contains(*b))
        .collect();
    if gone.is_empty() {
        return;
    }
    if let Err(e) = repo.delete_branches(&gone).await {
        tracing::warn!("cannot delete the branches of finished units: {e}");
    }
}

/// A finished mission's integration branch (its unit branches are gone with `cleanup`): it goes too
/// when the user's branch already has all of it (applied, or nothing was merged). Otherwise it stays
/// as the result to review, and the returned note says so.
async fn settle_integration(setup: &Setup, user_branch: Option<&str>, bus: &EventBus) -> Option<String> {
    let repo = &setup.repo;
    let branch = &setup.integration_branch;
    let head = repo.rev_parse(&format!("refs/heads/{branch}")).await.ok()?;
    let target = user_branch
        .map(|b| format!("refs/heads/{b}"))
        .unwrap_or_else(|| setup.base.clone());
    let contained = head == setup.base || repo.is_ancestor(&head, &target).await.unwrap_or(false);
    if !contained {
        let note = format!(
            "the mission's work is kept on {branch} (not on {}); review or merge it, or remove it with `orchestrator clean`",
            user_branch.unwrap_or("your branch")
        );
        bus.emit(Event::Notice {
            message: note.clone(),
        });
        return Some(note);
    }
    if let Err(e) = repo.delete_branch(branch).await {
        tracing::warn!("cannot delete {branch}: {e}");
        return Some(format!(
            "{branch} could not be removed ({e}); `orchestrator clean` removes it"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
