//! The mission engine: Commander, phase 0 discovery, planning, parallel execution with fractal
//! spawning (HPFA), and two-stage verification (MSVP), over the native agent runtime.
//!
//! Front ends call [`run_task`] with an [`EventBus`] they have subscribed to; everything the engine
//! does is reported as [`orchestrator_protocol::Event`]s on that bus.

mod client;
pub mod config;
mod error;
mod events;
mod lock;
mod mission;
pub mod plan;
pub mod prescan;
mod prompts;
mod roles;
mod session;
mod units;
mod verify;

pub use error::{EngineError, Result};
pub use events::EventBus;
pub use mission::{run_task, MissionOptions, MissionReport, STATE_DIR};
pub use prompts::system_prompt;
