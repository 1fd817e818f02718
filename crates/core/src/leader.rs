//! The mission's leader lease (issue #20): one commander runs a mission at a time, across processes
//! and hosts sharing a store. `task` and `resume` take the lease before they write anything, a task
//! renews it every third of its length on the process's monotonic clock, and the run gives it back
//! when it ends. A commander that cannot renew it (another took over after it expired, or the store
//! stayed unreachable) stops its mission before writing more, resumable.
//!
//! The repository lock (`lock.rs`) still keeps one mission per checkout; the lease is what a
//! commander on another host sees. On this host, a commander that holds the repository lock knows
//! that a live lease held from this host is a dead process's (it would hold the lock), and takes it
//! over at once instead of waiting for the expiry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use orchestrator_store::{Holder, LeaderLease, Store, StoreError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{EngineError, Result};

/// How long a leader lease lasts unless renewed, in whole seconds (default 30): a commander killed
/// with -9 is taken over from another host this long after its last renewal.
pub const LEASE_SECS_VAR: &str = "ORCHESTRATOR_LEADER_LEASE_SECS";

/// The name this machine goes by in leases (default: its host name); for containers whose host
/// names are random or shared.
pub const HOST_VAR: &str = "ORCHESTRATOR_HOST";

const DEFAULT_LEASE: Duration = Duration::from_secs(30);
const MAX_LEASE_SECS: u64 = 3600;

/// The lease's length: the variable's, else 30 s. A value that is not a whole number of seconds
/// from 1 to 3600 is refused (exit 2) rather than guessed at.
pub fn lease_length() -> Result<Duration> {
    let Some(raw) = std::env::var_os(LEASE_SECS_VAR) else {
        return Ok(DEFAULT_LEASE);
    };
    let raw = raw.to_string_lossy();
    match raw.trim().parse::<u64>() {
        Ok(secs) if (1..=MAX_LEASE_SECS).contains(&secs) => Ok(Duration::from_secs(secs)),
        _ => Err(EngineError::Usage(format!(
            "{LEASE_SECS_VAR}={raw} is not a lease length: give whole seconds from 1 to {MAX_LEASE_SECS}"
        ))),
    }
}

/// Who this process is in a lease: its pid, on this host.
pub fn this_commander() -> Holder {
    Holder {
        id: format!("commander pid {}", std::process::id()),
        host: this_host(),
    }
}

/// The host name leases record for this machine.
pub fn this_host() -> String {
    if let Some(name) = std::env::var(HOST_VAR).ok().filter(|h| !h.trim().is_empty()) {
        return name.trim().to_string();
    }
    system_host_name().unwrap_or_else(|| "unknown-host".to_string())
}

fn system_host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// A holder's id or host as another commander wrote it, safe to print: control characters (a
/// terminal's escape sequences, newlines) escaped, at most 80 characters.
pub fn shown(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c.is_control() {
            true => c.escape_default().collect::<Vec<_>>(),
            false => vec![c],
        })
        .collect();
    match escaped.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

/// A lease's expiry, for people: the store's clock, in UTC.
pub fn shown_expiry(expires_at_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(expires_at_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{expires_at_ms} ms after the epoch"))
}

/// The mission's live lease if it is held from another host: a commander there runs it.
pub fn led_elsewhere(store: &Store, mission: &str) -> Option<LeaderLease> {
    let lease = store.leader(mission).ok().flatten()?;
    (!lease.expired && lease.holder.host != this_host()).then_some(lease)
}

/// This process's lead of one mission, renewed in the background until it is dropped (which
/// gives it back, unless it was lost).
pub struct Leadership {
    store: Arc<Store>,
    mission: String,
    token: i64,
    /// Why the lead was lost, once it was; cancelled `lost` says that it was.
    why_lost: Arc<Mutex<Option<String>>>,
    lost: CancellationToken,
    stop: CancellationToken,
}

/// The lead taken, and what to tell the user about whom it was taken from.
pub struct Acquired {
    pub leadership: Leadership,
    pub took_over: Option<String>,
}

/// Takes the lead of `mission` for this process, with the repository lock held. Refused with
/// [`EngineError::Locked`] (exit 4), naming the holder and when its lease expires, while a
/// commander on another host leads it.
pub fn acquire(store: &Arc<Store>, mission: &str) -> Result<Acquired> {
    acquire_as(store, mission, this_commander(), lease_length()?)
}

/// [`acquire`] as `me`, with leases of `ttl`.
fn acquire_as(store: &Arc<Store>, mission: &str, me: Holder, ttl: Duration) -> Result<Acquired> {
    let before = store.leader(mission).map_err(store_failed)?;
    let lease = match store.acquire_leader(mission, &me, ttl) {
        Ok(lease) => lease,
        Err(StoreError::LeaderHeld {
            holder, host, token, ..
        }) if host == me.host => {
            // We hold this checkout's lock, which the holder would hold were it alive.
            tracing::info!("taking the lead of {mission} over from {holder} on {host}, which died");
            store
                .take_over_leader(mission, &me, ttl, token)
                .map_err(|e| refused(mission, e))?
        }
        Err(e) => return Err(refused(mission, e)),
    };
    let took_over = before.map(|old| {
        format!(
            "took the lead of mission {mission} over from {} on {} (token {}, lease until {}): that \
             commander is gone; this one leads it with token {}",
            shown(&old.holder.id),
            shown(&old.holder.host),
            old.token,
            shown_expiry(old.expires_at_ms),
            lease.token
        )
    });
    // Every event, transcript message and status this run writes is checked against the lead in
    // the store, as it lands.
    store.fence_by_leader(mission, lease.token);
    let leadership = Leadership {
        store: store.clone(),
        mission: mission.to_string(),
        token: lease.token,
        why_lost: Arc::default(),
        lost: CancellationToken::new(),
        stop: CancellationToken::new(),
    };
    leadership.keep_renewing(ttl);
    Ok(Acquired {
        leadership,
        took_over,
    })
}

fn refused(mission: &str, e: StoreError) -> EngineError {
    match e {
        StoreError::LeaderHeld {
            holder,
            host,
            token,
            expires_at_ms,
            ..
        } => EngineError::Locked(format!(
            "mission {mission} is being run by another commander: {holder} on {host} holds its lead (token \
             {token}) until {} unless it renews it. Wait for it to finish, or stop it on {host} \
             (`orchestrator cancel` there); if that commander died, `orchestrator resume` takes the mission \
             over once its lease has expired.",
            shown_expiry(expires_at_ms),
            holder = shown(&holder),
            host = shown(&host),
        )),
        other => store_failed(other),
    }
}

fn store_failed(e: StoreError) -> EngineError {
    EngineError::Usage(format!("cannot take the lead of the mission: {e}"))
}

impl Leadership {
    pub fn token(&self) -> i64 {
        self.token
    }

    /// Cancelled once the lead is lost.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Why the lead was lost, if it was.
    pub fn why_lost(&self) -> Option<String> {
        self.why_lost_handle()()
    }

    /// [`Leadership::why_lost`] for a task that outlives this borrow.
    pub fn why_lost_handle(&self) -> impl Fn() -> Option<String> + Send + 'static {
        let why = self.why_lost.clone();
        move || why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Renews the lease every third of `ttl`, counting on tokio's (monotonic) clock from when each
    /// renewal was sent. The lead is lost at a refused renewal (another commander took over); when
    /// renewals kept failing until two thirds of the lease had passed since the last that went
    /// through (a third is left to stop in before another may take over); or when one does not
    /// answer before the lease runs out by this clock (a store that hangs).
    fn keep_renewing(&self, ttl: Duration) {
        let store = self.store.clone();
        let mission = self.mission.clone();
        let token = self.token;
        let why_lost = self.why_lost.clone();
        let lost = self.lost.clone();
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut last_renewed = Instant::now();
            let mut wait = ttl / 3;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                let sent = Instant::now();
                let answer = tokio::time::timeout_at(last_renewed + ttl, renew(&store, &mission, token, ttl));
                let failing_for = || Instant::now().duration_since(last_renewed);
                let why = match answer.await {
                    Ok(Ok(())) => {
                        last_renewed = sent;
                        wait = ttl / 3;
                        continue;
                    }
                    Ok(Err(StoreError::LeaseLost { .. })) => taken_over(&store, &mission),
                    Ok(Err(e)) if failing_for() >= ttl * 2 / 3 => format!(
                        "its lease could not be renewed for {} s ({e}); another commander may take the \
                         mission over once it expires",
                        failing_for().as_secs()
                    ),
                    Ok(Err(e)) => {
                        tracing::warn!("cannot renew the lead of {mission}, trying again: {e}");
                        wait = ttl / 6;
                        continue;
                    }
                    Err(_) => format!(
                        "its lease could not be renewed: the store did not answer within {} s, and \
                         another commander may take the mission over now",
                        ttl.as_secs()
                    ),
                };
                if stop.is_cancelled() {
                    return;
                }
                *why_lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                lost.cancel();
                return;
            }
        });
    }
}

async fn renew(store: &Arc<Store>, mission: &str, token: i64, ttl: Duration) -> Result<(), StoreError> {
    let store = store.clone();
    let mission = mission.to_string();
    // The store is synchronous: a slow server must not hold up the runtime's threads.
    tokio::task::spawn_blocking(move || store.renew_leader(&mission, token, ttl).map(|_| ()))
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Refused {
                what: "the renewal".into(),
                reason: e.to_string(),
            })
        })
}

/// Why a refused renewal or append lost the lead, naming the new leader when the store says who
/// it is.
pub(crate) fn taken_over(store: &Store, mission: &str) -> String {
    let by = match store.leader(mission) {
        Ok(Some(now)) => format!(
            " by {} on {} (token {})",
            shown(&now.holder.id),
            shown(&now.holder.host),
            now.token
        ),
        _ => String::new(),
    };
    format!(
        "another commander took the mission over{by}: this one's lease had run out before it renewed it \
         (it stalled, or lost the store)"
    )
}

impl Drop for Leadership {
    /// Stops renewing and gives the lead back, so the next commander need not wait for the expiry;
    /// a lead already lost is not this process's to give.
    fn drop(&mut self) {
        self.stop.cancel();
        if self.lost.is_cancelled() {
            return;
        }
        match self.store.release_leader(&self.mission, self.token) {
            // Lost at its last append, before a renewal said so: another leads it now.
            Ok(()) | Err(StoreError::LeaseLost { .. }) => {}
            Err(e) => tracing::warn!("cannot give back the lead of {}: {e}", self.mission),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: &str, host: &str) -> Holder {
        Holder {
            id: id.into(),
            host: host.into(),
        }
    }

    fn store() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("state.db")).expect("store");
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn a_live_lead_from_another_host_is_refused_naming_it_and_one_from_this_host_is_taken() {
        let (_dir, store) = store();
        let long = Duration::from_secs(600);
        let first = acquire_as(&store, "m1", holder("commander pid 1", "host-a"), long).expect("leads");
        let refused = acquire_as(&store, "m1", holder("commander pid 2", "host-b"), long)
            .err()
            .expect("refused");
        assert!(matches!(refused, EngineError::Locked(_)), "{refused}");
        let said = refused.to_string();
        assert!(
            said.contains("commander pid 1 on host-a") && said.contains("until"),
            "{said}"
        );
        // On host-a, with the checkout's lock held, the live lease is a dead process's.
        let second = acquire_as(&store, "m1", holder("commander pid 3", "host-a"), long).expect("taken");
        let told = second.took_over.clone().expect("says from whom");
        assert!(told.contains("commander pid 1 on host-a"), "{told}");
        assert!(second.leadership.token() > first.leadership.token());
    }

    #[tokio::test]
    async fn a_lead_taken_by_another_is_lost_naming_it_and_not_given_back() {
        let (_dir, store) = store();
        let ttl = Duration::from_secs(3);
        let mine = acquire_as(&store, "m1", holder("me", "host-a"), ttl).expect("leads");
        let usurper = holder("them\u{1b}[31m", "host-b");
        let long = Duration::from_secs(600);
        let theirs = store
            .take_over_leader("m1", &usurper, long, mine.leadership.token())
            .expect("taken");
        // The next renewal (a third of the lease on) is refused: the lead is lost, by whom is said.
        mine.leadership.lost().cancelled().await;
        let why = mine.leadership.why_lost().expect("a reason");
        assert!(why.contains("by them\\u{1b}[31m on host-b"), "{why}");
        drop(mine);
        let now = store.leader("m1").expect("read").expect("led");
        assert_eq!(
            (now.holder.host.as_str(), now.token),
            ("host-b", theirs.token),
            "not given back"
        );
    }

    #[tokio::test]
    async fn a_lead_is_renewed_while_held_and_given_back_when_dropped() {
        let (_dir, store) = store();
        let mine = acquire_as(&store, "m1", holder("me", "host-a"), Duration::from_secs(1)).expect("leads");
        let first = store.leader("m1").expect("read").expect("led").expires_at_ms;
        // Renewed in the background: the expiry moves on (read until it does; no timing asserted).
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = store.leader("m1").expect("read").expect("led");
            assert!(!mine.leadership.lost().is_cancelled());
            if now.expires_at_ms > first {
                break;
            }
        }
        drop(mine);
        assert_eq!(store.leader("m1").expect("read"), None, "given back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lead_whose_store_stops_answering_is_lost_when_its_lease_runs_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("state.db");
        let store = Arc::new(Store::open(&path).expect("store"));
        let mine = acquire_as(&store, "m1", holder("me", "host-a"), Duration::from_secs(3)).expect("leads");
        // The store stops answering: another connection holds its write lock, so every renewal
        // waits out SQLite's busy timeout and fails.
        let blocker = rusqlite::Connection::open(&path).expect("second connection");
        blocker.execute_batch("BEGIN EXCLUSIVE").expect("write lock");
        mine.leadership.lost().cancelled().await;
        let why = mine.leadership.why_lost().expect("a reason");
        assert!(why.contains("the store did not answer within 3 s"), "{why}");
        blocker.execute_batch("ROLLBACK").expect("let go");
        // Lost, so not given back: its lease runs out, and then another may take the mission.
        drop(mine);
        let left = store.leader("m1").expect("read").expect("still recorded");
        assert_eq!(left.holder.id, "me");
    }

    #[test]
    fn holder_names_from_the_store_are_escaped_and_cut() {
        assert_eq!(shown("a\nb\u{1b}[2J"), "a\\nb\\u{1b}[2J");
        assert_eq!(shown(&"x".repeat(500)).chars().count(), 81);
    }
}
