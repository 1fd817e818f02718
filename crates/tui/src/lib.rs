//! The live terminal view of a mission.
//!
//! [`App`] and [`render`] are pure (state in, screen out; keys become [`Action`]s), so the view is tested
//! with snapshots and key presses without a terminal; [`run`] is the thin loop that owns the terminal.

mod app;
mod render;
mod term;
mod timeline;

pub use app::{Action, App, EditRequest, Exit, Input, InputKind, LogPanel};
pub use render::render;
pub use term::{editor_open, is_active, restore, run};
