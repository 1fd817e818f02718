//! Every mission of a repository: the list `orchestrator missions` shows, the one a `--mission ID`
//! (or its unique prefix) names, and the interrupted ones `task` will not leave behind unless told
//! to abandon them.

use std::path::Path;

use chrono::{DateTime, Utc};
use orchestrator_git::Repo;
use orchestrator_protocol::{Event, EventEnvelope, TokenUsage};
use orchestrator_store::{MissionRecord, MissionStatus, Store};
use serde::Serialize;

use crate::error::{EngineError, Result};
use crate::mission::open_store_at;
use crate::replay::Replay;
use crate::status::process_alive;

/// How many missions an error lists before it points to `orchestrator missions`.
const LISTED: usize = 5;

/// Where a mission stands, as one word: what its record says and whether a live process runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissionState {
    /// A live process runs it now.
    Running,
    /// Stopped before its end (kill, crash, Ctrl-C, cancel, spent budget): `resume` continues it.
    Interrupted,
    /// Over: sealed or not.
    Finished,
    /// Given up with `task --abandon`: its worktrees and branches are gone, its record stays.
    Abandoned,
}

impl MissionState {
    pub fn as_str(self) -> &'static str {
        match self {
            MissionState::Running => "running",
            MissionState::Interrupted => "interrupted",
            MissionState::Finished => "finished",
            MissionState::Abandoned => "abandoned",
        }
    }

    /// A record's state, as its store's repository shows it: "running" only while the recorded
    /// process holds the repository's mission lock. After a kill -9 the pid may have been given to
    /// an unrelated process, which [`MissionState::of`] alone would take for the mission.
    pub fn of_stored(store: &Store, record: &MissionRecord) -> MissionState {
        let state = MissionState::of(record);
        // A commander on another host holds its lead: its pid and this checkout's lock say nothing.
        if record.status.is_unfinished() && crate::leader::led_elsewhere(store, &record.id).is_some() {
            return MissionState::Running;
        }
        let state_dir = store.state_dir();
        match (state, record.pid, state_dir) {
            (MissionState::Running, Some(pid), Some(dir)) if !crate::lock::held_by(dir, pid) => {
                MissionState::Interrupted
            }
            _ => state,
        }
    }

    /// A record's state. A mission recorded as running whose process is gone was killed.
    pub fn of(record: &MissionRecord) -> MissionState {
        match record.status {
            MissionStatus::Running if record.pid.is_some_and(process_alive) => MissionState::Running,
            MissionStatus::Running | MissionStatus::Interrupted => MissionState::Interrupted,
            MissionStatus::Sealed | MissionStatus::Unsealed => MissionState::Finished,
            MissionStatus::Abandoned => MissionState::Abandoned,
        }
    }
}

/// One line of `orchestrator missions`; its JSON is the `--json` output (docs/protocol.md).
#[derive(Debug, Clone, Serialize)]
pub struct MissionSummary {
    pub id: String,
    pub objective: String,
    pub state: MissionState,
    /// How its last run ended: `sealed`, `unsealed`, `interrupted` (Ctrl-C, cancel), or `killed`
    /// (the process died without ending it); null while it runs.
    pub outcome: Option<String>,
    /// Sealed although no build, lint or test command judged the work (`--no-verify`).
    pub unverified: bool,
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished or was abandoned; null while it runs or is interrupted.
    pub ended_at: Option<DateTime<Utc>>,
    pub tokens: u64,
    pub usage: TokenUsage,
    /// Estimated from the price table; models without a price count as 0.
    pub cost_usd: f64,
}

/// Every mission of the repository at `root`, newest first; none without a store.
pub fn missions(root: &Path) -> Result<Vec<MissionSummary>> {
    if !root.join(crate::STATE_DIR).is_dir() && !crate::mission::has_store(root)? {
        return Ok(Vec::new());
    }
    let store = open_store_at(root, false)?;
    let records = store.missions().map_err(usage)?;
    records.into_iter().map(|r| summarize(&store, r)).collect()
}

fn summarize(store: &Store, record: MissionRecord) -> Result<MissionSummary> {
    let events = store.events_after(&record.id, None).map_err(usage)?;
    let replay = Replay::from_events(&events);
    let state = MissionState::of_stored(store, &record);
    let finished = last_finish(&events);
    let outcome = match (state, finished) {
        (MissionState::Running, _) => None,
        (_, Some((outcome, _))) => serde_json::to_value(outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string)),
        (_, None) => Some("killed".to_string()),
    };
    let ended_at = match state {
        MissionState::Finished => finished
            .map(|(_, at)| at)
            .or_else(|| stored_time(&record.updated_at)),
        MissionState::Abandoned => stored_time(&record.updated_at),
        MissionState::Running | MissionState::Interrupted => None,
    };
    Ok(MissionSummary {
        started_at: stored_time(&record.created_at),
        id: record.id,
        objective: record.objective,
        state,
        outcome,
        unverified: replay.unverified,
        ended_at,
        tokens: replay.usage.total(),
        usage: replay.usage,
        cost_usd: replay.cost_usd,
    })
}

/// The outcome and time of the mission's last run when that run ended it: `mission_finished` is
/// the last event a run writes, so a log ending otherwise was cut off by a kill or crash.
fn last_finish(events: &[EventEnvelope]) -> Option<(orchestrator_protocol::Outcome, DateTime<Utc>)> {
    match events.last() {
        Some(EventEnvelope {
            at,
            event: Event::MissionFinished { outcome, .. },
            ..
        }) => Some((*outcome, *at)),
        _ => None,
    }
}

/// The store's timestamps: seconds since the epoch, zero-padded.
pub fn stored_time(stored: &str) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(stored.trim().parse::<i64>().ok()?, 0)
}

/// The mission `wanted` names — a whole id or a unique prefix of one — or the latest without it.
/// Anything else is a usage error (exit 2) that says which missions there are.
pub fn find_mission(store: &Store, wanted: Option<&str>) -> Result<MissionRecord> {
    let Some(wanted) = wanted else {
        return store
            .latest_mission()
            .map_err(usage)?
            .ok_or_else(|| EngineError::Usage(NO_MISSION.into()));
    };
    let wanted = wanted.trim();
    if wanted.is_empty() {
        return Err(EngineError::Usage(
            "--mission needs a mission id (or the start of one); `orchestrator missions` lists them".into(),
        ));
    }
    if let Some(exact) = store.mission(wanted).map_err(usage)? {
        return Ok(exact);
    }
    let mut matches = store.missions_with_prefix(wanted).map_err(usage)?;
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(unknown(store, wanted)),
        _ => Err(EngineError::Usage(format!(
            "`{}` is the start of {} missions: {}; give more of the id",
            shown(wanted),
            matches.len(),
            ids(&matches)
        ))),
    }
}

const NO_MISSION: &str = "no mission has run in this repository; start one with `orchestrator task`";

fn unknown(store: &Store, wanted: &str) -> EngineError {
    let known = store.missions().unwrap_or_default();
    if known.is_empty() {
        return EngineError::Usage(format!(
            "no mission {} in this repository: no mission has run here yet",
            shown(wanted)
        ));
    }
    EngineError::Usage(format!(
        "no mission {} in this repository; the latest: {} (`orchestrator missions` lists them all)",
        shown(wanted),
        ids(&known)
    ))
}

/// What the user typed, safe to print: control characters escaped, and not a page long.
fn shown(text: &str) -> String {
    let escaped: String = text.escape_debug().collect();
    match escaped.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

fn ids(records: &[MissionRecord]) -> String {
    let list: Vec<&str> = records.iter().take(LISTED).map(|m| m.id.as_str()).collect();
    let more = records.len().saturating_sub(LISTED);
    let tail = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("{}{tail}", list.join(", "))
}

/// The repository's interrupted missions (unfinished, no live process runs them), newest first: what
/// `resume` may continue, and what a front end offers for it. None when no mission has run there.
pub fn interrupted(root: &Path) -> Result<Vec<MissionRecord>> {
    if !crate::mission::has_store(root)? {
        return Ok(Vec::new());
    }
    let store = open_store_at(root, false)?;
    interrupted_missions(&store, false)
}

/// The missions a new one would leave behind: unfinished and not run by a live process. With the
/// repository lock held no other process of this host runs one, whatever pid its record names (it
/// may have been reused since); one led from another host (its live leader lease) still runs.
pub(crate) fn interrupted_missions(store: &Store, lock_held: bool) -> Result<Vec<MissionRecord>> {
    let all = store.missions().map_err(usage)?;
    Ok(all
        .into_iter()
        .filter(|m| m.status.is_unfinished())
        .filter(|m| crate::leader::led_elsewhere(store, &m.id).is_none())
        .filter(|m| lock_held || MissionState::of_stored(store, m) == MissionState::Interrupted)
        .collect())
}

/// `task` refused: names each interrupted mission and the two ways on.
pub(crate) fn refuse_new_mission(interrupted: &[MissionRecord]) -> EngineError {
    let mut text = String::from(if interrupted.len() == 1 {
        "this repository has an interrupted mission; a new one would leave its work behind:\n"
    } else {
        "this repository has interrupted missions; a new one would leave their work behind:\n"
    });
    for record in interrupted {
        text.push_str(&format!("  {}\n", line(record)));
    }
    let resume = match interrupted {
        [_] => "orchestrator resume".to_string(),
        [newest, ..] => format!("orchestrator resume --mission {}", newest.id),
        [] => String::new(),
    };
    text.push_str(&format!(
        "Either continue it: `{resume}`\n\
         or abandon it (its worktrees and branches are removed; its record, log and transcripts stay) and \
         start the new mission: `orchestrator task --abandon \"…\"`"
    ));
    EngineError::Usage(text)
}

/// One mission in a sentence: id, state, when it started, objective.
fn line(record: &MissionRecord) -> String {
    let when = stored_time(&record.created_at)
        .map(|t| format!("started {}", t.format("%Y-%m-%d %H:%M UTC")))
        .unwrap_or_else(|| "start unknown".into());
    let objective = record.objective.lines().next().unwrap_or_default();
    // A finished mission says how: sealed or not.
    let state = match MissionState::of(record) {
        MissionState::Finished => record.status.as_str(),
        other => other.as_str(),
    };
    format!("{}  {state}, {when}: \"{}\"", record.id, shorten(objective, 70))
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > max => format!("{}…", &text[..cut]),
        _ => text.to_string(),
    }
}

/// Gives up an interrupted mission for a new one: its worktrees and branches go, its record is
/// marked abandoned (its log and transcripts stay). The caller holds the repository lock.
pub(crate) async fn abandon(repo: &Repo, store: &Store, record: &MissionRecord) -> Result<String> {
    let removed = crate::clean::clean_mission(repo, &record.id).await?;
    store.abandon(&record.id).map_err(usage)?;
    Ok(format!(
        "abandoned mission {} (\"{}\"): removed {} worktree(s) and {} branch(es); its record and log stay",
        record.id,
        shorten(record.objective.lines().next().unwrap_or_default(), 70),
        removed.worktrees.len(),
        removed.branches.len()
    ))
}

/// What `resume` says when there is nothing to continue: the latest missions and their states.
pub(crate) fn nothing_to_resume(store: &Store, asked: Option<&MissionRecord>) -> EngineError {
    let head = match asked {
        Some(record) if record.status == MissionStatus::Abandoned => format!(
            "mission {} was abandoned (its worktrees and branches were removed); it cannot be resumed.",
            record.id
        ),
        Some(record) => format!(
            "mission {} is already finished ({}); nothing to resume.",
            record.id, record.status
        ),
        None => "nothing to resume: no mission in this repository is interrupted.".into(),
    };
    let known = store.missions().unwrap_or_default();
    if known.is_empty() {
        return EngineError::Usage(NO_MISSION.into());
    }
    let mut text = format!("{head}\nThe latest missions:\n");
    for record in known.iter().take(LISTED) {
        text.push_str(&format!("  {}\n", line(record)));
    }
    text.push_str("Start a new one with `orchestrator task \"…\"`; `orchestrator missions` lists them all.");
    EngineError::Usage(text)
}

fn usage(e: orchestrator_store::StoreError) -> EngineError {
    EngineError::Usage(e.to_string())
}

#[cfg(test)]
mod tests;
