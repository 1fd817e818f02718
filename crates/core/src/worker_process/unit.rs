//! One claimed unit on a worker: its lease kept alive, its ticket read, the unit built in a
//! worktree of the worker's copy of the mission's remote, the reviewed commit pushed, the result
//! reported. The lease decides throughout: once it is lost nothing more is written or pushed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchestrator_git::{Push, Repo, Worktree};
use orchestrator_protocol::{Event, EventEnvelope};
use orchestrator_store::{ClaimedUnit, Fence, Outcome, Store, StoreError};
use tokio_util::sync::CancellationToken;

use super::{blocking, UnitEnd};
use crate::events::EventBus;
use crate::session::Runtime;
use crate::shared::{Mission, TodoBook};
use crate::ticket::{
    fence_tag, integration_ref, relay_session, session_prefix, worker_ref, Ticket, TicketResult,
    TICKET_VERSION,
};
use crate::verify::Verifier;

pub(super) struct ClaimedJob {
    pub(super) store: Arc<Store>,
    /// The worker's copies of the remotes, shared by its units.
    pub(super) mirrors: Arc<Mirrors>,
    /// The missions' baselines on this host, shared by their units.
    pub(super) baselines: Arc<super::baselines::Baselines>,
    /// The model clients of this host, one per endpoint configuration, shared by its units.
    pub(super) clients: Arc<SharedClients>,
    pub(super) claimed: ClaimedUnit,
    pub(super) workdir: PathBuf,
    pub(super) lease: Duration,
    /// The worker is stopping: give the unit back.
    pub(super) stop: CancellationToken,
    /// Every host's throttles of the model endpoints, shared by the worker's units.
    pub(super) throttle: Arc<crate::across_hosts::StoreThrottle>,
    /// Every host's spend, per mission, shared by the worker's units.
    pub(super) spends: Arc<crate::across_hosts::Spends>,
    /// Who this worker is, for what the log says of it.
    pub(super) who: String,
}

impl ClaimedJob {
    pub(super) async fn run(self) -> UnitEnd {
        let fence = self.claimed.fence.clone();
        let unit_cancel = self.stop.child_token();
        let lost = Arc::new(AtomicBool::new(false));
        let recalled = Arc::new(AtomicBool::new(false));
        let keeper = tokio::spawn(keep_lease(
            self.store.clone(),
            fence.clone(),
            self.lease,
            unit_cancel.clone(),
            Watch {
                lost: lost.clone(),
                recalled: recalled.clone(),
            },
        ));
        let result = match serde_json::from_value::<Ticket>(self.claimed.payload.clone()) {
            Ok(ticket) if ticket.version <= TICKET_VERSION => {
                self.build(&ticket, &fence, unit_cancel.clone(), &lost).await
            }
            Ok(ticket) => failed(format!(
                "the unit's ticket is version {}, newer than this worker reads ({TICKET_VERSION}): upgrade the worker",
                ticket.version
            )),
            Err(e) => failed(format!("the unit's ticket could not be read: {e}")),
        };
        keeper.abort();
        if lost.load(Ordering::SeqCst) {
            tracing::warn!(
                "{}: the lease was lost; its work is another worker's now",
                fence.key
            );
            return UnitEnd::LetGo;
        }
        let spent = result.reason.as_deref() == Some(crate::units::BUDGET_SPENT);
        if recalled.load(Ordering::SeqCst) {
            // Its commander stopped (Ctrl-C, `cancel`, a spent budget): the unit waits in the queue
            // for the resume, and this host is not to blame for it.
            let (store, key) = (self.store.clone(), fence.clone());
            if let Err(e) = blocking(move || store.release_unit(&key)).await {
                tracing::warn!("{}: could not be given back ({e}); its lease expires", fence.key);
            }
            tracing::info!("{}: given back: its commander stopped", fence.key);
            return UnitEnd::LetGo;
        }
        if self.stop.is_cancelled() {
            // This worker is stopping: the unit goes to another, uncounted.
            let (store, key) = (self.store.clone(), fence.clone());
            if let Err(e) = blocking(move || store.release_unit(&key)).await {
                tracing::warn!("{}: could not be given back ({e}); its lease expires", fence.key);
            }
            return UnitEnd::LetGo;
        }
        if result.interrupted && !spent {
            return self.give_back(&fence, result).await;
        }
        // A spent budget is the mission's, not this host's: reported, so that no worker spends more
        // on it until the commander offers it again with a budget.
        let passed = result.passed;
        let outcome = if passed { Outcome::Done } else { Outcome::Failed };
        let value = serde_json::to_value(&result).unwrap_or_default();
        let store = self.store.clone();
        let key = fence.clone();
        match blocking(move || store.finish_unit(&key, outcome, &value)).await {
            Ok(()) if passed => UnitEnd::Passed,
            Ok(()) => UnitEnd::Failed,
            Err(e) => {
                tracing::warn!("{}: its result was not taken ({e})", fence.key);
                UnitEnd::LetGo
            }
        }
    }

    /// This host could not do the unit (no model key, the endpoint or the remote failing from
    /// here): another worker may, and this one waits before it claims again. Counted by the store:
    /// past `MAX_GIVE_BACKS` the unit ends, interrupted, with why, and its commander stops the
    /// mission (resumable) saying so, instead of the unit going round the workers for ever.
    async fn give_back(&self, fence: &Fence, result: TicketResult) -> UnitEnd {
        let why = result.reason.clone().unwrap_or_else(|| "stopped".into());
        let ended = TicketResult {
            reason: Some(format!(
                "{} holders gave the unit back for trouble on their hosts; the last ({}): {why}",
                orchestrator_store::MAX_GIVE_BACKS + 1,
                self.who
            )),
            ..result
        };
        let value = serde_json::to_value(&ended).unwrap_or_default();
        let (store, key) = (self.store.clone(), fence.clone());
        match blocking(move || store.give_back(&key, &value)).await {
            Ok(orchestrator_store::GiveBack::Released) => {
                tracing::warn!("{}: given back: {why}", fence.key);
                UnitEnd::GaveBack
            }
            Ok(orchestrator_store::GiveBack::Ended) => {
                tracing::warn!("{}: given back too often, it ends: {why}", fence.key);
                UnitEnd::GaveBack
            }
            Err(e) => {
                tracing::warn!("{}: could not be given back ({e}); its lease expires", fence.key);
                UnitEnd::GaveBack
            }
        }
    }

    /// Builds the unit and pushes what passed; every ending is a result, and the unit's events
    /// (with why it was given back, if it was) are relayed before it is reported.
    async fn build(
        &self,
        ticket: &Ticket,
        fence: &Fence,
        cancel: CancellationToken,
        lost: &AtomicBool,
    ) -> TicketResult {
        let bus = EventBus::new();
        let relay = Relay::start(&bus, self.store.clone(), fence.clone());
        let result = self.build_with(ticket, fence, &bus, cancel, lost).await;
        if result.interrupted {
            bus.emit(Event::Notice {
                message: format!(
                    "{}: given back by {}: {}",
                    fence.key.unit,
                    self.who,
                    result.reason.as_deref().unwrap_or("stopped")
                ),
            });
        }
        bus.close();
        relay.finish().await;
        result
    }

    async fn build_with(
        &self,
        ticket: &Ticket,
        fence: &Fence,
        bus: &EventBus,
        cancel: CancellationToken,
        lost: &AtomicBool,
    ) -> TicketResult {
        let mission_id = &fence.key.mission;
        let tag = fence_tag(fence);
        let repo = match self
            .mirrors
            .fetched(&self.workdir, &ticket.remote, &integration_ref(mission_id))
            .await
        {
            Ok(repo) => repo,
            Err(e) => return interrupted(e),
        };
        let trees = self.workdir.join("worktrees").join(mission_id);
        // Everything of this holder (the unit's worktree, its sub-units' and candidates') is under
        // its own folder and branch root, and goes with it.
        let holder = Holder {
            folder: trees.join(&tag),
            branch_root: format!("orchestrator/{mission_id}/h/{tag}"),
        };
        let path = holder.folder.join("units").join(&ticket.unit.id);
        let branch = format!("{}/u/{}", holder.branch_root, ticket.unit.id);
        let worktree = match repo.add_worktree_on_branch(&path, &branch, &ticket.base).await {
            Ok(worktree) => worktree,
            Err(e) => return interrupted(format!("cannot check out the unit's base {}: {e}", ticket.base)),
        };
        let result = self
            .build_in(ticket, fence, &repo, worktree, &trees, &holder, bus, cancel, lost)
            .await;
        holder.remove(&repo).await;
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn build_in(
        &self,
        ticket: &Ticket,
        fence: &Fence,
        repo: &Repo,
        worktree: Worktree,
        trees: &Path,
        holder: &Holder,
        bus: &EventBus,
        cancel: CancellationToken,
        lost: &AtomicBool,
    ) -> TicketResult {
        let config = match crate::effective::load_config(worktree.path(), &worker_settings(ticket)) {
            Ok(config) => config,
            Err(e) => {
                return failed(format!(
                    "the repository's configuration at the unit's base does not load: {e}"
                ))
            }
        };
        let clients = match self.clients.of(&config, &self.throttle) {
            Ok(clients) => clients,
            Err(e) => return interrupted(format!("this worker cannot reach a model: {e}")),
        };
        let mut secrets = clients.secrets.clone();
        secrets.extend(crate::mcp_servers::secrets(&config));
        self.store.set_secrets(secrets);
        // One session at a time: the unit holds one of this worker's `--slots` and one of the
        // mission's `--max-parallel`; its candidates and the sub-units it spawns take turns in it.
        let mut rt = Runtime::new(
            clients.mission.clone(),
            bus.clone(),
            cancel,
            1,
            ticket.budget_total.or(ticket.budget_left),
        )
        .with_store(self.store.clone(), &fence.key.mission)
        .with_context_rules(config.prices.clone(), config.compaction.clone())
        .for_leased_unit(session_prefix(&fence_tag(fence)), fence.clone());
        if ticket.budget_total.is_some() {
            let spend = self.spends.of(&self.store, &fence.key.mission);
            spend.first_read().await;
            rt = rt.with_shared_spend(spend);
        }
        rt.prompts = crate::mission::project_prompts(&rt, &config, worktree.path());
        // Held until the unit ends, so the baseline it starts from is not removed under it.
        let baseline = self
            .baselines
            .of(&fence.key.mission, ticket, repo, &config, trees)
            .await;
        let verifier = Verifier {
            install: ticket.verify.install.clone(),
            install_online: false,
            build: ticket.verify.build.clone(),
            lint: ticket.verify.lint.clone(),
            test: ticket.verify.test.clone(),
            timeout: config.verify_timeout,
            permits: tokio::sync::Semaphore::new(config.max_parallel_verify),
            sandbox: config.sandbox.clone(),
            baseline: baseline.as_ref().map(|held| held.ready.clone()),
            protect_tests: ticket.verify.protect_tests,
        };
        let mission = Arc::new(Mission {
            id: fence.key.mission.clone(),
            objective: ticket.objective.clone(),
            repo: repo.clone(),
            rt,
            config,
            verifier,
            context: ticket.context.clone(),
            worktrees: holder.folder.clone(),
            replay: Default::default(),
            run_index: 1,
            todo: Mutex::new(TodoBook::new(holder.folder.join("todo.md"))),
            done_branches: Arc::default(),
            registered: Default::default(),
            base_commit: ticket.mission_base.clone(),
            settings: ticket.settings.clone(),
            offers: None,
            branch_root: holder.branch_root.clone(),
            units_elsewhere: ticket.units_known,
        });
        let built = crate::units::build_for_commander(
            mission.clone(),
            ticket.unit.clone(),
            ticket.round,
            &ticket.base,
            worktree,
        )
        .await;
        drop(mission);
        match built {
            Ok((summary, commit)) if !lost.load(Ordering::SeqCst) => {
                let name = worker_ref(&fence.key.mission, &fence_tag(fence));
                push_result(repo, &ticket.remote, &name, summary, commit).await
            }
            Ok(_) => interrupted("the lease was lost".into()),
            Err(outcome) => TicketResult {
                passed: false,
                summary: outcome.summary,
                reason: outcome.reason,
                findings: outcome.findings,
                commit: None,
                pushed_ref: None,
                interrupted: outcome.interrupted,
            },
        }
    }
}

/// Where one holder of a unit keeps its worktrees and branches on this host.
struct Holder {
    folder: PathBuf,
    branch_root: String,
}

impl Holder {
    /// Removes the holder's worktrees and branches: its unit's, and any its sub-units or candidates
    /// left (an interrupted one keeps its work for a resume on a commander, never on a worker: the
    /// unit's next holder starts afresh).
    async fn remove(&self, repo: &Repo) {
        match repo.list_worktrees().await {
            Ok(listed) => {
                for path in listed.iter().filter(|p| p.starts_with(&self.folder)) {
                    if let Err(e) = repo.remove_worktree(path).await {
                        tracing::warn!("cannot remove worktree {}: {e}", path.display());
                    }
                }
            }
            Err(e) => tracing::warn!("cannot list the worktrees of {}: {e}", self.folder.display()),
        }
        let _ = tokio::fs::remove_dir_all(&self.folder).await;
        match repo.branches_with_prefix(&format!("{}/", self.branch_root)).await {
            Ok(branches) if !branches.is_empty() => {
                if let Err(e) = repo.delete_branches(&branches).await {
                    tracing::warn!("cannot delete the branches under {}: {e}", self.branch_root);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot list the branches under {}: {e}", self.branch_root),
        }
    }
}

/// The worker's model clients, one per endpoint configuration (provider, address, timeouts and
/// limits), shared by every unit that uses it: its governor's `max_concurrency` and rate limits then
/// hold for this host as a whole, as they do for a commander's sessions (a local llama.cpp serving
/// one request at a time is not sent one per unit), and a 429 slows all of them at once.
#[derive(Default)]
pub(super) struct SharedClients(Mutex<std::collections::HashMap<String, Arc<crate::client::Clients>>>);

impl SharedClients {
    fn of(
        &self,
        config: &crate::config::Config,
        throttle: &Arc<crate::across_hosts::StoreThrottle>,
    ) -> crate::error::Result<Arc<crate::client::Clients>> {
        // The address and key come from this process's environment, the same for every unit.
        let key = format!("{:?}|{:?}", config.provider, config.endpoint);
        let mut clients = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(clients) = clients.get(&key) {
            return Ok(clients.clone());
        }
        let built = Arc::new(crate::client::clients_from_env(config)?);
        built.mission.share_throttle(throttle.clone());
        clients.insert(key, built.clone());
        Ok(built)
    }
}

/// A worker's local copies of the mission remotes, one per remote, shared by its units: fetches into
/// one copy go one at a time (two would race for its refs), and its worktrees are made through one
/// handle.
#[derive(Default)]
pub(super) struct Mirrors {
    copies: tokio::sync::Mutex<std::collections::BTreeMap<String, Repo>>,
}

impl Mirrors {
    /// The copy of `remote`, with `integration` fetched from it just now.
    async fn fetched(&self, workdir: &Path, remote: &str, integration: &str) -> Result<Repo, String> {
        let mut copies = self.copies.lock().await;
        let repo = match copies.get(remote) {
            Some(repo) => repo.clone(),
            None => {
                let dir = workdir.join("repos").join(repo_dir_name(remote));
                let repo = Repo::init_or_open(&dir, Vec::new())
                    .await
                    .map_err(|e| format!("cannot make the worker's copy of {remote}: {e}"))?;
                copies.insert(remote.to_string(), repo.clone());
                repo
            }
        };
        let spec = format!("+{integration}:{integration}");
        repo.fetch_refs(remote, &[spec])
            .await
            .map_err(|e| format!("cannot fetch the mission's commits from {remote}: {e}"))?;
        Ok(repo)
    }
}

/// The mission's settings as a worker uses them: it runs the unit itself (its candidates and the
/// sub-units it spawns included).
fn worker_settings(ticket: &Ticket) -> orchestrator_protocol::MissionSettings {
    orchestrator_protocol::MissionSettings {
        workers: None,
        remote: None,
        ..ticket.settings.clone()
    }
}

/// Pushes the reviewed commit to the holder's own ref (which must not exist yet: the token is in
/// its name), and says what to merge.
async fn push_result(repo: &Repo, remote: &str, name: &str, summary: String, commit: String) -> TicketResult {
    match repo.push_with_lease(remote, &commit, name, None).await {
        Ok(Push::Done) => TicketResult {
            passed: true,
            summary,
            reason: None,
            findings: None,
            commit: Some(commit),
            pushed_ref: Some(name.to_string()),
            interrupted: false,
        },
        Ok(Push::Rejected(why)) => interrupted(format!("{remote} refused {name}: {why}")),
        Err(e) => interrupted(format!("cannot push to {remote}: {e}")),
    }
}

fn failed(reason: String) -> TicketResult {
    TicketResult {
        passed: false,
        summary: String::new(),
        reason: Some(reason),
        findings: None,
        commit: None,
        pushed_ref: None,
        interrupted: false,
    }
}

fn interrupted(reason: String) -> TicketResult {
    TicketResult {
        interrupted: true,
        ..failed(reason)
    }
}

/// A folder name for a remote's local copy: readable, and distinct for distinct remotes.
fn repo_dir_name(remote: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    remote.hash(&mut hasher);
    let tail: String = remote
        .rsplit(['/', ':'])
        .find(|part| !part.is_empty())
        .unwrap_or("remote")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(40)
        .collect();
    format!("{tail}-{:016x}", hasher.finish())
}

/// Renews the lease every third of its length. Refused (another worker took the unit over), or
/// failing for two thirds of it (a third is left to stop in before another may take over): the
/// unit's sessions stop.
/// What the lease keeper found: the lease lost, or the unit recalled by its stopped commander.
struct Watch {
    lost: Arc<AtomicBool>,
    recalled: Arc<AtomicBool>,
}

async fn keep_lease(
    store: Arc<Store>,
    fence: Fence,
    lease: Duration,
    cancel: CancellationToken,
    watch: Watch,
) {
    let Watch { lost, recalled } = watch;
    let mut last_renewed = Instant::now();
    loop {
        tokio::time::sleep(lease / 3).await;
        let sent = Instant::now();
        let (store2, fence2) = (store.clone(), fence.clone());
        let renewed = blocking(move || store2.heartbeat(&fence2, lease).map(|beat| beat.max_parallel)).await;
        match renewed {
            // A commander whose run ends sets its mission's cap to 0: its units are not to be
            // worked on until a resume sets it again.
            Ok(Some(0)) => {
                recalled.store(true, Ordering::SeqCst);
                cancel.cancel();
                return;
            }
            Ok(_) => last_renewed = sent,
            Err(StoreError::LeaseLost { .. }) => break,
            Err(e) => {
                tracing::warn!("{}: cannot renew the lease: {e}", fence.key);
                if last_renewed.elapsed() < lease * 2 / 3 {
                    continue;
                }
                break;
            }
        }
    }
    lost.store(true, Ordering::SeqCst);
    cancel.cancel();
}

/// Writes the unit's events, in order, as its relay transcript (fenced by the lease), for the
/// commander to read into the mission's log.
struct Relay {
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    fn start(bus: &EventBus, store: Arc<Store>, fence: Fence) -> Relay {
        let mut events = bus.subscribe();
        let session = relay_session(&fence_tag(&fence));
        let task = tokio::spawn(async move {
            let mut idx = 0usize;
            while let Some(envelope) = events.recv().await {
                let value = event_value(&envelope);
                let (store, fence, session) = (store.clone(), fence.clone(), session.clone());
                let written =
                    blocking(move || store.append_message_fenced(&fence, &session, idx, &value)).await;
                match written {
                    Ok(()) => idx += 1,
                    // Lost: nothing more of this holder goes in. Other errors: the event is lost
                    // to the log (the unit goes on; the next one takes its place).
                    Err(StoreError::LeaseLost { .. }) => return,
                    Err(e) => tracing::warn!("cannot relay an event: {e}"),
                }
            }
        });
        Relay { task }
    }

    /// Waits until every event emitted before the bus closed is written.
    async fn finish(self) {
        let _ = self.task.await;
    }
}

fn event_value(envelope: &EventEnvelope) -> serde_json::Value {
    serde_json::to_value::<&Event>(&envelope.event).unwrap_or_default()
}
