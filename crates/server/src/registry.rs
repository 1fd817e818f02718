//! The missions the server knows: those it runs in this process, and those in the stores of the
//! repositories it knows (which may be run by another `orchestrator` process, or have finished).
//!
//! The store is the one source for what a mission did; the in-process handles add only what the
//! store cannot: the controls (pause, cancel) and a wake-up when a new event was written.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use orchestrator_core::{MissionState, MissionStatus, Steering};
use orchestrator_protocol::{EventEnvelope, Op, Outcome, Steer};
use orchestrator_store::{MissionRecord, Store};
use orchestrator_view::{MissionView, UnitCounts};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ApiError;

/// What the event streams of an in-process mission wait on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub last_seq: Option<u64>,
    pub finished: bool,
}

/// A mission this server runs.
#[derive(Clone)]
pub struct LiveMission {
    pub root: PathBuf,
    /// Where the API's pause, resume and cancel go, as [`Op`](orchestrator_protocol::Op)s.
    pub steer: Steering,
    pub progress: watch::Receiver<Progress>,
}

impl LiveMission {
    pub fn is_running(&self) -> bool {
        !self.progress.borrow().finished
    }

    /// Waits until the mission has stopped, or `limit` passed; true when it stopped.
    pub async fn stopped(&self, limit: Duration) -> bool {
        let mut progress = self.progress.clone();
        let done = tokio::time::timeout(limit, progress.wait_for(|p| p.finished)).await;
        // A closed channel means the driver is gone, and so is the mission.
        done.is_ok()
    }
}

/// The sending half a mission's driver holds; when it is dropped — the mission ended, or its driver
/// panicked — the mission counts as finished, so no stream waits for it forever.
pub struct ProgressSender(watch::Sender<Progress>);

impl ProgressSender {
    pub fn seen(&self, seq: u64) {
        self.0.send_modify(|p| p.last_seq = Some(seq));
    }
}

impl Drop for ProgressSender {
    fn drop(&mut self) {
        self.0.send_modify(|p| p.finished = true);
    }
}

pub fn progress_channel() -> (ProgressSender, watch::Receiver<Progress>) {
    let (tx, rx) = watch::channel(Progress::default());
    (ProgressSender(tx), rx)
}

#[derive(Default)]
pub struct Registry {
    repos: Mutex<Vec<PathBuf>>,
    /// The repositories given at start (resolved), the only ones missions may start in; `None` when
    /// the server allows any (`--any-repo`).
    startable: Option<Vec<PathBuf>>,
    live: Mutex<HashMap<String, LiveMission>>,
    /// The drivers of in-process missions, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Missions a resume request is starting or running now: a second request for one is refused
    /// before it reaches the engine (see [`Registry::claim_resume`]).
    resuming: Arc<Mutex<HashSet<String>>>,
    /// Set when shutdown began: no new mission starts.
    closing: CancellationToken,
    otlp_endpoint: Option<String>,
}

/// A mission found by id, with its store opened.
pub struct Found {
    pub root: PathBuf,
    pub record: MissionRecord,
    pub store: Arc<Store>,
    pub live: Option<LiveMission>,
}

impl Found {
    /// Whether a process runs the mission now.
    pub fn is_running(&self) -> bool {
        running(&self.root, &self.record, self.live.as_ref())
    }

    /// Where the mission stands: running (here or elsewhere), interrupted (resumable), finished or
    /// abandoned.
    pub fn state(&self) -> MissionState {
        state_of(&self.root, &self.record, self.live.as_ref())
    }

    /// Whether this server runs it, so it can pause, resume and cancel it directly.
    pub fn is_controllable(&self) -> bool {
        self.live.as_ref().is_some_and(LiveMission::is_running)
    }

    pub async fn events_after(&self, after: Option<u64>) -> Result<Vec<EventEnvelope>, ApiError> {
        let (store, id) = (self.store.clone(), self.record.id.clone());
        blocking(move || {
            store
                .events_after(&id, after)
                .map_err(|e| ApiError::internal(format!("cannot read the events of mission {id}: {e}")))
        })
        .await?
    }

    /// The mission record as stored now (its status changes while it runs).
    pub async fn refresh(&mut self) -> Result<(), ApiError> {
        let (store, id) = (self.store.clone(), self.record.id.clone());
        let record =
            blocking(move || store.mission(&id).map_err(|e| ApiError::internal(e.to_string()))).await??;
        if let Some(record) = record {
            self.record = record;
        }
        Ok(())
    }
}

/// The line of a mission in `GET /api/missions`.
#[derive(Debug, Clone, Serialize)]
pub struct MissionSummary {
    pub id: String,
    pub objective: String,
    pub repo: String,
    pub status: MissionStatus,
    /// `running`, `interrupted` (`POST /api/missions/{id}/resume` continues it), `finished` or
    /// `abandoned`.
    pub state: MissionState,
    pub running: bool,
    /// The outcome of a finished mission.
    pub outcome: Option<Outcome>,
    pub controllable: bool,
    pub created_at: Option<DateTime<Utc>>,
}

/// A repository the server knows, with why its missions could not be read, if so.
#[derive(Debug, Clone, Serialize)]
pub struct RepoSummary {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `GET /api/missions/{id}`: the folded view, its task tree and whether it runs.
#[derive(Debug, Clone, Serialize)]
pub struct MissionDetail {
    pub id: String,
    pub repo: String,
    pub status: MissionStatus,
    pub state: MissionState,
    pub running: bool,
    pub controllable: bool,
    /// The units in tree order (each planned unit followed by the units it spawned).
    pub tree: Vec<TreeEntry>,
    pub counts: UnitCounts,
    #[serde(flatten)]
    pub view: MissionView,
}

#[derive(Debug, Clone, Serialize)]
pub struct TreeEntry {
    pub unit: String,
    pub depth: usize,
}

impl MissionDetail {
    pub fn new(found: &Found, events: &[EventEnvelope]) -> Self {
        let view = MissionView::from_events(events);
        let tree = view
            .tree()
            .into_iter()
            .map(|row| TreeEntry {
                unit: row.unit.id.clone(),
                depth: row.depth,
            })
            .collect();
        MissionDetail {
            id: found.record.id.clone(),
            repo: found.root.display().to_string(),
            status: found.record.status,
            state: found.state(),
            running: found.is_running(),
            controllable: found.is_controllable(),
            tree,
            counts: view.counts(),
            view,
        }
    }
}

impl Registry {
    /// Knows `repos` and starts missions only in them (see [`Registry::starting_in_any_repo`]).
    pub fn new(repos: Vec<PathBuf>) -> Self {
        // Resolved once, so that a request naming the same folder by another path (a symlink) matches.
        let startable = repos
            .iter()
            .map(|repo| std::fs::canonicalize(repo).unwrap_or_else(|_| repo.clone()))
            .collect();
        let registry = Registry {
            startable: Some(startable),
            ..Registry::default()
        };
        for repo in repos {
            registry.add_repo(&repo);
        }
        registry
    }

    /// With `any`, missions may start in any repository on the server, not only the given ones.
    pub fn starting_in_any_repo(mut self, any: bool) -> Self {
        if any {
            self.startable = None;
        }
        self
    }

    /// The repositories missions may start in; `None`: any.
    pub fn startable(&self) -> Option<&[PathBuf]> {
        self.startable.as_deref()
    }

    /// Missions started here are exported as traces to this OTLP/HTTP URL.
    pub fn with_traces(mut self, endpoint: Option<String>) -> Self {
        self.otlp_endpoint = endpoint;
        self
    }

    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.otlp_endpoint.as_deref()
    }

    pub fn add_repo(&self, root: &Path) {
        let mut repos = lock(&self.repos);
        if !repos.iter().any(|r| r == root) {
            repos.push(root.to_path_buf());
        }
    }

    pub fn repos(&self) -> Vec<PathBuf> {
        lock(&self.repos).clone()
    }

    pub fn insert(&self, id: &str, mission: LiveMission) {
        self.add_repo(&mission.root);
        lock(&self.live).insert(id.to_string(), mission);
    }

    pub fn live(&self, id: &str) -> Option<LiveMission> {
        lock(&self.live).get(id).cloned()
    }

    pub fn running_count(&self) -> usize {
        lock(&self.live).values().filter(|m| m.is_running()).count()
    }

    /// Marks `id` as being resumed by this server until the returned claim is dropped; `None` when
    /// a resume of it is already under way here.
    pub fn claim_resume(&self, id: &str) -> Option<ResumeClaim> {
        if !lock(&self.resuming).insert(id.to_string()) {
            return None;
        }
        Some(ResumeClaim {
            id: id.to_string(),
            resuming: self.resuming.clone(),
        })
    }

    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Refuses new missions and cancels the running ones; returns how many were running.
    pub fn cancel_all(&self) -> usize {
        self.closing.cancel();
        self.tasks.close();
        let live = lock(&self.live);
        let running: Vec<_> = live.values().filter(|m| m.is_running()).collect();
        running.iter().for_each(|m| m.steer.send(Op::Cancel));
        running.len()
    }

    /// Waits for every in-process mission to stop, at most `limit`.
    pub async fn wait_stopped(&self, limit: Duration) {
        if tokio::time::timeout(limit, self.tasks.wait()).await.is_err() {
            tracing::warn!("missions still running after {} s; leaving them", limit.as_secs());
        }
    }

    /// The mission with this id, from this server's missions or the known repositories' stores.
    pub async fn find(&self, id: &str) -> Result<Found, ApiError> {
        let live = self.live(id);
        let roots = match &live {
            Some(mission) => vec![mission.root.clone()],
            None => self.repos(),
        };
        let wanted = id.to_string();
        let found = blocking(move || find_in(&roots, &wanted)).await?;
        let (root, record, store) = found.ok_or_else(|| ApiError::unknown_mission(id))?;
        Ok(Found {
            root,
            record,
            store,
            live,
        })
    }

    /// Every mission of every known repository, newest first, and the repositories.
    pub async fn list(&self) -> Result<(Vec<MissionSummary>, Vec<RepoSummary>), ApiError> {
        let roots = self.repos();
        let listed: Vec<_> =
            blocking(move || roots.iter().map(|root| (root.clone(), list_in(root))).collect()).await?;
        let mut missions = Vec::new();
        let mut repos = Vec::new();
        for (root, result) in listed {
            let (records, note) = match result {
                Ok(records) => (records, None),
                Err(note) => (Vec::new(), Some(note)),
            };
            repos.push(RepoSummary {
                path: root.display().to_string(),
                note,
            });
            missions.extend(records.into_iter().map(|record| self.summary(&root, record)));
        }
        missions.sort_by_key(|m| std::cmp::Reverse(m.created_at));
        Ok((missions, repos))
    }

    fn summary(&self, root: &Path, record: MissionRecord) -> MissionSummary {
        let live = self.live(&record.id);
        let running = running(root, &record, live.as_ref());
        MissionSummary {
            state: state_of(root, &record, live.as_ref()),
            outcome: (!running).then(|| outcome_of(record.status)).flatten(),
            controllable: live.as_ref().is_some_and(LiveMission::is_running),
            created_at: created_at(&record.created_at),
            repo: root.display().to_string(),
            status: record.status,
            running,
            objective: record.objective,
            id: record.id,
        }
    }
}

/// Whether a process runs the mission now. A mission recorded with this process's id but not run by
/// this server is a leftover of an earlier process that had the same id; another process runs it
/// only while it holds the repository's lock, as core judges it (a killed mission's pid may name an
/// unrelated process since).
fn running(root: &Path, record: &MissionRecord, live: Option<&LiveMission>) -> bool {
    if let Some(live) = live {
        return live.is_running();
    }
    record.status == MissionStatus::Running
        && record
            .pid
            .is_some_and(|pid| pid != std::process::id() && orchestrator_core::mission_process(root, pid))
}

/// A mission's state as this server sees it: one it runs is running while its driver lives, whatever
/// its record says (the record names this process).
fn state_of(root: &Path, record: &MissionRecord, live: Option<&LiveMission>) -> MissionState {
    match MissionState::of(record) {
        _ if running(root, record, live) => MissionState::Running,
        MissionState::Running => MissionState::Interrupted,
        other => other,
    }
}

/// Held while a resume of one mission starts and runs in this server.
pub struct ResumeClaim {
    id: String,
    resuming: Arc<Mutex<HashSet<String>>>,
}

impl Drop for ResumeClaim {
    fn drop(&mut self) {
        lock(&self.resuming).remove(&self.id);
    }
}

fn outcome_of(status: MissionStatus) -> Option<Outcome> {
    match status {
        MissionStatus::Running => None,
        MissionStatus::Sealed => Some(Outcome::Sealed),
        MissionStatus::Unsealed => Some(Outcome::Unsealed),
        MissionStatus::Interrupted => Some(Outcome::Interrupted),
        // Given up for good, never resumed: over without a seal (`status` says "abandoned").
        MissionStatus::Abandoned => Some(Outcome::Unsealed),
    }
}

/// The store records seconds since the epoch, zero-padded.
fn created_at(stored: &str) -> Option<DateTime<Utc>> {
    let secs = stored.trim().parse::<i64>().ok()?;
    DateTime::from_timestamp(secs, 0)
}

fn find_in(roots: &[PathBuf], id: &str) -> Option<(PathBuf, MissionRecord, Arc<Store>)> {
    roots.iter().find_map(|root| {
        let store = orchestrator_core::open_store_in(root).ok()?;
        let record = store.mission(id).ok().flatten()?;
        Some((root.clone(), record, Arc::new(store)))
    })
}

fn list_in(root: &Path) -> Result<Vec<MissionRecord>, String> {
    let store = orchestrator_core::open_store_in(root).map_err(|e| e.to_string())?;
    store.missions().map_err(|e| e.to_string())
}

/// Runs store work (SQLite, synchronous) off the async workers.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            ),
        })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mission_is_claimed_for_resume_once_at_a_time() {
        let registry = Registry::new(Vec::new());
        let first = registry.claim_resume("m1").expect("the first claim");
        assert!(registry.claim_resume("m1").is_none(), "a second one waits");
        assert!(registry.claim_resume("m2").is_some(), "another mission is apart");
        drop(first);
        assert!(registry.claim_resume("m1").is_some(), "free again once over");
    }
}
