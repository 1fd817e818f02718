//! The commander's side of external workers (issue #20): each unit is offered to the store's work
//! queue with the commit it starts from published on the shared remote; one poller follows the
//! mission's queue, relays each unit's events from its holder into the mission's log (the commander
//! stays its one writer) and hands each waiting unit its result.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use orchestrator_git::{Push, Repo};
use orchestrator_protocol::Event;
use orchestrator_store::{Store, UnitKey, UnitOffer, UnitState, WorkUnit};
use tokio::sync::oneshot;

use crate::events::EventBus;
use crate::ticket::{holder_tag, integration_ref, relay_session, relayable, Ticket, TicketResult};

/// How often the queue is read while units are out. Short against a unit's minutes, long enough
/// that a mission of hundreds of units costs the store a few queries a second.
const POLL: Duration = Duration::from_millis(250);

/// The most events taken from one holder per look: a worker that floods its relay is followed
/// at this pace instead of being read into memory at once.
const RELAY_BATCH: usize = 500;

pub(crate) struct Offers {
    store: Arc<Store>,
    mission: String,
    remote: String,
    repo: Repo,
    bus: EventBus,
    waiting: Mutex<BTreeMap<String, Waiting>>,
    /// The integration commit last pushed to the remote, once this run has pushed or read it.
    published: tokio::sync::Mutex<Option<String>>,
    /// How far earlier runs relayed each holder's events (by holder tag).
    relayed_before: BTreeMap<String, usize>,
}

/// A unit out with the workers.
struct Waiting {
    done: Option<oneshot::Sender<WorkUnit>>,
    /// Its row in the queue (a unit given back interrupted is offered again as the next attempt).
    attempt: u32,
    /// The holder's token whose events are relayed, and how many of them were.
    token: i64,
    relayed: usize,
}

impl Offers {
    /// The mission's offers, and the poller that serves them (it ends with the last handle).
    pub(crate) fn start(
        store: Arc<Store>,
        mission: &str,
        remote: &str,
        repo: Repo,
        bus: EventBus,
        relayed_before: BTreeMap<String, usize>,
    ) -> Arc<Offers> {
        let offers = Arc::new(Offers {
            store,
            mission: mission.to_string(),
            remote: remote.to_string(),
            repo,
            bus,
            waiting: Mutex::new(BTreeMap::new()),
            published: tokio::sync::Mutex::new(None),
            relayed_before,
        });
        tokio::spawn(poll(Arc::downgrade(&offers)));
        offers
    }

    /// Sets how many of the mission's units all workers together may hold at once.
    pub(crate) fn set_max_parallel(&self, n: usize) -> Result<(), String> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.store
            .set_max_parallel(&self.mission, n)
            .map_err(|e| e.to_string())
    }

    /// Refuses to write the remote's integration ref for a commander that no longer leads: the
    /// lead is read from the store just before (the leader keeper notices a loss only at its next
    /// renewal), and a loss found here stops this commander as the keeper would.
    async fn check_lead(&self) -> Result<(), String> {
        if let Some(why) = self.bus.lead_lost() {
            return Err(format!("{} ({why})", crate::units::LEAD_LOST_NOTE));
        }
        let (store, mission) = (self.store.clone(), self.mission.clone());
        match tokio::task::spawn_blocking(move || store.still_leads(&mission)).await {
            Ok(Ok(Some(false))) => {
                let why = "another commander leads the mission now".to_string();
                self.bus.lose_lead(why.clone());
                Err(format!("{} ({why})", crate::units::LEAD_LOST_NOTE))
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("cannot read the mission's lead before pushing: {e}")),
            Err(e) => Err(format!("cannot read the mission's lead before pushing: {e}")),
        }
    }

    /// Makes `commit` reachable on the remote through the mission's integration ref. The ref only
    /// moves forward and is compare and swap: a commit the published one already contains is not
    /// pushed again, and a ref someone else moved is an error, never overwritten.
    pub(crate) async fn publish(&self, commit: &str) -> Result<(), String> {
        let mut published = self.published.lock().await;
        let name = integration_ref(&self.mission);
        self.check_lead().await?;
        if published.is_none() {
            *published = self
                .repo
                .remote_ref(&self.remote, &name)
                .await
                .map_err(|e| format!("cannot read {name} on {}: {e}", self.remote))?;
        }
        if let Some(there) = published.as_deref() {
            if there == commit || self.repo.is_ancestor(commit, there).await.unwrap_or(false) {
                return Ok(());
            }
        }
        let pushed = self
            .repo
            .push_with_lease(&self.remote, commit, &name, published.as_deref())
            .await
            .map_err(|e| format!("cannot push to {}: {e}", self.remote))?;
        match pushed {
            Push::Done => {
                *published = Some(commit.to_string());
                Ok(())
            }
            Push::Rejected(why) => {
                // Read again next time: whoever moved it, this run must not push blind.
                *published = None;
                Err(format!(
                    "{} refused {name} (it moved since this commander read it; is another commander \
                     running the mission?): {why}",
                    self.remote
                ))
            }
        }
    }

    /// Offers the unit and returns what receives its row once a worker finished it. After a resume
    /// the unit's latest row is waited for again (its worker may still be at it, or have finished),
    /// unless it ended interrupted (the budget was spent): then it is offered again, as the next
    /// attempt, with this run's ticket.
    pub(crate) fn offer(&self, ticket: &Ticket) -> Result<oneshot::Receiver<WorkUnit>, String> {
        let payload = serde_json::to_value(ticket).map_err(|e| e.to_string())?;
        let attempt = self
            .next_attempt(&ticket.unit.id)
            .map_err(|e| format!("cannot read the work queue: {e}"))?;
        let offer = UnitOffer {
            key: UnitKey {
                mission: self.mission.clone(),
                unit: ticket.unit.id.clone(),
                attempt,
            },
            payload,
        };
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(
            ticket.unit.id.clone(),
            Waiting {
                done: Some(tx),
                attempt,
                token: 0,
                relayed: 0,
            },
        );
        if let Err(e) = self.store.offer_unit(&offer) {
            lock(&self.waiting).remove(&ticket.unit.id);
            return Err(format!("cannot offer the unit to the workers: {e}"));
        }
        Ok(rx)
    }

    /// Stops waiting for `unit` (its wait was cancelled); its row stays for a resume.
    pub(crate) fn forget(&self, unit: &str) {
        lock(&self.waiting).remove(unit);
    }

    /// The commit `name` holds on the remote, if it exists there.
    pub(crate) async fn remote_commit(&self, name: &str) -> Result<Option<String>, String> {
        self.repo
            .remote_ref(&self.remote, name)
            .await
            .map_err(|e| format!("cannot read {name} on {}: {e}", self.remote))
    }

    /// Fetches a worker's pushed ref into the local branch `branch` and returns the commit there.
    pub(crate) async fn fetch(&self, pushed_ref: &str, branch: &str) -> Result<String, String> {
        let spec = format!("+{pushed_ref}:refs/heads/{branch}");
        self.repo
            .fetch_refs(&self.remote, &[spec])
            .await
            .map_err(|e| format!("cannot fetch {pushed_ref} from {}: {e}", self.remote))?;
        self.repo
            .rev_parse(&format!("refs/heads/{branch}"))
            .await
            .map_err(|e| e.to_string())
    }

    /// The queue row to wait on for `unit`: its latest, unless that one ended interrupted.
    fn next_attempt(&self, unit: &str) -> Result<u32, orchestrator_store::StoreError> {
        let rows = self.store.work_units(&self.mission)?;
        let latest = rows
            .iter()
            .filter(|row| row.key.unit == unit)
            .max_by_key(|row| row.key.attempt);
        Ok(match latest {
            None => 1,
            Some(row) if ended_interrupted(row) => row.key.attempt + 1,
            Some(row) => row.key.attempt,
        })
    }

    /// One look at the queue: new holders announced, their events relayed, finished units handed
    /// their rows. Blocking store calls: run off the async threads.
    fn poll_once(&self) -> Result<(), orchestrator_store::StoreError> {
        if lock(&self.waiting).is_empty() {
            return Ok(());
        }
        for row in self.store.work_units(&self.mission)? {
            self.follow(row)?;
        }
        Ok(())
    }

    fn follow(&self, row: WorkUnit) -> Result<(), orchestrator_store::StoreError> {
        let unit = row.key.unit.clone();
        let (token, from) = match lock(&self.waiting).get(&unit) {
            Some(w) if w.attempt == row.key.attempt => (w.token, w.relayed),
            _ => return Ok(()),
        };
        if row.token == 0 {
            return Ok(()); // not claimed yet
        }
        let tag = holder_tag(&unit, row.key.attempt, row.token);
        if row.token != token {
            // Holders this look never saw (claimed and gone between two looks: a quick give-back,
            // a take-over) and the one it followed are over: what they relayed is read to its end,
            // so their sessions, spend and notices reach the log too.
            let first = if token == 0 { 1 } else { token };
            for earlier in first..row.token {
                let done = if earlier == token { from } else { 0 };
                self.drain(&unit, &holder_tag(&unit, row.key.attempt, earlier), done)?;
            }
        }
        let (token, from) = if row.token != token {
            match self.relayed_before.get(&tag) {
                // An earlier run announced this holder and logged its events this far.
                Some(upto) => (row.token, *upto),
                None => {
                    self.announce_holder(&row, token);
                    (row.token, 0)
                }
            }
        } else {
            (token, from)
        };
        let relayed_now = self.relay(&unit, &tag, from)?;
        if relayed_now > 0 {
            self.bus.emit(Event::EventsRelayed {
                unit: unit.clone(),
                holder: tag,
                upto: from + relayed_now,
            });
        }
        let finished = matches!(row.state, UnitState::Done | UnitState::Failed);
        let mut waiting = lock(&self.waiting);
        let Some(entry) = waiting.get_mut(&unit) else {
            return Ok(());
        };
        entry.token = token;
        entry.relayed = from + relayed_now;
        if finished {
            if let Some(done) = entry.done.take() {
                let _ = done.send(row);
            }
            waiting.remove(&unit);
        }
        Ok(())
    }

    /// Who took the unit: the first claim, or a take-over after the holder's lease expired.
    fn announce_holder(&self, row: &WorkUnit, before: i64) {
        let (worker, host) = match &row.holder {
            Some(h) => (crate::leader::shown(&h.id), crate::leader::shown(&h.host)),
            None => ("a worker".to_string(), "an unnamed host".to_string()),
        };
        self.bus.emit(Event::UnitTaken {
            unit: row.key.unit.clone(),
            worker,
            host,
            token: row.token,
            taken_over_from: (before != 0).then_some(before),
        });
    }

    /// Relays all that a holder that is over wrote since `from` (or since an earlier run relayed
    /// it), batch by batch, and records how far.
    fn drain(&self, unit: &str, tag: &str, from: usize) -> Result<(), orchestrator_store::StoreError> {
        let mut upto = from.max(self.relayed_before.get(tag).copied().unwrap_or(0));
        let start = upto;
        loop {
            let read = self.relay(unit, tag, upto)?;
            upto += read;
            if read < RELAY_BATCH {
                break;
            }
        }
        if upto > start {
            self.bus.emit(Event::EventsRelayed {
                unit: unit.to_string(),
                holder: tag.to_string(),
                upto,
            });
        }
        Ok(())
    }

    /// Emits the holder's events written since `from`; returns how many were read.
    fn relay(&self, unit: &str, tag: &str, from: usize) -> Result<usize, orchestrator_store::StoreError> {
        let session = relay_session(tag);
        let messages = self
            .store
            .messages_from(&self.mission, &session, from, RELAY_BATCH)?;
        let mut read = 0;
        for (idx, value) in messages {
            // Positions are written in order by one holder; a gap would be read next time.
            if idx != from + read {
                break;
            }
            read += 1;
            match serde_json::from_value::<Event>(value) {
                Ok(event) if relayable(&event, unit, tag) => self.bus.emit(event),
                Ok(event) => tracing::debug!("not relayed from the holder of {unit}: {event:?}"),
                Err(e) => tracing::warn!("an unreadable event from the holder of {unit}: {e}"),
            }
        }
        Ok(read)
    }
}

/// The run is over (sealed, failed, stopped or cancelled): units of the mission not yet claimed wait
/// for the next run (its cap is set again then) instead of going to workers that would spend tokens
/// on a mission nobody leads. Workers holding its units see the cap at their next heartbeat and give
/// them back (`worker_process/unit.rs`), so `cancel` and a spent budget stop them too. A commander
/// killed outright sets nothing: its workers go on, and the resume finds their results.
impl Drop for Offers {
    fn drop(&mut self) {
        if let Err(e) = self.store.set_max_parallel(&self.mission, 0) {
            tracing::warn!("cannot hold back the mission's unclaimed units: {e}");
        }
    }
}

/// The poller: follows the queue while the offers exist.
/// It does not wake on the store's announcements (`Store::listen`), as workers do: a look reads the
/// queue and every held unit's relay, so looking at each unit's end too cost ~60% more store
/// transactions per unit for no shorter mission (docs/benchmarks.md, 570b785); the relays need the
/// steady 250 ms anyway.
async fn poll(offers: Weak<Offers>) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(strong) = offers.upgrade() else {
            return;
        };
        let looked = tokio::task::spawn_blocking(move || strong.poll_once()).await;
        match looked {
            Ok(Ok(())) => {}
            // The next look may succeed; the store's outage is the leader lease's to judge.
            Ok(Err(e)) => tracing::warn!("cannot read the work queue: {e}"),
            Err(e) => tracing::warn!("the work queue poller failed: {e}"),
        }
    }
}

/// A finished row whose result says it was stopped, not judged (the budget was spent on it).
fn ended_interrupted(row: &WorkUnit) -> bool {
    matches!(row.state, UnitState::Done | UnitState::Failed)
        && row
            .result
            .clone()
            .and_then(|value| serde_json::from_value::<TicketResult>(value).ok())
            .is_some_and(|result| result.interrupted)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
