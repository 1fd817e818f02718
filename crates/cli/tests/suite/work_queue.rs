//! `orchestrator status` shows who holds each unit of a mission's work queue (docs/scale-out.md):
//! units offered and claimed through the store, as a commander and workers on other hosts would,
//! with a worker whose name is a terminal escape. On SQLite and on PostgreSQL.

use std::time::{Duration, Instant};

use orchestrator_store::{Holder, MissionRecord, MissionStatus, Outcome, Store, UnitKey, UnitOffer};
use orchestrator_test_support::pg::{fresh_schema, TestSchema};
use serde_json::{json, Value};

use super::support::*;

const MISSION: &str = "m20261204-1200-queue";
const LONG: Duration = Duration::from_secs(600);
const SHORT: Duration = Duration::from_secs(1);
/// A worker on another host that names itself with escape sequences and a newline.
const EVIL: &str = "evil\u{1b}[31m";
const EVIL_HOST: &str = "host\nb";

/// The repository's store, opened (created) as another process would, with the mission recorded.
fn store_with_mission(repo: &TestRepo, schema: Option<&TestSchema>) -> Store {
    let store = match schema {
        Some(schema) => {
            let scope = std::fs::canonicalize(repo.path()).expect("repo path");
            Store::open_postgres(&schema.url, &scope.display().to_string())
                .expect("the PostgreSQL store opens")
        }
        None => {
            let dir = repo.path().join(".orchestrator");
            orchestrator_store::private_dir(&dir).expect("state folder");
            Store::open(&dir.join("state.db")).expect("the store opens")
        }
    };
    store
        .create_mission(&MissionRecord {
            id: MISSION.into(),
            objective: "Hand units to workers".into(),
            base_commit: repo.git(&["rev-parse", "HEAD"]).trim().to_string(),
            user_branch: Some("main".into()),
            integration_branch: format!("orchestrator/{MISSION}/integration"),
            options: json!({}),
            status: MissionStatus::Interrupted,
            pid: None,
            created_at: String::new(),
            updated_at: String::new(),
        })
        .expect("mission recorded");
    store
}

async fn status(repo: &TestRepo, schema: Option<&TestSchema>, json: bool) -> Finished {
    let mut run = Run::cmd(&["status"]);
    if json {
        run = run.arg("--json");
    }
    if let Some(schema) = schema {
        run = run.arg("--store").arg(&schema.url);
    }
    let done = run.run(repo).await;
    done.assert_code(0);
    done
}

fn worker(id: &str, host: &str) -> Holder {
    Holder {
        id: id.into(),
        host: host.into(),
    }
}

fn claim(store: &Store, who: &Holder, slots: usize, ttl: Duration) -> Vec<orchestrator_store::Fence> {
    let claimed = store.claim_units(who, slots, ttl).expect("claimed");
    assert_eq!(claimed.len(), slots, "{} got {claimed:?}", who.id);
    claimed.into_iter().map(|c| c.fence).collect()
}

async fn status_shows_who_holds_each_unit(schema: Option<&TestSchema>) {
    let repo = TestRepo::new(&[("a.txt", "a\n")]);
    let store = store_with_mission(&repo, schema);

    // A mission that runs its sessions itself has no queue: nothing of it is shown.
    let before = status(&repo, schema, false).await;
    assert!(!before.stdout.contains("work queue"), "{}", before.stdout);
    let report: Value = serde_json::from_str(&status(&repo, schema, true).await.stdout).expect("JSON");
    assert_eq!(report["work_units"], json!([]), "{report}");

    store.set_max_parallel(MISSION, 5).expect("cap");
    for unit in ["a", "b", "c", "d", "e"] {
        let offer = UnitOffer {
            key: UnitKey {
                mission: MISSION.into(),
                unit: unit.into(),
                attempt: 0,
            },
            payload: json!({"unit": unit}),
        };
        assert!(store.offer_unit(&offer).expect("offered"));
    }
    // Oldest offer first: w1 holds a, the evil worker b (briefly), w3 c and d, which it finishes.
    claim(&store, &worker("w1", "host-a"), 1, LONG);
    claim(&store, &worker(EVIL, EVIL_HOST), 1, SHORT);
    let done = claim(&store, &worker("w3", "host-c"), 2, LONG);
    store
        .finish_unit(&done[0], Outcome::Done, &json!({"ok": true}))
        .expect("finished");
    store
        .finish_unit(&done[1], Outcome::Failed, &json!({"ok": false}))
        .expect("finished");
    // The evil worker dies: its lease expires, by the store's clock.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !store
        .work_units(MISSION)
        .expect("read")
        .iter()
        .any(|u| u.key.unit == "b" && u.expired)
    {
        assert!(Instant::now() < deadline, "b's lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let text = status(&repo, schema, false).await.stdout;
    for said in [
        "work queue: 2 leased, 1 ready, 1 done, 1 failed\n",
        "  a (attempt 0): held by w1 on host-a (token 1, lease until ",
        "  b (attempt 0): lease expired at ",
        "(held by evil\\u{1b}[31m on host\\nb, token 1); the next claim takes it over\n",
    ] {
        assert!(text.contains(said), "{said:?} in:\n{text}");
    }
    assert!(
        !text.contains('\u{1b}'),
        "no raw escape reaches the terminal:\n{text}"
    );
    assert!(
        !text.contains(" c (attempt"),
        "finished units are counted, not listed:\n{text}"
    );

    let report: Value = serde_json::from_str(&status(&repo, schema, true).await.stdout).expect("JSON");
    let units = report["work_units"].as_array().expect("an array");
    let row = |n: usize| {
        let u = &units[n];
        (
            u["unit"].as_str().unwrap_or_default().to_string(),
            u["state"].as_str().unwrap_or_default().to_string(),
            u["holder"].clone(),
            u["host"].clone(),
            u["token"].as_i64(),
            u["expires_at"].is_string(),
            u["expired"].as_bool(),
        )
    };
    assert_eq!(units.len(), 5, "{report}");
    let s = |t: &str| json!(t);
    assert_eq!(
        row(0),
        (
            "a".into(),
            "leased".into(),
            s("w1"),
            s("host-a"),
            Some(1),
            true,
            Some(false)
        )
    );
    // JSON carries the names as written; escaping them is the reader's, as JSON does it.
    assert_eq!(
        row(1),
        (
            "b".into(),
            "leased".into(),
            s(EVIL),
            s(EVIL_HOST),
            Some(1),
            true,
            Some(true)
        )
    );
    assert_eq!(
        row(2),
        (
            "c".into(),
            "done".into(),
            s("w3"),
            s("host-c"),
            Some(1),
            false,
            Some(false)
        )
    );
    assert_eq!(
        row(3),
        (
            "d".into(),
            "failed".into(),
            s("w3"),
            s("host-c"),
            Some(1),
            false,
            Some(false)
        )
    );
    assert_eq!(
        row(4),
        (
            "e".into(),
            "ready".into(),
            Value::Null,
            Value::Null,
            Some(0),
            false,
            Some(false)
        )
    );
    assert!(units.iter().all(|u| u["attempt"] == 0), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_who_holds_each_unit_on_sqlite() {
    status_shows_who_holds_each_unit(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
async fn status_shows_who_holds_each_unit_on_postgres() {
    let schema = fresh_schema();
    status_shows_who_holds_each_unit(Some(&schema)).await;
}
