//! TLS to the PostgreSQL store (issue #20): libpq's sslmodes against the test server, which
//! `scripts/pg-test-server` starts with TLS on and a CA of its own (ORCHESTRATOR_TEST_PG_TLS_CA;
//! `other-ca.pem` beside it signed nothing); and servers of our own that refuse TLS, answer it with
//! garbage or hang up, which need no PostgreSQL.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use orchestrator_test_support::pg::{fresh_schema, TestSchema};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::mission;
use crate::{Backend, Store, StoreError};

const TLS_CA_VAR: &str = "ORCHESTRATOR_TEST_PG_TLS_CA";

/// The CA that signed the test server's certificate.
fn server_ca() -> PathBuf {
    PathBuf::from(std::env::var(TLS_CA_VAR).unwrap_or_else(|_| {
        panic!(
            "{TLS_CA_VAR} is unset: start the test server with TLS (PG_TEST_TLS=on scripts/pg-test-server …)"
        )
    }))
}

/// A CA that signed nothing the server has.
fn other_ca() -> PathBuf {
    server_ca().with_file_name("other-ca.pem")
}

/// `url` with `params` added to its query; a path in them goes percent-encoded, as in a real URL.
fn with(url: &str, params: &[(&str, &str)]) -> String {
    let mut url = url.to_string();
    for (key, value) in params {
        let sep = if url.contains('?') { '&' } else { '?' };
        url = format!("{url}{sep}{key}={}", utf8_percent_encode(value, NON_ALPHANUMERIC));
    }
    url
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

fn uses_tls(store: &Store) -> bool {
    let Backend::Pg(pg) = &store.backend else {
        panic!("a PostgreSQL store")
    };
    pg.uses_tls().unwrap()
}

/// The error of opening a store that must not open.
fn refusal(url: &str) -> StoreError {
    match Store::open_postgres(url, "/r") {
        Ok(_) => panic!("the store opened with {url}"),
        Err(e) => e,
    }
}

/// The schema's URL naming the server `host` while connecting to 127.0.0.1: what a certificate
/// issued for other names meets.
fn as_host(schema: &TestSchema, host: &str) -> String {
    let url = schema.url.replacen("@127.0.0.1:", &format!("@{host}:"), 1);
    assert_ne!(url, schema.url, "the test server's URL names 127.0.0.1");
    with(&url, &[("hostaddr", "127.0.0.1")])
}

/// The schema's URL for the role that `scripts/pg-test-server` lets in over TLS alone, with a
/// password (SCRAM).
fn with_password(schema: &TestSchema, password: &str) -> String {
    let url = schema.url.replacen(
        "//orchestrator_test@",
        &format!("//orchestrator_scram:{password}@"),
        1,
    );
    assert_ne!(url, schema.url, "the test server's URL names orchestrator_test");
    url
}

macro_rules! needs_tls_server {
    ($($test:item)*) => {$(
        #[test]
        #[cfg_attr(
            pg_tls_missing,
            ignore = "needs PostgreSQL with TLS: set ORCHESTRATOR_TEST_PG_URL and ORCHESTRATOR_TEST_PG_TLS_CA (scripts/pg-test-server)"
        )]
        $test
    )*};
}

needs_tls_server! {
    fn require_encrypts_without_checking_the_certificate() {
        let schema = fresh_schema();
        // The server's CA is in no root store here: require takes any certificate, as libpq's does.
        let store = Store::open_postgres(&with(&schema.url, &[("sslmode", "require")]), "/r").unwrap();
        assert!(uses_tls(&store));
    }

    fn prefer_takes_tls_when_offered_and_disable_stays_plain() {
        let schema = fresh_schema();
        let default = Store::open_postgres(&schema.url, "/r").unwrap();
        assert!(uses_tls(&default), "no sslmode is prefer, and this server offers TLS");
        let plain = Store::open_postgres(&with(&schema.url, &[("sslmode", "disable")]), "/r").unwrap();
        assert!(!uses_tls(&plain));
    }

    fn verify_full_with_the_servers_ca_keeps_missions() {
        let schema = fresh_schema();
        let ca = server_ca();
        let url = with(&schema.url, &[("sslmode", "verify-full"), ("sslrootcert", path(&ca))]);
        let store = Store::open_postgres(&url, "/r").unwrap();
        assert!(uses_tls(&store));
        store.create_mission(&mission("m1")).unwrap();
        let again = Store::open_postgres(&url, "/r").unwrap();
        assert_eq!(again.mission("m1").unwrap().map(|m| m.id), Some("m1".to_string()));
    }

    fn verify_full_with_another_ca_is_refused_naming_the_host_and_the_roots() {
        let schema = fresh_schema();
        let other = other_ca();
        let e = refusal(&with(&schema.url, &[("sslmode", "verify-full"), ("sslrootcert", path(&other))]));
        assert!(matches!(e, StoreError::Tls { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("the certificate of the server at 127.0.0.1 does not verify"), "{text}");
        assert!(text.contains(&format!("not signed by a CA in sslrootcert={}", other.display())), "{text}");
        assert!(text.contains("give the CA certificate that signed it with sslrootcert=PATH"), "{text}");
    }

    fn require_with_a_root_cert_checks_the_chain_as_libpq_does() {
        let schema = fresh_schema();
        let other = other_ca();
        let e = refusal(&with(&schema.url, &[("sslmode", "require"), ("sslrootcert", path(&other))]));
        assert!(e.to_string().contains("not signed by a CA"), "{e}");
        let ca = server_ca();
        let good = with(&schema.url, &[("sslmode", "require"), ("sslrootcert", path(&ca))]);
        assert!(uses_tls(&Store::open_postgres(&good, "/r").unwrap()));
    }

    fn verify_full_refuses_a_host_name_the_certificate_is_not_for_and_verify_ca_takes_it() {
        let schema = fresh_schema();
        let ca = server_ca();
        let wrong = as_host(&schema, "wrong-name.invalid");
        let e = refusal(&with(&wrong, &[("sslmode", "verify-full"), ("sslrootcert", path(&ca))]));
        assert!(matches!(e, StoreError::Tls { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("it is not issued for the host name wrong-name.invalid"), "{text}");
        assert!(text.contains("sslmode=verify-ca"), "{text}");
        // The chain is good: verify-ca checks it alone.
        let chain_only = with(&wrong, &[("sslmode", "verify-ca"), ("sslrootcert", path(&ca))]);
        assert!(uses_tls(&Store::open_postgres(&chain_only, "/r").unwrap()));
        // A name it is issued for passes verify-full, as 127.0.0.1 does.
        let right = as_host(&schema, "localhost");
        let full = with(&right, &[("sslmode", "verify-full"), ("sslrootcert", path(&ca))]);
        assert!(uses_tls(&Store::open_postgres(&full, "/r").unwrap()));
    }

    fn a_password_goes_over_tls_bound_to_the_servers_certificate() {
        let schema = fresh_schema();
        let ca = server_ca();
        let params = [("sslmode", "verify-full"), ("sslrootcert", path(&ca)), ("channel_binding", "require")];
        // channel_binding=require: SCRAM-SHA-256-PLUS with the certificate's hash, or no login.
        let store = Store::open_postgres(&with(&with_password(&schema, "orchestrator_scram"), &params), "/r").unwrap();
        assert!(uses_tls(&store));
        let e = refusal(&with(&with_password(&schema, "wrong-secret"), &params));
        let text = e.to_string();
        assert!(text.contains("password authentication failed"), "{text}");
        assert!(text.contains("postgres://orchestrator_scram:***@127.0.0.1"), "{text}");
        assert!(!text.contains("wrong-secret"), "{text}");
    }

    fn verify_ca_with_another_ca_is_refused() {
        let schema = fresh_schema();
        let other = other_ca();
        let e = refusal(&with(&schema.url, &[("sslmode", "verify-ca"), ("sslrootcert", path(&other))]));
        assert!(e.to_string().contains("not signed by a CA"), "{e}");
    }
}

#[test]
fn an_unknown_sslmode_is_refused_and_the_password_stays_hidden() {
    let e = refusal("postgres://alice:hunter2@127.0.0.1:1/db?sslmode=bogus");
    assert!(matches!(e, StoreError::BadUrl { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("sslmode=bogus is not one of disable, prefer, require, verify-ca, verify-full"),
        "{text}"
    );
    assert!(text.contains("postgres://alice:***@127.0.0.1:1/db"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let allow = refusal("postgres://alice:hunter2@127.0.0.1:1/db?sslmode=allow");
    assert!(allow.to_string().contains("use sslmode=prefer"), "{allow}");
}

#[test]
fn a_root_cert_that_cannot_be_read_is_named_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    // Port 1: nothing listens there; the refusal must come before any attempt to connect.
    let base = "postgres://alice:hunter2@127.0.0.1:1/db";
    let e = refusal(&with(
        base,
        &[("sslmode", "verify-full"), ("sslrootcert", path(&missing))],
    ));
    assert!(matches!(e, StoreError::Tls { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "cannot read the root certificate file sslrootcert={}",
            missing.display()
        )),
        "{text}"
    );
    assert!(text.contains("give the path of a readable PEM file"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");

    let not_pem = dir.path().join("ca.txt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let e = refusal(&with(
        base,
        &[("sslmode", "verify-ca"), ("sslrootcert", path(&not_pem))],
    ));
    assert!(e.to_string().contains("holds no PEM certificate"), "{e}");
}

/// What a fake server saw and did: it reads the client's first message, then `answer`s it.
fn fake_server(
    answer: impl FnOnce(&mut std::net::TcpStream) + Send + 'static,
) -> (String, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut first = vec![0; 8];
        stream.read_exact(&mut first).unwrap();
        answer(&mut stream);
        first
    });
    (format!("postgres://alice:hunter2@127.0.0.1:{port}/db"), server)
}

/// The SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 4, 210, 22, 47];

#[test]
fn a_server_without_tls_is_refused_under_require_saying_what_to_do() {
    let (url, server) = fake_server(|stream| stream.write_all(b"N").unwrap());
    let e = refusal(&with(&url, &[("sslmode", "require")]));
    assert_eq!(
        server.join().unwrap(),
        SSL_REQUEST,
        "the client asks for TLS before anything else"
    );
    assert!(matches!(e, StoreError::Tls { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains(
            "the server at 127.0.0.1 does not accept TLS connections, which sslmode=require demands"
        ),
        "{text}"
    );
    assert!(text.contains("ssl = on"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn a_server_that_floods_garbage_instead_of_tls_is_refused() {
    let (url, server) = fake_server(|stream| {
        stream.write_all(b"S").unwrap();
        // Not a TLS record, and no end to it: what a proxy or another service might send. It stops
        // once the client hangs up, so the client must give up on what it read, not on a close.
        while stream.write_all(&[b'x'; 4096]).is_ok() {}
    });
    let e = refusal(&with(&url, &[("sslmode", "require")]));
    assert_eq!(server.join().unwrap(), SSL_REQUEST);
    assert!(matches!(e, StoreError::Tls { .. }), "{e:?}");
    assert!(
        e.to_string().contains("the TLS handshake with 127.0.0.1 failed"),
        "{e}"
    );
}

#[test]
fn a_server_that_hangs_up_mid_handshake_is_reported_unreachable() {
    let (url, server) = fake_server(|stream| stream.write_all(b"S").unwrap());
    let e = refusal(&with(&url, &[("sslmode", "require")]));
    assert_eq!(server.join().unwrap(), SSL_REQUEST);
    let text = e.to_string();
    assert!(
        text.contains("cannot reach the mission store at postgres://alice:***@127.0.0.1"),
        "{text}"
    );
    assert!(text.contains("TLS handshake"), "{text}");
}

#[test]
fn a_server_that_goes_silent_mid_connection_is_given_up_on() {
    for (mode, answer) in [("require", &b"S"[..]), ("disable", &b""[..])] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        // Takes the connection, answers the first message as a TLS server would (or not at all),
        // then holds it without a word: the postgres crate's connect_timeout covers none of that.
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut first = vec![0; 8];
            stream.read_exact(&mut first).unwrap();
            stream.write_all(answer).unwrap();
            let _ = first_tx.send(first);
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        });
        let url = format!("postgres://alice:hunter2@127.0.0.1:{port}/db?connect_timeout=1&sslmode={mode}");
        let e = refusal(&url);
        let first = first_rx.recv().unwrap();
        assert_eq!(first == SSL_REQUEST, mode == "require", "{mode}: {first:?}");
        let text = e.to_string();
        assert!(
            text.contains("no answer within 3 s of connecting"),
            "{mode}: {text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}
