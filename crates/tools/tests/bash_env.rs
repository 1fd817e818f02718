//! Credentials in the environment must not reach commands the model runs.
//!
//! This is its own test binary with a single test because it changes the process environment, which is
//! unsound while other threads may read it: it stays out of tests/all.rs, where every other test of
//! the crate runs on a thread of one process.

#[path = "suite/common.rs"]
#[allow(dead_code)] // this binary uses only part of the helpers
mod common;

use common::Fixture;
use serde_json::json;

#[tokio::test]
async fn api_keys_and_auth_tokens_are_removed_from_the_environment() {
    let secrets = [
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "SOME_VENDOR_API_KEY",
        "CLAUDE_CODE_AUTH_TOKEN",
    ];
    for name in secrets {
        std::env::set_var(name, "sk-secret-value");
    }
    std::env::set_var("ORCHESTRATOR_TEST_VISIBLE", "still-here");
    let fx = Fixture::writable();
    let out = fx.ok("bash", json!({"command": "env"})).await;
    assert!(!out.contains("sk-secret-value"), "{out}");
    for name in secrets {
        assert!(!out.contains(name), "{name} leaked: {out}");
    }
    assert!(out.contains("ORCHESTRATOR_TEST_VISIBLE=still-here"), "{out}");
}
