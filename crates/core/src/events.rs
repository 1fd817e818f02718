//! The engine's one event stream. Every front end (progress lines, `--json`, the mission store)
//! subscribes here; nothing reads engine internals.
//!
//! With a store attached, each event is written to the store's event log *before* subscribers see it
//! and before `emit` returns, so the log is a write-ahead log: the engine emits a step's event, then acts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use std::collections::BTreeMap;

use orchestrator_protocol::{Event, EventEnvelope, Role, TokenUsage};
use orchestrator_store::{Delivery, Store};
use tokio::sync::mpsc;

/// Clone-able handle the engine emits through. Subscribers get every event, in order, losslessly.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

struct Inner {
    mission: Mutex<String>,
    seq: AtomicU64,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Arc<EventEnvelope>>>>,
    usage: Mutex<TokenUsage>,
    by_role: Mutex<BTreeMap<Role, TokenUsage>>,
    store: Mutex<Option<Arc<Store>>>,
    store_error: Mutex<Option<String>>,
    /// Cancelled at the first failed store write: the mission stops there, resumable.
    stop_on_store_error: Mutex<Option<tokio_util::sync::CancellationToken>>,
    /// Why this process lost the mission's lead: from then on nothing more goes to the store, which
    /// is another commander's to write.
    lead_lost: Mutex<Option<String>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        EventBus {
            inner: Arc::new(Inner {
                mission: Mutex::new(String::new()),
                seq: AtomicU64::new(0),
                subscribers: Mutex::new(Vec::new()),
                usage: Mutex::new(TokenUsage::default()),
                by_role: Mutex::new(BTreeMap::new()),
                store: Mutex::new(None),
                store_error: Mutex::new(None),
                stop_on_store_error: Mutex::new(None),
                lead_lost: Mutex::new(None),
            }),
        }
    }

    /// Subscribe before the mission starts to see every event.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Arc<EventEnvelope>> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.subscribers).push(tx);
        rx
    }

    /// Binds the bus to a mission: sequence numbers continue from `next_seq`, `usage` is what earlier
    /// runs of the mission already used, and every event goes to the store first.
    pub(crate) fn attach(
        &self,
        mission: &str,
        next_seq: u64,
        usage: TokenUsage,
        by_role: BTreeMap<Role, TokenUsage>,
        store: Arc<Store>,
    ) {
        *lock(&self.inner.mission) = mission.to_string();
        self.inner.seq.store(next_seq, Ordering::SeqCst);
        *lock(&self.inner.usage) = usage;
        *lock(&self.inner.by_role) = by_role;
        *lock(&self.inner.store) = Some(store);
    }

    pub fn emit(&self, event: Event) {
        self.emit_with(event, None);
    }

    /// Emits `event` with what `delivery` writes to the store in the same transaction (a message
    /// handed to a worker: its transcript entry and its inbox row's mark).
    pub(crate) fn emit_delivery(&self, event: Event, delivery: &Delivery) {
        self.emit_with(event, Some(delivery));
    }

    fn emit_with(&self, event: Event, delivery: Option<&Delivery>) {
        if let Event::ModelCall { usage, role, .. } = &event {
            lock(&self.inner.usage).add(*usage);
            lock(&self.inner.by_role).entry(*role).or_default().add(*usage);
        }
        // Sequence numbers, the store write and delivery happen under one lock so that the log and every
        // subscriber see the same order.
        let mut subscribers = lock(&self.inner.subscribers);
        let envelope = EventEnvelope {
            seq: self.inner.seq.fetch_add(1, Ordering::SeqCst),
            at: Utc::now(),
            mission: lock(&self.inner.mission).clone(),
            event,
        };
        let lead_lost = lock(&self.inner.lead_lost).is_some();
        let envelope = Arc::new(match lock(&self.inner.store).as_ref() {
            Some(store) if !lead_lost => self.store_masked(store, envelope, delivery),
            // Not written, but still shown: the user learns why the mission stops.
            Some(store) => masked(store, envelope),
            None => envelope,
        });
        subscribers.retain(|tx| tx.send(envelope.clone()).is_ok());
    }

    /// Writes the event to the store and returns it as the store keeps it — the API key masked,
    /// whatever a model or a tool echoed — so every front end (`--json`, progress lines, the terminal
    /// view, the API, traces) sees the same. The event is serialised once for both; only one that holds
    /// a secret is read back from the masked JSON.
    fn store_masked(
        &self,
        store: &Store,
        envelope: EventEnvelope,
        delivery: Option<&Delivery>,
    ) -> EventEnvelope {
        let json = match serde_json::to_string(&envelope) {
            Ok(json) => json,
            Err(e) => {
                self.store_failed(e.to_string());
                return envelope;
            }
        };
        let written = match delivery {
            Some(delivery) => store.append_delivery(&envelope, &json, delivery),
            None => store.append_serialized_event(&envelope, &json),
        };
        match written {
            Ok(()) => {}
            // The store refused a commander that no longer leads: the new leader's log is left as is.
            Err(orchestrator_store::StoreError::LeaseLost { .. }) => {
                self.lose_lead(crate::leader::taken_over(store, &envelope.mission))
            }
            Err(e) => self.store_failed(e.to_string()),
        }
        if !store.contains_secret(&json) {
            return envelope;
        }
        serde_json::from_str(&store.mask(&json)).unwrap_or(envelope)
    }

    /// This process lost the mission's lead (`why`): nothing more is written to the store from now
    /// on, and the mission stops as at a failed store write (`stop_on_store_error`'s token),
    /// resumable by whoever leads it now.
    pub(crate) fn lose_lead(&self, why: String) {
        tracing::error!("lost the lead of the mission: {why}");
        lock(&self.inner.lead_lost).get_or_insert(why);
        if let Some(token) = lock(&self.inner.stop_on_store_error).as_ref() {
            token.cancel();
        }
    }

    /// Why this process lost the mission's lead, if it did.
    pub fn lead_lost(&self) -> Option<String> {
        lock(&self.inner.lead_lost).clone()
    }

    fn store_failed(&self, error: String) {
        tracing::error!("cannot write to the mission store: {error}");
        lock(&self.inner.store_error).get_or_insert(error);
        if let Some(token) = lock(&self.inner.stop_on_store_error).as_ref() {
            token.cancel();
        }
    }

    /// Cancels `token` at the first store write that fails (a full disk, a lost PostgreSQL server):
    /// work whose events cannot be logged could not be resumed, so the mission stops there. A write
    /// that failed (or a lead lost) before this was called cancels it at once.
    pub fn stop_on_store_error(&self, token: tokio_util::sync::CancellationToken) {
        let failed = lock(&self.inner.store_error).is_some() || lock(&self.inner.lead_lost).is_some();
        if failed {
            token.cancel();
        }
        *lock(&self.inner.stop_on_store_error) = Some(token);
    }

    /// Tokens used by every model call of the mission so far.
    pub fn usage(&self) -> TokenUsage {
        *lock(&self.inner.usage)
    }

    /// Tokens used so far by each role.
    pub fn usage_by_role(&self) -> BTreeMap<Role, TokenUsage> {
        lock(&self.inner.by_role).clone()
    }

    /// The first failure to write the store, if any: the mission must stop, since it could not resume.
    pub fn store_error(&self) -> Option<String> {
        lock(&self.inner.store_error).clone()
    }

    /// Drops every subscriber channel so consumers see the end of the stream.
    pub fn close(&self) {
        lock(&self.inner.subscribers).clear();
    }
}

/// `envelope` as the store would show it, secrets masked, without writing it.
fn masked(store: &Store, envelope: EventEnvelope) -> EventEnvelope {
    let Ok(json) = serde_json::to_string(&envelope) else {
        return envelope;
    };
    if !store.contains_secret(&json) {
        return envelope;
    }
    serde_json::from_str(&store.mask(&json)).unwrap_or(envelope)
}

/// A poisoned lock only means another thread panicked mid-update of plain data; keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
