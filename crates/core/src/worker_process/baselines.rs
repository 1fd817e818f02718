//! The mission baselines a worker runs on its own host (issue #20): once per mission, on the commit
//! the mission started from, like the commander's own — so that a test that failed before any unit
//! is excused on a worker as it is locally, `npm ci` runs once with the network instead of offline
//! in every unit, and units start from warm build outputs. Started by the first unit of a mission the
//! worker claims, shared by the next ones, removed when the worker stops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use orchestrator_git::Repo;
use tokio_util::sync::CancellationToken;

use crate::baseline::{self, Ready};
use crate::config::Config;
use crate::events::EventBus;
use crate::ticket::Ticket;

#[derive(Default)]
pub(super) struct Baselines {
    started: tokio::sync::Mutex<BTreeMap<String, Started>>,
    /// Stops every baseline still running when the worker stops.
    cancel: CancellationToken,
}

struct Started {
    repo: Repo,
    dir: PathBuf,
    ready: Ready,
}

impl Baselines {
    /// The baseline of the ticket's mission, started now if this is the mission's first unit here.
    /// `None` for a ticket without the mission's base (from an older commander).
    pub(super) async fn of(
        &self,
        mission: &str,
        ticket: &Ticket,
        repo: &Repo,
        config: &Config,
        trees: &Path,
    ) -> Option<Ready> {
        if ticket.mission_base.is_empty() {
            return None;
        }
        let mut started = self.started.lock().await;
        if let Some(known) = started.get(mission) {
            return Some(known.ready.clone());
        }
        let dir = trees.join("baseline");
        let plan = baseline::Plan {
            repo: repo.clone(),
            dir: dir.clone(),
            base: ticket.mission_base.clone(),
            install: ticket.verify.install.clone(),
            build: ticket.verify.build.clone(),
            lint: ticket.verify.lint.clone(),
            test: ticket.verify.test.clone(),
            timeout: config.verify_timeout,
            sandbox: config.sandbox.clone(),
            cache: config.verify_cache,
            // Its events are this host's: the mission's log has the commander's baseline.
            bus: EventBus::new(),
            cancel: self.cancel.child_token(),
        };
        let ready = baseline::start(plan, None);
        started.insert(
            mission.to_string(),
            Started {
                repo: repo.clone(),
                dir,
                ready: ready.clone(),
            },
        );
        Some(ready)
    }

    /// Stops the baselines still running and removes their worktrees.
    pub(super) async fn remove_all(&self) {
        self.cancel.cancel();
        let started = std::mem::take(&mut *self.started.lock().await);
        for (_, known) in started {
            let _ = known.ready.await;
            if let Err(e) = known.repo.remove_worktree(&known.dir).await {
                tracing::warn!("cannot remove the baseline worktree {}: {e}", known.dir.display());
            }
        }
    }
}
