//! The mission store: one SQLite database under `.orchestrator/`, holding each mission's record, its
//! append-only event log (the write-ahead log the engine replays to resume) and every session's
//! transcript.
//!
//! SQLite because it is embedded, needs no server, survives `kill -9` at any instant (each write is a
//! transaction in WAL mode) and is readable by other processes (`status`, `logs`) while a mission runs.
//! Secrets handed to [`Store::set_secrets`] are masked in everything written.
//!
//! Or, with [`Store::open_postgres`], the same records on a PostgreSQL server shared by several
//! repositories (`pg.rs`): one API, two backends, the same tests.
//!
//! Both also hold a work queue of units with leases and fencing tokens, and a leader lease per mission
//! (`lease.rs`, docs/scale-out.md): what workers on many hosts will build on.
//!
//! The store is private to its user: the database and its `-wal` and `-shm` files are 0600, and the
//! folder that holds them is made 0700 by [`private_dir`]. Transcripts hold whatever the agents read
//! and wrote — source, command output, secrets the masking cannot know — and a repository's folder
//! is often readable by every user of the machine.

use std::fs::{OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use orchestrator_protocol::{EventEnvelope, PlanAnswer};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

mod lease;
mod pg;
mod shared;
pub use lease::{
    Beat, ClaimedUnit, Fence, GiveBack, Holder, LeaderLease, Outcome, UnitKey, UnitOffer, UnitState,
    WorkUnit, DEFAULT_MAX_PARALLEL, MAX_GIVE_BACKS, MAX_ID_BYTES, MAX_JSON_BYTES, MAX_TAKEOVERS,
};
pub use pg::{masked_url, Listener, PG_SCHEMA_VERSION};
use serde::{Deserialize, Serialize};
pub use shared::{Throttle, MAX_SHARED_PAUSE};

/// The schema this build writes. Each entry of [`MIGRATIONS`] moves the store up by one.
pub const SCHEMA_VERSION: i64 = 6;

const MIGRATIONS: &[&str] = &[
    // 0 → 1
    "CREATE TABLE missions (
        id TEXT PRIMARY KEY,
        objective TEXT NOT NULL,
        base_commit TEXT NOT NULL,
        user_branch TEXT,
        integration_branch TEXT NOT NULL,
        options TEXT NOT NULL,
        status TEXT NOT NULL,
        pid INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE events (
        mission TEXT NOT NULL,
        seq INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (mission, seq)
    );
    CREATE TABLE messages (
        mission TEXT NOT NULL,
        session TEXT NOT NULL,
        idx INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (mission, session, idx)
    );",
    // 1 → 2: a person's answer to a plan waiting for approval, given from another process (or while
    // no process runs the mission); the mission takes it, logs it and removes it.
    "CREATE TABLE plan_answers (
        mission TEXT PRIMARY KEY,
        attempt INTEGER NOT NULL,
        body TEXT NOT NULL
    );",
    // 2 → 3: messages a person sends a unit's worker (`orchestrator tell`), kept until the worker's
    // session takes them: `delivered_seq` is the event that logged the delivery, set in the same
    // transaction, so a message is delivered once across kills and resumes.
    "CREATE TABLE inbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mission TEXT NOT NULL,
        unit TEXT NOT NULL,
        message TEXT NOT NULL,
        created_at TEXT NOT NULL,
        delivered_seq INTEGER
    );
    CREATE INDEX inbox_waiting ON inbox (mission, unit) WHERE delivered_seq IS NULL;",
    // 3 → 4: the work queue with leases (lease.rs) and each mission's cap and leader lease. Times
    // are milliseconds since the epoch; a token only grows.
    "CREATE TABLE work_missions (
        mission TEXT PRIMARY KEY,
        max_parallel INTEGER NOT NULL,
        leader TEXT,
        leader_host TEXT,
        leader_token INTEGER NOT NULL DEFAULT 0,
        leader_expires INTEGER
    );
    CREATE TABLE work_units (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mission TEXT NOT NULL,
        unit TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'ready',
        token INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        host TEXT,
        expires INTEGER,
        result TEXT,
        UNIQUE (mission, unit, attempt)
    );
    CREATE INDEX work_units_open ON work_units (mission, id) WHERE state IN ('ready', 'leased');",
    // 4 → 5: what every host shares (shared.rs): each mission's tokens spent, each endpoint's
    // throttle (cuts seen, a pause until a time in milliseconds since the epoch); and how many
    // times a unit was taken over after its holder's lease expired (lease.rs: bounded).
    "ALTER TABLE work_units ADD COLUMN takeovers INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE mission_spend (
        mission TEXT PRIMARY KEY,
        tokens INTEGER NOT NULL
    );
    CREATE TABLE endpoint_throttles (
        endpoint TEXT PRIMARY KEY,
        cuts INTEGER NOT NULL,
        paused_until INTEGER
    );",
    // 5 → 6: how many times a unit's holders gave it back for trouble on their host (lease.rs:
    // bounded, so a unit no host can build ends instead of going round the workers for ever).
    "ALTER TABLE work_units ADD COLUMN give_backs INTEGER NOT NULL DEFAULT 0;",
];

/// A message to a unit's worker waiting in the inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxMessage {
    pub id: i64,
    pub unit: String,
    pub message: String,
}

/// What a delivery writes besides its event, in the same transaction: the inbox rows it delivers and
/// the session message that carries them into a transcript.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// Inbox rows (their ids) marked delivered; rows delivered before are left as they are.
    pub inbox: Vec<i64>,
    /// The transcript entry: session key, position, message.
    pub transcript: Option<(String, usize, serde_json::Value)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot make the mission store {path} private to you ({source}); check who owns it and its folder, \
         or run as that user"
    )]
    NotPrivate {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "the mission store {path} was written by a newer orchestrator (schema {found}, this build reads up to \
         {SCHEMA_VERSION}); upgrade orchestrator, or move .orchestrator/ aside to start afresh"
    )]
    TooNew { path: String, found: i64 },
    #[error(
        "the mission store {path} is damaged or not a mission store ({reason}); move it aside (the branches and \
         commits in git are untouched) and start a new mission"
    )]
    Corrupt { path: String, reason: String },
    #[error("no mission store at {0}: no mission has run in this repository")]
    Missing(String),
    #[error("mission store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the mission store URL {url} is not a PostgreSQL URL ({reason}); write it as postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE")]
    BadUrl { url: String, reason: String },
    #[error(
        "cannot reach the mission store at {target}: {reason}; check that PostgreSQL runs there and takes this \
         user, or pass another --store (ORCHESTRATOR_STORE_URL)"
    )]
    Unreachable { target: String, reason: String },
    #[error("cannot connect to the mission store at {target} over TLS: {reason}")]
    Tls { target: String, reason: String },
    #[error("mission store on PostgreSQL: {}", pg::reason(.0))]
    Postgres(#[from] postgres::Error),
    #[error("mission store: a stored record cannot be read: {0}")]
    Decode(#[from] serde_json::Error),
    #[error(
        "the lease on {what} with token {token} is no longer held: another took it after it expired, or it \
         was released or finished; stop working on it (nothing was written)"
    )]
    LeaseLost { what: String, token: i64 },
    #[error(
        "mission {mission} is led by {holder} on {host} (token {token}), whose lease is live; wait until it \
         ends or expires"
    )]
    LeaderHeld {
        mission: String,
        holder: String,
        host: String,
        token: i64,
        /// When the live lease expires unless renewed (milliseconds since the epoch, the store's clock).
        expires_at_ms: i64,
    },
    #[error("the mission store refused {what}: {reason}")]
    Refused { what: String, reason: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a mission stands, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissionStatus {
    Running,
    Interrupted,
    Sealed,
    Unsealed,
    /// Given up by the user (`task --abandon`): its worktrees and branches are gone, its record,
    /// events and transcripts stay. Never resumed.
    Abandoned,
}

/// Keys shorter than this are placeholders, not secrets: real API keys are far longer.
pub const MIN_SECRET_CHARS: usize = 12;

impl std::fmt::Display for MissionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl MissionStatus {
    /// The word the store, the API and people use for it.
    pub fn as_str(self) -> &'static str {
        match self {
            MissionStatus::Running => "running",
            MissionStatus::Interrupted => "interrupted",
            MissionStatus::Sealed => "sealed",
            MissionStatus::Unsealed => "unsealed",
            MissionStatus::Abandoned => "abandoned",
        }
    }

    fn parse(s: &str) -> MissionStatus {
        match s {
            "sealed" => MissionStatus::Sealed,
            "unsealed" => MissionStatus::Unsealed,
            "interrupted" => MissionStatus::Interrupted,
            "abandoned" => MissionStatus::Abandoned,
            _ => MissionStatus::Running,
        }
    }

    /// Whether `resume` can continue it.
    pub fn is_unfinished(self) -> bool {
        matches!(self, MissionStatus::Running | MissionStatus::Interrupted)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MissionRecord {
    pub id: String,
    pub objective: String,
    pub base_commit: String,
    pub user_branch: Option<String>,
    pub integration_branch: String,
    /// The flags the mission was started with, as JSON, so `resume` runs it the same way.
    pub options: serde_json::Value,
    pub status: MissionStatus,
    pub pid: Option<u32>,
    /// Seconds since the epoch, zero-padded (ignored by [`Store::create_mission`], which stamps it).
    pub created_at: String,
    /// When the record last changed (its status), in the same form; ignored on create.
    pub updated_at: String,
}

pub struct Store {
    backend: Backend,
    path: String,
    /// The repository's `.orchestrator/` folder (where its lock lives): the SQLite file's folder, or
    /// given with [`Store::with_state_dir`] for a PostgreSQL store.
    state_dir: Option<PathBuf>,
    secrets: Mutex<Vec<String>>,
    /// The mission whose events, transcripts and status this handle writes only while it leads
    /// it, and the lead's token ([`Store::fence_by_leader`]).
    leader_fence: Mutex<Option<(String, i64)>>,
}

impl Store {
    /// Opens the store, creating it and migrating it to the current schema.
    pub fn open(path: &Path) -> Result<Store> {
        // Should this fail (no such folder, say), SQLite's own open below says why in its words.
        let _ = create_private(path);
        let conn = Connection::open(path).map_err(|e| corrupt(path, e))?;
        Store::init(conn, path)
    }

    /// Opens an existing store, for commands that only read or continue a mission.
    pub fn open_existing(path: &Path) -> Result<Store> {
        if !path.is_file() {
            return Err(StoreError::Missing(path.display().to_string()));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| corrupt(path, e))?;
        Store::init(conn, path)
    }

    fn init(conn: Connection, path: &Path) -> Result<Store> {
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| corrupt(path, e))?;
        // WAL: readers (status, logs) never block the running mission; synchronous=NORMAL keeps every
        // committed write across a process crash (only a power loss can drop the last few).
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| corrupt(path, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| corrupt(path, e))?;
        migrate(&conn, path)?;
        // After the WAL pragma, so the -wal and -shm files exist; SQLite gives the ones it makes later
        // the database's own mode. Stores made before this version were 0644: tightened here.
        private_files(path).map_err(|e| unsafe_files(path, e))?;
        Ok(Store {
            backend: Backend::Sqlite(Mutex::new(conn)),
            path: path.display().to_string(),
            state_dir: path.parent().map(Path::to_path_buf),
            secrets: Mutex::new(Vec::new()),
            leader_fence: Mutex::new(None),
        })
    }

    /// Opens the store on the PostgreSQL server at `url`, creating or migrating its tables, with
    /// the missions of `repo` (the repository's identity) in view: several repositories share one
    /// database and each sees its own missions.
    pub fn open_postgres(url: &str, repo: &str) -> Result<Store> {
        let pg = pg::Pg::connect(url, repo)?;
        Ok(Store {
            path: pg.target().to_string(),
            backend: Backend::Pg(pg),
            state_dir: None,
            secrets: Mutex::new(Vec::new()),
            leader_fence: Mutex::new(None),
        })
    }

    /// The repository's local state folder (its lock, worktrees), for a store that is not in it.
    pub fn with_state_dir(mut self, dir: PathBuf) -> Store {
        self.state_dir = Some(dir);
        self
    }

    /// The repository's local state folder, when known: where the lock of a live mission is.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// Hears every change of the work queue that a worker or a commander waits for (a unit offered,
    /// given back or finished, a mission's cap set) as it commits, from any host:
    /// `on_notice(repo, mission)` runs on the listener's thread, until the [`Listener`] is dropped.
    /// `None` on SQLite, whose one machine has its polls.
    pub fn listen(&self, on_notice: impl Fn(&str, &str) + Send + 'static) -> Result<Option<Listener>> {
        match &self.backend {
            Backend::Pg(pg) => pg.listen(Box::new(on_notice)).map(Some),
            Backend::Sqlite(_) => Ok(None),
        }
    }

    /// Whether the store lives on a PostgreSQL server.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Pg(_))
    }

    /// The SQLite file, or the PostgreSQL server (its password masked).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Values (API keys) that must never be written; they are masked wherever they appear.
    pub fn set_secrets(&self, secrets: Vec<String>) {
        // Placeholders such as OPENAI_API_KEY=local (which the README suggests for local servers) are
        // no secret, and masking them would rewrite every "localhost" in the transcripts.
        *lock(&self.secrets) = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_CHARS)
            .collect();
    }

    /// Whether `text` holds a registered secret.
    pub fn contains_secret(&self, text: &str) -> bool {
        lock(&self.secrets)
            .iter()
            .any(|secret| text.contains(secret.as_str()))
    }

    /// `text` with every registered secret replaced by `[redacted]`.
    pub fn mask(&self, text: &str) -> String {
        let secrets = lock(&self.secrets);
        let mut out = text.to_string();
        for secret in secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "[redacted]");
            }
        }
        out
    }

    fn conn(&self) -> Either<'_> {
        match &self.backend {
            Backend::Sqlite(conn) => Either::Sqlite(lock(conn)),
            Backend::Pg(pg) => Either::Pg(pg),
        }
    }

    pub fn create_mission(&self, m: &MissionRecord) -> Result<()> {
        let objective = self.mask(&m.objective);
        let options = self.mask(&m.options.to_string());
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.create_mission(m.clone(), objective, options),
            Either::Sqlite(conn) => conn,
        };
        conn.execute(
            "INSERT INTO missions (id, objective, base_commit, user_branch, integration_branch, options, status, pid, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
            params![
                m.id,
                objective,
                m.base_commit,
                m.user_branch,
                m.integration_branch,
                options,
                m.status.as_str(),
                m.pid,
                now()
            ],
        )?;
        Ok(())
    }

    /// Records where the mission stands; on a handle fenced by the mission's lead, only while it
    /// leads ([`Store::fence_by_leader`]).
    pub fn set_status(&self, mission: &str, status: MissionStatus, pid: Option<u32>) -> Result<()> {
        let fence = self.leader_fence(mission);
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.set_status(mission, status, pid, fence),
            Either::Sqlite(conn) => conn,
        };
        let tx = lease::leader_tx(&mut conn, mission, fence)?;
        tx.execute(
            "UPDATE missions SET status = ?2, pid = ?3, updated_at = ?4 WHERE id = ?1",
            params![mission, status.as_str(), pid, now()],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub fn mission(&self, id: &str) -> Result<Option<MissionRecord>> {
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.mission(id),
            Either::Sqlite(conn) => conn,
        };
        let mut stmt = conn.prepare(&format!("{SELECT_MISSION} WHERE id = ?1"))?;
        stmt.query_row(params![id], row_to_mission)
            .optional()?
            .transpose()
    }

    /// The most recently started mission.
    pub fn latest_mission(&self) -> Result<Option<MissionRecord>> {
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.latest_mission(),
            Either::Sqlite(conn) => conn,
        };
        let mut stmt = conn.prepare(&format!(
            "{SELECT_MISSION} ORDER BY created_at DESC, rowid DESC LIMIT 1"
        ))?;
        stmt.query_row([], row_to_mission).optional()?.transpose()
    }

    /// Every mission, newest first.
    pub fn missions(&self) -> Result<Vec<MissionRecord>> {
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.missions(),
            Either::Sqlite(conn) => conn,
        };
        let mut stmt = conn.prepare(&format!("{SELECT_MISSION} ORDER BY created_at DESC, rowid DESC"))?;
        let rows = stmt.query_map([], row_to_mission)?;
        rows.map(|row| row?).collect()
    }

    /// The missions whose id starts with `prefix` (all of them for an empty one), newest first.
    pub fn missions_with_prefix(&self, prefix: &str) -> Result<Vec<MissionRecord>> {
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.missions_with_prefix(prefix),
            Either::Sqlite(conn) => conn,
        };
        // substr, not LIKE: `_` and `%` in what the user typed are characters, not wildcards.
        let mut stmt = conn.prepare(&format!(
            "{SELECT_MISSION} WHERE substr(id, 1, length(?1)) = ?1 ORDER BY created_at DESC, rowid DESC"
        ))?;
        let rows = stmt.query_map(params![prefix], row_to_mission)?;
        rows.map(|row| row?).collect()
    }

    /// Marks an unfinished mission abandoned; false (and nothing changed) when it is not unfinished,
    /// so a mission that finished or was abandoned meanwhile keeps its status.
    pub fn abandon(&self, mission: &str) -> Result<bool> {
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.abandon(mission),
            Either::Sqlite(conn) => conn,
        };
        let changed = conn.execute(
            "UPDATE missions SET status = 'abandoned', pid = NULL, updated_at = ?2
             WHERE id = ?1 AND status IN ('running', 'interrupted')",
            params![mission, now()],
        )?;
        Ok(changed > 0)
    }

    /// From now on this handle writes `mission`'s events (`append_serialized_event`,
    /// `append_delivery`), its transcripts (`append_message`, `replace_messages`,
    /// `truncate_messages`) and its status (`set_status`) only while `token` is the mission's leader
    /// token, checked in the same transaction as the write: a commander that lost the lead has them
    /// refused with [`StoreError::LeaseLost`], and they write nothing. Other missions' writes are
    /// not fenced.
    pub fn fence_by_leader(&self, mission: &str, token: i64) {
        *lock(&self.leader_fence) = Some((mission.to_string(), token));
    }

    /// Whether the commander this handle is fenced for ([`Store::fence_by_leader`]) still leads
    /// `mission`: its token is the lease's. `None` for a handle not fenced for it. Read just before
    /// a write outside the store that only the leader may make (the remote's integration ref).
    pub fn still_leads(&self, mission: &str) -> Result<Option<bool>> {
        let Some(token) = self.leader_fence(mission) else {
            return Ok(None);
        };
        Ok(Some(
            self.leader(mission)?.is_some_and(|lead| lead.token == token),
        ))
    }

    /// The leader token `mission`'s writes are fenced by, if any.
    fn leader_fence(&self, mission: &str) -> Option<i64> {
        lock(&self.leader_fence)
            .as_ref()
            .filter(|(fenced, _)| fenced == mission)
            .map(|(_, token)| *token)
    }

    /// Appends one event. Sequence numbers are unique per mission; a duplicate is an error.
    pub fn append_event(&self, event: &EventEnvelope) -> Result<()> {
        self.append_serialized_event(event, &serde_json::to_string(event)?)
    }

    /// [`Store::append_event`] for a caller that already has the event as JSON (`json` must be
    /// `event` serialised); it is masked here all the same.
    pub fn append_serialized_event(&self, event: &EventEnvelope, json: &str) -> Result<()> {
        let body = self.mask(json);
        let fence = self.leader_fence(&event.mission);
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.append_event(&event.mission, event.seq, body, fence),
            Either::Sqlite(conn) => conn,
        };
        let tx = lease::leader_tx(&mut conn, &event.mission, fence)?;
        tx.execute(
            "INSERT INTO events (mission, seq, body) VALUES (?1, ?2, ?3)",
            params![event.mission, event.seq as i64, body],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The mission's events with `seq > after`, in order.
    pub fn events_after(&self, mission: &str, after: Option<u64>) -> Result<Vec<EventEnvelope>> {
        let bodies = match self.conn() {
            Either::Pg(pg) => pg.event_bodies_after(mission, after)?,
            Either::Sqlite(conn) => {
                let mut stmt =
                    conn.prepare("SELECT body FROM events WHERE mission = ?1 AND seq > ?2 ORDER BY seq")?;
                let after = after.map(|a| a as i64).unwrap_or(-1);
                let rows = stmt.query_map(params![mission, after], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()?
            }
        };
        let mut events = Vec::with_capacity(bodies.len());
        for body in bodies {
            events.push(serde_json::from_str(&body)?);
        }
        Ok(events)
    }

    pub fn last_seq(&self, mission: &str) -> Result<Option<u64>> {
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.last_seq(mission),
            Either::Sqlite(conn) => conn,
        };
        let seq: Option<i64> = conn.query_row(
            "SELECT MAX(seq) FROM events WHERE mission = ?1",
            params![mission],
            |r| r.get(0),
        )?;
        Ok(seq.map(|s| s as u64))
    }

    /// Records a person's answer to the mission's waiting plan `attempt`, replacing an answer not
    /// taken yet (the latest word counts).
    pub fn put_plan_answer(&self, mission: &str, attempt: u32, answer: &PlanAnswer) -> Result<()> {
        let body = self.mask(&serde_json::to_string(answer)?);
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.put_plan_answer(mission, attempt, body),
            Either::Sqlite(conn) => conn,
        };
        conn.execute(
            "INSERT OR REPLACE INTO plan_answers (mission, attempt, body) VALUES (?1, ?2, ?3)",
            params![mission, attempt, body],
        )?;
        Ok(())
    }

    /// The answer waiting for the mission to take it, with the attempt it answers.
    pub fn plan_answer(&self, mission: &str) -> Result<Option<(u32, PlanAnswer)>> {
        let row: Option<(u32, String)> = match self.conn() {
            Either::Pg(pg) => pg.plan_answer(mission)?,
            Either::Sqlite(conn) => conn
                .query_row(
                    "SELECT attempt, body FROM plan_answers WHERE mission = ?1",
                    params![mission],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?,
        };
        match row {
            Some((attempt, body)) => Ok(Some((attempt, serde_json::from_str(&body)?))),
            None => Ok(None),
        }
    }

    /// Removes the mission's stored answer once it is taken (logged as an event).
    pub fn clear_plan_answer(&self, mission: &str) -> Result<()> {
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.clear_plan_answer(mission),
            Either::Sqlite(conn) => conn,
        };
        conn.execute("DELETE FROM plan_answers WHERE mission = ?1", params![mission])?;
        Ok(())
    }

    /// Puts a message for `unit` into the mission's inbox, unless `limit` messages already wait for
    /// that unit: `Ok(None)` then. Returns the row's id.
    pub fn put_inbox(&self, mission: &str, unit: &str, message: &str, limit: usize) -> Result<Option<i64>> {
        let message = self.mask(message);
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.put_inbox(mission, unit, message, limit),
            Either::Sqlite(conn) => conn,
        };
        // IMMEDIATE: the count and the insert see the same inbox, also with two `tell`s at once.
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let waiting: i64 = tx.query_row(
            "SELECT COUNT(*) FROM inbox WHERE mission = ?1 AND unit = ?2 AND delivered_seq IS NULL",
            params![mission, unit],
            |r| r.get(0),
        )?;
        if waiting >= i64::try_from(limit).unwrap_or(i64::MAX) {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO inbox (mission, unit, message, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![mission, unit, message, now()],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        Ok(Some(id))
    }

    /// The mission's messages not delivered yet, oldest first.
    pub fn waiting_inbox(&self, mission: &str) -> Result<Vec<InboxMessage>> {
        let conn = match self.conn() {
            Either::Pg(pg) => return pg.waiting_inbox(mission),
            Either::Sqlite(conn) => conn,
        };
        let mut stmt = conn.prepare(
            "SELECT id, unit, message FROM inbox WHERE mission = ?1 AND delivered_seq IS NULL ORDER BY id",
        )?;
        let rows = stmt.query_map(params![mission], |r| {
            Ok(InboxMessage {
                id: r.get(0)?,
                unit: r.get(1)?,
                message: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Appends `event` (serialised as `json`) together with what `delivery` writes, in one
    /// transaction: a crash leaves the message either waiting or delivered and logged, never both
    /// or neither.
    pub fn append_delivery(&self, event: &EventEnvelope, json: &str, delivery: &Delivery) -> Result<()> {
        let body = self.mask(json);
        let transcript = delivery
            .transcript
            .as_ref()
            .map(|(session, idx, message)| (session.clone(), *idx, self.mask(&message.to_string())));
        let fence = self.leader_fence(&event.mission);
        let mut conn = match self.conn() {
            Either::Pg(pg) => {
                let inbox = delivery.inbox.clone();
                return pg.append_delivery(&event.mission, event.seq, body, inbox, transcript, fence);
            }
            Either::Sqlite(conn) => conn,
        };
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if let Some(token) = fence {
            lease::check_leads(&tx, &event.mission, token)?;
        }
        tx.execute(
            "INSERT INTO events (mission, seq, body) VALUES (?1, ?2, ?3)",
            params![event.mission, event.seq as i64, body],
        )?;
        for id in &delivery.inbox {
            tx.execute(
                "UPDATE inbox SET delivered_seq = ?3 WHERE id = ?1 AND mission = ?2 AND delivered_seq IS NULL",
                params![id, event.mission, event.seq as i64],
            )?;
        }
        if let Some((session, idx, body)) = &transcript {
            tx.execute(
                "INSERT OR REPLACE INTO messages (mission, session, idx, body) VALUES (?1, ?2, ?3, ?4)",
                params![event.mission, session, *idx as i64, body],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Appends one message of a session's transcript at position `idx` (replacing one there); on a
    /// handle fenced by the mission's lead, only while it leads ([`Store::fence_by_leader`]).
    pub fn append_message(
        &self,
        mission: &str,
        session: &str,
        idx: usize,
        body: &serde_json::Value,
    ) -> Result<()> {
        let body = self.mask(&body.to_string());
        let fence = self.leader_fence(mission);
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.append_message(mission, session, idx, body, fence),
            Either::Sqlite(conn) => conn,
        };
        let tx = lease::leader_tx(&mut conn, mission, fence)?;
        tx.execute(
            "INSERT OR REPLACE INTO messages (mission, session, idx, body) VALUES (?1, ?2, ?3, ?4)",
            params![mission, session, idx as i64, body],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A session's transcript, in order; empty when the session never started.
    pub fn messages(&self, mission: &str, session: &str) -> Result<Vec<serde_json::Value>> {
        let bodies = match self.conn() {
            Either::Pg(pg) => pg.messages(mission, session)?,
            Either::Sqlite(conn) => {
                let mut stmt = conn
                    .prepare("SELECT body FROM messages WHERE mission = ?1 AND session = ?2 ORDER BY idx")?;
                let rows = stmt.query_map(params![mission, session], |r| r.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()?
            }
        };
        let mut messages = Vec::with_capacity(bodies.len());
        for body in bodies {
            messages.push(serde_json::from_str(&body)?);
        }
        Ok(messages)
    }

    /// A session's transcript from position `from` on, at most `limit` messages, with each
    /// message's position: what a reader following a transcript as it grows has not seen yet.
    pub fn messages_from(
        &self,
        mission: &str,
        session: &str,
        from: usize,
        limit: usize,
    ) -> Result<Vec<(usize, serde_json::Value)>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match self.conn() {
            Either::Pg(pg) => pg.messages_from(mission, session, from, limit)?,
            Either::Sqlite(conn) => {
                let mut stmt = conn.prepare(
                    "SELECT idx, body FROM messages WHERE mission = ?1 AND session = ?2 AND idx >= ?3 ORDER BY idx LIMIT ?4",
                )?;
                let rows = stmt.query_map(params![mission, session, from as i64, limit], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?;
                rows.collect::<rusqlite::Result<Vec<(i64, String)>>>()?
            }
        };
        let mut messages = Vec::with_capacity(rows.len());
        for (idx, body) in rows {
            messages.push((
                usize::try_from(idx).unwrap_or_default(),
                serde_json::from_str(&body)?,
            ));
        }
        Ok(messages)
    }

    /// Replaces a session's whole transcript in one transaction (a compacted conversation), so a
    /// crash leaves either the old transcript or the new one. Fenced as [`Store::append_message`].
    pub fn replace_messages(
        &self,
        mission: &str,
        session: &str,
        messages: &[serde_json::Value],
    ) -> Result<()> {
        let bodies: Vec<String> = messages.iter().map(|m| self.mask(&m.to_string())).collect();
        let fence = self.leader_fence(mission);
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.replace_messages(mission, session, bodies, fence),
            Either::Sqlite(conn) => conn,
        };
        let tx = lease::leader_tx(&mut conn, mission, fence)?;
        tx.execute(
            "DELETE FROM messages WHERE mission = ?1 AND session = ?2",
            params![mission, session],
        )?;
        for (idx, body) in bodies.iter().enumerate() {
            tx.execute(
                "INSERT INTO messages (mission, session, idx, body) VALUES (?1, ?2, ?3, ?4)",
                params![mission, session, idx as i64, body],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Drops a session's transcript from `from` on (a compacted conversation replaces its tail).
    /// Fenced as [`Store::append_message`].
    pub fn truncate_messages(&self, mission: &str, session: &str, from: usize) -> Result<()> {
        let fence = self.leader_fence(mission);
        let mut conn = match self.conn() {
            Either::Pg(pg) => return pg.truncate_messages(mission, session, from, fence),
            Either::Sqlite(conn) => conn,
        };
        let tx = lease::leader_tx(&mut conn, mission, fence)?;
        tx.execute(
            "DELETE FROM messages WHERE mission = ?1 AND session = ?2 AND idx >= ?3",
            params![mission, session, from as i64],
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// Where the store's records live.
enum Backend {
    Sqlite(Mutex<Connection>),
    Pg(pg::Pg),
}

/// The backend a call uses: SQLite's connection locked for it, or PostgreSQL's connection thread.
enum Either<'a> {
    Sqlite(std::sync::MutexGuard<'a, Connection>),
    Pg(&'a pg::Pg),
}

const SELECT_MISSION: &str = "SELECT id, objective, base_commit, user_branch, integration_branch, options, status, pid, created_at, updated_at FROM missions";

fn row_to_mission(r: &rusqlite::Row<'_>) -> rusqlite::Result<Result<MissionRecord>> {
    let options: String = r.get(5)?;
    let status: String = r.get(6)?;
    let pid: Option<i64> = r.get(7)?;
    let record = serde_json::from_str(&options).map(|options| MissionRecord {
        id: r.get(0).unwrap_or_default(),
        objective: r.get(1).unwrap_or_default(),
        base_commit: r.get(2).unwrap_or_default(),
        user_branch: r.get(3).unwrap_or_default(),
        integration_branch: r.get(4).unwrap_or_default(),
        options,
        status: MissionStatus::parse(&status),
        pid: pid.and_then(|p| u32::try_from(p).ok()),
        created_at: r.get(8).unwrap_or_default(),
        updated_at: r.get(9).unwrap_or_default(),
    });
    Ok(record.map_err(StoreError::from))
}

fn migrate(conn: &Connection, path: &Path) -> Result<()> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| corrupt(path, e))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: version,
        });
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let target = i as i64 + 1;
        // Each migration and its version bump commit together, so a crash mid-migration retries it.
        let batch = format!("BEGIN; {migration}; PRAGMA user_version = {target}; COMMIT;");
        conn.execute_batch(&batch).map_err(|e| corrupt(path, e))?;
    }
    // A store whose tables are not ours (or are damaged) fails here rather than mid-mission.
    conn.query_row("SELECT COUNT(*) FROM missions", [], |r| r.get::<_, i64>(0))
        .map_err(|e| corrupt(path, e))?;
    Ok(())
}

fn corrupt(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn now() -> String {
    // Zero-padded seconds since the epoch: enough to order missions, and the events carry precise
    // timestamps of their own.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs:012}")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The modes the store's folder and files get: the user's alone.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Creates the store's folder private to the user (0700; missing parents get the usual mode), or
/// makes an existing one so. Call it before [`Store::open`] with the folder the store lives in.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::DirBuilder::new().mode(PRIVATE_DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(e),
    }
    // Also when just made: a umask can take more than it should, and an old folder is 0755.
    restrict(dir, PRIVATE_DIR_MODE)
}

/// The database file, made 0600 before SQLite first opens it (SQLite would make it 0644 under the
/// usual umask, and copies the database's mode to the -wal and -shm files it makes). An existing
/// file is left to [`private_files`].
fn create_private(path: &Path) -> io::Result<()> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
        .map(drop)
}

/// The database and its -wal and -shm files, those that exist, made 0600.
fn private_files(path: &Path) -> io::Result<()> {
    let mut files = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    for file in files {
        match restrict(&file, PRIVATE_FILE_MODE) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Sets `mode` unless the path has it. A file or folder of another user is left as it is: only its
/// owner can change it, and reading a store one may read (`status`, `logs`) should not fail on it.
fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    let current = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if current == mode {
        return Ok(());
    }
    match std::fs::set_permissions(path, Permissions::from_mode(mode)) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

fn unsafe_files(path: &Path, source: io::Error) -> StoreError {
    StoreError::NotPrivate {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests;
