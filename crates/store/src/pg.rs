//! The mission store on PostgreSQL (`--store postgres://…`): the same records as the SQLite store,
//! with every row scoped by the repository it belongs to, so several repositories share one database.
//!
//! The store's API is synchronous and is called from inside the engine's tokio runtime, where the
//! sync `postgres` client (which runs a runtime of its own) must not block. So one thread owns the
//! connection and runs each call sent to it; the caller waits for the answer, as it waits for SQLite.
//!
//! Each write is its own transaction (or one transaction where the SQLite store has one), committed
//! with `synchronous_commit = off` (unless the URL sets it): the counterpart of the SQLite store's
//! `synchronous=NORMAL`, see [`Pg::connect`]. The lease layer's transactions (`pg/lease.rs`) are
//! the exception: they commit synchronously.

use std::sync::mpsc;
use std::sync::Mutex;

use postgres::{Client, GenericClient, Row};

mod lease;
mod notify;
pub use notify::Listener;
mod shared;
mod tls;

use crate::{now, InboxMessage, MissionRecord, MissionStatus, Result, StoreError};

/// The schema this build writes in PostgreSQL; each entry of [`MIGRATIONS`] moves it up by one.
pub const PG_SCHEMA_VERSION: i64 = 4;

pub(crate) const MIGRATIONS: &[&str] = &[
    // 0 → 1: the SQLite store's tables with a `repo` column leading every key. `ord` orders missions
    // as SQLite's rowid does.
    "CREATE TABLE orchestrator_missions (
        repo TEXT NOT NULL,
        id TEXT NOT NULL,
        ord BIGSERIAL,
        objective TEXT NOT NULL,
        base_commit TEXT NOT NULL,
        user_branch TEXT,
        integration_branch TEXT NOT NULL,
        options TEXT NOT NULL,
        status TEXT NOT NULL,
        pid BIGINT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (repo, id)
    );
    CREATE TABLE orchestrator_events (
        repo TEXT NOT NULL,
        mission TEXT NOT NULL,
        seq BIGINT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (repo, mission, seq)
    );
    CREATE TABLE orchestrator_messages (
        repo TEXT NOT NULL,
        mission TEXT NOT NULL,
        session TEXT NOT NULL,
        idx BIGINT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (repo, mission, session, idx)
    );
    CREATE TABLE orchestrator_plan_answers (
        repo TEXT NOT NULL,
        mission TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (repo, mission)
    );
    CREATE TABLE orchestrator_inbox (
        id BIGSERIAL PRIMARY KEY,
        repo TEXT NOT NULL,
        mission TEXT NOT NULL,
        unit TEXT NOT NULL,
        message TEXT NOT NULL,
        created_at TEXT NOT NULL,
        delivered_seq BIGINT
    );
    CREATE INDEX orchestrator_inbox_waiting ON orchestrator_inbox (repo, mission, unit)
        WHERE delivered_seq IS NULL;",
    // 1 → 2: the work queue with leases (lease.rs) and each mission's cap and leader lease, as in
    // the SQLite store; times are milliseconds since the epoch by the server's clock. `ord` orders
    // offers.
    "CREATE TABLE orchestrator_work_missions (
        repo TEXT NOT NULL,
        mission TEXT NOT NULL,
        max_parallel BIGINT NOT NULL,
        leader TEXT,
        leader_host TEXT,
        leader_token BIGINT NOT NULL DEFAULT 0,
        leader_expires BIGINT,
        PRIMARY KEY (repo, mission)
    );
    CREATE TABLE orchestrator_work_units (
        repo TEXT NOT NULL,
        mission TEXT NOT NULL,
        unit TEXT NOT NULL,
        attempt BIGINT NOT NULL,
        ord BIGSERIAL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'ready',
        token BIGINT NOT NULL DEFAULT 0,
        worker TEXT,
        host TEXT,
        expires BIGINT,
        result TEXT,
        PRIMARY KEY (repo, mission, unit, attempt)
    );
    CREATE INDEX orchestrator_work_units_open ON orchestrator_work_units (repo, mission, ord)
        WHERE state IN ('ready', 'leased');",
    // 2 → 3: what every host shares (shared.rs): each mission's tokens spent; each endpoint's
    // throttle, for every repository alike (an endpoint is not a repository's); and how many times
    // a unit was taken over after its holder's lease expired (lease.rs: bounded).
    "ALTER TABLE orchestrator_work_units ADD COLUMN takeovers BIGINT NOT NULL DEFAULT 0;
    CREATE TABLE orchestrator_mission_spend (
        repo TEXT NOT NULL,
        mission TEXT NOT NULL,
        tokens BIGINT NOT NULL,
        PRIMARY KEY (repo, mission)
    );
    CREATE TABLE orchestrator_endpoint_throttles (
        endpoint TEXT PRIMARY KEY,
        cuts BIGINT NOT NULL,
        paused_until BIGINT
    );",
    // 3 → 4: how many times a unit's holders gave it back for trouble on their host (lease.rs).
    "ALTER TABLE orchestrator_work_units ADD COLUMN give_backs BIGINT NOT NULL DEFAULT 0;",
];

/// Serialises schema changes of processes starting at once (an arbitrary constant of ours).
const MIGRATION_LOCK: i64 = 0x6f72_6368_6573_7472;

type Job = Box<dyn FnOnce(&mut Client) + Send>;

/// A connection to PostgreSQL owned by a thread of its own, and the repository the rows belong to.
pub(crate) struct Pg {
    jobs: Mutex<mpsc::Sender<Job>>,
    repo: String,
    target: String,
    /// For a listener's connection of its own (`pg/notify.rs`); never shown.
    url: String,
}

/// `url` as it may be shown: the password masked.
pub fn masked_url(url: &str) -> String {
    match tls::without_tls_params(url).parse::<postgres::Config>() {
        Ok(config) => describe(&config),
        Err(_) => "postgres://(unparsable URL)".into(),
    }
}

fn describe(config: &postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let password = if config.get_password().is_some() {
        ":***"
    } else {
        ""
    };
    let host = host_name(config);
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    let at = if user.is_empty() { "" } else { "@" };
    format!("postgres://{user}{password}{at}{host}:{port}/{db}")
}

/// The shortest wait for a connection to be made: three times a short connect_timeout is still
/// enough for a TLS handshake and a login on a busy machine.
const ANSWER_WITHIN_MIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Why connecting failed: TLS's own words when TLS is what failed.
fn connect_failed(e: &postgres::Error, tls: &tls::TlsSettings, host: &str, target: String) -> StoreError {
    match tls::explain(e, tls, host) {
        Some(reason) => StoreError::Tls { target, reason },
        None => StoreError::Unreachable {
            target,
            reason: reason(e),
        },
    }
}

/// Waits for the connection's thread to connect, for `answer_within` at most.
fn wait_connected(
    connected: &mpsc::Receiver<Result<()>>,
    answer_within: std::time::Duration,
    target: &str,
) -> Result<()> {
    let unreachable = |reason: String| StoreError::Unreachable {
        target: target.to_string(),
        reason,
    };
    match connected.recv_timeout(answer_within) {
        Ok(connected) => connected,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(unreachable(format!(
            "no answer within {} s of connecting (the TLS handshake or the login stalled; connect_timeout in \
             the URL, in seconds, sets a third of this wait)",
            answer_within.as_secs()
        ))),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(unreachable("its connection thread ended".into())),
    }
}

/// The server's host as the URL names it (the name a certificate must be issued for).
fn host_name(config: &postgres::Config) -> String {
    match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    }
}

/// How to connect to the server a URL names.
pub(crate) struct Settings {
    pub(crate) config: postgres::Config,
    pub(crate) tls: tls::TlsSettings,
    pub(crate) connector: tokio_postgres_rustls::MakeRustlsConnect,
    /// The server as it may be shown.
    pub(crate) target: String,
    pub(crate) host: String,
    /// How long connecting may take, the TLS handshake and the login included.
    pub(crate) answer_within: std::time::Duration,
}

impl Settings {
    pub(crate) fn of(url: &str) -> Result<Settings> {
        let bad_url = |reason: String| StoreError::BadUrl {
            url: masked_url(url),
            reason,
        };
        let (tls, rest) = tls::split_url(url).map_err(bad_url)?;
        let mut config: postgres::Config = rest
            .parse()
            .map_err(|e: postgres::Error| bad_url(e.to_string()))?;
        config.ssl_mode(tls.ssl_mode());
        let target = describe(&config);
        let connector = tls.connector().map_err(|reason| StoreError::Tls {
            target: target.clone(),
            reason,
        })?;
        let host = host_name(&config);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(10));
        }
        // The postgres crate bounds the TCP connect alone (per address): a server, or something in
        // its place, that takes the connection and then stays silent through the TLS handshake or
        // the login would hold the caller forever. Its thread is left to that server.
        let answer_within = config
            .get_connect_timeout()
            .map_or(ANSWER_WITHIN_MIN, |t| (*t * 3).max(ANSWER_WITHIN_MIN));
        if config.get_application_name().is_none() {
            config.application_name("orchestrator");
        }
        Ok(Settings {
            config,
            tls,
            connector,
            target,
            host,
            answer_within,
        })
    }
}

impl Pg {
    /// Connects, migrates the schema and starts the connection's thread.
    pub(crate) fn connect(url: &str, repo: &str) -> Result<Pg> {
        let Settings {
            config,
            tls,
            connector,
            target,
            host,
            answer_within,
        } = Settings::of(url)?;
        // As SQLite's synchronous=NORMAL: a commit is kept across a crash of this process at once,
        // and flushed to disk by the server within wal_writer_delay; only a crash of the server's
        // machine can drop the last fraction of a second, which resume treats as a kill a moment
        // earlier. One fsync per event would cap the log at ~600 events/s (docs/benchmarks.md).
        // A URL that sets synchronous_commit itself (options=-csynchronous_commit%3Don) keeps it.
        let relaxed = !config
            .get_options()
            .is_some_and(|o| o.contains("synchronous_commit"));
        let (connected_tx, connected_rx) = mpsc::channel::<Result<()>>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let thread_target = target.clone();
        std::thread::Builder::new()
            .name("orchestrator-pg".into())
            .spawn(move || {
                let mut client = match config.connect(connector) {
                    Ok(client) => {
                        let _ = connected_tx.send(Ok(()));
                        client
                    }
                    Err(e) => {
                        let _ = connected_tx.send(Err(connect_failed(&e, &tls, &host, thread_target)));
                        return;
                    }
                };
                let migrated = migrate(&mut client, &thread_target).and_then(|()| {
                    if relaxed {
                        client
                            .batch_execute("SET synchronous_commit = off")
                            .map_err(StoreError::from)?;
                    }
                    Ok(())
                });
                let ok = migrated.is_ok();
                let _ = ready_tx.send(migrated);
                if !ok {
                    return;
                }
                // Ends when the store (the sender) is dropped.
                for job in jobs_rx {
                    job(&mut client);
                }
            })
            .map_err(|e| StoreError::Unreachable {
                target: target.clone(),
                reason: format!("cannot start its thread: {e}"),
            })?;
        wait_connected(&connected_rx, answer_within, &target)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Pg {
                jobs: Mutex::new(jobs_tx),
                repo: repo.to_string(),
                target,
                url: url.to_string(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Unreachable {
                target,
                reason: "its connection thread ended".into(),
            }),
        }
    }

    /// A server setting as this connection sees it (for tests).
    #[cfg(test)]
    pub(crate) fn setting(&self, name: &str) -> Result<String> {
        let name = name.to_string();
        self.call(move |c, _| Ok(c.query_one("SELECT current_setting($1)", &[&name])?.get(0)))
    }

    /// Whether this connection is encrypted, as the server sees it (for tests).
    #[cfg(test)]
    pub(crate) fn uses_tls(&self) -> Result<bool> {
        self.call(|c, _| {
            Ok(
                c.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])?
                    .get(0),
            )
        })
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// Runs `f` on the connection's thread with the repository's scope and waits for its answer.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client, &str) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = mpsc::channel();
        let repo = self.repo.clone();
        let job: Job = Box::new(move |client| {
            let _ = tx.send(f(client, &repo));
        });
        let lost = || StoreError::Unreachable {
            target: self.target.clone(),
            reason: "its connection thread ended".into(),
        };
        crate::lock(&self.jobs).send(job).map_err(|_| lost())?;
        rx.recv().map_err(|_| lost())?
    }

    pub(crate) fn create_mission(&self, m: MissionRecord, objective: String, options: String) -> Result<()> {
        let objective = no_nul(objective);
        self.call(move |c, repo| {
            c.execute(
                "INSERT INTO orchestrator_missions (repo, id, objective, base_commit, user_branch, integration_branch, options, status, pid, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
                &[&repo, &m.id, &objective, &m.base_commit, &m.user_branch, &m.integration_branch,
                  &options, &m.status.as_str(), &m.pid.map(i64::from), &now()],
            )?;
            Ok(())
        })
    }

    pub(crate) fn set_status(
        &self,
        mission: &str,
        status: MissionStatus,
        pid: Option<u32>,
        fence: Option<i64>,
    ) -> Result<()> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let mut tx = leader_tx(c, repo, &mission, fence)?;
            tx.execute(
                "UPDATE orchestrator_missions SET status = $3, pid = $4, updated_at = $5 WHERE repo = $1 AND id = $2",
                &[&repo, &mission, &status.as_str(), &pid.map(i64::from), &now()],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Missions matching `filter` (a SQL condition on `$2`, or none), newest first.
    fn select_missions(&self, filter: &'static str, arg: String, limit: bool) -> Result<Vec<MissionRecord>> {
        self.call(move |c, repo| {
            let limit = if limit { " LIMIT 1" } else { "" };
            let sql = format!(
                "{SELECT_MISSION} WHERE repo = $1 AND {filter} ORDER BY created_at DESC, ord DESC{limit}"
            );
            let rows = if filter.contains("$2") {
                c.query(&sql, &[&repo, &arg])?
            } else {
                c.query(&sql, &[&repo])?
            };
            rows.iter().map(row_to_mission).collect()
        })
    }

    pub(crate) fn mission(&self, id: &str) -> Result<Option<MissionRecord>> {
        Ok(self
            .select_missions("id = $2", id.into(), true)?
            .into_iter()
            .next())
    }

    pub(crate) fn latest_mission(&self) -> Result<Option<MissionRecord>> {
        Ok(self
            .select_missions("TRUE", String::new(), true)?
            .into_iter()
            .next())
    }

    pub(crate) fn missions(&self) -> Result<Vec<MissionRecord>> {
        self.select_missions("TRUE", String::new(), false)
    }

    pub(crate) fn missions_with_prefix(&self, prefix: &str) -> Result<Vec<MissionRecord>> {
        // starts_with, not LIKE: `_` and `%` in what the user typed are characters, not wildcards.
        self.select_missions("starts_with(id, $2)", prefix.into(), false)
    }

    pub(crate) fn abandon(&self, mission: &str) -> Result<bool> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let changed = c.execute(
                "UPDATE orchestrator_missions SET status = 'abandoned', pid = NULL, updated_at = $3
                 WHERE repo = $1 AND id = $2 AND status IN ('running', 'interrupted')",
                &[&repo, &mission, &now()],
            )?;
            Ok(changed > 0)
        })
    }

    pub(crate) fn append_event(
        &self,
        mission: &str,
        seq: u64,
        body: String,
        fence: Option<i64>,
    ) -> Result<()> {
        let mission = mission.to_string();
        self.call(move |c, repo| insert_event(c, repo, &mission, seq as i64, &body, fence))
    }

    pub(crate) fn event_bodies_after(&self, mission: &str, after: Option<u64>) -> Result<Vec<String>> {
        let mission = mission.to_string();
        let after = after.map(|a| a as i64).unwrap_or(-1);
        self.call(move |c, repo| {
            let rows = c.query(
                "SELECT body FROM orchestrator_events WHERE repo = $1 AND mission = $2 AND seq > $3 ORDER BY seq",
                &[&repo, &mission, &after],
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    pub(crate) fn last_seq(&self, mission: &str) -> Result<Option<u64>> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let row = c.query_one(
                "SELECT MAX(seq) FROM orchestrator_events WHERE repo = $1 AND mission = $2",
                &[&repo, &mission],
            )?;
            Ok(row.get::<_, Option<i64>>(0).map(|s| s as u64))
        })
    }

    pub(crate) fn put_plan_answer(&self, mission: &str, attempt: u32, body: String) -> Result<()> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            c.execute(
                "INSERT INTO orchestrator_plan_answers (repo, mission, attempt, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (repo, mission) DO UPDATE SET attempt = EXCLUDED.attempt, body = EXCLUDED.body",
                &[&repo, &mission, &i64::from(attempt), &body],
            )?;
            Ok(())
        })
    }

    pub(crate) fn plan_answer(&self, mission: &str) -> Result<Option<(u32, String)>> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let row = c.query_opt(
                "SELECT attempt, body FROM orchestrator_plan_answers WHERE repo = $1 AND mission = $2",
                &[&repo, &mission],
            )?;
            Ok(row.map(|r| {
                let attempt: i64 = r.get(0);
                (u32::try_from(attempt).unwrap_or(0), r.get(1))
            }))
        })
    }

    pub(crate) fn clear_plan_answer(&self, mission: &str) -> Result<()> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            c.execute(
                "DELETE FROM orchestrator_plan_answers WHERE repo = $1 AND mission = $2",
                &[&repo, &mission],
            )?;
            Ok(())
        })
    }

    pub(crate) fn put_inbox(
        &self,
        mission: &str,
        unit: &str,
        message: String,
        limit: usize,
    ) -> Result<Option<i64>> {
        let (mission, unit) = (mission.to_string(), unit.to_string());
        let message = no_nul(message);
        self.call(move |c, repo| {
            let mut tx = c.transaction()?;
            // The count and the insert see the same inbox, also with two `tell`s at once.
            tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(json_build_array($1::text, $2::text, $3::text)::text, 0))",
                &[&repo, &mission, &unit],
            )?;
            let waiting: i64 = tx
                .query_one(
                    "SELECT COUNT(*) FROM orchestrator_inbox WHERE repo = $1 AND mission = $2 AND unit = $3 AND delivered_seq IS NULL",
                    &[&repo, &mission, &unit],
                )?
                .get(0);
            if waiting >= i64::try_from(limit).unwrap_or(i64::MAX) {
                return Ok(None);
            }
            let id: i64 = tx
                .query_one(
                    "INSERT INTO orchestrator_inbox (repo, mission, unit, message, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                    &[&repo, &mission, &unit, &message, &now()],
                )?
                .get(0);
            tx.commit()?;
            Ok(Some(id))
        })
    }

    pub(crate) fn waiting_inbox(&self, mission: &str) -> Result<Vec<InboxMessage>> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let rows = c.query(
                "SELECT id, unit, message FROM orchestrator_inbox WHERE repo = $1 AND mission = $2 AND delivered_seq IS NULL ORDER BY id",
                &[&repo, &mission],
            )?;
            Ok(rows
                .iter()
                .map(|r| InboxMessage {
                    id: r.get(0),
                    unit: r.get(1),
                    message: r.get(2),
                })
                .collect())
        })
    }

    pub(crate) fn append_delivery(
        &self,
        mission: &str,
        seq: u64,
        body: String,
        inbox: Vec<i64>,
        transcript: Option<(String, usize, String)>,
        fence: Option<i64>,
    ) -> Result<()> {
        let mission = mission.to_string();
        self.call(move |c, repo| {
            let mut tx = c.transaction()?;
            let seq = seq as i64;
            insert_event(&mut tx, repo, &mission, seq, &body, fence)?;
            for id in &inbox {
                tx.execute(
                    "UPDATE orchestrator_inbox SET delivered_seq = $4
                     WHERE id = $1 AND repo = $2 AND mission = $3 AND delivered_seq IS NULL",
                    &[id, &repo, &mission, &seq],
                )?;
            }
            if let Some((session, idx, body)) = &transcript {
                upsert_message(&mut tx, repo, &mission, session, *idx, body)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub(crate) fn append_message(
        &self,
        mission: &str,
        session: &str,
        idx: usize,
        body: String,
        fence: Option<i64>,
    ) -> Result<()> {
        let (mission, session) = (mission.to_string(), session.to_string());
        self.call(move |c, repo| {
            let mut tx = leader_tx(c, repo, &mission, fence)?;
            upsert_message(&mut tx, repo, &mission, &session, idx, &body)?;
            tx.commit()?;
            Ok(())
        })
    }

    pub(crate) fn messages(&self, mission: &str, session: &str) -> Result<Vec<String>> {
        let (mission, session) = (mission.to_string(), session.to_string());
        self.call(move |c, repo| {
            let rows = c.query(
                "SELECT body FROM orchestrator_messages WHERE repo = $1 AND mission = $2 AND session = $3 ORDER BY idx",
                &[&repo, &mission, &session],
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    pub(crate) fn messages_from(
        &self,
        mission: &str,
        session: &str,
        from: usize,
        limit: i64,
    ) -> Result<Vec<(i64, String)>> {
        let (mission, session) = (mission.to_string(), session.to_string());
        self.call(move |c, repo| {
            let rows = c.query(
                "SELECT idx, body FROM orchestrator_messages
                 WHERE repo = $1 AND mission = $2 AND session = $3 AND idx >= $4 ORDER BY idx LIMIT $5",
                &[&repo, &mission, &session, &(from as i64), &limit],
            )?;
            rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
        })
    }

    pub(crate) fn replace_messages(
        &self,
        mission: &str,
        session: &str,
        bodies: Vec<String>,
        fence: Option<i64>,
    ) -> Result<()> {
        let (mission, session) = (mission.to_string(), session.to_string());
        self.call(move |c, repo| {
            let mut tx = leader_tx(c, repo, &mission, fence)?;
            tx.execute(
                "DELETE FROM orchestrator_messages WHERE repo = $1 AND mission = $2 AND session = $3",
                &[&repo, &mission, &session],
            )?;
            for (idx, body) in bodies.iter().enumerate() {
                upsert_message(&mut tx, repo, &mission, &session, idx, body)?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub(crate) fn truncate_messages(
        &self,
        mission: &str,
        session: &str,
        from: usize,
        fence: Option<i64>,
    ) -> Result<()> {
        let (mission, session) = (mission.to_string(), session.to_string());
        self.call(move |c, repo| {
            let mut tx = leader_tx(c, repo, &mission, fence)?;
            tx.execute(
                "DELETE FROM orchestrator_messages WHERE repo = $1 AND mission = $2 AND session = $3 AND idx >= $4",
                &[&repo, &mission, &session, &(from as i64)],
            )?;
            tx.commit()?;
            Ok(())
        })
    }
}

/// PostgreSQL's text holds no NUL character, which SQLite's does: a person's text (an objective, a
/// message to a worker) keeps its place with U+FFFD instead of failing the write. Event and transcript
/// bodies are JSON, where a NUL is escaped.
fn no_nul(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// A transaction for a write of `mission`'s records. Fenced by a leader `token`, it first checks
/// that the token leads, locking the mission's lease row `FOR SHARE` until it commits: a take-over
/// (which updates that row) waits for the write, or, committed first, leaves no row for the check
/// (read committed sees the row's new token), and the write is refused with `LeaseLost`.
fn leader_tx<'c>(
    c: &'c mut Client,
    repo: &str,
    mission: &str,
    token: Option<i64>,
) -> Result<postgres::Transaction<'c>> {
    let mut tx = c.transaction()?;
    if let Some(token) = token {
        let leads = tx.query_opt(
            "SELECT 1 FROM orchestrator_work_missions
             WHERE repo = $1 AND mission = $2 AND leader_token = $3 FOR SHARE",
            &[&repo, &mission, &token],
        )?;
        if leads.is_none() {
            return Err(crate::lease::leader_lost(mission, token));
        }
    }
    Ok(tx)
}

fn upsert_message(
    tx: &mut postgres::Transaction<'_>,
    repo: &str,
    mission: &str,
    session: &str,
    idx: usize,
    body: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO orchestrator_messages (repo, mission, session, idx, body) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (repo, mission, session, idx) DO UPDATE SET body = EXCLUDED.body",
        &[&repo, &mission, &session, &(idx as i64), &body],
    )?;
    Ok(())
}

const SELECT_MISSION: &str = "SELECT id, objective, base_commit, user_branch, integration_branch, options, status, pid, created_at, updated_at FROM orchestrator_missions";

fn row_to_mission(r: &Row) -> Result<MissionRecord> {
    let options: String = r.try_get(5)?;
    let status: String = r.try_get(6)?;
    let pid: Option<i64> = r.try_get(7)?;
    Ok(MissionRecord {
        id: r.try_get(0)?,
        objective: r.try_get(1)?,
        base_commit: r.try_get(2)?,
        user_branch: r.try_get(3)?,
        integration_branch: r.try_get(4)?,
        options: serde_json::from_str(&options)?,
        status: MissionStatus::parse(&status),
        pid: pid.and_then(|p| u32::try_from(p).ok()),
        created_at: r.try_get(8)?,
        updated_at: r.try_get(9)?,
    })
}

fn migrate(client: &mut Client, target: &str) -> Result<()> {
    let fail = |e: postgres::Error| StoreError::Unreachable {
        target: target.to_string(),
        reason: reason(&e),
    };
    let mut tx = client.transaction().map_err(fail)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(fail)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS orchestrator_schema (version BIGINT NOT NULL)")
        .map_err(fail)?;
    let version: i64 = match tx
        .query_opt("SELECT version FROM orchestrator_schema", &[])
        .map_err(fail)?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO orchestrator_schema (version) VALUES (0)", &[])
                .map_err(fail)?;
            0
        }
    };
    if version > PG_SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: target.to_string(),
            found: version,
        });
    }
    for migration in MIGRATIONS.iter().skip(usize::try_from(version).unwrap_or(0)) {
        tx.batch_execute(migration).map_err(fail)?;
    }
    tx.execute(
        "UPDATE orchestrator_schema SET version = $1",
        &[&PG_SCHEMA_VERSION],
    )
    .map_err(fail)?;
    tx.commit().map_err(fail)
}

/// The server's own words when it gave some (a refused login, a missing database), else the client's.
pub(crate) fn reason(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text = format!("{text}: {s}");
                source = s.source();
            }
            text
        }
    }
}

/// Appends one event; with `fence`, only while that token leads the mission, in the same statement:
/// the mission's lease row is locked (`FOR SHARE`) and its token checked, so an event lands either
/// before a take-over commits or not at all (`LeaseLost`, nothing written).
fn insert_event(
    c: &mut impl GenericClient,
    repo: &str,
    mission: &str,
    seq: i64,
    body: &str,
    fence: Option<i64>,
) -> Result<()> {
    let Some(token) = fence else {
        c.execute(
            "INSERT INTO orchestrator_events (repo, mission, seq, body) VALUES ($1, $2, $3, $4)",
            &[&repo, &mission, &seq, &body],
        )?;
        return Ok(());
    };
    let written = c.execute(
        "INSERT INTO orchestrator_events (repo, mission, seq, body)
         SELECT $1, $2, $3, $4 FROM (
             SELECT 1 FROM orchestrator_work_missions
             WHERE repo = $1 AND mission = $2 AND leader_token = $5 FOR SHARE
         ) AS leads",
        &[&repo, &mission, &seq, &body, &token],
    )?;
    if written == 0 {
        return Err(crate::lease::leader_lost(mission, token));
    }
    Ok(())
}
