//! The engine's one event stream. Every front end (progress lines, `--json`, the mission log)
//! subscribes here; nothing reads engine internals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use orchestrator_protocol::{Event, EventEnvelope, TokenUsage};
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
            }),
        }
    }

    /// Subscribe before the mission starts to see every event.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Arc<EventEnvelope>> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.subscribers).push(tx);
        rx
    }

    pub(crate) fn set_mission(&self, id: &str) {
        *lock(&self.inner.mission) = id.to_string();
    }

    pub fn emit(&self, event: Event) {
        if let Event::ModelCall { usage, .. } = &event {
            lock(&self.inner.usage).add(*usage);
        }
        // Sequence numbers and delivery happen under one lock so every subscriber sees the same order.
        let mut subscribers = lock(&self.inner.subscribers);
        let envelope = Arc::new(EventEnvelope {
            seq: self.inner.seq.fetch_add(1, Ordering::SeqCst),
            at: Utc::now(),
            mission: lock(&self.inner.mission).clone(),
            event,
        });
        subscribers.retain(|tx| tx.send(envelope.clone()).is_ok());
    }

    /// Tokens used by every model call so far.
    pub fn usage(&self) -> TokenUsage {
        *lock(&self.inner.usage)
    }

    /// Drops every subscriber channel so consumers see the end of the stream.
    pub fn close(&self) {
        lock(&self.inner.subscribers).clear();
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data; keep going.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
