//! What every host of a mission shares besides the queue (issue #20): the tokens the mission has
//! spent, so a budget holds across hosts, and each model endpoint's throttle, so a 429 seen on one
//! host slows all of them.
//!
//! Both are counters that only grow (tokens, cuts) or a time that only moves later (a pause), so
//! hosts that write at once cannot undo each other's writes, and a reader that missed one update
//! still sees its effect in the next.
//!
//! This file holds the API and the SQLite side; `pg/shared.rs` the PostgreSQL side.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use crate::lease::{check_id, clock_ms, ttl_ms};
use crate::{Either, Result, Store};

/// An endpoint's throttle as every host sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Throttle {
    /// How many times any host cut its concurrency for this endpoint (a 429 or an overload).
    pub cuts: u64,
    /// What is left of a pause the endpoint asked for (`Retry-After`), by the store's clock.
    pub paused_for: Option<Duration>,
}

/// How a host's figure goes into a mission's spend: added to it (its own calls), or raising it to at
/// least that figure (a commander's count from its log). The total never wraps or goes down.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SpendUpdate {
    Add,
    Raise,
}

/// The longest pause recorded: a server asking for more is a bug or an attack, and every host would
/// stop for it.
pub const MAX_SHARED_PAUSE: Duration = Duration::from_secs(15 * 60);

impl Store {
    /// Adds `tokens` to what `mission` has spent on every host; the new total.
    pub fn add_spend(&self, mission: &str, tokens: u64) -> Result<u64> {
        self.record_spend(mission, tokens, SpendUpdate::Add)
    }

    /// Raises what `mission` has spent to at least `tokens` (what a commander counted before the
    /// store kept the total); the total.
    pub fn raise_spend(&self, mission: &str, tokens: u64) -> Result<u64> {
        self.record_spend(mission, tokens, SpendUpdate::Raise)
    }

    fn record_spend(&self, mission: &str, tokens: u64, update: SpendUpdate) -> Result<u64> {
        check_id("a mission id", mission)?;
        let tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.record_spend(mission, tokens, update).map(as_u64),
            Either::Sqlite(conn) => conn,
        };
        let set = match update {
            SpendUpdate::Add => "min(tokens + excluded.tokens, 9223372036854775807)",
            SpendUpdate::Raise => "max(tokens, excluded.tokens)",
        };
        let total: i64 = conn.query_row(
            &format!(
                "INSERT INTO mission_spend (mission, tokens) VALUES (?1, ?2)
                 ON CONFLICT (mission) DO UPDATE SET tokens = {set}
                 RETURNING tokens"
            ),
            params![mission, tokens],
            |r| r.get(0),
        )?;
        Ok(as_u64(total))
    }

    /// What `mission` has spent on every host (0 when nothing was recorded).
    pub fn spend(&self, mission: &str) -> Result<u64> {
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.spend(mission).map(as_u64),
            Either::Sqlite(conn) => conn,
        };
        let total: Option<i64> = conn
            .query_row(
                "SELECT tokens FROM mission_spend WHERE mission = ?1",
                params![mission],
                |r| r.get(0),
            )
            .optional()?;
        Ok(total.map(as_u64).unwrap_or(0))
    }

    /// Records a throttle seen on this host for `endpoint`: a cut of its concurrency, a pause the
    /// endpoint asked for (bounded by [`MAX_SHARED_PAUSE`]), or both. A pause never shortens one
    /// already running.
    pub fn note_throttle(&self, endpoint: &str, cut: bool, pause: Option<Duration>) -> Result<()> {
        check_id("an endpoint", endpoint)?;
        let cuts = i64::from(cut);
        let pause_ms = pause.map(|p| ttl_ms(p.min(MAX_SHARED_PAUSE)));
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.note_throttle(endpoint, cuts, pause_ms),
            Either::Sqlite(conn) => conn,
        };
        let until = pause_ms.map(|ms| clock_ms().saturating_add(ms));
        conn.execute(
            "INSERT INTO endpoint_throttles (endpoint, cuts, paused_until) VALUES (?1, ?2, ?3)
             ON CONFLICT (endpoint) DO UPDATE SET cuts = cuts + excluded.cuts,
                 paused_until = CASE WHEN excluded.paused_until IS NULL THEN paused_until
                                     ELSE max(coalesce(paused_until, 0), excluded.paused_until) END",
            params![endpoint, cuts, until],
        )?;
        Ok(())
    }

    /// Every endpoint's throttle, by endpoint.
    pub fn throttles(&self) -> Result<Vec<(String, Throttle)>> {
        let rows: Vec<(String, i64, Option<i64>)> = match self.conn() {
            Either::Pg(pg) => pg.throttles()?,
            Either::Sqlite(conn) => {
                let now = clock_ms();
                let mut statement =
                    conn.prepare("SELECT endpoint, cuts, paused_until FROM endpoint_throttles")?;
                let rows = statement.query_map([], |r| {
                    let until: Option<i64> = r.get(2)?;
                    Ok((r.get(0)?, r.get(1)?, until.map(|u| u.saturating_sub(now))))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            }
        };
        Ok(rows
            .into_iter()
            .map(|(endpoint, cuts, left_ms)| {
                let paused_for = left_ms
                    .filter(|ms| *ms > 0)
                    .map(|ms| Duration::from_millis(as_u64(ms)).min(MAX_SHARED_PAUSE));
                (
                    endpoint,
                    Throttle {
                        cuts: as_u64(cuts),
                        paused_for,
                    },
                )
            })
            .collect())
    }
}

fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
