//! What the hosts of one mission share through its store (issue #20): the tokens spent, so the
//! mission's budget holds across hosts, and each endpoint's throttle, so a 429 seen on one host
//! slows every host.
//!
//! Both sit on hot paths (every model call, every admission), where a round trip to PostgreSQL
//! must not wait: each keeps what it last read in memory and a thread of its own does the store's
//! reads and writes. What a host reads is at most [`REFRESH`] old, so hosts may together overrun
//! a budget by the calls they start within that time, as sessions already do within one process
//! by the calls in flight when it runs out. A store that cannot be reached is logged and the last
//! figures stay: the mission's own writes fail on it and stop the mission anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchestrator_model::{GovernedClient, SharedThrottle, SharedView};
use orchestrator_store::Store;

use crate::session::Runtime;

/// How often each host reads what the others wrote.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The longest a worker waits for its first read of a mission's spend; after it, the figures it
/// has (none) stand until the store answers.
const FIRST_READ: Duration = Duration::from_secs(10);

/// The mission's tokens spent on every host.
pub struct SharedSpend {
    adds: mpsc::Sender<u64>,
    /// The highest total seen: read from the store, or this host's adds on top of it.
    total: Arc<AtomicU64>,
    /// True once the store was first read (or could not be).
    first_read: tokio::sync::watch::Receiver<bool>,
}

impl SharedSpend {
    /// Starts following `mission`'s spend in `store`. `counted` is what this host already knows
    /// was spent (a commander's figure from its event log): the store's total is raised to it, so
    /// a mission begun before the store kept totals starts from the truth.
    pub fn start(store: Arc<Store>, mission: &str, counted: u64) -> Arc<SharedSpend> {
        let (adds, pending) = mpsc::channel::<u64>();
        let total = Arc::new(AtomicU64::new(counted));
        let (read, first_read) = tokio::sync::watch::channel(false);
        let seen = total.clone();
        let mission = mission.to_string();
        let spawned = std::thread::Builder::new()
            .name("shared-spend".into())
            .spawn(move || {
                keep(&seen, store.raise_spend(&mission, counted), "read the spend");
                let _ = read.send(true);
                follow_spend(&store, &mission, &pending, &seen);
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot follow the mission's spend across hosts: {e}");
        }
        Arc::new(SharedSpend {
            adds,
            total,
            first_read,
        })
    }

    /// Waits (a few seconds at most) until the store's total was first read: a worker joining a
    /// mission must not start a call on a budget other hosts have spent already.
    pub async fn first_read(&self) {
        let mut first_read = self.first_read.clone();
        let _ = tokio::time::timeout(FIRST_READ, first_read.wait_for(|read| *read)).await;
    }

    /// Counts `tokens` this host just spent.
    pub fn record(&self, tokens: u64) {
        if tokens == 0 {
            return;
        }
        self.total.fetch_add(tokens, Ordering::Relaxed);
        let _ = self.adds.send(tokens);
    }

    /// The mission's spend on every host, as last read (this host's own adds always included).
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

/// The spend thread: writes this host's adds (batched) and reads the total back, until the
/// [`SharedSpend`] is dropped.
fn follow_spend(store: &Store, mission: &str, pending: &mpsc::Receiver<u64>, total: &AtomicU64) {
    loop {
        match pending.recv_timeout(REFRESH) {
            Ok(first) => {
                let tokens = pending.try_iter().fold(first, u64::saturating_add);
                keep(total, store.add_spend(mission, tokens), "record the spend");
            }
            Err(RecvTimeoutError::Timeout) => keep(total, store.spend(mission), "read the spend"),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn keep(total: &AtomicU64, read: Result<u64, orchestrator_store::StoreError>, what: &str) {
    match read {
        Ok(read) => {
            total.fetch_max(read, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!("cannot {what} across hosts: {e}"),
    }
}

/// A worker's [`SharedSpend`]s, one per mission whose units run here, kept while a unit uses it.
#[derive(Default)]
pub struct Spends(Mutex<HashMap<(usize, String), std::sync::Weak<SharedSpend>>>);

impl Spends {
    /// `mission`'s spend (in `store`'s repository), followed from now on if no unit here does yet.
    pub fn of(&self, store: &Arc<Store>, mission: &str) -> Arc<SharedSpend> {
        let mut spends = lock(&self.0);
        spends.retain(|_, spend| spend.strong_count() > 0);
        // The worker keeps one store handle per repository for its whole run, and mission ids are
        // per repository: the handle's address tells the repositories apart.
        let key = (Arc::as_ptr(store) as usize, mission.to_string());
        if let Some(spend) = spends.get(&key).and_then(std::sync::Weak::upgrade) {
            return spend;
        }
        let spend = SharedSpend::start(store.clone(), mission, 0);
        spends.insert(key, Arc::downgrade(&spend));
        spend
    }
}

/// Each endpoint's throttle, shared through the store: a [`SharedThrottle`] for the governors.
pub struct StoreThrottle {
    notes: mpsc::Sender<Note>,
    seen: Arc<Mutex<HashMap<String, SharedView>>>,
}

struct Note {
    key: String,
    cut: bool,
    pause: Option<Duration>,
}

impl StoreThrottle {
    pub fn start(store: Arc<Store>) -> Arc<StoreThrottle> {
        let (notes, pending) = mpsc::channel::<Note>();
        let seen: Arc<Mutex<HashMap<String, SharedView>>> = Arc::default();
        let shown = seen.clone();
        let spawned = std::thread::Builder::new()
            .name("shared-throttle".into())
            .spawn(move || follow_throttles(&store, &pending, &shown));
        if let Err(e) = spawned {
            tracing::warn!("cannot share the endpoint's throttle across hosts: {e}");
        }
        Arc::new(StoreThrottle { notes, seen })
    }
}

impl SharedThrottle for StoreThrottle {
    fn publish(&self, key: &str, cut: bool, pause: Option<Duration>) {
        let _ = self.notes.send(Note {
            key: key.to_string(),
            cut,
            pause,
        });
    }

    fn latest(&self, key: &str) -> Option<SharedView> {
        lock(&self.seen).get(key).copied()
    }
}

/// The throttle thread: writes this host's notes and reads every endpoint's throttle after each,
/// and every [`REFRESH`] otherwise, until the [`StoreThrottle`] is dropped.
fn follow_throttles(
    store: &Store,
    pending: &mpsc::Receiver<Note>,
    seen: &Mutex<HashMap<String, SharedView>>,
) {
    loop {
        match pending.recv_timeout(REFRESH) {
            Ok(first) => {
                for note in std::iter::once(first).chain(pending.try_iter()) {
                    if let Err(e) = store.note_throttle(&note.key, note.cut, note.pause) {
                        tracing::warn!("cannot tell other hosts of the endpoint's throttle: {e}");
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        match store.throttles() {
            Ok(rows) => {
                let read_at = Instant::now();
                let mut seen = lock(seen);
                for (key, throttle) in rows {
                    seen.insert(
                        key,
                        SharedView {
                            cuts: throttle.cuts,
                            paused_for: throttle.paused_for,
                            read_at,
                        },
                    );
                }
            }
            Err(e) => tracing::warn!("cannot read other hosts' endpoint throttles: {e}"),
        }
    }
}

/// A commander whose units run on other hosts: its budget is checked against every host's spend
/// (its own counted in), and its endpoint's throttles are shared with theirs.
pub(crate) fn share_with_workers(rt: Runtime, client: &GovernedClient, store: &Arc<Store>) -> Runtime {
    client.share_throttle(StoreThrottle::start(store.clone()));
    let spend = SharedSpend::start(store.clone(), &rt.mission, rt.bus.usage().total());
    rt.with_shared_spend(spend)
}

/// An endpoint's name as hosts share it: its address without user or password, so no secret
/// reaches the store and hosts given the same address agree.
pub fn endpoint_name(base_url: &str) -> String {
    match reqwest::Url::parse(base_url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.as_str().trim_end_matches('/').to_string()
        }
        Err(_) => "(unparsed endpoint)".to_string(),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two hosts as two handles of one store.
    fn two_hosts() -> (tempfile::TempDir, Arc<Store>, Arc<Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.db");
        let one = Arc::new(Store::open(&path).expect("store"));
        let other = Arc::new(Store::open(&path).expect("store"));
        (dir, one, other)
    }

    /// Polls `done` for up to ten seconds (the threads refresh every second).
    async fn eventually(mut done: impl FnMut() -> bool) -> bool {
        for _ in 0..200 {
            if done() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        done()
    }

    #[tokio::test]
    async fn each_host_sees_what_every_host_spent() {
        let (_dir, one, other) = two_hosts();
        // The commander starts from what its log counted; a worker joins later.
        let commander = SharedSpend::start(one.clone(), "m1", 500);
        commander.first_read().await;
        let worker = SharedSpend::start(other.clone(), "m1", 0);
        worker.first_read().await;
        assert_eq!(
            worker.total(),
            500,
            "the worker starts from the commander's count"
        );
        worker.record(200);
        assert_eq!(worker.total(), 700, "its own spend counts at once");
        assert!(
            eventually(|| commander.total() == 700).await,
            "{}",
            commander.total()
        );
        commander.record(0);
        commander.record(50);
        assert!(eventually(|| worker.total() == 750).await, "{}", worker.total());
        assert!(eventually(|| one.spend("m1").ok() == Some(750)).await);
        // Dropped, its thread ends; what it wrote stays.
        drop(worker);
        assert_eq!(SharedSpend::start(other, "m2", 0).total(), 0, "per mission");
    }

    #[tokio::test]
    async fn a_throttle_published_on_one_host_is_read_on_another() {
        let (_dir, one, other) = two_hosts();
        let (here, there) = (StoreThrottle::start(one), StoreThrottle::start(other));
        assert_eq!(there.latest("http://e/v1 m"), None);
        here.publish("http://e/v1 m", true, Some(Duration::from_secs(30)));
        assert!(eventually(|| there.latest("http://e/v1 m").is_some()).await);
        let view = there.latest("http://e/v1 m").expect("seen");
        assert_eq!(view.cuts, 1);
        assert!(
            view.paused_for.is_some_and(|p| p > Duration::from_secs(20)),
            "{view:?}"
        );
    }

    #[test]
    fn an_endpoints_shared_name_carries_no_secret() {
        assert_eq!(
            endpoint_name("https://user:sk-123@api.example.com/v1/?key=sk-456"),
            "https://api.example.com/v1"
        );
        assert_eq!(
            endpoint_name("http://127.0.0.1:8080/v1"),
            "http://127.0.0.1:8080/v1"
        );
        assert_eq!(endpoint_name("not a url"), "(unparsed endpoint)");
    }
}
