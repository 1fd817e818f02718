//! What every host shares (shared.rs): a mission's spend and each endpoint's throttle. On both
//! backends, through two handles as two hosts would have.

use std::time::Duration;

use super::Backend;
use crate::MAX_SHARED_PAUSE;

on_both_backends!(
    spend_adds_up_across_hosts_and_is_raised_never_lowered,
    a_throttle_counts_every_hosts_cuts_and_keeps_the_longest_pause,
);

fn spend_adds_up_across_hosts_and_is_raised_never_lowered(b: &dyn Backend) {
    let one = b.open();
    let other = b.reopen();
    assert_eq!(one.spend("m1").unwrap(), 0, "nothing recorded yet");
    assert_eq!(one.add_spend("m1", 100).unwrap(), 100);
    assert_eq!(other.add_spend("m1", 50).unwrap(), 150);
    assert_eq!(one.spend("m1").unwrap(), 150);
    assert_eq!(one.spend("m2").unwrap(), 0, "per mission");
    // A commander seeds the total with what it counted before; a lower figure changes nothing.
    assert_eq!(other.raise_spend("m1", 120).unwrap(), 150);
    assert_eq!(other.raise_spend("m1", 400).unwrap(), 400);
    // A lying figure saturates rather than wrapping to a negative total that would unlock the budget.
    assert_eq!(one.add_spend("m1", u64::MAX).unwrap(), i64::MAX as u64);
    assert_eq!(one.add_spend("m1", 10).unwrap(), i64::MAX as u64);
    assert!(one.add_spend(&"m".repeat(10_000), 1).is_err(), "ids are bounded");
}

fn a_throttle_counts_every_hosts_cuts_and_keeps_the_longest_pause(b: &dyn Backend) {
    let one = b.open();
    let other = b.reopen();
    assert!(one.throttles().unwrap().is_empty());
    one.note_throttle("http://e/v1 m", true, None).unwrap();
    other
        .note_throttle("http://e/v1 m", true, Some(Duration::from_secs(30)))
        .unwrap();
    // A shorter pause asked later does not cut the running one short.
    one.note_throttle("http://e/v1 m", false, Some(Duration::from_secs(1)))
        .unwrap();
    let seen = other.throttles().unwrap();
    assert_eq!(seen.len(), 1);
    let (endpoint, throttle) = &seen[0];
    assert_eq!(endpoint, "http://e/v1 m");
    assert_eq!(throttle.cuts, 2);
    let left = throttle.paused_for.expect("a pause runs");
    assert!(
        left > Duration::from_secs(20) && left <= Duration::from_secs(30),
        "{left:?}"
    );
    // A server asking for a day is held to the bound.
    one.note_throttle("other", false, Some(Duration::from_secs(86_400)))
        .unwrap();
    let other_pause = one
        .throttles()
        .unwrap()
        .into_iter()
        .find(|(e, _)| e == "other")
        .and_then(|(_, t)| t.paused_for)
        .expect("paused");
    assert!(other_pause <= MAX_SHARED_PAUSE, "{other_pause:?}");
    assert!(
        one.note_throttle(&"e".repeat(10_000), true, None).is_err(),
        "ids are bounded"
    );
}
