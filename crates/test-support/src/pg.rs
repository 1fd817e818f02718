//! PostgreSQL for the tests: the server `scripts/pg-test-server` started (its URL in
//! ORCHESTRATOR_TEST_PG_URL; `.ci/run` starts one), and a schema of its own for each test so that tests
//! run in parallel on one server without seeing each other's missions.
//!
//! Crates whose tests need it mark them `#[cfg_attr(pg_missing, ignore = …)]` from a build script that
//! sets `pg_missing` when the variable is unset at build time: CI then counts them as ignored and
//! fails, as it does for the OpenCode tests.

use std::sync::atomic::{AtomicU32, Ordering};

/// The variable that carries the test server's URL.
pub const PG_URL_VAR: &str = "ORCHESTRATOR_TEST_PG_URL";

/// The test server's URL as given.
pub fn server_url() -> String {
    std::env::var(PG_URL_VAR).unwrap_or_else(|_| {
        panic!("{PG_URL_VAR} is unset: run the tests under `scripts/pg-test-server run cargo test …`")
    })
}

/// A schema of one test on the test server.
pub struct TestSchema {
    /// Connections made with it work in the schema alone and carry its name as application_name.
    pub url: String,
    pub name: String,
}

impl TestSchema {
    /// Ends the connections made with [`TestSchema::url`]: what a restarted server or a cut network
    /// does to a running mission.
    pub fn terminate_connections(&self) -> u64 {
        terminate_connections(&self.name)
    }
}

/// Runs `f` on a thread of its own: the sync client must not block an async test's runtime.
fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    std::thread::scope(|s| s.spawn(f).join()).unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A fresh, empty schema on the test server.
pub fn fresh_schema() -> TestSchema {
    off_runtime(fresh_schema_here)
}

fn fresh_schema_here() -> TestSchema {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = server_url();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let schema = format!(
        "t{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let mut client = postgres::Client::connect(&base, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot reach the test server at {base}: {e}"));
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap_or_else(|e| panic!("cannot create schema {schema}: {e}"));
    let url = format!("{}&application_name={schema}", with_search_path(&base, &schema));
    TestSchema { url, name: schema }
}

/// `url` with `search_path` set to `schema` for every connection made with it.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

/// Ends every server connection whose application_name is `name`.
pub fn terminate_connections(name: &str) -> u64 {
    off_runtime(|| terminate_here(name))
}

fn terminate_here(name: &str) -> u64 {
    let mut client = postgres::Client::connect(&server_url(), postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot reach the test server: {e}"));
    let rows = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&name],
        )
        .unwrap_or_else(|e| panic!("cannot end connections: {e}"));
    rows.len() as u64
}
