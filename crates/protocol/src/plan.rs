use serde::{Deserialize, Serialize};

/// The role a session plays. Each role gets its own prompt, tool set and model settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Scout,
    Planner,
    Worker,
    Reviewer,
    MasterReviewer,
    ConflictResolver,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Scout,
        Role::Planner,
        Role::Worker,
        Role::Reviewer,
        Role::MasterReviewer,
        Role::ConflictResolver,
    ];

    /// The name used in config files (`[roles.<name>]`) and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Scout => "scout",
            Role::Planner => "planner",
            Role::Worker => "worker",
            Role::Reviewer => "reviewer",
            Role::MasterReviewer => "master_reviewer",
            Role::ConflictResolver => "conflict_resolver",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One unit of work as the planner (or a spawning worker, or a failed review) described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitSpec {
    /// Unique within the mission, e.g. `t3` or `t3.1` for a spawned child.
    pub id: String,
    pub title: String,
    /// Handed verbatim to the worker that builds the unit.
    pub description: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Files the planner expects the unit to touch (a hint, not a constraint).
    #[serde(default)]
    pub files: Vec<String>,
    /// Best of N: how many workers build this unit side by side (candidates), when the plan says;
    /// unset takes the mission's `--attempts`. Not retries: those are `limits.unit_attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
}

/// A person's answer to a plan waiting for approval (`--approve-plan`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum PlanAnswer {
    /// Run the plan as it is.
    Approve,
    /// Send it back to the planner, which plans again with this feedback.
    Reject { feedback: String },
    /// Run these units instead (checked as a planner's plan is before they are taken).
    Edit { units: Vec<UnitSpec> },
}

impl PlanAnswer {
    /// The answer in a word, for progress lines and replies.
    pub fn as_str(&self) -> &'static str {
        match self {
            PlanAnswer::Approve => "approved",
            PlanAnswer::Reject { .. } => "rejected",
            PlanAnswer::Edit { .. } => "edited",
        }
    }
}

/// Where a unit is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    Queued,
    Running,
    WaitingOnChildren,
    Verifying,
    Reviewing,
    Merging,
    Passed,
    Failed,
    /// A dependency failed, so the unit never ran.
    Skipped,
}

impl UnitState {
    pub fn is_terminal(self) -> bool {
        matches!(self, UnitState::Passed | UnitState::Failed | UnitState::Skipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Queued => "queued",
            UnitState::Running => "running",
            UnitState::WaitingOnChildren => "waiting_on_children",
            UnitState::Verifying => "verifying",
            UnitState::Reviewing => "reviewing",
            UnitState::Merging => "merging",
            UnitState::Passed => "passed",
            UnitState::Failed => "failed",
            UnitState::Skipped => "skipped",
        }
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of running one build or test command: the evidence a review is judged on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// `build` or `test`.
    pub kind: String,
    pub command: String,
    /// `None` when the command was killed by a signal or its timeout.
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// The git tree hash of the worktree that was tested.
    pub tree: String,
    pub timed_out: bool,
    /// The last part of stdout and stderr, for the reviewer and the user.
    pub output_tail: String,
    /// The tests a failing test command named as failed (from its summary; empty when it named none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_tests: Vec<String>,
    /// Those of `failed_tests` that already failed in the mission's baseline, before any unit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub baseline_failures: Vec<String>,
    /// A test command that exited 0 but whose output reports no test, where the same command ran
    /// this many on the mission's base commit: the tests no longer run (replaced, broken, skipped),
    /// so the exit code proves nothing and the command counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests_lost: Option<u64>,
    /// A test command that exited 0 while the tree adds test definitions to files that existed on the
    /// mission's base commit, and the run counts fewer new tests than were added: the new tests are
    /// not collected (a free function in a unittest file, a test taking arguments), so they check
    /// nothing and the command counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests_not_run: Option<UnrunTests>,
    /// Under `[verify] protect_tests`: assertions of test files that existed on the mission's base
    /// commit which the tree changes or removes (`file: `line``), so a passing run proves what the
    /// worker chose, not what the project asked; the command counts as failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assertions_changed: Vec<String>,
}

/// Tests a tree adds that its test command did not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnrunTests {
    /// The test definitions added (names, or the line when there is none), at most a few.
    pub added: Vec<String>,
    /// Tests the command ran on the mission's base commit, and now.
    pub ran_before: u64,
    pub ran_now: u64,
}

impl Evidence {
    /// Exit 0 within the time limit; or a test command whose every named failure is a pre-existing
    /// one (it failed in the baseline too), so the work is not blamed for it. A failure that names no
    /// test (a compile error, a crash) is never excused.
    pub fn passed(&self) -> bool {
        if self.timed_out
            || self.tests_lost.is_some()
            || self.tests_not_run.is_some()
            || !self.assertions_changed.is_empty()
        {
            return false;
        }
        self.exit_code == Some(0) || self.only_baseline_failures()
    }

    /// A failing test command whose named failures all failed before any unit too.
    pub fn only_baseline_failures(&self) -> bool {
        self.exit_code.is_some()
            && !self.failed_tests.is_empty()
            && self
                .failed_tests
                .iter()
                .all(|t| self.baseline_failures.contains(t))
    }
}

/// The project's own build and tests on the mission's base commit, run once before any unit: what
/// already failed there is not blamed on a unit, and its build outputs warm the units' builds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// Every command passed.
    pub passed: bool,
    pub evidence: Vec<Evidence>,
    /// Tests the test command named as failed: pre-existing failures.
    #[serde(default)]
    pub failed_tests: Vec<String>,
    /// A command hit the verification timeout.
    #[serde(default)]
    pub timed_out: bool,
    pub duration_ms: u64,
    /// Build-output folders (relative to a worktree: `target`, `node_modules`) copied into each
    /// unit's worktree before its first verification; empty: units build cold.
    #[serde(default)]
    pub warm: Vec<String>,
    /// Why units build cold, when they do (cache off, no ecosystem with a cache, baseline failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
        })
    }
}

/// One problem a reviewer found; failed master reviews turn these into next round's units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewIssue {
    pub title: String,
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    pub verdict: Verdict,
    pub summary: String,
    #[serde(default)]
    pub issues: Vec<ReviewIssue>,
}

/// Token usage as reported by the model endpoint. The three kinds of input never overlap:
/// `input_tokens` is what was read without the provider's prompt cache, `cache_read_tokens` what was
/// read from it and `cache_write_tokens` what was written to it (each billed at its own price).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Absent in events stored before prompt caching was counted apart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_read_tokens: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TokenUsage {
    /// Every token the call processed, of every kind; saturating, since the counts come from a server.
    pub fn total(&self) -> u64 {
        self.prompt_tokens().saturating_add(self.output_tokens)
    }

    /// The whole prompt: plain, cached and cache-written input together.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }

    pub fn add(&mut self, other: TokenUsage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cache_read_tokens = self.cache_read_tokens.saturating_add(other.cache_read_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(other.cache_write_tokens);
    }
}
