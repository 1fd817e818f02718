//! What a worker is told, and its orchestration tool: `spawn` (a unit splitting itself).

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use orchestrator_model::ToolSpec;
use orchestrator_protocol::{Event, UnitSpec, UnitState};
use serde_json::json;

use super::{run_dag, MergeTarget, UnitOutcome, UnitTree};
use crate::plan::parse_spawn;
use crate::session::{error_output, ok_output, HookResult, SessionHooks, Slot};
use crate::shared::Mission;

/// What every worker of the mission is told first, byte for byte: the objective and the context.
/// Nothing of the unit comes before its end, so a prompt cache can share it between all workers.
pub(super) fn mission_head(mission: &Mission) -> String {
    format!(
        "# Objective of the mission\n{}\n\n# Mission context\n{}\n\n",
        mission.objective, mission.context
    )
}

pub(super) fn worker_brief(mission: &Mission, unit: &UnitSpec, can_spawn: bool) -> String {
    let mut text = mission_head(mission);
    // The 1.5B read `# Your unit: calc_mul — … calc.py` as the path `calc_mul/calc.py`.
    let _ = write!(
        text,
        "# Your unit: {} — {}\n{}\n(`{}` is the unit's name, not a folder: paths are relative to the root of \
         your worktree.)\n",
        unit.id, unit.title, unit.description, unit.id
    );
    if !unit.depends_on.is_empty() {
        let _ = writeln!(
            text,
            "\nUnits {} are already merged into your starting point.",
            unit.depends_on.join(", ")
        );
    }
    if !unit.files.is_empty() {
        let _ = writeln!(
            text,
            "\nFiles the planner expects you to touch: {}",
            unit.files.join(", ")
        );
    }
    if can_spawn {
        text.push_str("\nYou may split this unit with `spawn` if it is too large for one session.\n");
    }
    text
}

/// A best-of-N candidate's brief: the unit's, and that others build it too.
pub(super) fn candidate_brief(mission: &Mission, unit: &UnitSpec, number: u32, of: u32) -> String {
    let mut text = worker_brief(mission, unit, false);
    let _ = write!(
        text,
        "\n# Candidate {number} of {of}\n{of} workers build this unit side by side, each in its own \
         worktree; the runtime verifies each one and a reviewer keeps the best that passes. Build it \
         whole, your own way; splitting it with `spawn` is not offered to candidates.\n"
    );
    text
}

pub(super) fn spawn_spec() -> ToolSpec {
    ToolSpec {
        name: "spawn".into(),
        description:
            "Split your unit: start sub-workers, each in its own worktree branched from yours. Returns when \
                      they have finished and been reviewed; their work is then merged into your worktree."
                .into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "tasks": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "title": {"type": "string"},
                            "description": {"type": "string"},
                            "depends_on": {"type": "array", "items": {"type": "string"}, "description": "titles of sibling tasks"}
                        },
                        "required": ["title", "description"],
                        "additionalProperties": false
                    }
                }
            },
            "required": ["tasks"],
            "additionalProperties": false
        }),
    }
}

/// The worker's orchestration tool: `spawn`.
pub(super) struct WorkerHooks {
    pub(super) mission: Arc<Mission>,
    pub(super) unit: UnitSpec,
    pub(super) depth: u32,
    pub(super) round: u32,
    pub(super) tree: UnitTree,
    /// Whether this session's unit has split itself already: a unit splits once.
    pub(super) spawned: std::sync::atomic::AtomicBool,
    /// Best of N: (this candidate's number, of how many), for a candidate's session.
    pub(super) candidate: Option<(u32, u32)>,
    /// The commit the session's current run started from (see [`WorkerHooks::runs_from`]).
    pub(super) run_start: std::sync::Mutex<Option<String>>,
    /// Which answer rules sent the current run's answer back already.
    pub(super) rechecks: Rechecks,
}

/// The rules of [`WorkerHooks::recheck_answer`].
#[derive(Clone, Copy)]
enum Recheck {
    Unchanged,
    Claim,
    Missing,
    NoTest,
}

/// Which answer rules told the worker in its current run: each at most once.
#[derive(Default)]
pub(super) struct Rechecks(std::sync::atomic::AtomicU8);

impl Rechecks {
    fn bit(rule: Recheck) -> u8 {
        match rule {
            Recheck::Unchanged => 1,
            Recheck::Claim => 2,
            Recheck::Missing => 4,
            Recheck::NoTest => 8,
        }
    }

    fn told(&self, rule: Recheck) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst) & Self::bit(rule) != 0
    }

    fn tell(&self, rule: Recheck) {
        self.0
            .fetch_or(Self::bit(rule), std::sync::atomic::Ordering::SeqCst);
    }

    fn reset(&self) {
        self.0.store(0, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait]
impl SessionHooks for WorkerHooks {
    async fn call(&self, name: &str, arguments: serde_json::Value, slot: &mut Slot) -> HookResult {
        if name != "spawn" {
            return HookResult::Continue(error_output(format!("Unknown tool `{name}`.")));
        }
        let children = match parse_spawn(&self.unit.id, arguments) {
            Ok(children) => children,
            Err(problems) => {
                return HookResult::Continue(error_output(format!(
                    "spawn refused:\n- {}\nFix the call and try again.",
                    problems.join("\n- ")
                )))
            }
        };
        if let Some(refusal) = self.already_split(&children) {
            return HookResult::Continue(error_output(refusal));
        }
        if let Some(refusal) = self
            .over_unit_cap(&children)
            .or_else(|| self.over_budget(children.len()))
        {
            return HookResult::Continue(error_output(refusal));
        }
        HookResult::Continue(self.spawn(children, slot).await)
    }

    /// Four rules, each sent back at most once per run (see [`Rechecks`]; at most two per run in
    /// all); a worker that answers again is taken.
    /// - An answer with nothing changed in the worktree since the worker was given its task (or its
    ///   last feedback) would end the attempt with nothing done: the field's 1.5B read the files and
    ///   answered "the unit is complete, the tests passed" with an untouched tree, and a best-of-N
    ///   candidate gets one attempt only.
    /// - "No change needed" for a unit that names a function no file of the worktree defines (the
    ///   1.5B said "NO CHANGE NEEDED: calc.py and test_calc.py are already correct" of a calc.py
    ///   without `mul`, right after being sent back for answering with nothing done).
    /// - A changed worktree where a function the unit names is still defined nowhere (the 1.5B
    ///   answered for "mul(a, b) function" with a new file holding `def test_mul(a, b)`, and a weak
    ///   review kept it).
    /// - A changed worktree that adds no test definition anywhere while the unit asks for a test
    ///   (the 1.5B answered "Add a test for the `mul` function" with a `def mul(self, a, b)` method
    ///   in the test class, which runs nothing, and it passed verification).
    async fn recheck_answer(&self, answer: &str) -> Option<String> {
        if self.spawned.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        if super::unit::claims_no_change(answer) {
            return self.recheck_claim().await;
        }
        let missing = self.missing_functions().await;
        if !self.changed_since_start().await? {
            if self.rechecks.told(Recheck::Unchanged) {
                return None;
            }
            self.rechecks.tell(Recheck::Unchanged);
            return Some(self.unchanged_correction(&missing));
        }
        if missing.is_empty() || self.rechecks.told(Recheck::Missing) {
            return self.recheck_no_test().await;
        }
        self.rechecks.tell(Recheck::Missing);
        Some(format!(
            "Not taken as your answer yet: your unit asks for {}, and no file of your worktree defines \
             it after your change. Define it under that exact name where the unit needs it (the \
             plan's files, not a new copy elsewhere), check that each call succeeded, then answer. \
             If the unit really needs no such definition, answer again saying why.",
            missing.join(", ")
        ))
    }

    /// Failing tests that passed on the mission's base commit: the worker's change broke them (the
    /// field's 1.5B turned `add`'s body into `a * b` to add `mul` and read `test_add` failing as
    /// trouble of its own new code).
    /// On a pass: an output that reports no test where the base commit's run reported some (the
    /// 1.5B rewrote test_calc.py without `unittest.main()`, saw "(no output)" called a pass, and
    /// answered); else tests added since the mission's base that the run did not count (a
    /// `def test_…` outside the `TestCase` class passes by not running).
    async fn explain_tests(&self, output: &str, passed: bool) -> Option<String> {
        if passed {
            if let Some(lost) = self.lost_tests(output).await {
                return Some(lost);
            }
            return self.unrun_tests(output).await;
        }
        let broken = super::unit::broken_tests_in(&self.mission, output).await;
        crate::hints::broken_tests_note(&broken)
    }

    fn not_offered(&self, name: &str, offered: &[String]) -> String {
        if name == "spawn" {
            let why = if let Some((number, of)) = self.candidate {
                format!(
                    "you are candidate {number} of {of} building this unit side by side, and candidates \
                     build their unit whole (sub-units of {of} candidates would multiply the work)"
                )
            } else if self.depth < self.mission.config.max_depth {
                "workers of this mission are not offered `spawn` (`[roles.worker] tools`)".to_string()
            } else {
                format!(
                    "this unit is at depth {} and the mission's spawning depth limit is {}",
                    self.depth, self.mission.config.max_depth
                )
            };
            return format!(
                "spawn refused: {why}. Build the unit yourself with the tools you have: {}.",
                offered.join(", ")
            );
        }
        format!(
            "Unknown tool `{name}`. The tools available to you are: {}.",
            offered.join(", ")
        )
    }
}

/// The worktree's files against `base` as a unified diff, with the new files a session made (not
/// in git's diff until the runtime commits them) as new-file sections: what the session has changed
/// so far. Bounded: at most 200 new files of 512 KiB each.
async fn diff_with_new_files(worktree: &orchestrator_git::Worktree, base: &str) -> Option<String> {
    const MAX_NEW_FILES: usize = 200;
    const MAX_NEW_FILE_BYTES: u64 = 512 * 1024;
    let mut diff = worktree.diff_of_files_since(base).await.ok()?;
    for path in worktree.untracked_files().await.ok()?.iter().take(MAX_NEW_FILES) {
        let file = worktree.path().join(path);
        if !std::fs::metadata(&file).is_ok_and(|m| m.is_file() && m.len() <= MAX_NEW_FILE_BYTES) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        diff.push_str(&format!(
            "\ndiff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
        ));
        for line in text.lines() {
            diff.push('+');
            diff.push_str(line);
            diff.push('\n');
        }
    }
    Some(diff)
}

/// What one unit is assumed to cost before any unit of the mission has finished.
pub(super) const DEFAULT_UNIT_TOKENS: u64 = 30_000;

impl WorkerHooks {
    /// Why a passing run proves nothing: its output reports no test, where the mission's base
    /// commit's run reported some.
    async fn lost_tests(&self, output: &str) -> Option<String> {
        let known = self.mission.verifier.baseline.clone()?.await;
        let before = known.tests_ran.filter(|n| *n > 0)?;
        matches!(crate::test_count::tests_ran(output), None | Some(0))
            .then(|| crate::verify::lost_tests_text(before))
    }

    /// Tests the worktree's files add since the mission's base that a passing run did not count.
    async fn unrun_tests(&self, output: &str) -> Option<String> {
        let now = crate::test_count::tests_ran(output)?;
        let known = self.mission.verifier.baseline.clone()?.await;
        let (before, base) = (known.tests_ran?, known.base.clone()?);
        let worktree = self.tree.get().await.ok()?;
        let diff = diff_with_new_files(&worktree, &base).await?;
        let (added, names) = crate::test_count::added_test_definitions(&diff, Some(worktree.path()));
        (added > now.saturating_sub(before)).then(|| crate::verify::unrun_tests_text(&names, now, before))
    }

    /// A unit that asks for a test, answered with a change that adds no test definition since the
    /// mission's base commit.
    async fn recheck_no_test(&self) -> Option<String> {
        let asked = crate::plan::what_unit_asks(&self.unit);
        if self.rechecks.told(Recheck::NoTest) || !crate::hints::asks_for_a_test(&asked) {
            return None;
        }
        let known = self.mission.verifier.baseline.clone()?.await;
        let base = known.base.clone()?;
        let worktree = self.tree.get().await.ok()?;
        let diff = diff_with_new_files(&worktree, &base).await?;
        if crate::test_count::test_definitions_added_anywhere(&diff) > 0 {
            return None;
        }
        self.rechecks.tell(Recheck::NoTest);
        Some(
            "Not taken as your answer yet: your unit asks for a test, and your change adds none (no \
             `def test_…`, `func Test…`, `it(…)` or `test(…)` anywhere). Add one where the test command \
             runs it (in Python's unittest, a method `def test_…(self)` of the existing \
             `unittest.TestCase` class) that calls the code it tests and asserts its result, check that \
             each call succeeded, then answer."
                .to_string(),
        )
    }

    /// "No change needed" for a unit naming a function that no file of the worktree defines: the
    /// work is not there already.
    async fn recheck_claim(&self) -> Option<String> {
        if self.rechecks.told(Recheck::Claim) {
            return None;
        }
        let missing = self.missing_functions().await;
        if missing.is_empty() {
            return None;
        }
        self.rechecks.tell(Recheck::Claim);
        Some(format!(
            "Not taken as your answer yet: your unit asks for {}, which no file of your worktree \
             defines, so the work is not there already. Write it now, check that each call \
             succeeded, then answer. If it really exists under another name, answer again saying \
             which file and line.",
            missing.join(", ")
        ))
    }

    /// Whether the worktree changed since the current run started: uncommitted changes, or a commit
    /// of its own (a worker may run `git commit`). `None` when that cannot be told, and no answer
    /// rule about changes applies.
    async fn changed_since_start(&self) -> Option<bool> {
        let start = self.run_start.lock().ok()?.clone()?;
        let worktree = self.tree.get().await.ok()?;
        if worktree.has_changes().await.ok()? {
            return Some(true);
        }
        Some(worktree.head().await.ok()? != start)
    }

    /// The functions the unit's title and description name by a call that no file of the worktree
    /// defines, in backticks.
    async fn missing_functions(&self) -> Vec<String> {
        crate::hints::functions_unit_lacks(&self.unit, &self.tree.path)
            .await
            .into_iter()
            .map(|name| format!("`{name}`"))
            .collect()
    }

    /// What a worker that answered with its worktree as the run found it is told. With functions
    /// the unit asks for missing, no way out but writing them is offered (the 1.5B took "answer NO
    /// CHANGE NEEDED" the moment it was mentioned).
    fn unchanged_correction(&self, missing: &[String]) -> String {
        let tools = self
            .mission
            .config
            .role(orchestrator_protocol::Role::Worker)
            .tools
            .clone();
        let writing: Vec<String> = orchestrator_tools::WRITING_TOOLS
            .iter()
            .filter(|t| {
                tools
                    .as_ref()
                    .is_none_or(|offered| offered.iter().any(|o| o == *t))
            })
            .map(|t| format!("`{t}`"))
            .collect();
        let head = "Not taken as your answer yet: no file in your worktree has changed since you were \
                    given this task (or your last feedback), so answering now ends the attempt with \
                    nothing done and it fails.";
        if missing.is_empty() {
            format!(
                "{head} If the task needs a change, make it now ({}) and check that each call \
                 succeeded. Only if the work is really there already, answer again with a line that \
                 starts with `{}:` and name the file and lines that show it.",
                writing.join(", "),
                super::unit::NO_CHANGE
            )
        } else {
            format!(
                "{head} Your unit asks for {}, which no file of your worktree defines: write it now \
                 ({}), check that each call succeeded, then answer.",
                missing.join(", "),
                writing.join(", ")
            )
        }
    }

    /// The session's next run starts with the worktree at `commit`: an answer that leaves it there
    /// changed nothing (see `recheck_answer`).
    pub(super) fn runs_from(&self, commit: &str) {
        if let Ok(mut start) = self.run_start.lock() {
            *start = Some(commit.to_string());
        }
        self.rechecks.reset();
    }

    /// A unit splits once. A second `spawn` would get children numbered like the first ones (ids are
    /// positions), so it is refused with what exists; a resumed parent repeating the spawn it made
    /// before the restart (the same children) goes on as before.
    fn already_split(&self, children: &[UnitSpec]) -> Option<String> {
        let earlier = self.mission.children_of(&self.unit.id);
        let repeat_after_resume = !self.spawned.load(std::sync::atomic::Ordering::SeqCst)
            && children
                .iter()
                .all(|c| self.mission.replay.units.contains_key(&c.id));
        if (earlier.is_empty() && !self.spawned.load(std::sync::atomic::Ordering::SeqCst))
            || repeat_after_resume
        {
            return None;
        }
        Some(format!(
            "spawn refused: this unit already split itself into {} (their results came back from that \
             call). A unit splits once: build what is left yourself, in your worktree.",
            earlier.join(", ")
        ))
    }

    /// A spawn that would take the mission past `limits.max_units` is refused, with the numbers: a
    /// model that spawns without end stops here, not at thousands of queued units.
    fn over_unit_cap(&self, children: &[UnitSpec]) -> Option<String> {
        // A resumed parent repeating its spawn adds nothing new.
        let known = &self.mission.replay.units;
        let children = children.iter().filter(|c| !known.contains_key(&c.id)).count();
        let cap = self.mission.config.max_units;
        let held = self.mission.units_known();
        (held + children > cap).then(|| {
            format!(
                "spawn refused: the mission holds {held} units and may hold {cap} in all (limits.max_units); \
                 {children} more would pass that. Build the unit yourself, or spawn fewer."
            )
        })
    }

    /// A spawn that would likely exceed the mission's remaining budget is refused, with the numbers.
    fn over_budget(&self, children: usize) -> Option<String> {
        let mission = &self.mission;
        let limit = mission.rt.budget_tokens?;
        let used = mission.rt.tokens_spent();
        let remaining = limit.saturating_sub(used);
        let per_unit = mission.average_unit_tokens().unwrap_or(DEFAULT_UNIT_TOKENS);
        let needed = per_unit.saturating_mul(children as u64);
        (needed > remaining).then(|| {
            format!(
                "spawn refused: the mission has {remaining} tokens of its budget left, and {children} sub-unit(s) \
                 would need about {needed} (about {per_unit} per unit so far). Build the unit yourself, or spawn fewer."
            )
        })
    }
    async fn spawn(&self, children: Vec<UnitSpec>, slot: &mut Slot) -> orchestrator_tools::ToolOutput {
        let mission = &self.mission;
        // Ready: the session's first tool call waited for it.
        let worktree = match self.tree.get().await {
            Ok(worktree) => worktree,
            Err(e) => return error_output(format!("spawn failed: your worktree could not be created: {e}")),
        };
        // Children branch from the parent's work so far.
        let committed = match worktree
            .commit_all(&format!("{}: work before spawning", self.unit.id))
            .await
        {
            Ok(committed) => committed,
            Err(e) => return error_output(format!("spawn failed: could not commit your work first: {e}")),
        };
        // A resumed parent repeats its spawn call; children already known keep their recorded state.
        let known = children.iter().all(|c| mission.replay.units.contains_key(&c.id));
        if !known {
            mission.rt.bus.emit(Event::UnitsSpawned {
                parent: self.unit.id.clone(),
                units: children.clone(),
            });
            for child in &children {
                mission.set_state(child, self.round, UnitState::Queued, 0, None);
            }
        }
        mission.set_state(&self.unit, self.round, UnitState::WaitingOnChildren, 0, None);
        let head = match committed {
            Some(commit) => commit,
            None => match worktree.head().await {
                Ok(head) => head,
                Err(e) => return error_output(format!("spawn failed: could not read your commit: {e}")),
            },
        };
        let target = Arc::new(MergeTarget::new(
            worktree.clone(),
            mission.branch(&self.unit.id),
            head,
        ));
        // A waiting parent gives its slot to the children, so waiting trees cannot deadlock the cap.
        slot.release();
        self.spawned.store(true, std::sync::atomic::Ordering::SeqCst);
        let outcomes = run_dag(mission.clone(), children, self.depth + 1, target, self.round).await;
        if !slot.reacquire(&mission.rt.cancel).await {
            return error_output("spawn interrupted: the mission was cancelled".into());
        }
        mission.set_state(&self.unit, self.round, UnitState::Running, 0, None);
        ok_output(describe_children(&outcomes))
    }
}

fn describe_children(outcomes: &[UnitOutcome]) -> String {
    let mut text = String::from("Sub-tasks finished:\n");
    for o in outcomes {
        let detail = match (&o.reason, o.summary.trim()) {
            (Some(reason), _) => reason.clone(),
            (None, summary) => summary.to_string(),
        };
        let _ = writeln!(
            text,
            "- {} `{}`: {} — {}",
            o.unit.id, o.unit.title, o.state, detail
        );
    }
    let passed = outcomes.iter().filter(|o| o.state == UnitState::Passed).count();
    let _ = write!(
        text,
        "{passed} of {} passed; the passed ones are merged into your worktree. Finish your unit (do any failed part yourself).",
        outcomes.len()
    );
    text
}
