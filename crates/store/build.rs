//! The tests of the PostgreSQL store need a server: its URL in ORCHESTRATOR_TEST_PG_URL
//! (`scripts/pg-test-server` starts one). Without it they are built with `cfg(pg_missing)`, which marks
//! them ignored: .ci/run fails on ignored tests rather than counting them as passed. The TLS tests
//! also need the CA the server's certificate is signed by, in ORCHESTRATOR_TEST_PG_TLS_CA (which
//! `scripts/pg-test-server` exports when it turns TLS on): without it, `cfg(pg_tls_missing)`.

fn main() {
    println!("cargo::rerun-if-env-changed=ORCHESTRATOR_TEST_PG_URL");
    println!("cargo::rerun-if-env-changed=ORCHESTRATOR_TEST_PG_TLS_CA");
    println!("cargo::rustc-check-cfg=cfg(pg_missing)");
    println!("cargo::rustc-check-cfg=cfg(pg_tls_missing)");
    let missing = |var: &str| std::env::var_os(var).is_none_or(|value| value.is_empty());
    if missing("ORCHESTRATOR_TEST_PG_URL") {
        println!("cargo::rustc-cfg=pg_missing");
    }
    if missing("ORCHESTRATOR_TEST_PG_URL") || missing("ORCHESTRATOR_TEST_PG_TLS_CA") {
        println!("cargo::rustc-cfg=pg_tls_missing");
    }
}
