use std::path::{Path, PathBuf};

use orchestrator_protocol::{Event, EventEnvelope};

use super::*;

fn mission(id: &str) -> MissionRecord {
    MissionRecord {
        id: id.into(),
        objective: "build it with key sk-secret-123".into(),
        base_commit: "abc".into(),
        user_branch: Some("main".into()),
        integration_branch: format!("orchestrator/{id}/integration"),
        options: serde_json::json!({"max_parallel": 3}),
        status: MissionStatus::Running,
        pid: Some(42),
        created_at: String::new(),
        updated_at: String::new(),
    }
}

/// A place for a store: the tests written once run on each backend.
trait Backend {
    /// The store, created empty on first use.
    fn open(&self) -> Store;
    /// The same store opened again, as another process would.
    fn reopen(&self) -> Store;
}

struct Sqlite(tempfile::TempDir);

impl Backend for Sqlite {
    fn open(&self) -> Store {
        Store::open(&self.0.path().join("state.db")).unwrap()
    }
    fn reopen(&self) -> Store {
        Store::open_existing(&self.0.path().join("state.db")).unwrap()
    }
}

struct Postgres(orchestrator_test_support::pg::TestSchema);

impl Backend for Postgres {
    fn open(&self) -> Store {
        Store::open_postgres(&self.0.url, "/repos/a").unwrap()
    }
    fn reopen(&self) -> Store {
        self.open()
    }
}

/// Each named test, `fn name(b: &dyn Backend)`, as `name::sqlite` and `name::postgres`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(&crate::tests::Sqlite(tempfile::tempdir().unwrap()));
            }

            #[test]
            #[cfg_attr(pg_missing, ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)")]
            fn postgres() {
                super::$name(&crate::tests::Postgres(orchestrator_test_support::pg::fresh_schema()));
            }
        }
    )*};
}

on_both_backends!(
    missions_events_and_messages_round_trip,
    secrets_are_masked_in_what_is_read_back,
    missions_are_found_by_a_prefix_of_their_id,
    only_an_unfinished_mission_is_abandoned,
    a_plan_answer_waits_until_taken_and_the_latest_word_counts,
    the_inbox_is_bounded_per_unit_and_delivers_once,
    a_compacted_transcript_replaces_the_old_one,
);

mod lease;
mod relay;
mod shared;
mod tls;

fn secrets_are_masked_in_what_is_read_back(b: &dyn Backend) {
    let store = b.open();
    store.set_secrets(vec!["sk-secret-123".into()]);
    store.create_mission(&mission("m1")).unwrap();
    store
        .append_event(&event("m1", 0, "the key is sk-secret-123"))
        .unwrap();
    store
        .append_message("m1", "s", 0, &serde_json::json!({"content": "sk-secret-123"}))
        .unwrap();
    store.put_inbox("m1", "t1", "sk-secret-123", 4).unwrap();
    drop(store);
    let store = b.reopen();
    let everything = format!(
        "{:?} {:?} {:?} {:?}",
        store.mission("m1").unwrap(),
        store.events_after("m1", None).unwrap(),
        store.messages("m1", "s").unwrap(),
        store.waiting_inbox("m1").unwrap()
    );
    assert!(!everything.contains("sk-secret-123"), "{everything}");
    assert!(everything.contains("[redacted]"));
}

fn a_compacted_transcript_replaces_the_old_one(b: &dyn Backend) {
    let store = b.open();
    store.create_mission(&mission("m1")).unwrap();
    for idx in 0..5 {
        store
            .append_message("m1", "w", idx, &serde_json::json!({"n": idx}))
            .unwrap();
    }
    let compacted = [serde_json::json!({"summary": true}), serde_json::json!({"n": 4})];
    store.replace_messages("m1", "w", &compacted).unwrap();
    assert_eq!(store.messages("m1", "w").unwrap(), compacted.to_vec());
    // A message written again at a place it had (a retried write) replaces it.
    store
        .append_message("m1", "w", 1, &serde_json::json!({"n": "again"}))
        .unwrap();
    assert_eq!(store.messages("m1", "w").unwrap()[1]["n"], "again");
    assert!(store.messages("m1", "other").unwrap().is_empty());
}

fn event(mission: &str, seq: u64, message: &str) -> EventEnvelope {
    EventEnvelope {
        seq,
        at: chrono::Utc::now(),
        mission: mission.into(),
        event: Event::Notice {
            message: message.into(),
        },
    }
}

fn missions_events_and_messages_round_trip(b: &dyn Backend) {
    let store = b.open();
    store.create_mission(&mission("m1")).unwrap();
    store.create_mission(&mission("m2")).unwrap();
    assert_eq!(store.latest_mission().unwrap().unwrap().id, "m2");
    let ids: Vec<String> = store.missions().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec!["m2", "m1"], "newest first");
    store.set_status("m1", MissionStatus::Interrupted, None).unwrap();
    let m1 = store.mission("m1").unwrap().unwrap();
    assert_eq!(m1.status, MissionStatus::Interrupted);
    assert_eq!(m1.options["max_parallel"], 3);
    for seq in 0..3 {
        store.append_event(&event("m1", seq, &format!("e{seq}"))).unwrap();
    }
    assert!(
        store.append_event(&event("m1", 1, "again")).is_err(),
        "sequence numbers are unique"
    );
    assert_eq!(store.events_after("m1", Some(0)).unwrap().len(), 2);
    assert_eq!(store.last_seq("m1").unwrap(), Some(2));
    assert_eq!(store.last_seq("m2").unwrap(), None);
    store
        .append_message("m1", "worker:a", 0, &serde_json::json!({"role": "user"}))
        .unwrap();
    store
        .append_message("m1", "worker:a", 1, &serde_json::json!({"role": "assistant"}))
        .unwrap();
    assert_eq!(store.messages("m1", "worker:a").unwrap().len(), 2);
    store.truncate_messages("m1", "worker:a", 1).unwrap();
    assert_eq!(store.messages("m1", "worker:a").unwrap().len(), 1);
}

#[test]
fn secrets_are_masked_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = Store::open(&path).unwrap();
    store.set_secrets(vec!["sk-secret-123".into()]);
    store.create_mission(&mission("m1")).unwrap();
    store
        .append_event(&event("m1", 0, "the key is sk-secret-123"))
        .unwrap();
    store
        .append_message("m1", "s", 0, &serde_json::json!({"content": "sk-secret-123"}))
        .unwrap();
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    let wal = std::fs::read(dir.path().join("state.db-wal")).unwrap_or_default();
    let needle = b"sk-secret-123";
    assert!(!bytes.windows(needle.len()).any(|w| w == needle));
    assert!(!wal.windows(needle.len()).any(|w| w == needle));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = Store::open(&path).err().unwrap();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    assert!(err.to_string().contains("newer orchestrator"));
}

#[test]
fn garbage_and_truncated_files_are_reported_not_panicked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(
        &path,
        b"this is not a database at all, just some text that is long enough",
    )
    .unwrap();
    let err = Store::open_existing(&path).err().unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("move it aside"));

    let good = dir.path().join("good.db");
    let store = Store::open(&good).unwrap();
    store.create_mission(&mission("m1")).unwrap();
    drop(store);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::remove_file(dir.path().join("good.db-wal")).ok();
    std::fs::write(&good, &bytes[..bytes.len().min(100)]).unwrap();
    assert!(Store::open_existing(&good).is_err());
    assert!(matches!(
        Store::open_existing(&dir.path().join("none.db")).err().unwrap(),
        StoreError::Missing(_)
    ));
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn store_files(dir: &Path) -> Vec<PathBuf> {
    ["state.db", "state.db-wal", "state.db-shm"]
        .iter()
        .map(|name| dir.join(name))
        .collect()
}

#[test]
fn a_new_store_is_private_to_its_user() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path().join(".orchestrator");
    private_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    let store = Store::open(&dir.join("state.db")).unwrap();
    store.create_mission(&mission("m1")).unwrap();
    for file in store_files(&dir) {
        assert!(file.exists(), "{} exists while the store is open", file.display());
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    // Running private_dir again (every open does) changes nothing.
    private_dir(&dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn an_old_world_readable_store_is_tightened_when_opened() {
    use std::os::unix::fs::PermissionsExt;
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path().join(".orchestrator");
    std::fs::create_dir(&dir).unwrap();
    let store = Store::open(&dir.join("state.db")).unwrap();
    store.create_mission(&mission("m1")).unwrap();
    // As stores were before: the folder 0755, the files 0644.
    std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
    for file in store_files(&dir) {
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
    }
    private_dir(&dir).unwrap();
    let reopened = Store::open_existing(&dir.join("state.db")).unwrap();
    assert_eq!(mode(&dir), 0o700);
    for file in store_files(&dir) {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert_eq!(reopened.latest_mission().unwrap().unwrap().id, "m1");
    drop(store);
}

fn missions_are_found_by_a_prefix_of_their_id(b: &dyn Backend) {
    let store = b.open();
    for id in [
        "m20250101-1200-aaaa",
        "m20250101-1200-aabb",
        "m20250102-0900-cccc",
    ] {
        store.create_mission(&mission(id)).unwrap();
    }
    let ids = |prefix: &str| -> Vec<String> {
        store
            .missions_with_prefix(prefix)
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect()
    };
    assert_eq!(
        ids("m20250101-1200-aa"),
        vec!["m20250101-1200-aabb", "m20250101-1200-aaaa"]
    );
    assert_eq!(ids("m20250102"), vec!["m20250102-0900-cccc"]);
    assert_eq!(
        ids("m20250101-1200-aaaa"),
        vec!["m20250101-1200-aaaa"],
        "a whole id"
    );
    assert_eq!(ids("").len(), 3, "an empty prefix matches every mission");
    // What people type is matched as characters: no SQL wildcard widens it.
    assert!(ids("m2025%").is_empty());
    assert!(ids("m2025010_").is_empty());
    assert!(ids("x").is_empty());
}

fn only_an_unfinished_mission_is_abandoned(b: &dyn Backend) {
    let store = b.open();
    for id in ["killed", "stopped", "sealed"] {
        store.create_mission(&mission(id)).unwrap();
    }
    store
        .set_status("stopped", MissionStatus::Interrupted, None)
        .unwrap();
    store.set_status("sealed", MissionStatus::Sealed, None).unwrap();
    store.append_event(&event("killed", 0, "kept")).unwrap();

    assert!(store.abandon("killed").unwrap(), "running with a dead process");
    assert!(store.abandon("stopped").unwrap());
    assert!(
        !store.abandon("sealed").unwrap(),
        "a finished mission stays finished"
    );
    assert!(!store.abandon("killed").unwrap(), "abandoned once");
    assert!(!store.abandon("nope").unwrap());

    let killed = store.mission("killed").unwrap().unwrap();
    assert_eq!(killed.status, MissionStatus::Abandoned);
    assert_eq!(killed.pid, None);
    assert!(!killed.status.is_unfinished(), "resume never picks it");
    assert!(!killed.updated_at.is_empty());
    assert_eq!(
        store.events_after("killed", None).unwrap().len(),
        1,
        "its log stays"
    );
    assert_eq!(
        store.mission("sealed").unwrap().unwrap().status,
        MissionStatus::Sealed
    );
}

fn a_plan_answer_waits_until_taken_and_the_latest_word_counts(b: &dyn Backend) {
    use orchestrator_protocol::PlanAnswer;
    let store = b.open();
    store.create_mission(&mission("m1")).unwrap();
    assert_eq!(store.plan_answer("m1").unwrap(), None);
    store.put_plan_answer("m1", 1, &PlanAnswer::Approve).unwrap();
    let reject = PlanAnswer::Reject {
        feedback: "smaller units".into(),
    };
    store.put_plan_answer("m1", 2, &reject).unwrap();
    drop(store);
    // Another process (the mission's) reads what `approve` wrote.
    let store = b.reopen();
    assert_eq!(store.plan_answer("m1").unwrap(), Some((2, reject)));
    assert_eq!(store.plan_answer("m2").unwrap(), None);
    store.clear_plan_answer("m1").unwrap();
    assert_eq!(store.plan_answer("m1").unwrap(), None);
}

#[test]
fn a_store_of_the_first_schema_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "BEGIN; {}; PRAGMA user_version = 1; COMMIT;",
        MIGRATIONS[0]
    ))
    .unwrap();
    drop(conn);
    let store = Store::open_existing(&path).unwrap();
    store.create_mission(&mission("m1")).unwrap();
    store
        .put_plan_answer("m1", 1, &orchestrator_protocol::PlanAnswer::Approve)
        .unwrap();
    assert!(store.plan_answer("m1").unwrap().is_some());
}

#[test]
fn a_store_of_the_second_schema_gets_an_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "BEGIN; {}; {}; PRAGMA user_version = 2; COMMIT;",
        MIGRATIONS[0], MIGRATIONS[1]
    ))
    .unwrap();
    drop(conn);
    let store = Store::open_existing(&path).unwrap();
    store.create_mission(&mission("m1")).unwrap();
    assert!(store.put_inbox("m1", "t1", "hello", 4).unwrap().is_some());
    assert_eq!(store.waiting_inbox("m1").unwrap().len(), 1);
}

fn the_inbox_is_bounded_per_unit_and_delivers_once(b: &dyn Backend) {
    let store = b.open();
    store.set_secrets(vec!["sk-secret-123456".into()]);
    store.create_mission(&mission("m1")).unwrap();
    let first = store
        .put_inbox("m1", "t1", "one sk-secret-123456", 2)
        .unwrap()
        .unwrap();
    store.put_inbox("m1", "t1", "two", 2).unwrap().unwrap();
    assert_eq!(store.put_inbox("m1", "t1", "three", 2).unwrap(), None, "full");
    assert!(store.put_inbox("m1", "t2", "other unit", 2).unwrap().is_some());
    assert!(store.put_inbox("m2", "t1", "other mission", 2).unwrap().is_some());
    let waiting = store.waiting_inbox("m1").unwrap();
    assert_eq!(waiting.len(), 3);
    assert_eq!(waiting[0].message, "one [redacted]", "secrets are masked");

    let envelope = event("m1", 0, "delivered");
    let json = serde_json::to_string(&envelope).unwrap();
    let delivery = Delivery {
        inbox: vec![first],
        transcript: Some(("worker:t1".into(), 3, serde_json::json!({"role": "user"}))),
    };
    store.append_delivery(&envelope, &json, &delivery).unwrap();
    let waiting = store.waiting_inbox("m1").unwrap();
    assert_eq!(waiting.len(), 2);
    assert!(waiting.iter().all(|m| m.id != first));
    assert_eq!(store.events_after("m1", None).unwrap().len(), 1);
    assert_eq!(store.messages("m1", "worker:t1").unwrap().len(), 1);
    // A delivered message frees its place.
    assert!(store.put_inbox("m1", "t1", "three", 2).unwrap().is_some());
    // The same seq twice fails whole: the row is not marked by a failed delivery.
    let second = waiting[0].id;
    let again = Delivery {
        inbox: vec![second],
        transcript: None,
    };
    assert!(store.append_delivery(&envelope, &json, &again).is_err());
    assert!(store.waiting_inbox("m1").unwrap().iter().any(|m| m.id == second));
}

/// The PostgreSQL store's own behaviour: what SQLite has no counterpart for.
mod postgres {
    use orchestrator_test_support::pg::fresh_schema;

    use super::*;
    use crate::Backend;

    #[test]
    #[cfg_attr(
        pg_missing,
        ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
    )]
    fn a_listener_hears_each_change_of_the_work_queue_as_it_commits() {
        use std::sync::mpsc;
        use std::time::{Duration, Instant};

        let schema = fresh_schema();
        let store = Store::open_postgres(&schema.url, "/repos/a").unwrap();
        let other_repo = Store::open_postgres(&schema.url, "/repos/b").unwrap();
        let (heard, hear) = mpsc::channel::<(String, String)>();
        let listener = store
            .listen(move |repo, mission| {
                let _ = heard.send((repo.to_string(), mission.to_string()));
            })
            .unwrap()
            .expect("PostgreSQL listens");
        // Each step changes a mission of its own and waits for that one: notifications of earlier
        // steps that arrive late (a loaded machine) are passed over, never taken for this step's.
        let heard_within = |repo: &str, mission: &str, within: Duration| {
            let started = Instant::now();
            while let Some(left) = within.checked_sub(started.elapsed()) {
                match hear.recv_timeout(left) {
                    Ok((r, m)) if r == repo && m == mission => return true,
                    Ok(_) => {}
                    Err(_) => return false,
                }
            }
            false
        };
        let offer = |store: &Store, mission: &str, unit: &str| {
            let key = crate::UnitKey {
                mission: mission.into(),
                unit: unit.into(),
                attempt: 1,
            };
            store
                .offer_unit(&crate::UnitOffer {
                    key,
                    payload: serde_json::json!({}),
                })
                .unwrap()
        };
        // The listener's LISTEN may not have run yet: offer until one is heard.
        let mut n = 0;
        while !{
            n += 1;
            offer(&store, "warm-up", &format!("u{n}"));
            heard_within("/repos/a", "warm-up", Duration::from_millis(500))
        } {
            assert!(n < 40, "no notification after {n} offers");
        }
        let long = Duration::from_secs(10);
        assert!(offer(&store, "offered", "u1"));
        assert!(heard_within("/repos/a", "offered", long), "an offer");
        store.set_max_parallel("capped", 2).unwrap();
        assert!(heard_within("/repos/a", "capped", long), "a cap");
        // A repository of its own, so that the claims below take this unit and no other.
        let third = Store::open_postgres(&schema.url, "/repos/c").unwrap();
        offer(&third, "given-back", "u1");
        third.set_max_parallel("given-back", 1).unwrap();
        let holder = crate::Holder {
            id: "w".into(),
            host: "h".into(),
        };
        let ours = third
            .claim_units(&holder, 1, Duration::from_secs(60))
            .unwrap()
            .remove(0);
        while hear.try_recv().is_ok() {}
        third.release_unit(&ours.fence).unwrap();
        assert!(heard_within("/repos/c", "given-back", long), "a unit given back");
        let ours = third
            .claim_units(&holder, 1, Duration::from_secs(60))
            .unwrap()
            .remove(0);
        while hear.try_recv().is_ok() {}
        third
            .finish_unit(&ours.fence, crate::Outcome::Done, &serde_json::json!({}))
            .unwrap();
        assert!(heard_within("/repos/c", "given-back", long), "a unit finished");
        // Another repository's changes are heard too (a worker serves every repository).
        other_repo.set_max_parallel("elsewhere", 1).unwrap();
        assert!(heard_within("/repos/b", "elsewhere", long));
        // An offer that changes nothing (the same unit again) says nothing.
        assert!(!offer(&store, "offered", "u1"));
        assert!(!heard_within("/repos/a", "offered", Duration::from_millis(700)));
        // Dropped, it stops.
        drop(listener);
        std::thread::sleep(Duration::from_secs(1));
        store.set_max_parallel("after-drop", 3).unwrap();
        assert!(
            !heard_within("/repos/a", "after-drop", Duration::from_secs(2)),
            "a stopped listener hears nothing"
        );
        // SQLite has no listener.
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Store::open(&dir.path().join("state.db")).unwrap();
        assert!(sqlite.listen(|_, _| {}).unwrap().is_none());
    }

    #[test]
    #[cfg_attr(
        pg_missing,
        ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
    )]
    fn repositories_sharing_a_database_see_their_own_missions() {
        let schema = fresh_schema();
        let a = Store::open_postgres(&schema.url, "/repos/a").unwrap();
        let b = Store::open_postgres(&schema.url, "/repos/b").unwrap();
        // The same mission id in both: ids are per repository.
        a.create_mission(&mission("m1")).unwrap();
        b.create_mission(&mission("m1")).unwrap();
        b.create_mission(&mission("m2")).unwrap();
        a.append_event(&event("m1", 0, "from a")).unwrap();
        b.append_event(&event("m1", 0, "from b")).unwrap();
        a.append_message("m1", "s", 0, &serde_json::json!("a")).unwrap();
        a.set_status("m1", MissionStatus::Sealed, None).unwrap();
        assert_eq!(a.missions().unwrap().len(), 1);
        assert_eq!(b.missions().unwrap().len(), 2);
        assert_eq!(b.latest_mission().unwrap().unwrap().id, "m2");
        assert_eq!(b.mission("m1").unwrap().unwrap().status, MissionStatus::Running);
        assert_eq!(a.events_after("m1", None).unwrap().len(), 1);
        assert!(b.messages("m1", "s").unwrap().is_empty());
        assert!(b.put_inbox("m1", "t", "hi", 1).unwrap().is_some());
        assert!(
            a.put_inbox("m1", "t", "hi", 1).unwrap().is_some(),
            "its own inbox"
        );
        assert!(
            a.abandon("m2").map(|done| !done).unwrap(),
            "b's mission is not a's"
        );
    }

    #[test]
    #[cfg_attr(
        pg_missing,
        ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
    )]
    fn a_nul_in_a_persons_text_or_a_models_output_is_stored() {
        let schema = fresh_schema();
        let store = Store::open_postgres(&schema.url, "/r").unwrap();
        let mut m = mission("m1");
        m.objective = "fix\0it".into();
        store.create_mission(&m).unwrap();
        assert_eq!(store.mission("m1").unwrap().unwrap().objective, "fix\u{FFFD}it");
        store.put_inbox("m1", "t", "a\0b", 2).unwrap().unwrap();
        store.append_event(&event("m1", 0, "model said \0")).unwrap();
        let events = store.events_after("m1", None).unwrap();
        assert!(matches!(&events[0].event, Event::Notice { message } if message == "model said \0"));
        store
            .append_message("m1", "s", 0, &serde_json::json!({"content": "\0"}))
            .unwrap();
        assert_eq!(store.messages("m1", "s").unwrap()[0]["content"], "\0");
    }

    #[test]
    fn an_unreachable_server_is_named_with_its_password_masked() {
        // A port nothing listens on: bind one, then let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("postgres://alice:hunter2-secret@127.0.0.1:{port}/missions");
        let err = Store::open_postgres(&url, "/r").err().unwrap();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Unreachable { .. }), "{text}");
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("alice:***@"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn a_malformed_url_is_refused_without_echoing_it() {
        let err = Store::open_postgres("postgres://u:pw@host:notaport/db", "/r")
            .err()
            .unwrap();
        assert!(matches!(err, StoreError::BadUrl { .. }), "{err}");
        assert!(!err.to_string().contains("pw@"), "{err}");
    }

    #[test]
    #[cfg_attr(
        pg_missing,
        ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
    )]
    fn commits_are_relaxed_unless_the_url_says_otherwise() {
        let schema = fresh_schema();
        let setting = |url: &str| {
            let store = Store::open_postgres(url, "/r").unwrap();
            let Backend::Pg(pg) = &store.backend else {
                panic!("a PostgreSQL store")
            };
            pg.setting("synchronous_commit").unwrap()
        };
        assert_eq!(setting(&schema.url), "off");
        let strict = format!("{}&options=-csynchronous_commit%3Don", schema.url);
        assert_eq!(setting(&strict), "on");
    }

    #[test]
    #[cfg_attr(
        pg_missing,
        ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
    )]
    fn a_newer_schema_is_refused() {
        let schema = fresh_schema();
        drop(Store::open_postgres(&schema.url, "/r").unwrap());
        let mut client = ::postgres::Client::connect(&schema.url, ::postgres::NoTls).unwrap();
        client
            .batch_execute("UPDATE orchestrator_schema SET version = 99")
            .unwrap();
        let err = Store::open_postgres(&schema.url, "/r").err().unwrap();
        assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
    }

    #[test]
    #[cfg_attr(
        pg_missing,
        ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
    )]
    fn processes_starting_at_once_migrate_once() {
        let schema = fresh_schema();
        let stores: Vec<_> = (0..4)
            .map(|_| {
                let url = schema.url.clone();
                std::thread::spawn(move || Store::open_postgres(&url, "/r").map(drop))
            })
            .collect();
        for store in stores {
            store.join().unwrap().unwrap();
        }
    }

    #[test]
    #[cfg_attr(
        pg_missing,
        ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
    )]
    fn a_lost_connection_fails_writes_cleanly_and_nothing_half_written_stays() {
        let schema = fresh_schema();
        let store = Store::open_postgres(&schema.url, "/r").unwrap();
        store.create_mission(&mission("m1")).unwrap();
        store.append_event(&event("m1", 0, "before")).unwrap();
        assert!(schema.terminate_connections() >= 1);
        let err = store.append_event(&event("m1", 1, "after")).err().unwrap();
        assert!(matches!(err, StoreError::Postgres(_)), "{err}");
        // Every later call fails the same way, none panics or hangs.
        assert!(store.last_seq("m1").is_err());
        drop(store);
        // A new process finds the log as it was: resumable from its last event.
        let store = Store::open_postgres(&schema.url, "/r").unwrap();
        assert_eq!(store.last_seq("m1").unwrap(), Some(0));
    }
}
