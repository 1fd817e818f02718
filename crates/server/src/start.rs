//! `POST /api/missions`: starting a mission in this process.
//!
//! The engine only names the mission once it has passed every check (repository, config, key,
//! endpoint, clean tree, repo lock) and emitted its first event; a refusal comes back as an error
//! before any event. The request is answered with whichever comes first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orchestrator_core::config::MissionSettings;
use orchestrator_core::{
    EngineError, EventBus, IfInterrupted, MissionControl, MissionOptions, MissionReport, ResumeOptions,
    Steering,
};
use orchestrator_store::MissionRecord;
use orchestrator_telemetry::{Exporter, Settings};
use serde::Deserialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::registry::{blocking, progress_channel, LiveMission, Registry, ResumeClaim};

/// The body of `POST /api/missions`: where and what, plus the mission's settings, whose one
/// declaration is [`MissionSettings`] (its fields sit in the body beside these). Unknown fields are
/// refused, so a misspelt option is not silently ignored.
#[derive(Debug, Clone)]
pub struct StartRequest {
    /// An absolute path inside the git repository to work in.
    pub repo: String,
    pub objective: String,
    pub allow_dirty: bool,
    /// Fast-forward the user's branch when sealed (default true).
    pub apply: bool,
    /// Abandon the repository's interrupted missions and start anyway; without it, a start beside
    /// one is refused (409) naming it.
    pub abandon_interrupted: bool,
    pub settings: MissionSettings,
}

/// The request's own fields, read apart from the settings.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    repo: String,
    objective: String,
    #[serde(default)]
    allow_dirty: bool,
    #[serde(default = "yes")]
    apply: bool,
    #[serde(default)]
    abandon_interrupted: bool,
}

/// Settings a request may not give: a mission started over the API is confined as the repository's
/// config says, and runs on the endpoints the server's environment names.
const SERVER_ONLY: &[(&str, &str)] = &[
    (
        "sandbox",
        "missions started over the API are confined as the repository's config says",
    ),
    (
        "opencode_url",
        "missions started over the API use the server's own endpoint settings",
    ),
    (
        "workers",
        "missions started over the API run their units in the server's process",
    ),
    (
        "remote",
        "a request may not send the repository's commits anywhere; external workers are for `orchestrator task`",
    ),
];

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Reads `fields` as `T`, naming the field that is wrong and what it may be.
fn read_fields<T: serde::de::DeserializeOwned>(
    fields: serde_json::Map<String, serde_json::Value>,
) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(serde_json::Value::Object(fields)).map_err(|e| {
        let field = e.path().to_string();
        let problem = if field == "." {
            e.inner().to_string()
        } else if let Some((_, meaning, words)) = allowed_range(&field) {
            // A negative number, a fraction or one past the integer's size: say what fits.
            format!(
                "{field}: {}; {field} ({meaning}) must be a whole number {words}",
                e.inner()
            )
        } else {
            format!("{field}: {}", e.inner())
        };
        ApiError::unprocessable(format!("invalid mission request: {problem}. {EXPECTED_BODY}"))
    })
}

fn yes() -> bool {
    true
}

/// What a start request looks like, for error messages.
pub const EXPECTED_BODY: &str =
    "Expected a JSON object like {\"repo\": \"/abs/path/to/repo\", \"objective\": \"...\"} \
     with optional max_parallel, max_depth, rounds, model, provider, budget_tokens, attempts, no_verify, approve_plan, allow_dirty, apply, abandon_interrupted.";

/// The request's numbers, each limited as the flag and config key of the same name are
/// (`orchestrator_core::config::bound_of`): a request cannot ask for more than a command line could.
const BOUNDED_FIELDS: &[&str] = &["max_parallel", "max_depth", "rounds", "budget_tokens", "attempts"];

/// What a bounded field may be, in words: "between 1 and 256", "at least 1000".
fn allowed_range(field: &str) -> Option<(std::ops::RangeInclusive<u64>, &'static str, String)> {
    // `attempts` is named for its flag (`--attempts`); its config key is `limits.candidates`.
    let key = if field == "attempts" {
        "limits.candidates"
    } else {
        field
    };
    let (range, meaning) = orchestrator_core::config::bound_of(key)?;
    let words = if *range.end() == u64::MAX {
        format!("at least {}", range.start())
    } else {
        format!("between {} and {}", range.start(), range.end())
    };
    Some((range, meaning, words))
}

impl StartRequest {
    /// Reads a request body, naming the field that is wrong.
    pub fn from_json(body: serde_json::Value) -> Result<Self, ApiError> {
        let serde_json::Value::Object(mut fields) = body else {
            return Err(ApiError::unprocessable(format!(
                "the body is {}, not a JSON object. {EXPECTED_BODY}",
                json_kind(&body)
            )));
        };
        if let Some((field, why)) = SERVER_ONLY.iter().find(|(field, _)| fields.contains_key(*field)) {
            return Err(ApiError::unprocessable(format!(
                "{field} cannot be set in a request: {why}. {EXPECTED_BODY}"
            )));
        }
        let settings = MissionSettings::take_from(&mut fields);
        let mut settings: MissionSettings = read_fields(settings)?;
        settings.model = settings.model.filter(|m| !m.trim().is_empty());
        let target: Target = read_fields(fields)?;
        Ok(StartRequest {
            repo: target.repo,
            objective: target.objective,
            allow_dirty: target.allow_dirty,
            apply: target.apply,
            abandon_interrupted: target.abandon_interrupted,
            settings,
        })
    }

    /// Every number within the bounds the engine applies to the flags, named by its field here.
    fn check_bounds(&self) -> Result<(), ApiError> {
        let s = &self.settings;
        let given = [
            s.max_parallel.map(|v| v as u64),
            s.max_depth.map(u64::from),
            s.rounds.map(u64::from),
            s.budget_tokens,
            s.attempts.map(u64::from),
        ];
        // `attempts` is the flag's name (`--attempts`); its config key is `limits.candidates`.
        let fields = BOUNDED_FIELDS
            .iter()
            .map(|f| (*f, *f))
            .chain([("attempts", "limits.candidates")]);
        let given = given.into_iter().chain([s.attempts.map(u64::from)]);
        for ((field, key), value) in fields.zip(given) {
            let (Some(value), Some((range, meaning, words))) = (value, allowed_range(key)) else {
                continue;
            };
            if !range.contains(&value) {
                return Err(ApiError::unprocessable(format!(
                    "{field} is {value}; {field} ({meaning}) must be {words}"
                )));
            }
        }
        Ok(())
    }

    /// The checks the engine cannot make with our words: the numbers' bounds and the repository path.
    pub fn validate(&self) -> Result<PathBuf, ApiError> {
        self.check_bounds()?;
        let repo = PathBuf::from(&self.repo);
        if !repo.is_absolute() {
            return Err(ApiError::unprocessable(format!(
                "repo must be an absolute path to a git repository on the server (got `{}`)",
                self.repo
            )));
        }
        if !repo.is_dir() {
            return Err(ApiError::unprocessable(format!(
                "repo {} is not a directory on the server",
                repo.display()
            )));
        }
        Ok(repo)
    }
}

/// Starts the mission and answers with its id once the engine has named it, or with the engine's
/// refusal.
pub async fn launch(registry: Arc<Registry>, request: StartRequest) -> Result<String, ApiError> {
    if registry.is_closing() {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down; no new mission starts",
        ));
    }
    let repo = request.validate()?;
    let repo = resolved(&repo).await?;
    // Before git runs in the folder at all: a repository's own config can make git run programs.
    check_startable(registry.startable(), &repo, false)?;
    let root = orchestrator_core::repo_root(&repo)
        .await
        .map_err(|e| ApiError::from_engine(&e))?;
    let root = resolved(&root).await?;
    // Exactly a listed repository, not one nested inside it (a submodule, a repository in a subfolder).
    check_startable(registry.startable(), &root, true)?;
    let abandon = request.abandon_interrupted;
    // Before anything is spent; the engine checks again with the repository locked.
    if !abandon {
        refuse_beside_interrupted(&root).await?;
    }
    let control = MissionControl::new();
    let options = MissionOptions {
        repo: root.clone(),
        objective: request.objective.clone(),
        allow_dirty: request.allow_dirty,
        apply: request.apply,
        keep_branches: false,
        if_interrupted: match abandon {
            true => IfInterrupted::Abandon,
            false => IfInterrupted::Refuse,
        },
        settings: request.settings.clone(),
        control: control.clone(),
    };
    let mission = Mission::new(registry.clone(), root.clone(), control);
    match mission.spawn(Run::Start(options), None).await {
        // Interrupted between the check above and the engine's own (a process killed meanwhile).
        Err(refusal)
            if !abandon && matches!(refusal.status, axum::http::StatusCode::UNPROCESSABLE_ENTITY) =>
        {
            refuse_beside_interrupted(&root).await?;
            Err(refusal)
        }
        other => other,
    }
}

/// A new mission would leave an interrupted one's work behind: 409, naming each and the two ways on
/// (resume it, or start again with `abandon_interrupted`), as `orchestrator task` does.
async fn refuse_beside_interrupted(root: &Path) -> Result<(), ApiError> {
    let interrupted = {
        let root = root.to_path_buf();
        blocking(move || orchestrator_core::interrupted(&root)).await?
    }
    .map_err(|e| ApiError::from_engine(&e))?;
    if interrupted.is_empty() {
        return Ok(());
    }
    Err(interrupted_refusal(root, &interrupted))
}

fn interrupted_refusal(root: &Path, interrupted: &[MissionRecord]) -> ApiError {
    let mut text = format!(
        "{} has {}; a new mission would leave {} work behind:\n",
        root.display(),
        match interrupted.len() {
            1 => "an interrupted mission".to_string(),
            n => format!("{n} interrupted missions"),
        },
        if interrupted.len() == 1 { "its" } else { "their" },
    );
    for record in interrupted {
        text.push_str(&format!("  {}\n", mission_line(record)));
    }
    let newest = &interrupted[0].id;
    text.push_str(&format!(
        "Either resume it: POST /api/missions/{newest}/resume (the dashboard's Resume button)\n\
         or abandon it (its worktrees and branches are removed; its record, log and transcripts stay) and \
         start the new mission: send the request again with \"abandon_interrupted\": true"
    ));
    let listed: Vec<serde_json::Value> = interrupted
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "objective": m.objective,
                "resume": format!("/api/missions/{}/resume", m.id),
            })
        })
        .collect();
    ApiError::conflict(text).with_detail("interrupted", serde_json::Value::Array(listed))
}

/// A mission in a line: id and the start of its objective.
pub fn mission_line(record: &MissionRecord) -> String {
    let objective = record.objective.lines().next().unwrap_or_default();
    format!(
        "{} (\"{}\")",
        record.id,
        orchestrator_core::shorten(objective, 70)
    )
}

/// `path` with symlinks resolved, as the allowed repositories are.
pub async fn resolved(path: &Path) -> Result<PathBuf, ApiError> {
    tokio::fs::canonicalize(path).await.map_err(|e| {
        ApiError::unprocessable(format!(
            "repo {} cannot be resolved on the server: {e}",
            path.display()
        ))
    })
}

/// Missions start only in the repositories the server was given (`startable`; `None`: any). With
/// `exact`, `path` is a repository's top folder and must be one of them; else it may lie inside one.
pub fn check_startable(startable: Option<&[PathBuf]>, path: &Path, exact: bool) -> Result<(), ApiError> {
    let Some(allowed) = startable else {
        return Ok(());
    };
    let fits = |root: &PathBuf| {
        if exact {
            path == root
        } else {
            path.starts_with(root)
        }
    };
    if allowed.iter().any(fits) {
        return Ok(());
    }
    let message = if allowed.is_empty() {
        format!(
            "this server starts missions in no repository (it was started outside a git repository without \
             --repo), so not in {}; restart `orchestrator serve` with --repo {} (or --any-repo to allow any)",
            path.display(),
            path.display()
        )
    } else {
        let listed: Vec<String> = allowed.iter().map(|r| r.display().to_string()).collect();
        format!(
            "repo {} is not one this server starts missions in (those given with --repo: {}); restart \
             `orchestrator serve` with --repo {} added (or --any-repo to allow any repository)",
            path.display(),
            listed.join(", "),
            path.display()
        )
    };
    Err(ApiError::new(axum::http::StatusCode::FORBIDDEN, message))
}

/// What a mission's driver runs: a new mission, or an interrupted one continued.
pub enum Run {
    Start(MissionOptions),
    Resume(ResumeOptions),
}

pub struct Mission {
    registry: Arc<Registry>,
    root: PathBuf,
    control: MissionControl,
    cancel: CancellationToken,
}

impl Mission {
    pub fn new(registry: Arc<Registry>, root: PathBuf, control: MissionControl) -> Self {
        Mission {
            registry,
            root,
            control,
            cancel: CancellationToken::new(),
        }
    }

    /// Runs `run` in this process and answers with the mission's id once the engine has named it, or
    /// with the engine's refusal. `claim` (a resume's) is held until the run is over.
    pub async fn spawn(self, run: Run, claim: Option<ResumeClaim>) -> Result<String, ApiError> {
        let (named_tx, named_rx) = oneshot::channel();
        let tasks = self.registry.tasks.clone();
        tasks.spawn(async move {
            self.drive(run, named_tx).await;
            drop(claim);
        });
        match named_rx.await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(refusal)) => Err(ApiError::from_engine(&refusal)),
            Err(_) => Err(ApiError::internal(
                "the mission stopped before it started; see the server's log",
            )),
        }
    }

    /// The mission's spans go to the server's OTLP endpoint; a collector that is gone only costs a
    /// warning in the server's log, never the mission.
    fn start_traces(&self, bus: &EventBus) -> Option<Exporter> {
        let url = self.registry.otlp_endpoint()?;
        match Exporter::otlp(url, Settings::default(), bus.subscribe()) {
            Ok(exporter) => Some(exporter),
            Err(e) => {
                tracing::warn!("no traces for this mission: {e}");
                None
            }
        }
    }

    /// Runs the mission to its end: reports its id (or refusal) through `named`, registers it, and
    /// wakes its event streams on every event.
    async fn drive(self, run: Run, named: oneshot::Sender<Result<String, EngineError>>) {
        let bus = EventBus::new();
        let mut events = bus.subscribe();
        let traces = self.start_traces(&bus);
        let (progress, progress_rx) = progress_channel();
        let run = engine_run(run, bus.clone(), self.cancel.clone());
        tokio::pin!(run);
        let first = tokio::select! {
            ended = &mut run => Err(ended),
            event = events.recv() => Ok(event),
        };
        let live = LiveMission {
            root: self.root.clone(),
            steer: Steering::new(self.control.clone(), self.cancel.clone()),
            progress: progress_rx,
        };
        let report = match first {
            Err(Err(refusal)) => {
                let _ = named.send(Err(refusal));
                return;
            }
            Err(Ok(report)) => {
                // Finished before its first event reached us (it cannot, but the report names it).
                self.registry.insert(&report.mission, live);
                let _ = named.send(Ok(report.mission.clone()));
                Ok(report)
            }
            Ok(first) => {
                if let Some(event) = &first {
                    self.registry.insert(&event.mission, live);
                    progress.seen(event.seq);
                    let _ = named.send(Ok(event.mission.clone()));
                }
                let forward = async {
                    while let Some(event) = events.recv().await {
                        progress.seen(event.seq);
                    }
                };
                tokio::select! {
                    report = &mut run => report,
                    _ = forward => run.await,
                }
            }
        };
        bus.close();
        if let Some(traces) = traces {
            if let Err(e) = traces.finish().await {
                tracing::warn!("traces not fully exported: {e}");
            }
        }
        match report {
            Ok(report) => tracing::info!("mission {} finished: {:?}", report.mission, report.outcome),
            Err(e) => tracing::warn!("mission stopped: {e}"),
        }
        drop(progress);
    }
}

/// The engine's own entry for `run`: the one `orchestrator task` or `orchestrator resume` runs.
async fn engine_run(
    run: Run,
    bus: EventBus,
    cancel: CancellationToken,
) -> orchestrator_core::Result<MissionReport> {
    match run {
        Run::Start(options) => orchestrator_core::run_task(options, bus, cancel).await,
        Run::Resume(options) => orchestrator_core::resume(options, bus, cancel).await,
    }
}
