//! The sessions with a single job: scouts, planner, reviewers. Each builds its first message from
//! the mission's facts and reads its result back through a typed hook.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use orchestrator_git::Worktree;
use orchestrator_model::ToolSpec;
use orchestrator_protocol::{Event, Evidence, Review, ReviewIssue, Role, UnitSpec, Verdict};
use orchestrator_tools::Toolbox;
use serde_json::json;

use crate::config::{Config, Specialist};
use crate::error::{EngineError, Result};
use crate::plan::parse_plan;
use crate::prescan::PreScan;
use crate::prompts::cut;
use crate::session::{
    error_output, ok_output, HookResult, NoHooks, Runtime, Session, SessionEnd, SessionHooks, SessionSpec,
    Slot,
};
use crate::shared::{toolbox, Mission};
use crate::verify;

/// Diffs longer than this are cut in a reviewer's first message; the reviewer can read files itself.
const DIFF_CHARS: usize = 60_000;

const SCOUT_FOCUS: [(&str, &str); 4] = [
    (
        "structure",
        "the layout: main modules, entry points, where each kind of code lives",
    ),
    (
        "tech stack",
        "languages, frameworks, key dependencies and their versions, coding conventions",
    ),
    (
        "docs",
        "what the README and docs say about purpose, usage, architecture and contribution rules",
    ),
    (
        "infra",
        "how to build, test, lint and run it; CI configuration; generated or vendored code to leave alone",
    ),
];

/// Phase 0: four read-only scouts at once; their reports and the pre-scan become the mission context.
/// How many scouts a repository of `files` files gets when `[limits] scouts` is not set: four
/// scouts reading a three-file repository spent 37k tokens repeating each other.
fn scouts_for(files: usize) -> usize {
    match files {
        0..=30 => 1,
        31..=200 => 2,
        _ => SCOUT_FOCUS.len(),
    }
}

/// The scouts' focus areas, merged into `count` scouts (0: the pre-scan alone).
fn scout_focus(count: usize) -> Vec<(String, String)> {
    let count = count.min(SCOUT_FOCUS.len());
    if count == 0 {
        return Vec::new();
    }
    let per = SCOUT_FOCUS.len().div_ceil(count);
    SCOUT_FOCUS
        .chunks(per)
        .map(|group| {
            let names: Vec<&str> = group.iter().map(|(name, _)| *name).collect();
            let focus: Vec<&str> = group.iter().map(|(_, focus)| *focus).collect();
            (names.join(" + "), focus.join("; "))
        })
        .collect()
}

pub async fn discover(
    rt: &Runtime,
    config: &Config,
    objective: &str,
    scan: &PreScan,
    tools: Arc<Toolbox>,
) -> String {
    let prescan = scan.to_markdown();
    let focus = scout_focus(config.scouts.unwrap_or_else(|| scouts_for(scan.file_count)));
    let scouts = focus.into_iter().map(|(name, focus)| {
        let first = format!(
            "Focus: {name} — {focus}.\n\nThe objective the team will work on (for what to look at; do not start it):\n{objective}\n\n\
             Pre-scan of the repository:\n{prescan}"
        );
        let tools = tools.clone();
        async move {
            let Some(mut slot) = Slot::acquire(rt).await else { return (name, String::from("(cancelled)")) };
            let spec = SessionSpec::new(format!("scout:{name}"), Role::Scout, config.role(Role::Scout).clone(), tools, first);
            let mut session = Session::new(rt, spec);
            let report = match session.run(rt, &NoHooks, &mut slot).await {
                SessionEnd::Answered(text) if !text.trim().is_empty() => text,
                SessionEnd::Answered(_) => "(the scout returned an empty report)".into(),
                other => format!("(no report: {other})"),
            };
            (name, report)
        }
    });
    let reports = futures::future::join_all(scouts).await;
    let mut context = format!("## Pre-scan\n{prescan}\n");
    for (name, report) in reports {
        let _ = write!(context, "\n## Scout report: {name}\n{}\n", report.trim());
    }
    context
}

fn submit_plan_spec() -> ToolSpec {
    ToolSpec {
        name: "submit_plan".into(),
        description: "Submit the whole plan: units of work with ids and dependencies (a DAG). Call once."
            .into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "tasks": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            // The pattern is what the plan check accepts; grammar servers hold it.
                            "id": {"type": "string", "description": "short id: letters, digits, - and _",
                                   "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"},
                            "title": {"type": "string", "maxLength": 200},
                            "description": {"type": "string", "description": "everything a worker needs to build it alone"},
                            "depends_on": {"type": "array", "items": {"type": "string"}, "description": "ids this unit needs first",
                                           "maxItems": 50},
                            "files": {"type": "array", "items": {"type": "string"}},
                            "attempts": {"type": "integer", "minimum": 1, "maximum": crate::plan::MAX_CANDIDATES,
                                         "description": "optional: more workers to build this risky unit side by side, the best passing one kept (never fewer than the mission's own setting)"}
                        },
                        "required": ["id", "title", "description", "depends_on"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["tasks"],
            "additionalProperties": false
        }),
    }
}

/// What a review must show besides its verdict, and where the runtime confirms it.
enum Proof {
    /// Nothing more (the master review).
    Verdict,
    /// A unit that changed no file: a pass lists in `checked` lines read in this worktree (`checked.rs`).
    Checked(std::path::PathBuf),
    /// A unit that changed files: each issue of a fail quotes its line (`grounded.rs`).
    Quoted(crate::grounded::Grounds),
}

/// `submit_review`; for a unit that changed nothing it also takes `checked`, what the reviewer read
/// (see `checked.rs`); for one that changed files each issue takes `file` and `quote` (`grounded.rs`).
fn submit_review_spec(proof: &Proof) -> ToolSpec {
    let mut spec = ToolSpec {
        name: "submit_review".into(),
        description: "Submit your verdict. On fail, list each problem as an issue someone can fix alone."
            .into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "verdict": {"type": "string", "enum": ["pass", "fail"]},
                "summary": {"type": "string"},
                "issues": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "title": {"type": "string"},
                            "description": {"type": "string"},
                            "file": {"type": "string"}
                        },
                        "required": ["title", "description"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["verdict", "summary"],
            "additionalProperties": false
        }),
    };
    match proof {
        Proof::Verdict => {}
        Proof::Checked(_) => {
            spec.description.push_str(
                " This unit changed no file: to pass it, list in `checked` the files you read that show it is \
                 already done, each with one line copied exactly from it.",
            );
            spec.parameters["properties"]["checked"] = crate::checked::checked_property();
        }
        Proof::Quoted(_) => {
            spec.description.push_str(
                " Each issue names its `file` and quotes in `quote` one line copied exactly from it: the line \
                 the issue is about, or where the missing thing belongs.",
            );
            spec.parameters["properties"]["issues"] = crate::grounded::issues_property();
        }
    }
    spec
}

struct PlanHook {
    rt_bus: crate::events::EventBus,
    max_attempts: u32,
    /// `limits.max_units`: a plan larger than the mission may hold is sent back.
    max_units: usize,
    attempts: Mutex<u32>,
    plan: Mutex<Option<Vec<UnitSpec>>>,
    /// What the objective names as code (`plan::named_in_objective`): a plan that leaves one of them
    /// out of every task is sent back once, then taken.
    objective_names: Vec<String>,
    asked_for_names: std::sync::atomic::AtomicBool,
}

impl PlanHook {
    /// A valid plan whose tasks leave out something the objective names, the first time only.
    fn leaves_out(&self, units: &[UnitSpec]) -> Option<String> {
        let missing = crate::plan::uncovered(&self.objective_names, units);
        if missing.is_empty()
            || self
                .asked_for_names
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        let names: Vec<String> = missing.iter().map(|n| format!("`{n}`")).collect();
        Some(format!(
            "the objective names {}, which no task mentions: say in the title or description of the task \
             that does it what it builds, with those names",
            names.join(", ")
        ))
    }
}

#[async_trait]
impl SessionHooks for PlanHook {
    async fn call(&self, _name: &str, arguments: serde_json::Value, _slot: &mut Slot) -> HookResult {
        let parsed = parse_plan(arguments).and_then(|units| match units.len() {
            n if n > self.max_units => Err(vec![format!(
                "the plan has {n} units; this mission may hold {} in all (limits.max_units), spawned \
                 sub-units and follow-ups included. Plan fewer, larger units.",
                self.max_units
            )]),
            _ => match self.leaves_out(&units) {
                Some(problem) => Err(vec![problem]),
                None => Ok(units),
            },
        });
        match parsed {
            Ok(units) => {
                let count = units.len();
                *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = Some(units);
                HookResult::Finish(ok_output(format!("Plan accepted: {count} unit(s).")))
            }
            Err(problems) => {
                let attempt = {
                    let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
                    *attempts += 1;
                    *attempts
                };
                self.rt_bus.emit(Event::PlanRejected {
                    attempt,
                    problems: problems.clone(),
                });
                let text = format!("The plan was rejected:\n- {}", problems.join("\n- "));
                if attempt >= self.max_attempts {
                    HookResult::Finish(error_output(format!("{text}\nNo attempts are left.")))
                } else {
                    HookResult::Continue(error_output(format!(
                        "{text}\nFix these and call submit_plan again."
                    )))
                }
            }
        }
    }
}

/// A plan a person rejected, and what they said: the next planner session starts from it.
pub struct Revision<'a> {
    /// The attempt the new plan will be (2 after the first rejection).
    pub attempt: u32,
    pub rejected: &'a [UnitSpec],
    pub feedback: &'a str,
    /// The `after_plan` hook's command when it refused the plan; `None`: the person approving plans did.
    pub by_hook: Option<&'a str>,
}

/// The planner's first message after a rejection: the rejected plan and the feedback, so the new
/// plan answers them.
fn revision_request(revision: &Revision<'_>) -> String {
    if let Some(command) = revision.by_hook {
        return hook_revision_request(revision, command);
    }
    let mut text = String::from(
        "# Your previous plan was rejected
The person who approves plans rejected this plan:
",
    );
    for unit in revision.rejected {
        let after = if unit.depends_on.is_empty() {
            String::new()
        } else {
            format!(" (after {})", unit.depends_on.join(", "))
        };
        let _ = writeln!(text, "- {}: {}{after}", unit.id, unit.title);
    }
    let feedback = match revision.feedback.trim() {
        "" => "(no feedback given)",
        given => given,
    };
    let _ = write!(
        text,
        "\nTheir feedback:\n{feedback}\n\nPlan the work again so that it answers the feedback, then call submit_plan."
    );
    text
}

/// The planner's first message after the `after_plan` hook refused its plan: the plan and the
/// hook's output.
fn hook_revision_request(revision: &Revision<'_>, command: &str) -> String {
    let mut text = format!(
        "# Your previous plan was refused\nThe after_plan hook `{command}` (a check the user configured) refused this plan:\n"
    );
    for unit in revision.rejected {
        let _ = writeln!(text, "- {}: {}", unit.id, unit.title);
    }
    let _ = write!(
        text,
        "\n{}\n\nPlan the work again so that it passes that check, then call submit_plan.",
        revision.feedback.trim()
    );
    text
}

/// The planner session. Returns the validated plan, or why there is none. With a `revision`, a new
/// session (its own transcript) plans again after a person rejected the previous plan.
pub async fn plan(
    rt: &Runtime,
    config: &Config,
    objective: &str,
    context: &str,
    tools: Arc<Toolbox>,
    revision: Option<Revision<'_>>,
) -> std::result::Result<Vec<UnitSpec>, String> {
    let hook = PlanHook {
        rt_bus: rt.bus.clone(),
        max_attempts: config.plan_attempts,
        max_units: config.max_units,
        attempts: Mutex::new(0),
        plan: Mutex::new(None),
        objective_names: crate::plan::named_in_objective(objective),
        asked_for_names: std::sync::atomic::AtomicBool::new(false),
    };
    let (key, first) = match &revision {
        None => (
            "planner".to_string(),
            format!(
                "# Objective\n{objective}\n\n# Mission context\n{context}\n\nPlan the work, then call submit_plan."
            ),
        ),
        Some(revision) => (
            match revision.by_hook {
                Some(_) => format!("planner-hook-{}", revision.attempt),
                None => format!("planner-{}", revision.attempt),
            },
            format!(
                "# Objective\n{objective}\n\n# Mission context\n{context}\n\n{}",
                revision_request(revision)
            ),
        ),
    };
    let Some(mut slot) = Slot::acquire(rt).await else {
        return Err("the mission was interrupted".into());
    };
    let spec = SessionSpec::new(
        key,
        Role::Planner,
        config.role(Role::Planner).clone(),
        tools,
        first,
    )
    .extra_tools(vec![submit_plan_spec()]);
    let mut session = Session::new(rt, spec);
    let end = session.run(rt, &hook, &mut slot).await;
    if let Some(plan) = hook.plan.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Ok(plan);
    }
    Err(match end {
        SessionEnd::Finished => format!("the planner's plan was rejected {} time(s)", config.plan_attempts),
        other => format!("the planner produced no plan ({other})"),
    })
}

struct ReviewHook {
    review: Mutex<Option<Review>>,
    proof: Proof,
    /// Whether a failing review without issues was already sent back once (it is then taken).
    asked_for_issues: std::sync::atomic::AtomicBool,
    /// Whether a failing review with unconfirmed quotes was already sent back once (it is then taken,
    /// those issues marked). With `asked_for_issues`, a review is sent back twice at most.
    asked_for_quotes: std::sync::atomic::AtomicBool,
    /// Passes of a unit that changed no file refused for not showing what was read. Past
    /// [`MAX_UNPROVEN_PASSES`] the next one is recorded as a fail, so a reviewer that cannot show the
    /// work is there does not spend its turns on it, and the unit does not pass.
    unproven_passes: std::sync::atomic::AtomicU32,
}

/// Unproven passes of an empty diff sent back before the next is recorded as a fail.
const MAX_UNPROVEN_PASSES: u32 = 2;

impl ReviewHook {
    fn new(proof: Proof) -> Self {
        ReviewHook {
            review: Mutex::new(None),
            proof,
            asked_for_issues: std::sync::atomic::AtomicBool::new(false),
            asked_for_quotes: std::sync::atomic::AtomicBool::new(false),
            unproven_passes: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// A pass of a unit that changed no file whose `checked` was not confirmed: sent back, at most
    /// [`MAX_UNPROVEN_PASSES`] times; then the review is recorded as a fail that says why.
    fn unproven_pass(&self, review: &Review, problems: &[String]) -> Result<Review, HookResult> {
        let refused = self
            .unproven_passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if refused < MAX_UNPROVEN_PASSES {
            return Err(HookResult::Continue(error_output(format!(
                "A pass for a unit that changed no file must show what you read: `checked`: \
                 [{{\"file\": \"path/of/a/file\", \"quote\": \"one line copied exactly from it\"}}], \
                 files that show the unit is already done. Not accepted:\n- {}\nRead the files, then \
                 call submit_review again (or fail the unit if it is not done).",
                problems.join("\n- ")
            ))));
        }
        Ok(Review {
            verdict: Verdict::Fail,
            summary: format!(
                "Recorded as a fail by the orchestrator: the reviewer passed this unit {} times without showing \
                 that the work is already there (the unit changed no file). Last problems: {}. The \
                 reviewer's summary: {}",
                refused + 1,
                crate::prompts::cut(&problems.join("; "), 400),
                crate::prompts::cut(review.summary.trim(), 300)
            ),
            issues: vec![ReviewIssue {
                title: "No change was made".into(),
                description: "The unit changed no file, and its review could not point at the lines that \
                              already do what it asks. Make the change the unit asks for."
                    .into(),
                file: None,
            }],
        })
    }

    /// A review past the rules about issues: checked against what its `proof` asks, then recorded.
    fn settle(
        &self,
        mut review: Review,
        checked: &[crate::checked::Checked],
        quotes: &[Option<String>],
    ) -> HookResult {
        match (&self.proof, review.verdict) {
            (Proof::Checked(root), Verdict::Pass) => match crate::checked::confirm(root, checked) {
                Ok(()) => review.summary = crate::checked::summary_with(&review.summary, checked),
                Err(problems) => match self.unproven_pass(&review, &problems) {
                    Ok(fail) => review = fail,
                    Err(send_back) => return send_back,
                },
            },
            (Proof::Quoted(grounds), Verdict::Fail) if !review.issues.is_empty() => {
                let groundings = grounds.check(&review.issues, quotes);
                if groundings.iter().any(Result::is_err)
                    && !self
                        .asked_for_quotes
                        .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    let text = crate::grounded::send_back(&review.issues, &groundings);
                    return HookResult::Continue(error_output(text));
                }
                review.summary = crate::grounded::summary_after_cut(&review.summary, review.issues.len());
                review.issues = crate::grounded::annotated(review.issues, &groundings);
            }
            _ => {}
        }
        *self.review.lock().unwrap_or_else(|p| p.into_inner()) = Some(review);
        HookResult::Finish(ok_output("Review recorded.".into()))
    }
}

#[async_trait]
impl SessionHooks for ReviewHook {
    /// Its send-backs are bounded ("once, then taken"): a copy of a refused review counts.
    fn judges_repeats(&self) -> bool {
        true
    }

    async fn call(&self, _name: &str, mut arguments: serde_json::Value, _slot: &mut Slot) -> HookResult {
        let checked = match crate::checked::take_checked(&mut arguments) {
            Ok(checked) => checked,
            Err(e) => return HookResult::Continue(error_output(format!("{e}. Call submit_review again."))),
        };
        let quotes = crate::grounded::quotes_of(&arguments);
        match serde_json::from_value::<Review>(arguments) {
            Ok(review)
                if review.verdict == Verdict::Fail
                    && review.issues.is_empty()
                    && review.summary.trim().is_empty() =>
            {
                HookResult::Continue(error_output(
                    "A failing review needs a summary or issues that say what to fix.".into(),
                ))
            }
            // A fail with a summary alone gives the worker nothing to act on, and small models write
            // one that reads as a pass ("already contains mul and a test; no changes are needed").
            // Asked once for issues; a second such review is taken as it is, so this cannot loop.
            Ok(review)
                if review.verdict == Verdict::Fail
                    && review.issues.is_empty()
                    && !self
                        .asked_for_issues
                        .swap(true, std::sync::atomic::Ordering::Relaxed) =>
            {
                HookResult::Continue(error_output(format!(
                    "Not recorded: a failing review lists the issues to fix, each with a `title`, a \
                     `description` of what to change and the `file`; the worker acts on them. Your summary \
                     was: \"{}\". If nothing needs to change, the verdict is pass. Call submit_review again.",
                    crate::prompts::cut(review.summary.trim(), 300)
                )))
            }
            Ok(review) => self.settle(review, &checked, &quotes),
            Err(e) => HookResult::Continue(error_output(format!(
                "The review does not match the schema ({e}). Call submit_review again."
            ))),
        }
    }
}

/// Runs a reviewer-like session to its verdict. A session that ends without one gives a failing review
/// that says so, never a silent pass.
async fn run_review(
    rt: &Runtime,
    spec: SessionSpec,
    slot: &mut Slot,
    proof: Proof,
) -> std::result::Result<Review, SessionEnd> {
    let submit = submit_review_spec(&proof);
    let hook = ReviewHook::new(proof);
    let mut session = Session::new(rt, spec.extra_tools(vec![submit]));
    let end = session.run(rt, &hook, slot).await;
    if let Some(review) = hook.review.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return Ok(review);
    }
    match end {
        SessionEnd::TurnLimit | SessionEnd::Answered(_) | SessionEnd::Finished => Ok(Review {
            verdict: Verdict::Fail,
            summary: "the reviewer ended without a verdict".into(),
            issues: Vec::new(),
        }),
        other => Err(other),
    }
}

/// A reviewer session's spec: the built-in `role`'s, or `specialist`'s (its prompt, settings, tools
/// and a transcript key of its own) when one judges.
fn reviewer_spec(
    mission: &Mission,
    role: Role,
    specialist: Option<&Specialist>,
    key: String,
    root: &std::path::Path,
    first: String,
) -> Result<SessionSpec> {
    let (key, settings) = match specialist {
        Some(s) => (format!("specialist:{}:{key}", s.name), s.settings.clone()),
        None => (key, mission.config.role(role).clone()),
    };
    let tools = crate::shared::toolbox_limited(root, role, settings.tools.clone(), &mission.config)?;
    let spec = SessionSpec::new(key, role, settings, Arc::new(tools), first);
    Ok(match specialist {
        Some(s) => spec.specialist(&s.name),
        None => spec,
    })
}

/// Stage 1 review of one unit, with the runtime's evidence. Its tools wait for `tools_ready`.
/// `specialist`: one of `[review] extra` judges instead of the unit's reviewer.
#[allow(clippy::too_many_arguments)]
pub async fn review_unit(
    mission: &Mission,
    unit: &UnitSpec,
    worktree: &Worktree,
    base: &str,
    evidence: &[Evidence],
    attempt: u32,
    slot: &mut Slot,
    tools_ready: Option<crate::session::ToolsReady>,
    specialist: Option<&Specialist>,
) -> std::result::Result<Review, SessionEnd> {
    let diff = worktree
        .diff_since(base)
        .await
        .unwrap_or_else(|e| format!("(diff unavailable: {e})"));
    // Called out, not left as a blank section a reviewer may read past.
    let empty = diff.trim().is_empty();
    let diff = if empty {
        "(EMPTY: this unit changed no file. Its worker answered that no change is needed. Pass only if \
         the unit truly needs none — read the files yourself, and list in `checked` the lines that show it \
         is already done.)"
            .to_string()
    } else {
        diff
    };
    let missing = if empty {
        String::new()
    } else {
        let missing = crate::hints::functions_unit_lacks(unit, worktree.path()).await;
        runtime_checks_note(unit, &missing, &diff, "this worktree")
    };
    let first = format!(
        "# Objective of the mission\n{}\n\n# The unit under review: {} — {}\n{}\n\n# Evidence (run by the runtime)\n{}\n\n# Diff\n{}{}{missing}",
        mission.objective,
        unit.id,
        unit.title,
        unit.description,
        verify::describe(evidence),
        cut(&diff, DIFF_CHARS),
        planned_files_note(&unit.files, &diff)
    );
    let key = format!("reviewer:{}:{attempt}", unit.id);
    let spec = reviewer_spec(mission, Role::Reviewer, specialist, key, worktree.path(), first)
        .map_err(|e| SessionEnd::ModelFailed(e.to_string()))?
        .unit(&unit.id)
        .tools_ready(tools_ready);
    let root = worktree.path().to_path_buf();
    let proof = if empty {
        Proof::Checked(root)
    } else {
        Proof::Quoted(crate::grounded::Grounds { root, diff })
    };
    run_review(&mission.rt, spec, slot, proof).await
}

/// Said plainly to a reviewer when the plan named the files a unit should change and its diff
/// changes none of them: the 1.5B's worker wrote `calc_mul/calc.py` instead of changing `calc.py`,
/// and its reviewer and the master reviewer passed the copy nothing used. Empty otherwise.
fn planned_files_note(planned: &[String], diff: &str) -> String {
    let changed = changed_paths(diff);
    let normal = |path: &str| path.trim().trim_start_matches("./").to_string();
    let planned: Vec<String> = planned
        .iter()
        .map(|p| normal(p))
        .filter(|p| !p.is_empty())
        .collect();
    if planned.is_empty() || changed.is_empty() || changed.iter().any(|c| planned.contains(c)) {
        return String::new();
    }
    let quoted = |paths: &[String]| {
        paths
            .iter()
            .take(12)
            .map(|p| format!("`{p}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "\n\n# Planned files\nThe plan expected this unit to change {}; the diff changes none of them, only {}. \
         Pass only if the work is where the unit needs it: a new file beside or below the one that should have \
         changed leaves everything that uses the original as it was.",
        quoted(&planned),
        quoted(&changed)
    )
}

/// What the runtime established about a change, said to its reviewer; empty when nothing is amiss.
/// - Functions the unit names by a call (`mul(a, b)`) that the tree defines nowhere after it
///   (`missing`): the field's 1.5B answered "mul(a, b) function" with a new file holding
///   `def test_mul(a, b)`, and the comparing reviewer kept it for its "best summary".
/// - A unit that asks for a test whose `diff` adds no test definition: the 1.5B answered "Add a test
///   for the `mul` function" with a `def mul(self, a, b)` method in the test class.
fn runtime_checks_note(unit: &UnitSpec, missing: &[String], diff: &str, whose: &str) -> String {
    let mut facts = Vec::new();
    if !missing.is_empty() {
        let names: Vec<String> = missing.iter().map(|name| format!("`{name}`")).collect();
        facts.push(format!(
            "The unit names {} by a call, and no file of {whose} defines it. Pass only if the unit \
             truly needs no such definition.",
            names.join(", ")
        ));
    }
    let asked = crate::plan::what_unit_asks(unit);
    if crate::hints::asks_for_a_test(&asked) && crate::test_count::test_definitions_added_anywhere(diff) == 0
    {
        facts.push(format!(
            "The unit asks for a test, and the diff of {whose} adds no test definition (no `def test_…`, \
             `func Test…`, `it(…)` or `test(…)`). Pass only if the unit truly needs none."
        ));
    }
    if facts.is_empty() {
        return String::new();
    }
    format!("\n\n# Checked by the runtime\n{}", facts.join("\n"))
}

/// The paths a unified diff changes (new names, and the old name of a deleted file).
fn changed_paths(diff: &str) -> Vec<String> {
    let mut paths: Vec<String> = Vec::new();
    let mut old: Option<&str> = None;
    for line in diff.lines() {
        if let Some(path) = line.strip_prefix("--- a/") {
            old = Some(path);
        } else if let Some(path) = line.strip_prefix("+++ ") {
            let path = match path.strip_prefix("b/") {
                Some(new) => Some(new),
                None if path == "/dev/null" => old,
                None => None,
            };
            if let Some(path) = path.filter(|p| !paths.iter().any(|seen| seen == p)) {
                paths.push(path.to_string());
            }
            old = None;
        }
    }
    paths
}

/// Best of N: one candidate that passed verification, as the comparing reviewer is shown it.
pub struct CandidateView {
    pub number: u32,
    /// Its worker's final answer.
    pub summary: String,
    pub diff: String,
    pub evidence: Vec<Evidence>,
}

/// The comparing reviewer's choice: the candidate kept, its review, and why it was kept.
#[derive(Debug, Clone)]
pub struct Pick {
    pub candidate: u32,
    pub review: Review,
    pub reasons: String,
    /// No valid pick came from the reviewer; the runtime's rule chose.
    pub by_runtime: bool,
}

/// `submit_review` for comparing candidates: the review of the one kept, and `pick`, its number.
fn submit_pick_spec(passing: &[u32]) -> ToolSpec {
    let mut spec = submit_review_spec(&Proof::Verdict);
    spec.description = "Keep one candidate: `pick` its number and say in `summary` why it is better \
                        than the others; `verdict` and `issues` judge the candidate you keep. Each issue \
                        names its `file` in that candidate and quotes in `quote` one line copied exactly \
                        from it: the line the issue is about, or where the missing thing belongs."
        .into();
    spec.parameters["properties"]["issues"] = crate::grounded::issues_property();
    spec.parameters["properties"]["pick"] = json!({
        "type": "integer", "enum": passing,
        "description": "the number of the candidate to keep (one that passed verification)"
    });
    spec.parameters["required"] = json!(["pick", "verdict", "summary"]);
    spec
}

/// Takes a comparing reviewer's `submit_review`: a pick of a candidate that does not exist or did
/// not pass verification is sent back once with the valid numbers; a second one is recorded without
/// a pick, and the runtime chooses (see [`compare_candidates`]).
struct PickHook {
    passing: Vec<u32>,
    failed: Vec<u32>,
    /// The functions the unit names that each changed candidate's tree does not define.
    missing: Vec<(u32, Vec<String>)>,
    /// Where each changed candidate's failing issues are confirmed: its tree and its diff.
    grounds: Vec<(u32, crate::grounded::Grounds)>,
    /// Whether a fail with unconfirmed issues was sent back already (once, as for a unit review).
    asked_for_quotes: std::sync::atomic::AtomicBool,
    asked_again: std::sync::atomic::AtomicBool,
    /// The pick (`None`: no valid one) and the review.
    result: Mutex<Option<(Option<u32>, Review)>>,
}

impl PickHook {
    fn why_not(&self, pick: Option<&serde_json::Value>) -> Option<String> {
        let number = pick.and_then(serde_json::Value::as_u64);
        match (pick, number) {
            (_, Some(n)) if self.passing.iter().any(|p| u64::from(*p) == n) => None,
            (None, _) => Some("no `pick` was given (the number of the candidate to keep)".into()),
            (Some(_), Some(n)) if self.failed.iter().any(|f| u64::from(*f) == n) => {
                Some(format!("candidate {n} failed verification and cannot be kept"))
            }
            (Some(_), Some(n)) => Some(format!("there is no candidate {n}")),
            (Some(other), None) => Some(format!(
                "`pick` must be a candidate's number, not {}",
                cut(&other.to_string(), 60)
            )),
        }
    }

    /// Why a pick of `kept` is sent back once: it lacks a function the unit names that another
    /// passing candidate defines. Whatever the verdict: a failed pick's worker goes on from its
    /// own tree, so keeping less costs an attempt too (the field's comparing reviewers kept a
    /// candidate without `mul` for its "best summary", and failed one with `mul` only in the test
    /// file over one with it in calc.py, for a README that no candidate had).
    fn lacks_what_another_has(&self, kept: u32) -> Option<String> {
        let lacking = self
            .missing
            .iter()
            .find(|(number, names)| *number == kept && !names.is_empty())?;
        let whole: Vec<String> = self
            .missing
            .iter()
            .filter(|(number, names)| names.is_empty() && self.passing.contains(number))
            .map(|(number, _)| number.to_string())
            .collect();
        if whole.is_empty() {
            return None;
        }
        let names: Vec<String> = lacking.1.iter().map(|n| format!("`{n}`")).collect();
        Some(format!(
            "candidate {kept} defines no {}, which the unit asks for, and candidate(s) {} do",
            names.join(", "),
            whole.join(", ")
        ))
    }

    /// A failing verdict's issues checked against the kept candidate's tree and diff, as a unit
    /// review's are (`grounded.rs`): unconfirmed ones send the review back once, then are marked.
    /// The field's comparing reviewer failed the kept candidate for "README.md does not exist" after
    /// reading `1/README.md`, and its worker's next attempt wrote a README.
    fn grounded(&self, kept: u32, mut review: Review, quotes: &[Option<String>]) -> Result<Review, String> {
        if review.verdict != Verdict::Fail || review.issues.is_empty() {
            return Ok(review);
        }
        let Some((_, grounds)) = self.grounds.iter().find(|(number, _)| *number == kept) else {
            return Ok(review);
        };
        // Paths as the comparison shows them (`3/calc.py`) are the kept candidate's own.
        let prefix = format!("{kept}/");
        for issue in &mut review.issues {
            if let Some(file) = issue.file.as_mut() {
                if let Some(own) = file.trim().strip_prefix(&prefix) {
                    *file = own.to_string();
                }
            }
        }
        let groundings = grounds.check(&review.issues, quotes);
        if groundings.iter().any(Result::is_err)
            && !self
                .asked_for_quotes
                .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return Err(format!(
                "{} (Files of candidate {kept}, the one you keep: `calc.py` or `{kept}/calc.py` alike.)",
                crate::grounded::send_back(&review.issues, &groundings)
            ));
        }
        review.summary = crate::grounded::summary_after_cut(&review.summary, review.issues.len());
        review.issues = crate::grounded::annotated(review.issues, &groundings);
        Ok(review)
    }

    fn passing_list(&self) -> String {
        let numbers: Vec<String> = self.passing.iter().map(u32::to_string).collect();
        numbers.join(", ")
    }
}

#[async_trait]
impl SessionHooks for PickHook {
    async fn call(&self, _name: &str, mut arguments: serde_json::Value, _slot: &mut Slot) -> HookResult {
        let pick = arguments.as_object_mut().and_then(|o| o.remove("pick"));
        let quotes = crate::grounded::quotes_of(&arguments);
        let review = match serde_json::from_value::<Review>(arguments) {
            Ok(review) => review,
            Err(e) => {
                return HookResult::Continue(error_output(format!(
                    "The review does not match the schema ({e}). Call submit_review again."
                )))
            }
        };
        let why_not = self.why_not(pick.as_ref());
        let lacking = pick
            .as_ref()
            .and_then(serde_json::Value::as_u64)
            .and_then(|kept| u32::try_from(kept).ok())
            .filter(|_| why_not.is_none())
            .and_then(|kept| self.lacks_what_another_has(kept));
        if let Some(lacking) = lacking {
            // Once; a reviewer that keeps it again is taken at its word.
            if !self.asked_again.swap(true, std::sync::atomic::Ordering::Relaxed) {
                return HookResult::Continue(error_output(format!(
                    "Not recorded: {lacking}. Compare them again, then call submit_review: keep \
                     another, or keep this one and say in `summary` why the unit needs no such \
                     definition."
                )));
            }
        }
        let store = |pick: Option<u32>, review: Review| {
            *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some((pick, review));
        };
        match why_not {
            None => {
                let number = pick
                    .and_then(|p| p.as_u64())
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or_default();
                let review = match self.grounded(number, review, &quotes) {
                    Ok(review) => review,
                    Err(send_back) => return HookResult::Continue(error_output(send_back)),
                };
                store(Some(number), review);
                HookResult::Finish(ok_output(format!("Review recorded: candidate {number} is kept.")))
            }
            Some(why) if !self.asked_again.swap(true, std::sync::atomic::Ordering::Relaxed) => {
                HookResult::Continue(error_output(format!(
                    "Not recorded: {why}. The candidates that passed verification are {}: `pick` one of \
                     them. Call submit_review again.",
                    self.passing_list()
                )))
            }
            Some(why) => {
                store(None, review);
                HookResult::Finish(ok_output(format!(
                    "Review recorded, but {why}: the runtime keeps candidate {} (the first that passed \
                     verification).",
                    self.passing.first().copied().unwrap_or_default()
                )))
            }
        }
    }
}

/// Best of N: one reviewer session compares the candidates that passed verification and keeps one.
/// `root` holds every candidate's worktree as `<number>/`. A reviewer that never names a passing
/// candidate (after being asked once more) leaves the choice to the runtime's rule — the
/// lowest-numbered passing candidate — with the reviewer's verdict when it gave one, else a failing
/// review: a candidate that failed verification is never kept.
pub async fn compare_candidates(
    mission: &Mission,
    unit: &UnitSpec,
    root: &std::path::Path,
    candidates: &[CandidateView],
    failed: &[u32],
    slot: &mut Slot,
) -> std::result::Result<Pick, SessionEnd> {
    let passing: Vec<u32> = candidates.iter().map(|c| c.number).collect();
    let first_passing = passing.first().copied().unwrap_or(1);
    let mut missing = Vec::new();
    let mut grounds = Vec::new();
    for candidate in candidates.iter().filter(|c| !c.diff.trim().is_empty()) {
        let tree = root.join(candidate.number.to_string());
        missing.push((
            candidate.number,
            crate::hints::functions_unit_lacks(unit, &tree).await,
        ));
        grounds.push((
            candidate.number,
            crate::grounded::Grounds {
                root: tree,
                diff: candidate.diff.clone(),
            },
        ));
    }
    let hook = PickHook {
        passing: passing.clone(),
        failed: failed.to_vec(),
        missing: missing.clone(),
        grounds,
        asked_for_quotes: std::sync::atomic::AtomicBool::new(false),
        asked_again: std::sync::atomic::AtomicBool::new(false),
        result: Mutex::new(None),
    };
    let tools = match toolbox(root, Role::Reviewer, &mission.config) {
        Ok(tools) => Arc::new(tools),
        Err(e) => return Err(SessionEnd::ModelFailed(e.to_string())),
    };
    let spec = SessionSpec::new(
        format!(
            "reviewer:{}:candidates:{}",
            unit.id,
            mission.replay.last_seq.map_or(0, |seq| seq + 1)
        ),
        Role::Reviewer,
        mission.config.role(Role::Reviewer).clone(),
        tools,
        comparison_request(mission, unit, candidates, failed, &missing),
    )
    .unit(&unit.id)
    .extra_tools(vec![submit_pick_spec(&passing)]);
    let mut session = Session::new(&mission.rt, spec);
    let end = session.run(&mission.rt, &hook, slot).await;
    let result = hook.result.lock().unwrap_or_else(|p| p.into_inner()).take();
    let runtime_rule = format!(
        "the runtime kept candidate {first_passing}, the first that passed verification, because the \
         reviewer named none that passed"
    );
    match (result, end) {
        (Some((Some(candidate), review)), _) => Ok(Pick {
            candidate,
            reasons: review.summary.clone(),
            review,
            by_runtime: false,
        }),
        (Some((None, review)), _) => Ok(Pick {
            candidate: first_passing,
            reasons: format!(
                "{runtime_rule} (its review said: {})",
                cut(review.summary.trim(), 300)
            ),
            review,
            by_runtime: true,
        }),
        (None, SessionEnd::TurnLimit | SessionEnd::Answered(_) | SessionEnd::Finished) => Ok(Pick {
            candidate: first_passing,
            review: Review {
                verdict: Verdict::Fail,
                summary: "the reviewer ended without a pick or a verdict".into(),
                issues: Vec::new(),
            },
            reasons: runtime_rule,
            by_runtime: true,
        }),
        (None, other) => Err(other),
    }
}

/// The comparing reviewer's first message: the unit, then each passing candidate's summary, evidence
/// and diff (the diffs share one bound).
fn comparison_request(
    mission: &Mission,
    unit: &UnitSpec,
    candidates: &[CandidateView],
    failed: &[u32],
    missing: &[(u32, Vec<String>)],
) -> String {
    let numbers: Vec<String> = candidates.iter().map(|c| c.number.to_string()).collect();
    let out = match failed {
        [] => String::new(),
        failed => {
            let failed: Vec<String> = failed.iter().map(u32::to_string).collect();
            format!(
                " Candidate(s) {} failed verification and are out.",
                failed.join(", ")
            )
        }
    };
    let mut text = format!(
        "# Objective of the mission\n{}\n\n# The unit under review: {} — {}\n{}\n\n\
         # Candidates that passed verification: {}\n{} workers built this unit side by side, each in its \
         own worktree.{out} Compare the passing ones, keep the best (`pick`, and why in `summary`), and \
         judge the one you keep: pass it if it is right, else fail it with the issues to fix in it. \
         Candidate N's files are under `N/` (e.g. `{}/`).\n",
        mission.objective,
        unit.id,
        unit.title,
        unit.description,
        numbers.join(", "),
        candidates.len() + failed.len(),
        numbers.first().map(String::as_str).unwrap_or("1"),
    );
    let per_diff = DIFF_CHARS / candidates.len().max(1);
    for candidate in candidates {
        let empty = candidate.diff.trim().is_empty();
        let (diff, notes) = if empty {
            (
                "(EMPTY: this candidate changed no file)".to_string(),
                String::new(),
            )
        } else {
            let whose = format!("candidate {}", candidate.number);
            let names = missing
                .iter()
                .find(|(number, _)| *number == candidate.number)
                .map(|(_, names)| names.as_slice())
                .unwrap_or_default();
            let missing = runtime_checks_note(unit, names, &candidate.diff, &whose);
            let planned = planned_files_note(&unit.files, &candidate.diff);
            (cut(&candidate.diff, per_diff), format!("{planned}{missing}"))
        };
        // The notes' headings sit one level below the candidate's.
        let notes = notes.replace("\n# ", "\n### ");
        let _ = write!(
            text,
            "\n## Candidate {}\nIts worker's summary: {}\n\n### Evidence (run by the runtime)\n{}\n\n### Diff\n{}{notes}\n",
            candidate.number,
            cut(candidate.summary.trim(), 1_000),
            verify::describe(&candidate.evidence),
            diff
        );
    }
    text
}

/// Stage 2: the master reviewer judges the integrated whole; `units` lists what this round built.
/// `specialist`: one of `[review] extra_master` judges instead.
pub async fn master_review(
    mission: &Mission,
    integration: &Worktree,
    base: &str,
    units: &str,
    evidence: &[Evidence],
    round: u32,
    specialist: Option<&Specialist>,
) -> Result<Review> {
    let stat = integration.diff_stat_since(base).await?;
    let first = format!(
        "# Objective\n{}\n\n# Mission context\n{}\n\n# Units built this round\n{units}\n# Evidence on the integrated result\n{}\n\n\
         # Changes since the mission started\n{stat}\nInspect the code as needed, then call submit_review.",
        mission.objective,
        mission.context,
        verify::describe(evidence)
    );
    let key = format!("master:{round}");
    let spec = reviewer_spec(
        mission,
        Role::MasterReviewer,
        specialist,
        key,
        integration.path(),
        first,
    )?;
    let rt = &mission.rt;
    let Some(mut slot) = Slot::acquire(rt).await else {
        return Err(EngineError::Interrupted);
    };
    match run_review(rt, spec, &mut slot, Proof::Verdict).await {
        Ok(review) => Ok(review),
        Err(SessionEnd::Cancelled) => Err(EngineError::Interrupted),
        // Not the work's fault: no follow-up round is spent on an outage.
        Err(SessionEnd::EndpointFailed(e)) => Err(EngineError::EndpointFailed(e)),
        Err(end) => Ok(Review {
            verdict: Verdict::Fail,
            summary: format!("the master review could not run ({end})"),
            issues: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scouting_scales_with_the_repository() {
        assert_eq!(scout_focus(scouts_for(3)).len(), 1);
        assert!(scout_focus(1)[0].0.contains("structure + tech stack"));
        assert_eq!(scout_focus(scouts_for(100)).len(), 2);
        assert_eq!(scout_focus(scouts_for(5_000)).len(), 4);
        assert!(scout_focus(0).is_empty(), "the pre-scan alone");
    }

    #[test]
    fn a_diff_that_misses_every_planned_file_is_named_to_the_reviewer() {
        let copy = "diff --git a/calc_mul/calc.py b/calc_mul/calc.py\nnew file mode 100644\n--- /dev/null\n\
                    +++ b/calc_mul/calc.py\n@@ -0,0 +1 @@\n+def mul(a, b): return a * b\n";
        let planned = vec!["calc.py".to_string(), "./test_calc.py".to_string()];
        let note = planned_files_note(&planned, copy);
        assert!(note.contains("`calc.py`, `test_calc.py`"), "{note}");
        assert!(note.contains("only `calc_mul/calc.py`"), "{note}");
        // One planned file changed, no plan of files, or no change at all: nothing to say.
        let real = "--- a/calc.py\n+++ b/calc.py\n@@ -1 +1,2 @@\n";
        assert_eq!(planned_files_note(&planned, &format!("{copy}{real}")), "");
        assert_eq!(planned_files_note(&[], copy), "");
        assert_eq!(planned_files_note(&planned, ""), "");
        // A deletion counts as changing the file; a hostile diff of only headers is read, not trusted.
        let deleted = "--- a/test_calc.py\n+++ /dev/null\n";
        assert_eq!(changed_paths(deleted), vec!["test_calc.py"]);
        assert_eq!(planned_files_note(&planned, deleted), "");
        assert!(changed_paths("+++ weird\n+++ b/x\n+++ b/x\n") == vec!["x"]);
    }

    fn review_hook() -> ReviewHook {
        ReviewHook::new(Proof::Verdict)
    }

    fn said(result: &HookResult) -> (bool, String) {
        match result {
            HookResult::Continue(out) => (false, out.content.clone()),
            HookResult::Finish(out) => (true, out.content.clone()),
        }
    }

    #[tokio::test]
    async fn a_failing_review_without_issues_is_sent_back_once_for_them() {
        let hook = review_hook();
        let mut slot = Slot::unshared();
        // Seen in the field: a fail whose summary reads as a pass, with nothing to act on.
        let vague = json!({"verdict": "fail", "summary": "It already has mul and a test. No changes are needed.", "issues": []});
        let (finished, text) = said(&hook.call("submit_review", vague.clone(), &mut slot).await);
        assert!(!finished, "{text}");
        assert!(text.contains("lists the issues to fix"), "{text}");
        assert!(
            text.contains("No changes are needed"),
            "quotes the summary: {text}"
        );
        assert!(text.contains("the verdict is pass"), "{text}");
        // Asked once: the same review again is taken, so a stubborn model cannot loop on it.
        let (finished, _) = said(&hook.call("submit_review", vague, &mut slot).await);
        assert!(finished);
        let review = hook.review.lock().unwrap().take().unwrap();
        assert_eq!(review.verdict, Verdict::Fail);
    }

    #[tokio::test]
    async fn an_unproven_pass_of_an_empty_diff_is_sent_back_twice_then_recorded_as_a_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("calc.py"), "def add(a, b):\n    return a + b\n").expect("write");
        let hook = ReviewHook::new(Proof::Checked(dir.path().to_path_buf()));
        let mut slot = Slot::unshared();
        let lazy = json!({"verdict": "pass", "summary": "mul is there"});
        let invented = json!({"verdict": "pass", "summary": "mul is there",
                              "checked": [{"file": "calc.py", "quote": "def mul(a, b):"}]});
        for (n, review) in [lazy.clone(), invented].into_iter().enumerate() {
            let (finished, text) = said(&hook.call("submit_review", review, &mut slot).await);
            assert!(!finished, "send-back {n}: {text}");
            assert!(text.contains("must show what you read"), "{text}");
        }
        let (finished, _) = said(&hook.call("submit_review", lazy, &mut slot).await);
        assert!(finished, "the third is recorded");
        let review = hook.review.lock().unwrap().take().unwrap();
        assert_eq!(review.verdict, Verdict::Fail);
        assert!(
            review.summary.contains("3 times") && review.summary.contains("`checked` is missing"),
            "{}",
            review.summary
        );
        assert_eq!(review.issues[0].title, "No change was made");

        // A proven pass is taken at once, whatever came before it.
        let hook = ReviewHook::new(Proof::Checked(dir.path().to_path_buf()));
        let honest = json!({"verdict": "pass", "summary": "add is there",
                            "checked": [{"file": "calc.py", "quote": "def add(a, b):"}]});
        assert!(said(&hook.call("submit_review", honest, &mut slot).await).0);
        let review = hook.review.lock().unwrap().take().unwrap();
        assert_eq!(review.verdict, Verdict::Pass);
    }

    fn pick_hook() -> PickHook {
        PickHook {
            passing: vec![2, 3],
            failed: vec![1],
            missing: Vec::new(),
            grounds: Vec::new(),
            asked_for_quotes: std::sync::atomic::AtomicBool::new(false),
            asked_again: std::sync::atomic::AtomicBool::new(false),
            result: Mutex::new(None),
        }
    }

    #[tokio::test]
    async fn a_failed_pick_whose_issues_are_not_in_the_kept_candidate_is_sent_back_once() {
        let mut slot = Slot::unshared();
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = dir.path().join("3");
        std::fs::create_dir_all(&kept).expect("mkdir");
        std::fs::write(kept.join("calc.py"), "def add(a, b):\n    return a - b\n").expect("write");
        let hook = || PickHook {
            grounds: vec![(
                3,
                crate::grounded::Grounds {
                    root: kept.clone(),
                    diff: String::new(),
                },
            )],
            ..pick_hook()
        };
        // The field's reviewer: a README that no candidate has, under another candidate's folder.
        let invented = json!({"pick": 3, "verdict": "fail", "summary": "not runnable",
            "issues": [{"title": "README.md", "description": "README.md does not exist",
                        "file": "1/README.md", "quote": "# Project readme"}]});
        let picking = hook();
        let (finished, text) = said(&picking.call("submit_review", invented.clone(), &mut slot).await);
        assert!(!finished, "{text}");
        assert!(
            text.contains("`1/README.md` is not a file") && text.contains("candidate 3"),
            "{text}"
        );
        // Again: taken, the issue marked as not confirmed.
        assert!(said(&picking.call("submit_review", invented, &mut slot).await).0);
        let (number, review) = picking.result.lock().unwrap().take().unwrap();
        assert_eq!(number, Some(3));
        assert!(
            review.issues[0].description.starts_with("(not confirmed"),
            "{review:?}"
        );
        // A real issue, with the folder in front of the path or without: taken at once.
        for file in ["3/calc.py", "calc.py"] {
            let real = json!({"pick": 3, "verdict": "fail", "summary": "add subtracts",
                "issues": [{"title": "add subtracts", "description": "use +",
                            "file": file, "quote": "    return a - b"}]});
            let picking = hook();
            let (finished, text) = said(&picking.call("submit_review", real, &mut slot).await);
            assert!(finished, "{file}: {text}");
            let (_, review) = picking.result.lock().unwrap().take().unwrap();
            assert!(
                review.issues[0].description.contains("The line meant"),
                "{review:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_pick_lacking_a_named_function_another_has_is_asked_again_once() {
        let mut slot = Slot::unshared();
        let lacking = || PickHook {
            missing: vec![(2, vec!["mul".to_string()]), (3, Vec::new())],
            ..pick_hook()
        };
        let hook = lacking();
        let kept = json!({"pick": 2, "verdict": "pass", "summary": "best summary"});
        let (finished, text) = said(&hook.call("submit_review", kept.clone(), &mut slot).await);
        assert!(!finished, "{text}");
        assert!(
            text.contains("candidate 2 defines no `mul`, which the unit asks for, and candidate(s) 3 do"),
            "{text}"
        );
        // Kept again: taken at its word.
        let (finished, _) = said(&hook.call("submit_review", kept, &mut slot).await);
        assert!(finished);
        assert_eq!(hook.result.lock().unwrap().take().unwrap().0, Some(2));
        // A failing verdict for it too; a pick of the one that has it is taken at once.
        let hook = lacking();
        let failing = json!({"pick": 2, "verdict": "fail", "summary": "no README",
                             "issues": [{"title": "README", "description": "no README"}]});
        assert!(!said(&hook.call("submit_review", failing, &mut slot).await).0);
        let hook = lacking();
        let whole = json!({"pick": 3, "verdict": "pass", "summary": "defines mul"});
        assert!(said(&hook.call("submit_review", whole, &mut slot).await).0);
        // When every candidate lacks it, there is nothing better to keep.
        let hook = PickHook {
            missing: vec![(2, vec!["mul".to_string()]), (3, vec!["mul".to_string()])],
            ..pick_hook()
        };
        let kept = json!({"pick": 2, "verdict": "pass", "summary": "s"});
        assert!(said(&hook.call("submit_review", kept, &mut slot).await).0);
    }

    #[tokio::test]
    async fn a_valid_pick_is_taken_and_a_lying_one_is_asked_again_once() {
        let mut slot = Slot::unshared();
        let hook = pick_hook();
        let good = json!({"pick": 3, "verdict": "pass", "summary": "3 handles the empty input"});
        let (finished, text) = said(&hook.call("submit_review", good, &mut slot).await);
        assert!(finished && text.contains("candidate 3 is kept"), "{text}");
        let taken = hook.result.lock().unwrap().take().unwrap();
        assert_eq!(taken.0, Some(3));

        // The failed candidate, then a missing one: asked again once, then recorded without a pick.
        let hook = pick_hook();
        let failed = json!({"pick": 1, "verdict": "pass", "summary": "1"});
        let (finished, text) = said(&hook.call("submit_review", failed, &mut slot).await);
        assert!(!finished, "{text}");
        assert!(
            text.contains("candidate 1 failed verification") && text.contains("are 2, 3"),
            "{text}"
        );
        let ghost = json!({"pick": 9, "verdict": "pass", "summary": "9"});
        let (finished, text) = said(&hook.call("submit_review", ghost, &mut slot).await);
        assert!(finished && text.contains("there is no candidate 9"), "{text}");
        assert!(text.contains("keeps candidate 2"), "{text}");
        assert_eq!(hook.result.lock().unwrap().take().unwrap().0, None);
    }

    #[tokio::test]
    async fn a_pick_that_is_no_number_or_missing_is_never_taken() {
        let mut slot = Slot::unshared();
        for junk in [
            json!("3"),
            json!(-2),
            json!(2.5),
            json!(u64::MAX),
            json!(null),
            json!([3]),
        ] {
            let hook = pick_hook();
            let call = json!({"pick": junk, "verdict": "pass", "summary": "s"});
            let (finished, text) = said(&hook.call("submit_review", call, &mut slot).await);
            assert!(!finished && text.contains("Not recorded"), "{junk}: {text}");
        }
        let hook = pick_hook();
        let none = json!({"verdict": "pass", "summary": "all fine"});
        let (finished, text) = said(&hook.call("submit_review", none, &mut slot).await);
        assert!(!finished && text.contains("no `pick` was given"), "{text}");
        // A review that breaks the schema is sent back without using up the one re-ask.
        let hook = pick_hook();
        let broken = json!({"pick": 2, "verdict": "maybe", "summary": "s"});
        let (finished, _) = said(&hook.call("submit_review", broken, &mut slot).await);
        assert!(!finished);
        assert!(!hook.asked_again.load(std::sync::atomic::Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_failing_review_with_issues_and_a_pass_are_taken_at_once() {
        let mut slot = Slot::unshared();
        let with_issues = json!({"verdict": "fail", "summary": "no test", "issues": [{"title": "Test mul", "description": "add test_mul", "file": "test_calc.py"}]});
        let hook = review_hook();
        assert!(said(&hook.call("submit_review", with_issues, &mut slot).await).0);
        let hook = review_hook();
        let pass = json!({"verdict": "pass", "summary": "done"});
        assert!(said(&hook.call("submit_review", pass, &mut slot).await).0);
    }

    /// A worktree with `calc.py` changed by the unit, and the hook of its stage 1 review.
    fn quoted_review_hook() -> (tempfile::TempDir, ReviewHook) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("calc.py"), "def add(a, b):\n    return a + b\n").expect("write");
        std::fs::write(
            dir.path().join("test_calc.py"),
            "def mul(a, b):\n    return a * b\n",
        )
        .expect("write");
        let diff = "diff --git a/test_calc.py b/test_calc.py\n--- a/test_calc.py\n+++ b/test_calc.py\n\
                    @@ -0,0 +1,2 @@\n+def mul(a, b):\n+    return a * b\n";
        let grounds = crate::grounded::Grounds {
            root: dir.path().to_path_buf(),
            diff: diff.into(),
        };
        (dir, ReviewHook::new(Proof::Quoted(grounds)))
    }

    fn fail_with(issues: serde_json::Value) -> serde_json::Value {
        json!({"verdict": "fail", "summary": "mul is in the wrong file", "issues": issues})
    }

    fn recorded(hook: &ReviewHook) -> Review {
        hook.review.lock().unwrap().take().expect("recorded")
    }

    #[tokio::test]
    async fn a_grounded_fail_is_taken_at_once_with_its_quote_for_the_worker() {
        let (_dir, hook) = quoted_review_hook();
        let mut slot = Slot::unshared();
        let grounded = fail_with(
            json!([{"title": "Move mul", "description": "mul belongs in calc.py",
            "file": "test_calc.py", "quote": "+def mul(a, b):"}]),
        );
        let (finished, text) = said(&hook.call("submit_review", grounded, &mut slot).await);
        assert!(finished, "{text}");
        let review = recorded(&hook);
        assert!(
            review.issues[0]
                .description
                .ends_with("The line meant: \"+def mul(a, b):\""),
            "{review:?}"
        );
        // A pass is not asked for quotes.
        let (_dir, hook) = quoted_review_hook();
        let pass = json!({"verdict": "pass", "summary": "fine"});
        assert!(said(&hook.call("submit_review", pass, &mut slot).await).0);
    }

    #[tokio::test]
    async fn an_ungrounded_fail_is_sent_back_once_then_recorded_marked() {
        let (_dir, hook) = quoted_review_hook();
        let mut slot = Slot::unshared();
        // The field test's invention: a line that is in no file.
        let invented = fail_with(json!([
            {"title": "Wrong result", "description": "returns 0 instead", "file": "calc.py",
             "quote": "return 0  # instead of the sum"},
            {"title": "Move mul", "description": "mul belongs in calc.py", "file": "test_calc.py",
             "quote": "def mul(a, b):"}
        ]));
        let (finished, text) = said(&hook.call("submit_review", invented.clone(), &mut slot).await);
        assert!(!finished, "{text}");
        assert!(
            text.contains("issue 1 \"Wrong result\": the quote is not in `calc.py`"),
            "{text}"
        );
        assert!(!text.contains("issue 2"), "the grounded one is not named: {text}");
        assert!(text.contains("the verdict is pass"), "{text}");
        // The same review again is taken, so a stubborn model cannot loop; the worker sees the mark.
        let (finished, _) = said(&hook.call("submit_review", invented, &mut slot).await);
        assert!(finished);
        let review = recorded(&hook);
        assert_eq!(review.verdict, Verdict::Fail);
        assert!(
            review.issues[0]
                .description
                .starts_with("(not confirmed by the runtime: the quote is not in `calc.py`"),
            "{review:?}"
        );
        assert!(
            review.issues[1].description.contains("The line meant"),
            "{review:?}"
        );
    }

    #[tokio::test]
    async fn both_send_backs_together_are_bounded_to_two() {
        let (_dir, hook) = quoted_review_hook();
        let mut slot = Slot::unshared();
        let vague = json!({"verdict": "fail", "summary": "not right", "issues": []});
        let unquoted = fail_with(json!([{"title": "Fix", "description": "fix it", "file": "calc.py"}]));
        let (finished, text) = said(&hook.call("submit_review", vague.clone(), &mut slot).await);
        assert!(!finished && text.contains("lists the issues to fix"), "{text}");
        let (finished, text) = said(&hook.call("submit_review", unquoted.clone(), &mut slot).await);
        assert!(!finished && text.contains("no `quote` was given"), "{text}");
        // From here every review is recorded as it is, whichever rule it breaks.
        let (finished, _) = said(&hook.call("submit_review", unquoted, &mut slot).await);
        assert!(finished);
        assert!(recorded(&hook).issues[0]
            .description
            .starts_with("(not confirmed by the runtime: no `quote` was given)"));
        let (finished, _) = said(&hook.call("submit_review", vague, &mut slot).await);
        assert!(finished);
    }

    #[tokio::test]
    async fn a_flood_of_issues_is_cut_and_bounded() {
        let (_dir, hook) = quoted_review_hook();
        let mut slot = Slot::unshared();
        let huge_quote = "x".repeat(100_000);
        let flood: Vec<serde_json::Value> = (0..500)
            .map(|i| json!({"title": format!("Issue {i}"), "description": "d", "file": "calc.py", "quote": huge_quote}))
            .collect();
        let (finished, text) = said(
            &hook
                .call("submit_review", fail_with(json!(flood.clone())), &mut slot)
                .await,
        );
        assert!(!finished);
        assert!(
            text.contains("issue 8 ") && !text.contains("issue 9 "),
            "at most 8 named"
        );
        assert!(text.len() < 8 * 600, "quotes are cut: {}", text.len());
        let (finished, _) = said(
            &hook
                .call("submit_review", fail_with(json!(flood)), &mut slot)
                .await,
        );
        assert!(finished);
        let review = recorded(&hook);
        assert_eq!(review.issues.len(), crate::grounded::MAX_ISSUES);
        assert!(
            review.summary.contains("492 more issue(s) left out"),
            "{}",
            review.summary
        );
        let total: usize = review.issues.iter().map(|i| i.description.len()).sum();
        assert!(total < 8 * 600, "{total}");
    }

    #[test]
    fn only_a_unit_review_of_a_change_requires_quotes() {
        let (_dir, hook) = quoted_review_hook();
        let quoted = submit_review_spec(&hook.proof);
        let required = &quoted.parameters["properties"]["issues"]["items"]["required"];
        assert_eq!(required, &json!(["title", "description", "file", "quote"]));
        for proof in [Proof::Verdict, Proof::Checked(std::path::PathBuf::from("."))] {
            let plain = submit_review_spec(&proof);
            let items = &plain.parameters["properties"]["issues"]["items"];
            assert!(items["properties"].get("quote").is_none());
            assert_eq!(items["required"], json!(["title", "description"]));
        }
    }
}
