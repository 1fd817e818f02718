//! The commander: owns a mission from the first checks to the seal.
//!
//! Order of work: checks that can fail without side effects (repo, config, key, endpoint, dirty tree),
//! then the repo lock, then discovery, planning, and rounds of execution + integration until the
//! master review passes or the round limit is reached.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use orchestrator_git::{FastForward, Repo, Worktree};
use orchestrator_model::ModelClient;
use orchestrator_protocol::{Event, Outcome, Phase, UnitSpec, UnitState};
use orchestrator_tools::{ToolOptions, Toolbox};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::client::{clients_from_env, preflight};
use crate::config::{self, Config, Overrides};
use crate::error::{EngineError, Result};
use crate::events::EventBus;
use crate::lock::RepoLock;
use crate::plan::{render_todo, TodoEntry};
use crate::prescan;
use crate::roles;
use crate::session::Runtime;
use crate::units::{self, MergeTarget, UnitOutcome};
use crate::verify::{self, Verifier};

/// The state folder in the repo root; excluded from git through `.git/info/exclude`.
pub const STATE_DIR: &str = ".orchestrator";

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct MissionOptions {
    pub repo: PathBuf,
    pub objective: String,
    pub allow_dirty: bool,
    /// Fast-forward the user's branch when sealed (`--no-apply` turns it off).
    pub apply: bool,
    pub overrides: Overrides,
}

/// How the mission ended, for the front end's last words and exit status.
#[derive(Debug, Clone)]
pub struct MissionReport {
    pub mission: String,
    pub outcome: Outcome,
    pub summary: String,
    pub integration_branch: String,
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
    todo: Mutex<TodoBook>,
}

struct TodoBook {
    path: PathBuf,
    entries: BTreeMap<String, TodoEntry>,
    order: Vec<String>,
}

impl Mission {
    pub fn branch(&self, unit: &str) -> String {
        format!("orchestrator/{}/{unit}", self.id)
    }

    pub fn worktree_path(&self, name: &str) -> PathBuf {
        self.worktrees.join(name)
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
        let text = render_todo(&self.objective, &self.id, &book.entries, &book.order);
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
    let prepared = prepare(&options).await?;
    let id = new_mission_id();
    let state_dir = prepared.repo.root().join(STATE_DIR);
    prepared.repo.ensure_excluded(&format!("/{STATE_DIR}/")).await?;
    let _lock = RepoLock::acquire(&state_dir, &id)?;
    bus.set_mission(&id);
    let log = start_event_log(&bus, &state_dir.join("missions").join(&id)).await?;
    let report = run_started(&id, &options, prepared, &bus, cancel).await;
    bus.close();
    let _ = log.await;
    report
}

struct Prepared {
    repo: Repo,
    base: String,
    user_branch: Option<String>,
    config: Config,
    client: Arc<dyn ModelClient>,
}

/// Every check that needs no side effect: fail here and nothing has been touched.
async fn prepare(options: &MissionOptions) -> Result<Prepared> {
    if options.objective.trim().is_empty() {
        return Err(EngineError::Usage(
            "the objective is empty; say what the mission should achieve".into(),
        ));
    }
    let repo = Repo::discover(&options.repo).await.map_err(|_| {
        EngineError::Usage(format!(
            "{} is not inside a git repository. Run orchestrator in your project's repository, or pass --repo DIR.",
            options.repo.display()
        ))
    })?;
    let base = repo.head_commit().await?.ok_or_else(|| {
        EngineError::Usage("the repository has no commits yet; commit your starting point first.".into())
    })?;
    let user_branch = repo.current_branch().await?;
    let mut layers = Vec::new();
    if let Some(path) = config::user_config_path() {
        layers.push(config::load_file(&path)?);
    }
    layers.push(config::load_file(&repo.root().join("orchestrator.toml"))?);
    let env_model = std::env::var("ORCHESTRATOR_MODEL")
        .ok()
        .filter(|m| !m.trim().is_empty());
    let config = config::resolve(&layers, &options.overrides, env_model)?;
    let clients = clients_from_env(config.provider)?;
    if !options.allow_dirty {
        refuse_dirty(&repo).await?;
    }
    preflight(clients.preflight.as_ref()).await?;
    Ok(Prepared {
        repo,
        base,
        user_branch,
        config,
        client: clients.mission,
    })
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

fn new_mission_id() -> String {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    format!("m{stamp}-{:04x}", rand::random::<u16>())
}

/// The mission log consumer: every event as one JSON line in `missions/<id>/events.jsonl`.
async fn start_event_log(bus: &EventBus, dir: &Path) -> Result<tokio::task::JoinHandle<()>> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| EngineError::io(format!("cannot create {}", dir.display()), e))?;
    let path = dir.join("events.jsonl");
    let mut file = tokio::fs::File::create(&path)
        .await
        .map_err(|e| EngineError::io(format!("cannot create {}", path.display()), e))?;
    let mut events = bus.subscribe();
    Ok(tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let Ok(mut line) = serde_json::to_string(&*event) else {
                continue;
            };
            line.push('\n');
            if let Err(e) = file.write_all(line.as_bytes()).await {
                tracing::error!("cannot write the mission log {}: {e}", path.display());
                return;
            }
        }
        let _ = file.flush().await;
    }))
}

async fn run_started(
    id: &str,
    options: &MissionOptions,
    prepared: Prepared,
    bus: &EventBus,
    cancel: CancellationToken,
) -> Result<MissionReport> {
    let Prepared {
        repo,
        base,
        user_branch,
        config,
        client,
    } = prepared;
    let integration_branch = format!("orchestrator/{id}/integration");
    let worktrees = repo.root().join(STATE_DIR).join("worktrees").join(id);
    bus.emit(Event::MissionStarted {
        objective: options.objective.clone(),
        base_commit: base.clone(),
        user_branch: user_branch.clone(),
        integration_branch: integration_branch.clone(),
    });
    let rt = Runtime::new(
        client,
        bus.clone(),
        cancel,
        config.max_parallel,
        config.budget_tokens,
    );
    let mut setup = Setup {
        repo: repo.clone(),
        worktrees: worktrees.clone(),
        base: base.clone(),
    };
    let result = drive(id, options, &mut setup, rt, config, &integration_branch).await;
    let (outcome, summary, result_commit) = match result {
        Ok(done) => done,
        Err(e) => (
            Outcome::Unsealed,
            format!("the mission stopped on an error: {e}"),
            None,
        ),
    };
    let mut summary = summary;
    if outcome == Outcome::Sealed && options.apply {
        if let (Some(branch), Some(commit)) = (&user_branch, &result_commit) {
            summary.push('\n');
            summary.push_str(&apply_result(&repo, branch, commit, &integration_branch, bus).await);
        }
    }
    cleanup(&setup).await;
    bus.emit(Event::PhaseChanged {
        phase: Phase::Finished,
        round: 0,
    });
    bus.emit(Event::MissionFinished {
        outcome,
        summary: summary.clone(),
        usage: bus.usage(),
        result_commit: result_commit.clone(),
    });
    Ok(MissionReport {
        mission: id.to_string(),
        outcome,
        summary,
        integration_branch,
        result_commit,
    })
}

struct Setup {
    repo: Repo,
    worktrees: PathBuf,
    base: String,
}

/// Discovery, planning and rounds. Returns the outcome, a summary for the user and the result commit.
async fn drive(
    id: &str,
    options: &MissionOptions,
    setup: &mut Setup,
    rt: Runtime,
    config: Config,
    integration_branch: &str,
) -> Result<(Outcome, String, Option<String>)> {
    let repo = &setup.repo;
    let base_tree = repo
        .add_detached_worktree(&setup.worktrees.join("base"), &setup.base)
        .await?;
    repo.create_branch(integration_branch, &setup.base).await?;
    let integration = repo
        .add_worktree(&setup.worktrees.join("integration"), integration_branch)
        .await?;

    rt.bus.emit(Event::PhaseChanged {
        phase: Phase::Discovery,
        round: 0,
    });
    let scan = prescan::scan(base_tree.path());
    let build = config.verify_build.clone().or(scan.build.clone());
    let test = config.verify_test.clone().or(scan.test.clone());
    rt.bus.emit(Event::PreScanFinished {
        files: scan.file_count,
        build: build.clone(),
        test: test.clone(),
    });
    let read_only = Arc::new(toolbox(base_tree.path(), false, &config)?);
    let context = roles::discover(&rt, &config, &options.objective, &scan, read_only.clone()).await;
    if rt.cancel.is_cancelled() {
        return Ok(interrupted());
    }

    rt.bus.emit(Event::PhaseChanged {
        phase: Phase::Planning,
        round: 1,
    });
    let plan = match roles::plan(&rt, &config, &options.objective, &context, read_only).await {
        Ok(plan) => plan,
        Err(reason) if rt.cancel.is_cancelled() => return Ok((Outcome::Interrupted, reason, None)),
        Err(reason) => return Ok((Outcome::Unsealed, reason, None)),
    };
    let verifier = Verifier {
        build,
        test,
        timeout: config.verify_timeout,
        permits: Semaphore::new(config.max_parallel_verify),
    };
    let mission = Arc::new(Mission {
        id: id.to_string(),
        objective: options.objective.clone(),
        repo: repo.clone(),
        rt,
        config,
        verifier,
        context,
        worktrees: setup.worktrees.clone(),
        todo: Mutex::new(TodoBook {
            path: repo.root().join(STATE_DIR).join("todo.md"),
            entries: BTreeMap::new(),
            order: Vec::new(),
        }),
    });
    run_rounds(&mission, plan, integration, &setup.base).await
}

fn interrupted() -> (Outcome, String, Option<String>) {
    (Outcome::Interrupted, "the mission was interrupted".into(), None)
}

pub(crate) fn toolbox(root: &Path, allow_write: bool, config: &Config) -> Result<Toolbox> {
    let options = ToolOptions {
        allow_write,
        bash_timeout: config.bash_timeout,
        ..ToolOptions::default()
    };
    Toolbox::new(root, options)
        .map_err(|e| EngineError::io(format!("cannot open worktree {}", root.display()), e))
}

async fn run_rounds(
    mission: &Arc<Mission>,
    plan: Vec<UnitSpec>,
    integration: Worktree,
    base: &str,
) -> Result<(Outcome, String, Option<String>)> {
    let target = Arc::new(MergeTarget::new(integration.clone()));
    let mut units = plan;
    let rounds = mission.config.rounds;
    for round in 1..=rounds {
        let bus = &mission.rt.bus;
        bus.emit(Event::PlanAccepted {
            round,
            units: units.clone(),
        });
        for unit in &units {
            mission.set_state(unit, round, UnitState::Queued, 0, None);
        }
        bus.emit(Event::PhaseChanged {
            phase: Phase::Execution,
            round,
        });
        let outcomes = units::run_dag(mission.clone(), units.clone(), 0, target.clone(), round).await;
        if mission.rt.cancel.is_cancelled() {
            return Ok(interrupted());
        }
        if let Some(reason) = budget_stop(mission) {
            return Ok((Outcome::Unsealed, reason, None));
        }
        let follow_up = if outcomes.iter().all(|o| o.state == UnitState::Passed) {
            bus.emit(Event::PhaseChanged {
                phase: Phase::Integration,
                round,
            });
            match integrate(mission, &integration, base, &outcomes, round).await? {
                None => {
                    bus.emit(Event::RoundFinished {
                        round,
                        passed: true,
                        follow_up: Vec::new(),
                    });
                    let head = integration.head().await?;
                    return Ok((Outcome::Sealed, sealed_summary(&outcomes, round), Some(head)));
                }
                Some(follow_up) => follow_up,
            }
        } else {
            retry_units(&outcomes, round + 1)
        };
        if mission.rt.cancel.is_cancelled() {
            return Ok(interrupted());
        }
        bus.emit(Event::RoundFinished {
            round,
            passed: false,
            follow_up: follow_up.clone(),
        });
        if round == rounds {
            return Ok((Outcome::Unsealed, unsealed_summary(rounds, &follow_up), None));
        }
        units = follow_up;
    }
    Ok((Outcome::Unsealed, "no rounds were run".into(), None))
}

fn budget_stop(mission: &Mission) -> Option<String> {
    let limit = mission.config.budget_tokens?;
    let used = mission.rt.bus.usage().total();
    (used >= limit).then(|| format!("the token budget is spent ({used} of {limit} tokens used)"))
}

/// Stage 2: the runtime's full build and tests on the integrated branch, then the master review.
/// `None` means the round passed; otherwise the units of the next round.
async fn integrate(
    mission: &Arc<Mission>,
    integration: &Worktree,
    base: &str,
    outcomes: &[UnitOutcome],
    round: u32,
) -> Result<Option<Vec<UnitSpec>>> {
    let bus = &mission.rt.bus;
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
        return Ok(Some(vec![unit]));
    }
    let review = roles::master_review(mission, integration, base, outcomes, &evidence).await?;
    bus.emit(Event::ReviewFinished {
        unit: None,
        review: review.clone(),
    });
    if review.verdict == orchestrator_protocol::Verdict::Pass {
        return Ok(None);
    }
    let mut follow_up: Vec<UnitSpec> = review
        .issues
        .iter()
        .enumerate()
        .map(|(i, issue)| UnitSpec {
            id: format!("r{}-{}", round + 1, i + 1),
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
            id: format!("r{}-1", round + 1),
            title: "Address the master review".into(),
            description: review.summary.clone(),
            depends_on: Vec::new(),
            files: Vec::new(),
        });
    }
    Ok(Some(follow_up))
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
            description: format!(
                "{}\n\nA previous attempt did not pass: {}",
                o.unit.description,
                o.reason.as_deref().unwrap_or("no reason recorded")
            ),
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
    let checked_out = repo.current_branch().await.ok().flatten();
    let result = if checked_out.as_deref() == Some(branch) {
        repo.fast_forward_checked_out(commit).await
    } else {
        repo.fast_forward_branch(branch, commit).await
    };
    let message = match result {
        Ok(FastForward::Done) => format!("{branch} fast-forwarded to {}", &commit[..commit.len().min(12)]),
        Ok(FastForward::NotFastForward) => format!(
            "{branch} has moved since the mission started, so it was left alone; merge {integration} yourself"
        ),
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

/// Removes the mission's worktrees and unit branches; the integration branch stays as the reviewable result.
async fn cleanup(setup: &Setup) {
    let repo = &setup.repo;
    if let Ok(list) = repo.list_worktrees().await {
        for path in list.iter().filter(|p| p.starts_with(&setup.worktrees)) {
            if let Err(e) = repo.remove_worktree(path).await {
                tracing::warn!("cannot remove worktree {}: {e}", path.display());
            }
        }
    }
    let _ = tokio::fs::remove_dir_all(&setup.worktrees).await;
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
}
