//! The mission baselines a worker runs on its own host (issue #20): once per mission, on the commit
//! the mission started from, like the commander's own — so that a test that failed before any unit
//! is excused on a worker as it is locally, `npm ci` runs once with the network instead of offline
//! in every unit, and units start from warm build outputs. Started by the first unit of a mission the
//! worker claims, shared by the next ones. A baseline no unit here uses goes after [`IDLE`], or
//! sooner when more than [`MAX_KEPT`] missions have one (the least recently used first): a worker
//! that serves missions for days must not fill its disk with their build outputs. The rest go when
//! the worker stops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_git::Repo;
use tokio_util::sync::CancellationToken;

use crate::baseline::{self, Ready};
use crate::config::Config;
use crate::events::EventBus;
use crate::ticket::Ticket;

/// How long a baseline no unit uses is kept for the mission's next unit here.
const IDLE: Duration = Duration::from_secs(15 * 60);
/// The most missions' baselines a worker keeps; past it, unused ones go, least recently used first.
const MAX_KEPT: usize = 8;

pub(super) struct Baselines {
    started: tokio::sync::Mutex<BTreeMap<String, Started>>,
    /// Stops every baseline still running when the worker stops.
    cancel: CancellationToken,
    idle: Duration,
    max_kept: usize,
}

impl Default for Baselines {
    fn default() -> Self {
        Baselines {
            started: Default::default(),
            cancel: CancellationToken::new(),
            idle: IDLE,
            max_kept: MAX_KEPT,
        }
    }
}

struct Started {
    repo: Repo,
    dir: PathBuf,
    ready: Ready,
    cancel: CancellationToken,
    /// One handle per unit using it (and the map's own): a baseline in use is never removed.
    users: Arc<()>,
    last_used: Instant,
}

/// A unit's hold on its mission's baseline: while it lives, the baseline stays.
pub(super) struct BaselineUse {
    pub ready: Ready,
    _user: Arc<()>,
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
    ) -> Option<BaselineUse> {
        if ticket.mission_base.is_empty() {
            return None;
        }
        let mut started = self.started.lock().await;
        if let Some(known) = started.get_mut(mission) {
            known.last_used = Instant::now();
            return Some(BaselineUse {
                ready: known.ready.clone(),
                _user: known.users.clone(),
            });
        }
        self.evict(&mut started).await;
        let dir = trees.join("baseline");
        let cancel = self.cancel.child_token();
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
            cancel: cancel.clone(),
        };
        let ready = baseline::start(plan, None);
        let users = Arc::new(());
        started.insert(
            mission.to_string(),
            Started {
                repo: repo.clone(),
                dir,
                ready: ready.clone(),
                cancel,
                users: users.clone(),
                last_used: Instant::now(),
            },
        );
        Some(BaselineUse { ready, _user: users })
    }

    /// Removes the baselines no unit uses that idled past `idle`, and the least recently used
    /// unused ones while there are `max_kept` or more (a new one is about to start).
    async fn evict(&self, started: &mut BTreeMap<String, Started>) {
        let unused = |known: &Started| Arc::strong_count(&known.users) == 1;
        let mut gone: Vec<String> = started
            .iter()
            .filter(|(_, known)| unused(known) && known.last_used.elapsed() >= self.idle)
            .map(|(mission, _)| mission.clone())
            .collect();
        let mut by_age: Vec<(&String, Instant)> = started
            .iter()
            .filter(|(mission, known)| unused(known) && !gone.contains(mission))
            .map(|(mission, known)| (mission, known.last_used))
            .collect();
        by_age.sort_by_key(|(_, used)| *used);
        let over = (started.len() - gone.len() + 1).saturating_sub(self.max_kept);
        gone.extend(by_age.into_iter().take(over).map(|(mission, _)| mission.clone()));
        for mission in gone {
            if let Some(known) = started.remove(&mission) {
                remove(known).await;
            }
        }
    }

    /// Stops the baselines still running and removes their worktrees.
    pub(super) async fn remove_all(&self) {
        self.cancel.cancel();
        let started = std::mem::take(&mut *self.started.lock().await);
        for (_, known) in started {
            remove(known).await;
        }
    }
}

/// Stops a baseline (if it still runs) and removes its worktree.
async fn remove(known: Started) {
    known.cancel.cancel();
    let _ = known.ready.await;
    if let Err(e) = known.repo.remove_worktree(&known.dir).await {
        tracing::warn!("cannot remove the baseline worktree {}: {e}", known.dir.display());
    }
    let _ = tokio::fs::remove_dir_all(&known.dir).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::{VerifyCommands, TICKET_VERSION};
    use orchestrator_protocol::{MissionSettings, UnitSpec};

    fn ticket(base: &str) -> Ticket {
        Ticket {
            version: TICKET_VERSION,
            objective: "o".into(),
            unit: UnitSpec {
                id: "a".into(),
                title: "a".into(),
                description: "a".into(),
                depends_on: vec![],
                files: vec![],
                attempts: None,
            },
            round: 1,
            base: base.into(),
            mission_base: base.into(),
            remote: String::new(),
            context: String::new(),
            verify: VerifyCommands {
                test: Some("true".into()),
                ..VerifyCommands::default()
            },
            settings: MissionSettings::default(),
            budget_left: None,
            budget_total: None,
            units_known: 1,
        }
    }

    #[tokio::test]
    async fn unused_baselines_go_least_recently_used_first_and_used_ones_stay() {
        let (dir, repo) = crate::test_repo::committed_repo().await;
        let base = repo.head_commit().await.expect("head").expect("a commit");
        let settings = MissionSettings {
            sandbox: Some(false),
            ..MissionSettings::default()
        };
        let config = crate::config::resolve(&[], &settings, Some("m".into())).expect("config");
        let baselines = Baselines {
            max_kept: 2,
            ..Baselines::default()
        };
        let trees = |m: &str| dir.path().join("w").join(m);
        let kept = |m: &str| trees(m).join("baseline").exists();
        let start = |m: &'static str| {
            let (baselines, ticket, repo, config, trees) =
                (&baselines, ticket(&base), &repo, &config, trees(m));
            async move {
                let held = baselines
                    .of(m, &ticket, repo, config, &trees)
                    .await
                    .expect("a baseline");
                let _ = held.ready.clone().await;
                held
            }
        };
        let m1 = start("m1").await;
        let m2 = start("m2").await;
        assert!(kept("m1") && kept("m2"));
        // Both in use: a third starts beside them, over the bound, rather than pull one from a unit.
        let m3 = start("m3").await;
        assert!(kept("m1") && kept("m2") && kept("m3"));
        // Unused now: the least recently used go as new ones come, down to the bound.
        drop((m1, m2));
        let again = start("m3").await;
        assert!(kept("m1") && kept("m2"), "nothing new started: nothing goes");
        let m4 = start("m4").await;
        assert!(
            !kept("m1") && !kept("m2"),
            "m1 and m2 went, least recently used first"
        );
        assert!(kept("m3") && kept("m4"));
        drop((m3, again, m4));
        // Idle past the limit: gone at the next start, whatever the bound.
        let idle = Baselines {
            idle: Duration::ZERO,
            ..Baselines::default()
        };
        let trees_idle = dir.path().join("idle");
        let first = idle
            .of("i1", &ticket(&base), &repo, &config, &trees_idle.join("i1"))
            .await
            .expect("i1");
        let _ = first.ready.clone().await;
        drop(first);
        let _second = idle
            .of("i2", &ticket(&base), &repo, &config, &trees_idle.join("i2"))
            .await;
        assert!(!trees_idle.join("i1/baseline").exists());
        baselines.remove_all().await;
        idle.remove_all().await;
        assert!(!kept("m3") && !kept("m4"));
    }
}
