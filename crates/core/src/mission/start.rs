//! Starting a mission: the checks before anything is spent (repository, config, key, endpoint,
//! clean tree, verification commands), the claim on the repository, and the stored record; and
//! `resume`, which reopens that record.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orchestrator_git::Repo;
use orchestrator_protocol::{Event, HookKind, HookRun, Phase};
use orchestrator_store::{MissionRecord, MissionStatus, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::client::{clients_from_env, preflight, Clients};
use crate::config::{Config, MissionSettings, Provider};
use crate::error::{EngineError, Result};
use crate::events::EventBus;
use crate::lock::RepoLock;
use crate::missions::{
    abandon as abandon_mission, find_mission, interrupted_missions, nothing_to_resume, refuse_new_mission,
};
use crate::prescan;
use crate::replay::Replay;

use super::*;

/// Runs `orchestrator task`. Errors are returned only for problems found before the mission starts
/// (exit 2 or 4); once started, every ending is a [`MissionReport`].
pub async fn run_task(
    options: MissionOptions,
    bus: EventBus,
    cancel: CancellationToken,
) -> Result<MissionReport> {
    crate::approval::install_wake_signal();
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
    let config = load_config(&repo, &options.settings)?;
    config.sandbox.check()?;
    crate::leader::lease_length()?;
    let clients = clients_from_env(&config)?;
    if !options.allow_dirty {
        refuse_dirty(&repo).await?;
    }
    refuse_unverifiable(&config, repo.root())?;
    if options.if_interrupted == IfInterrupted::Refuse {
        refuse_interrupted(&repo)?;
    }
    let opencode = engine_preflight(&config, &repo, &clients).await?;

    let id = new_mission_id();
    let (lock, store) = claim_repo(&repo, &id, &clients, &config)
        .await
        .inspect_err(|_| stop_soon(&opencode))?;
    check_external(&config, &repo, &store)
        .await
        .inspect_err(|_| stop_soon(&opencode))?;
    // A new mission's lead is free; taken before anything is written all the same, one code path.
    let lead = crate::leader::acquire(&store, &id).inspect_err(|_| stop_soon(&opencode))?;
    let started_hook = mission_start_hook(&repo, &config, &id, &options.objective, &base, &cancel)
        .await
        .inspect_err(|_| stop_soon(&opencode))?;
    let notices = settle_interrupted(&repo, &store, options.if_interrupted)
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
        updated_at: String::new(),
    };
    store.create_mission(&record).map_err(store_error)?;
    bus.attach(&id, 0, Default::default(), Default::default(), store.clone());
    let claimed = Claimed {
        record,
        finish: Finish {
            apply: options.apply,
            keep_branches: options.keep_branches,
        },
        repo,
        config,
        client: clients.mission,
        replay: Replay::default(),
        store,
        opencode,
        lock,
        lead: lead.leadership,
        notices,
        hook_runs: started_hook.into_iter().collect(),
    };
    Ok(run_mission(claimed, &bus, cancel, options.control.clone()).await)
}

/// The `mission_start` hook, with the repository claimed and before any model is called: in a
/// worktree of the base commit (read-only to it), never the user's checkout. A hook that fails
/// refuses the mission (exit 2, its output in the error) and leaves nothing behind; a mission is
/// only recorded once it passed, so a resume never runs it again.
async fn mission_start_hook(
    repo: &Repo,
    config: &Config,
    id: &str,
    objective: &str,
    base: &str,
    cancel: &CancellationToken,
) -> Result<Option<HookRun>> {
    let Some(hook) = config.hooks.get(HookKind::MissionStart) else {
        return Ok(None);
    };
    let dir = repo.root().join(STATE_DIR).join("worktrees").join(id);
    let tree = repo.add_detached_worktree(&dir.join("base"), base).await?;
    let call = crate::hooks::HookCall {
        kind: HookKind::MissionStart,
        dir: tree.path(),
        writable: false,
        mission: id,
        unit: None,
        attempt: None,
        env: vec![("ORCHESTRATOR_BASE_COMMIT", base.to_string())],
        input: serde_json::json!({
            "hook": HookKind::MissionStart,
            "mission": id,
            "objective": objective,
            "base_commit": base,
        }),
    };
    let run = crate::hooks::run(hook, call, &config.sandbox, cancel).await;
    // The mission makes its own base worktree; a refused one leaves none behind.
    if let Err(e) = repo.remove_worktree(tree.path()).await {
        tracing::warn!("cannot remove the mission_start hook's worktree: {e}");
    }
    let _ = tokio::fs::remove_dir_all(&dir).await;
    if cancel.is_cancelled() {
        return Err(EngineError::Interrupted);
    }
    if !run.passed() {
        return Err(crate::hooks::start_refused(&run));
    }
    Ok(Some(run))
}

/// Before anything is spent: a new mission would leave an interrupted one's work behind. A mission
/// run by a live process is left to the repository lock (exit 4).
fn refuse_interrupted(repo: &Repo) -> Result<()> {
    if !has_store(repo.root())? {
        return Ok(());
    }
    let store = open_store(repo, false)?;
    let interrupted = interrupted_missions(&store, false)?;
    if interrupted.is_empty() {
        return Ok(());
    }
    Err(refuse_new_mission(&interrupted))
}

/// With the repository lock held, no unfinished mission is live: each is refused again (it may
/// have been interrupted since the first check) or, with `--abandon`, abandoned. Returns what was
/// abandoned, for the new mission's log.
async fn settle_interrupted(repo: &Repo, store: &Store, how: IfInterrupted) -> Result<Vec<String>> {
    let interrupted = interrupted_missions(store, true)?;
    if !interrupted.is_empty() && how == IfInterrupted::Refuse {
        return Err(refuse_new_mission(&interrupted));
    }
    let mut notices = Vec::new();
    for record in &interrupted {
        notices.push(abandon_mission(repo, store, record).await?);
    }
    Ok(notices)
}

/// What `orchestrator resume` may change about the mission it continues.
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    pub repo: PathBuf,
    /// The mission to continue (an id or a unique prefix); by default the newest interrupted one.
    pub mission: Option<String>,
    pub settings: MissionSettings,
    pub control: crate::control::MissionControl,
}

/// Runs `orchestrator resume`: continues the repository's unfinished mission where it stopped.
pub async fn resume(
    options: ResumeOptions,
    bus: EventBus,
    cancel: CancellationToken,
) -> Result<MissionReport> {
    crate::approval::install_wake_signal();
    let repo = discover_repo(&options.repo).await?;
    let store = Arc::new(open_store(&repo, false)?);
    let record = resumable(&store, options.mission.as_deref())?;
    let stored: StoredOptions = serde_json::from_value(record.options.clone()).unwrap_or_default();
    let config = load_config(&repo, &options.settings.clone().or(&stored.settings))?;
    config.sandbox.check()?;
    crate::leader::lease_length()?;
    let clients = clients_from_env(&config)?;
    let opencode = engine_preflight(&config, &repo, &clients).await?;
    let (lock, store) = claim_repo(&repo, &record.id, &clients, &config)
        .await
        .inspect_err(|_| stop_soon(&opencode))?;
    // Checked again with the lock held: a run that held it before us may have finished the mission.
    still_resumable(&store, &record.id).inspect_err(|_| stop_soon(&opencode))?;
    check_external(&config, &repo, &store)
        .await
        .inspect_err(|_| stop_soon(&opencode))?;
    // Before anything is written: a commander on another host may run it (refused, exit 4).
    let lead = crate::leader::acquire(&store, &record.id).inspect_err(|_| stop_soon(&opencode))?;
    // With the lead held: the commander it was taken from may have finished the mission meanwhile.
    still_resumable(&store, &record.id).inspect_err(|_| stop_soon(&opencode))?;
    let events = store.events_after(&record.id, None).map_err(store_error)?;
    let mut replay = Replay::from_events(&events);
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
    // This run is a resume too: without it the first resume shared the first run's index, and a
    // conflict resolver of the killed run (`resolver:<unit>:<run>`) was taken up again over a merge
    // that resume had aborted.
    replay.resumes += 1;
    let claimed = Claimed {
        record,
        finish: Finish {
            apply: stored.apply,
            keep_branches: stored.keep_branches,
        },
        repo,
        config,
        client: clients.mission,
        replay,
        store,
        opencode,
        lock,
        lead: lead.leadership,
        notices: lead.took_over.into_iter().collect(),
        hook_runs: Vec::new(),
    };
    Ok(run_mission(claimed, &bus, cancel, options.control.clone()).await)
}

/// The mission `resume` continues: the one named, or the newest unfinished one (an older mission
/// interrupted before a newer one ran is still found). Otherwise the error lists what exists.
fn resumable(store: &Store, wanted: Option<&str>) -> Result<MissionRecord> {
    let record = match wanted {
        Some(_) => find_mission(store, wanted)?,
        None => {
            let all = store.missions().map_err(store_error)?;
            match all.into_iter().find(|m| m.status.is_unfinished()) {
                Some(record) => record,
                None => return Err(nothing_to_resume(store, None)),
            }
        }
    };
    if !record.status.is_unfinished() {
        return Err(nothing_to_resume(store, Some(&record)));
    }
    Ok(record)
}

/// The mission as stored now is still unfinished: two resumes of one mission, the second waiting
/// for the first to let go of the repository, must not run it twice.
fn still_resumable(store: &Store, id: &str) -> Result<()> {
    match store.mission(id).map_err(store_error)? {
        Some(record) if record.status.is_unfinished() => Ok(()),
        Some(record) => Err(nothing_to_resume(store, Some(&record))),
        None => Err(nothing_to_resume(store, None)),
    }
}

/// `--workers external`: workers on other hosts reach the mission only through a PostgreSQL store
/// and the shared remote, so both must be there before anything is spent.
async fn check_external(config: &Config, repo: &Repo, store: &Store) -> Result<()> {
    let (orchestrator_protocol::Workers::External, Some(remote)) = (config.workers, &config.remote) else {
        return Ok(());
    };
    if !store.is_postgres() {
        return Err(EngineError::Usage(
            "--workers external needs a PostgreSQL store (--store postgres://…): workers on other hosts \
             claim the units there"
                .into(),
        ));
    }
    repo.remote_ref(remote, "refs/heads/orchestrator-probe")
        .await
        .map(|_| ())
        .map_err(|e| {
            EngineError::Usage(format!(
                "the shared remote {remote} cannot be reached ({e}); give a git URL or path every worker can \
                 fetch from and push to (`git init --bare` makes one)"
            ))
        })
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

fn load_config(repo: &Repo, settings: &MissionSettings) -> Result<Config> {
    crate::effective::load_config(repo.root(), settings)
}

/// Takes the repo lock and opens the store, in that order: only the lock holder writes the store.
async fn claim_repo(
    repo: &Repo,
    mission: &str,
    clients: &Clients,
    config: &Config,
) -> Result<(RepoLock, Arc<Store>)> {
    // Role files (`.orchestrator/roles/`) are the project's to commit; the rest is private state.
    repo.exclude_folder_except(STATE_DIR, &[crate::role_files::ROLES_SUBDIR])
        .await?;
    let lock = RepoLock::acquire(&repo.root().join(STATE_DIR), mission)?;
    let store = Arc::new(open_store(repo, true)?);
    // The model's key and the tokens of the user's HTTP MCP servers never reach the store.
    let mut secrets = clients.secrets.clone();
    secrets.extend(crate::mcp_servers::secrets(config));
    store.set_secrets(secrets);
    Ok((lock, store))
}

/// The repository's mission store; `create` makes it when missing.
pub fn open_store(repo: &Repo, create: bool) -> Result<Store> {
    open_store_at(repo.root(), create)
}

/// The store of the repository containing `path`, for commands that read it (`logs`).
pub fn open_store_in(path: &Path) -> Result<Store> {
    let root = repo_root_sync(path)?;
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

/// Whether the repository at `root` may have missions recorded: a PostgreSQL store is named, or
/// its SQLite file exists.
pub(crate) fn has_store(root: &Path) -> Result<bool> {
    Ok(crate::store_url::store_url(root)?.is_some() || root.join(STATE_DIR).join(STORE_FILE).is_file())
}

pub(crate) fn open_store_at(root: &Path, create: bool) -> Result<Store> {
    if let Some(url) = crate::store_url::store_url(root)? {
        // Unreachable or refused: nothing started, like a wrong model endpoint (exit 2).
        return Store::open_postgres(&url, &crate::store_url::repo_scope(root))
            .map(|store| store.with_state_dir(root.join(STATE_DIR)))
            .map_err(|e| EngineError::Usage(e.to_string()));
    }
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

pub(super) fn announce_dispatch_changes(
    control: &crate::control::MissionControl,
    bus: &EventBus,
) -> tokio::task::JoinHandle<()> {
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

pub(super) fn mission_branch(mission: &str) -> String {
    format!("orchestrator/{mission}/integration")
}

fn new_mission_id() -> String {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    format!("m{stamp}-{:04x}", rand::random::<u16>())
}
