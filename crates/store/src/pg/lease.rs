//! The work queue with leases on PostgreSQL (see `lease.rs` for what it promises). Time is the
//! server's `now()`, so workers on hosts whose clocks disagree see the same expiries.
//!
//! Every lease transaction commits with `synchronous_commit = on`, unlike the store's other writes:
//! a claim acknowledged and then lost to a crash of the server's machine would hand the unit out
//! again with the same token, and two workers would both pass the fence.

use postgres::{Client, Row, Transaction};

use super::notify::announce;
use super::Pg;
use crate::lease::{
    check_fence, claimed, ensure_leads, finished_by, leader_held, leader_lost, lease_lost, Beat, ClaimedUnit,
    Fence, FenceRow, GiveBack, Holder, LeaderLease, MissionLoad, Outcome, RawWorkUnit, UnitKey, UnitState,
    DEFAULT_MAX_PARALLEL, MAX_GIVE_BACKS, MAX_TAKEOVERS,
};
use crate::Result;

/// A unit is claimable when ready, or leased with its lease expired (`$2` is the server's now).
const CLAIMABLE: &str = "(u.state = 'ready' OR (u.state = 'leased' AND u.expires <= $2))";

impl Pg {
    pub(crate) fn offer_unit(&self, key: UnitKey, payload: String) -> Result<bool> {
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            ensure_mission(&mut tx, repo, &key.mission)?;
            let added = tx.execute(
                "INSERT INTO orchestrator_work_units (repo, mission, unit, attempt, payload) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (repo, mission, unit, attempt) DO NOTHING",
                &[&repo, &key.mission, &key.unit, &i64::from(key.attempt), &payload],
            )?;
            if added > 0 {
                announce(&mut tx, repo, &key.mission)?;
            }
            tx.commit()?;
            Ok(added > 0)
        })
    }

    pub(crate) fn set_max_parallel(&self, mission: &str, max_parallel: u32) -> Result<()> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            ensure_mission(&mut tx, repo, &mission)?;
            tx.execute(
                "UPDATE orchestrator_work_missions SET max_parallel = $3 WHERE repo = $1 AND mission = $2",
                &[&repo, &mission, &i64::from(max_parallel)],
            )?;
            announce(&mut tx, repo, &mission)?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(crate) fn forget_work(&self, mission: &str) -> Result<usize> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            let now = server_now(&mut tx)?;
            let live: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM orchestrator_work_units
                     WHERE repo = $1 AND mission = $2 AND state = 'leased' AND expires > $3",
                    &[&repo, &mission, &now],
                )?
                .try_get(0)?;
            if live > 0 {
                return Err(crate::StoreError::Refused {
                    what: format!("forgetting the work queue of mission {mission}"),
                    reason: format!("{live} of its units are still held by a worker"),
                });
            }
            let rows = tx.execute(
                "DELETE FROM orchestrator_work_units WHERE repo = $1 AND mission = $2",
                &[&repo, &mission],
            )?;
            for table in ["orchestrator_work_missions", "orchestrator_mission_spend"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE repo = $1 AND mission = $2"),
                    &[&repo, &mission],
                )?;
            }
            tx.execute(
                "DELETE FROM orchestrator_messages WHERE repo = $1 AND mission = $2 AND left(session, 6) = 'relay:'",
                &[&repo, &mission],
            )?;
            tx.commit()?;
            Ok(usize::try_from(rows).unwrap_or(usize::MAX))
        })
    }

    pub(crate) fn max_parallel(&self, mission: &str) -> Result<Option<u32>> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let row = c.query_opt(
                "SELECT max_parallel FROM orchestrator_work_missions WHERE repo = $1 AND mission = $2",
                &[&repo, &mission],
            )?;
            Ok(row
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()?
                .map(|c| u32::try_from(c).unwrap_or(0)))
        })
    }

    pub(crate) fn claim_units(&self, worker: Holder, slots: i64, ttl: i64) -> Result<Vec<ClaimedUnit>> {
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            // One claim of a worker at a time, so its count of held leases stays true.
            tx.execute(
                "SELECT pg_advisory_xact_lock(
                     hashtextextended(json_build_array('worker', $1::text, $2::text)::text, 0))",
                &[&repo, &worker.id],
            )?;
            let now = server_now(&mut tx)?;
            let held: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM orchestrator_work_units
                     WHERE repo = $1 AND state = 'leased' AND expires > $2 AND worker = $3",
                    &[&repo, &now, &worker.id],
                )?
                .try_get(0)?;
            let mut wanted = slots - held;
            let mut claimed = Vec::new();
            if wanted <= 0 {
                // Its slots are full: no mission is locked for nothing.
                return Ok(claimed);
            }
            for load in locked_loads(&mut tx, repo, now)? {
                if wanted <= 0 {
                    break;
                }
                let times = (now, now.saturating_add(ttl));
                let units = claim_from(&mut tx, repo, &load, load.take(wanted), &worker, times)?;
                wanted -= units.len() as i64;
                claimed.extend(units);
            }
            tx.commit()?;
            Ok(claimed)
        })
    }

    /// One statement, outside a transaction and without `synchronous_commit`: every held unit
    /// renews every few seconds, and a renewal lost to a crash of the server's machine only makes
    /// the lease shorter (a later claim takes a new token, which fences this holder out). Only a
    /// renewal that matched nothing looks at the row, to say why.
    pub(crate) fn heartbeat(&self, fence: Fence, ttl: i64) -> Result<Beat> {
        self.call(move |c, repo| {
            let key = &fence.key;
            let row = c.query_opt(
                "UPDATE orchestrator_work_units
                 SET expires = (extract(epoch FROM now()) * 1000)::bigint + $5
                 WHERE repo = $1 AND mission = $2 AND unit = $3 AND attempt = $4
                   AND state = 'leased' AND token = $6
                 RETURNING expires,
                   (SELECT max_parallel FROM orchestrator_work_missions m
                    WHERE m.repo = $1 AND m.mission = $2)",
                &[
                    &repo,
                    &key.mission,
                    &key.unit,
                    &i64::from(key.attempt),
                    &ttl,
                    &fence.token,
                ],
            )?;
            match row {
                Some(row) => Ok(Beat {
                    expires_at_ms: row.try_get(0)?,
                    max_parallel: row
                        .try_get::<_, Option<i64>>(1)?
                        .map(|c| u32::try_from(c).unwrap_or(0)),
                }),
                None => {
                    let mut tx = lease_tx(c)?;
                    check_fence(&fence, fence_row(&mut tx, repo, key)?)?;
                    // Matched now although it did not a moment ago: it cannot (a token only grows),
                    // but say so rather than claim a renewal that did not happen.
                    Err(lease_lost(&fence))
                }
            }
        })
    }

    pub(crate) fn finish_unit(&self, fence: Fence, outcome: Outcome, result: String) -> Result<()> {
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            let row = fence_row(&mut tx, repo, &fence.key)?;
            if finished_by(&fence, &row, outcome) {
                return Ok(());
            }
            check_fence(&fence, row)?;
            let key = &fence.key;
            let state = outcome.state().as_str();
            tx.execute(
                "UPDATE orchestrator_work_units SET state = $5, result = $6, expires = NULL
                 WHERE repo = $1 AND mission = $2 AND unit = $3 AND attempt = $4",
                &[
                    &repo,
                    &key.mission,
                    &key.unit,
                    &i64::from(key.attempt),
                    &state,
                    &result,
                ],
            )?;
            announce(&mut tx, repo, &key.mission)?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(crate) fn release_unit(&self, fence: Fence) -> Result<()> {
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            check_fence(&fence, fence_row(&mut tx, repo, &fence.key)?)?;
            let key = &fence.key;
            tx.execute(
                "UPDATE orchestrator_work_units SET state = 'ready', worker = NULL, host = NULL, expires = NULL
                 WHERE repo = $1 AND mission = $2 AND unit = $3 AND attempt = $4",
                &[&repo, &key.mission, &key.unit, &i64::from(key.attempt)],
            )?;
            announce(&mut tx, repo, &key.mission)?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(crate) fn give_back(&self, fence: Fence, result: String) -> Result<GiveBack> {
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            check_fence(&fence, fence_row(&mut tx, repo, &fence.key)?)?;
            let key = &fence.key;
            let max = i64::from(MAX_GIVE_BACKS);
            let row = tx.query_one(
                "UPDATE orchestrator_work_units SET give_backs = give_backs + 1, expires = NULL,
                     state = CASE WHEN give_backs + 1 > $5 THEN 'failed' ELSE 'ready' END,
                     result = CASE WHEN give_backs + 1 > $5 THEN $6 ELSE NULL END,
                     worker = CASE WHEN give_backs + 1 > $5 THEN worker ELSE NULL END,
                     host = CASE WHEN give_backs + 1 > $5 THEN host ELSE NULL END
                 WHERE repo = $1 AND mission = $2 AND unit = $3 AND attempt = $4
                 RETURNING state",
                &[
                    &repo,
                    &key.mission,
                    &key.unit,
                    &i64::from(key.attempt),
                    &max,
                    &result,
                ],
            )?;
            announce(&mut tx, repo, &key.mission)?;
            tx.commit()?;
            Ok(match row.try_get::<_, String>(0)?.as_str() {
                "failed" => GiveBack::Ended,
                _ => GiveBack::Released,
            })
        })
    }

    pub(crate) fn append_message_fenced(
        &self,
        fence: Fence,
        session: &str,
        idx: usize,
        body: String,
    ) -> Result<()> {
        let session = session.to_string();
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            check_fence(&fence, fence_row(&mut tx, repo, &fence.key)?)?;
            super::upsert_message(&mut tx, repo, &fence.key.mission, &session, idx, &body)?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(crate) fn replace_messages_fenced(
        &self,
        fence: Fence,
        session: &str,
        bodies: Vec<String>,
    ) -> Result<()> {
        let session = session.to_string();
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            check_fence(&fence, fence_row(&mut tx, repo, &fence.key)?)?;
            tx.execute(
                "DELETE FROM orchestrator_messages WHERE repo = $1 AND mission = $2 AND session = $3",
                &[&repo, &fence.key.mission, &session],
            )?;
            for (idx, body) in bodies.iter().enumerate() {
                super::upsert_message(&mut tx, repo, &fence.key.mission, &session, idx, body)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Every repository's open work, not only this handle's: a worker serves them all.
    pub(crate) fn repos_with_work(&self) -> Result<Vec<String>> {
        self.call(move |c, _repo| {
            let rows = c.query(
                "SELECT DISTINCT repo FROM orchestrator_work_units WHERE state IN ('ready', 'leased') ORDER BY repo",
                &[],
            )?;
            rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
        })
    }

    pub(crate) fn work_units(&self, mission: &str) -> Result<Vec<RawWorkUnit>> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let rows = c.query(
                "SELECT mission, unit, attempt, state, token, worker, host, expires, result,
                        expires <= (extract(epoch FROM now()) * 1000)::bigint, takeovers, give_backs
                 FROM orchestrator_work_units WHERE repo = $1 AND mission = $2 ORDER BY ord",
                &[&repo, &mission],
            )?;
            rows.iter().map(raw_work_unit).collect()
        })
    }

    /// Acquires the lead; `from`: also over the live lease with that token (a take-over).
    pub(crate) fn acquire_leader(
        &self,
        mission: &str,
        holder: Holder,
        ttl: i64,
        from: Option<i64>,
    ) -> Result<LeaderLease> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            ensure_mission(&mut tx, repo, &mission)?;
            let now = server_now(&mut tx)?;
            let current = locked_leader(&mut tx, repo, &mission, now)?;
            if let Some(live) = current.filter(|l| !l.expired && Some(l.token) != from) {
                return Err(leader_held(live));
            }
            tx.execute(
                "UPDATE orchestrator_work_missions SET leader = $3, leader_host = $4,
                 leader_token = leader_token + 1, leader_expires = $5 WHERE repo = $1 AND mission = $2",
                &[
                    &repo,
                    &mission,
                    &holder.id,
                    &holder.host,
                    &now.saturating_add(ttl),
                ],
            )?;
            let lease =
                locked_leader(&mut tx, repo, &mission, now)?.ok_or_else(|| leader_lost(&mission, 0))?;
            tx.commit()?;
            Ok(lease)
        })
    }

    pub(crate) fn renew_leader(&self, mission: &str, token: i64, ttl: i64) -> Result<LeaderLease> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            let now = server_now(&mut tx)?;
            ensure_leads(
                locked_leader(&mut tx, repo, &mission, now)?.as_ref(),
                &mission,
                token,
            )?;
            tx.execute(
                "UPDATE orchestrator_work_missions SET leader_expires = $3 WHERE repo = $1 AND mission = $2",
                &[&repo, &mission, &now.saturating_add(ttl)],
            )?;
            let lease =
                locked_leader(&mut tx, repo, &mission, now)?.ok_or_else(|| leader_lost(&mission, token))?;
            tx.commit()?;
            Ok(lease)
        })
    }

    pub(crate) fn release_leader(&self, mission: &str, token: i64) -> Result<()> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let mut tx = lease_tx(c)?;
            let now = server_now(&mut tx)?;
            ensure_leads(locked_leader(&mut tx, repo, &mission, now)?.as_ref(), &mission, token)?;
            tx.execute(
                "UPDATE orchestrator_work_missions SET leader = NULL, leader_host = NULL, leader_expires = NULL
                 WHERE repo = $1 AND mission = $2",
                &[&repo, &mission],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(crate) fn leader(&self, mission: &str) -> Result<Option<LeaderLease>> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let mut tx = c.transaction()?;
            let now = server_now(&mut tx)?;
            let row = tx.query_opt(
                "SELECT leader, leader_host, leader_token, leader_expires FROM orchestrator_work_missions
                 WHERE repo = $1 AND mission = $2 AND leader IS NOT NULL",
                &[&repo, &mission],
            )?;
            row.map(|r| leader_lease(&r, &mission, now)).transpose()
        })
    }
}

impl Pg {
    /// `synchronous_commit` as a lease transaction sees it (for tests).
    #[cfg(test)]
    pub(crate) fn lease_setting(&self) -> Result<String> {
        self.call(|c, _| {
            Ok(lease_tx(c)?
                .query_one("SELECT current_setting('synchronous_commit')", &[])?
                .get(0))
        })
    }
}

/// A transaction of the lease layer: committed synchronously, whatever the connection's default.
fn lease_tx(c: &mut Client) -> Result<Transaction<'_>> {
    let mut tx = c.transaction()?;
    tx.batch_execute("SET LOCAL synchronous_commit = on")?;
    Ok(tx)
}

/// The server's clock in milliseconds since the epoch (`now()`: the transaction's start).
fn server_now(tx: &mut Transaction<'_>) -> Result<i64> {
    Ok(tx
        .query_one("SELECT (extract(epoch FROM now()) * 1000)::bigint", &[])?
        .try_get(0)?)
}

fn ensure_mission(tx: &mut Transaction<'_>, repo: &str, mission: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO orchestrator_work_missions (repo, mission, max_parallel) VALUES ($1, $2, $3)
         ON CONFLICT (repo, mission) DO NOTHING",
        &[&repo, &mission, &i64::from(DEFAULT_MAX_PARALLEL)],
    )?;
    Ok(())
}

/// The missions with claimable units, the one with the oldest offer first, each locked for this
/// claim: the lock is what keeps two claims from both counting the same free places under a cap.
/// A claim waits for another's locks rather than skipping the mission (which would send a worker
/// away empty-handed while work waits); taking them in the order of the missions' ids, as every
/// claim does, two claims never deadlock.
fn locked_loads(tx: &mut Transaction<'_>, repo: &str, now: i64) -> Result<Vec<MissionLoad>> {
    let missions = tx.query(
        &format!(
            "SELECT m.mission, m.max_parallel,
                    (SELECT MIN(u.ord) FROM orchestrator_work_units u
                     WHERE u.repo = m.repo AND u.mission = m.mission AND {CLAIMABLE})
             FROM orchestrator_work_missions m
             WHERE m.repo = $1 AND EXISTS (
                 SELECT 1 FROM orchestrator_work_units u WHERE u.repo = m.repo AND u.mission = m.mission AND {CLAIMABLE})
             ORDER BY m.mission FOR UPDATE OF m"
        ),
        &[&repo, &now],
    )?;
    let mut loads = Vec::with_capacity(missions.len());
    for row in missions {
        let mission: String = row.try_get(0)?;
        // Counted after the lock: every claim that could add to it has committed.
        let live: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM orchestrator_work_units
                 WHERE repo = $1 AND mission = $2 AND state = 'leased' AND expires > $3",
                &[&repo, &mission, &now],
            )?
            .try_get(0)?;
        let oldest: Option<i64> = row.try_get(2)?;
        let load = MissionLoad {
            mission,
            max_parallel: row.try_get(1)?,
            live,
        };
        loads.push((oldest.unwrap_or(i64::MAX), load));
    }
    loads.sort_by_key(|(oldest, _)| *oldest);
    Ok(loads.into_iter().map(|(_, load)| load).collect())
}

/// Leases to `worker` up to `take` of the mission's claimable units, oldest offer first, skipping
/// any unit another transaction has locked (a heartbeat or report in flight).
fn claim_from(
    tx: &mut Transaction<'_>,
    repo: &str,
    load: &MissionLoad,
    take: i64,
    worker: &Holder,
    (now, expires): (i64, i64),
) -> Result<Vec<ClaimedUnit>> {
    if take <= 0 {
        return Ok(Vec::new());
    }
    // Under the mission's lock, as the claim below: the same order of locks for every claimer.
    let abandoned = tx.execute(
        "UPDATE orchestrator_work_units SET state = 'failed', expires = NULL
         WHERE repo = $1 AND mission = $2 AND state = 'leased' AND expires <= $3 AND takeovers >= $4",
        &[&repo, &load.mission, &now, &i64::from(MAX_TAKEOVERS)],
    )?;
    if abandoned > 0 {
        announce(tx, repo, &load.mission)?;
    }
    let rows = tx.query(
        &format!(
            // The pick is materialised once: a LIMIT inside `IN (…)` may be evaluated again for each
            // row updated and then hand out more than `take`.
            "WITH picked AS MATERIALIZED (
                 SELECT u.ord FROM orchestrator_work_units u WHERE u.repo = $1 AND u.mission = $3 AND {CLAIMABLE}
                 ORDER BY u.ord LIMIT $7 FOR UPDATE SKIP LOCKED)
             UPDATE orchestrator_work_units w SET state = 'leased', token = w.token + 1, worker = $4, host = $5,
                 expires = $6, takeovers = w.takeovers + CASE WHEN w.state = 'leased' THEN 1 ELSE 0 END
             FROM picked WHERE w.repo = $1 AND w.mission = $3 AND w.ord = picked.ord
             RETURNING w.ord, w.mission, w.unit, w.attempt, w.token, w.payload"
        ),
        &[&repo, &now, &load.mission, &worker.id, &worker.host, &expires, &take],
    )?;
    let mut rows: Vec<&Row> = rows.iter().collect();
    // RETURNING comes in no promised order; the worker gets the oldest offers first.
    rows.sort_by_key(|r| r.get::<_, i64>(0));
    rows.into_iter()
        .map(|r| {
            let key = UnitKey {
                mission: r.try_get(1)?,
                unit: r.try_get(2)?,
                attempt: attempt(r.try_get(3)?),
            };
            claimed(key, r.try_get(4)?, &r.try_get::<_, String>(5)?, expires)
        })
        .collect()
}

/// The unit's state and token, locked until the fenced write commits.
fn fence_row(tx: &mut Transaction<'_>, repo: &str, key: &UnitKey) -> Result<Option<FenceRow>> {
    let row = tx.query_opt(
        "SELECT state, token FROM orchestrator_work_units
         WHERE repo = $1 AND mission = $2 AND unit = $3 AND attempt = $4 FOR UPDATE",
        &[&repo, &key.mission, &key.unit, &i64::from(key.attempt)],
    )?;
    row.map(|r| {
        Ok(FenceRow {
            state: UnitState::parse(&r.try_get::<_, String>(0)?),
            token: r.try_get(1)?,
        })
    })
    .transpose()
}

/// The mission's leader lease, its row locked until the transaction ends.
fn locked_leader(
    tx: &mut Transaction<'_>,
    repo: &str,
    mission: &str,
    now: i64,
) -> Result<Option<LeaderLease>> {
    let row = tx.query_opt(
        "SELECT leader, leader_host, leader_token, leader_expires FROM orchestrator_work_missions
         WHERE repo = $1 AND mission = $2 FOR UPDATE",
        &[&repo, &mission],
    )?;
    match row {
        Some(r) if r.try_get::<_, Option<String>>(0)?.is_some() => Ok(Some(leader_lease(&r, mission, now)?)),
        _ => Ok(None),
    }
}

fn leader_lease(r: &Row, mission: &str, now: i64) -> Result<LeaderLease> {
    let expires: Option<i64> = r.try_get(3)?;
    let expires = expires.unwrap_or(now);
    Ok(LeaderLease {
        mission: mission.to_string(),
        holder: Holder {
            id: r.try_get(0)?,
            host: r.try_get(1)?,
        },
        token: r.try_get(2)?,
        expires_at_ms: expires,
        expired: expires <= now,
    })
}

fn raw_work_unit(r: &Row) -> Result<RawWorkUnit> {
    Ok(RawWorkUnit {
        key: UnitKey {
            mission: r.try_get(0)?,
            unit: r.try_get(1)?,
            attempt: attempt(r.try_get(2)?),
        },
        state: r.try_get(3)?,
        token: r.try_get(4)?,
        worker: r.try_get(5)?,
        host: r.try_get(6)?,
        expires_at_ms: r.try_get(7)?,
        expired: r.try_get::<_, Option<bool>>(9)?.unwrap_or(false),
        result: r.try_get(8)?,
        takeovers: r.try_get(10)?,
        give_backs: r.try_get(11)?,
    })
}

/// An attempt as stored (only ever written from a `u32`).
fn attempt(stored: i64) -> u32 {
    u32::try_from(stored).unwrap_or(u32::MAX)
}
