//! The work queue with leases that `orchestrator worker` processes on many hosts build on (issue #20):
//! the commander offers units, workers claim them for a while (a lease) and prove with a fencing token
//! that they still hold them on every write, and a mission has one leader (the commander) at a time.
//!
//! A lease is a promise with an end: its holder renews it (heartbeat) or loses it once it has expired
//! and another worker has claimed the unit. Every claim bumps the unit's fencing token, so whoever
//! holds an older token (a worker that paused, lost its network, or was presumed dead) is refused on
//! its next heartbeat or write, which then changes nothing. The token, not the clock, decides: an
//! expired lease nobody has taken yet is still its holder's.
//!
//! Time is the database's (`now()`) on PostgreSQL, so the hosts' clocks do not matter; SQLite, on one
//! machine, uses the process's clock. Times are milliseconds since the epoch.
//!
//! This file holds the API and the SQLite side; `pg/lease.rs` the PostgreSQL side.

use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::Value;

use crate::{Either, Result, Store, StoreError};

/// The most a unit's payload or result may take, as JSON: a unit's description and its outcome are
/// a few KiB; anything near this is a bug or an attack, and every claim would carry it around.
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// The longest id (mission, unit, worker, host) accepted, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// How many times a unit is taken over after its holder's lease expired. A holder that dies once is
/// a lost machine; every holder dying is the unit's doing (a session that kills its worker, a
/// command that takes the host down), and taking it over again would never end: once its lease
/// expires after this many take-overs, the next claim marks it failed instead (no result, the last
/// holder kept), and its commander fails the unit saying why.
pub const MAX_TAKEOVERS: u32 = 2;

/// Times a unit's holders may give it back for trouble on their host (no model key there, the
/// endpoint or the remote failing from there) before the next give-back ends it with the result its
/// holder hands in: a unit that no host can build stops going round the workers.
pub const MAX_GIVE_BACKS: u32 = 5;

/// What became of a unit given back ([`Store::give_back`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveBack {
    /// Ready again, for another claim.
    Released,
    /// Given back too often: it ended, failed, with the holder's result.
    Ended,
}

/// The parallelism of a mission whose commander has not set it ([`Store::set_max_parallel`]): one
/// unit at a time is slow but never more than anyone asked for.
pub const DEFAULT_MAX_PARALLEL: u32 = 1;

/// A unit the commander offers: everything a worker needs is in the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitOffer {
    pub key: UnitKey,
    pub payload: Value,
}

/// Which unit: one attempt at one unit of a mission.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitKey {
    pub mission: String,
    pub unit: String,
    pub attempt: u32,
}

impl std::fmt::Display for UnitKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unit {} (attempt {}) of mission {}",
            self.unit, self.attempt, self.mission
        )
    }
}

/// What a holder shows on every write: the unit and the token its claim handed out.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    pub key: UnitKey,
    pub token: i64,
}

/// Who holds a lease: a worker (or commander) and the machine it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    pub host: String,
}

/// A unit a claim handed out.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedUnit {
    pub fence: Fence,
    pub payload: Value,
    pub expires_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitState {
    /// Offered or released, waiting for a worker.
    Ready,
    /// A worker holds it (its lease may have expired: then the next claim may take it).
    Leased,
    Done,
    Failed,
}

impl UnitState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UnitState::Ready => "ready",
            UnitState::Leased => "leased",
            UnitState::Done => "done",
            UnitState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> UnitState {
        match s {
            "leased" => UnitState::Leased,
            "done" => UnitState::Done,
            "failed" => UnitState::Failed,
            _ => UnitState::Ready,
        }
    }
}

/// How a worker's run of a unit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed,
}

impl Outcome {
    pub(crate) fn state(self) -> UnitState {
        match self {
            Outcome::Done => UnitState::Done,
            Outcome::Failed => UnitState::Failed,
        }
    }
}

/// A unit as the queue holds it, for `status`: who holds it and until when.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkUnit {
    pub key: UnitKey,
    pub state: UnitState,
    /// The latest claim's token (0 before the first claim).
    pub token: i64,
    /// Who holds it while leased (also once its lease expired, until another claim takes it), or
    /// who finished it; none while ready.
    pub holder: Option<Holder>,
    pub expires_at_ms: Option<i64>,
    /// Whether the lease has expired by the store's clock (so hosts with wrong clocks agree).
    pub expired: bool,
    pub result: Option<Value>,
    /// Claims that took the unit over from a holder whose lease expired (see [`MAX_TAKEOVERS`]).
    pub takeovers: u32,
    /// Times its holders gave it back for trouble on their host (see [`MAX_GIVE_BACKS`]).
    pub give_backs: u32,
}

/// A mission's leader lease: which commander runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderLease {
    pub mission: String,
    pub holder: Holder,
    pub token: i64,
    pub expires_at_ms: i64,
    /// Whether it has expired by the store's clock (only ever true when read back).
    pub expired: bool,
}

/// A mission's row as a claim sees it: its cap and its live leases.
pub(crate) struct MissionLoad {
    pub mission: String,
    pub max_parallel: i64,
    pub live: i64,
}

impl MissionLoad {
    /// How many units a claim may take from it, `wanted` at most.
    pub(crate) fn take(&self, wanted: i64) -> i64 {
        (self.max_parallel - self.live).clamp(0, wanted)
    }
}

/// The unit row a fenced write checks, read in the write's transaction.
pub(crate) struct FenceRow {
    pub state: UnitState,
    pub token: i64,
}

/// `Ok` when `row` shows `fence` still holds the unit; a finished unit whose token matches is a
/// retried report, told apart by [`finished_by`].
/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    /// The lease's new expiry (the store's clock, milliseconds since the epoch).
    pub expires_at_ms: i64,
    /// The mission's cap across workers ([`Store::max_parallel`]); 0: its commander stopped.
    pub max_parallel: Option<u32>,
}

pub(crate) fn check_fence(fence: &Fence, row: Option<FenceRow>) -> Result<()> {
    match row {
        Some(row) if row.token == fence.token && row.state == UnitState::Leased => Ok(()),
        _ => Err(lease_lost(fence)),
    }
}

/// Whether `row` is the unit already finished with `outcome` by this very fence (a report retried
/// after its answer was lost): then the retry succeeds without changing anything.
pub(crate) fn finished_by(fence: &Fence, row: &Option<FenceRow>, outcome: Outcome) -> bool {
    row.as_ref()
        .is_some_and(|r| r.token == fence.token && r.state == outcome.state())
}

pub(crate) fn lease_lost(fence: &Fence) -> StoreError {
    StoreError::LeaseLost {
        what: fence.key.to_string(),
        token: fence.token,
    }
}

pub(crate) fn leader_lost(mission: &str, token: i64) -> StoreError {
    StoreError::LeaseLost {
        what: format!("the lead of mission {mission}"),
        token,
    }
}

/// The leader lease's fence, the same on both backends: only the token that leads now may renew
/// or release it.
pub(crate) fn ensure_leads(current: Option<&LeaderLease>, mission: &str, token: i64) -> Result<()> {
    match current {
        Some(lease) if lease.token == token => Ok(()),
        _ => Err(leader_lost(mission, token)),
    }
}

/// `ttl` as milliseconds, for adding to a clock reading.
pub(crate) fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

/// Refuses an id that no backend stores faithfully (PostgreSQL's text holds no NUL) or that is
/// absurdly long; any other Unicode is kept as given.
pub(crate) fn check_id(what: &str, id: &str) -> Result<()> {
    let reason = if id.is_empty() {
        "it is empty".to_string()
    } else if id.len() > MAX_ID_BYTES {
        format!("it is {} bytes long, more than {MAX_ID_BYTES}", id.len())
    } else if id.contains('\0') {
        "it holds a NUL character".to_string()
    } else {
        return Ok(());
    };
    Err(StoreError::Refused {
        what: what.to_string(),
        reason,
    })
}

fn check_key(key: &UnitKey) -> Result<()> {
    check_id("a mission id", &key.mission)?;
    check_id("a unit id", &key.unit)
}

fn check_holder(holder: &Holder) -> Result<()> {
    check_id("a worker id", &holder.id)?;
    check_id("a host name", &holder.host)
}

impl Store {
    /// `value` as it is stored: masked, bounded, and sure to read back (serde_json refuses to parse
    /// nesting deeper than 128, which a built `Value` can have; stored, it would fail every claim).
    fn stored_json(&self, what: &str, value: &Value) -> Result<String> {
        let text = self.mask(&value.to_string());
        let refuse = |reason: String| StoreError::Refused {
            what: what.to_string(),
            reason,
        };
        if text.len() > MAX_JSON_BYTES {
            return Err(refuse(format!(
                "it is {} bytes of JSON, more than {MAX_JSON_BYTES}",
                text.len()
            )));
        }
        serde_json::from_str::<Value>(&text).map_err(|e| refuse(format!("it would not read back: {e}")))?;
        Ok(text)
    }

    /// Offers a unit to the workers. Idempotent per (mission, unit, attempt): offering it again
    /// (a commander that resumed) changes nothing and returns false; the first payload stays.
    pub fn offer_unit(&self, offer: &UnitOffer) -> Result<bool> {
        check_key(&offer.key)?;
        let payload = self.stored_json("a unit's payload", &offer.payload)?;
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.offer_unit(offer.key.clone(), payload),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        ensure_mission(&tx, &offer.key.mission)?;
        let added = tx.execute(
            "INSERT INTO work_units (mission, unit, attempt, payload) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (mission, unit, attempt) DO NOTHING",
            params![offer.key.mission, offer.key.unit, offer.key.attempt, payload],
        )?;
        tx.commit()?;
        Ok(added > 0)
    }

    /// How many of the mission's units may be leased at once, across all workers.
    pub fn set_max_parallel(&self, mission: &str, max_parallel: u32) -> Result<()> {
        check_id("a mission id", mission)?;
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.set_max_parallel(mission, max_parallel),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        ensure_mission(&tx, mission)?;
        tx.execute(
            "UPDATE work_missions SET max_parallel = ?2 WHERE mission = ?1",
            params![mission, max_parallel],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Removes what `mission`'s units left in the queue once it is over (`orchestrator clean`): its
    /// rows, its cap and leader lease, the transcripts its holders relayed their events through
    /// (`relay:…`, in the mission's log by now) and its spend. Refused while a unit is leased live:
    /// a worker still builds it. Returns how many rows of the queue went.
    pub fn forget_work(&self, mission: &str) -> Result<usize> {
        check_id("a mission id", mission)?;
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.forget_work(mission),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        let live: i64 = tx.query_row(
            "SELECT COUNT(*) FROM work_units WHERE mission = ?1 AND state = 'leased' AND expires > ?2",
            params![mission, clock_ms()],
            |r| r.get(0),
        )?;
        if live > 0 {
            return Err(StoreError::Refused {
                what: format!("forgetting the work queue of mission {mission}"),
                reason: format!("{live} of its units are still held by a worker"),
            });
        }
        let rows = tx.execute("DELETE FROM work_units WHERE mission = ?1", params![mission])?;
        tx.execute("DELETE FROM work_missions WHERE mission = ?1", params![mission])?;
        tx.execute("DELETE FROM mission_spend WHERE mission = ?1", params![mission])?;
        tx.execute(
            "DELETE FROM messages WHERE mission = ?1 AND substr(session, 1, 6) = 'relay:'",
            params![mission],
        )?;
        tx.commit()?;
        Ok(rows)
    }

    /// The mission's cap on units leased at once; `None` when nothing of it was ever offered. 0 means
    /// its commander stopped: workers give its units back (see `worker_process/unit.rs`).
    pub fn max_parallel(&self, mission: &str) -> Result<Option<u32>> {
        check_id("a mission id", mission)?;
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.max_parallel(mission),
            Either::Sqlite(conn) => conn,
        };
        let cap: Option<i64> = conn
            .query_row(
                "SELECT max_parallel FROM work_missions WHERE mission = ?1",
                params![mission],
                |r| r.get(0),
            )
            .optional()?;
        Ok(cap.map(|c| u32::try_from(c).unwrap_or(0)))
    }

    /// Claims for `worker` up to `slots` units, minus those it holds live already, from any
    /// mission, oldest offer first, each mission's cap respected; all in one transaction. A unit
    /// whose lease expired is claimable again, with a higher token.
    pub fn claim_units(&self, worker: &Holder, slots: usize, ttl: Duration) -> Result<Vec<ClaimedUnit>> {
        check_holder(worker)?;
        let slots = i64::try_from(slots).unwrap_or(i64::MAX);
        let ttl = ttl_ms(ttl);
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.claim_units(worker.clone(), slots, ttl),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        let now = clock_ms();
        let held: i64 = tx.query_row(
            "SELECT COUNT(*) FROM work_units WHERE state = 'leased' AND expires > ?1 AND worker = ?2",
            params![now, worker.id],
            |r| r.get(0),
        )?;
        let mut wanted = slots - held;
        let mut claimed = Vec::new();
        if wanted <= 0 {
            return Ok(claimed);
        }
        for load in sqlite_loads(&tx, now)? {
            if wanted <= 0 {
                break;
            }
            let units = sqlite_claim_from(
                &tx,
                &load,
                load.take(wanted),
                worker,
                (now, now.saturating_add(ttl)),
            )?;
            wanted -= units.len() as i64;
            claimed.extend(units);
        }
        tx.commit()?;
        Ok(claimed)
    }

    /// Pushes the lease's expiry to `ttl` from now; refused with [`StoreError::LeaseLost`] once
    /// another claim has taken the unit (or it was released or finished). Returns the new expiry and
    /// the mission's cap as it is now, read with it: a holder learns that its commander stopped
    /// (cap 0) without another round trip.
    pub fn heartbeat(&self, fence: &Fence, ttl: Duration) -> Result<Beat> {
        check_key(&fence.key)?;
        let ttl = ttl_ms(ttl);
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.heartbeat(fence.clone(), ttl),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        check_fence(fence, sqlite_fence_row(&tx, &fence.key)?)?;
        let expires = clock_ms().saturating_add(ttl);
        tx.execute(
            "UPDATE work_units SET expires = ?4 WHERE mission = ?1 AND unit = ?2 AND attempt = ?3",
            params![fence.key.mission, fence.key.unit, fence.key.attempt, expires],
        )?;
        let cap: Option<i64> = tx
            .query_row(
                "SELECT max_parallel FROM work_missions WHERE mission = ?1",
                params![fence.key.mission],
                |r| r.get(0),
            )
            .optional()?;
        tx.commit()?;
        Ok(Beat {
            expires_at_ms: expires,
            max_parallel: cap.map(|c| u32::try_from(c).unwrap_or(0)),
        })
    }

    /// Reports a unit's end with its result, if `fence` still holds it; a stale fence changes
    /// nothing. The same report again (its answer lost) succeeds without writing twice.
    pub fn finish_unit(&self, fence: &Fence, outcome: Outcome, result: &Value) -> Result<()> {
        check_key(&fence.key)?;
        let result = self.stored_json("a unit's result", result)?;
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.finish_unit(fence.clone(), outcome, result),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        let row = sqlite_fence_row(&tx, &fence.key)?;
        if finished_by(fence, &row, outcome) {
            return Ok(());
        }
        check_fence(fence, row)?;
        tx.execute(
            "UPDATE work_units SET state = ?4, result = ?5, expires = NULL
             WHERE mission = ?1 AND unit = ?2 AND attempt = ?3",
            params![
                fence.key.mission,
                fence.key.unit,
                fence.key.attempt,
                outcome.state().as_str(),
                result
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Gives the unit back without a result: it is ready for the next claim (with a new token).
    pub fn release_unit(&self, fence: &Fence) -> Result<()> {
        check_key(&fence.key)?;
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.release_unit(fence.clone()),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        check_fence(fence, sqlite_fence_row(&tx, &fence.key)?)?;
        tx.execute(
            "UPDATE work_units SET state = 'ready', worker = NULL, host = NULL, expires = NULL
             WHERE mission = ?1 AND unit = ?2 AND attempt = ?3",
            params![fence.key.mission, fence.key.unit, fence.key.attempt],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Gives a unit back for trouble on the holder's host, if `fence` still holds it: ready again
    /// for another claim, counted; the give-back past [`MAX_GIVE_BACKS`] ends it instead, failed,
    /// with `result` (which says why), as [`Store::finish_unit`] would. A stop of the worker or a
    /// recall by the commander is [`Store::release_unit`], which does not count.
    pub fn give_back(&self, fence: &Fence, result: &Value) -> Result<GiveBack> {
        check_key(&fence.key)?;
        let result = self.stored_json("a unit's result", result)?;
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.give_back(fence.clone(), result),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        check_fence(fence, sqlite_fence_row(&tx, &fence.key)?)?;
        let key = &fence.key;
        let given: i64 = tx.query_row(
            "UPDATE work_units SET give_backs = give_backs + 1
             WHERE mission = ?1 AND unit = ?2 AND attempt = ?3 RETURNING give_backs",
            params![key.mission, key.unit, key.attempt],
            |r| r.get(0),
        )?;
        let ended = given > i64::from(MAX_GIVE_BACKS);
        let (state, result) = match ended {
            true => ("failed", Some(result)),
            false => ("ready", None),
        };
        tx.execute(
            "UPDATE work_units SET state = ?4, result = ?5, expires = NULL,
                 worker = CASE WHEN ?4 = 'ready' THEN NULL ELSE worker END,
                 host = CASE WHEN ?4 = 'ready' THEN NULL ELSE host END
             WHERE mission = ?1 AND unit = ?2 AND attempt = ?3",
            params![key.mission, key.unit, key.attempt, state, result],
        )?;
        tx.commit()?;
        Ok(if ended {
            GiveBack::Ended
        } else {
            GiveBack::Released
        })
    }

    /// [`Store::append_message`] by the holder of a unit's lease: written only if `fence` still
    /// holds it, checked in the same transaction.
    pub fn append_message_fenced(
        &self,
        fence: &Fence,
        session: &str,
        idx: usize,
        body: &Value,
    ) -> Result<()> {
        check_key(&fence.key)?;
        let body = self.mask(&body.to_string());
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.append_message_fenced(fence.clone(), session, idx, body),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        check_fence(fence, sqlite_fence_row(&tx, &fence.key)?)?;
        tx.execute(
            "INSERT OR REPLACE INTO messages (mission, session, idx, body) VALUES (?1, ?2, ?3, ?4)",
            params![fence.key.mission, session, idx as i64, body],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// [`Store::replace_messages`] by the holder of a unit's lease (a worker's compacted
    /// conversation): the whole transcript replaced only if `fence` still holds the unit.
    pub fn replace_messages_fenced(&self, fence: &Fence, session: &str, messages: &[Value]) -> Result<()> {
        check_key(&fence.key)?;
        let bodies: Vec<String> = messages.iter().map(|m| self.mask(&m.to_string())).collect();
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.replace_messages_fenced(fence.clone(), session, bodies),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        check_fence(fence, sqlite_fence_row(&tx, &fence.key)?)?;
        tx.execute(
            "DELETE FROM messages WHERE mission = ?1 AND session = ?2",
            params![fence.key.mission, session],
        )?;
        for (idx, body) in bodies.iter().enumerate() {
            tx.execute(
                "INSERT INTO messages (mission, session, idx, body) VALUES (?1, ?2, ?3, ?4)",
                params![fence.key.mission, session, idx as i64, body],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The repositories (store scopes) with units ready or leased: what `orchestrator worker`,
    /// which serves every repository of a PostgreSQL store, opens a handle for. SQLite holds one
    /// repository: its own scope if it has open units.
    pub fn repos_with_work(&self) -> Result<Vec<String>> {
        match self.conn() {
            Either::Pg(pg) => pg.repos_with_work(),
            Either::Sqlite(conn) => {
                let open: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM work_units WHERE state IN ('ready', 'leased')",
                    [],
                    |r| r.get(0),
                )?;
                drop(conn);
                Ok(if open > 0 {
                    vec![self.path().to_string()]
                } else {
                    Vec::new()
                })
            }
        }
    }

    /// The mission's units in the queue, in the order they were offered: who holds what, until when.
    pub fn work_units(&self, mission: &str) -> Result<Vec<WorkUnit>> {
        check_id("a mission id", mission)?;
        let rows = match self.conn() {
            Either::Pg(pg) => pg.work_units(mission)?,
            Either::Sqlite(conn) => sqlite_work_units(&conn, mission, clock_ms())?,
        };
        rows.into_iter().map(RawWorkUnit::decode).collect()
    }

    /// Makes `holder` the mission's leader for `ttl`, with a new token; refused with
    /// [`StoreError::LeaderHeld`] while another leader's lease is live. An expired one is taken over.
    pub fn acquire_leader(&self, mission: &str, holder: &Holder, ttl: Duration) -> Result<LeaderLease> {
        self.lead(mission, holder, ttl, None)
    }

    /// [`Store::acquire_leader`] that also takes a live lease, if it is still the one with token
    /// `from`: for a commander that knows that lease's holder is dead (on its own machine, where it
    /// holds the repository's lock the holder would hold), so it need not wait for the expiry. Any
    /// other live leader refuses it with [`StoreError::LeaderHeld`], as acquiring does.
    pub fn take_over_leader(
        &self,
        mission: &str,
        holder: &Holder,
        ttl: Duration,
        from: i64,
    ) -> Result<LeaderLease> {
        self.lead(mission, holder, ttl, Some(from))
    }

    fn lead(&self, mission: &str, holder: &Holder, ttl: Duration, from: Option<i64>) -> Result<LeaderLease> {
        check_id("a mission id", mission)?;
        check_holder(holder)?;
        let ttl = ttl_ms(ttl);
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.acquire_leader(mission, holder.clone(), ttl, from),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        ensure_mission(&tx, mission)?;
        let now = clock_ms();
        let current = sqlite_leader(&tx, mission, now)?;
        if let Some(live) = current.filter(|l| !l.expired && Some(l.token) != from) {
            return Err(leader_held(live));
        }
        tx.execute(
            "UPDATE work_missions SET leader = ?2, leader_host = ?3, leader_token = leader_token + 1,
             leader_expires = ?4 WHERE mission = ?1",
            params![mission, holder.id, holder.host, now.saturating_add(ttl)],
        )?;
        let lease = sqlite_leader(&tx, mission, now)?.ok_or_else(|| leader_lost(mission, 0))?;
        tx.commit()?;
        Ok(lease)
    }

    /// Pushes the leader lease's expiry to `ttl` from now, if `token` still leads the mission.
    pub fn renew_leader(&self, mission: &str, token: i64, ttl: Duration) -> Result<LeaderLease> {
        check_id("a mission id", mission)?;
        let ttl = ttl_ms(ttl);
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.renew_leader(mission, token, ttl),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        let now = clock_ms();
        ensure_leads(sqlite_leader(&tx, mission, now)?.as_ref(), mission, token)?;
        tx.execute(
            "UPDATE work_missions SET leader_expires = ?2 WHERE mission = ?1",
            params![mission, now.saturating_add(ttl)],
        )?;
        let lease = sqlite_leader(&tx, mission, now)?.ok_or_else(|| leader_lost(mission, token))?;
        tx.commit()?;
        Ok(lease)
    }

    /// Ends the leader lease held with `token` (a commander that stops cleanly), so the next one
    /// need not wait for it to expire.
    pub fn release_leader(&self, mission: &str, token: i64) -> Result<()> {
        check_id("a mission id", mission)?;
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.release_leader(mission, token),
            Either::Sqlite(conn) => conn,
        };
        let tx = immediate(&mut conn)?;
        ensure_leads(sqlite_leader(&tx, mission, clock_ms())?.as_ref(), mission, token)?;
        tx.execute(
            "UPDATE work_missions SET leader = NULL, leader_host = NULL, leader_expires = NULL
             WHERE mission = ?1",
            params![mission],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The mission's leader, live or expired, if one holds or held it and did not release it.
    pub fn leader(&self, mission: &str) -> Result<Option<LeaderLease>> {
        check_id("a mission id", mission)?;
        match self.conn() {
            Either::Pg(pg) => pg.leader(mission),
            Either::Sqlite(conn) => Ok(sqlite_leader(&conn, mission, clock_ms())?),
        }
    }
}

pub(crate) fn leader_held(live: LeaderLease) -> StoreError {
    StoreError::LeaderHeld {
        mission: live.mission,
        holder: live.holder.id,
        host: live.holder.host,
        token: live.token,
        expires_at_ms: live.expires_at_ms,
    }
}

/// A queue row as read, before its result is decoded.
pub(crate) struct RawWorkUnit {
    pub key: UnitKey,
    pub state: String,
    pub token: i64,
    pub worker: Option<String>,
    pub host: Option<String>,
    pub expires_at_ms: Option<i64>,
    pub expired: bool,
    pub result: Option<String>,
    pub takeovers: i64,
    pub give_backs: i64,
}

impl RawWorkUnit {
    fn decode(self) -> Result<WorkUnit> {
        let result = self.result.as_deref().map(serde_json::from_str).transpose()?;
        let holder = match (self.worker, self.host) {
            (Some(id), Some(host)) => Some(Holder { id, host }),
            _ => None,
        };
        Ok(WorkUnit {
            key: self.key,
            state: UnitState::parse(&self.state),
            token: self.token,
            holder,
            expires_at_ms: self.expires_at_ms,
            expired: self.expired,
            result,
            takeovers: u32::try_from(self.takeovers).unwrap_or(u32::MAX),
            give_backs: u32::try_from(self.give_backs).unwrap_or(u32::MAX),
        })
    }
}

/// The process's clock, which SQLite (one machine) goes by.
pub(crate) fn clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `Ok` if `token` is `mission`'s leader token, read in the caller's (immediate) transaction: a
/// fenced write (an event, a transcript, the status) goes through only for the commander that leads.
pub(crate) fn check_leads(tx: &Transaction<'_>, mission: &str, token: i64) -> Result<()> {
    let current: Option<i64> = tx
        .query_row(
            "SELECT leader_token FROM work_missions WHERE mission = ?1",
            params![mission],
            |r| r.get(0),
        )
        .optional()?;
    match current {
        Some(current) if current == token => Ok(()),
        _ => Err(leader_lost(mission, token)),
    }
}

/// A transaction for a write of `mission`'s records. Fenced by a leader `token`, it takes the write
/// lock first (IMMEDIATE), so the token it checks is the one in force when the write lands, and is
/// refused with [`StoreError::LeaseLost`] unless that token leads. Unfenced, it is an ordinary one.
pub(crate) fn leader_tx<'c>(
    conn: &'c mut Connection,
    mission: &str,
    token: Option<i64>,
) -> Result<Transaction<'c>> {
    let Some(token) = token else {
        return Ok(conn.transaction()?);
    };
    let tx = immediate(conn)?;
    check_leads(&tx, mission, token)?;
    Ok(tx)
}

/// IMMEDIATE: the transaction takes the write lock at once, so what it reads (counts, tokens) is
/// what it writes over, also with other processes claiming at the same time.
fn immediate(conn: &mut Connection) -> Result<Transaction<'_>> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

fn ensure_mission(tx: &Transaction<'_>, mission: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO work_missions (mission, max_parallel) VALUES (?1, ?2) ON CONFLICT (mission) DO NOTHING",
        params![mission, DEFAULT_MAX_PARALLEL],
    )?;
    Ok(())
}

/// A unit is claimable when ready, or leased with its lease expired.
const CLAIMABLE: &str = "(u.state = 'ready' OR (u.state = 'leased' AND u.expires <= ?1))";

/// The missions with claimable units, the oldest offer first, with their caps and live leases.
fn sqlite_loads(tx: &Transaction<'_>, now: i64) -> Result<Vec<MissionLoad>> {
    let mut stmt = tx.prepare(&format!(
        "SELECT m.mission, m.max_parallel,
                (SELECT COUNT(*) FROM work_units l WHERE l.mission = m.mission AND l.state = 'leased' AND l.expires > ?1)
         FROM work_missions m
         WHERE EXISTS (SELECT 1 FROM work_units u WHERE u.mission = m.mission AND {CLAIMABLE})
         ORDER BY (SELECT MIN(u.id) FROM work_units u WHERE u.mission = m.mission AND {CLAIMABLE})"
    ))?;
    let rows = stmt.query_map(params![now], |r| {
        Ok(MissionLoad {
            mission: r.get(0)?,
            max_parallel: r.get(1)?,
            live: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Leases to `worker` up to `take` of the mission's claimable units, oldest offer first.
fn sqlite_claim_from(
    tx: &Transaction<'_>,
    load: &MissionLoad,
    take: i64,
    worker: &Holder,
    (now, expires): (i64, i64),
) -> Result<Vec<ClaimedUnit>> {
    if take <= 0 {
        return Ok(Vec::new());
    }
    tx.execute(
        "UPDATE work_units SET state = 'failed', expires = NULL
         WHERE mission = ?1 AND state = 'leased' AND expires <= ?2 AND takeovers >= ?3",
        params![load.mission, now, MAX_TAKEOVERS],
    )?;
    // An expired lease's unit is taken over: counted (the SET reads the row as it was).
    let mut stmt = tx.prepare(&format!(
        "UPDATE work_units SET state = 'leased', token = token + 1, worker = ?3, host = ?4, expires = ?5,
             takeovers = takeovers + (state = 'leased')
         WHERE id IN (SELECT u.id FROM work_units u WHERE u.mission = ?2 AND {CLAIMABLE} ORDER BY u.id LIMIT ?6)
         RETURNING id, mission, unit, attempt, token, payload"
    ))?;
    let rows = stmt.query_map(
        params![now, load.mission, worker.id, worker.host, expires, take],
        |r| {
            let key = UnitKey {
                mission: r.get(1)?,
                unit: r.get(2)?,
                attempt: r.get(3)?,
            };
            Ok((
                r.get::<_, i64>(0)?,
                key,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
            ))
        },
    )?;
    let mut rows = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    // RETURNING comes in no promised order; the worker gets the oldest offers first.
    rows.sort_by_key(|row| row.0);
    rows.into_iter()
        .map(|(_, key, token, payload)| claimed(key, token, &payload, expires))
        .collect()
}

pub(crate) fn claimed(key: UnitKey, token: i64, payload: &str, expires_at_ms: i64) -> Result<ClaimedUnit> {
    Ok(ClaimedUnit {
        fence: Fence { key, token },
        payload: serde_json::from_str(payload)?,
        expires_at_ms,
    })
}

fn sqlite_fence_row(tx: &Transaction<'_>, key: &UnitKey) -> Result<Option<FenceRow>> {
    let row = tx
        .query_row(
            "SELECT state, token FROM work_units WHERE mission = ?1 AND unit = ?2 AND attempt = ?3",
            params![key.mission, key.unit, key.attempt],
            |r| {
                Ok(FenceRow {
                    state: UnitState::parse(&r.get::<_, String>(0)?),
                    token: r.get(1)?,
                })
            },
        )
        .optional()?;
    Ok(row)
}

fn sqlite_work_units(conn: &Connection, mission: &str, now: i64) -> Result<Vec<RawWorkUnit>> {
    let mut stmt = conn.prepare(
        "SELECT mission, unit, attempt, state, token, worker, host, expires, result, takeovers, give_backs
         FROM work_units WHERE mission = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![mission], |r| {
        let expires: Option<i64> = r.get(7)?;
        Ok(RawWorkUnit {
            key: UnitKey {
                mission: r.get(0)?,
                unit: r.get(1)?,
                attempt: r.get(2)?,
            },
            state: r.get(3)?,
            token: r.get(4)?,
            worker: r.get(5)?,
            host: r.get(6)?,
            expires_at_ms: expires,
            expired: expires.is_some_and(|e| e <= now),
            result: r.get(8)?,
            takeovers: r.get(9)?,
            give_backs: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn sqlite_leader(conn: &Connection, mission: &str, now: i64) -> Result<Option<LeaderLease>> {
    let row = conn
        .query_row(
            "SELECT leader, leader_host, leader_token, leader_expires FROM work_missions
             WHERE mission = ?1 AND leader IS NOT NULL",
            params![mission],
            |r| {
                let expires: i64 = r.get(3)?;
                Ok(LeaderLease {
                    mission: mission.to_string(),
                    holder: Holder {
                        id: r.get(0)?,
                        host: r.get(1)?,
                    },
                    token: r.get(2)?,
                    expires_at_ms: expires,
                    expired: expires <= now,
                })
            },
        )
        .optional()?;
    Ok(row)
}
