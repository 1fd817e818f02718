//! What external workers and their commander need besides the queue (issue #20): a worker's
//! transcripts written and compacted only while its lease holds, a reader following a transcript
//! as it grows, and the repositories that have work. On both backends.

use std::time::{Duration, Instant};

use serde_json::json;

use super::Backend;
use crate::{Holder, Outcome, Store, StoreError, UnitKey, UnitOffer};

on_both_backends!(
    a_holders_transcript_is_followed_and_compacted_only_while_it_holds_the_unit,
    the_repositories_with_open_units_are_listed,
);

fn holder(id: &str) -> Holder {
    Holder {
        id: id.into(),
        host: "h".into(),
    }
}

fn offer(store: &Store, unit: &str) {
    let offer = UnitOffer {
        key: UnitKey {
            mission: "m1".into(),
            unit: unit.into(),
            attempt: 1,
        },
        payload: json!({}),
    };
    store.offer_unit(&offer).unwrap();
}

fn a_holders_transcript_is_followed_and_compacted_only_while_it_holds_the_unit(b: &dyn Backend) {
    let store = b.open();
    let other = b.reopen();
    offer(&store, "u1");
    let old = store
        .claim_units(&holder("a"), 1, Duration::from_secs(1))
        .unwrap()
        .remove(0);
    for idx in 0..5 {
        store
            .append_message_fenced(&old.fence, "relay:u1@t1", idx, &json!({ "n": idx }))
            .unwrap();
    }
    // A reader takes what it has not seen, in order, at most as many as it asks for.
    let next = other.messages_from("m1", "relay:u1@t1", 1, 2).unwrap();
    assert_eq!(next, vec![(1, json!({"n": 1})), (2, json!({"n": 2}))]);
    let rest = other.messages_from("m1", "relay:u1@t1", 3, 100).unwrap();
    assert_eq!(rest.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![3, 4]);
    assert!(other
        .messages_from("m1", "relay:u1@t1", 5, 100)
        .unwrap()
        .is_empty());
    assert!(other.messages_from("m1", "nobody", 0, 100).unwrap().is_empty());

    // A holder's compaction replaces its transcript whole.
    store
        .replace_messages_fenced(&old.fence, "worker:u1", &[json!("summary"), json!("last")])
        .unwrap();
    assert_eq!(
        store.messages("m1", "worker:u1").unwrap(),
        vec![json!("summary"), json!("last")]
    );

    // Taken over: the old holder's compaction is refused and changes nothing.
    let deadline = Instant::now() + Duration::from_secs(60);
    let new = loop {
        let mut claimed = other
            .claim_units(&holder("b"), 1, Duration::from_secs(600))
            .unwrap();
        if let Some(unit) = claimed.pop() {
            break unit;
        }
        assert!(Instant::now() < deadline, "a's lease never expired");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(new.fence.token > old.fence.token);
    let refused = store.replace_messages_fenced(&old.fence, "worker:u1", &[json!("stale")]);
    assert!(
        matches!(refused, Err(StoreError::LeaseLost { .. })),
        "{refused:?}"
    );
    assert_eq!(
        store.messages("m1", "worker:u1").unwrap(),
        vec![json!("summary"), json!("last")]
    );
    other
        .replace_messages_fenced(&new.fence, "worker:u1", &[json!("b's")])
        .unwrap();
    assert_eq!(store.messages("m1", "worker:u1").unwrap(), vec![json!("b's")]);
}

fn the_repositories_with_open_units_are_listed(b: &dyn Backend) {
    let store = b.open();
    assert!(store.repos_with_work().unwrap().is_empty());
    offer(&store, "u1");
    assert_eq!(store.repos_with_work().unwrap().len(), 1);
    let claimed = store
        .claim_units(&holder("a"), 1, Duration::from_secs(600))
        .unwrap()
        .remove(0);
    assert_eq!(store.repos_with_work().unwrap().len(), 1, "a leased unit is open");
    store
        .finish_unit(&claimed.fence, Outcome::Done, &json!({}))
        .unwrap();
    assert!(store.repos_with_work().unwrap().is_empty(), "nothing left to do");
}
