//! A claimed mission from its first event to its last: the run, how it ended, and what is done at
//! the end (the user's branch fast-forwarded, worktrees and branches cleaned up).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use orchestrator_git::{FastForward, Repo};
use orchestrator_model::GovernedClient;
use orchestrator_protocol::{Event, HookKind, Outcome, Phase};
use orchestrator_store::{MissionRecord, MissionStatus, Store};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::EngineError;
use crate::events::EventBus;
use crate::lock::RepoLock;
use crate::opencode::OpencodeEngine;
use crate::replay::Replay;
use crate::session::Runtime;
use crate::verify::{self};

use super::*;

/// What to do with the result and the branches when the mission is over.
#[derive(Debug, Clone, Copy)]
pub(super) struct Finish {
    pub(super) apply: bool,
    pub(super) keep_branches: bool,
}

/// A mission whose repository lock and store are held: everything one run of it needs, new or resumed.
pub(super) struct Claimed {
    pub(super) record: MissionRecord,
    pub(super) finish: Finish,
    pub(super) repo: Repo,
    pub(super) config: Config,
    pub(super) client: Arc<GovernedClient>,
    /// What earlier runs did (empty for a new mission).
    pub(super) replay: Replay,
    pub(super) store: Arc<Store>,
    /// The OpenCode server that runs the sessions (`--provider opencode`), stopped with the run.
    pub(super) opencode: Option<Arc<OpencodeEngine>>,
    /// Held until the run is over: one mission at a time per repository.
    pub(super) lock: RepoLock,
    /// The mission's leader lease, renewed while the run goes on and given back at its end.
    pub(super) lead: crate::leader::Leadership,
    /// Said in the log once the mission has started (what `--abandon` removed).
    pub(super) notices: Vec<String>,
    /// Hooks run before the mission was recorded (`mission_start`), logged once it has started.
    pub(super) hook_runs: Vec<orchestrator_protocol::HookRun>,
}

/// One run of a claimed mission to its end. Never fails: every ending is a report. The OpenCode
/// server (if any) is stopped and the repository lock released when it returns.
/// How long the mission's last notices (its end) may take to go out before the process moves on:
/// a webhook that does not answer delays the exit by this much at most.
const NOTICE_FLUSH: std::time::Duration = std::time::Duration::from_secs(15);

pub(super) async fn run_mission(
    claimed: Claimed,
    bus: &EventBus,
    cancel: CancellationToken,
    control: crate::control::MissionControl,
) -> MissionReport {
    let Claimed {
        record,
        finish,
        repo,
        config,
        client,
        replay,
        store,
        opencode,
        lock,
        lead,
        notices,
        hook_runs,
    } = claimed;
    let id = record.id.clone();
    // Before the first write: a write refused because another commander took the lead (during the
    // `mission_start` hook, say) stops the run from there.
    bus.stop_on_store_error(cancel.clone());
    record_status(&store, bus, &id, MissionStatus::Running, Some(std::process::id()));
    if replay.last_seq.is_none() {
        bus.emit(Event::MissionStarted {
            objective: record.objective.clone(),
            base_commit: record.base_commit.clone(),
            user_branch: record.user_branch.clone(),
            integration_branch: record.integration_branch.clone(),
        });
    }
    for message in notices {
        bus.emit(Event::Notice { message });
    }
    for run in hook_runs {
        bus.emit(Event::HookRan { run });
    }
    // After the seal, with the run's runtime gone: what the `after_seal` hook needs.
    let seal_hook = SealHook {
        hook: config.hooks.get(HookKind::AfterSeal).cloned(),
        ran_before: replay.hook_passed(HookKind::AfterSeal),
        sandbox: config.sandbox.clone(),
        cancel: cancel.clone(),
    };
    let lead_watch = stop_when_lead_lost(&lead, bus);
    let mut rt = Runtime::new(
        client.clone(),
        bus.clone(),
        cancel,
        config.max_parallel,
        config.budget_tokens,
    )
    .with_store(store.clone(), &id)
    .with_context_rules(config.prices.clone(), config.compaction.clone())
    .with_control(control.clone());
    if config.workers == orchestrator_protocol::Workers::External && store.is_postgres() {
        rt = crate::across_hosts::share_with_workers(rt, &client, &store);
    }
    // Started by `drive` once the base worktree (their folder) exists; stopped here, however it ended.
    let mcp = Arc::new(crate::mcp_servers::McpServers::default());
    rt = rt.with_mcp(mcp.clone());
    if let Some(engine) = &opencode {
        rt = rt.with_runner(engine.clone());
    }
    let announcer = announce_dispatch_changes(&control, bus);
    let notifier = orchestrator_notify::Notifier::start(
        &config.notify,
        orchestrator_notify::MissionContext {
            repo: repo.root().to_path_buf(),
            objective: record.objective.clone(),
        },
        bus.subscribe(),
    );
    let answers = crate::approval::forward_stored(store.clone(), id.clone(), control.clone(), bus.clone());
    let setup = Setup {
        repo: repo.clone(),
        worktrees: repo.root().join(STATE_DIR).join("worktrees").join(&id),
        base: record.base_commit.clone(),
        objective: record.objective.clone(),
        integration_branch: record.integration_branch.clone(),
        done_branches: Arc::default(),
        settings: serde_json::from_value::<StoredOptions>(record.options.clone())
            .map(|stored| stored.settings)
            .unwrap_or_default(),
    };
    let ending = match drive(&id, &setup, rt, config, replay).await {
        Ok(ending) => ending,
        Err(EngineError::Interrupted) => interrupted(),
        Err(e @ EngineError::EndpointFailed(_)) => Ending {
            resumable: true,
            ..Ending::unsealed(format!(
                "{e}\nContinue with `orchestrator resume` once the endpoint answers."
            ))
        },
        Err(e) => Ending::unsealed(format!("the mission stopped on an error: {e}")),
    };
    mcp.stop().await;
    lead_watch.abort();
    announcer.abort();
    answers.abort();
    let Ending {
        outcome,
        mut summary,
        result_commit,
        resumable,
        unverified,
    } = ending;
    if let Some(error) = bus.store_error() {
        summary = format!(
            "the mission stopped: its store could not be written ({error}); continue it with \
             `orchestrator resume` once the store is back (work since its last logged event may repeat)"
        );
    }
    let lead_lost = bus.lead_lost();
    if let Some(why) = &lead_lost {
        summary = format!(
            "the mission stopped: this commander lost its lead ({why}). Nothing more was written to the \
             store or merged; whoever leads it now continues it (or `orchestrator resume`, once no other \
             commander does)"
        );
    }
    // A lost lead ends the run as an interruption: nothing of it is applied, sealed or settled.
    let (outcome, resumable) = match lead_lost {
        Some(_) => (Outcome::Interrupted, true),
        None => (outcome, resumable),
    };
    if outcome == Outcome::Sealed && finish.apply {
        if let (Some(branch), Some(commit)) = (&record.user_branch, &result_commit) {
            summary.push('\n');
            summary.push_str(&apply_result(&repo, branch, commit, &record.integration_branch, bus).await);
        }
    }
    if outcome == Outcome::Sealed {
        if let Some(note) = seal_hook
            .run(&setup, &record, result_commit.as_deref(), bus)
            .await
        {
            summary.push('\n');
            summary.push_str(&note);
        }
    }
    // A finished mission (nothing will resume it) takes its branches with it unless asked to keep them.
    let over = !resumable && outcome != Outcome::Interrupted;
    if over && bus.lead_lost().is_none() {
        crate::inbox::close_inbox(&store, &id, bus);
    }
    let settle = over && !finish.keep_branches;
    cleanup(&setup, &id, settle).await;
    let mut branch_kept = true;
    if settle {
        let kept = settle_integration(&setup, record.user_branch.as_deref(), bus).await;
        branch_kept = kept.is_some();
        if let Some(note) = kept {
            summary.push('\n');
            summary.push_str(&note);
        }
        if let Some(note) = crate::clean::settle_remote(&repo, &record, !branch_kept).await {
            bus.emit(Event::Notice {
                message: note.clone(),
            });
            summary.push('\n');
            summary.push_str(&note);
        }
    }
    for (model, stats) in client.stats() {
        bus.emit(Event::ModelTraffic {
            model,
            limit: stats.limit,
            max_limit: stats.max_limit,
            peak_in_flight: stats.peak_in_flight,
            rate_limited: stats.rate_limited,
            retries: stats.retries,
            gave_up: stats.gave_up,
        });
    }
    let status = match (outcome, resumable) {
        (Outcome::Sealed, _) => MissionStatus::Sealed,
        (Outcome::Interrupted, _) | (_, true) => MissionStatus::Interrupted,
        _ => MissionStatus::Unsealed,
    };
    bus.emit(Event::PhaseChanged {
        phase: Phase::Finished,
        round: 0,
    });
    bus.emit(Event::MissionFinished {
        outcome,
        summary: summary.clone(),
        usage: bus.usage(),
        result_commit: result_commit.clone(),
        unverified,
    });
    // Another commander's now: its status is not ours to set.
    if bus.lead_lost().is_none() {
        record_status(&store, bus, &id, status, None);
        // Lost between the mission's end and its status: what was done stands, the record is the
        // new leader's.
        if let Some(why) = bus.lead_lost() {
            summary.push_str(&format!(
                "\nIts status was not recorded: this commander lost its lead ({why})."
            ));
        }
    }
    if let Some(engine) = &opencode {
        engine.stop().await;
    }
    notifier.finish(NOTICE_FLUSH).await;
    drop(lead);
    drop(lock);
    MissionReport {
        mission: id,
        outcome,
        unverified,
        summary,
        integration_branch: record.integration_branch,
        branch_kept,
        result_commit,
    }
}

/// Records the mission's status. The store refuses it (`LeaseLost`) once another commander took
/// the lead, which loses it here as a refused event append does; any other failure leaves the
/// status as it was (`status` and `resume` go by the log and the process), as it always has.
fn record_status(store: &Store, bus: &EventBus, id: &str, status: MissionStatus, pid: Option<u32>) {
    match store.set_status(id, status, pid) {
        Ok(()) => {}
        Err(orchestrator_store::StoreError::LeaseLost { .. }) => {
            bus.lose_lead(crate::leader::taken_over(store, id));
        }
        Err(e) => tracing::warn!("cannot record mission {id} as {status}: {e}"),
    }
}

/// Stops the mission through the bus (nothing more written, the run cancelled) once the lead is
/// lost, which may already be so (lost during the `mission_start` hook).
fn stop_when_lead_lost(lead: &crate::leader::Leadership, bus: &EventBus) -> tokio::task::JoinHandle<()> {
    let lost = lead.lost();
    let why = lead.why_lost_handle();
    let bus = bus.clone();
    tokio::spawn(async move {
        lost.cancelled().await;
        let why = why().unwrap_or_else(|| "its lease could not be renewed".into());
        // First cut the store off, then say so: the notice is shown, not written.
        bus.lose_lead(why.clone());
        bus.emit(Event::Notice {
            message: format!("stopping: this commander lost the mission's lead ({why})"),
        });
    })
}

/// The `after_seal` hook of a run: configured or not, and whether an earlier run already ran it
/// to success (it is not run twice).
struct SealHook {
    hook: Option<crate::hooks::HookCommand>,
    ran_before: bool,
    sandbox: crate::config::SandboxSettings,
    cancel: CancellationToken,
}

impl SealHook {
    /// Runs the hook in the integration worktree, which holds the sealed result, after the user's
    /// branch was fast-forwarded. A failure is recorded and returned for the summary; the mission
    /// stays sealed.
    async fn run(
        &self,
        setup: &Setup,
        record: &MissionRecord,
        result: Option<&str>,
        bus: &EventBus,
    ) -> Option<String> {
        let hook = self.hook.as_ref().filter(|_| !self.ran_before)?;
        let dir = setup.worktrees.join("integration");
        let result = result.unwrap_or_default();
        let call = crate::hooks::HookCall {
            kind: HookKind::AfterSeal,
            dir: &dir,
            writable: true,
            mission: &record.id,
            unit: None,
            attempt: None,
            env: vec![
                ("ORCHESTRATOR_BASE_COMMIT", setup.base.clone()),
                ("ORCHESTRATOR_BRANCH", setup.integration_branch.clone()),
                ("ORCHESTRATOR_COMMIT", result.to_string()),
            ],
            input: serde_json::json!({
                "hook": HookKind::AfterSeal,
                "mission": record.id,
                "objective": record.objective,
                "base_commit": setup.base,
                "branch": setup.integration_branch,
                "user_branch": record.user_branch,
                "commit": result,
            }),
        };
        let run = crate::hooks::run(hook, call, &self.sandbox, &self.cancel).await;
        bus.emit(Event::HookRan { run: run.clone() });
        if run.passed() {
            return None;
        }
        let note = format!(
            "the after_seal hook `{}` failed ({}); the mission stays sealed. What it said (last part):\n{}",
            run.command,
            run.status(),
            crate::prompts::cut(run.output_tail.trim(), 2_000)
        );
        bus.emit(Event::Notice {
            message: note.clone(),
        });
        Some(note)
    }
}

pub(super) struct Setup {
    pub(super) repo: Repo,
    pub(super) worktrees: PathBuf,
    pub(super) base: String,
    pub(super) objective: String,
    pub(super) integration_branch: String,
    /// The mission's unit branches that can go: their units ended (this run or an earlier one).
    pub(super) done_branches: Arc<Mutex<BTreeSet<String>>>,
    /// The settings the mission was started with.
    pub(super) settings: orchestrator_protocol::MissionSettings,
}

/// How a run ended. `resumable` marks an unsealed stop that `resume` may continue (a spent budget).
pub(super) struct Ending {
    pub(super) outcome: Outcome,
    pub(super) summary: String,
    pub(super) result_commit: Option<String>,
    pub(super) resumable: bool,
    /// Sealed with no build, lint or test command run on the work (`--no-verify`).
    pub(super) unverified: bool,
}

impl Ending {
    pub(super) fn unsealed(summary: String) -> Self {
        Ending {
            outcome: Outcome::Unsealed,
            summary,
            result_commit: None,
            resumable: false,
            unverified: false,
        }
    }
}

pub(super) fn interrupted() -> Ending {
    Ending {
        outcome: Outcome::Interrupted,
        summary: "the mission was interrupted; continue it with `orchestrator resume`".into(),
        result_commit: None,
        resumable: true,
        unverified: false,
    }
}

/// Fast-forwards the user's branch to the result, never forcing anything.
async fn apply_result(repo: &Repo, branch: &str, commit: &str, integration: &str, bus: &EventBus) -> String {
    let short = verify::short(commit);
    if repo
        .rev_parse(&format!("refs/heads/{branch}"))
        .await
        .ok()
        .as_deref()
        == Some(commit)
    {
        // A mission that changed nothing: say so rather than claim a move.
        let message = format!("{branch} already has the result ({short}); nothing to fast-forward");
        bus.emit(Event::Notice {
            message: message.clone(),
        });
        return message;
    }
    let checked_out = repo.current_branch().await.ok().flatten();
    let result = if checked_out.as_deref() == Some(branch) {
        repo.fast_forward_checked_out(commit).await
    } else {
        repo.fast_forward_branch(branch, commit).await
    };
    let message = match result {
        Ok(FastForward::Done) => format!("{branch} fast-forwarded to {short}"),
        Ok(FastForward::NotFastForward) => {
            format!("{branch} has moved since the mission started, so it was left alone; merge {integration} yourself")
        }
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

/// Removes the mission's worktrees, then the branches of units that ended — or, with
/// `every_unit_branch` (a finished mission), all its unit branches. Otherwise unit branches of units
/// that did not end hold unfinished work and stay for `resume`. The integration branch is
/// [`settle_integration`]'s.
async fn cleanup(setup: &Setup, mission: &str, every_unit_branch: bool) {
    let repo = &setup.repo;
    if let Ok(list) = repo.list_worktrees().await {
        for path in list.iter().filter(|p| p.starts_with(&setup.worktrees)) {
            if let Err(e) = repo.remove_worktree(path).await {
                tracing::warn!("cannot remove worktree {}: {e}", path.display());
            }
        }
    }
    let _ = tokio::fs::remove_dir_all(&setup.worktrees).await;
    let done = std::mem::take(&mut *setup.done_branches.lock().unwrap_or_else(|p| p.into_inner()));
    if done.is_empty() && !every_unit_branch {
        return;
    }
    // Only branches that exist: one listing, so one missing branch cannot fail the whole batch.
    let existing = match repo
        .branches_with_prefix(&format!("orchestrator/{mission}/u/"))
        .await
    {
        Ok(existing) => existing,
        Err(e) => return tracing::warn!("cannot list the mission's unit branches: {e}"),
    };
    let gone: Vec<&String> = existing
        .iter()
        .filter(|b| every_unit_branch || done.contains(*b))
        .collect();
    if gone.is_empty() {
        return;
    }
    if let Err(e) = repo.delete_branches(&gone).await {
        tracing::warn!("cannot delete the branches of finished units: {e}");
    }
}

/// A finished mission's integration branch (its unit branches are gone with `cleanup`): it goes too
/// when the user's branch already has all of it (applied, or nothing was merged). Otherwise it stays
/// as the result to review, and the returned note says so.
async fn settle_integration(setup: &Setup, user_branch: Option<&str>, bus: &EventBus) -> Option<String> {
    let repo = &setup.repo;
    let branch = &setup.integration_branch;
    let head = repo.rev_parse(&format!("refs/heads/{branch}")).await.ok()?;
    let target = user_branch
        .map(|b| format!("refs/heads/{b}"))
        .unwrap_or_else(|| setup.base.clone());
    let contained = head == setup.base || repo.is_ancestor(&head, &target).await.unwrap_or(false);
    if !contained {
        let note = format!(
            "the mission's work is kept on {branch} (not on {}); review or merge it, or remove it with `orchestrator clean`",
            user_branch.unwrap_or("your branch")
        );
        bus.emit(Event::Notice {
            message: note.clone(),
        });
        return Some(note);
    }
    if let Err(e) = repo.delete_branch(branch).await {
        tracing::warn!("cannot delete {branch}: {e}");
        return Some(format!(
            "{branch} could not be removed ({e}); `orchestrator clean` removes it"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use orchestrator_store::Holder;

    use super::*;

    fn holder(id: &str, host: &str) -> Holder {
        Holder {
            id: id.into(),
            host: host.into(),
        }
    }

    fn record(id: &str) -> MissionRecord {
        MissionRecord {
            id: id.into(),
            objective: "o".into(),
            base_commit: "abc".into(),
            user_branch: None,
            integration_branch: format!("orchestrator/{id}/integration"),
            options: serde_json::json!({}),
            status: MissionStatus::Running,
            pid: Some(1),
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    /// A status refused because another commander took the lead loses it (a run that has not
    /// installed its stop yet is stopped as it does) and leaves the new leader's status alone.
    #[test]
    fn a_status_refused_after_a_take_over_loses_the_lead_and_stops_the_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        let store = Store::open(&path).expect("store");
        store.create_mission(&record("m1")).expect("recorded");
        let long = Duration::from_secs(600);
        let lead = store
            .acquire_leader("m1", &holder("commander pid 1", "host-a"), long)
            .expect("leads");
        store.fence_by_leader("m1", lead.token);
        let bus = EventBus::new();
        record_status(&store, &bus, "m1", MissionStatus::Running, Some(2));
        assert!(bus.lead_lost().is_none());

        let other = Store::open_existing(&path).expect("second handle");
        other
            .take_over_leader("m1", &holder("usurper", "host-b"), long, lead.token)
            .expect("taken");
        record_status(&store, &bus, "m1", MissionStatus::Sealed, None);
        let why = bus.lead_lost().expect("lost");
        assert!(why.contains("by usurper on host-b"), "{why}");
        let cancel = CancellationToken::new();
        bus.stop_on_store_error(cancel.clone());
        assert!(
            cancel.is_cancelled(),
            "a stop installed after the loss fires at once"
        );
        let now = other.mission("m1").expect("read").expect("recorded");
        assert_eq!((now.status, now.pid), (MissionStatus::Running, Some(2)));
    }
}
