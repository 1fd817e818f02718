//! The mission scenario: `orchestrator task` on a fresh repository, with a plan of N independent units
//! served by the scripted fake model (in this process, so its request log and arrival times are ours).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use orchestrator_fake_model::script::{role_of, PlanUnit, Script, ScriptedMission};
use orchestrator_fake_model::{FakeOptions, FakeServer, SeenRequest};
use orchestrator_store::Store;
use serde::Serialize;

use crate::child::{clean_command, Usage, Watched};
use crate::repo::BenchRepo;

pub const OBJECTIVE: &str = "Write every part of the benchmark project";
/// The model name the orchestrator is told to use; the fake answers any name.
pub const MODEL: &str = "scripted";
/// How long one mission may take before the bench gives up on it (and kills it).
const MISSION_TIMEOUT: Duration = Duration::from_secs(300);
/// The four discovery scouts the engine starts (`SCOUT_FOCUS` in crates/core/src/roles.rs).
pub const SCOUTS: usize = 4;

/// One point of the matrix.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scenario {
    pub units: usize,
    #[serde(serialize_with = "ser_ms")]
    pub latency: Duration,
    pub max_parallel: usize,
}

/// A plan of `units` independent units, each writing its own file (no merge conflicts, no
/// dependencies: the widest DAG, so the critical path is one unit deep).
pub fn independent_units(units: usize) -> Script {
    let plan = (1..=units)
        .map(|i| PlanUnit::file(&format!("u{i}"), &format!("parts/u{i}.txt"), &format!("part {i}")))
        .collect();
    Script {
        plan,
        ..Script::default()
    }
}

/// Sessions and turns of one role, as the fake server saw them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoleTurns {
    pub sessions: usize,
    /// The most turns (model calls) any one session of the role needed.
    pub max_turns: usize,
    pub calls: usize,
}

/// Where the time beyond the ideal went, by stage, from the fake server's arrival times. Each is the
/// stage's span minus the model latency it had to contain; they add up to wall − ideal.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stages {
    /// Spawn → first model request: config, git checks, preflight, store, worktrees, pre-scan.
    pub startup_ms: f64,
    /// First scout request → planner request, beyond the scouts' turns.
    pub discovery_ms: f64,
    /// Planner request → first worker request, beyond the planner's turn: plan validation, unit
    /// events, branches and worktrees.
    pub planning_ms: f64,
    /// First worker request → last reviewer request, beyond the workers' turns: commits,
    /// verification, slot and governor queueing.
    pub units_ms: f64,
    /// Last reviewer request → master reviewer request, beyond one review turn: the merge queue's
    /// tail and stage 2 verification.
    pub integration_ms: f64,
    /// Master reviewer request → exit, beyond its turn: fast-forward, clean-up, final events.
    pub finish_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MissionRun {
    pub scenario: Scenario,
    pub usage: Usage,
    #[serde(serialize_with = "ser_ms")]
    pub startup: Duration,
    pub model_calls: usize,
    /// Requests the critical-path formula does not cover (compaction, conflict resolution): 0 here.
    pub other_calls: usize,
    pub roles: BTreeMap<String, RoleTurns>,
    pub critical_turns: usize,
    #[serde(serialize_with = "ser_ms")]
    pub ideal: Duration,
    pub stages: Stages,
    pub events: usize,
    pub peak_in_flight: usize,
    pub sealed: bool,
}

impl MissionRun {
    /// Wall time over the ideal critical path; `None` at zero latency, where the ideal is zero.
    pub fn overhead_ratio(&self) -> Option<f64> {
        (!self.ideal.is_zero()).then(|| self.usage.wall.as_secs_f64() / self.ideal.as_secs_f64())
    }

    pub fn overhead(&self) -> Duration {
        self.usage.wall.saturating_sub(self.ideal)
    }

    pub fn cpu_per_call(&self) -> Option<Duration> {
        u32::try_from(self.model_calls)
            .ok()
            .filter(|c| *c > 0)
            .map(|c| self.usage.own_cpu / c)
    }

    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.usage.wall.as_secs_f64().max(1e-9)
    }
}

/// Runs one mission to its end and measures it. With `keep_logs`, the orchestrator's stdout and
/// stderr are copied there as `<label>.stdout` / `<label>.stderr` (for `ORCHESTRATOR_LOG=debug` runs).
pub async fn run(
    orchestrator: &Path,
    scenario: Scenario,
    keep_logs: Option<(&Path, &str)>,
) -> Result<MissionRun> {
    let repo = BenchRepo::new()?;
    let options = FakeOptions {
        latency: scenario.latency,
        ..FakeOptions::default()
    };
    let server = FakeServer::start(ScriptedMission::new(independent_units(scenario.units)), options)
        .await
        .context("cannot start the fake model server")?;
    let mut command = orchestrator_command(orchestrator, &repo, &server)?;
    command.args([
        "task",
        OBJECTIVE,
        "--max-parallel",
        &scenario.max_parallel.to_string(),
    ]);
    let watched = Watched::spawn(command)?;
    let spawned = watched.started;
    let usage = wait_with_timeout(watched, MISSION_TIMEOUT).await?;
    if let Some((dir, label)) = keep_logs {
        for stream in ["stdout", "stderr"] {
            let from = repo.scratch().join(format!("{stream}.txt"));
            let to = dir.join(format!("{label}.{stream}"));
            std::fs::copy(&from, &to).with_context(|| format!("cannot keep {}", to.display()))?;
        }
        dump_events(&repo.store_path(), &dir.join(format!("{label}.events.jsonl")))?;
    }
    if usage.exit_code != Some(0) {
        let stderr = std::fs::read_to_string(repo.scratch().join("stderr.txt")).unwrap_or_default();
        bail!(
            "the mission did not seal (exit {:?}); its stderr:\n{}",
            usage.exit_code,
            tail(&stderr, 2000)
        );
    }
    let requests = server.requests();
    let arrivals = server.arrivals();
    let peak_in_flight = server.max_in_flight();
    server.shutdown().await;
    let events = count_events(&repo.store_path())?;
    analyse(
        scenario,
        usage,
        spawned,
        &requests,
        &arrivals,
        events,
        peak_in_flight,
    )
}

/// `orchestrator` in `repo`, pointed at the fake server, output captured beside the repository.
pub fn orchestrator_command(
    orchestrator: &Path,
    repo: &BenchRepo,
    server: &FakeServer,
) -> Result<std::process::Command> {
    let mut command = clean_command(orchestrator, repo.home());
    let stdout = std::fs::File::create(repo.scratch().join("stdout.txt")).context("cannot capture stdout")?;
    let stderr = std::fs::File::create(repo.scratch().join("stderr.txt")).context("cannot capture stderr")?;
    command
        .current_dir(repo.path())
        .env("OPENAI_BASE_URL", server.openai_base_url())
        .env("OPENAI_API_KEY", "bench-key")
        .env("ORCHESTRATOR_MODEL", MODEL)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
    // Passed through on purpose, for profiling runs (`ORCHESTRATOR_LOG=debug` timings).
    if let Some(level) = std::env::var_os("ORCHESTRATOR_LOG") {
        command.env("ORCHESTRATOR_LOG", level);
    }
    Ok(command)
}

/// Waits for a watched process on a blocking thread; past `timeout` it is killed (and still reaped).
pub async fn wait_with_timeout(watched: Watched, timeout: Duration) -> Result<Usage> {
    let handle = watched.handle();
    let mut waiter = tokio::task::spawn_blocking(move || watched.wait());
    match tokio::time::timeout(timeout, &mut waiter).await {
        Ok(joined) => joined.context("the waiting thread panicked")?,
        Err(_) => {
            handle.signal(libc::SIGKILL)?;
            let _ = waiter.await;
            bail!(
                "the process did not finish within {} s; killed",
                timeout.as_secs()
            )
        }
    }
}

/// Events in the repository's store for its latest mission, read through the store crate.
pub fn count_events(store: &Path) -> Result<usize> {
    let store = Store::open_existing(store).context("cannot open the mission store")?;
    let Some(mission) = store.latest_mission()? else {
        bail!("the store holds no mission");
    };
    Ok(store.events_after(&mission.id, None)?.len())
}

/// Writes the latest mission's event log as JSON lines (what `orchestrator logs --json` shows), for
/// reading a run's timeline after its repository is gone.
fn dump_events(store: &Path, to: &Path) -> Result<()> {
    let store = Store::open_existing(store).context("cannot open the mission store")?;
    let Some(mission) = store.latest_mission()? else {
        return Ok(());
    };
    let mut text = String::new();
    for event in store.events_after(&mission.id, None)? {
        text.push_str(&serde_json::to_string(&event)?);
        text.push('\n');
    }
    std::fs::write(to, text).with_context(|| format!("cannot write {}", to.display()))
}

/// The role and the session a request belongs to. A session is known by its role and its first
/// message (a scout's focus, a worker's or reviewer's unit), which the engine never rewrites here.
fn session_of(request: &SeenRequest) -> (String, String) {
    (
        role_of(request).to_string(),
        request.first_user_text().to_string(),
    )
}

/// Sessions and turns per role.
pub fn role_turns(requests: &[SeenRequest]) -> BTreeMap<String, RoleTurns> {
    let mut sessions: HashMap<(String, String), usize> = HashMap::new();
    for request in requests {
        // The n-th call of a session carries n-1 assistant messages.
        let turn = request.assistant_turns() + 1;
        let entry = sessions.entry(session_of(request)).or_default();
        *entry = (*entry).max(turn);
    }
    let mut roles: BTreeMap<String, RoleTurns> = BTreeMap::new();
    for ((role, _), turns) in sessions {
        let r = roles.entry(role).or_default();
        r.sessions += 1;
        r.max_turns = r.max_turns.max(turns);
    }
    for request in requests {
        roles.entry(role_of(request).to_string()).or_default().calls += 1;
    }
    roles
}

/// Model turns on the critical path of a mission of independent units under a cap of `cap` sessions:
///
/// `⌈scouts/cap⌉·t_scout + t_planner + ⌈workers/cap⌉·(t_worker + t_reviewer) + t_master_reviewer`
///
/// where `t_role` is the most turns one session of that role needed. Scouts run at once (up to the
/// cap), then the planner, then every unit's worker and reviewer (a unit keeps its slot from worker
/// through review), then the master reviewer.
pub fn critical_turns(roles: &BTreeMap<String, RoleTurns>, cap: usize) -> usize {
    let get = |role: &str| roles.get(role).cloned().unwrap_or_default();
    let waves = |n: usize| n.div_ceil(cap.max(1));
    let (scout, planner, worker, reviewer, master) = (
        get("scout"),
        get("planner"),
        get("worker"),
        get("reviewer"),
        get("master_reviewer"),
    );
    waves(scout.sessions) * scout.max_turns
        + planner.max_turns
        + waves(worker.sessions) * (worker.max_turns + reviewer.max_turns)
        + master.max_turns
}

fn analyse(
    scenario: Scenario,
    usage: Usage,
    spawned: Instant,
    requests: &[SeenRequest],
    arrivals: &[Instant],
    events: usize,
    peak_in_flight: usize,
) -> Result<MissionRun> {
    if requests.is_empty() || requests.len() != arrivals.len() {
        bail!(
            "the fake server logged {} requests and {} arrivals",
            requests.len(),
            arrivals.len()
        );
    }
    let roles = role_turns(requests);
    let covered = ["scout", "planner", "worker", "reviewer", "master_reviewer"];
    let other_calls = roles
        .iter()
        .filter(|(role, _)| !covered.contains(&role.as_str()))
        .map(|(_, r)| r.calls)
        .sum();
    let cap = scenario.max_parallel;
    let critical = critical_turns(&roles, cap);
    let latency = scenario.latency;
    let ideal = latency * u32::try_from(critical).unwrap_or(u32::MAX);

    let since = |at: Instant| at.saturating_duration_since(spawned).as_secs_f64() * 1000.0;
    let first_of = |role: &str| {
        requests
            .iter()
            .zip(arrivals)
            .filter(|(r, _)| role_of(r) == role)
            .map(|(_, at)| since(*at))
            .reduce(f64::min)
    };
    let last_of = |role: &str| {
        requests
            .iter()
            .zip(arrivals)
            .filter(|(r, _)| role_of(r) == role)
            .map(|(_, at)| since(*at))
            .reduce(f64::max)
    };
    let need = |t: Option<f64>, role: &str| t.with_context(|| format!("no {role} request was seen"));
    let first_request = arrivals
        .iter()
        .map(|at| since(*at))
        .reduce(f64::min)
        .unwrap_or(0.0);
    let scout = need(first_of("scout"), "scout")?;
    let planner = need(first_of("planner"), "planner")?;
    let worker = need(first_of("worker"), "worker")?;
    let last_review = need(last_of("reviewer"), "reviewer")?;
    let master = need(first_of("master_reviewer"), "master reviewer")?;
    let exit = usage.wall.as_secs_f64() * 1000.0;
    let l = latency.as_secs_f64() * 1000.0;
    let turns = |role: &str| roles.get(role).map(|r| r.max_turns).unwrap_or(0) as f64;
    let waves = |role: &str| {
        roles
            .get(role)
            .map(|r| r.sessions.div_ceil(cap.max(1)))
            .unwrap_or(0) as f64
    };
    let stages = Stages {
        startup_ms: first_request,
        discovery_ms: planner - scout - waves("scout") * turns("scout") * l,
        planning_ms: worker - planner - turns("planner") * l,
        // The last review starts after every wave of workers and all but the last wave of reviews.
        units_ms: last_review
            - worker
            - waves("worker") * turns("worker") * l
            - (waves("worker") - 1.0).max(0.0) * turns("reviewer") * l,
        integration_ms: master - last_review - turns("reviewer") * l,
        finish_ms: exit - master - turns("master_reviewer") * l,
    };
    Ok(MissionRun {
        scenario,
        startup: Duration::from_secs_f64(first_request / 1000.0),
        model_calls: requests.len(),
        other_calls,
        roles,
        critical_turns: critical,
        ideal,
        stages,
        events,
        peak_in_flight,
        sealed: usage.exit_code == Some(0),
        usage,
    })
}

fn tail(text: &str, chars: usize) -> &str {
    let start = text.len().saturating_sub(chars);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    &text[start..]
}

pub fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(entries: &[(&str, usize, usize)]) -> BTreeMap<String, RoleTurns> {
        entries
            .iter()
            .map(|(role, sessions, max_turns)| {
                (
                    role.to_string(),
                    RoleTurns {
                        sessions: *sessions,
                        max_turns: *max_turns,
                        calls: sessions * max_turns,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_critical_path_counts_waves_under_the_cap() {
        let r = roles(&[
            ("scout", 4, 2),
            ("planner", 1, 1),
            ("worker", 50, 2),
            ("reviewer", 50, 1),
            ("master_reviewer", 1, 1),
        ]);
        assert_eq!(critical_turns(&r, 50), 2 + 1 + 3 + 1);
        // One slot: the scouts and the units go one after another.
        let one = roles(&[
            ("scout", 4, 2),
            ("planner", 1, 1),
            ("worker", 1, 2),
            ("reviewer", 1, 1),
            ("master_reviewer", 1, 1),
        ]);
        assert_eq!(critical_turns(&one, 1), 8 + 1 + 3 + 1);
    }
}
