//! Wake-ups for whatever waits on the work queue (issue #20). Every change a worker or a commander
//! waits for — a unit offered, given back or finished, a mission's cap set — sends a NOTIFY on
//! [`CHANNEL`] with its repository and mission, which PostgreSQL delivers when its transaction
//! commits. A [`Listener`] holds a connection of its own that hears them at once, so a worker
//! claims a unit the moment it is offered and a commander merges it the moment it is finished.
//! The polls stay, slower, for what a notification lost while a listener reconnects would leave.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Transaction;

use super::{Pg, Settings};
use crate::Result;

/// The channel every change of the work queue is announced on.
pub(crate) const CHANNEL: &str = "orchestrator_work";

/// How long a listener waits for a notification before it looks whether it should stop.
const WAKE: Duration = Duration::from_millis(500);
/// The first wait before a lost listener connects again; doubled up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// What a listener hands each notification to: the repository and the mission that changed.
pub(crate) type OnNotice = Box<dyn Fn(&str, &str) + Send>;

/// Hears the work queue's notifications until dropped.
pub struct Listener {
    stop: Arc<AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Announces a change of `mission`'s queue to every listener, when `tx` commits.
pub(crate) fn announce(tx: &mut Transaction<'_>, repo: &str, mission: &str) -> Result<()> {
    tx.execute(
        "SELECT pg_notify($1, json_build_array($2::text, $3::text)::text)",
        &[&CHANNEL, &repo, &mission],
    )?;
    Ok(())
}

impl Pg {
    /// Starts a listener: `on_notice(repo, mission)` runs on its thread for each change announced.
    /// A lost connection is made again (a warning each time, waits growing to 30 s).
    pub(crate) fn listen(&self, on_notice: OnNotice) -> Result<Listener> {
        let stop = Arc::new(AtomicBool::new(false));
        let (url, stopped) = (self.url.clone(), stop.clone());
        std::thread::Builder::new()
            .name("orchestrator-pg-listen".into())
            .spawn(move || listen_until_stopped(&url, &stopped, on_notice.as_ref()))
            .map_err(|e| crate::StoreError::Unreachable {
                target: self.target.clone(),
                reason: format!("cannot start the listener's thread: {e}"),
            })?;
        Ok(Listener { stop })
    }
}

fn listen_until_stopped(url: &str, stop: &AtomicBool, on_notice: &dyn Fn(&str, &str)) {
    let mut retry = FIRST_RETRY;
    while !stop.load(Ordering::SeqCst) {
        match listen_once(url, stop, on_notice) {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(
                    "the work queue's listener lost its connection ({e}); connecting again in {} s",
                    retry.as_secs()
                );
                sleep_unless_stopped(retry, stop);
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

/// One connection's life: LISTEN, then hand on what is heard until stopped (`Ok`) or the
/// connection fails (`Err`).
fn listen_once(url: &str, stop: &AtomicBool, on_notice: &dyn Fn(&str, &str)) -> Result<()> {
    let Settings {
        config, connector, ..
    } = Settings::of(url)?;
    let mut client = config.connect(connector)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    while !stop.load(Ordering::SeqCst) {
        let mut notifications = client.notifications();
        let mut heard = notifications.timeout_iter(WAKE);
        while let Some(notification) = heard.next()? {
            if let Ok((repo, mission)) = serde_json::from_str::<(String, String)>(notification.payload()) {
                on_notice(&repo, &mission);
            }
        }
    }
    Ok(())
}

fn sleep_unless_stopped(wait: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    while waited < wait && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(step);
        waited += step;
    }
}
