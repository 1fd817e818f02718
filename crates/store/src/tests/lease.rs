//! The work queue with leases and the leader lease, on both backends. Leases here last 1 s and the
//! tests wait for the store to say they expired (by its own clock): they assert on order and state,
//! never on how long something took.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::Backend;
use crate::{
    ClaimedUnit, Fence, Holder, MissionStatus, Outcome, Store, StoreError, UnitKey, UnitOffer, UnitState,
    MAX_ID_BYTES, MAX_JSON_BYTES,
};

const SHORT: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(600);

on_both_backends!(
    two_claimers_racing_never_get_the_same_unit,
    an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off,
    an_expired_lease_nobody_took_is_still_its_holders,
    a_unit_whose_holders_all_die_is_failed_after_the_last_take_over,
    a_unit_given_back_too_often_ends_with_its_holders_result,
    a_finished_missions_queue_is_forgotten_but_not_while_a_worker_holds_a_unit,
    max_parallel_holds_across_two_workers,
    claims_at_the_same_instant_both_get_units,
    a_worker_never_holds_more_than_its_slots,
    offering_twice_is_one_row,
    a_released_unit_goes_to_the_next_claim_and_status_shows_who_holds_what,
    a_retried_report_succeeds_once_and_a_different_one_is_refused,
    the_leader_lease_cannot_be_taken_while_live_and_can_after_expiry,
    a_live_lead_is_taken_over_only_from_the_token_named,
    a_fenced_event_log_takes_only_the_leaders_appends,
    fenced_transcripts_and_status_take_only_the_leaders_writes,
    a_take_over_racing_fenced_writes_cuts_them_off_cleanly,
    commanders_racing_for_a_mission_leave_one_leader,
    unicode_ids_and_odd_json_are_stored_faithfully,
    oversized_or_unreadable_input_is_refused_and_changes_nothing,
);

fn key(mission: &str, unit: &str) -> UnitKey {
    UnitKey {
        mission: mission.into(),
        unit: unit.into(),
        attempt: 0,
    }
}

fn offer(store: &Store, mission: &str, unit: &str) {
    let offer = UnitOffer {
        key: key(mission, unit),
        payload: json!({"unit": unit}),
    };
    assert!(store.offer_unit(&offer).unwrap(), "{unit} is new");
}

fn worker(id: &str) -> Holder {
    Holder {
        id: id.into(),
        host: format!("host-of-{id}"),
    }
}

/// Polls `done` until it holds; a lease of 1 s expires well within the minute even on a busy machine.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn expired(store: &Store, key: &UnitKey) -> bool {
    store
        .work_units(&key.mission)
        .unwrap()
        .iter()
        .any(|u| &u.key == key && u.expired)
}

fn lost(result: crate::Result<impl std::fmt::Debug>) -> bool {
    matches!(result, Err(StoreError::LeaseLost { .. }))
}

fn two_claimers_racing_never_get_the_same_unit(b: &dyn Backend) {
    let setup = b.open();
    let missions = ["m1", "m2", "m3"];
    for mission in missions {
        setup.set_max_parallel(mission, 1000).unwrap();
        for n in 0..100 {
            offer(&setup, mission, &format!("u{n}"));
        }
    }
    // A worker that claims a third of them and dies: its leases expire and go to the racers.
    let dead = setup.claim_units(&worker("w0"), 100, SHORT).unwrap();
    assert_eq!(dead.len(), 100);
    wait_until("the dead worker's leases expire", || {
        missions.iter().all(|m| live_leases(&setup, m) == 0)
    });
    let finished = AtomicUsize::new(0);
    let claims: Vec<Vec<ClaimedUnit>> = std::thread::scope(|s| {
        let racers: Vec<_> = ["w1", "w2"]
            .into_iter()
            .map(|id| {
                // A store handle of its own, as a worker on another host has.
                let store = b.reopen();
                let finished = &finished;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while finished.load(Ordering::SeqCst) < 300 {
                        assert!(Instant::now() < deadline, "the claimers never emptied the queue");
                        let units = store.claim_units(&worker(id), 7, LONG).unwrap();
                        if units.is_empty() {
                            // The other holds the rest: poll as a worker would, without spinning.
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        for unit in units {
                            store
                                .finish_unit(&unit.fence, Outcome::Done, &json!({"by": id}))
                                .unwrap();
                            finished.fetch_add(1, Ordering::SeqCst);
                            mine.push(unit);
                        }
                    }
                    mine
                })
            })
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let mut seen = BTreeMap::new();
    for unit in claims.iter().flatten() {
        let taken_over = dead.iter().any(|d| d.fence.key == unit.fence.key);
        assert_eq!(unit.fence.token, if taken_over { 2 } else { 1 });
        assert!(
            seen.insert(unit.fence.key.clone(), ()).is_none(),
            "{} handed out twice",
            unit.fence.key
        );
    }
    assert_eq!(seen.len(), 300);
    for mission in missions {
        let units = setup.work_units(mission).unwrap();
        assert_eq!(units.len(), 100);
        assert!(units.iter().all(|u| u.state == UnitState::Done));
    }
}

fn an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off(b: &dyn Backend) {
    let store = b.open();
    let other = b.reopen();
    assert_eq!(other.max_parallel("m1").unwrap(), None, "nothing offered yet");
    store.set_max_parallel("m1", 4).unwrap();
    assert_eq!(other.max_parallel("m1").unwrap(), Some(4));
    offer(&store, "m1", "u1");
    let old = store.claim_units(&worker("a"), 1, SHORT).unwrap().remove(0);
    assert_eq!(old.fence.token, 1);
    assert_eq!(old.payload, json!({"unit": "u1"}));
    store
        .append_message_fenced(&old.fence, "worker:u1", 0, &json!({"from": "a"}))
        .unwrap();
    assert!(
        other.claim_units(&worker("b"), 1, LONG).unwrap().is_empty(),
        "live lease"
    );

    wait_until("a's lease expires", || expired(&other, &old.fence.key));
    let new = other.claim_units(&worker("b"), 1, LONG).unwrap().remove(0);
    assert_eq!(new.fence.key, old.fence.key);
    assert!(new.fence.token > old.fence.token, "a takeover bumps the token");

    // Everything the old holder tries now is refused and changes nothing.
    assert!(lost(store.heartbeat(&old.fence, LONG)));
    assert!(lost(store.finish_unit(
        &old.fence,
        Outcome::Done,
        &json!("a's result")
    )));
    assert!(lost(store.append_message_fenced(
        &old.fence,
        "worker:u1",
        1,
        &json!({"from": "a"})
    )));
    assert!(lost(store.append_message_fenced(
        &old.fence,
        "worker:u1",
        0,
        &json!({"overwrite": "a"})
    )));
    assert!(lost(store.release_unit(&old.fence)));
    let unit = &store.work_units("m1").unwrap()[0];
    assert_eq!(unit.state, UnitState::Leased);
    assert_eq!(unit.holder, Some(worker("b")));
    assert_eq!(unit.token, new.fence.token);
    assert_eq!(unit.result, None);
    assert_eq!(
        store.messages("m1", "worker:u1").unwrap(),
        vec![json!({"from": "a"})]
    );

    // The new holder's writes go through.
    other.heartbeat(&new.fence, LONG).unwrap();
    other
        .append_message_fenced(&new.fence, "worker:u1", 0, &json!({"from": "b"}))
        .unwrap();
    other
        .finish_unit(&new.fence, Outcome::Failed, &json!({"tests": "red"}))
        .unwrap();
    let unit = &store.work_units("m1").unwrap()[0];
    assert_eq!(unit.state, UnitState::Failed);
    assert_eq!(unit.result, Some(json!({"tests": "red"})));
    assert_eq!(
        store.messages("m1", "worker:u1").unwrap(),
        vec![json!({"from": "b"})]
    );
    // A finished unit is nobody's: not claimable, no more heartbeats.
    assert!(other.claim_units(&worker("c"), 1, LONG).unwrap().is_empty());
    assert!(lost(other.heartbeat(&new.fence, LONG)));
}

fn an_expired_lease_nobody_took_is_still_its_holders(b: &dyn Backend) {
    // The token decides, not the clock: a worker that was slow to renew but lost nothing goes on.
    let store = b.open();
    offer(&store, "m1", "u1");
    let unit = store.claim_units(&worker("a"), 1, SHORT).unwrap().remove(0);
    wait_until("the lease expires", || expired(&store, &unit.fence.key));
    let expires = store.heartbeat(&unit.fence, LONG).unwrap().expires_at_ms;
    let row = &store.work_units("m1").unwrap()[0];
    assert!(!row.expired);
    assert_eq!(row.expires_at_ms, Some(expires));
    assert!(
        store.claim_units(&worker("b"), 1, LONG).unwrap().is_empty(),
        "renewed"
    );
    // The mission's cap comes with each renewal: 0 is its commander saying stop.
    store.set_max_parallel("m1", 0).unwrap();
    let beat = store.heartbeat(&unit.fence, LONG).unwrap();
    assert_eq!(beat.max_parallel, Some(0));
    assert!(beat.expires_at_ms >= expires);
    store
        .finish_unit(&unit.fence, Outcome::Done, &json!(null))
        .unwrap();
}

fn live_leases(store: &Store, mission: &str) -> usize {
    let units = store.work_units(mission).unwrap();
    units
        .iter()
        .filter(|u| u.state == UnitState::Leased && !u.expired)
        .count()
}

fn max_parallel_holds_across_two_workers(b: &dyn Backend) {
    let setup = b.open();
    setup.set_max_parallel("m1", 3).unwrap();
    for n in 0..10 {
        offer(&setup, "m1", &format!("u{n}"));
    }
    // Two workers with room for all ten claim at once, again and again.
    std::thread::scope(|s| {
        for id in ["w1", "w2"] {
            let store = b.reopen();
            s.spawn(move || {
                for _ in 0..20 {
                    store.claim_units(&worker(id), 10, LONG).unwrap();
                }
            });
        }
    });
    assert_eq!(live_leases(&setup, "m1"), 3);

    // One finished frees one place, whoever claims it.
    let a = setup.claim_units(&worker("w1"), 10, LONG).unwrap();
    assert!(a.is_empty(), "full");
    let held = setup.work_units("m1").unwrap();
    let first = held.iter().find(|u| u.state == UnitState::Leased).unwrap();
    let fence = Fence {
        key: first.key.clone(),
        token: first.token,
    };
    setup.finish_unit(&fence, Outcome::Done, &json!(1)).unwrap();
    assert_eq!(setup.claim_units(&worker("w3"), 10, LONG).unwrap().len(), 1);
    assert_eq!(live_leases(&setup, "m1"), 3);

    // Another mission has its own cap; raising this one's lets more through.
    setup.set_max_parallel("m2", 2).unwrap();
    for n in 0..5 {
        offer(&setup, "m2", &format!("u{n}"));
    }
    assert_eq!(setup.claim_units(&worker("w3"), 10, LONG).unwrap().len(), 2);
    setup.set_max_parallel("m1", 5).unwrap();
    assert_eq!(setup.claim_units(&worker("w4"), 10, LONG).unwrap().len(), 2);
    assert_eq!(live_leases(&setup, "m1"), 5);
    assert_eq!(live_leases(&setup, "m2"), 2);
}

fn claims_at_the_same_instant_both_get_units(b: &dyn Backend) {
    // A claim waits for another's to commit rather than coming back empty while work waits.
    let setup = b.open();
    setup.set_max_parallel("m1", 100).unwrap();
    for n in 0..40 {
        offer(&setup, "m1", &format!("u{n}"));
    }
    for round in 0..4 {
        let start = std::sync::Barrier::new(2);
        let got: Vec<usize> = std::thread::scope(|s| {
            let racers: Vec<_> = ["w1", "w2"]
                .into_iter()
                .map(|id| {
                    let store = b.reopen();
                    let start = &start;
                    s.spawn(move || {
                        start.wait();
                        let claimed = store.claim_units(&worker(&format!("{id}-{round}")), 5, LONG);
                        claimed.unwrap().len()
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(got, [5, 5], "round {round}");
    }
    assert_eq!(live_leases(&setup, "m1"), 40);
}

fn a_worker_never_holds_more_than_its_slots(b: &dyn Backend) {
    let store = b.open();
    // A mission that never set its cap gets the default of one at a time.
    offer(&store, "m0", "only");
    offer(&store, "m0", "other");
    store.set_max_parallel("m1", 100).unwrap();
    for n in 0..10 {
        offer(&store, "m1", &format!("u{n}"));
    }
    let first = store.claim_units(&worker("w1"), 3, LONG).unwrap();
    let units: Vec<String> = first.iter().map(|c| c.fence.key.to_string()).collect();
    assert_eq!(
        units,
        [key("m0", "only"), key("m1", "u0"), key("m1", "u1")].map(|k| k.to_string())
    );
    // It holds three of its three slots: nothing more until it gives one back.
    assert!(store.claim_units(&worker("w1"), 3, LONG).unwrap().is_empty());
    store.release_unit(&first[1].fence).unwrap();
    let again = store.claim_units(&worker("w1"), 3, LONG).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].fence.key, key("m1", "u0"));
    assert!(store.claim_units(&worker("w2"), 0, LONG).unwrap().is_empty());
    assert_eq!(
        store.claim_units(&worker("w2"), 20, LONG).unwrap().len(),
        8,
        "m0 is still full"
    );
}

fn offering_twice_is_one_row(b: &dyn Backend) {
    let store = b.open();
    let first = UnitOffer {
        key: key("m1", "u1"),
        payload: json!({"v": 1}),
    };
    assert!(store.offer_unit(&first).unwrap());
    let again = UnitOffer {
        payload: json!({"v": 2}),
        ..first.clone()
    };
    assert!(!store.offer_unit(&again).unwrap(), "the same unit and attempt");
    let claimed = store.claim_units(&worker("w"), 5, LONG).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        claimed[0].payload,
        json!({"v": 1}),
        "the first offer's payload stays"
    );
    // Offered again while leased (a commander that resumed): still one row, still leased.
    assert!(!store.offer_unit(&first).unwrap());
    let units = store.work_units("m1").unwrap();
    assert_eq!(units.len(), 1);
    assert_eq!(units[0].state, UnitState::Leased);
    // Another attempt at the unit is another row.
    let retry = UnitOffer {
        key: UnitKey {
            attempt: 1,
            ..first.key.clone()
        },
        payload: json!({"v": 3}),
    };
    assert!(store.offer_unit(&retry).unwrap());
    assert_eq!(store.work_units("m1").unwrap().len(), 2);
}

fn a_released_unit_goes_to_the_next_claim_and_status_shows_who_holds_what(b: &dyn Backend) {
    let store = b.open();
    store.set_max_parallel("m1", 2).unwrap();
    offer(&store, "m1", "u1");
    offer(&store, "m1", "u2");
    let claimed = store.claim_units(&worker("w1"), 2, LONG).unwrap();
    let units: Vec<&str> = claimed.iter().map(|c| c.fence.key.unit.as_str()).collect();
    assert_eq!(units, ["u1", "u2"], "oldest offer first");
    let status = store.work_units("m1").unwrap();
    assert_eq!(status[0].holder, Some(worker("w1")));
    assert_eq!(status[0].expires_at_ms, Some(claimed[0].expires_at_ms));
    assert_eq!(status[0].token, 1);
    assert!(!status[0].expired);

    store.release_unit(&claimed[0].fence).unwrap();
    let status = store.work_units("m1").unwrap();
    assert_eq!(status[0].state, UnitState::Ready);
    assert_eq!(status[0].holder, None);
    assert!(lost(store.release_unit(&claimed[0].fence)), "released already");
    let next = store.claim_units(&worker("w2"), 1, LONG).unwrap().remove(0);
    assert_eq!(next.fence.key.unit, "u1");
    assert_eq!(next.fence.token, 2, "a new claim, a new token");
    assert!(lost(store.heartbeat(&claimed[0].fence, LONG)));
    assert_eq!(store.work_units("m1").unwrap()[0].holder, Some(worker("w2")));
    assert!(store.work_units("nothing").unwrap().is_empty());
}

fn a_retried_report_succeeds_once_and_a_different_one_is_refused(b: &dyn Backend) {
    let store = b.open();
    offer(&store, "m1", "u1");
    let unit = store.claim_units(&worker("w"), 1, LONG).unwrap().remove(0);
    store
        .finish_unit(&unit.fence, Outcome::Done, &json!({"n": 1}))
        .unwrap();
    // Its answer lost on the way, the worker reports again: fine, and the first result stays.
    store
        .finish_unit(&unit.fence, Outcome::Done, &json!({"n": 2}))
        .unwrap();
    assert_eq!(store.work_units("m1").unwrap()[0].result, Some(json!({"n": 1})));
    assert!(lost(store.finish_unit(
        &unit.fence,
        Outcome::Failed,
        &json!(null)
    )));
    let never = Fence {
        key: key("m1", "nope"),
        token: 1,
    };
    assert!(lost(store.heartbeat(&never, LONG)), "no such unit");
}

fn the_leader_lease_cannot_be_taken_while_live_and_can_after_expiry(b: &dyn Backend) {
    let store = b.open();
    let other = b.reopen();
    assert_eq!(store.leader("m1").unwrap(), None);
    let first = store.acquire_leader("m1", &worker("c1"), SHORT).unwrap();
    assert_eq!(first.holder, worker("c1"));
    let err = other.acquire_leader("m1", &worker("c2"), LONG).err().unwrap();
    assert!(
        matches!(&err, StoreError::LeaderHeld { holder, .. } if holder == "c1"),
        "{err}"
    );
    // Not even the same commander takes it twice: acquiring is for a new leader.
    assert!(store.acquire_leader("m1", &worker("c1"), LONG).is_err());
    store.renew_leader("m1", first.token, SHORT).unwrap();
    // Another mission's lead is free.
    other.acquire_leader("m2", &worker("c2"), LONG).unwrap();

    wait_until("c1's lead expires", || {
        other.leader("m1").unwrap().is_some_and(|l| l.expired)
    });
    let second = other.acquire_leader("m1", &worker("c2"), LONG).unwrap();
    assert!(second.token > first.token);
    assert!(lost(store.renew_leader("m1", first.token, LONG)));
    assert!(lost(store.release_leader("m1", first.token)));
    let now = store.leader("m1").unwrap().unwrap();
    assert_eq!(
        (now.holder, now.token, now.expired),
        (worker("c2"), second.token, false)
    );

    // Released, it is free at once, and its token still only grows.
    other.release_leader("m1", second.token).unwrap();
    assert_eq!(store.leader("m1").unwrap(), None);
    let third = store.acquire_leader("m1", &worker("c3"), LONG).unwrap();
    assert!(third.token > second.token);
}

fn a_live_lead_is_taken_over_only_from_the_token_named(b: &dyn Backend) {
    let store = b.open();
    let other = b.reopen();
    let first = store.acquire_leader("m1", &worker("c1"), LONG).unwrap();
    assert_eq!(
        store.still_leads("m1").unwrap(),
        None,
        "a handle not fenced says nothing"
    );
    store.fence_by_leader("m1", first.token);
    assert_eq!(store.still_leads("m1").unwrap(), Some(true));
    // A take-over naming a token that does not lead is refused as acquiring is, with the expiry.
    let err = other
        .take_over_leader("m1", &worker("c2"), LONG, first.token + 7)
        .err()
        .unwrap();
    assert!(
        matches!(&err, StoreError::LeaderHeld { holder, expires_at_ms, .. }
            if holder == "c1" && *expires_at_ms == first.expires_at_ms),
        "{err}"
    );
    let second = other
        .take_over_leader("m1", &worker("c2"), LONG, first.token)
        .unwrap();
    assert!(second.token > first.token);
    assert_eq!(
        store.still_leads("m1").unwrap(),
        Some(false),
        "the first commander is told"
    );
    assert!(lost(store.renew_leader("m1", first.token, LONG)));
    // Nothing leads after a release: a take-over from any token then acquires.
    other.release_leader("m1", second.token).unwrap();
    let third = store
        .take_over_leader("m1", &worker("c3"), LONG, first.token)
        .unwrap();
    assert!(third.token > second.token);
    assert_eq!(store.leader("m1").unwrap().unwrap().holder, worker("c3"));
}

fn a_fenced_event_log_takes_only_the_leaders_appends(b: &dyn Backend) {
    let store = b.open();
    let other = b.reopen();
    let first = store.acquire_leader("m1", &worker("c1"), SHORT).unwrap();
    store.fence_by_leader("m1", first.token);
    store.append_event(&super::event("m1", 0, "one")).unwrap();
    // Another mission's events, and another handle's (`tell`, `approve`), are not fenced.
    store.append_event(&super::event("m2", 0, "elsewhere")).unwrap();
    other.append_event(&super::event("m1", 1, "from tell")).unwrap();
    // An expired lead nobody took is still the leader's.
    wait_until("c1's lead expires", || {
        other.leader("m1").unwrap().is_some_and(|l| l.expired)
    });
    store
        .append_event(&super::event("m1", 2, "late but leading"))
        .unwrap();

    let second = other.acquire_leader("m1", &worker("c2"), LONG).unwrap();
    assert!(lost(store.append_event(&super::event("m1", 3, "stale"))));
    let delivery = crate::Delivery {
        inbox: vec![],
        transcript: Some(("s1".into(), 0, json!({"role": "user", "content": "stale"}))),
    };
    let stale = super::event("m1", 3, "stale delivery");
    let json = serde_json::to_string(&stale).unwrap();
    assert!(lost(store.append_delivery(&stale, &json, &delivery)));
    assert!(
        store.messages("m1", "s1").unwrap().is_empty(),
        "nothing of it written"
    );

    other.fence_by_leader("m1", second.token);
    other.append_event(&super::event("m1", 3, "new leader")).unwrap();
    let seqs: Vec<u64> = other
        .events_after("m1", None)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![0, 1, 2, 3]);
    let last = other.events_after("m1", Some(2)).unwrap();
    assert!(
        matches!(&last[0].event, orchestrator_protocol::Event::Notice { message } if message == "new leader"),
        "{last:?}"
    );
}

fn said(text: &str) -> serde_json::Value {
    json!({"role": "assistant", "content": text})
}

fn status_and_pid(store: &Store, mission: &str) -> (MissionStatus, Option<u32>) {
    let record = store.mission(mission).unwrap().unwrap();
    (record.status, record.pid)
}

fn fenced_transcripts_and_status_take_only_the_leaders_writes(b: &dyn Backend) {
    let store = b.open();
    let other = b.reopen();
    for mission in ["m1", "m2"] {
        store.create_mission(&super::mission(mission)).unwrap();
    }
    let first = store.acquire_leader("m1", &worker("c1"), SHORT).unwrap();
    store.fence_by_leader("m1", first.token);
    store.append_message("m1", "s1", 0, &said("zero")).unwrap();
    store.append_message("m1", "s1", 1, &said("one")).unwrap();
    store.set_status("m1", MissionStatus::Running, Some(7)).unwrap();
    // An expired lead nobody took is still the leader's: every kind of write goes through.
    wait_until("c1's lead expires", || {
        other.leader("m1").unwrap().is_some_and(|l| l.expired)
    });
    store.append_message("m1", "s1", 2, &said("late")).unwrap();
    store
        .replace_messages("m1", "s1", &[said("summary"), said("late"), said("cut")])
        .unwrap();
    store.truncate_messages("m1", "s1", 2).unwrap();
    store.set_status("m1", MissionStatus::Running, Some(8)).unwrap();
    assert_eq!(
        store.messages("m1", "s1").unwrap(),
        vec![said("summary"), said("late")]
    );

    let second = other.acquire_leader("m1", &worker("c2"), LONG).unwrap();
    // The stale commander would overwrite the new leader's place in the transcript, compact it
    // away, cut it, or mark the mission finished: each is refused and writes nothing.
    assert!(lost(store.append_message("m1", "s1", 1, &said("stale"))));
    assert!(lost(store.append_message("m1", "s2", 0, &said("stale"))));
    assert!(lost(store.replace_messages("m1", "s1", &[said("stale")])));
    assert!(lost(store.replace_messages("m1", "s1", &[])));
    assert!(lost(store.truncate_messages("m1", "s1", 0)));
    assert!(lost(store.set_status("m1", MissionStatus::Sealed, None)));
    assert_eq!(
        other.messages("m1", "s1").unwrap(),
        vec![said("summary"), said("late")]
    );
    assert!(other.messages("m1", "s2").unwrap().is_empty());
    assert_eq!(status_and_pid(&other, "m1"), (MissionStatus::Running, Some(8)));

    // Another mission of the fenced handle, and another handle (`task --abandon`, a test's), are
    // not fenced.
    store.append_message("m2", "s1", 0, &said("elsewhere")).unwrap();
    store.set_status("m2", MissionStatus::Sealed, None).unwrap();
    assert_eq!(status_and_pid(&other, "m2"), (MissionStatus::Sealed, None));
    other.append_message("m1", "s1", 2, &said("unfenced")).unwrap();

    // The new leader's fenced handle writes; the stale one stays refused, also once the new leader
    // gave the lead back (the token decides, and it only grows).
    other.fence_by_leader("m1", second.token);
    other.append_message("m1", "s1", 3, &said("new leader")).unwrap();
    other.set_status("m1", MissionStatus::Interrupted, None).unwrap();
    other.release_leader("m1", second.token).unwrap();
    assert!(lost(store.append_message("m1", "s1", 3, &said("stale again"))));
    assert!(lost(store.set_status("m1", MissionStatus::Sealed, None)));
    let texts: Vec<serde_json::Value> = other.messages("m1", "s1").unwrap();
    assert_eq!(
        texts,
        vec![
            said("summary"),
            said("late"),
            said("unfenced"),
            said("new leader")
        ]
    );
    assert_eq!(status_and_pid(&other, "m1"), (MissionStatus::Interrupted, None));
}

/// A commander writes its transcript as fast as it can while another takes the mission over from
/// its live lease: its writes go through up to one point and are refused from there on, and the
/// store holds exactly those it was told went through.
fn a_take_over_racing_fenced_writes_cuts_them_off_cleanly(b: &dyn Backend) {
    let store = b.open();
    let other = b.reopen();
    store.create_mission(&super::mission("m1")).unwrap();
    let first = store.acquire_leader("m1", &worker("c1"), LONG).unwrap();
    store.fence_by_leader("m1", first.token);
    let answers: Vec<bool> = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut answers: Vec<bool> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            // Until a few writes after the first refusal.
            while answers.iter().filter(|ok| !**ok).count() < 5 {
                assert!(
                    Instant::now() < deadline,
                    "the take-over never cut the writes off"
                );
                let idx = answers.len();
                let written = store.append_message("m1", "s1", idx, &said(&format!("m{idx}")));
                let ok = written.is_ok();
                assert!(ok || lost(written), "a write either goes through or is refused");
                answers.push(ok);
            }
            answers
        });
        // Once the writer is under way, so that some of its writes land first.
        wait_until("the commander writes", || {
            !other.messages("m1", "s1").unwrap().is_empty()
        });
        other
            .take_over_leader("m1", &worker("c2"), LONG, first.token)
            .unwrap();
        writer.join().unwrap()
    });
    let accepted = answers.iter().take_while(|ok| **ok).count();
    assert!(accepted > 0, "some writes went through first");
    assert!(
        answers[accepted..].iter().all(|ok| !ok),
        "nothing goes through after the first refusal: {answers:?}"
    );
    let stored = other.messages("m1", "s1").unwrap();
    let expected: Vec<serde_json::Value> = (0..accepted).map(|idx| said(&format!("m{idx}"))).collect();
    assert_eq!(stored, expected, "exactly the acknowledged writes");
}

fn commanders_racing_for_a_mission_leave_one_leader(b: &dyn Backend) {
    let first = b.open();
    let stores: Vec<Store> = std::iter::once(first).chain((1..4).map(|_| b.reopen())).collect();
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let racers: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(n, store)| s.spawn(move || store.acquire_leader("m1", &worker(&format!("c{n}")), LONG)))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let winners: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert_eq!(winners[0].token, 1);
    assert!(outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .all(|e| matches!(e, StoreError::LeaderHeld { .. })));
    assert_eq!(stores[0].leader("m1").unwrap().unwrap().holder, winners[0].holder);
}

fn unicode_ids_and_odd_json_are_stored_faithfully(b: &dyn Backend) {
    let store = b.open();
    let mission = "m-∑-🦀-ملف";
    let units = [
        "单元-1",
        "e\u{301}-combining",
        "'; DROP TABLE work_units; --",
        "%_ like \\ wildcards",
        "\u{202e}rtl override",
        "tab\tnew\nline",
    ];
    let payload = json!({
        "": "empty key",
        "nul": "a\u{0}b",
        "big": u64::MAX,
        "small": i64::MIN,
        "float": -0.25,
        "deep": (0..100).fold(json!("bottom"), |inner, _| json!([inner])),
        "emoji": "👩‍👩‍👧‍👦",
        "surrogate-escaped": serde_json::from_str::<serde_json::Value>(r#""\ud83e\udd80""#).unwrap(),
    });
    store.set_max_parallel(mission, 100).unwrap();
    for unit in units {
        let offer = UnitOffer {
            key: key(mission, unit),
            payload: payload.clone(),
        };
        assert!(store.offer_unit(&offer).unwrap());
    }
    let host = Holder {
        id: "wörker-🛠".into(),
        host: "höst.例え.jp".into(),
    };
    let claimed = store.claim_units(&host, 10, LONG).unwrap();
    let got: Vec<&str> = claimed.iter().map(|c| c.fence.key.unit.as_str()).collect();
    assert_eq!(got, units);
    assert!(claimed.iter().all(|c| c.payload == payload));
    store
        .finish_unit(&claimed[0].fence, Outcome::Done, &payload)
        .unwrap();
    let status = store.work_units(mission).unwrap();
    assert_eq!(status[0].result, Some(payload));
    assert_eq!(status[1].holder, Some(host));
    // The longest id accepted is kept whole.
    let long = "é".repeat(MAX_ID_BYTES / 2);
    store
        .offer_unit(&UnitOffer {
            key: key(mission, &long),
            payload: json!(null),
        })
        .unwrap();
    assert!(store
        .work_units(mission)
        .unwrap()
        .iter()
        .any(|u| u.key.unit == long));
}

fn refused(result: crate::Result<impl std::fmt::Debug>) -> bool {
    matches!(result, Err(StoreError::Refused { .. }))
}

fn oversized_or_unreadable_input_is_refused_and_changes_nothing(b: &dyn Backend) {
    let store = b.open();
    store.set_secrets(vec!["sk-secret-lease-123".into()]);
    let huge = json!({"blob": "x".repeat(MAX_JSON_BYTES)});
    let too_deep = (0..200).fold(json!(0), |inner, _| json!([inner]));
    for payload in [huge.clone(), too_deep.clone()] {
        let offer = UnitOffer {
            key: key("m1", "u1"),
            payload,
        };
        assert!(refused(store.offer_unit(&offer)));
    }
    for bad in ["", "nul\0inside", &"x".repeat(MAX_ID_BYTES + 1)] {
        let offer = UnitOffer {
            key: key("m1", bad),
            payload: json!(null),
        };
        assert!(refused(store.offer_unit(&offer)), "{bad:?}");
        assert!(refused(store.claim_units(&worker(bad), 1, LONG)), "{bad:?}");
        assert!(refused(store.acquire_leader(bad, &worker("c"), LONG)), "{bad:?}");
    }
    assert!(store.work_units("m1").unwrap().is_empty(), "nothing offered");

    // Secrets are masked in payloads and results as everywhere else.
    let offer = UnitOffer {
        key: key("m1", "u1"),
        payload: json!({"env": "KEY=sk-secret-lease-123"}),
    };
    store.offer_unit(&offer).unwrap();
    let unit = store.claim_units(&worker("w"), 1, LONG).unwrap().remove(0);
    assert_eq!(unit.payload, json!({"env": "KEY=[redacted]"}));
    // A result too large is refused and the unit stays leased to its worker, which can report again.
    assert!(refused(store.finish_unit(&unit.fence, Outcome::Done, &huge)));
    assert!(refused(store.finish_unit(&unit.fence, Outcome::Done, &too_deep)));
    assert_eq!(store.work_units("m1").unwrap()[0].state, UnitState::Leased);
    store
        .finish_unit(&unit.fence, Outcome::Done, &json!({"key": "sk-secret-lease-123"}))
        .unwrap();
    assert_eq!(
        store.work_units("m1").unwrap()[0].result,
        Some(json!({"key": "[redacted]"}))
    );
}

#[test]
fn a_store_of_the_third_schema_gets_the_work_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let old: Vec<&str> = crate::MIGRATIONS[..3].to_vec();
    conn.execute_batch(&format!(
        "BEGIN; {}; PRAGMA user_version = 3; COMMIT;",
        old.join(";")
    ))
    .unwrap();
    drop(conn);
    let store = Store::open_existing(&path).unwrap();
    store.create_mission(&super::mission("m1")).unwrap();
    drop(store);
    // Opened by an older build's file, migrated once: a second open finds it current.
    let store = Store::open_existing(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, crate::SCHEMA_VERSION);
    assert!(store.mission("m1").unwrap().is_some(), "the old records stay");
    offer(&store, "m1", "u1");
    let unit = store.claim_units(&worker("w"), 1, LONG).unwrap().remove(0);
    store
        .finish_unit(&unit.fence, Outcome::Done, &json!("ok"))
        .unwrap();
    store.acquire_leader("m1", &worker("c"), LONG).unwrap();
}

#[test]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
fn a_postgres_store_of_the_first_schema_gets_the_work_queue() {
    let schema = orchestrator_test_support::pg::fresh_schema();
    let mut client = ::postgres::Client::connect(&schema.url, ::postgres::NoTls).unwrap();
    client
        .batch_execute(&format!(
            "{}; CREATE TABLE orchestrator_schema (version BIGINT NOT NULL);
             INSERT INTO orchestrator_schema (version) VALUES (1);
             INSERT INTO orchestrator_missions (repo, id, objective, base_commit, integration_branch, options,
                 status, created_at, updated_at)
             VALUES ('/r', 'm1', 'old', 'abc', 'i', '{{}}', 'interrupted', '0', '0');",
            crate::pg::MIGRATIONS[0]
        ))
        .unwrap();
    let store = Store::open_postgres(&schema.url, "/r").unwrap();
    let version: i64 = client
        .query_one("SELECT version FROM orchestrator_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, crate::PG_SCHEMA_VERSION);
    assert_eq!(store.mission("m1").unwrap().unwrap().objective, "old");
    offer(&store, "m1", "u1");
    let unit = store.claim_units(&worker("w"), 1, LONG).unwrap().remove(0);
    store
        .finish_unit(&unit.fence, Outcome::Done, &json!("ok"))
        .unwrap();
    store.acquire_leader("m1", &worker("c"), LONG).unwrap();
}

#[test]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
fn lease_transactions_commit_synchronously_on_a_relaxed_connection() {
    let schema = orchestrator_test_support::pg::fresh_schema();
    let store = Store::open_postgres(&schema.url, "/r").unwrap();
    let crate::Backend::Pg(pg) = &store.backend else {
        panic!("a PostgreSQL store")
    };
    assert_eq!(
        pg.setting("synchronous_commit").unwrap(),
        "off",
        "the store's default"
    );
    assert_eq!(pg.lease_setting().unwrap(), "on");
    assert_eq!(
        pg.setting("synchronous_commit").unwrap(),
        "off",
        "SET LOCAL ends with its transaction"
    );
}

#[test]
#[cfg_attr(
    pg_missing,
    ignore = "needs PostgreSQL: set ORCHESTRATOR_TEST_PG_URL (scripts/pg-test-server)"
)]
fn lease_times_on_postgres_are_the_servers() {
    // A server whose clock says 2001: the schema's own now() ahead of pg_catalog's in the search
    // path. Every expiry must follow it, whatever this process's clock says.
    let schema = orchestrator_test_support::pg::fresh_schema();
    let mut client = ::postgres::Client::connect(&schema.url, ::postgres::NoTls).unwrap();
    client
        .batch_execute(&format!(
            "CREATE FUNCTION {}.now() RETURNS timestamptz LANGUAGE sql
             AS $$ SELECT '2001-01-01 00:00:00+00'::timestamptz $$",
            schema.name
        ))
        .unwrap();
    let url = orchestrator_test_support::pg::with_search_path(
        &orchestrator_test_support::pg::server_url(),
        &format!("{}%2Cpg_catalog", schema.name),
    );
    let store = Store::open_postgres(&url, "/r").unwrap();
    const SERVER_NOW: i64 = 978_307_200_000;
    let hour = Duration::from_secs(3600);
    offer(&store, "m1", "u1");
    let unit = store.claim_units(&worker("w"), 1, hour).unwrap().remove(0);
    assert_eq!(unit.expires_at_ms, SERVER_NOW + 3_600_000);
    assert_eq!(
        store.heartbeat(&unit.fence, 2 * hour).unwrap().expires_at_ms,
        SERVER_NOW + 7_200_000
    );
    let lead = store.acquire_leader("m1", &worker("c"), hour).unwrap();
    assert_eq!(lead.expires_at_ms, SERVER_NOW + 3_600_000);
    // By the server's clock nothing has expired, though by ours it all did decades ago.
    assert!(!store.work_units("m1").unwrap()[0].expired);
    assert!(!store.leader("m1").unwrap().unwrap().expired);
    assert!(store.claim_units(&worker("other"), 1, hour).unwrap().is_empty());
}

fn a_unit_whose_holders_all_die_is_failed_after_the_last_take_over(b: &dyn Backend) {
    let store = b.open();
    store.set_max_parallel("m1", 4).unwrap();
    offer(&store, "m1", "u1");
    // A unit given back (its host could not run it) is claimed again without counting.
    let first = store.claim_units(&worker("w0"), 1, LONG).unwrap().remove(0);
    store.release_unit(&first.fence).unwrap();
    // Every holder dies: the unit is taken over MAX_TAKEOVERS times, then failed.
    let mut last = store.claim_units(&worker("w1"), 1, SHORT).unwrap().remove(0);
    for n in 1..=crate::MAX_TAKEOVERS {
        wait_until("the holder's lease expires", || expired(&store, &last.fence.key));
        last = store
            .claim_units(&worker(&format!("w{}", n + 1)), 1, SHORT)
            .unwrap()
            .remove(0);
        assert_eq!(store.work_units("m1").unwrap()[0].takeovers, n);
    }
    wait_until("the last holder's lease expires", || {
        expired(&store, &last.fence.key)
    });
    assert!(
        store.claim_units(&worker("late"), 1, LONG).unwrap().is_empty(),
        "not handed out again"
    );
    let unit = &store.work_units("m1").unwrap()[0];
    assert_eq!(unit.state, UnitState::Failed);
    assert_eq!(unit.result, None);
    assert_eq!(unit.takeovers, crate::MAX_TAKEOVERS);
    let last_holder = worker(&format!("w{}", crate::MAX_TAKEOVERS + 1));
    assert_eq!(unit.holder, Some(last_holder), "the last holder is kept");
    // Its last holder, back from the dead, is refused.
    assert!(lost(store.heartbeat(&last.fence, LONG)));
    assert!(lost(store.finish_unit(
        &last.fence,
        Outcome::Done,
        &json!("late")
    )));
    // Other units of the mission are claimed as ever.
    offer(&store, "m1", "u2");
    assert_eq!(store.claim_units(&worker("late"), 1, LONG).unwrap().len(), 1);
}

fn a_unit_given_back_too_often_ends_with_its_holders_result(b: &dyn Backend) {
    let store = b.open();
    store.set_max_parallel("m1", 4).unwrap();
    offer(&store, "m1", "u1");
    let why = json!({"passed": false, "interrupted": true, "reason": "no model key on this host"});
    // Releases (a stopping worker, a recall) do not count; give-backs do, up to the bound.
    let first = store.claim_units(&worker("w0"), 1, LONG).unwrap().remove(0);
    store.release_unit(&first.fence).unwrap();
    for n in 1..=crate::MAX_GIVE_BACKS {
        let held = store.claim_units(&worker("w1"), 1, LONG).unwrap().remove(0);
        assert_eq!(
            store.give_back(&held.fence, &why).unwrap(),
            crate::GiveBack::Released
        );
        let row = &store.work_units("m1").unwrap()[0];
        assert_eq!(
            (row.state, row.give_backs, row.holder.clone()),
            (UnitState::Ready, n, None)
        );
        // A stale holder's give-back is refused and counts nothing.
        assert!(lost(store.give_back(&held.fence, &why)));
    }
    let last = store.claim_units(&worker("w2"), 1, LONG).unwrap().remove(0);
    assert_eq!(
        store.give_back(&last.fence, &why).unwrap(),
        crate::GiveBack::Ended
    );
    let row = &store.work_units("m1").unwrap()[0];
    assert_eq!(row.state, UnitState::Failed);
    assert_eq!(row.result, Some(why));
    assert_eq!(row.holder, Some(worker("w2")), "the last holder is kept");
    assert!(
        store.claim_units(&worker("w3"), 1, LONG).unwrap().is_empty(),
        "not handed out again"
    );
}

fn a_finished_missions_queue_is_forgotten_but_not_while_a_worker_holds_a_unit(b: &dyn Backend) {
    let store = b.open();
    store.set_max_parallel("m1", 4).unwrap();
    offer(&store, "m1", "u1");
    offer(&store, "m1", "u2");
    offer(&store, "m2", "u1");
    store.add_spend("m1", 10).unwrap();
    let held = store.claim_units(&worker("w"), 1, LONG).unwrap().remove(0);
    store
        .append_message_fenced(&held.fence, "relay:u1@t1", 0, &json!({"event": 1}))
        .unwrap();
    store
        .append_message("m1", "u1@t1/worker-1", 0, &json!("kept"))
        .unwrap();
    // A worker holds u1: nothing goes.
    assert!(matches!(
        store.forget_work("m1"),
        Err(crate::StoreError::Refused { .. })
    ));
    assert_eq!(store.work_units("m1").unwrap().len(), 2);
    store.finish_unit(&held.fence, Outcome::Done, &json!({})).unwrap();
    assert_eq!(store.forget_work("m1").unwrap(), 2);
    assert!(store.work_units("m1").unwrap().is_empty());
    assert_eq!(store.max_parallel("m1").unwrap(), None);
    assert_eq!(store.spend("m1").unwrap(), 0);
    assert!(store.messages("m1", "relay:u1@t1").unwrap().is_empty());
    assert_eq!(
        store.messages("m1", "u1@t1/worker-1").unwrap(),
        vec![json!("kept")],
        "a worker session's transcript is the mission's record, kept"
    );
    assert_eq!(
        store.work_units("m2").unwrap().len(),
        1,
        "another mission's queue stays"
    );
    assert_eq!(store.forget_work("m1").unwrap(), 0, "again: nothing left");
}
