//! One module per test file, all in the one test binary of `../all.rs`.

mod approval;
mod bounds;
mod budget;
mod cleanup;
mod closed_pipe;
mod constrained;
mod durability;
mod evidence;
mod install;
mod loops;
mod mcp;
mod mission;
mod missions;
mod notify;
mod opencode_provider;
mod profile;
mod refusals;
mod report;
mod sandbox;
mod secrets;
mod serve;
mod support;
mod telemetry;
mod traffic;
mod tui;
mod verified;
