//! The mission's stages in order: discovery, planning, then rounds of execution and stage 2
//! verification until it seals, runs out of rounds or stops.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use orchestrator_git::Worktree;
use orchestrator_protocol::{Event, Outcome, Phase, Role, UnitSpec, UnitState};
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::events::EventBus;
use crate::offers::Offers;
use crate::prescan;
use crate::replay::Replay;
use crate::roles;
use crate::session::Runtime;
use crate::units::{self, MergeTarget, UnitOutcome};
use crate::verify::{self, Verifier};

use super::approval::{plan_round_one, Planning};
use super::*;
use crate::plan::{own_description, PREVIOUS_ATTEMPT};
use crate::shared::{toolbox, Mission, TodoBook};

/// The run's end when an MCP server cannot start: nothing was done, and `resume` runs the mission once
/// the server (or its `[mcp.<name>]` entry) is fixed.
fn mcp_start_failed(error: crate::mcp_servers::StartError) -> Ending {
    Ending {
        resumable: true,
        ..Ending::unsealed(format!(
            "{error}\nFix the server or its [mcp.*] entry, then continue with `orchestrator resume`."
        ))
    }
}

/// Discovery, planning and rounds, each skipped when the replay shows it done.
pub(super) async fn drive(
    id: &str,
    setup: &Setup,
    mut rt: Runtime,
    config: Config,
    replay: Replay,
) -> Result<Ending> {
    let repo = &setup.repo;
    repair_after_kill(id, setup, &rt).await?;
    let base_tree = repo
        .add_detached_worktree(&setup.worktrees.join("base"), &setup.base)
        .await?;
    rt.prompts = project_prompts(&rt, &config, base_tree.path());
    let (integration, integration_head) = open_integration(setup).await?;
    rt.bus.emit(Event::Notice {
        message: config.sandbox.summary(),
    });
    // Before any session: a server that cannot start stops the run before a token is spent on it.
    if let Err(e) = rt.mcp.start(&config, base_tree.path(), &rt.bus).await {
        return Ok(mcp_start_failed(e));
    }

    let scout_tools = Arc::new(toolbox(base_tree.path(), Role::Scout, &config)?);
    let planner_tools = Arc::new(toolbox(base_tree.path(), Role::Planner, &config)?);
    let (context, build, test) = match (&replay.context, &replay.verify) {
        (Some(context), Some((build, test))) => (context.clone(), build.clone(), test.clone()),
        _ => {
            rt.bus.emit(Event::PhaseChanged {
                phase: Phase::Discovery,
                round: 0,
            });
            let mut scan = prescan::scan(base_tree.path());
            let build = config.verify_build.clone().or(scan.build.clone());
            let test = config.verify_test.clone().or(scan.test.clone());
            // The scouts and the mission context get the commands that will judge the work, not
            // what the pre-scan guessed before the config was applied.
            scan.build = build.clone();
            scan.test = test.clone();
            rt.bus.emit(Event::PreScanFinished {
                files: scan.file_count,
                build: build.clone(),
                test: test.clone(),
            });
            let context = roles::discover(&rt, &config, &setup.objective, &scan, scout_tools).await;
            if rt.budget_spent() {
                return Ok(budget_ending(&rt, &config));
            }
            if rt.cancel.is_cancelled() {
                return Ok(interrupted());
            }
            rt.bus.emit(Event::DiscoveryFinished {
                context: context.clone(),
            });
            (context, build, test)
        }
    };
    let build = config.verify_build.clone().or(build);
    let lint = config.verify_lint.clone();
    let test = config.verify_test.clone().or(test);
    // `install = ""` in the config runs none; unset, the lockfile of the base commit picks one.
    let install = match &config.verify_install {
        Some(install) => Some(install.clone()).filter(|c| !c.is_empty()),
        None => prescan::install_command(base_tree.path()),
    };
    // Runs while the plan is made; the units' verification waits for it.
    let baseline = crate::baseline::start(
        crate::baseline::Plan {
            repo: repo.clone(),
            dir: setup.worktrees.join("baseline"),
            base: setup.base.clone(),
            install: install.clone(),
            build: build.clone(),
            lint: lint.clone(),
            test: test.clone(),
            timeout: config.verify_timeout,
            sandbox: config.sandbox.clone(),
            cache: config.verify_cache,
            bus: rt.bus.clone(),
            cancel: rt.cancel.clone(),
        },
        replay.baseline.as_ref(),
    );
    let plan = match replay.plans.get(&1) {
        Some(plan) => plan.clone(),
        None => {
            let planning = Planning {
                rt: &rt,
                config: &config,
                objective: &setup.objective,
                context: &context,
                tools: planner_tools,
                base_dir: base_tree.path(),
                base_commit: &setup.base,
            };
            match plan_round_one(planning, &replay.approval).await {
                Ok(plan) => plan,
                Err(ending) => return Ok(ending),
            }
        }
    };
    let verifier = Verifier {
        install,
        install_online: false,
        build,
        lint,
        test,
        timeout: config.verify_timeout,
        permits: Semaphore::new(config.max_parallel_verify),
        sandbox: config.sandbox.clone(),
        baseline: Some(baseline),
        protect_tests: config.verify_protect_tests,
    };
    verifier_notice(&rt, &verifier);
    let offers = external_offers(id, setup, &rt, &config, replay.relayed.clone())?;
    let mission = Arc::new(Mission {
        id: id.to_string(),
        objective: setup.objective.clone(),
        repo: repo.clone(),
        rt,
        config,
        verifier,
        context,
        worktrees: setup.worktrees.clone(),
        run_index: replay.resumes + 1,
        replay,
        todo: Mutex::new(TodoBook::new(repo.root().join(STATE_DIR).join("todo.md"))),
        done_branches: setup.done_branches.clone(),
        registered: Default::default(),
        base_commit: setup.base.clone(),
        settings: setup.settings.clone(),
        offers,
        branch_root: Mission::commander_branch_root(id),
        units_elsewhere: 0,
    });
    // Units that ended in an earlier run may have left their branch (a kill before the run's end).
    for unit in mission.replay.units.keys() {
        if mission.replay.terminal(unit).is_some() {
            mission.branch_done(mission.branch(unit));
        }
    }
    run_rounds(&mission, plan, integration, integration_head, &setup.base).await
}

/// `--workers external`: the queue the units go to, as many at once as `--max-parallel` says.
fn external_offers(
    id: &str,
    setup: &Setup,
    rt: &Runtime,
    config: &Config,
    relayed: BTreeMap<String, usize>,
) -> Result<Option<Arc<Offers>>> {
    let (orchestrator_protocol::Workers::External, Some(remote), Some(store)) =
        (config.workers, &config.remote, &rt.store)
    else {
        return Ok(None);
    };
    let offers = Offers::start(
        store.clone(),
        id,
        remote,
        setup.repo.clone(),
        rt.bus.clone(),
        relayed,
    );
    offers
        .set_max_parallel(config.max_parallel)
        .map_err(EngineError::Other)?;
    rt.bus.emit(Event::Notice {
        message: format!(
            "units go to `orchestrator worker` processes through the store and {remote}, at most {} at once",
            config.max_parallel
        ),
    });
    Ok(Some(offers))
}

/// Every session's system prompts: the role files' prompts, and the project instructions as the
/// mission's base commit has them (the agents' view, never the user's uncommitted files). What was
/// used goes into the event log, for `logs` and `report`.
pub(crate) fn project_prompts(
    rt: &Runtime,
    config: &Config,
    base: &std::path::Path,
) -> crate::prompts::Prompts {
    // OpenCode puts the checkout's top-level AGENTS.md (or CLAUDE.md) into its own system prompt.
    let opencode_reads = (config.provider == orchestrator_protocol::Provider::OpenCode)
        .then(|| crate::instructions::read_by_opencode(base))
        .flatten();
    let given = opencode_reads.as_deref().map(|file| (file, "OpenCode"));
    let instructions = crate::instructions::load_leaving_out(base, given);
    let mut roles = crate::role_files::used(&config.role_prompts);
    // The specialist reviewers this mission runs, after the built-in roles' files.
    let named = config.review_extra.iter().chain(&config.review_extra_master);
    let specialists = named.filter_map(|name| config.specialists.get(name));
    roles.extend(specialists.map(|s| orchestrator_protocol::ProjectFile {
        path: s.prompt.path.clone(),
        bytes: s.prompt.prompt.len() as u64,
        cut: false,
    }));
    if !instructions.files.is_empty() || !instructions.notes.is_empty() || !roles.is_empty() {
        rt.bus.emit(Event::ProjectFiles {
            instructions: instructions.files,
            roles,
            notes: instructions.notes,
        });
    }
    let bodies = config
        .role_prompts
        .iter()
        .map(|(role, file)| (*role, file.prompt.clone()))
        .collect();
    let specialists = config
        .specialists
        .iter()
        .map(|(name, s)| (name.clone(), s.prompt.prompt.clone()))
        .collect();
    crate::prompts::Prompts::new(bodies, instructions.block).with_specialists(specialists)
}

/// A run killed while git wrote one of the mission's refs or worktrees left a `.lock` file or a
/// worktree cut short, and later git commands there would fail. Only this process (it holds the
/// repository's lock) writes the mission's refs and worktrees, so those are stale and go; nothing
/// else's is touched.
async fn repair_after_kill(id: &str, setup: &Setup, rt: &Runtime) -> Result<()> {
    let prefix = format!("orchestrator/{id}/");
    let repaired = setup.repo.repair_after_kill(&prefix, &setup.worktrees).await?;
    let list = |paths: &[std::path::PathBuf]| {
        paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !repaired.locks.is_empty() {
        rt.bus.emit(Event::Notice {
            message: format!(
                "removed {} lock file(s) that the interrupted run left in git: {}",
                repaired.locks.len(),
                list(&repaired.locks)
            ),
        });
    }
    if !repaired.worktrees.is_empty() {
        rt.bus.emit(Event::Notice {
            message: format!(
                "removed {} worktree(s) the interrupted run left half-made (they are made again): {}",
                repaired.worktrees.len(),
                list(&repaired.worktrees)
            ),
        });
    }
    Ok(())
}

/// Says which commands will judge the work, before any unit is built.
fn verifier_notice(rt: &Runtime, verifier: &Verifier) {
    rt.bus.emit(Event::Notice {
        message: verifier.describe_commands(),
    });
}

/// The integration worktree and its head: the one a crashed run left (a half-done merge undone), or
/// a new one (on the branch an earlier run left, or a new branch at the mission's base).
async fn open_integration(setup: &Setup) -> Result<(Worktree, String)> {
    let repo = &setup.repo;
    let path = setup.worktrees.join("integration");
    if let Some(worktree) = repo.open_worktree(&path).await? {
        if worktree.merge_in_progress().await? {
            worktree.abort_merge().await?;
        }
        let head = worktree.head().await?;
        worktree.reset_hard(&head).await?;
        return Ok((worktree, head));
    }
    let worktree = repo
        .add_worktree_on_branch(&path, &setup.integration_branch, &setup.base)
        .await?;
    let head = worktree.head().await?;
    Ok((worktree, head))
}

async fn run_rounds(
    mission: &Arc<Mission>,
    plan: Vec<UnitSpec>,
    integration: Worktree,
    integration_head: String,
    base: &str,
) -> Result<Ending> {
    let target = Arc::new(MergeTarget::integration(
        integration.clone(),
        mission_branch(&mission.id),
        integration_head,
    ));
    let replay = &mission.replay;
    let first_round = replay.round.max(1);
    let mut units = replay.plans.get(&first_round).cloned().unwrap_or(plan);
    let rounds = mission.config.rounds.max(first_round);
    for round in first_round..=rounds {
        let bus = &mission.rt.bus;
        if replay.plans.contains_key(&round) {
            for unit in &units {
                if let Some(record) = replay.units.get(&unit.id) {
                    mission.note_todo(unit, round, record.state, record.detail.clone());
                }
            }
        } else {
            units = crate::plan::order_for_sessions(mission.config.max_parallel, units);
            bus.emit(Event::PlanAccepted {
                round,
                units: units.clone(),
            });
            for unit in &units {
                mission.set_state(unit, round, UnitState::Queued, 0, None);
            }
        }
        bus.emit(Event::PhaseChanged {
            phase: Phase::Execution,
            round,
        });
        let outcomes = units::run_dag(mission.clone(), units.clone(), 0, target.clone(), round).await;
        // The units' merges moved the branch; stage 2, the master reviewer and the next round need
        // its files (one checkout for the whole wave).
        target.check_out().await?;
        if outcomes.iter().any(UnitOutcome::out_of_budget_stop) || mission.rt.budget_spent() {
            return Ok(budget_ending(&mission.rt, &mission.config));
        }
        if let Some(reason) = outcomes.iter().find_map(UnitOutcome::endpoint_stop) {
            return Ok(Ending {
                resumable: true,
                unverified: false,
                ..Ending::unsealed(format!(
                    "{reason}\nContinue with `orchestrator resume` once the endpoint answers."
                ))
            });
        }
        if mission.rt.cancel.is_cancelled() {
            return Ok(interrupted());
        }
        if outcomes.iter().any(|o| o.interrupted) {
            return Ok(interrupted_by_units(&outcomes));
        }
        // `verified`: the commit stage 2 verified and the master reviewer judged, when this run did.
        let (follow_up, verified) = match replay.rounds.get(&round) {
            Some((true, _)) => (None, None),
            Some((false, follow_up)) => (Some(follow_up.clone()), None),
            None => match round_result(mission, &integration, base, &outcomes, round).await? {
                RoundResult::Passed { verified } => (None, Some(verified)),
                RoundResult::FollowUp(units) => (Some(units), None),
                RoundResult::NothingChanged => {
                    return Ok(Ending::unsealed(nothing_changed_summary(&outcomes)))
                }
            },
        };
        let Some(follow_up) = follow_up else {
            if !replay.rounds.contains_key(&round) {
                bus.emit(Event::RoundFinished {
                    round,
                    passed: true,
                    follow_up: Vec::new(),
                });
            }
            let head = integration.head().await?;
            let unverified = !mission.verifier.has_commands();
            let mut summary = sealed_summary(&outcomes, round);
            if unverified {
                summary = format!(
                    "sealed without verification: no build, lint or test command ran on the work \
                     (--no-verify); only reviews judged it\n{summary}"
                );
            }
            return Ok(Ending {
                outcome: Outcome::Sealed,
                summary,
                result_commit: Some(sealed_commit(bus, verified, head)),
                resumable: false,
                unverified,
            });
        };
        if mission.rt.cancel.is_cancelled() {
            return Ok(interrupted());
        }
        if !replay.rounds.contains_key(&round) {
            bus.emit(Event::RoundFinished {
                round,
                passed: false,
                follow_up: follow_up.clone(),
            });
        }
        if round == rounds {
            return Ok(Ending::unsealed(unsealed_summary(rounds, &follow_up)));
        }
        units = replay.plans.get(&(round + 1)).cloned().unwrap_or(follow_up);
    }
    Ok(Ending::unsealed("no rounds were run".into()))
}

/// `None` when the round passed; otherwise the units of the next round.
/// How a round ended: passed stage 2 and the master review at the commit they saw, or work for the
/// next round.
enum RoundResult {
    Passed {
        verified: String,
    },
    FollowUp(Vec<UnitSpec>),
    /// Every unit passed, yet the integrated result is the base: the mission changed nothing.
    NothingChanged,
}

async fn round_result(
    mission: &Arc<Mission>,
    integration: &Worktree,
    base: &str,
    outcomes: &[UnitOutcome],
    round: u32,
) -> Result<RoundResult> {
    if outcomes.iter().all(|o| o.state == UnitState::Passed) {
        // Nothing for stage 2 or the master reviewer to judge, and nothing to hand over: a mission
        // whose units all claimed that no change was needed is not reported as done.
        if mission.repo.same_tree(&integration.head().await?, base).await? {
            return Ok(RoundResult::NothingChanged);
        }
        mission.rt.bus.emit(Event::PhaseChanged {
            phase: Phase::Integration,
            round,
        });
        integrate(mission, integration, base, outcomes, round).await
    } else {
        Ok(RoundResult::FollowUp(retry_units(outcomes, round + 1)))
    }
}

/// The commit a sealed mission hands over: exactly the one stage 2 verified and the master reviewer
/// judged. Anything committed on the integration branch after that was seen by no verification, so
/// it is left out, and the event log says so.
pub(super) fn sealed_commit(bus: &EventBus, verified: Option<String>, head: String) -> String {
    match verified {
        Some(verified) if verified != head => {
            bus.emit(Event::Notice {
                message: format!(
                    "the integration branch moved after stage 2 (to {}); only the verified {} is taken",
                    verify::short(&head),
                    verify::short(&verified)
                ),
            });
            verified
        }
        _ => head,
    }
}

/// A stop for a spent budget: unsealed (exit 1) but resumable with a larger one, saying what each
/// role used.
pub(super) fn budget_ending(rt: &Runtime, config: &Config) -> Ending {
    let used = rt.tokens_spent();
    let limit = config
        .budget_tokens
        .map(|l| format!(" of {l}"))
        .unwrap_or_default();
    let roles: Vec<String> = rt
        .bus
        .usage_by_role()
        .iter()
        .map(|(role, usage)| {
            let cap = config
                .role(*role)
                .budget_tokens
                .map(|l| format!(" (role budget {l})"))
                .unwrap_or_default();
            format!("  {role}: {} tokens{cap}", usage.total())
        })
        .collect();
    let summary = format!(
        "the token budget is spent: {used}{limit} tokens used. Continue with `orchestrator resume --budget-tokens N` \
         (or raise the role's budget_tokens in orchestrator.toml).\nBy role:\n{}",
        roles.join("\n")
    );
    Ending {
        resumable: true,
        unverified: false,
        ..Ending::unsealed(summary)
    }
}

/// Stage 2: the runtime's full build and tests on the integrated branch, then the master review.
/// `None` means the round passed; otherwise the units of the next round.
async fn integrate(
    mission: &Arc<Mission>,
    integration: &Worktree,
    base: &str,
    outcomes: &[UnitOutcome],
    round: u32,
) -> Result<RoundResult> {
    let bus = &mission.rt.bus;
    // What stage 2 tests and the master reviewer judges: the branch as it is now.
    let verified = integration.head().await?;
    let evidence = mission
        .verifier
        .verify(integration, &mission.rt.cancel)
        .await
        .map_err(EngineError::Other)?;
    for e in &evidence {
        bus.emit(Event::EvidenceRecorded {
            unit: None,
            evidence: e.clone(),
        });
    }
    if mission.rt.cancel.is_cancelled() {
        return Err(EngineError::Interrupted);
    }
    if !verify::all_passed(&evidence) {
        let unit = UnitSpec {
            id: format!("r{}-1", round + 1),
            title: "Make the integrated build and tests pass".into(),
            description: format!(
                "After merging every unit, the runtime's build and tests fail on the integrated result.\n\n{}\n\
                 Find the cause and fix it.",
                verify::describe(&evidence)
            ),
            depends_on: Vec::new(),
            files: Vec::new(),
            attempts: None,
        };
        return Ok(RoundResult::FollowUp(vec![unit]));
    }
    // A master review from before a restart counts only for the commit it judged.
    let known = mission.replay.master_reviews.get(&round).filter(|_| {
        mission
            .replay
            .master_reviewed_commits
            .get(&round)
            .is_none_or(|judged| *judged == verified)
    });
    let review = match known {
        Some(review) => review.clone(),
        None => {
            let review = roles::master_review(
                mission,
                integration,
                base,
                &built_list(outcomes),
                &evidence,
                round,
                None,
            )
            .await?;
            bus.emit(Event::ReviewFinished {
                unit: None,
                attempt: round,
                review: review.clone(),
                commit: Some(verified.clone()),
                reviewer: None,
            });
            review
        }
    };
    if review.verdict == orchestrator_protocol::Verdict::Fail {
        return Ok(RoundResult::FollowUp(follow_up_units(&review, round + 1)));
    }
    let whole = Whole {
        integration,
        base,
        units: &built_list(outcomes),
        evidence: &evidence,
        round,
        verified: &verified,
    };
    match specialists_judge_whole(mission, &whole).await? {
        Some(failed) => Ok(RoundResult::FollowUp(follow_up_units(&failed, round + 1))),
        None => Ok(RoundResult::Passed { verified }),
    }
}

/// What the master review and the `[review] extra_master` specialists judge in one round.
struct Whole<'a> {
    integration: &'a Worktree,
    base: &'a str,
    units: &'a str,
    evidence: &'a [orchestrator_protocol::Evidence],
    round: u32,
    verified: &'a str,
}

/// The `[review] extra_master` specialists, in order, after the master review passed: the first
/// fail is the round's follow-up work, as a failing master review's is. A verdict an earlier run
/// recorded for this round's commit is not asked again.
async fn specialists_judge_whole(
    mission: &Arc<Mission>,
    whole: &Whole<'_>,
) -> Result<Option<orchestrator_protocol::Review>> {
    for name in &mission.config.review_extra_master {
        let Some(specialist) = mission.config.specialists.get(name) else {
            continue; // every name was checked before the mission started
        };
        let known = mission
            .replay
            .master_specialist_reviews
            .get(&(whole.round, name.clone()))
            .filter(|(_, judged)| judged.as_deref().is_none_or(|c| c == whole.verified));
        let review = match known {
            Some((review, _)) => review.clone(),
            None => {
                let review = roles::master_review(
                    mission,
                    whole.integration,
                    whole.base,
                    whole.units,
                    whole.evidence,
                    whole.round,
                    Some(specialist),
                )
                .await?;
                mission.rt.bus.emit(Event::ReviewFinished {
                    unit: None,
                    attempt: whole.round,
                    review: review.clone(),
                    commit: Some(whole.verified.to_string()),
                    reviewer: Some(name.clone()),
                });
                review
            }
        };
        if review.verdict == orchestrator_protocol::Verdict::Fail {
            return Ok(Some(review));
        }
    }
    Ok(None)
}

fn follow_up_units(review: &orchestrator_protocol::Review, next_round: u32) -> Vec<UnitSpec> {
    let mut follow_up: Vec<UnitSpec> = review
        .issues
        .iter()
        .enumerate()
        .map(|(i, issue)| UnitSpec {
            id: format!("r{next_round}-{}", i + 1),
            title: issue.title.clone(),
            description: match &issue.file {
                Some(file) => format!("{}\n\n(File: {file})", issue.description),
                None => issue.description.clone(),
            },
            depends_on: Vec::new(),
            files: issue.file.iter().cloned().collect(),
            attempts: None,
        })
        .collect();
    if follow_up.is_empty() {
        follow_up.push(UnitSpec {
            id: format!("r{next_round}-1"),
            title: "Address the master review".into(),
            description: review.summary.clone(),
            depends_on: Vec::new(),
            files: Vec::new(),
            attempts: None,
        });
    }
    follow_up
}

/// The round's units as the master reviewer reads them: one line each, with state and summary.
fn built_list(outcomes: &[UnitOutcome]) -> String {
    let mut units = String::new();
    for o in outcomes {
        let _ = writeln!(
            units,
            "- {} `{}` ({}): {}",
            o.unit.id,
            o.unit.title,
            o.state,
            o.summary.trim()
        );
    }
    units
}

/// Units that failed or were skipped, again, under new ids; dependencies on merged units are dropped.
pub(super) fn retry_units(outcomes: &[UnitOutcome], next_round: u32) -> Vec<UnitSpec> {
    let retried: BTreeMap<&str, String> = outcomes
        .iter()
        .filter(|o| o.state != UnitState::Passed)
        .map(|o| (o.unit.id.as_str(), format!("{}-r{next_round}", o.unit.id)))
        .collect();
    outcomes
        .iter()
        .filter(|o| o.state != UnitState::Passed)
        .map(|o| UnitSpec {
            id: retried[o.unit.id.as_str()].clone(),
            title: o.unit.title.clone(),
            description: match &o.findings {
                // Said plainly, because a retry that runs the tests on its fresh worktree sees them
                // pass and, told of errors it cannot find, answered "no change needed" (field run).
                Some(findings) => format!(
                    "{}{PREVIOUS_ATTEMPT}{}\nYour worktree starts again from the \
                     integration branch, without that attempt's changes: the errors below were in its \
                     code, not in the files you have now, and the unit still needs doing.\n\
                     What that attempt was last told:\n{findings}",
                    own_description(&o.unit.description),
                    o.reason.as_deref().unwrap_or("no reason recorded")
                ),
                None => format!(
                    "{}{PREVIOUS_ATTEMPT}{}",
                    own_description(&o.unit.description),
                    o.reason.as_deref().unwrap_or("no reason recorded")
                ),
            },
            depends_on: o
                .unit
                .depends_on
                .iter()
                .filter_map(|d| retried.get(d.as_str()).cloned())
                .collect(),
            files: o.unit.files.clone(),
            attempts: o.unit.attempts,
        })
        .collect()
}

fn sealed_summary(outcomes: &[UnitOutcome], round: u32) -> String {
    format!(
        "sealed in round {round}: {} unit(s) of the last round passed review and the master review",
        outcomes.len()
    )
}

/// Why a mission whose every unit passed still ends unsealed: the result is its base.
fn nothing_changed_summary(outcomes: &[UnitOutcome]) -> String {
    let claims: Vec<String> = outcomes
        .iter()
        .map(|o| {
            let claim = o.summary.lines().next().unwrap_or_default().trim();
            format!(
                "  - {} ({}): {}",
                o.unit.id,
                o.unit.title,
                crate::prompts::cut(claim, 200)
            )
        })
        .collect();
    format!(
        "not sealed: nothing changed. Every unit ended without changing a file, so the result is the \
         mission's base commit and there is nothing to apply. What the workers said:\n{}\n\
         If the objective is already met, that is the answer. If it is not, the models did not do the \
         work: run it again with a stronger worker model (`[roles.worker] model = \"…\"` in \
         orchestrator.toml).",
        claims.join("\n")
    )
}

fn unsealed_summary(rounds: u32, missing: &[UnitSpec]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|u| format!("  - {}: {}", u.id, u.title))
        .collect();
    format!(
        "not sealed after {rounds} round(s); still missing:\n{}",
        list.join("\n")
    )
}

/// A round whose units stopped without being judged (not a cancel): the mission stops, resumable,
/// and says which units stopped and why (a worker's give-backs, a remote out of reach), so the
/// person knows what to fix before `resume`.
fn interrupted_by_units(outcomes: &[UnitOutcome]) -> super::run::Ending {
    let why: Vec<String> = outcomes
        .iter()
        .filter(|o| o.interrupted)
        .filter_map(|o| {
            let reason = o.reason.as_deref().filter(|r| *r != "interrupted")?;
            Some(format!("{}: {}", o.unit.id, crate::prompts::cut(reason, 400)))
        })
        .take(5)
        .collect();
    let mut ending = interrupted();
    if !why.is_empty() {
        ending.summary = format!(
            "the mission stopped, units unfinished:\n- {}\nFix that, then continue it with `orchestrator resume`",
            why.join("\n- ")
        );
    }
    ending
}
