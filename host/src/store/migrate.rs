//! `keeper migrate-store --to postgres://…`: an existing keeper.db moved
//! into a PostgreSQL store, so that hosts on `KEEPER_DATABASE_URL` go on
//! where the keeper.db left off.
//!
//! - keeper.db is only read: opened read-only (`Access::Read`), so one that
//!   is missing, not a keeper.db or not migrated yet is refused untouched.
//! - Everything is copied in ONE PostgreSQL transaction, so a refusal or a
//!   failure midway leaves the target as it was.
//! - Ids are kept, so that VH-Database's ledger (source id, discovery id,
//!   fingerprint) still recognises every report delivered before the move;
//!   the keeper.db's source id becomes the store's. The identity sequences
//!   are advanced past the copied ids, so new reports never take one.
//! - Running it again copies only what is missing (`ON CONFLICT DO
//!   NOTHING`); a row already there with other content (another keeper's
//!   data under the same id) is refused, naming the table and the id.
//! - Afterwards the keeper.db rows found in the target are counted per
//!   table and must be all of them.
//!
//! Not copied: the `depth` counters, which the PostgreSQL queue counts from
//! the queue itself.

use std::path::Path;

use sqlx::{PgConnection, Row as _, SqlitePool};

use super::{Access, Store, StoreError, postgres};
use crate::db::Db;
use crate::delivery::{IDENTITY_COLUMNS, fingerprint};
use crate::row::{Row, Value, read_row};

/// Rows read from keeper.db and sent to PostgreSQL at a time.
const CHUNK: i64 = 2_000;

/// Taken for the copy's transaction, so two copies into one store take turns.
const COPY_LOCK: i64 = 0x6b65_6570_6d76;

/// One table copied row for row, its key kept.
struct Table {
    name: &'static str,
    /// The primary key, in PostgreSQL and in keeper.db.
    key: &'static str,
    /// keeper.db's columns (a blob as hex text), after `rowid`.
    select: &'static str,
    /// PostgreSQL column, and its value from the keeper.db row `v` (JSON).
    columns: &'static [(&'static str, &'static str)],
    /// Columns that say whose row it is: one already in the target that
    /// differs in any of them belongs to someone else.
    compared: &'static [&'static str],
}

/// keeper.db's times are UTC text (`YYYY-MM-DD HH:MM:SS[.SSS]`).
macro_rules! utc {
    ($column:literal) => {
        concat!("(NULLIF(v ->> '", $column, "', ''))::timestamp AT TIME ZONE 'UTC'")
    };
}

/// As [`utc!`], for a column PostgreSQL requires: now when keeper.db has none.
macro_rules! utc_or_now {
    ($column:literal) => {
        concat!(
            "COALESCE((NULLIF(v ->> '",
            $column,
            "', ''))::timestamp AT TIME ZONE 'UTC', now())"
        )
    };
}

/// In the order they refer to each other.
const TABLES: &[Table] = &[
    Table {
        name: "discoveries",
        key: "id",
        select: "*",
        columns: &[
            ("id", "(v ->> 'id')::bigint"),
            ("user_id", "v ->> 'user_id'"),
            ("username", "v ->> 'username'"),
            ("guild_id", "v ->> 'guild_id'"),
            ("discovery_type", "v ->> 'discovery_type'"),
            ("location", "v ->> 'location'"),
            ("time_period", "v ->> 'time_period'"),
            ("condition", "v ->> 'condition'"),
            ("description", "v ->> 'description'"),
            ("significance", "v ->> 'significance'"),
            ("evidence_url", "v ->> 'evidence_url'"),
            ("related_discoveries", "v ->> 'related_discoveries'"),
            ("coordinates", "v ->> 'coordinates'"),
            ("planet_name", "v ->> 'planet_name'"),
            ("galaxy_name", "v ->> 'galaxy_name'"),
            ("submission_timestamp", utc_or_now!("submission_timestamp")),
            ("analysis_status", "v ->> 'analysis_status'"),
            ("pattern_matches", "(v ->> 'pattern_matches')::bigint"),
            ("mystery_tier", "(v ->> 'mystery_tier')::bigint"),
            ("tags", "v ->> 'tags'"),
            ("metadata", "v ->> 'metadata'"),
            ("system_name", "v ->> 'system_name'"),
        ],
        compared: &[
            "user_id",
            "username",
            "discovery_type",
            "location",
            "description",
            "system_name",
        ],
    },
    Table {
        name: "sync_queue",
        key: "id",
        select: "*",
        columns: &[
            ("id", "(v ->> 'id')::bigint"),
            ("discovery_id", "(v ->> 'discovery_id')::bigint"),
            ("sync_status", "COALESCE(v ->> 'sync_status', 'pending')"),
            ("sync_attempts", "COALESCE((v ->> 'sync_attempts')::bigint, 0)"),
            ("max_attempts", "COALESCE((v ->> 'max_attempts')::bigint, 10)"),
            ("last_sync_attempt", utc!("last_sync_attempt")),
            ("next_retry_after", utc!("next_retry_after")),
            ("sync_error", "v ->> 'sync_error'"),
            ("haven_discovery_id", "(v ->> 'haven_discovery_id')::bigint"),
            ("created_at", utc_or_now!("created_at")),
            ("synced_at", utc!("synced_at")),
            ("metadata", "(v ->> 'metadata')::jsonb"),
            ("lease_expires_at", utc!("lease_expires_at")),
            ("claim_token", "v ->> 'claim_token'"),
            ("error_class", "v ->> 'error_class'"),
            ("claimed_by", "v ->> 'claimed_by'"),
        ],
        compared: &["discovery_id"],
    },
    Table {
        name: "keeper_plugins",
        key: "id",
        select: "*",
        columns: &[
            ("id", "(v ->> 'id')::bigint"),
            ("name", "v ->> 'name'"),
            ("version", "v ->> 'version'"),
            ("hash", "v ->> 'hash'"),
            ("source", "v ->> 'source'"),
            ("status", "v ->> 'status'"),
            ("reason", "v ->> 'reason'"),
            ("recorded_at", utc_or_now!("recorded_at")),
            ("retired_at", utc!("retired_at")),
            ("memory_mib", "(v ->> 'memory_mib')::bigint"),
            ("timeout_ms", "(v ->> 'timeout_ms')::bigint"),
            ("activated_by", "v ->> 'activated_by'"),
        ],
        compared: &["name", "version", "hash"],
    },
    Table {
        name: "keeper_intake_keys",
        key: "key",
        select: "*",
        columns: &[
            ("key", "v ->> 'key'"),
            ("request_hash", "v ->> 'request_hash'"),
            ("discovery_id", "(v ->> 'discovery_id')::bigint"),
            ("queue_id", "(v ->> 'queue_id')::bigint"),
            ("created_at", utc_or_now!("created_at")),
        ],
        compared: &["request_hash", "discovery_id", "queue_id"],
    },
    Table {
        name: "keeper_evidence",
        key: "id",
        select: "id, content_type, hex(bytes) AS bytes, created_at",
        columns: &[
            ("id", "v ->> 'id'"),
            ("content_type", "v ->> 'content_type'"),
            ("bytes", "decode(v ->> 'bytes', 'hex')"),
            ("created_at", utc_or_now!("created_at")),
        ],
        compared: &["content_type", "bytes"],
    },
    Table {
        name: "keeper_plugin_artifacts",
        key: "hash",
        select: "hash, hex(bytes) AS bytes, stored_at",
        columns: &[
            ("hash", "v ->> 'hash'"),
            ("bytes", "decode(v ->> 'bytes', 'hex')"),
            ("stored_at", utc_or_now!("stored_at")),
        ],
        compared: &["bytes"],
    },
    // The canaries, with their shares, counts and how each ended. One that
    // runs in keeper.db runs in no process on PostgreSQL: its lease lapses
    // and the first host that tends canaries ends it (plugins/canary.rs).
    Table {
        name: "keeper_plugin_canaries",
        key: "id",
        select: "*",
        columns: &[
            ("id", "(v ->> 'id')::bigint"),
            ("name", "v ->> 'name'"),
            ("version", "v ->> 'version'"),
            ("hash", "v ->> 'hash'"),
            ("file_name", "v ->> 'file_name'"),
            ("percent", "(v ->> 'percent')::bigint"),
            ("items", "(v ->> 'items')::bigint"),
            ("active_hash", "v ->> 'active_hash'"),
            ("state", "v ->> 'state'"),
            ("reason", "v ->> 'reason'"),
            ("canary_items", "(v ->> 'canary_items')::bigint"),
            ("canary_failed", "(v ->> 'canary_failed')::bigint"),
            ("active_items", "(v ->> 'active_items')::bigint"),
            ("active_failed", "(v ->> 'active_failed')::bigint"),
            ("started_at", utc_or_now!("started_at")),
            ("ended_at", utc!("ended_at")),
            ("started_by", "v ->> 'started_by'"),
            ("lease_expires_at", utc!("lease_expires_at")),
        ],
        compared: &["hash", "started_at"],
    },
    Table {
        name: "keeper_bot_forms",
        key: "nonce",
        select: "*",
        columns: &[
            ("nonce", "(v ->> 'nonce')::bigint"),
            ("user_id", "v ->> 'user_id'"),
            ("options", "v ->> 'options'"),
            ("expires_at", "(v ->> 'expires_at')::bigint"),
        ],
        compared: &["user_id", "options"],
    },
    Table {
        name: "keeper_bot_notices",
        key: "discovery_id",
        select: "*",
        columns: &[
            ("discovery_id", "(v ->> 'discovery_id')::bigint"),
            ("token", "v ->> 'token'"),
            ("channel_id", "v ->> 'channel_id'"),
            ("user_id", "v ->> 'user_id'"),
            ("confirmation", "v ->> 'confirmation'"),
            // keeper.db's flags are 0/1 integers.
            ("placed", "(v ->> 'placed')::bigint <> 0"),
            ("created_at", "(v ->> 'created_at')::bigint"),
            ("told_waiting", "COALESCE((v ->> 'told_waiting')::bigint, 0) <> 0"),
            ("told_failed", "COALESCE((v ->> 'told_failed')::bigint, 0) <> 0"),
        ],
        compared: &["token", "user_id"],
    },
];

/// Tables whose ids PostgreSQL hands out from an identity sequence.
const SEQUENCED: &[&str] = &["discoveries", "sync_queue", "keeper_plugins", "keeper_plugin_canaries"];

/// What one table's copy found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub table: &'static str,
    /// Rows in keeper.db.
    pub in_keeper_db: u64,
    /// Of those, found in PostgreSQL after the copy (the verification).
    pub in_postgres: u64,
    /// Of those, written by this run (the rest were there from an earlier one).
    pub copied_now: u64,
}

/// The result of a whole copy.
#[derive(Debug)]
pub struct Moved {
    pub source_id: String,
    pub tables: Vec<Copied>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read {table} from keeper.db at {path}: {source}; nothing was copied")]
    Read {
        table: &'static str,
        path: String,
        source: sqlx::Error,
    },
    #[error("keeper.db at {path}: {table} row {rowid} cannot be read ({reason}); nothing was copied")]
    Unreadable {
        table: &'static str,
        path: String,
        rowid: i64,
        reason: String,
    },
    #[error("copying {table} into the PostgreSQL store at {url} failed: {source}; nothing was copied")]
    Write {
        table: &'static str,
        url: String,
        source: sqlx::Error,
    },
    #[error(
        "the PostgreSQL store at {url} holds another keeper's reports (its source id is {target}, this keeper.db's \
         is {source_id}), so nothing was copied: move a keeper.db into a database of its own"
    )]
    AnotherKeeper {
        url: String,
        target: String,
        source_id: String,
    },
    #[error(
        "the PostgreSQL store at {url} already has {table} {key} = {value} with other content than keeper.db's \
         (another keeper's data?), so nothing was copied: move a keeper.db into a database of its own"
    )]
    Conflict {
        url: String,
        table: &'static str,
        key: &'static str,
        value: String,
    },
    #[error(
        "discovery {id} is not delivered yet and its {column} would not read back the same from PostgreSQL \
         (keeper.db: {in_keeper_db}, PostgreSQL: {in_postgres}), so VH-Database's ledger could not recognise it; \
         nothing was copied. Deliver it first (`keeper sync --once` on keeper.db), then run migrate-store again"
    )]
    NotTheSameReport {
        id: i64,
        column: &'static str,
        in_keeper_db: String,
        in_postgres: String,
    },
    #[error(
        "after the copy the PostgreSQL store at {url} has {in_postgres} of keeper.db's {in_keeper_db} {table} rows; \
         nothing was copied"
    )]
    Count {
        url: String,
        table: &'static str,
        in_keeper_db: u64,
        in_postgres: u64,
    },
}

/// Copies the keeper.db at `keeper_db` into the PostgreSQL store at `url`
/// (whose schema is created or brought up to date first).
pub async fn migrate_store(keeper_db: &Path, url: &str) -> Result<Moved, MigrateError> {
    // keeper.db first: a wrong path or an old file is refused before the
    // server is touched.
    let source = Store::open(keeper_db, Access::Read).await?;
    let Db::Sqlite(pool) = source.db() else {
        unreachable!("Store::open opens keeper.db")
    };
    let shown = postgres::redact(url);
    let target = Store::open_postgres(url, Access::Create).await?;
    let Db::Postgres(target_pool) = target.db() else {
        unreachable!("Store::open_postgres opens PostgreSQL")
    };
    let path = keeper_db.display().to_string();
    let write_err = |table| {
        let url = shown.clone();
        move |source| MigrateError::Write { table, url, source }
    };
    let mut tx = target_pool.begin().await.map_err(write_err("keeper_sync_meta"))?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(COPY_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(write_err("keeper_sync_meta"))?;
    take_source_id(&mut tx, source.source_id(), &shown).await?;
    let mut tables = Vec::with_capacity(TABLES.len() + 1);
    for table in TABLES {
        tables.push(copy_table(pool, &mut tx, table, &path, &shown).await?);
    }
    tables.push(copy_counters(pool, &mut tx, &path, &shown).await?);
    for name in SEQUENCED {
        // Past the largest id, never back: rows a host added since an
        // earlier copy keep theirs.
        let sql = format!(
            "SELECT setval(pg_get_serial_sequence('{name}', 'id'),
                 GREATEST(m, COALESCE(pg_sequence_last_value(pg_get_serial_sequence('{name}', 'id')::regclass), 0)))
             FROM (SELECT MAX(id) AS m FROM {name}) s WHERE m IS NOT NULL"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await
            .map_err(write_err(name))?;
    }
    same_reports(&source, pool, &mut tx, &path).await?;
    tx.commit().await.map_err(write_err("keeper_sync_meta"))?;
    tracing::info!(keeper_db = %path, url = %shown, source_id = source.source_id(), "keeper.db moved into PostgreSQL");
    Ok(Moved {
        source_id: source.source_id().to_owned(),
        tables,
    })
}

/// The store takes keeper.db's source id, under which VH-Database's ledger
/// knows its reports; a store that has reports under another one belongs
/// to another keeper.
async fn take_source_id(tx: &mut PgConnection, source_id: &str, shown: &str) -> Result<(), MigrateError> {
    let write_err = |source| MigrateError::Write {
        table: "keeper_sync_meta",
        url: shown.to_owned(),
        source,
    };
    let target: String = sqlx::query_scalar("SELECT value FROM keeper_sync_meta WHERE key = 'source_id'")
        .fetch_one(&mut *tx)
        .await
        .map_err(write_err)?;
    if target == source_id {
        return Ok(());
    }
    let has_reports: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM discoveries) OR EXISTS (SELECT 1 FROM sync_queue)")
            .fetch_one(&mut *tx)
            .await
            .map_err(write_err)?;
    if has_reports {
        return Err(MigrateError::AnotherKeeper {
            url: shown.to_owned(),
            target,
            source_id: source_id.to_owned(),
        });
    }
    sqlx::query("UPDATE keeper_sync_meta SET value = $1 WHERE key = 'source_id'")
        .bind(source_id)
        .execute(&mut *tx)
        .await
        .map_err(write_err)?;
    Ok(())
}

/// Copies one table in chunks of [`CHUNK`] rows (by rowid): refuses a row
/// already there with other content, inserts the missing ones, and counts
/// the chunk's rows found in the target afterwards.
async fn copy_table(
    pool: &SqlitePool,
    tx: &mut PgConnection,
    table: &Table,
    path: &str,
    shown: &str,
) -> Result<Copied, MigrateError> {
    let read_err = |source| MigrateError::Read {
        table: table.name,
        path: path.to_owned(),
        source,
    };
    let write_err = |source| MigrateError::Write {
        table: table.name,
        url: shown.to_owned(),
        source,
    };
    let columns: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let values: Vec<&str> = table.columns.iter().map(|(_, v)| *v).collect();
    let value_of = |column: &str| {
        table
            .columns
            .iter()
            .find(|(c, _)| *c == column)
            .map_or("NULL", |(_, v)| *v)
    };
    let key_value = value_of(table.key);
    let existing: Vec<String> = table.compared.iter().map(|c| format!("e.{c}")).collect();
    let incoming: Vec<&str> = table.compared.iter().map(|c| value_of(c)).collect();
    let rows_of = "jsonb_array_elements($1::jsonb) AS r(v)";
    let conflict_sql = format!(
        "SELECT e.{key}::text FROM {rows_of} JOIN {name} e ON e.{key} = {key_value}
         WHERE ROW({existing}) IS DISTINCT FROM ROW({incoming}) ORDER BY e.{key} LIMIT 1",
        key = table.key,
        name = table.name,
        existing = existing.join(", "),
        incoming = incoming.join(", "),
    );
    let insert_sql = format!(
        "INSERT INTO {name} ({columns}) SELECT {values} FROM {rows_of} ON CONFLICT ({key}) DO NOTHING",
        name = table.name,
        columns = columns.join(", "),
        values = values.join(", "),
        key = table.key,
    );
    let found_sql = format!(
        "SELECT COUNT(*) FROM {rows_of} JOIN {name} e ON e.{key} = {key_value}",
        name = table.name,
        key = table.key,
    );
    let select_sql = format!(
        "SELECT rowid AS keeper_rowid, {select} FROM {name} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
        select = table.select,
        name = table.name,
    );
    let mut copied = Copied {
        table: table.name,
        in_keeper_db: 0,
        in_postgres: 0,
        copied_now: 0,
    };
    let mut after = i64::MIN;
    loop {
        let rows = sqlx::query(sqlx::AssertSqlSafe(select_sql.as_str()))
            .bind(after)
            .bind(CHUNK)
            .fetch_all(pool)
            .await
            .map_err(read_err)?;
        let Some(last) = rows.last() else { break };
        after = last.try_get("keeper_rowid").map_err(read_err)?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let rowid: i64 = row.try_get("keeper_rowid").map_err(read_err)?;
            let read = read_row(row).map_err(|e| MigrateError::Unreadable {
                table: table.name,
                path: path.to_owned(),
                rowid,
                reason: e.to_string(),
            })?;
            records.push(read.to_json());
        }
        let chunk = serde_json::Value::Array(records).to_string();
        let conflict: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(conflict_sql.as_str()))
            .bind(&chunk)
            .fetch_optional(&mut *tx)
            .await
            .map_err(write_err)?;
        if let Some(value) = conflict {
            return Err(MigrateError::Conflict {
                url: shown.to_owned(),
                table: table.name,
                key: table.key,
                value,
            });
        }
        let inserted = sqlx::query(sqlx::AssertSqlSafe(insert_sql.as_str()))
            .bind(&chunk)
            .execute(&mut *tx)
            .await
            .map_err(write_err)?
            .rows_affected();
        let found: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(found_sql.as_str()))
            .bind(&chunk)
            .fetch_one(&mut *tx)
            .await
            .map_err(write_err)?;
        copied.in_keeper_db += rows.len() as u64;
        copied.in_postgres += u64::try_from(found).unwrap_or(0);
        copied.copied_now += inserted;
    }
    verified(copied, shown)
}

/// The queue's running totals (syncs, failures by class, latencies, stores
/// found restored), except `depth`, which the PostgreSQL queue counts from
/// the queue. A total already in the target is kept: hosts on it have
/// counted on since an earlier copy.
async fn copy_counters(
    pool: &SqlitePool,
    tx: &mut PgConnection,
    path: &str,
    shown: &str,
) -> Result<Copied, MigrateError> {
    const TABLE: &str = "keeper_sync_counters";
    let counters: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT counter, label, value FROM keeper_sync_counters WHERE counter <> 'depth'")
            .fetch_all(pool)
            .await
            .map_err(|source| MigrateError::Read {
                table: TABLE,
                path: path.to_owned(),
                source,
            })?;
    let write_err = |source| MigrateError::Write {
        table: TABLE,
        url: shown.to_owned(),
        source,
    };
    let chunk = serde_json::Value::Array(
        counters
            .iter()
            .map(|(c, l, v)| serde_json::json!({"counter": c, "label": l, "value": v}))
            .collect(),
    )
    .to_string();
    let inserted = sqlx::query(
        "INSERT INTO keeper_sync_counters (counter, label, value)
         SELECT v ->> 'counter', v ->> 'label', (v ->> 'value')::bigint FROM jsonb_array_elements($1::jsonb) AS r(v)
         ON CONFLICT (counter, label) DO NOTHING",
    )
    .bind(&chunk)
    .execute(&mut *tx)
    .await
    .map_err(write_err)?
    .rows_affected();
    let found: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jsonb_array_elements($1::jsonb) AS r(v)
         JOIN keeper_sync_counters e ON e.counter = v ->> 'counter' AND e.label = v ->> 'label'",
    )
    .bind(&chunk)
    .fetch_one(&mut *tx)
    .await
    .map_err(write_err)?;
    verified(
        Copied {
            table: TABLE,
            in_keeper_db: counters.len() as u64,
            in_postgres: u64::try_from(found).unwrap_or(0),
            copied_now: inserted,
        },
        shown,
    )
}

fn verified(copied: Copied, shown: &str) -> Result<Copied, MigrateError> {
    if copied.in_postgres == copied.in_keeper_db {
        Ok(copied)
    } else {
        Err(MigrateError::Count {
            url: shown.to_owned(),
            table: copied.table,
            in_keeper_db: copied.in_keeper_db,
            in_postgres: copied.in_postgres,
        })
    }
}

/// Every report not delivered yet must be the same report, to the ledger,
/// in PostgreSQL as in keeper.db: one in flight at the move (written to
/// VH-Database, not yet marked synced) is recognised only by its
/// fingerprint. Delivered reports are never claimed again.
async fn same_reports(
    source: &Store,
    pool: &SqlitePool,
    tx: &mut PgConnection,
    path: &str,
) -> Result<(), MigrateError> {
    let undelivered: Vec<i64> = sqlx::query_scalar(
        "SELECT DISTINCT discovery_id FROM sync_queue WHERE IFNULL(sync_status, 'pending') <> 'synced'
         ORDER BY discovery_id",
    )
    .fetch_all(pool)
    .await
    .map_err(|source| MigrateError::Read {
        table: "sync_queue",
        path: path.to_owned(),
        source,
    })?;
    for ids in undelivered.chunks(CHUNK as usize) {
        let before = source.discoveries(ids).await?;
        let after = postgres::discoveries(&mut *tx, ids).await?;
        for id in ids {
            let (Some(Ok(before)), Some(Ok(after))) = (before.get(id), after.get(id)) else {
                continue;
            };
            if fingerprint(before) != fingerprint(after) {
                return Err(first_difference(*id, before, after));
            }
        }
    }
    Ok(())
}

fn first_difference(id: i64, before: &Row, after: &Row) -> MigrateError {
    let shown = |row: &Row, column: &str| row.get(column).unwrap_or(&Value::Null).to_json().to_string();
    let column = IDENTITY_COLUMNS
        .iter()
        .find(|c| shown(before, c) != shown(after, c) || type_of(before, c) != type_of(after, c))
        .copied()
        .unwrap_or("submission_timestamp");
    MigrateError::NotTheSameReport {
        id,
        column,
        in_keeper_db: shown(before, column),
        in_postgres: shown(after, column),
    }
}

fn type_of(row: &Row, column: &str) -> &'static str {
    row.get(column).unwrap_or(&Value::Null).type_name()
}

/// The lines `keeper migrate-store` prints: one per table.
pub fn summary(moved: &Moved, keeper_db: &Path, shown_url: &str) -> String {
    let mut text = format!(
        "keeper.db at {} copied into the PostgreSQL store at {shown_url} (source id {})\n{:<22} {:>10} {:>11} {:>11}\n",
        keeper_db.display(),
        moved.source_id,
        "table",
        "keeper.db",
        "PostgreSQL",
        "copied now"
    );
    for t in &moved.tables {
        text.push_str(&format!(
            "{:<22} {:>10} {:>11} {:>11}\n",
            t.table, t.in_keeper_db, t.in_postgres, t.copied_now
        ));
    }
    text.push_str("every row verified; keeper.db was only read\n");
    text
}
