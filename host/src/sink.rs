//! VH-Database: where mapped rows land, exactly once.
//!
//! Each batch opens the file afresh (a renamed or deleted database is noticed
//! at once, never written behind the operator's back), checks every mapped row
//! against the table's real columns, and writes the batch in ONE transaction
//! together with a ledger row per discovery (`keeper_sync_ledger`). A retry
//! after a crash between that commit and the queue update finds the ledger
//! row and reports the existing id instead of inserting again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Row as _};

use crate::config::HavenLocation;
use crate::mapper::{Lookup, PluginInfo};
use crate::queue::ErrorClass;
use crate::row::{Row, Value};

/// The VH-Database schema as the Control Room creates it; used only to create
/// the default database on a fresh machine.
const VH_SCHEMA: &str = include_str!("../schema/vh-database.sql");

const LEDGER_TABLE: &str = "CREATE TABLE IF NOT EXISTS keeper_sync_ledger (
    source_id TEXT NOT NULL,
    keeper_discovery_id INTEGER NOT NULL,
    haven_discovery_id INTEGER NOT NULL,
    plugin_name TEXT,
    plugin_version TEXT,
    plugin_hash TEXT,
    linked INTEGER NOT NULL DEFAULT 0,
    written_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (source_id, keeper_discovery_id))";

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("VH-Database not accessible: {0}")]
    Unavailable(String),
    #[error("database is locked (VH-Database {0} is held by another program)")]
    Locked(String),
    #[error("schema mismatch: {0}")]
    Schema(String),
}

impl SinkError {
    pub fn class(&self) -> ErrorClass {
        match self {
            SinkError::Unavailable(_) => ErrorClass::Unavailable,
            SinkError::Locked(_) => ErrorClass::Locked,
            SinkError::Schema(_) => ErrorClass::Schema,
        }
    }

    fn from_sql(path: &Path, e: sqlx::Error) -> SinkError {
        let text = e.to_string();
        if text.contains("database is locked")
            || text.contains("database table is locked")
            || text.contains("SQLITE_BUSY")
        {
            SinkError::Locked(path.display().to_string())
        } else {
            SinkError::Unavailable(format!("{}: {text}", path.display()))
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
            if name == "id" {
                return Err(SinkError::Schema(
                    "the mapped row sets column id, which VH-Database assigns".into(),
                ));
            }
            if !seen.insert(name.as_str()) {
                return Err(SinkError::Schema(format!("the mapped row sets column {name} twice")));
            }
            let column = self
                .columns
                .get(name)
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
}

/// Opens VH-Database per batch according to the configured location.
#[derive(Debug, Clone)]
pub struct Sink {
    location: HavenLocation,
    busy_timeout: Duration,
}

/// An open VH-Database for the duration of one batch.
pub struct Haven {
    conn: SqliteConnection,
    path: PathBuf,
    schema: TargetSchema,
}

impl Sink {
    pub fn new(location: HavenLocation, busy_timeout: Duration) -> Sink {
        Sink { location, busy_timeout }
    }

    pub fn path(&self) -> &Path {
        &self.location.path
    }

    pub async fn open(&self) -> Result<Haven, SinkError> {
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
        let schema = read_schema(&mut conn, path).await?;
        Ok(Haven {
            conn,
            path: path.clone(),
            schema,
        })
    }
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

    fn sql_err(&self, e: sqlx::Error) -> SinkError {
        SinkError::from_sql(&self.path, e)
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
        sqlx::query(LEDGER_TABLE).execute(&mut *tx).await.map_err(err)?;

        let ids: Vec<i64> = deliveries.iter().map(|d| d.keeper_discovery_id).collect();
        let known: HashMap<i64, i64> = sqlx::query_as(
            "SELECT keeper_discovery_id, haven_discovery_id FROM keeper_sync_ledger
             WHERE source_id = ?1 AND keeper_discovery_id IN (SELECT value FROM json_each(?2))",
        )
        .bind(source_id)
        .bind(json!(ids).to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(err)?
        .into_iter()
        .collect();

        // Where each delivery ends up; rows to insert are grouped by their
        // column list so that a batch costs one INSERT per distinct shape
        // (one, for a plugin that always sets the same columns).
        let mut written: Vec<Option<Written>> = vec![None; deliveries.len()];
        let mut shapes: Vec<(Vec<&str>, Vec<usize>)> = Vec::new();
        for (i, delivery) in deliveries.iter().enumerate() {
            if let Some(&haven_id) = known.get(&delivery.keeper_discovery_id) {
                written[i] = Some(Written {
                    haven_id,
                    already_there: true,
                });
                continue;
            }
            if delivery.backfill
                && let Some(haven_id) = find_legacy_copy(&mut tx, delivery.row).await.map_err(err)?
            {
                written[i] = Some(Written {
                    haven_id,
                    already_there: true,
                });
                continue;
            }
            let columns: Vec<&str> = delivery.row.0.iter().map(|(n, _)| n.as_str()).collect();
            match shapes.iter_mut().find(|(c, _)| *c == columns) {
                Some((_, members)) => members.push(i),
                None => shapes.push((columns, vec![i])),
            }
        }
        for (columns, members) in &shapes {
            let rows: Vec<&Row> = members.iter().map(|&i| deliveries[i].row).collect();
            let ids = insert_rows(&mut tx, columns, &rows).await.map_err(err)?;
            for (&i, haven_id) in members.iter().zip(ids) {
                written[i] = Some(Written {
                    haven_id,
                    already_there: false,
                });
            }
        }
        let written: Vec<Written> = written
            .into_iter()
            .collect::<Option<_>>()
            .ok_or_else(|| SinkError::Unavailable(format!("{}: an insert returned too few ids", path.display())))?;
        let ledger: Vec<serde_json::Value> = deliveries
            .iter()
            .zip(&written)
            .filter(|(d, _)| !known.contains_key(&d.keeper_discovery_id))
            .map(|(d, w)| json!([d.keeper_discovery_id, w.haven_id, w.already_there]))
            .collect();
        if !ledger.is_empty() {
            sqlx::query(
                "INSERT INTO keeper_sync_ledger (source_id, keeper_discovery_id, haven_discovery_id,
                     plugin_name, plugin_version, plugin_hash, linked)
                 SELECT ?1, value ->> 0, value ->> 1, ?3, ?4, ?5, value ->> 2 FROM json_each(?2)",
            )
            .bind(source_id)
            .bind(serde_json::Value::Array(ledger).to_string())
            .bind(&plugin.name)
            .bind(&plugin.version)
            .bind(&plugin.hash)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)?;
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
    let payload: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| serde_json::Value::Array(row.0.iter().map(|(_, v)| v.to_json()).collect()))
        .collect();
    let mut ids: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(serde_json::Value::Array(payload).to_string())
        .fetch_all(&mut *conn)
        .await?;
    // Rows are inserted in `key` order inside one write transaction, so
    // their ids ascend in input order (RETURNING itself promises no order).
    ids.sort_unstable();
    Ok(ids)
}

/// A row the old bot wrote for the same report: same reporter, same time of
/// report, same description, and not yet claimed by any ledger row.
async fn find_legacy_copy(conn: &mut SqliteConnection, row: &Row) -> Result<Option<i64>, sqlx::Error> {
    let (Some(description), Some(timestamp)) = (row.text("description"), row.text("submission_timestamp")) else {
        return Ok(None);
    };
    sqlx::query_scalar(
        "SELECT id FROM discoveries
         WHERE discord_user_id IS ?1 AND submission_timestamp = ?2 AND description = ?3
           AND id NOT IN (SELECT haven_discovery_id FROM keeper_sync_ledger)
         ORDER BY id LIMIT 1",
    )
    .bind(row.text("discord_user_id"))
    .bind(timestamp)
    .bind(description)
    .fetch_optional(&mut *conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
