//! `orchestrator worker` (issue #20): a process on any host that claims units of any mission from
//! a PostgreSQL store, builds each in a worktree of its own copy of the mission's shared remote
//! (worker session, verification, unit review), pushes the reviewed commit, and reports back
//! through the store. The commander merges; a worker never writes the integration branch.
//!
//! Each unit is held by a lease the worker renews every third of its length. A renewal refused
//! (another worker took the unit over after the lease expired) or failing for two thirds of the
//! lease stops the unit's sessions at once: its work is someone else's now, and nothing more of it
//! is written or pushed.

mod baselines;
mod unit;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orchestrator_store::{Holder, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{EngineError, Result};

/// How often an idle worker looks for work.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// The look for work when the store announces its changes (PostgreSQL's LISTEN): only what no
/// announcement covers (a lease that expired) waits this long.
const IDLE_POLL_LISTENING: Duration = Duration::from_secs(5);

/// The most units one worker process runs at once.
pub const MAX_SLOTS: usize = 500;

/// What `orchestrator worker` was asked to do.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The PostgreSQL store the commanders offer units in.
    pub store_url: String,
    /// How many units at once, at most.
    pub slots: usize,
    /// Where the worker keeps its copies of the remotes and the units' worktrees.
    pub workdir: PathBuf,
    /// How long a unit's lease lasts unless renewed.
    pub lease: Duration,
    /// Stop once no unit is running and none is left to claim (for scripts and tests).
    pub until_idle: bool,
}

/// What a worker did, for its last words.
#[derive(Debug, Clone, Default)]
pub struct WorkerReport {
    pub units: usize,
    pub passed: usize,
    pub failed: usize,
    /// Units whose lease was taken over, or given back on a stop.
    pub let_go: usize,
}

/// How one unit's run ended for the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UnitEnd {
    Passed,
    Failed,
    /// Its lease was lost, or the worker is stopping.
    LetGo,
    /// Given back because this host could not run it (no key, the endpoint or the remote failing).
    GaveBack,
}

/// The first pause after a unit was given back for this host's trouble; it doubles with each one
/// in a row, up to [`MAX_BACKOFF`], and a unit that ends otherwise resets it.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// This worker's name in the queue. The store counts a worker's leases by it, so it must not be
/// another worker's: containers on many hosts often share a pid (1) and even a host name, hence
/// the random part.
fn worker_id() -> String {
    format!(
        "worker pid {} ({:08x})",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// Runs the worker until `cancel` (or, with `until_idle`, until there is no work).
pub async fn run_worker(options: WorkerOptions, cancel: CancellationToken) -> Result<WorkerReport> {
    check(&options)?;
    tokio::fs::create_dir_all(&options.workdir)
        .await
        .map_err(|e| EngineError::io(format!("cannot make {}", options.workdir.display()), e))?;
    let workdir = std::fs::canonicalize(&options.workdir)
        .map_err(|e| EngineError::io(format!("cannot open {}", options.workdir.display()), e))?;
    // Scope "": this handle only lists the repositories with work; each gets a handle of its own.
    let index = open(&options.store_url, "")?;
    let holder = Holder {
        id: worker_id(),
        host: crate::leader::this_host(),
    };
    // Woken the moment a unit is offered or given back, on any host.
    let wake = Arc::new(tokio::sync::Notify::new());
    let listener = {
        let wake = wake.clone();
        index.listen(move |_, _| wake.notify_one())
    };
    let idle_poll = match &listener {
        Ok(Some(_)) => IDLE_POLL_LISTENING,
        Ok(None) => IDLE_POLL,
        Err(e) => {
            tracing::warn!("cannot listen for new work (polling instead): {e}");
            IDLE_POLL
        }
    };
    let mut handles: BTreeMap<String, Arc<Store>> = BTreeMap::new();
    let mut running: JoinSet<(String, UnitEnd)> = JoinSet::new();
    let mut per_repo: BTreeMap<String, usize> = BTreeMap::new();
    let mut report = WorkerReport::default();
    let units_cancel = CancellationToken::new();
    // After units were given back for this host's trouble, no claim until then.
    let mut backoff = Backoff::default();
    let mirrors = Arc::new(unit::Mirrors::default());
    let baselines = Arc::new(baselines::Baselines::default());
    let clients = Arc::new(unit::SharedClients::default());
    // One of each per worker process, shared by its units: a unit's model client follows every
    // host's throttles through it, and its mission's spend is followed once however many units
    // of it run here.
    let throttle = crate::across_hosts::StoreThrottle::start(index.clone());
    let spends = Arc::new(crate::across_hosts::Spends::default());
    let who = format!("{} on {}", holder.id, holder.host);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let free = if backoff.waiting() {
            0
        } else {
            options.slots.saturating_sub(running.len())
        };
        let mut claimed_any = false;
        if free > 0 {
            let repos = blocking({
                let index = index.clone();
                move || index.repos_with_work()
            })
            .await;
            let repos = match repos {
                Ok(repos) => repos,
                Err(e) => {
                    tracing::warn!("cannot read the work queue: {e}");
                    Vec::new()
                }
            };
            let mut free = free;
            for repo in repos {
                if free == 0 {
                    break;
                }
                let store = match handles.get(&repo) {
                    Some(store) => store.clone(),
                    None => {
                        let store = open(&options.store_url, &repo)?;
                        handles.insert(repo.clone(), store.clone());
                        store
                    }
                };
                // The store counts the leases this worker holds in the repository already.
                let held = per_repo.get(&repo).copied().unwrap_or(0);
                let claim = {
                    let (store, holder, lease) = (store.clone(), holder.clone(), options.lease);
                    blocking(move || store.claim_units(&holder, held + free, lease)).await
                };
                let claimed = match claim {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::warn!("cannot claim units: {e}");
                        continue;
                    }
                };
                // The store counts live leases; one of ours that expired is not counted, so a
                // claim can bring more than the free slots: those go straight back.
                let mut claimed = claimed;
                let extra = claimed.split_off(claimed.len().min(free));
                for unit in extra {
                    let (store, fence) = (store.clone(), unit.fence.clone());
                    if let Err(e) = blocking(move || store.release_unit(&fence)).await {
                        tracing::warn!(
                            "{}: could not be given back ({e}); its lease expires",
                            unit.fence.key
                        );
                    }
                }
                for unit in claimed {
                    claimed_any = true;
                    free -= 1;
                    report.units += 1;
                    *per_repo.entry(repo.clone()).or_default() += 1;
                    let job = unit::ClaimedJob {
                        store: store.clone(),
                        claimed: unit,
                        workdir: workdir.clone(),
                        lease: options.lease,
                        stop: units_cancel.child_token(),
                        mirrors: mirrors.clone(),
                        baselines: baselines.clone(),
                        clients: clients.clone(),
                        throttle: throttle.clone(),
                        spends: spends.clone(),
                        who: who.clone(),
                    };
                    let repo = repo.clone();
                    running.spawn(async move { (repo, job.run().await) });
                }
            }
        }
        if options.until_idle && running.is_empty() && !claimed_any && !backoff.waiting() {
            break;
        }
        let wait = if claimed_any { Duration::ZERO } else { idle_poll };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            Some(done) = running.join_next(), if !running.is_empty() => {
                backoff.after(count(done, &mut report, &mut per_repo));
            }
        }
    }
    // A stop: the units running are given back (ready for another worker) once their sessions end.
    units_cancel.cancel();
    while let Some(done) = running.join_next().await {
        let _ = count(done, &mut report, &mut per_repo);
    }
    baselines.remove_all().await;
    Ok(report)
}

/// How long the worker holds off claiming after units were given back for its host's trouble.
#[derive(Default)]
struct Backoff {
    until: Option<std::time::Instant>,
    next: Option<Duration>,
}

impl Backoff {
    fn waiting(&self) -> bool {
        self.until.is_some_and(|t| std::time::Instant::now() < t)
    }

    fn after(&mut self, end: Option<UnitEnd>) {
        match end {
            Some(UnitEnd::GaveBack) => {
                let pause = self.next.unwrap_or(FIRST_BACKOFF);
                tracing::warn!("claiming no unit for {} s", pause.as_secs());
                self.until = Some(std::time::Instant::now() + pause);
                self.next = Some((pause * 2).min(MAX_BACKOFF));
            }
            Some(UnitEnd::Passed | UnitEnd::Failed) => *self = Backoff::default(),
            _ => {}
        }
    }
}

fn count(
    done: std::result::Result<(String, UnitEnd), tokio::task::JoinError>,
    report: &mut WorkerReport,
    per_repo: &mut BTreeMap<String, usize>,
) -> Option<UnitEnd> {
    let Ok((repo, end)) = done else {
        report.let_go += 1;
        return None;
    };
    if let Some(n) = per_repo.get_mut(&repo) {
        *n = n.saturating_sub(1);
    }
    match end {
        UnitEnd::Passed => report.passed += 1,
        UnitEnd::Failed => report.failed += 1,
        UnitEnd::LetGo | UnitEnd::GaveBack => report.let_go += 1,
    }
    Some(end)
}

fn check(options: &WorkerOptions) -> Result<()> {
    if !(1..=MAX_SLOTS).contains(&options.slots) {
        return Err(EngineError::Usage(format!(
            "--slots {} is out of range: give 1 to {MAX_SLOTS}",
            options.slots
        )));
    }
    if !options.store_url.starts_with("postgres://") && !options.store_url.starts_with("postgresql://") {
        return Err(EngineError::Usage(
            "`orchestrator worker` needs the missions' PostgreSQL store: --store postgres://… (or \
             ORCHESTRATOR_STORE_URL); a SQLite store is one machine's, whose commander runs its own units"
                .into(),
        ));
    }
    Ok(())
}

fn open(url: &str, repo: &str) -> Result<Arc<Store>> {
    Store::open_postgres(url, repo)
        .map(Arc::new)
        .map_err(|e| EngineError::Usage(e.to_string()))
}

/// Runs a blocking store call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> orchestrator_store::Result<T> + Send + 'static,
) -> orchestrator_store::Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) => Err(orchestrator_store::StoreError::Refused {
            what: "a store call".into(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod id_tests {
    #[test]
    fn two_workers_with_one_pid_get_different_names() {
        let (a, b) = (super::worker_id(), super::worker_id());
        assert!(
            a.starts_with(&format!("worker pid {} (", std::process::id())),
            "{a}"
        );
        assert_ne!(a, b, "the store counts leases by this name");
    }
}
