//! The mission engine: Commander, phase 0 discovery, planning, parallel execution with fractal
//! spawning (HPFA), and two-stage verification (MSVP), over the native agent runtime.
//!
//! Front ends call [`run_task`] with an [`EventBus`] they have subscribed to; everything the engine
//! does is reported as [`orchestrator_protocol::Event`]s on that bus.

mod across_hosts;
mod approval;
mod baseline;
mod checked;
mod clean;
mod client;
pub mod compact;
pub mod config;
mod control;
mod effective;
mod error;
mod events;
mod grounded;
mod hints;
mod hooks;
mod inbox;
pub mod instructions;
pub mod leader;
mod lock;
mod mcp_servers;
mod mission;
mod missions;
mod offers;
pub mod opencode;
pub mod plan;
pub mod prescan;
pub mod pricing;
mod prompts;
mod replay;
pub mod role_files;
mod roles;
mod session;
mod shared;
mod status;
mod store_url;
mod test_count;
#[cfg(test)]
mod test_repo;
mod ticket;
mod units;
mod verify;
mod worker_process;

pub use approval::{answer_plan, plan_answer_from, refused_edit, waiting_plan, WaitingPlan};
pub use clean::{clean, CleanReport};
pub use control::{MissionControl, Steering};
pub use effective::{init_roles, list_roles, role_named, show_named, show_role, show_specialist, RoleShow};
pub use error::{EngineError, Result};
pub use events::EventBus;
pub use inbox::{check_tell, clean_message, tell, Recipient, INBOX_PER_UNIT, MAX_MESSAGE_BYTES};
pub use mission::{
    open_store, open_store_in, repo_root, resume, run_task, IfInterrupted, MissionOptions, MissionReport,
    ResumeOptions, STATE_DIR,
};
pub use missions::{find_mission, interrupted, missions, shorten, stored_time, MissionState, MissionSummary};
pub use orchestrator_store::MissionStatus;
pub use prompts::{builtin_body, system_prompt, Prompts};
pub use replay::{CandidatePick, SessionRecord};
pub use status::{
    cancel, cancel_mission, mission_process, process_alive, status, status_of, LeaderStatus, RoleUsage,
    StatusReport, UnitStatus, WorkUnitState, WorkUnitStatus,
};
pub use store_url::{set_store_url, STORE_URL_VAR};
pub use worker_process::{run_worker, WorkerOptions, WorkerReport, MAX_SLOTS};
