//! Lifecycle hooks: commands from the config that the mission runs at fixed points (issue #18).

use serde::{Deserialize, Serialize};

/// The points of a mission where a configured command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// Before anything is spent; failing refuses the mission (exit 2).
    MissionStart,
    /// On round 1's plan, before it runs (or waits for approval); failing sends it back to the planner.
    AfterPlan,
    /// On a unit that passed verification and review; failing is a veto that sends it back to its worker.
    BeforeMerge,
    /// After the mission sealed; failing is recorded, the mission stays sealed.
    AfterSeal,
}

impl HookKind {
    pub const ALL: [HookKind; 4] = [
        HookKind::MissionStart,
        HookKind::AfterPlan,
        HookKind::BeforeMerge,
        HookKind::AfterSeal,
    ];

    /// The name in the config (`[hooks] before_merge`) and in the events.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::MissionStart => "mission_start",
            HookKind::AfterPlan => "after_plan",
            HookKind::BeforeMerge => "before_merge",
            HookKind::AfterSeal => "after_seal",
        }
    }
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One run of a hook, as recorded in the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRun {
    pub hook: HookKind,
    /// The unit it judged (`before_merge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The unit's attempt it judged (`before_merge`), or the plan attempt (`after_plan`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    pub command: String,
    /// `None` when it was killed (its timeout, a cancel) or could not start.
    pub exit_code: Option<i32>,
    pub timed_out: bool,
    pub duration_ms: u64,
    /// The last part of its stdout and stderr, saying how much was cut before it.
    pub output_tail: String,
}

impl HookRun {
    pub fn passed(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out
    }

    /// How it ended, in a few words: `exit 0`, `exit 1`, `timed out after 120 s`, `killed`.
    pub fn status(&self) -> String {
        match (self.exit_code, self.timed_out) {
            (_, true) => format!("timed out after {} s", self.duration_ms.div_ceil(1000)),
            (Some(code), _) => format!("exit {code}"),
            (None, _) => "killed or not started".to_string(),
        }
    }
}
