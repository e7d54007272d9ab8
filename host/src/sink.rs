//! VH-Database: where mapped rows land, exactly once.
//!
//! Each batch checks every mapped row against the table's real columns and
//! writes the batch in ONE transaction together with a ledger row per report
//! (see [`crate::ledger`]). A retry after a crash between that commit and the
//! queue update finds the ledger row and reports the existing id instead of
//! inserting again.
//!
//! While a backlog drains, the connection and what it learnt (the table's
//! columns, the lookup tables, the ledger's readiness, the old bot's rows
//! for backfill) are kept from one batch to the next, so a small batch
//! costs little. They are kept only while the file is the same file
//! (device and inode: a database renamed or replaced is noticed at once,
//! never written behind the operator's back) and re-read when another
//! program changed it (SQLite's `schema_version` and `data_version`). A
//! batch that fails drops them; the worker lets the file go when the queue
//! is empty, so Control Room can replace it between backlogs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row as _};

use crate::config::HavenLocation;
use crate::ledger::{self, Found, LedgerError, LegacyRows};
use crate::mapper::{Lookup, PluginInfo};
use crate::queue::ErrorClass;
use crate::row::{Row, Value};
use crate::sqlite_error::{self, Fault};

/// The VH-Database schema as the Control Room creates it; used only to create
/// the default database on a fresh machine.
const VH_SCHEMA: &str = include_str!("../schema/vh-database.sql");

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("VH-Database not accessible: {0}")]
    Unavailable(String),
    #[error("database is locked (VH-Database {0} is held by another program)")]
    Locked(String),
    #[error("disk full: VH-Database {path} cannot grow ({message}); free space on its disk")]
    Full { path: String, message: String },
    #[error("VH-Database {path} is read-only for keeper ({message}); make the file and its folder writable")]
    ReadOnly { path: String, message: String },
    #[error("schema mismatch: {0}")]
    Schema(String),
}

impl SinkError {
    pub fn class(&self) -> ErrorClass {
        match self {
            SinkError::Unavailable(_) => ErrorClass::Unavailable,
            SinkError::Locked(_) => ErrorClass::Locked,
            SinkError::Full { .. } => ErrorClass::Full,
            SinkError::ReadOnly { .. } => ErrorClass::ReadOnly,
            SinkError::Schema(_) => ErrorClass::Schema,
        }
    }

    /// Classified by SQLite's result code, never by the message text.
    fn from_sql(path: &Path, e: sqlx::Error) -> SinkError {
        let message = sqlite_error::message(&e);
        let path = path.display().to_string();
        match Fault::of(&e) {
            Fault::Busy => SinkError::Locked(path),
            Fault::Full => SinkError::Full { path, message },
            Fault::ReadOnly => SinkError::ReadOnly { path, message },
            Fault::Other => SinkError::Unavailable(format!("{path}: {message}")),
            fault => SinkError::Unavailable(format!("{path}: {} ({message})", fault.describe())),
        }
    }
}

/// How a declared column type constrains the values we write: SQLite would
/// silently convert a wrong type, so we refuse it instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Affinity {
    Integer,
    Text,
    Real,
    Any,
}

impl Affinity {
    /// SQLite's affinity rules (datatype3.html §3.1), NUMERIC and BLOB as Any.
    fn of(decl: &str) -> Affinity {
        let d = decl.to_ascii_uppercase();
        if d.contains("INT") {
            Affinity::Integer
        } else if d.contains("CHAR") || d.contains("CLOB") || d.contains("TEXT") {
            Affinity::Text
        } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
            Affinity::Real
        } else {
            Affinity::Any
        }
    }

    fn accepts(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (_, Value::Null)
                | (Affinity::Any, _)
                | (Affinity::Integer, Value::Integer(_))
                | (Affinity::Text, Value::Text(_))
                | (Affinity::Real, Value::Real(_) | Value::Integer(_))
        )
    }
}

#[derive(Debug, Clone)]
struct TargetColumn {
    affinity: Affinity,
    /// NOT NULL without a default: a row must give it a value.
    required: bool,
}

/// The real `discoveries` table of the database we opened.
#[derive(Debug, Clone)]
pub struct TargetSchema {
    columns: HashMap<String, TargetColumn>,
}

impl TargetSchema {
    /// The `discoveries` table of the VH-Database schema the Control Room
    /// creates (host/schema/vh-database.sql), read from an in-memory copy:
    /// what a plugin is validated against before it may become active.
    pub async fn reference() -> Result<TargetSchema, SinkError> {
        let memory = Path::new(":memory:");
        let mut conn = SqliteConnection::connect("sqlite::memory:")
            .await
            .map_err(|e| SinkError::from_sql(memory, e))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(VH_SCHEMA))
            .execute(&mut conn)
            .await
            .map_err(|e| SinkError::from_sql(memory, e))?;
        read_schema(&mut conn, memory).await
    }

    /// Checks a mapped row against the table: every column known, every
    /// required one present, every value of the declared type.
    pub fn check(&self, row: &Row) -> Result<(), SinkError> {
        let mut seen = std::collections::HashSet::new();
        for (name, value) in &row.0 {
            if &**name == "id" {
                return Err(SinkError::Schema(
                    "the mapped row sets column id, which VH-Database assigns".into(),
                ));
            }
            if !seen.insert(&**name) {
                return Err(SinkError::Schema(format!("the mapped row sets column {name} twice")));
            }
            let column = self
                .columns
                .get(&**name)
                .ok_or_else(|| SinkError::Schema(format!("column {name} missing in VH-Database table discoveries")))?;
            if matches!(value, Value::Real(r) if !r.is_finite()) {
                return Err(SinkError::Schema(format!(
                    "column {name}: the mapped real value is not a finite number"
                )));
            }
            if !column.affinity.accepts(value) {
                return Err(SinkError::Schema(format!(
                    "column {name} holds {:?} values, the mapped value is {}",
                    column.affinity,
                    value.type_name()
                )));
            }
        }
        for (name, column) in &self.columns {
            let given = row.get(name).is_some_and(|v| *v != Value::Null);
            if column.required && !given && name != "id" {
                return Err(SinkError::Schema(format!("required column {name} has no value")));
            }
        }
        Ok(())
    }
}

/// One row to deliver.
pub struct Delivery<'a> {
    pub keeper_discovery_id: i64,
    /// The keeper.db report's identity (see [`crate::delivery::fingerprint`]).
    pub fingerprint: &'a str,
    pub row: &'a Row,
    /// Enqueued by backfill: link to a row the old bot already wrote, if any.
    pub backfill: bool,
}

/// Where a delivered row is in VH-Database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub haven_id: i64,
    /// Found in the ledger (an earlier attempt wrote it) or linked to an
    /// old bot's row, rather than inserted now.
    pub already_there: bool,
    /// The ledger held ANOTHER report under this discovery id (keeper.db
    /// restored or replaced), delivered to this VH-Database row: this one
    /// was inserted as new.
    pub replaced: Option<i64>,
}

/// Opens VH-Database for each batch according to the configured location,
/// reusing the last batch's connection while that is safe (module docs).
#[derive(Debug, Clone)]
pub struct Sink {
    location: HavenLocation,
    busy_timeout: Duration,
    /// The last good batch's connection, given back by [`Sink::keep`].
    warm: Arc<Mutex<Option<Haven>>>,
}

/// An open VH-Database for one batch, and what was read from it.
#[derive(Debug)]
pub struct Haven {
    conn: SqliteConnection,
    path: PathBuf,
    /// Shared with the batch mapped while this connection writes another.
    schema: Arc<TargetSchema>,
    /// The file it was opened as (see [`file_identity`]).
    identity: Option<FileIdentity>,
    /// `PRAGMA schema_version` / `data_version` when last checked.
    schema_version: i64,
    data_version: i64,
    lookup: Option<Arc<Lookup>>,
    /// The ledger table exists at this build's version.
    ledger_ready: bool,
    legacy: Option<LegacyRows>,
}

impl Sink {
    pub fn new(location: HavenLocation, busy_timeout: Duration) -> Sink {
        Sink {
            location,
            busy_timeout,
            warm: Arc::new(Mutex::new(None)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.location.path
    }

    /// VH-Database for one batch: the last batch's connection when the file
    /// is the same one, re-reading what another program changed; otherwise
    /// a fresh connection.
    pub async fn open(&self) -> Result<Haven, SinkError> {
        let warm = self.warm.lock().ok().and_then(|mut w| w.take());
        if let Some(mut haven) = warm
            && haven.identity.is_some()
            && haven.identity == file_identity(&self.location.path)
            && haven.refresh().await.is_ok()
        {
            return Ok(haven);
        }
        self.open_fresh().await
    }

    /// Gives a batch's connection back for the next batch (call only after
    /// a batch that went through: a failed one is dropped instead).
    pub fn keep(&self, haven: Haven) {
        if let Ok(mut warm) = self.warm.lock() {
            *warm = Some(haven);
        }
    }

    /// Closes the kept connection (the queue is empty): Control Room may
    /// then replace or move the file, which an open handle prevents on Windows.
    pub fn release(&self) {
        if let Ok(mut warm) = self.warm.lock() {
            *warm = None;
        }
    }

    async fn open_fresh(&self) -> Result<Haven, SinkError> {
        let path = &self.location.path;
        let create = self.location.create_if_missing && !path.exists();
        if create && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| SinkError::Unavailable(format!("cannot create {}: {e}", dir.display())))?;
        }
        let options = self.connect_options(create)?.create_if_missing(create);
        let mut conn = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| SinkError::from_sql(path, e))?;
        if create {
            sqlx::raw_sql(sqlx::AssertSqlSafe(VH_SCHEMA))
                .execute(&mut conn)
                .await
                .map_err(|e| SinkError::from_sql(path, e))?;
            tracing::info!(path = %path.display(), "created VH-Database with the Control Room schema");
        }
        let schema = Arc::new(read_schema(&mut conn, path).await?);
        let (schema_version, data_version) = versions(&mut conn).await.map_err(|e| SinkError::from_sql(path, e))?;
        Ok(Haven {
            conn,
            path: path.clone(),
            schema,
            identity: file_identity(path),
            schema_version,
            data_version,
            lookup: None,
            ledger_ready: false,
            legacy: None,
        })
    }
}

/// What tells one file at a path from another put there later.
type FileIdentity = (u64, u64);

/// The file's device and inode: a file renamed over VH-Database, or a new
/// one restored in its place, has another.
#[cfg(unix)]
fn file_identity(path: &Path) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// On Windows an open SQLite file can be neither renamed over nor deleted
/// (SQLite does not open it with FILE_SHARE_DELETE), so while the kept
/// connection is open the file at the path is the one it has open; only
/// its presence is checked.
#[cfg(not(unix))]
fn file_identity(path: &Path) -> Option<FileIdentity> {
    path.is_file().then_some((0, 0))
}

/// `PRAGMA schema_version` (any schema change, ours included) and
/// `PRAGMA data_version` (changes only when another connection committed).
async fn versions(conn: &mut SqliteConnection) -> Result<(i64, i64), sqlx::Error> {
    let schema: i64 = sqlx::query_scalar("PRAGMA schema_version")
        .fetch_one(&mut *conn)
        .await?;
    let data: i64 = sqlx::query_scalar("PRAGMA data_version").fetch_one(&mut *conn).await?;
    Ok((schema, data))
}

impl Sink {
    /// How every connection to VH-Database is made. A file that is missing
    /// (and not about to be created) is refused before SQLite would create it.
    fn connect_options(&self, creating: bool) -> Result<SqliteConnectOptions, SinkError> {
        let path = &self.location.path;
        if !creating && !path.is_file() {
            return Err(SinkError::Unavailable(format!("{}: no such file", path.display())));
        }
        Ok(SqliteConnectOptions::from_str("sqlite:")
            .map_err(|e| SinkError::Unavailable(e.to_string()))?
            .filename(path)
            .busy_timeout(self.busy_timeout)
            // The Control Room's own settings, not ours: sqlx leaves the
            // journal mode alone; foreign keys stay off as in Python's sqlite3.
            .foreign_keys(false))
    }

    /// A read-only connection for lookups outside a batch (the bot's
    /// autocomplete). Never creates the file: a missing VH-Database has no
    /// names to suggest, and creating it is the worker's decision.
    async fn open_read_only(&self) -> Result<SqliteConnection, SinkError> {
        let path = &self.location.path;
        let options = self.connect_options(false)?.read_only(true);
        SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| SinkError::from_sql(path, e))
    }

    /// VH-Database's `discoveries` row `id`, as stored (`None`: no such
    /// row, e.g. deleted in Control Room): what the console shows of the row
    /// an item became. Read-only; never creates the file.
    pub async fn discovery_row(&self, id: i64) -> Result<Option<Row>, SinkError> {
        let mut conn = self.open_read_only().await?;
        let row = sqlx::query("SELECT * FROM discoveries WHERE id = ?1")
            .bind(id)
            .fetch_optional(&mut conn)
            .await
            .map_err(|e| SinkError::from_sql(self.path(), e))?;
        row.map(|r| crate::row::read_row(&r))
            .transpose()
            .map_err(|e| SinkError::Unavailable(format!("{}: discoveries row {id}: {e}", self.path().display())))
    }

    /// Every star system's name, for the bot to match and suggest from
    /// (accent- and case-insensitive matching is done in Rust: SQLite's
    /// `lower` only knows ASCII).
    pub async fn system_names(&self) -> Result<Vec<String>, SinkError> {
        let mut conn = self.open_read_only().await?;
        sqlx::query_scalar("SELECT name FROM systems WHERE name IS NOT NULL ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| SinkError::from_sql(self.path(), e))
    }

    /// The planets and moons of the system stored as `system`, as
    /// `planet:NAME` / `moon:NAME` (the report's location syntax), planets first.
    pub async fn places_of(&self, system: &str) -> Result<Vec<String>, SinkError> {
        let mut conn = self.open_read_only().await?;
        sqlx::query_scalar(
            "SELECT place FROM (
                 SELECT 'planet:' || p.name AS place, 0 AS rank
                 FROM planets p JOIN systems s ON s.id = p.system_id WHERE s.name = ?1
                 UNION ALL
                 SELECT 'moon:' || m.name, 1
                 FROM moons m JOIN planets p ON p.id = m.planet_id JOIN systems s ON s.id = p.system_id
                 WHERE s.name = ?1)
             WHERE place IS NOT NULL
             ORDER BY rank, place",
        )
        .bind(system)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| SinkError::from_sql(self.path(), e))
    }
}

async fn read_schema(conn: &mut SqliteConnection, path: &Path) -> Result<TargetSchema, SinkError> {
    let rows =
        sqlx::query("SELECT name, type, \"notnull\" AS nn, dflt_value, pk FROM pragma_table_info('discoveries')")
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| SinkError::from_sql(path, e))?;
    if rows.is_empty() {
        return Err(SinkError::Schema(format!(
            "{} has no discoveries table",
            path.display()
        )));
    }
    let mut columns = HashMap::new();
    for row in rows {
        let get = |e: sqlx::Error| SinkError::Schema(format!("cannot read the discoveries table: {e}"));
        let name: String = row.try_get("name").map_err(get)?;
        let decl: String = row.try_get("type").map_err(get)?;
        let not_null: i64 = row.try_get("nn").map_err(get)?;
        let default: Option<String> = row.try_get("dflt_value").map_err(get)?;
        let pk: i64 = row.try_get("pk").map_err(get)?;
        columns.insert(
            name,
            TargetColumn {
                affinity: Affinity::of(&decl),
                required: not_null != 0 && default.is_none() && pk == 0,
            },
        );
    }
    Ok(TargetSchema { columns })
}

impl Haven {
    pub fn schema(&self) -> &TargetSchema {
        &self.schema
    }

    /// The table's columns, to check rows mapped while this connection
    /// writes another batch.
    pub fn shared_schema(&self) -> Arc<TargetSchema> {
        self.schema.clone()
    }

    fn sql_err(&self, e: sqlx::Error) -> SinkError {
        SinkError::from_sql(&self.path, e)
    }

    /// Forgets what another program may have changed since the last batch:
    /// the columns and the ledger's state after a schema change, the lookup
    /// tables and the old bot's rows after any change.
    async fn refresh(&mut self) -> Result<(), SinkError> {
        let (schema_version, data_version) = versions(&mut self.conn).await.map_err(|e| self.sql_err(e))?;
        if schema_version != self.schema_version {
            self.schema = Arc::new(read_schema(&mut self.conn, &self.path).await?);
            self.ledger_ready = false;
            self.schema_version = schema_version;
        }
        if data_version != self.data_version {
            self.lookup = None;
            self.legacy = None;
            self.data_version = data_version;
        }
        Ok(())
    }

    /// The lookup tables for a batch: read once, then shared by the batches
    /// that follow while no other program changes the file.
    pub async fn shared_lookup(&mut self) -> Result<Arc<Lookup>, SinkError> {
        if let Some(lookup) = &self.lookup {
            return Ok(lookup.clone());
        }
        let lookup = Arc::new(self.lookup().await?);
        self.lookup = Some(lookup.clone());
        Ok(lookup)
    }

    /// The lookup tables as they are now.
    pub async fn lookup(&mut self) -> Result<Lookup, SinkError> {
        let systems: Vec<(String, String)> = sqlx::query_as("SELECT CAST(id AS TEXT), name FROM systems")
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| self.sql_err(e))?;
        let planets: Vec<(i64, String, String)> =
            sqlx::query_as("SELECT id, CAST(system_id AS TEXT), name FROM planets")
                .fetch_all(&mut self.conn)
                .await
                .map_err(|e| self.sql_err(e))?;
        let moons: Vec<(i64, i64, String)> = sqlx::query_as("SELECT id, planet_id, name FROM moons")
            .fetch_all(&mut self.conn)
            .await
            .map_err(|e| self.sql_err(e))?;
        Ok(Lookup::new(systems, planets, moons))
    }

    /// Writes checked rows in one transaction with their ledger rows; returns
    /// where each one is, in input order. All or nothing.
    pub async fn write(
        &mut self,
        source_id: &str,
        plugin: &PluginInfo,
        deliveries: &[Delivery<'_>],
    ) -> Result<Vec<Written>, SinkError> {
        let path = self.path.clone();
        let err = |e: sqlx::Error| SinkError::from_sql(&path, e);
        let mut tx = self.conn.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
        if !self.ledger_ready {
            ledger::ensure(&mut tx).await.map_err(|e| match e {
                LedgerError::Sql(e) => err(e),
                newer @ LedgerError::Newer(_) => SinkError::Schema(format!("{}: {newer}", path.display())),
            })?;
        }
        if self.legacy.is_none() && deliveries.iter().any(|d| d.backfill) {
            self.legacy = Some(LegacyRows::load(&mut tx).await.map_err(err)?);
        }
        let queries: Vec<ledger::Query> = deliveries
            .iter()
            .map(|d| ledger::Query {
                keeper_discovery_id: d.keeper_discovery_id,
                fingerprint: d.fingerprint,
                row: d.row,
            })
            .collect();
        let found = ledger::find(&mut tx, source_id, &queries).await.map_err(err)?;

        // Where each delivery ends up; rows to insert are grouped by their
        // column list so that a batch costs one INSERT per distinct shape
        // (one, for a plugin that always sets the same columns).
        let mut written: Vec<Option<Written>> = vec![None; deliveries.len()];
        let mut shapes: Vec<(Vec<&str>, Vec<usize>)> = Vec::new();
        // Old bot rows linked in this batch (their ledger rows come later).
        let mut linked: HashSet<i64> = HashSet::new();
        // The same report twice in one batch (two queue rows for one
        // discovery) is written once; the later ones point at that row.
        let mut first_of: HashMap<(i64, &str), usize> = HashMap::new();
        let mut repeats: Vec<(usize, usize)> = Vec::new();
        for (i, delivery) in deliveries.iter().enumerate() {
            let replaced = match found[i] {
                Found::Delivered(haven_id) => {
                    written[i] = Some(Written {
                        haven_id,
                        already_there: true,
                        replaced: None,
                    });
                    continue;
                }
                Found::Replaced(other) => Some(other),
                Found::New => None,
            };
            if let Some(&first) = first_of.get(&(delivery.keeper_discovery_id, delivery.fingerprint)) {
                repeats.push((i, first));
                continue;
            }
            first_of.insert((delivery.keeper_discovery_id, delivery.fingerprint), i);
            if delivery.backfill
                && let Some(legacy) = &self.legacy
                && let Some(haven_id) = legacy.find(&mut tx, delivery.row, &linked).await.map_err(err)?
            {
                linked.insert(haven_id);
                written[i] = Some(Written {
                    haven_id,
                    already_there: true,
                    replaced,
                });
                continue;
            }
            // Provisional: the insert below gives the id.
            written[i] = Some(Written {
                haven_id: 0,
                already_there: false,
                replaced,
            });
            let columns: Vec<&str> = delivery.row.0.iter().map(|(n, _)| &**n).collect();
            match shapes.iter_mut().find(|(c, _)| *c == columns) {
                Some((_, members)) => members.push(i),
                None => shapes.push((columns, vec![i])),
            }
        }
        for (columns, members) in &shapes {
            let rows: Vec<&Row> = members.iter().map(|&i| deliveries[i].row).collect();
            let ids = insert_rows(&mut tx, columns, &rows).await.map_err(err)?;
            if ids.len() != members.len() {
                return Err(SinkError::Unavailable(format!(
                    "{}: an insert returned {} ids for {} rows",
                    path.display(),
                    ids.len(),
                    members.len()
                )));
            }
            for (&i, haven_id) in members.iter().zip(ids) {
                if let Some(w) = written[i].as_mut() {
                    w.haven_id = haven_id;
                }
            }
        }
        for &(i, first) in &repeats {
            written[i] = written[first].map(|w| Written {
                already_there: true,
                replaced: None,
                ..w
            });
        }
        let written: Vec<Written> = written
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| SinkError::Unavailable(format!("{}: a delivery got no VH-Database row", path.display())))?;

        let repeated: HashSet<usize> = repeats.iter().map(|&(i, _)| i).collect();
        let entries: Vec<ledger::Entry> = deliveries
            .iter()
            .zip(&written)
            .enumerate()
            .filter(|(i, _)| !matches!(found[*i], Found::Delivered(_)) && !repeated.contains(i))
            .map(|(_, (d, w))| ledger::Entry {
                keeper_discovery_id: d.keeper_discovery_id,
                fingerprint: d.fingerprint,
                haven_id: w.haven_id,
                linked: w.already_there,
            })
            .collect();
        let writer = ledger::Writer {
            source_id,
            plugin_name: &plugin.name,
            plugin_version: &plugin.version,
            plugin_hash: &plugin.hash,
        };
        ledger::record(&mut tx, &writer, &entries).await.map_err(err)?;
        tx.commit().await.map_err(err)?;
        if !self.ledger_ready {
            // Creating or upgrading the ledger changed the schema version:
            // ours, so nothing to re-read next batch.
            self.schema_version = versions(&mut self.conn).await.map_err(err)?.0;
            self.ledger_ready = true;
        }
        if let Some(legacy) = self.legacy.as_mut() {
            legacy.forget(&linked);
        }
        for (d, w) in deliveries.iter().zip(&written) {
            if let Some(other) = w.replaced {
                tracing::warn!(
                    path = %path.display(),
                    source_id,
                    keeper_discovery_id = d.keeper_discovery_id,
                    haven_id = w.haven_id,
                    other_report_haven_id = other,
                    "keeper.db restored or replaced: its discovery id was delivered before as another report; \
                     this report was written as new"
                );
            }
        }
        Ok(written)
    }
}

/// Inserts rows that all set `columns`, in one statement; returns their ids
/// in input order. The values travel as one JSON array of arrays: `->>`
/// gives back each value with its SQLite type (NULL, INTEGER, REAL, TEXT).
async fn insert_rows(conn: &mut SqliteConnection, columns: &[&str], rows: &[&Row]) -> Result<Vec<i64>, sqlx::Error> {
    if columns.is_empty() {
        let mut ids = Vec::with_capacity(rows.len());
        for _ in rows {
            ids.push(
                sqlx::query_scalar("INSERT INTO discoveries DEFAULT VALUES RETURNING id")
                    .fetch_one(&mut *conn)
                    .await?,
            );
        }
        return Ok(ids);
    }
    let names: Vec<String> = columns.iter().map(|n| format!("\"{n}\"")).collect();
    let values: Vec<String> = (0..columns.len()).map(|i| format!("value ->> {i}")).collect();
    // Column names were checked against PRAGMA table_info, so only real
    // column names reach this string; the values are one bound parameter.
    let sql = format!(
        "INSERT INTO discoveries ({}) SELECT {} FROM json_each(?1) ORDER BY key RETURNING id",
        names.join(", "),
        values.join(", ")
    );
    // Written straight into one string: no JSON value built per row.
    let payload =
        serde_json::to_string(&crate::row::ValuesAsJson(rows)).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(payload)
        .fetch_all(&mut *conn)
        .await?;
    // Rows are inserted in `key` order inside one write transaction, so
    // their ids ascend in input order (RETURNING itself promises no order).
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/VH-Database.sample.db");

    fn sink_at(path: &Path) -> Sink {
        let location = HavenLocation {
            path: path.to_path_buf(),
            create_if_missing: false,
            search: Default::default(),
        };
        Sink::new(location, Duration::from_secs(5))
    }

    async fn other_connection(path: &Path) -> SqliteConnection {
        SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(path))
            .await
            .expect("second connection")
    }

    /// A VH-Database restored in place of the one a kept connection has open
    /// (a file renamed over it) gets a fresh connection: nothing is written
    /// to the old, unlinked file.
    #[tokio::test]
    async fn a_kept_connection_is_not_used_for_a_file_put_in_its_place() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("VH-Database.db");
        std::fs::copy(SAMPLE, &path).expect("copy sample");
        let sink = sink_at(&path);
        let haven = sink.open().await.expect("open");
        sink.keep(haven);

        let restored = dir.path().join("restored.db");
        std::fs::copy(SAMPLE, &restored).expect("copy sample");
        std::fs::rename(&restored, &path).expect("restore over it");
        let mut haven = sink.open().await.expect("open again");
        sqlx::query("CREATE TABLE written_here (x)")
            .execute(&mut haven.conn)
            .await
            .expect("write");
        let mut check = other_connection(&path).await;
        let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_schema WHERE name = 'written_here'")
            .fetch_one(&mut check)
            .await
            .expect("read");
        assert_eq!(found, 1, "the write went to the file that was replaced");
    }

    /// What another program changes (a new system, a new column) is seen by
    /// the next batch on a kept connection.
    #[tokio::test]
    async fn a_kept_connection_sees_what_another_program_changed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("VH-Database.db");
        std::fs::copy(SAMPLE, &path).expect("copy sample");
        let sink = sink_at(&path);
        let mut haven = sink.open().await.expect("open");
        let before = haven.shared_lookup().await.expect("lookup");
        assert_eq!(before.find_system("Kept Test System"), None);
        sink.keep(haven);

        let mut control_room = other_connection(&path).await;
        sqlx::query(
            "INSERT INTO systems (id, name, x, y, z, region) VALUES ('kept-test', 'Kept Test System', 0, 0, 0, 'Test')",
        )
        .execute(&mut control_room)
        .await
        .expect("insert system");
        sqlx::query("ALTER TABLE discoveries ADD COLUMN added_later TEXT")
            .execute(&mut control_room)
            .await
            .expect("add column");

        let mut haven = sink.open().await.expect("open again");
        let after = haven.shared_lookup().await.expect("lookup");
        assert_eq!(after.find_system("Kept Test System").as_deref(), Some("kept-test"));
        assert!(haven.schema().columns.contains_key("added_later"));

        // Unchanged since: the same lookup is shared, not read again.
        sink.keep(haven);
        let mut haven = sink.open().await.expect("open a third time");
        assert!(Arc::ptr_eq(&after, &haven.shared_lookup().await.expect("lookup")));
    }

    /// A VH-Database that cannot grow or cannot be written is named as such,
    /// not as "not accessible".
    #[tokio::test]
    async fn full_and_read_only_are_not_called_unavailable() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.expect("memory db");
        sqlx::raw_sql("CREATE TABLE t (x TEXT); PRAGMA max_page_count = 2")
            .execute(&mut conn)
            .await
            .expect("setup");
        let full = sqlx::query("INSERT INTO t SELECT hex(randomblob(5000))")
            .execute(&mut conn)
            .await
            .expect_err("full");
        let error = SinkError::from_sql(Path::new("/data/VH-Database.db"), full);
        assert_eq!(error.class(), ErrorClass::Full);
        let text = error.to_string();
        assert!(
            text.starts_with("disk full: VH-Database /data/VH-Database.db"),
            "{text}"
        );

        sqlx::raw_sql("PRAGMA query_only = 1")
            .execute(&mut conn)
            .await
            .expect("query_only");
        let read_only = sqlx::query("INSERT INTO t VALUES ('x')")
            .execute(&mut conn)
            .await
            .expect_err("read-only");
        let error = SinkError::from_sql(Path::new("/data/VH-Database.db"), read_only);
        assert_eq!(error.class(), ErrorClass::ReadOnly);
        let text = error.to_string();
        assert!(
            text.starts_with("VH-Database /data/VH-Database.db is read-only"),
            "{text}"
        );
        assert!(!text.contains("not accessible"), "{text}");
    }

    fn row(extra: (&str, Value)) -> Row {
        let text = |s: &str| Value::Text(s.to_owned());
        Row(vec![
            ("discovery_type".into(), text("💎")),
            ("description".into(), text("A vein")),
            ("location_type".into(), text("planet")),
            (extra.0.into(), extra.1),
        ])
    }

    #[tokio::test]
    async fn check_refuses_unknown_columns_wrong_types_and_non_finite_reals() {
        let schema = TargetSchema::reference().await.expect("reference schema");
        assert!(schema.check(&row(("significance", Value::Text("High".into())))).is_ok());
        let refused = |extra| schema.check(&row(extra)).expect_err("refused").to_string();
        assert!(refused(("no_such_column", Value::Null)).contains("column no_such_column missing"));
        assert!(refused(("pattern_matches", Value::Text("many".into()))).contains("pattern_matches"));
        assert!(refused(("significance", Value::Real(f64::NAN))).contains("not a finite number"));
        assert!(refused(("significance", Value::Real(f64::INFINITY))).contains("not a finite number"));
    }
}
