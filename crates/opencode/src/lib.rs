//! A typed async client for OpenCode's HTTP server (`opencode serve`), and the pieces the engine needs
//! to run its sessions there.
//!
//! - [`server::OpencodeServer`] starts `opencode serve` on a loopback port we do not have to guess
//!   (`--port 0`, the address is read from its first line) and stops it with its process group.
//! - [`client::Client`] talks to a server we started or one the user points at, with the HTTP basic
//!   auth OpenCode uses when `OPENCODE_SERVER_PASSWORD` is set. Every call names the directory it is
//!   about: one OpenCode server serves many project folders (our worktrees), chosen per request by
//!   the `directory` query parameter.
//! - [`tool_bridge::ToolBridge`] serves our orchestration tools over MCP (streamable HTTP) on
//!   127.0.0.1, one URL per session key, so a call is always attributed to the session that made it.
//!
//! docs/opencode-provider.md has the design for wiring this into the engine and the exact endpoints.

pub mod client;
mod error;
pub mod server;
pub mod tool_bridge;
pub mod types;

pub use client::{Auth, Client};
pub use error::{Error, Result};
pub use server::{OpencodeServer, ServerOptions};
pub use tool_bridge::{BridgeCall, BridgeReply, BridgeTool, ToolBridge};
pub use types::*;
