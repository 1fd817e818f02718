//! What a commander hands an `orchestrator worker` for one unit, and what comes back (issue #20).
//! Both travel as JSON through the store's work queue; the commits travel through the mission's
//! shared git remote, under the ref names made here.
//!
//! A worker's events reach the mission's log through the commander, its one writer: the worker
//! writes them, fenced by its lease, as a "relay" transcript of the unit, and the commander reads
//! that transcript as it grows and emits each event on its own bus.

use orchestrator_protocol::{Event, MissionSettings, UnitSpec};
use serde::{Deserialize, Serialize};

/// Which shape of ticket this build writes; a worker refuses (fails) a ticket from a newer one.
pub(crate) const TICKET_VERSION: u32 = 1;

/// Everything a worker needs to build one unit: the rest it reads from the repository at `base`
/// (its `orchestrator.toml`, role files and instructions) and from its own host (model endpoint
/// and key).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Ticket {
    pub version: u32,
    pub objective: String,
    pub unit: UnitSpec,
    pub round: u32,
    /// The commit the unit starts from; on the remote's integration ref (or an ancestor of it).
    pub base: String,
    pub remote: String,
    /// The mission context from discovery, which every worker brief carries.
    pub context: String,
    pub verify: VerifyCommands,
    /// The mission's own settings (as `resume` would use them): model, sandbox, limits.
    pub settings: MissionSettings,
    /// The mission's tokens left when the unit was offered: the worker's budget for it.
    pub budget_left: Option<u64>,
}

/// The commands that judge the unit, as the commander resolved them for the whole mission, so a
/// worker judges exactly as the commander would.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct VerifyCommands {
    pub install: Option<String>,
    pub build: Option<String>,
    pub lint: Option<String>,
    pub test: Option<String>,
}

/// How a worker's run of a unit ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TicketResult {
    pub passed: bool,
    pub summary: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// What the last attempt was told, for the next round's retry.
    #[serde(default)]
    pub findings: Option<String>,
    /// The commit that passed verification and review, pushed to `pushed_ref` on the remote.
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub pushed_ref: Option<String>,
    /// Stopped for a reason that is not the unit's (budget, endpoint, cancel): the commander offers
    /// it again on `resume`, not as a failure.
    #[serde(default)]
    pub interrupted: bool,
}

/// The remote ref the commander publishes the mission's integration head to.
pub(crate) fn integration_ref(mission: &str) -> String {
    format!("refs/heads/orchestrator/{mission}/integration")
}

/// The remote ref a unit's holder pushes its work to. The token is in the name: each holder has a
/// ref of its own, so a replaced holder cannot touch its successor's, and the commander merges only
/// the commit the store's fenced result names.
pub(crate) fn worker_ref(mission: &str, unit: &str, token: i64) -> String {
    format!("refs/heads/orchestrator/{mission}/w/{unit}@t{token}")
}

/// The transcript a unit's holder relays its events through.
pub(crate) fn relay_session(unit: &str, token: i64) -> String {
    format!("relay:{unit}@t{token}")
}

/// Whether a worker's event goes into the mission's log: its local branch and its own traffic
/// figures mean nothing there.
pub(crate) fn relayed(event: &Event) -> bool {
    !matches!(
        event,
        Event::UnitPrepared { .. }
            | Event::ModelTraffic { .. }
            | Event::MissionFinished { .. }
            | Event::ProjectFiles { .. }
    )
}
