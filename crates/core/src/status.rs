//! `orchestrator status` and `orchestrator cancel`: read or stop a mission of the repository (the
//! latest unless one is named) through its store, never through the engine's memory.

use std::path::Path;
use std::time::Duration;

use orchestrator_protocol::{Evidence, Outcome, Phase, Role, TokenUsage, UnitState};
use orchestrator_store::MissionStatus;
use serde::Serialize;

use crate::approval::WaitingPlan;
use crate::error::{EngineError, Result};
use crate::mission::open_store_at;
use crate::missions::find_mission;
use crate::replay::{CandidatePick, Replay, SessionRecord};

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub mission: String,
    pub objective: String,
    pub status: MissionStatus,
    /// Whether a live process is running the mission now.
    pub running: bool,
    pub phase: Option<Phase>,
    pub round: u32,
    pub outcome: Option<Outcome>,
    /// Sealed although no build, lint or test command judged the work (`--no-verify`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
    pub base_commit: String,
    pub integration_branch: String,
    pub units: Vec<UnitStatus>,
    pub sessions: Vec<SessionRecord>,
    pub usage: TokenUsage,
    /// Estimated from the price table; models without a price count as 0.
    pub cost_usd: f64,
    pub roles: Vec<RoleUsage>,
    pub integration_evidence: Vec<Evidence>,
    /// The project's commands on the base commit, once they ran: pre-existing failures, warm builds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<orchestrator_protocol::Baseline>,
    /// The plan waiting for a person's answer (`--approve-plan`), when one waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_plan: Option<WaitingPlan>,
    /// The commander holding (or last holding, if its lease expired) an unfinished mission's
    /// leader lease; none once it finished or was given back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderStatus>,
    /// The mission's units in the work queue that workers claim (docs/scale-out.md), in the order
    /// they were offered: who holds each and until when. Empty for a mission that runs its sessions
    /// itself.
    pub work_units: Vec<WorkUnitStatus>,
}

/// A unit of the work queue as `status` shows it. Holder and host are as the worker wrote them
/// (from any host): escape them before printing ([`crate::leader::shown`]).
#[derive(Debug, Clone, Serialize)]
pub struct WorkUnitStatus {
    pub unit: String,
    pub attempt: u32,
    pub state: WorkUnitState,
    /// The worker holding it while leased (also once its lease expired, until another claims it),
    /// or the one that finished it; none while ready.
    pub holder: Option<String>,
    pub host: Option<String>,
    /// The latest claim's fencing token (0 before the first claim).
    pub token: i64,
    /// When its lease ends unless renewed, by the store's clock; none unless leased.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether that lease has ended: the next claim may take the unit over.
    pub expired: bool,
    /// How many times it was taken over after a holder's lease expired; past
    /// `orchestrator_store::MAX_TAKEOVERS` it fails instead.
    pub takeovers: u32,
    /// How many times its holders gave it back for trouble on their hosts; past
    /// `orchestrator_store::MAX_GIVE_BACKS` it ends instead.
    pub give_backs: u32,
}

/// Where a unit of the work queue stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkUnitState {
    /// Offered or given back, waiting for a worker.
    Ready,
    Leased,
    Done,
    Failed,
}

impl WorkUnitState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkUnitState::Ready => "ready",
            WorkUnitState::Leased => "leased",
            WorkUnitState::Done => "done",
            WorkUnitState::Failed => "failed",
        }
    }
}

impl From<orchestrator_store::UnitState> for WorkUnitState {
    fn from(state: orchestrator_store::UnitState) -> Self {
        match state {
            orchestrator_store::UnitState::Ready => WorkUnitState::Ready,
            orchestrator_store::UnitState::Leased => WorkUnitState::Leased,
            orchestrator_store::UnitState::Done => WorkUnitState::Done,
            orchestrator_store::UnitState::Failed => WorkUnitState::Failed,
        }
    }
}

/// Who leads a mission: the commander's id and host, the lease's token and expiry.
#[derive(Debug, Clone, Serialize)]
pub struct LeaderStatus {
    pub holder: String,
    pub host: String,
    pub token: i64,
    /// When the lease ends unless renewed, by the store's clock.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether it has ended (a commander that died); `resume` then takes the mission over.
    pub expired: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoleUsage {
    pub role: Role,
    pub usage: TokenUsage,
    pub cost_usd: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnitStatus {
    pub id: String,
    pub title: String,
    pub round: u32,
    pub parent: Option<String>,
    pub depends_on: Vec<String>,
    pub state: UnitState,
    pub attempts: u32,
    pub branch: Option<String>,
    pub detail: Option<String>,
    pub evidence: Vec<Evidence>,
    /// Tokens and cost of the unit's own sessions (worker, reviewers, resolver).
    pub usage: TokenUsage,
    pub cost_usd: f64,
    /// Best of N: the candidate the unit went on with, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pick: Option<CandidatePick>,
}

/// The latest mission of the repository at `root`, as its store tells it.
pub fn status(root: &Path) -> Result<StatusReport> {
    status_of(root, None)
}

/// The mission `mission` names (an id or a unique prefix; the latest when `None`).
pub fn status_of(root: &Path, mission: Option<&str>) -> Result<StatusReport> {
    let store = open_store_at(root, false)?;
    let record = find_mission(&store, mission)?;
    let events = store
        .events_after(&record.id, None)
        .map_err(|e| EngineError::Usage(e.to_string()))?;
    let replay = Replay::from_events(&events);
    let running =
        crate::missions::MissionState::of_stored(&store, &record) == crate::missions::MissionState::Running;
    let units = replay
        .order
        .iter()
        .filter_map(|id| replay.units.get(id))
        .map(|u| UnitStatus {
            id: u.spec.id.clone(),
            title: u.spec.title.clone(),
            round: u.round,
            parent: u.parent.clone(),
            depends_on: u.spec.depends_on.clone(),
            state: u.state,
            attempts: u.attempt,
            branch: u.prepared.as_ref().map(|(branch, _)| branch.clone()),
            detail: u.detail.clone(),
            evidence: u.evidence.clone(),
            usage: unit_sessions(&replay, &u.spec.id).fold(TokenUsage::default(), |mut sum, s| {
                sum.add(s.usage);
                sum
            }),
            cost_usd: unit_sessions(&replay, &u.spec.id).map(|s| s.cost_usd).sum(),
            pick: u.pick.clone(),
        })
        .collect();
    let roles = replay
        .usage_by_role
        .iter()
        .map(|(role, usage)| RoleUsage {
            role: *role,
            usage: *usage,
            cost_usd: replay.cost_by_role.get(role).copied().unwrap_or(0.0),
        })
        .collect();
    let mut sessions: Vec<SessionRecord> = replay.sessions.values().cloned().collect();
    if !running {
        // A session cannot be live without the process that ran it.
        sessions.iter_mut().for_each(|s| s.active = false);
    }
    let waiting_plan = WaitingPlan::from_replay(&replay).filter(|_| record.status.is_unfinished());
    let leader = leader_of(&store, &record);
    let work_units = work_units_of(&store, &record.id);
    Ok(StatusReport {
        waiting_plan,
        leader,
        work_units,
        mission: record.id,
        objective: record.objective,
        status: record.status,
        running,
        phase: replay.phase,
        round: replay.round,
        outcome: replay.finished,
        unverified: replay.unverified,
        base_commit: record.base_commit,
        integration_branch: record.integration_branch,
        units,
        sessions,
        usage: replay.usage,
        cost_usd: replay.cost_usd,
        roles,
        integration_evidence: replay.integration_evidence,
        baseline: replay.baseline,
    })
}

/// The lead of an unfinished mission, as the store has it.
fn leader_of(
    store: &orchestrator_store::Store,
    record: &orchestrator_store::MissionRecord,
) -> Option<LeaderStatus> {
    if !record.status.is_unfinished() {
        return None;
    }
    let lease = store.leader(&record.id).ok().flatten()?;
    Some(LeaderStatus {
        holder: lease.holder.id,
        host: lease.holder.host,
        token: lease.token,
        expires_at: chrono::DateTime::from_timestamp_millis(lease.expires_at_ms),
        expired: lease.expired,
    })
}

/// The mission's units in the work queue; none when it has none, or they cannot be read (`status`
/// shows what it can).
fn work_units_of(store: &orchestrator_store::Store, mission: &str) -> Vec<WorkUnitStatus> {
    let units = match store.work_units(mission) {
        Ok(units) => units,
        Err(e) => {
            tracing::warn!("cannot read the work queue of mission {mission}: {e}");
            return Vec::new();
        }
    };
    units
        .into_iter()
        .map(|u| {
            let leased = u.state == orchestrator_store::UnitState::Leased;
            WorkUnitStatus {
                unit: u.key.unit,
                attempt: u.key.attempt,
                state: u.state.into(),
                holder: u.holder.as_ref().map(|h| h.id.clone()),
                host: u.holder.map(|h| h.host),
                token: u.token,
                expires_at: u
                    .expires_at_ms
                    .filter(|_| leased)
                    .and_then(chrono::DateTime::from_timestamp_millis),
                expired: leased && u.expired,
                takeovers: u.takeovers,
                give_backs: u.give_backs,
            }
        })
        .collect()
}

fn unit_sessions<'a>(replay: &'a Replay, unit: &'a str) -> impl Iterator<Item = &'a SessionRecord> + 'a {
    replay
        .sessions
        .values()
        .filter(move |s| s.unit.as_deref() == Some(unit))
}

/// Whether `pid`, recorded as a mission's process in the repository at `root`, still is that
/// process (see [`crate::lock::held_by`]): what must hold before it is sent a signal.
pub fn mission_process(root: &Path, pid: u32) -> bool {
    crate::lock::held_by(&root.join(crate::mission::STATE_DIR), pid)
}

/// Whether a process with this pid exists: cheap, and enough for a display, but after a kill -9 the
/// pid may name an unrelated process; before a signal, [`mission_process`] checks the repo lock.
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let result = unsafe { libc::kill(pid, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Stops the running mission cleanly: its process gets SIGTERM, handled like Ctrl-C (sessions
/// aborted, work kept, exit 3), and this waits until the process has let go of the repository.
pub async fn cancel(root: &Path, wait: Duration) -> Result<String> {
    cancel_mission(root, None, wait).await
}

/// [`cancel`] for the mission `mission` names (an id or a unique prefix; the latest when `None`).
pub async fn cancel_mission(root: &Path, mission: Option<&str>, wait: Duration) -> Result<String> {
    let store = open_store_at(root, false)?;
    let record = find_mission(&store, mission)?;
    let live = record
        .pid
        .filter(|p| record.status == MissionStatus::Running && mission_process(root, *p));
    let Some(pid) = live.and_then(|p| i32::try_from(p).ok()) else {
        // A signal reaches no other host: say where it runs instead of that it does not.
        if let Some(lease) = crate::leader::led_elsewhere(&store, &record.id) {
            return Err(EngineError::Conflict(format!(
                "mission {} is run by {} on {}, not on this host; cancel it there",
                record.id,
                crate::leader::shown(&lease.holder.id),
                crate::leader::shown(&lease.holder.host)
            )));
        }
        return Ok(format!(
            "mission {} is not running (status: {})",
            record.id, record.status
        ));
    };
    // SAFETY: kill only sends a signal to the recorded mission process.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(EngineError::Other(format!(
            "cannot signal the mission process {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    let deadline = tokio::time::Instant::now() + wait;
    while process_alive(pid as u32) && still_running(root, &record.id) {
        if tokio::time::Instant::now() >= deadline {
            return Err(EngineError::Other(format!(
                "mission {} (process {pid}) did not stop within {} s",
                record.id,
                wait.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(format!(
        "mission {} stopped; continue it with `orchestrator resume`",
        record.id
    ))
}

/// Whether the store still shows the mission as running (the process marks it when it stops).
fn still_running(root: &Path, mission: &str) -> bool {
    open_store_at(root, false)
        .ok()
        .and_then(|store| store.mission(mission).ok().flatten())
        .is_some_and(|m| m.status == MissionStatus::Running)
}
