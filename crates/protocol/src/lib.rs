//! The typed protocol between the orchestrator engine and its front ends.
//!
//! The engine emits one stream of [`EventEnvelope`]s; the progress printer, the `--json` output and the
//! mission log all consume the same stream, so no front end needs to reach into the engine. Front ends
//! steer a running mission with [`Op`]s, and give a new one its [`MissionSettings`].

mod event;
mod hook;
mod op;
mod plan;
mod settings;

pub use event::*;
pub use hook::{HookKind, HookRun};
pub use op::{Op, Steer};
pub use plan::*;
pub use settings::{MissionSettings, Provider, Workers};
