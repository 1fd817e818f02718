//! Interrupted missions: `POST /api/missions/{id}/resume` continues one in this process, through the
//! engine's own resume (the one `orchestrator resume` runs), and `serve --resume-interrupted`
//! continues each repository's newest one at start.
//!
//! Never twice: a mission a live process runs is refused (its record names the process, and the
//! repository lock is held), and a resume already under way here holds a [`ResumeClaim`] that a
//! second request cannot take. The engine checks again, with the lock held, that the mission is
//! still unfinished.
//!
//! [`ResumeClaim`]: crate::registry::ResumeClaim

use std::path::PathBuf;
use std::sync::Arc;

use axum::http::StatusCode;
use orchestrator_core::{MissionControl, MissionState, ResumeOptions};
use orchestrator_store::MissionRecord;

use crate::error::ApiError;
use crate::registry::{blocking, Found, Registry};
use crate::start::{check_startable, mission_line, resolved, Mission, Run};

/// Continues the interrupted mission `found` in this process; answers with its id once the engine
/// has taken it up, or with why not.
pub async fn resume(registry: Arc<Registry>, found: &Found) -> Result<String, ApiError> {
    let id = found.record.id.clone();
    if registry.is_closing() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down; no mission is resumed",
        ));
    }
    let over = match found.state() {
        MissionState::Interrupted => None,
        MissionState::Running => return Err(running_elsewhere(found)),
        MissionState::Abandoned => Some("it was abandoned, its worktrees and branches removed"),
        MissionState::Finished => Some("it is finished; start a new mission with POST /api/missions"),
    };
    if let Some(why) = over {
        return Err(ApiError::conflict(format!(
            "mission {id} is not running (status: {}) and cannot be resumed: {why}",
            found.record.status
        )));
    }
    let root = resolved(&found.root).await?;
    // Resuming spends as a start does: only where missions may start.
    check_startable(registry.startable(), &root, true)?;
    let claim = registry.claim_resume(&id).ok_or_else(|| {
        ApiError::conflict(format!(
            "mission {id} is already being resumed by this server; follow it at /api/missions/{id}/events"
        ))
    })?;
    let control = MissionControl::new();
    let options = ResumeOptions {
        repo: root.clone(),
        mission: Some(id.clone()),
        // The settings it was started with, as the store keeps them.
        settings: Default::default(),
        control: control.clone(),
    };
    let mission = Mission::new(registry.clone(), root, control);
    mission
        .spawn(Run::Resume(options), Some(claim))
        .await
        .map_err(|refusal| over_already(&id, refusal))
}

/// Another process runs it (or, in a moment, this server does): it is not interrupted.
fn running_elsewhere(found: &Found) -> ApiError {
    let id = &found.record.id;
    match &found.live {
        Some(_) => ApiError::conflict(format!(
            "mission {id} is already running in this server; nothing to resume"
        )),
        None => ApiError::conflict(format!(
            "mission {id} is run by another process (pid {}), not interrupted; nothing to resume",
            found.record.pid.unwrap_or_default()
        )),
    }
}

/// The engine's "nothing to resume" (another run finished it meanwhile) is a conflict with the
/// mission's state, not a fault of the request.
fn over_already(id: &str, refusal: ApiError) -> ApiError {
    let over = ["nothing to resume", "already finished", "was abandoned"];
    if refusal.status == StatusCode::UNPROCESSABLE_ENTITY && over.iter().any(|w| refusal.message.contains(w))
    {
        return ApiError::conflict(format!("mission {id} cannot be resumed: {}", refusal.message));
    }
    refusal
}

/// An interrupted mission of a repository the server knows.
#[derive(Debug, Clone)]
pub struct Interrupted {
    pub repo: PathBuf,
    pub record: MissionRecord,
}

impl Interrupted {
    /// Its id and objective, for a log line.
    pub fn line(&self) -> String {
        mission_line(&self.record)
    }
}

/// What `--resume-interrupted` did with one interrupted mission.
#[derive(Debug)]
pub enum Resumed {
    /// It runs again in this server.
    Running(Interrupted),
    /// The engine refused it (endpoint down, repository busy, ...).
    Refused(Interrupted, ApiError),
    /// Another interrupted mission of its repository was resumed; one mission at a time runs there.
    Waiting(Interrupted),
}

/// Every interrupted mission of the repositories the server knows, newest first per repository.
pub async fn interrupted(registry: &Registry) -> Vec<Interrupted> {
    let roots = registry.repos();
    let listed = blocking(move || {
        roots
            .into_iter()
            .map(|root| {
                let found = orchestrator_core::interrupted(&root);
                (root, found)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut all = Vec::new();
    for (repo, found) in listed {
        match found {
            Ok(records) => all.extend(records.into_iter().map(|record| Interrupted {
                repo: repo.clone(),
                record,
            })),
            Err(e) => tracing::warn!("cannot list the missions of {}: {e}", repo.display()),
        }
    }
    all
}

/// Resumes the newest interrupted mission of each repository the server knows (one mission at a
/// time runs in a repository; the others wait for a request).
pub async fn resume_all(registry: Arc<Registry>) -> Vec<Resumed> {
    let mut done = Vec::new();
    let mut repos_taken: Vec<PathBuf> = Vec::new();
    for mission in interrupted(&registry).await {
        if repos_taken.contains(&mission.repo) {
            done.push(Resumed::Waiting(mission));
            continue;
        }
        repos_taken.push(mission.repo.clone());
        let found = match registry.find(&mission.record.id).await {
            Ok(found) => found,
            Err(e) => {
                done.push(Resumed::Refused(mission, e));
                continue;
            }
        };
        match resume(registry.clone(), &found).await {
            Ok(_) => done.push(Resumed::Running(mission)),
            Err(e) => done.push(Resumed::Refused(mission, e)),
        }
    }
    done
}
