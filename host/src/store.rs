//! keeper.db: the bot's own database, the durable half of every guarantee.
//!
//! A report is acknowledged only after its `discoveries` row and its
//! `sync_queue` row are committed in one transaction. An existing keeper.db
//! from the Python bot is adopted in place: migrations only add what is
//! missing and never rewrite a row.
//!
//! With `KEEPER_DATABASE_URL` the same tables live in PostgreSQL instead
//! (`store/postgres.rs`, its own migrations), shared by several hosts; each
//! operation here matches on the driver in one place.

mod intake;
pub mod migrate;
pub(crate) mod postgres;
pub mod write_turn;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, Row as _, SqliteConnection, SqlitePool};

use crate::db::Db;
use crate::queue;
use crate::report::Report;
use crate::row::{ColumnNames, Row, UnreadableColumn, read_row_sharing};
use crate::sqlite_error::{self, Fault};
use intake::{Committer, Keyed, Submission};
use write_turn::WriteTurn;

/// The keeper.db `discoveries` table exactly as the Python bot creates it, so
/// that a file we create is one the old bot (and its other features) can open.
const DISCOVERIES_TABLE: &str = "CREATE TABLE IF NOT EXISTS discoveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    username TEXT NOT NULL,
    guild_id TEXT,
    discovery_type TEXT NOT NULL,
    location TEXT NOT NULL,
    time_period TEXT,
    condition TEXT,
    description TEXT NOT NULL,
    significance TEXT,
    evidence_url TEXT,
    related_discoveries TEXT,
    coordinates TEXT,
    planet_name TEXT,
    galaxy_name TEXT,
    submission_timestamp DATETIME DEFAULT CURRENT_TIMESTAMP,
    analysis_status TEXT DEFAULT 'pending',
    pattern_matches INTEGER DEFAULT 0,
    mystery_tier INTEGER DEFAULT 0,
    tags TEXT,
    metadata TEXT,
    system_name TEXT)";

/// The `sync_queue` table as the Python bot creates it; our own columns are
/// added by a later migration so that a legacy queue gets them too, and
/// migration 19 rebuilds it with states and attempts NOT NULL
/// ([`SYNC_QUEUE_REBUILT`]).
const SYNC_QUEUE_TABLE: &str = "CREATE TABLE IF NOT EXISTS sync_queue (
    id INTEGER PRIMARY KEY,
    discovery_id INTEGER NOT NULL,
    sync_status TEXT DEFAULT 'pending',
    sync_attempts INTEGER DEFAULT 0,
    max_attempts INTEGER DEFAULT 10,
    last_sync_attempt DATETIME,
    next_retry_after DATETIME,
    sync_error TEXT,
    haven_discovery_id INTEGER,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    synced_at DATETIME,
    metadata TEXT)";

/// `sync_queue` as migration 19 leaves it: the Python bot's columns and
/// ours (migrations 3 and 15), a state that is one of the four the queue
/// knows and attempts that are a number, so no query needs `IFNULL`.
/// Columns an adopted file has beyond these are kept after them. The check
/// is written with `OR`, not `IN (…)`: SQLite evaluates it on every claim
/// and completion of every item, and with `IN` the queue's claim +
/// complete cycle ran 8 % slower than without a check, with `OR` 1 %
/// (medians of five runs of 20,000 items in batches of 1,000).
const SYNC_QUEUE_REBUILT: &str = "CREATE TABLE sync_queue_rebuilt (
    id INTEGER PRIMARY KEY,
    discovery_id INTEGER NOT NULL,
    sync_status TEXT NOT NULL DEFAULT 'pending'
        CHECK (sync_status = 'pending' OR sync_status = 'syncing' OR sync_status = 'synced'
               OR sync_status = 'max_retries_exceeded'),
    sync_attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER DEFAULT 10,
    last_sync_attempt DATETIME,
    next_retry_after DATETIME,
    sync_error TEXT,
    haven_discovery_id INTEGER,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    synced_at DATETIME,
    metadata TEXT,
    lease_expires_at DATETIME,
    claim_token TEXT,
    error_class TEXT,
    claimed_by TEXT";

/// The columns of [`SYNC_QUEUE_REBUILT`] and what each is copied from: the
/// old bot's NULL state meant pending, a state it had beyond the four
/// (none is documented) is kept as failed with the state in its error.
const SYNC_QUEUE_COPIED: &[(&str, &str)] = &[
    ("id", "id"),
    ("discovery_id", "discovery_id"),
    (
        "sync_status",
        "CASE WHEN sync_status IS NULL THEN 'pending'
              WHEN sync_status IN ('pending', 'syncing', 'synced', 'max_retries_exceeded') THEN sync_status
              ELSE 'max_retries_exceeded' END",
    ),
    ("sync_attempts", "IFNULL(sync_attempts, 0)"),
    ("max_attempts", "max_attempts"),
    ("last_sync_attempt", "last_sync_attempt"),
    ("next_retry_after", "next_retry_after"),
    (
        "sync_error",
        "CASE WHEN sync_status IS NULL OR sync_status IN ('pending', 'syncing', 'synced', 'max_retries_exceeded')
              THEN sync_error
              ELSE 'the old bot left it in state ' || quote(sync_status) || IFNULL(': ' || sync_error, '') END",
    ),
    ("haven_discovery_id", "haven_discovery_id"),
    ("created_at", "created_at"),
    ("synced_at", "synced_at"),
    ("metadata", "metadata"),
    ("lease_expires_at", "lease_expires_at"),
    ("claim_token", "claim_token"),
    ("error_class", "error_class"),
    ("claimed_by", "claimed_by"),
];

/// Columns the host reads or writes; an adopted file lacking one is refused.
const REQUIRED_DISCOVERY_COLUMNS: &[&str] = &[
    "id",
    "user_id",
    "username",
    "guild_id",
    "discovery_type",
    "location",
    "description",
    "submission_timestamp",
    "metadata",
    "tags",
    "system_name",
];

/// Rows written per transaction by a bulk submission: large enough that the
/// fsync per commit does not dominate, small enough to keep the write lock short.
const SUBMIT_CHUNK: usize = 5_000;

/// How long [`Store::probe`] waits for keeper.db's write lock before
/// calling it not writable: far longer than any write of ours holds it.
const PROBE_BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// What [`Store::probe`] found; the messages name the path and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Ok,
    /// Readable, but a write would fail (read-only, locked by another program).
    NotWritable(String),
    /// Cannot be opened or read at its path (gone, not a database, replaced).
    Unreadable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A migration listed in `MIGRATIONS` without a step in `apply`: a
    /// defect of this build, caught before anything is committed.
    #[error("keeper.db migration {0} is listed but this build has no step for it; nothing was changed")]
    MigrationMissing(i64),
    #[error("cannot open keeper.db at {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("cannot create folder {path} for keeper.db: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error(
        "{path} is not a keeper.db, so keeper left it untouched: {reason}. \
         Point KEEPER_DB_PATH (or --keeper-db) at the bot's keeper.db"
    )]
    Incompatible { path: PathBuf, reason: String },
    #[error(
        "there is no keeper.db at {path}{detail}: this command never creates one. \
         `keeper run`, `keeper sync` or `keeper submit` create it; if the bot's keeper.db \
         is elsewhere, set KEEPER_DB_PATH (or --keeper-db)"
    )]
    NotFound { path: PathBuf, detail: &'static str },
    #[error(
        "keeper.db at {path} needs upgrading (schema version {have}, this keeper uses {want}) \
         and this command only reads: run `keeper run` or `keeper sync --once` once to upgrade it"
    )]
    NeedsUpgrade { path: PathBuf, have: i64, want: i64 },
    #[error("cannot connect to the PostgreSQL store at {url} (KEEPER_DATABASE_URL): {source}")]
    PgConnect { url: String, source: sqlx::Error },
    #[error(
        "the PostgreSQL database at {url} has no keeper tables yet, and this command never creates them: \
         `keeper run`, `keeper sync` or `keeper submit` create them"
    )]
    PgNotFound { url: String },
    #[error(
        "the PostgreSQL store at {url} needs upgrading (schema version {have}, this keeper uses {want}) \
         and this command only reads: run `keeper run` or `keeper sync --once` once to upgrade it"
    )]
    PgNeedsUpgrade { url: String, have: i64, want: i64 },
    #[error(
        "the PostgreSQL database at {url} is not a keeper store, so keeper left it untouched: {reason}. \
         Point KEEPER_DATABASE_URL at a database of its own"
    )]
    PgNotKeeper { url: String, reason: String },
    #[error("keeper.db: {0}")]
    Sql(#[from] sqlx::Error),
    /// A transaction shared by a group of reports failed (group commit,
    /// `store/intake.rs`): each of them gets this, and none was stored.
    #[error("keeper.db: {0}")]
    Shared(Arc<sqlx::Error>),
    #[error("keeper is shutting down and did not store the report; send it again once keeper is back")]
    IntakeStopped,
}

/// What a command may do to keeper.db. Decided per command, so that a
/// mistyped path or a command run in the wrong folder never leaves a file
/// behind and never changes a database that is not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Create keeper.db if missing, adopt and migrate it if it exists
    /// (`run`, `sync`, `submit`, `pull`).
    Create,
    /// Adopt and migrate an existing keeper.db, never create one: there is
    /// nothing to retry, clean up or backfill in a new file.
    Update,
    /// Read what is there: never create, adopt or migrate.
    Read,
}

/// Open handle on keeper's store: keeper.db, or PostgreSQL.
#[derive(Clone)]
pub struct Store {
    db: Db,
    /// keeper.db's path; on PostgreSQL, the URL without its password. For
    /// messages only.
    path: PathBuf,
    source_id: String,
    plugin_cache_key: Arc<[u8]>,
    /// keeper.db's write lock, taken in turns by the intake committer and
    /// the worker's queue (`store/write_turn.rs`).
    write_turn: WriteTurn,
    /// The group committer of single submissions on keeper.db
    /// (`store/intake.rs`), started by the first one.
    intake: Arc<OnceLock<Committer>>,
    /// The file keeper.db was when this store opened it
    /// ([`crate::platform::file_identity`]): a file put in its place while
    /// keeper runs (a backup restored by a move) is another file, which the
    /// pool's open connections never see while new ones would open it.
    opened_file: Option<(u64, u64)>,
}

/// Why one discovery row could not be given to the mapper. The row fails
/// alone (class `source`); the rest of its batch goes on.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    /// A column holds bytes the plugin contract has no form for.
    #[error(transparent)]
    Column(#[from] UnreadableColumn),
    /// SQLite cannot read the row: the page that holds it is damaged.
    #[error("cannot be read from {path}: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

/// One migration: applied once, in order, inside the start-up transaction.
struct Migration {
    version: i64,
    name: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "discoveries table",
    },
    Migration {
        version: 2,
        name: "sync_queue table",
    },
    Migration {
        version: 3,
        name: "sync_queue lease, error class and indexes",
    },
    Migration {
        version: 4,
        name: "source id",
    },
    Migration {
        version: 5,
        name: "plugin registry",
    },
    Migration {
        version: 6,
        name: "queue counters maintained by triggers, partial indexes for the API",
    },
    Migration {
        version: 7,
        name: "open Discord forms",
    },
    Migration {
        version: 8,
        name: "Discord reporters to tell what became of their reports",
    },
    Migration {
        version: 9,
        name: "secret key of the compiled-plugin cache",
    },
    Migration {
        version: 10,
        name: "intake idempotency keys",
    },
    Migration {
        version: 11,
        name: "evidence images attached in Discord",
    },
    Migration {
        version: 12,
        name: "claim indexes: pending by id, syncing by lease",
    },
    Migration {
        version: 13,
        name: "Discord reporters told of a failure hear of a later sync",
    },
    Migration {
        version: 14,
        name: "limits granted to each mapping plugin",
    },
    Migration {
        version: 15,
        name: "the host that claimed each queue item",
    },
    Migration {
        version: 16,
        name: "how each plugin became active; canary activations",
    },
    Migration {
        version: 17,
        name: "plugin artifacts by hash",
    },
    Migration {
        version: 18,
        name: "the host running each canary, and its lease",
    },
    Migration {
        version: 19,
        name: "sync_queue rebuilt: states and attempts NOT NULL, states checked",
    },
];

/// The schema version a fully migrated keeper.db has.
fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The first bytes of every SQLite database file (fileformat2.html §1.3.1).
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// What is at the configured path, judged without SQLite (which would treat
/// any file as a database it may write to).
enum OnDisk {
    Missing,
    /// A zero-length file: SQLite's empty database, e.g. made by `touch`.
    Empty,
    Sqlite,
}

/// What an existing SQLite database is, judged by its tables alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// No tables at all: a new database, ours to initialise.
    Blank,
    /// A keeper.db: ours at `version`, or the old bot's (version 0).
    Keeper { version: i64 },
}

impl Store {
    /// Opens keeper.db as `access` allows. An existing file is recognised
    /// as a keeper.db (ours or the Python bot's) before anything is written;
    /// anything else is refused and left byte-for-byte as it was. Adoption
    /// and every migration run in ONE transaction, so a failure midway also
    /// leaves the file as it was.
    pub async fn open(path: &Path, access: Access) -> Result<Store, StoreError> {
        let on_disk = on_disk(path)?;
        let not_found = |detail| StoreError::NotFound {
            path: path.to_owned(),
            detail,
        };
        match (&on_disk, access) {
            (OnDisk::Missing, Access::Read | Access::Update) => return Err(not_found("")),
            (OnDisk::Empty, Access::Read | Access::Update) => return Err(not_found(" (the file is empty)")),
            _ => {}
        }
        if access == Access::Read {
            return Store::open_read_only(path).await;
        }
        if matches!(on_disk, OnDisk::Missing)
            && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        adopt(path, access == Access::Create).await?;
        // WAL only now: switching the journal mode rewrites the file header,
        // which must not happen to a file we have not recognised as ours.
        let options = connect_options(path)?
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged report survives power loss, not only a crash.
            .synchronous(SqliteSynchronous::Full);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.to_owned(),
                source,
            })?;
        Store::from_pool(pool, path).await
    }

    /// A read-only pool on a keeper.db that is fully migrated; anything
    /// else is refused with what to do (see [`Access::Read`]).
    async fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let options = connect_options(path)?.read_only(true);
        let open_err = |source| StoreError::Open {
            path: path.to_owned(),
            source,
        };
        let mut conn = SqliteConnection::connect_with(&options).await.map_err(open_err)?;
        let found = recognise(&mut conn, path).await?;
        conn.close().await?;
        match found {
            Found::Blank => {
                return Err(StoreError::NotFound {
                    path: path.to_owned(),
                    detail: " (an empty database)",
                });
            }
            Found::Keeper { version } if version < latest_version() => {
                return Err(StoreError::NeedsUpgrade {
                    path: path.to_owned(),
                    have: version,
                    want: latest_version(),
                });
            }
            Found::Keeper { .. } => {}
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        Store::from_pool(pool, path).await
    }

    async fn from_pool(pool: SqlitePool, path: &Path) -> Result<Store, StoreError> {
        let source_id: String = sqlx::query_scalar("SELECT value FROM keeper_sync_meta WHERE key = 'source_id'")
            .fetch_one(&pool)
            .await?;
        let key: String = sqlx::query_scalar("SELECT value FROM keeper_sync_meta WHERE key = 'plugin_cache_key'")
            .fetch_one(&pool)
            .await?;
        let plugin_cache_key = hex::decode(key.trim()).map_err(|e| StoreError::Incompatible {
            path: path.to_owned(),
            reason: format!("keeper_sync_meta.plugin_cache_key is not hex ({e})"),
        })?;
        Ok(Store {
            db: Db::Sqlite(pool),
            path: path.to_owned(),
            source_id,
            plugin_cache_key: plugin_cache_key.into(),
            write_turn: WriteTurn::default(),
            intake: Arc::default(),
            opened_file: crate::platform::file_identity(path),
        })
    }

    /// Opens the PostgreSQL store at `url` (`KEEPER_DATABASE_URL`) as
    /// `access` allows: `Create` and `Update` apply its migrations, `Read`
    /// refuses a database that lacks any.
    pub async fn open_postgres(url: &str, access: Access) -> Result<Store, StoreError> {
        let opened = postgres::open(url, access).await?;
        let shown = postgres::redact(url);
        let plugin_cache_key = hex::decode(opened.plugin_cache_key.trim()).map_err(|e| StoreError::PgNotKeeper {
            url: shown.clone(),
            reason: format!("keeper_sync_meta.plugin_cache_key is not hex ({e})"),
        })?;
        Ok(Store {
            db: Db::Postgres(opened.pool),
            path: PathBuf::from(shown),
            source_id: opened.source_id,
            plugin_cache_key: plugin_cache_key.into(),
            write_turn: WriteTurn::default(),
            intake: Arc::default(),
            opened_file: None,
        })
    }

    /// The open pool, for the queue, the registry and the evidence table.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The turn at keeper.db's write lock that single submissions take,
    /// for the queue of the same process to take too (see `store/write_turn.rs`).
    pub fn write_turn(&self) -> WriteTurn {
        self.write_turn.clone()
    }

    /// Where keeper.db is (on PostgreSQL, the URL without its password),
    /// for errors after start-up.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Identifies this keeper.db in VH-Database's ledger, so two bots feeding
    /// one Control Room never mistake each other's discovery ids.
    pub fn source_id(&self) -> &str {
        &self.source_id
    }

    /// Whether keeper.db can be read and written at its path right now, on a
    /// fresh connection: the pool's connections keep working on a file that
    /// was deleted or replaced, and keep serving pages from their caches, so
    /// only a new connection sees what the next start would see.
    pub async fn probe(&self) -> Probe {
        if let Db::Postgres(pool) = &self.db {
            return postgres::probe(pool, &self.path.to_string_lossy(), &self.source_id).await;
        }
        let unreadable =
            |why: String| Probe::Unreadable(format!("keeper.db at {} cannot be read: {why}", self.path.display()));
        let now_there = crate::platform::file_identity(&self.path);
        if let (Some(opened), Some(now)) = (self.opened_file, now_there)
            && opened != now
        {
            return Probe::Unreadable(format!(
                "keeper.db at {} was replaced by another file while keeper ran (a backup put in its place?): \
                 this process still has the file it opened, which is no longer at that path, and what it stores \
                 now would be lost; stop keeper, check which file should be keeper.db, and start keeper again",
                self.path.display()
            ));
        }
        let options = match SqliteConnectOptions::from_str("sqlite:") {
            Ok(o) => o
                .filename(&self.path)
                .create_if_missing(false)
                .busy_timeout(PROBE_BUSY_TIMEOUT)
                .foreign_keys(false),
            Err(e) => return unreadable(e.to_string()),
        };
        use sqlx::Connection as _;
        let mut conn = match SqliteConnection::connect_with(&options).await {
            Ok(c) => c,
            Err(e) => return unreadable(e.to_string()),
        };
        let source_id = sqlx::query_scalar::<_, String>("SELECT value FROM keeper_sync_meta WHERE key = 'source_id'")
            .fetch_one(&mut conn)
            .await;
        let probe = match source_id {
            Err(e) => unreadable(e.to_string()),
            Ok(id) if id != self.source_id => unreadable(format!(
                "the file there now is another keeper.db (source id {id}, this process has {} open); \
                 restart keeper to use it",
                self.source_id
            )),
            Ok(_) => match conn.begin_with("BEGIN IMMEDIATE").await {
                Ok(tx) => match tx.rollback().await {
                    Ok(()) => Probe::Ok,
                    Err(e) => Probe::NotWritable(format!("keeper.db at {}: {e}", self.path.display())),
                },
                Err(e) => Probe::NotWritable(format!("keeper.db at {} cannot be written: {e}", self.path.display())),
            },
        };
        let _ = conn.close().await;
        probe
    }

    /// The key that signs compiled plugins on disk (`plugins::cache`). It is
    /// random, lives only in keeper.db and is never sent anywhere, unlike the
    /// source id (in every `/sync/export` page and in VH-Database's ledger):
    /// whoever can write the cache folder but not read keeper.db cannot forge
    /// a compiled plugin, which would run as native code.
    pub fn plugin_cache_key(&self) -> &[u8] {
        &self.plugin_cache_key
    }

    /// Stores validated reports with their queue rows. Returns the new
    /// discovery ids in input order, each only after its transaction committed.
    pub async fn submit(&self, reports: &[Report], max_attempts: u32) -> Result<Vec<i64>, StoreError> {
        let pool = match &self.db {
            Db::Sqlite(pool) => pool,
            Db::Postgres(pool) => return postgres::submit(pool, reports, max_attempts, SUBMIT_CHUNK).await,
        };
        let mut ids = Vec::with_capacity(reports.len());
        for chunk in reports.chunks(SUBMIT_CHUNK) {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            let stored = insert_reports(&mut tx, chunk.iter(), max_attempts).await?;
            tx.commit().await?;
            ids.extend(stored.iter().map(|intake| intake.discovery_id));
        }
        Ok(ids)
    }

    /// Stores one report unless `key` was seen before, so that a request
    /// repeated (a client retrying after a lost answer, Discord redelivering
    /// an interaction) stores it once. The key, the hash of the request and
    /// the answer are written in the same transaction as the report: either
    /// both are stored or neither. A repeat with the same `request_hash`
    /// gets the first answer; one with another hash is refused. Keys expire
    /// after [`INTAKE_KEY_TTL_HOURS`]; expired ones are deleted here, by the
    /// intake that comes after. On keeper.db the transaction is shared with
    /// the submissions that arrive with it (group commit, `store/intake.rs`).
    pub async fn submit_once(
        &self,
        key: &IntakeKey,
        request_hash: &str,
        report: &Report,
        max_attempts: u32,
    ) -> Result<Intake, IntakeError> {
        let pool = match &self.db {
            Db::Sqlite(pool) => pool,
            Db::Postgres(pool) => return postgres::submit_once(pool, key, request_hash, report, max_attempts).await,
        };
        let submission = Submission {
            report: report.clone(),
            key: Some(Keyed {
                key: key.clone(),
                request_hash: request_hash.to_owned(),
            }),
            max_attempts,
        };
        self.committer(pool).submit(submission).await
    }

    /// Stores one report (no idempotency key) with its queue row: where it
    /// went, answered only after its commit. On keeper.db it shares a
    /// transaction with the submissions that arrive with it (group commit,
    /// `store/intake.rs`).
    pub async fn submit_report(&self, report: &Report, max_attempts: u32) -> Result<Intake, IntakeError> {
        let pool = match &self.db {
            Db::Sqlite(pool) => pool,
            Db::Postgres(pool) => return Ok(postgres::submit_report(pool, report, max_attempts).await?),
        };
        let submission = Submission {
            report: report.clone(),
            key: None,
            max_attempts,
        };
        self.committer(pool).submit(submission).await
    }

    /// The group committer of keeper.db, started on first use.
    fn committer(&self, pool: &SqlitePool) -> &Committer {
        self.intake
            .get_or_init(|| Committer::start(pool.clone(), self.write_turn.clone(), self.path.clone()))
    }

    /// The answer an intake with `key` got, if it was stored (and has not expired).
    pub async fn intake_answer(&self, key: &IntakeKey) -> Result<Option<Intake>, StoreError> {
        let pool = match &self.db {
            Db::Sqlite(pool) => pool,
            Db::Postgres(pool) => return postgres::intake_answer(pool, key).await,
        };
        let mut conn = pool.acquire().await?;
        Ok(intake::stored_keys(&mut conn, &[key])
            .await?
            .remove(&key.0)
            .map(|seen| seen.intake))
    }

    /// Every column of the given discoveries, as stored, keyed by id. A row
    /// that cannot be read (invalid UTF-8, a damaged page) maps to its error:
    /// when the batch read meets a damaged page, the rows are read one by
    /// one, so one poison row never holds back the others.
    pub async fn discoveries(&self, ids: &[i64]) -> Result<HashMap<i64, Result<Row, RowError>>, StoreError> {
        let pool = match &self.db {
            Db::Sqlite(pool) => pool,
            Db::Postgres(pool) => return postgres::discoveries(pool, ids).await,
        };
        let error = match read_discoveries(pool, ids).await {
            Ok(rows) => return Ok(rows),
            Err(e) if Fault::of(&e) == Fault::Corrupt => e,
            Err(e) => return Err(e.into()),
        };
        tracing::warn!(
            path = %self.path.display(),
            error = %sqlite_error::message(&error),
            rows = ids.len(),
            "keeper.db: a page of discoveries is damaged; reading the batch row by row"
        );
        let mut out = HashMap::with_capacity(ids.len());
        for &id in ids {
            match read_discoveries(pool, &[id]).await {
                Ok(rows) => out.extend(rows),
                Err(e) if Fault::of(&e) == Fault::Corrupt => {
                    out.insert(
                        id,
                        Err(RowError::Damaged {
                            path: self.path.clone(),
                            reason: sqlite_error::message(&e),
                        }),
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}

async fn read_discoveries(pool: &SqlitePool, ids: &[i64]) -> Result<HashMap<i64, Result<Row, RowError>>, sqlx::Error> {
    let rows = sqlx::query("SELECT * FROM discoveries WHERE id IN (SELECT value FROM json_each(?1))")
        .bind(json!(ids).to_string())
        .fetch_all(pool)
        .await?;
    let mut out = HashMap::with_capacity(rows.len());
    let mut names = ColumnNames::default();
    for row in rows {
        let id: i64 = row.try_get("id")?;
        out.insert(id, read_row_sharing(&row, &mut names).map_err(RowError::from));
    }
    Ok(out)
}

/// The answer to an intake whose key was seen before: the first answer for
/// the same request, a refusal for another.
fn seen_again(key: &IntakeKey, request_hash: &str, seen: SeenKey) -> Result<Intake, IntakeError> {
    if seen.request_hash != request_hash {
        return Err(IntakeError::KeyReused {
            key: key.shown().to_owned(),
            first_used: seen.created_at,
        });
    }
    Ok(seen.intake)
}

/// Inserts reports and their queue rows in the caller's transaction; what
/// each became, in input order. Two statements, each answering with the
/// ids it made: under group commit every round trip to keeper.db's thread
/// is spent inside the write lock, which all intake waits for.
async fn insert_reports<'r>(
    conn: &mut SqliteConnection,
    reports: impl Iterator<Item = &'r Report>,
    max_attempts: u32,
) -> Result<Vec<Intake>, sqlx::Error> {
    let records: Vec<serde_json::Value> = reports.map(report_record).collect();
    let payload = serde_json::Value::Array(records).to_string();
    // RETURNING gives the rows in no promised order; the ids, given in
    // insertion order (`ORDER BY key`), ascend with it.
    let mut discovery_ids: Vec<i64> = sqlx::query_scalar(
        "INSERT INTO discoveries (user_id, username, guild_id, discovery_type, location,
             time_period, condition, description, significance, evidence_url,
             coordinates, planet_name, tags, metadata, system_name)
         SELECT value ->> 'user_id', value ->> 'username', value ->> 'guild_id',
             value ->> 'discovery_type', value ->> 'location', value ->> 'time_period',
             value ->> 'condition', value ->> 'description', value ->> 'significance',
             value ->> 'evidence_url', value ->> 'coordinates', value ->> 'planet_name',
             value ->> 'tags', value ->> 'metadata', value ->> 'system_name'
         FROM json_each(?1) ORDER BY key
         RETURNING id",
    )
    .bind(payload)
    .fetch_all(&mut *conn)
    .await?;
    discovery_ids.sort_unstable();
    let queue_ids = queue::sqlite::enqueue_discoveries(conn, &discovery_ids, max_attempts).await?;
    discovery_ids
        .into_iter()
        .map(|discovery_id| {
            let queue_id = queue_ids.get(&discovery_id).copied().ok_or(sqlx::Error::RowNotFound)?;
            Ok(Intake {
                discovery_id,
                queue_id,
                repeated: false,
            })
        })
        .collect()
}

/// How long an intake key is remembered. A client retries within minutes
/// and Discord redelivers within its 15-minute interaction lifetime; a day
/// covers both with room to spare, and keeps the table small.
pub const INTAKE_KEY_TTL_HOURS: u32 = 24;

/// What makes two intake requests "the same one": where it came from and
/// the key it carries (scoped, so an HTTP client's key never meets a
/// Discord interaction id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeKey(String);

impl IntakeKey {
    /// An `Idempotency-Key` header of `POST /discoveries`.
    pub fn http(key: &str) -> IntakeKey {
        IntakeKey(format!("http:{key}"))
    }

    /// A Discord interaction id (the bot's form submissions).
    pub fn discord(interaction_id: u64) -> IntakeKey {
        IntakeKey(format!("discord:{interaction_id}"))
    }

    /// The key as its sender knows it.
    fn shown(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(_, k)| k)
    }
}

/// What identifies an intake request's content: SHA-256 of the report as
/// JSON, hex (serde_json writes object keys sorted, so the order the sender
/// used does not matter).
pub fn request_hash(record: &serde_json::Value) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(record.to_string().as_bytes()))
}

/// Where an intake's report went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intake {
    pub discovery_id: i64,
    pub queue_id: i64,
    /// The key was seen before: this is the first answer, nothing was stored now.
    pub repeated: bool,
}

/// An intake that was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(
        "Idempotency-Key {key:?} was already used at {first_used} UTC for a different report; nothing was \
         stored. Send a new key with a new report (the same key only with the same body, to retry it)"
    )]
    KeyReused { key: String, first_used: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An idempotency key already used: the request it was used for (by hash)
/// and the report that request stored.
#[derive(Clone)]
struct SeenKey {
    request_hash: String,
    created_at: String,
    intake: Intake,
}

impl SeenKey {
    /// A `keeper_intake_keys` row (either driver): `(request_hash,
    /// created_at, discovery_id, queue_id)`.
    fn from_row((request_hash, created_at, discovery_id, queue_id): (String, String, i64, i64)) -> SeenKey {
        SeenKey {
            request_hash,
            created_at,
            intake: Intake {
                discovery_id,
                queue_id,
                repeated: true,
            },
        }
    }
}

/// The JSON object `submit` turns into one `discoveries` row.
fn report_record(report: &Report) -> serde_json::Value {
    json!({
        "user_id": report.user_id,
        "username": report.username,
        "guild_id": report.guild_id,
        "discovery_type": report.discovery_type,
        "location": report.location_column(),
        "time_period": report.time_period,
        "condition": report.condition,
        "description": report.description,
        "significance": report.significance,
        "evidence_url": report.evidence_url,
        "coordinates": report.coordinates,
        "planet_name": report.planet_name(),
        "tags": report.tags_json(),
        "metadata": report.metadata_json(),
        "system_name": report.system_name,
    })
}

/// How every connection to keeper.db is made; the journal mode is left as
/// the file has it until the file is known to be ours.
fn connect_options(path: &Path) -> Result<SqliteConnectOptions, StoreError> {
    Ok(SqliteConnectOptions::from_str("sqlite:")
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?
        .filename(path)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(false))
}

/// Looks at the path without SQLite: SQLite opens any file, and only finds
/// out it is not a database when it reads it.
fn on_disk(path: &Path) -> Result<OnDisk, StoreError> {
    use std::io::Read as _;
    let refuse = |reason: String| StoreError::Incompatible {
        path: path.to_owned(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(OnDisk::Missing),
        Err(e) => return Err(refuse(format!("cannot read it: {e}"))),
    };
    if meta.is_dir() {
        return Err(refuse("it is a folder".into()));
    }
    if meta.len() == 0 {
        return Ok(OnDisk::Empty);
    }
    let mut header = [0u8; 16];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut header));
    match read {
        Ok(()) if &header == SQLITE_HEADER => Ok(OnDisk::Sqlite),
        Ok(()) => Err(refuse("the file is not a SQLite database".into())),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(refuse("the file is not a SQLite database".into()))
        }
        Err(e) => Err(refuse(format!("cannot read it: {e}"))),
    }
}

/// Recognises keeper.db by its tables: a `discoveries` table with the
/// bot's columns (the Control Room's VH-Database has one too, of another
/// shape), or no tables at all (a new database). Reads only.
async fn recognise(conn: &mut SqliteConnection, path: &Path) -> Result<Found, StoreError> {
    let refuse = |reason: String| StoreError::Incompatible {
        path: path.to_owned(),
        reason,
    };
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| refuse(format!("cannot read its tables: {e}")))?;
    if tables.is_empty() {
        return Ok(Found::Blank);
    }
    let has = |name: &str| tables.iter().any(|t| t == name);
    if !has("discoveries") {
        let mut listed: Vec<&str> = tables.iter().take(5).map(String::as_str).collect();
        if tables.len() > listed.len() {
            listed.push("…");
        }
        return Err(refuse(format!(
            "it has no discoveries table (its tables: {})",
            listed.join(", ")
        )));
    }
    let columns = columns_of(conn, "discoveries").await?;
    // system_name is the one column bots older than it lack; migration 1 adds it.
    let missing: Vec<&str> = REQUIRED_DISCOVERY_COLUMNS
        .iter()
        .copied()
        .filter(|c| *c != "system_name" && !columns.iter().any(|h| h == c))
        .collect();
    if !missing.is_empty() {
        let vh = has("systems") && columns.iter().any(|c| c == "location_type");
        return Err(refuse(if vh {
            "it is a Control Room VH-Database (tables systems, planets, …), which belongs in HAVEN_DB_PATH".into()
        } else {
            format!("table discoveries lacks column(s) {}", missing.join(", "))
        }));
    }
    let version = if has("keeper_sync_migrations") {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM keeper_sync_migrations")
            .fetch_one(&mut *conn)
            .await?
    } else {
        0
    };
    Ok(Found::Keeper { version })
}

/// Recognises the file, then brings it to the latest schema in one
/// transaction. `initialise`: a blank database may become a keeper.db.
async fn adopt(path: &Path, initialise: bool) -> Result<(), StoreError> {
    let options = connect_options(path)?.create_if_missing(initialise);
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
    // First outside the write lock, so a file that is not ours is refused at
    // once even while its own program holds it; then again inside, so what
    // is migrated is what was recognised.
    recognise(&mut conn, path).await?;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    let current = match recognise(&mut tx, path).await? {
        Found::Blank if !initialise => {
            return Err(StoreError::NotFound {
                path: path.to_owned(),
                detail: " (an empty database)",
            });
        }
        Found::Blank => 0,
        Found::Keeper { version: 0 } => {
            tracing::info!(path = %path.display(), "adopting the Python bot's keeper.db");
            0
        }
        Found::Keeper { version } => version,
    };
    migrate(&mut tx, current).await?;
    tx.commit().await?;
    conn.close().await?;
    Ok(())
}

/// Applies every migration newer than `current`; the caller's transaction
/// makes them one change.
async fn migrate(tx: &mut SqliteConnection, current: i64) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS keeper_sync_migrations (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )
    .execute(&mut *tx)
    .await?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        apply(&mut *tx, migration.version).await?;
        sqlx::query("INSERT INTO keeper_sync_migrations (version, name) VALUES (?1, ?2)")
            .bind(migration.version)
            .bind(migration.name)
            .execute(&mut *tx)
            .await?;
        tracing::info!(version = migration.version, name = migration.name, "keeper.db migrated");
    }
    Ok(())
}

async fn apply(conn: &mut SqliteConnection, version: i64) -> Result<(), StoreError> {
    match version {
        1 => {
            sqlx::query(DISCOVERIES_TABLE).execute(&mut *conn).await?;
            // Bots older than the system_name column have it missing.
            add_column_if_missing(conn, "discoveries", "system_name", "TEXT").await?;
        }
        2 => {
            sqlx::query(SYNC_QUEUE_TABLE).execute(&mut *conn).await?;
        }
        3 => {
            add_column_if_missing(conn, "sync_queue", "lease_expires_at", "DATETIME").await?;
            add_column_if_missing(conn, "sync_queue", "claim_token", "TEXT").await?;
            add_column_if_missing(conn, "sync_queue", "error_class", "TEXT").await?;
            for index in [
                "CREATE INDEX IF NOT EXISTS idx_sync_queue_due ON sync_queue (sync_status, next_retry_after)",
                "CREATE INDEX IF NOT EXISTS idx_sync_queue_discovery ON sync_queue (discovery_id)",
                "CREATE INDEX IF NOT EXISTS idx_sync_queue_claim ON sync_queue (claim_token)",
            ] {
                sqlx::query(index).execute(&mut *conn).await?;
            }
        }
        4 => {
            sqlx::query("CREATE TABLE IF NOT EXISTS keeper_sync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                .execute(&mut *conn)
                .await?;
            sqlx::query(
                "INSERT OR IGNORE INTO keeper_sync_meta (key, value)
                 VALUES ('source_id', lower(hex(randomblob(16))))",
            )
            .execute(&mut *conn)
            .await?;
        }
        5 => {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS keeper_plugins (
                     id INTEGER PRIMARY KEY,
                     name TEXT NOT NULL,
                     version TEXT NOT NULL,
                     hash TEXT NOT NULL,
                     source TEXT NOT NULL,
                     status TEXT NOT NULL CHECK (status IN ('active', 'retired', 'rejected')),
                     reason TEXT,
                     recorded_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
                     retired_at DATETIME)",
            )
            .execute(&mut *conn)
            .await?;
            sqlx::query("CREATE INDEX IF NOT EXISTS idx_keeper_plugins_status ON keeper_plugins (status, id)")
                .execute(&mut *conn)
                .await?;
        }
        6 => {
            for statement in queue::sqlite::counter_schema() {
                sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut *conn).await?;
            }
            // Partial indexes: only synced or failed rows are in them, so
            // submitting and claiming pay nothing for them (a sync pays one
            // entry). With `INDEXED BY` in `queue` they keep the
            // API's recent-throughput, failed-list and failed-by-class reads
            // from scanning a large queue.
            for index in [
                "CREATE INDEX IF NOT EXISTS idx_sync_queue_synced_at ON sync_queue (synced_at)
                 WHERE sync_status = 'synced'",
                "CREATE INDEX IF NOT EXISTS idx_sync_queue_failed_recent ON sync_queue (last_sync_attempt, id)
                 WHERE sync_status = 'max_retries_exceeded'",
                "CREATE INDEX IF NOT EXISTS idx_sync_queue_failed_class ON sync_queue (error_class)
                 WHERE sync_status = 'max_retries_exceeded'",
            ] {
                sqlx::query(index).execute(&mut *conn).await?;
            }
        }
        7 => {
            // The options of `/discovery-report` forms between the command
            // and the submission (bot/forms.rs), so a restart loses none.
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS keeper_bot_forms (
                     nonce INTEGER PRIMARY KEY,
                     user_id TEXT NOT NULL,
                     options TEXT NOT NULL,
                     expires_at INTEGER NOT NULL)",
            )
            .execute(&mut *conn)
            .await?;
        }
        8 => {
            // How to reach the reporter of a report from Discord once it is
            // synced, waits long or fails (bot/notices.rs).
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS keeper_bot_notices (
                     discovery_id INTEGER PRIMARY KEY,
                     token TEXT NOT NULL,
                     channel_id TEXT,
                     user_id TEXT NOT NULL,
                     confirmation TEXT NOT NULL,
                     placed INTEGER NOT NULL,
                     created_at INTEGER NOT NULL,
                     told_waiting INTEGER NOT NULL DEFAULT 0)",
            )
            .execute(&mut *conn)
            .await?;
        }
        9 => {
            // From the operating system's CSPRNG (rand's ThreadRng), not SQLite's PRNG.
            let key: [u8; 32] = rand::random();
            sqlx::query("INSERT OR IGNORE INTO keeper_sync_meta (key, value) VALUES ('plugin_cache_key', ?1)")
                .bind(hex::encode(key))
                .execute(&mut *conn)
                .await?;
        }
        10 => {
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS keeper_intake_keys (
                     key TEXT PRIMARY KEY,
                     request_hash TEXT NOT NULL,
                     discovery_id INTEGER NOT NULL,
                     queue_id INTEGER NOT NULL,
                     created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)",
            )
            .execute(&mut *conn)
            .await?;
            sqlx::query("CREATE INDEX IF NOT EXISTS idx_keeper_intake_keys_created ON keeper_intake_keys (created_at)")
                .execute(&mut *conn)
                .await?;
        }
        11 => {
            // Images attached to reports in Discord, kept because Discord's
            // links expire (evidence.rs); the id is the bytes' SHA-256.
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS keeper_evidence (
                     id TEXT PRIMARY KEY,
                     content_type TEXT NOT NULL,
                     bytes BLOB NOT NULL,
                     created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)",
            )
            .execute(&mut *conn)
            .await?;
        }
        12 => {
            // The claim walks pending items in id order and stops after the
            // batch, instead of sorting the whole backlog (queue.rs, claim).
            // The due columns are in the index so the walk never reads the
            // table for items in backoff.
            sqlx::query(
                "CREATE INDEX IF NOT EXISTS idx_sync_queue_pending_fifo
                 ON sync_queue (id, next_retry_after, last_sync_attempt) WHERE sync_status = 'pending'",
            )
            .execute(&mut *conn)
            .await?;
            // Items in flight: few, found by their lease without a scan.
            sqlx::query(
                "CREATE INDEX IF NOT EXISTS idx_sync_queue_syncing_lease
                 ON sync_queue (lease_expires_at) WHERE sync_status = 'syncing'",
            )
            .execute(&mut *conn)
            .await?;
        }
        13 => {
            // A reporter told their report failed keeps their row, so that
            // a moderator's retry that syncs it edits their confirmation
            // (bot/notices.rs). `told_failed` says the present failure was
            // told; a retry (from any path: Discord, API, CLI, a new plugin)
            // takes the item out of `max_retries_exceeded` and the trigger
            // clears the flag, so a later failure is told again, once.
            add_column_if_missing(conn, "keeper_bot_notices", "told_failed", "INTEGER NOT NULL DEFAULT 0").await?;
            sqlx::query(
                "CREATE TRIGGER IF NOT EXISTS keeper_bot_notices_failure_retried
                 AFTER UPDATE OF sync_status ON sync_queue
                 WHEN OLD.sync_status = 'max_retries_exceeded'
                      AND IFNULL(NEW.sync_status, 'pending') <> 'max_retries_exceeded'
                 BEGIN
                     UPDATE keeper_bot_notices SET told_failed = 0
                     WHERE discovery_id = NEW.discovery_id AND told_failed = 1;
                 END",
            )
            .execute(&mut *conn)
            .await?;
        }
        14 => {
            // The memory and time an active plugin was granted (what it
            // declared within the ceilings, else the ceilings; mapper.rs),
            // for `keeper plugin list` and `GET /plugins`. NULL for rejected
            // plugins and for rows written before this migration.
            add_column_if_missing(conn, "keeper_plugins", "memory_mib", "INTEGER").await?;
            add_column_if_missing(conn, "keeper_plugins", "timeout_ms", "INTEGER").await?;
        }
        15 => {
            // Who claimed an item last (`KEEPER_HOST_NAME`, else machine
            // name and process id; queue.rs), kept after it is done: with
            // several hosts on one queue, which one delivered it.
            add_column_if_missing(conn, "sync_queue", "claimed_by", "TEXT").await?;
        }
        16 => {
            // How a plugin became active (registry.rs, `Activation`), and the
            // canary activations with their counts (plugins/canary.rs).
            add_column_if_missing(conn, "keeper_plugins", "activated_by", "TEXT").await?;
            sqlx::query(crate::plugins::canary::SQLITE_TABLE)
                .execute(&mut *conn)
                .await?;
            sqlx::query(crate::plugins::canary::ONE_RUNNING_INDEX)
                .execute(&mut *conn)
                .await?;
        }
        17 => {
            // The bytes of every plugin version that became active, by
            // content hash, so that every process on this store can load the
            // active one (registry.rs; plugins/follow.rs).
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS keeper_plugin_artifacts (
                     hash TEXT PRIMARY KEY,
                     bytes BLOB NOT NULL,
                     stored_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)",
            )
            .execute(&mut *conn)
            .await?;
        }
        18 => {
            // A canary's plugin lives in one host's process: the host and a
            // lease it renews tell the others whether it is still there
            // (plugins/canary.rs).
            for statement in crate::plugins::canary::SQLITE_HOST_COLUMNS {
                sqlx::query(statement).execute(&mut *conn).await?;
            }
        }
        19 => rebuild_sync_queue(conn).await?,
        // Never silently: a listed migration must change something.
        listed => return Err(StoreError::MigrationMissing(listed)),
    }
    Ok(())
}

/// Migration 19: `sync_queue` again, as [`SYNC_QUEUE_REBUILT`], in the
/// steps SQLite documents for a change `ALTER TABLE` cannot make (a new
/// table, the rows copied, the old one dropped, the new one renamed). Its
/// indexes and triggers are made again from their recorded SQL, the
/// counting triggers from this version's (without the `IFNULL`s the old
/// bot's NULL states needed), and the queue depth counted afresh.
async fn rebuild_sync_queue(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    let kept: Vec<String> = sqlx::query_scalar(
        "SELECT sql FROM sqlite_master
         WHERE tbl_name = 'sync_queue' AND type IN ('index', 'trigger') AND sql IS NOT NULL
             AND name NOT LIKE ?1 || '%'
         ORDER BY type, name",
    )
    .bind(queue::sqlite::COUNTER_TRIGGER_PREFIX)
    .fetch_all(&mut *conn)
    .await?;
    // Columns an adopted file has that keeper does not know: kept, as they were.
    let extra: Vec<(String, String)> = sqlx::query_as("SELECT name, type FROM pragma_table_info('sync_queue')")
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .filter(|(name, _): &(String, String)| !SYNC_QUEUE_COPIED.iter().any(|(c, _)| c == name))
        .collect();
    let mut create = SYNC_QUEUE_REBUILT.to_owned();
    let mut into: Vec<String> = SYNC_QUEUE_COPIED.iter().map(|(c, _)| (*c).to_owned()).collect();
    let mut from: Vec<String> = SYNC_QUEUE_COPIED.iter().map(|(_, f)| (*f).to_owned()).collect();
    for (name, decl) in &extra {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        create.push_str(&format!(",\n    {quoted} {decl}"));
        into.push(quoted.clone());
        from.push(quoted);
    }
    create.push(')');
    sqlx::query(sqlx::AssertSqlSafe(create)).execute(&mut *conn).await?;
    let copy = format!(
        "INSERT INTO sync_queue_rebuilt ({}) SELECT {} FROM sync_queue",
        into.join(", "),
        from.join(", ")
    );
    let copied = sqlx::query(sqlx::AssertSqlSafe(copy))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("DROP TABLE sync_queue").execute(&mut *conn).await?;
    sqlx::query("ALTER TABLE sync_queue_rebuilt RENAME TO sync_queue")
        .execute(&mut *conn)
        .await?;
    for statement in kept.into_iter().chain(queue::sqlite::counter_triggers()) {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut *conn).await?;
    }
    for statement in queue::sqlite::DEPTH_FROM_ROWS {
        sqlx::query(statement).execute(&mut *conn).await?;
    }
    tracing::info!(
        items = copied,
        "keeper.db: sync_queue rebuilt with its states and attempts NOT NULL"
    );
    Ok(())
}

async fn columns_of(conn: &mut SqliteConnection, table: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM pragma_table_info(?1)")
        .bind(table)
        .fetch_all(&mut *conn)
        .await
}

async fn add_column_if_missing(
    conn: &mut SqliteConnection,
    table: &'static str,
    column: &'static str,
    decl: &'static str,
) -> Result<(), StoreError> {
    if !columns_of(conn, table).await?.iter().any(|c| c == column) {
        let sql = format!("ALTER TABLE {table} ADD COLUMN {column} {decl}");
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;

    use super::*;

    #[tokio::test]
    async fn a_migration_without_a_step_is_refused_not_skipped() {
        let mut conn = SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite");
        let unlisted = latest_version() + 1;
        match apply(&mut conn, unlisted).await {
            Err(StoreError::MigrationMissing(version)) => assert_eq!(version, unlisted),
            other => panic!("expected MigrationMissing({unlisted}), got {other:?}"),
        }
    }
}
