//! Steering live workers: a person's message to a unit's worker (`orchestrator tell`, `Op::Tell`).
//!
//! Every message goes through the store's inbox, whichever front end sent it: `orchestrator tell` in
//! another process stores it and wakes the mission's process with SIGUSR1; an `Op::Tell` in the
//! mission's process is checked and stored by the same forwarder that reads the inbox. The forwarder
//! hands stored messages to the [`Mailbox`]; a worker's session takes its unit's messages before its
//! next model call, and its transcript, the `user_message` event and the inbox row's "delivered"
//! mark are written in one transaction, so a message is delivered once, also across kill and resume.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use orchestrator_protocol::{Event, UnitState};
use orchestrator_store::{InboxMessage, MissionRecord, Store};

use crate::error::{EngineError, Result};
use crate::events::EventBus;
use crate::mission::open_store_at;
use crate::missions::find_mission;
use crate::replay::Replay;

/// The largest message, in bytes: a steer, not a new brief.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Messages that may wait for one unit's worker at a time.
pub const INBOX_PER_UNIT: usize = 16;
/// `Op::Tell`s from front ends in the mission's process waiting to be checked and stored.
const MAX_REQUESTS: usize = 64;
/// How a message begins in the worker's conversation.
pub(crate) const FROM_THE_USER: &str = "Message from the user while you work:";

/// Whom a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Unit(String),
    /// Every unit whose worker is running (or between attempts) now.
    All,
}

impl Recipient {
    /// `None` is every running worker, as `Op::Tell` says it.
    pub fn from_op(unit: Option<String>) -> Recipient {
        unit.map_or(Recipient::All, Recipient::Unit)
    }
}

/// A message checked for the worker: control characters other than line breaks and tabs removed,
/// refused when empty or longer than [`MAX_MESSAGE_BYTES`].
pub fn clean_message(text: &str) -> Result<String> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(EngineError::Usage(format!(
            "the message is {} bytes; a message to a worker may be at most {MAX_MESSAGE_BYTES} bytes \
             (say what to change, not the whole brief)",
            text.len()
        )));
    }
    let cleaned: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect();
    let cleaned = cleaned.trim().to_string();
    if cleaned.is_empty() {
        return Err(EngineError::Usage("the message is empty".into()));
    }
    Ok(cleaned)
}

/// The message as the worker's conversation holds it.
pub(crate) fn worker_text(message: &str) -> String {
    format!("{FROM_THE_USER}\n{message}\n(Take it into account and carry on with your unit.)")
}

/// Where a unit's worker may still read a message: started or queued, and not through review.
fn reachable(state: UnitState) -> bool {
    !state.is_terminal() && state != UnitState::Merging
}

/// Whose worker is at work now: what `--all` reaches.
fn running(state: UnitState) -> bool {
    matches!(
        state,
        UnitState::Running | UnitState::WaitingOnChildren | UnitState::Verifying | UnitState::Reviewing
    )
}

/// The units `to` names in the mission whose log is `replay`, or why none may be told.
fn recipients(mission: &str, replay: &Replay, to: &Recipient) -> Result<Vec<String>> {
    let mut live: Vec<&String> = replay
        .units
        .iter()
        .filter(|(_, record)| running(record.state))
        .map(|(id, _)| id)
        .collect();
    live.sort();
    let live_list = match live.is_empty() {
        true => "none".to_string(),
        false => live.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
    };
    match to {
        Recipient::All if live.is_empty() => Err(EngineError::Conflict(format!(
            "no worker of mission {mission} is running now; nothing was sent"
        ))),
        Recipient::All => Ok(live.into_iter().cloned().collect()),
        Recipient::Unit(unit) => match replay.units.get(unit) {
            None => Err(EngineError::Usage(format!(
                "mission {mission} has no unit `{}`; its running units: {live_list}",
                crate::prompts::cut(unit, 80)
            ))),
            Some(record) if !reachable(record.state) => Err(EngineError::Conflict(format!(
                "unit {unit} of mission {mission} is finished ({}); no worker will read the message",
                record.state
            ))),
            Some(_) => Ok(vec![unit.clone()]),
        },
    }
}

/// Checks `message` for `to` against the mission's log and stores it, once per unit. Returns the
/// units it went to; with [`Recipient::All`], a unit whose inbox is full is left out and named in
/// the second list.
pub(crate) fn store_message(
    store: &Store,
    mission: &str,
    to: &Recipient,
    message: &str,
) -> Result<(Vec<String>, Vec<String>)> {
    let (message, units) = checked(store, mission, to, message)?;
    let (mut sent, mut full) = (Vec::new(), Vec::new());
    for unit in units {
        match store.put_inbox(mission, &unit, &message, INBOX_PER_UNIT) {
            Ok(Some(_)) => sent.push(unit),
            Ok(None) => full.push(unit),
            Err(e) => return Err(EngineError::Other(e.to_string())),
        }
    }
    if sent.is_empty() {
        return Err(EngineError::Usage(format!(
            "{INBOX_PER_UNIT} messages already wait for {}; nothing was sent (the worker reads them before \
             its next model call)",
            full.join(", ")
        )));
    }
    Ok((sent, full))
}

/// What `orchestrator tell` (and the API and MCP for a mission another process runs) does: checks
/// the mission (the latest by default) is unfinished and the unit can read the message, stores it,
/// and wakes the mission's process. Returns what happened, in words.
pub async fn tell(root: &Path, mission: Option<&str>, to: Recipient, message: &str) -> Result<String> {
    let store = open_store_at(root, false)?;
    let record = find_mission(&store, mission)?;
    let id = record.id.clone();
    if !record.status.is_unfinished() {
        return Err(EngineError::Conflict(format!(
            "mission {id} is {}; only a running or interrupted mission's workers can be told",
            record.status
        )));
    }
    let (sent, full) = store_message(&store, &id, &to, message)?;
    let mut text = format!("message for {} of mission {id} stored", sent.join(", "));
    if !full.is_empty() {
        text.push_str(&format!(
            "; not for {} ({INBOX_PER_UNIT} messages already wait there)",
            full.join(", ")
        ));
    }
    match crate::approval::wake(root, &record)? {
        true => text.push_str("; each worker reads it before its next model call"),
        false => text.push_str(&format!(
            "; the mission is not running: `orchestrator resume --mission {id}` delivers it"
        )),
    }
    Ok(text)
}

/// The mission's checks of a message without storing it: for a front end that sends it as an
/// `Op::Tell` into a mission its own process runs, so it can refuse at once what the mission would.
pub fn check_tell(
    record: &MissionRecord,
    store: &Store,
    to: &Recipient,
    message: &str,
) -> Result<Vec<String>> {
    checked(store, &record.id, to, message).map(|(_, units)| units)
}

/// The message cleaned, and the units of `mission` it may go to, or why not.
fn checked(store: &Store, mission: &str, to: &Recipient, message: &str) -> Result<(String, Vec<String>)> {
    let message = clean_message(message)?;
    let events = store
        .events_after(mission, None)
        .map_err(|e| EngineError::Other(e.to_string()))?;
    let units = recipients(mission, &Replay::from_events(&events), to)?;
    Ok((message, units))
}

/// Messages on their way to workers in this process: `Op::Tell`s not stored yet, and stored messages
/// waiting for their worker's next model call.
#[derive(Default)]
pub(crate) struct Mailbox {
    state: Mutex<MailState>,
    /// Wakes the forwarder when a front end in this process tells.
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct MailState {
    requests: VecDeque<(Recipient, String)>,
    /// Each unit's messages, kept until the unit passes: a unit built by several candidates (best of
    /// N) has several workers, and each reads every message once, even one that starts later.
    ready: HashMap<String, Vec<InboxMessage>>,
    /// What each (unit, reader) has read of `ready`.
    read: HashMap<(String, String), HashSet<i64>>,
    /// Messages some worker has read.
    delivered: HashSet<i64>,
    /// Inbox rows handed over already: they stay in the store until delivered, and a later read must
    /// not hand them over twice.
    handed: HashSet<i64>,
    /// Units that passed: no worker of theirs will call a model again, so what comes for them is
    /// not kept waiting.
    closed: HashSet<String>,
}

impl Mailbox {
    fn state(&self) -> std::sync::MutexGuard<'_, MailState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A front end's tell; false (dropped) when too many wait to be stored already.
    pub(crate) fn request(&self, to: Recipient, message: String) -> bool {
        {
            let mut state = self.state();
            if state.requests.len() >= MAX_REQUESTS {
                return false;
            }
            state.requests.push_back((to, message));
        }
        self.wake.notify_one();
        true
    }

    fn take_requests(&self) -> Vec<(Recipient, String)> {
        self.state().requests.drain(..).collect()
    }

    /// Stored messages, as the inbox holds them; the ones handed over before are skipped. Returns the
    /// new ones for units that passed already: nobody will read them.
    fn offer(&self, rows: Vec<InboxMessage>) -> Vec<InboxMessage> {
        let mut state = self.state();
        let mut late = Vec::new();
        for row in rows {
            if !state.handed.insert(row.id) {
                continue;
            }
            if state.closed.contains(&row.unit) {
                late.push(row);
            } else {
                state.ready.entry(row.unit.clone()).or_default().push(row);
            }
        }
        late
    }

    /// `unit` passed: its workers call no model again. Returns what no worker of it read; what is
    /// stored for it later comes back from `forward` the same way.
    pub(crate) fn close(&self, unit: &str) -> Vec<InboxMessage> {
        let mut state = self.state();
        state.closed.insert(unit.to_string());
        state.read.retain(|(of, _), _| of != unit);
        let letters = state.ready.remove(unit).unwrap_or_default();
        letters
            .into_iter()
            .filter(|l| !state.delivered.remove(&l.id))
            .collect()
    }

    /// The messages for `unit` that `reader` (one worker session of it) has not read, oldest first;
    /// the caller delivers them.
    pub(crate) fn take(&self, unit: &str, reader: &str) -> Vec<InboxMessage> {
        let mut state = self.state();
        let Some(letters) = state.ready.get(unit) else {
            return Vec::new();
        };
        let letters = letters.clone();
        let read = state
            .read
            .entry((unit.to_string(), reader.to_string()))
            .or_default();
        let new: Vec<InboxMessage> = letters.into_iter().filter(|l| read.insert(l.id)).collect();
        state.delivered.extend(new.iter().map(|l| l.id));
        new
    }
}

/// Stores this process's tells and hands the inbox to the mailbox: once now, before the mission's
/// sessions start, then on every wake-up (`request`, or the SIGUSR1 `orchestrator tell` sends).
pub(crate) fn forward(store: &Store, mission: &str, mailbox: &Mailbox, bus: &EventBus) {
    for (to, message) in mailbox.take_requests() {
        match store_message(store, mission, &to, &message) {
            Ok((_, full)) if full.is_empty() => {}
            Ok((_, full)) => bus.emit(Event::Notice {
                message: format!(
                    "the message was not given to {}: {INBOX_PER_UNIT} messages already wait there",
                    full.join(", ")
                ),
            }),
            Err(e) => bus.emit(Event::Notice {
                message: format!("the message was not sent: {e}"),
            }),
        }
    }
    match store.waiting_inbox(mission) {
        Ok(rows) => not_delivered(bus, mailbox.offer(rows), "the unit had passed"),
        Err(e) => tracing::warn!("cannot read the inbox: {e}"),
    }
}

/// Says of each message that it was not delivered, and why, and takes it out of the inbox: a
/// message that no worker will read must not look as if it still waits. The notice and the inbox
/// row's mark are written together, as a delivery is.
pub(crate) fn not_delivered(bus: &EventBus, letters: Vec<InboxMessage>, why: &str) {
    for letter in letters {
        let delivery = orchestrator_store::Delivery {
            inbox: vec![letter.id],
            transcript: None,
        };
        bus.emit_delivery(
            Event::Notice {
                message: format!(
                    "the message to {}'s worker was not delivered ({why} before its next model call): {}",
                    letter.unit,
                    crate::missions::shorten(&letter.message, 120)
                ),
            },
            &delivery,
        );
    }
}

/// The mission is over for good: what still waits in its inbox is not delivered, and is said so.
pub(crate) fn close_inbox(store: &Store, mission: &str, bus: &EventBus) {
    match store.waiting_inbox(mission) {
        Ok(rows) => not_delivered(bus, rows, "the mission had ended"),
        Err(e) => tracing::warn!("cannot read the inbox: {e}"),
    }
}

/// Waits for a front end in this process to tell something.
pub(crate) async fn requested(mailbox: &Mailbox) {
    mailbox.wake.notified().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cleaned_and_bounded() {
        assert_eq!(
            clean_message("  use\ttabs\u{1b}[31m\r\n ").unwrap(),
            "use\ttabs[31m"
        );
        assert!(clean_message("\u{7}\u{0}  ").is_err(), "empty once cleaned");
        let long = "x".repeat(MAX_MESSAGE_BYTES + 1);
        assert!(clean_message(&long)
            .unwrap_err()
            .to_string()
            .contains("at most 4096 bytes"));
        assert!(clean_message(&"x".repeat(MAX_MESSAGE_BYTES)).is_ok());
    }

    #[test]
    fn the_mailbox_hands_a_row_over_once() {
        let mailbox = Mailbox::default();
        let row = |id, unit: &str| InboxMessage {
            id,
            unit: unit.into(),
            message: format!("m{id}"),
        };
        assert!(mailbox.offer(vec![row(1, "t1"), row(2, "t2")]).is_empty());
        assert!(mailbox.offer(vec![row(1, "t1"), row(3, "t1")]).is_empty());
        let taken: Vec<i64> = mailbox.take("t1", "w").iter().map(|m| m.id).collect();
        assert_eq!(taken, vec![1, 3]);
        assert!(mailbox.take("t1", "w").is_empty());
        assert!(mailbox.offer(vec![row(1, "t1")]).is_empty());
        assert!(
            mailbox.take("t1", "w").is_empty(),
            "a row read again is not handed over again"
        );
        // A unit that passed: what waited and what comes later is given back, not kept.
        assert!(mailbox.offer(vec![row(4, "t2"), row(5, "t3")]).is_empty());
        let waited: Vec<i64> = mailbox.close("t2").iter().map(|m| m.id).collect();
        assert_eq!(waited, vec![2, 4]);
        let late: Vec<i64> = mailbox
            .offer(vec![row(6, "t2"), row(7, "t3")])
            .iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(late, vec![6]);
        assert!(mailbox.take("t2", "w").is_empty());
        assert_eq!(mailbox.take("t3", "w").len(), 2);
        // Several workers of one unit (best of N): each reads every message once, a late one too.
        assert!(mailbox.offer(vec![row(8, "t4")]).is_empty());
        assert_eq!(mailbox.take("t4", "c1").len(), 1);
        assert_eq!(mailbox.take("t4", "c2").len(), 1);
        assert!(mailbox.take("t4", "c1").is_empty() && mailbox.take("t4", "c2").is_empty());
        assert_eq!(mailbox.take("t4", "c3").len(), 1, "a candidate that starts later");
        assert!(mailbox.close("t4").is_empty(), "it was read: nothing undelivered");
        for _ in 0..MAX_REQUESTS {
            assert!(mailbox.request(Recipient::All, "x".into()));
        }
        assert!(
            !mailbox.request(Recipient::All, "x".into()),
            "the queue is bounded"
        );
        assert_eq!(mailbox.take_requests().len(), MAX_REQUESTS);
    }
}
