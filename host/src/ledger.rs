//! The delivery ledger in VH-Database (`keeper_sync_ledger`): which keeper.db
//! report became which VH-Database row. Written in the same transaction as
//! the rows themselves, it is what makes delivery exactly-once.
//!
//! A discovery id alone does not identify a report: a keeper.db restored
//! from a backup (or a plain `cp` of a live WAL-mode file) keeps its source
//! id and hands out the same discovery ids again, to other reports. So each
//! ledger row also carries the report's fingerprint (see
//! [`crate::delivery::fingerprint`]); a delivery is "already in VH" only when
//! source id, discovery id AND fingerprint match. The same id with another
//! fingerprint is a new report: it is written, and reported as
//! [`Found::Replaced`] so the operator learns that keeper.db was restored
//! or replaced.
//!
//! The ledger lives in a file that is not ours, so its layout is versioned
//! in its own table (`keeper_sync_ledger_version`) and upgraded in place,
//! inside the writer's transaction:
//!
//! - version 1: keyed by (source id, discovery id), no fingerprint;
//! - version 2: keyed by (source id, discovery id, fingerprint). Rows carried
//!   over from version 1 have a NULL fingerprint; such a row is trusted only
//!   when the VH-Database row it points at still shows the same report
//!   (reporter, time of report, description) or is gone.

use std::collections::{HashMap, HashSet};

use serde_json::json;
use sqlx::SqliteConnection;

use crate::row::Row;

/// The layout this build writes.
pub const VERSION: i64 = 2;

const CREATE_V2: &str = "CREATE TABLE keeper_sync_ledger (
    source_id TEXT NOT NULL,
    keeper_discovery_id INTEGER NOT NULL,
    report_fingerprint TEXT,
    haven_discovery_id INTEGER NOT NULL,
    plugin_name TEXT,
    plugin_version TEXT,
    plugin_hash TEXT,
    linked INTEGER NOT NULL DEFAULT 0,
    written_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (source_id, keeper_discovery_id, report_fingerprint))";

/// Backfill linking asks "is this old row claimed already?" for every
/// candidate: without an index that reads the whole ledger each time.
const INDEX_HAVEN_ID: &str =
    "CREATE INDEX IF NOT EXISTS keeper_sync_ledger_haven ON keeper_sync_ledger (haven_discovery_id)";

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(
        "the keeper_sync_ledger table is at version {0}, newer than this keeper understands ({VERSION}); upgrade keeper"
    )]
    Newer(i64),
}

/// Brings the ledger to [`VERSION`], creating it if missing. Runs inside the
/// caller's write transaction, so an upgrade is all or nothing and two
/// writers never upgrade at once.
pub async fn ensure(conn: &mut SqliteConnection) -> Result<(), LedgerError> {
    sqlx::query("CREATE TABLE IF NOT EXISTS keeper_sync_ledger_version (version INTEGER NOT NULL)")
        .execute(&mut *conn)
        .await?;
    let recorded: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM keeper_sync_ledger_version")
        .fetch_one(&mut *conn)
        .await?;
    let version = match recorded {
        Some(v) => v,
        // No version recorded: a version-1 ledger if the table exists.
        None => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = 'keeper_sync_ledger'",
            )
            .fetch_one(&mut *conn)
            .await?
        }
    };
    match version {
        VERSION => return Ok(()),
        v if v > VERSION => return Err(LedgerError::Newer(v)),
        0 => {
            sqlx::query(CREATE_V2).execute(&mut *conn).await?;
        }
        _ => {
            // Version 1: the primary key changes, so the table is rebuilt
            // (SQLite cannot alter a key); every row is carried over.
            sqlx::query("ALTER TABLE keeper_sync_ledger RENAME TO keeper_sync_ledger_v1")
                .execute(&mut *conn)
                .await?;
            sqlx::query(CREATE_V2).execute(&mut *conn).await?;
            let carried = sqlx::query(
                "INSERT INTO keeper_sync_ledger (source_id, keeper_discovery_id, report_fingerprint,
                     haven_discovery_id, plugin_name, plugin_version, plugin_hash, linked, written_at)
                 SELECT source_id, keeper_discovery_id, NULL, haven_discovery_id, plugin_name,
                     plugin_version, plugin_hash, linked, written_at FROM keeper_sync_ledger_v1",
            )
            .execute(&mut *conn)
            .await?
            .rows_affected();
            sqlx::query("DROP TABLE keeper_sync_ledger_v1")
                .execute(&mut *conn)
                .await?;
            tracing::info!(
                rows = carried,
                from = version,
                to = VERSION,
                "VH-Database ledger upgraded"
            );
        }
    }
    sqlx::query(INDEX_HAVEN_ID).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM keeper_sync_ledger_version")
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO keeper_sync_ledger_version (version) VALUES (?1)")
        .bind(VERSION)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What the ledger says about one report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Not delivered before.
    New,
    /// Delivered before: this is its VH-Database row.
    Delivered(i64),
    /// Another report was delivered under the same source and discovery id
    /// (keeper.db restored from a backup, or replaced by a copy): this one is
    /// new. Holds the other report's VH-Database row.
    Replaced(i64),
}

/// One report to look up.
pub struct Query<'a> {
    pub keeper_discovery_id: i64,
    pub fingerprint: &'a str,
    /// The mapped row, to judge a version-1 ledger row (no fingerprint).
    pub row: &'a Row,
}

/// Looks up every report of a batch in one read (plus one per version-1
/// ledger row met, which only upgraded ledgers have).
pub async fn find(
    conn: &mut SqliteConnection,
    source_id: &str,
    queries: &[Query<'_>],
) -> Result<Vec<Found>, sqlx::Error> {
    let ids: Vec<i64> = queries.iter().map(|q| q.keeper_discovery_id).collect();
    let entries: Vec<(i64, Option<String>, i64)> = sqlx::query_as(
        "SELECT keeper_discovery_id, report_fingerprint, haven_discovery_id FROM keeper_sync_ledger
         WHERE source_id = ?1 AND keeper_discovery_id IN (SELECT value FROM json_each(?2))",
    )
    .bind(source_id)
    .bind(json!(ids).to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut by_id: HashMap<i64, Vec<(Option<String>, i64)>> = HashMap::new();
    for (id, fingerprint, haven_id) in entries {
        by_id.entry(id).or_default().push((fingerprint, haven_id));
    }
    let mut found = Vec::with_capacity(queries.len());
    for q in queries {
        let Some(entries) = by_id.get(&q.keeper_discovery_id) else {
            found.push(Found::New);
            continue;
        };
        if let Some((_, haven_id)) = entries.iter().find(|(f, _)| f.as_deref() == Some(q.fingerprint)) {
            found.push(Found::Delivered(*haven_id));
            continue;
        }
        let mut verdict = None;
        for (_, haven_id) in entries.iter().filter(|(f, _)| f.is_none()) {
            if same_report(conn, *haven_id, q.row).await? {
                verdict = Some(Found::Delivered(*haven_id));
                break;
            }
        }
        found.push(verdict.unwrap_or(Found::Replaced(entries[0].1)));
    }
    Ok(found)
}

/// Whether VH-Database row `haven_id` shows the report `row` was mapped
/// from: same reporter, same time of report, same description. A row that
/// is gone (deleted in Control Room) counts as the same: writing it again
/// would undo the deletion.
async fn same_report(conn: &mut SqliteConnection, haven_id: i64, row: &Row) -> Result<bool, sqlx::Error> {
    let same: Option<bool> = sqlx::query_scalar(
        "SELECT discord_user_id IS ?2 AND submission_timestamp IS ?3 AND description IS ?4
         FROM discoveries WHERE id = ?1",
    )
    .bind(haven_id)
    .bind(row.text("discord_user_id"))
    .bind(row.text("submission_timestamp"))
    .bind(row.text("description"))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(same.unwrap_or(true))
}

/// The rows the old bot wrote that no ledger row claims, by a hash of what
/// identifies a report (reporter, time of report, description): backfill
/// looks each report up here instead of scanning VH-Database for it, so
/// linking N old reports costs one read of the table, not N.
///
/// Built once per warm VH-Database connection (see [`crate::sink`]) and kept
/// while no other program changes the file; rows linked by a committed
/// batch are forgotten, so two reports are never linked to one old row.
#[derive(Debug, Default)]
pub struct LegacyRows {
    by_report: HashMap<u64, Vec<i64>>,
    /// Each row's key in `by_report`, to forget it without a search.
    report_of: HashMap<i64, u64>,
}

impl LegacyRows {
    pub async fn load(conn: &mut SqliteConnection) -> Result<LegacyRows, sqlx::Error> {
        let rows: Vec<(i64, Option<String>, String, String)> = sqlx::query_as(
            "SELECT id, CAST(discord_user_id AS TEXT), CAST(submission_timestamp AS TEXT), CAST(description AS TEXT)
             FROM discoveries
             WHERE submission_timestamp IS NOT NULL AND description IS NOT NULL
               AND id NOT IN (SELECT haven_discovery_id FROM keeper_sync_ledger)
             ORDER BY id",
        )
        .fetch_all(&mut *conn)
        .await?;
        let mut legacy = LegacyRows::default();
        for (id, user, timestamp, description) in rows {
            let key = report_key(user.as_deref(), &timestamp, &description);
            legacy.by_report.entry(key).or_default().push(id);
            legacy.report_of.insert(id, key);
        }
        Ok(legacy)
    }

    /// A row the old bot wrote for the same report as `row`, not in `taken`
    /// (rows linked earlier in the same batch). Each candidate is confirmed
    /// with the exact comparison, so a hash collision never links.
    pub async fn find(
        &self,
        conn: &mut SqliteConnection,
        row: &Row,
        taken: &HashSet<i64>,
    ) -> Result<Option<i64>, sqlx::Error> {
        let (Some(description), Some(timestamp)) = (row.text("description"), row.text("submission_timestamp")) else {
            return Ok(None);
        };
        let user = row.text("discord_user_id");
        let Some(candidates) = self.by_report.get(&report_key(user, timestamp, description)) else {
            return Ok(None);
        };
        for &id in candidates.iter().filter(|id| !taken.contains(id)) {
            let same: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM discoveries
                 WHERE id = ?1 AND discord_user_id IS ?2 AND submission_timestamp = ?3 AND description = ?4",
            )
            .bind(id)
            .bind(user)
            .bind(timestamp)
            .bind(description)
            .fetch_optional(&mut *conn)
            .await?;
            if same.is_some() {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// Drops rows that a committed batch linked.
    pub fn forget(&mut self, linked: &HashSet<i64>) {
        for id in linked {
            let Some(key) = self.report_of.remove(id) else {
                continue;
            };
            if let Some(ids) = self.by_report.get_mut(&key) {
                ids.retain(|other| other != id);
                if ids.is_empty() {
                    self.by_report.remove(&key);
                }
            }
        }
    }
}

fn report_key(user: Option<&str>, timestamp: &str, description: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (user, timestamp, description).hash(&mut hasher);
    hasher.finish()
}

/// One ledger row to write.
pub struct Entry<'a> {
    pub keeper_discovery_id: i64,
    pub fingerprint: &'a str,
    pub haven_id: i64,
    /// Linked to a row the old bot wrote, not inserted.
    pub linked: bool,
}

/// Provenance recorded with every ledger row.
pub struct Writer<'a> {
    pub source_id: &'a str,
    pub plugin_name: &'a str,
    pub plugin_version: &'a str,
    pub plugin_hash: &'a str,
}

/// Records `entries` in one statement.
pub async fn record(
    conn: &mut SqliteConnection,
    writer: &Writer<'_>,
    entries: &[Entry<'_>],
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let payload: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| json!([e.keeper_discovery_id, e.fingerprint, e.haven_id, e.linked]))
        .collect();
    sqlx::query(
        "INSERT INTO keeper_sync_ledger (source_id, keeper_discovery_id, report_fingerprint, haven_discovery_id,
             plugin_name, plugin_version, plugin_hash, linked)
         SELECT ?1, value ->> 0, value ->> 1, value ->> 2, ?3, ?4, ?5, value ->> 3 FROM json_each(?2)",
    )
    .bind(writer.source_id)
    .bind(serde_json::Value::Array(payload).to_string())
    .bind(writer.plugin_name)
    .bind(writer.plugin_version)
    .bind(writer.plugin_hash)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
