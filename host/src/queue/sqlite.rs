//! The queue on SQLite (keeper.db): each transition one statement, counts
//! kept by triggers ([`counter_schema`]). The contract is [`super::Queue`]'s.

use std::time::Duration;

use serde_json::json;
use sqlx::{SqliteConnection, SqlitePool};

use super::*;
use crate::clock::Clock;
use crate::sqlite_error::Fault;

/// [`Queue::claim`]'s statement: ?1 token, ?2 lease modifier, ?3 limit,
/// ?4 `not_tried_since`, ?5 the claiming host's name, ?6 the clock's skew. Expired leases come first (they have waited
/// longest), then due pending items in id order. Each part walks its own
/// partial index (migration 12) and stops at the limit: the cost of a claim
/// does not grow with the backlog (no sort of every pending row).
const CLAIM: &str = "UPDATE sync_queue
             SET sync_status = 'syncing', claim_token = ?1, claimed_by = ?5,
                 lease_expires_at = strftime('%Y-%m-%d %H:%M:%f', 'now', ?6, ?2),
                 last_sync_attempt = strftime('%Y-%m-%d %H:%M:%f', 'now', ?6)
             WHERE id IN (
                 SELECT id FROM (
                     SELECT id FROM sync_queue INDEXED BY idx_sync_queue_syncing_lease
                         WHERE sync_status = 'syncing'
                         AND (lease_expires_at IS NULL OR lease_expires_at <= strftime('%Y-%m-%d %H:%M:%f', 'now', ?6))
                         LIMIT ?3)
                 UNION ALL
                 SELECT id FROM (
                     SELECT id FROM sync_queue INDEXED BY idx_sync_queue_pending_fifo
                         WHERE sync_status = 'pending'
                         AND (next_retry_after IS NULL OR next_retry_after <= strftime('%Y-%m-%d %H:%M:%f', 'now', ?6))
                         AND (?4 IS NULL OR last_sync_attempt IS NULL OR last_sync_attempt < ?4)
                         ORDER BY id LIMIT ?3)
                 LIMIT ?3)
             RETURNING id, discovery_id, sync_attempts AS attempts,
                 COALESCE(json_valid(metadata) AND metadata ->> 'backfill', 0) != 0 AS backfill";

/// The table and triggers that keep queue counts and totals current, so
/// `/sync/status` and `/metrics` read a handful of rows instead of scanning a
/// queue of millions. Each trigger touches one or two counter rows per
/// changed queue row. Run once by keeper.db migration 6, which then fills the
/// counters from the rows already there.
pub(crate) fn counter_schema() -> Vec<String> {
    let mut schema = vec![
        "CREATE TABLE IF NOT EXISTS keeper_sync_counters (
             counter TEXT NOT NULL,
             label TEXT NOT NULL DEFAULT '',
             value INTEGER NOT NULL DEFAULT 0,
             PRIMARY KEY (counter, label)) WITHOUT ROWID"
            .to_owned(),
    ];
    schema.extend(counter_triggers());
    // An adopted keeper.db: start from the rows already there.
    schema.extend(DEPTH_FROM_ROWS.map(str::to_owned));
    schema.push(
        "INSERT OR REPLACE INTO keeper_sync_counters (counter, label, value)
             SELECT 'synced_total', '', COUNT(*) FROM sync_queue WHERE sync_status = 'synced'"
            .to_owned(),
    );
    schema
}

/// The counting triggers on `sync_queue` (their names start with
/// [`COUNTER_TRIGGER_PREFIX`]). States and attempts are NOT NULL
/// (migration 19, which creates these again on the rebuilt table).
pub(crate) fn counter_triggers() -> Vec<String> {
    let latency = "max(0, CAST(round((julianday(NEW.synced_at) - julianday(NEW.created_at)) * 86400) AS INTEGER))";
    let mut bucket = String::from("CASE");
    for le in LATENCY_BUCKETS {
        bucket.push_str(&format!(" WHEN {latency} <= {le} THEN '{le}'"));
    }
    bucket.push_str(" ELSE '+Inf' END");
    let bump = |counter: &str, label: &str, by: &str| {
        format!(
            "INSERT INTO keeper_sync_counters (counter, label, value) VALUES ('{counter}', {label}, {by})
             ON CONFLICT (counter, label) DO UPDATE SET value = value + excluded.value;"
        )
    };
    vec![
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_insert AFTER INSERT ON sync_queue BEGIN {} END",
            bump("depth", "NEW.sync_status", "1")
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_delete AFTER DELETE ON sync_queue BEGIN {} END",
            bump("depth", "OLD.sync_status", "-1")
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_status AFTER UPDATE OF sync_status ON sync_queue
             WHEN OLD.sync_status <> NEW.sync_status
             BEGIN {} {} END",
            bump("depth", "OLD.sync_status", "-1"),
            bump("depth", "NEW.sync_status", "1")
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_synced AFTER UPDATE OF sync_status ON sync_queue
             WHEN NEW.sync_status = 'synced' AND OLD.sync_status <> 'synced'
             BEGIN {} END",
            bump("synced_total", "''", "1")
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_latency AFTER UPDATE OF sync_status ON sync_queue
             WHEN NEW.sync_status = 'synced' AND OLD.sync_status <> 'synced'
                 AND julianday(NEW.synced_at) IS NOT NULL AND julianday(NEW.created_at) IS NOT NULL
             BEGIN {} {} END",
            bump("latency_bucket", &bucket, "1"),
            bump("latency_seconds_sum", "''", latency)
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_failure AFTER UPDATE OF sync_attempts ON sync_queue
             WHEN NEW.error_class IS NOT NULL AND NEW.sync_attempts > OLD.sync_attempts
             BEGIN {} END",
            bump("failures_total", "NEW.error_class", "1")
        ),
    ]
}

/// The queue depth counted afresh from the rows: by migration 6 for an
/// adopted keeper.db, and by migration 19 for the table it rebuilt. States
/// are NOT NULL only from migration 19 on, so the old bot's NULL counts as
/// what it meant, pending.
pub(crate) const DEPTH_FROM_ROWS: [&str; 2] = [
    "DELETE FROM keeper_sync_counters WHERE counter = 'depth'",
    "INSERT INTO keeper_sync_counters (counter, label, value)
         SELECT 'depth', IFNULL(sync_status, 'pending'), COUNT(*) FROM sync_queue GROUP BY 2",
];

/// What every counting trigger's name starts with.
pub(crate) const COUNTER_TRIGGER_PREFIX: &str = "keeper_sync_count_";

const NOW_MS: &str = "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now', ?1)";

/// `datetime('now', ?)` modifier for a duration in whole seconds.
fn seconds_modifier(d: Duration) -> String {
    format!("+{} seconds", d.as_secs())
}

/// The most queue rows one turn of a claim or completion changes while an
/// intake group waits for keeper.db's write lock ([`SqliteQueue::step`]).
/// A batch of 500 in one turn held the lock for about 5 ms, and every
/// group waiting behind it took that as latency. With nobody waiting a
/// claim or completion is one write, as before: in steps of 100 always, a
/// claim and completion of 1,000 cost the queue bench a fifth of its rate.
/// Steps are safe: an item whose step did not commit keeps its lease (or
/// stays pending), and once the lease lapses it is delivered again, which
/// the VH-Database ledger turns into the same row.
const TURN_ROWS: usize = 100;

/// The queue's operations on a keeper.db pool: [`super::Queue`]'s contract.
#[derive(Clone)]
pub(super) struct SqliteQueue {
    pub(super) pool: SqlitePool,
    pub(super) policy: RetryPolicy,
    pub(super) lease: Duration,
    /// Taken by claims and completions, the worker's writes, so that a
    /// sustained intake cannot keep them out (`store/write_turn.rs`).
    pub(super) turn: WriteTurn,
    pub(super) clock: Clock,
}

impl SqliteQueue {
    /// The database's clock with milliseconds, as `last_sync_attempt` is
    /// stored (it sorts after a second-precision time of the same second).
    pub(super) async fn now(&self) -> Result<String, sqlx::Error> {
        sqlx::query_scalar(NOW_MS)
            .bind(self.clock.sqlite_modifier())
            .fetch_one(&self.pool)
            .await
    }

    pub(super) async fn claim(
        &self,
        token: &str,
        limit: u32,
        not_tried_since: Option<&str>,
        host: &str,
    ) -> Result<Vec<ClaimedItem>, sqlx::Error> {
        let mut items: Vec<ClaimedItem> = Vec::new();
        loop {
            let remaining = limit.saturating_sub(u32::try_from(items.len()).unwrap_or(u32::MAX));
            let turn = self.turn.take().await;
            let asked = self.step(remaining as usize) as u32;
            let taken: Vec<ClaimedItem> = sqlx::query_as(CLAIM)
                .bind(token)
                .bind(seconds_modifier(self.lease))
                .bind(asked)
                .bind(not_tried_since)
                .bind(host)
                .bind(self.clock.sqlite_modifier())
                .fetch_all(&self.pool)
                .await?;
            drop(turn);
            let all_due_taken = taken.len() < asked as usize;
            items.extend(taken);
            if all_due_taken || items.len() >= limit as usize {
                return Ok(items);
            }
        }
    }

    /// How many of `remaining` queue rows the write in this turn changes:
    /// all of them, unless another writer waits for the lock.
    fn step(&self, remaining: usize) -> usize {
        if self.turn.wanted() {
            remaining.min(TURN_ROWS)
        } else {
            remaining
        }
    }

    pub(super) async fn renew(&self, token: &str) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sync_queue SET lease_expires_at = strftime('%Y-%m-%d %H:%M:%f', 'now', ?3, ?2)
             WHERE claim_token = ?1 AND sync_status = 'syncing'",
        )
        .bind(token)
        .bind(seconds_modifier(self.lease))
        .bind(self.clock.sqlite_modifier())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn release(&self, token: &str) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sync_queue SET sync_status = 'pending', claim_token = NULL, lease_expires_at = NULL
             WHERE claim_token = ?1 AND sync_status = 'syncing'",
        )
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Each list arrives as one JSON array, unpacked once in a MATERIALIZED
    /// CTE (see [`mark_synced`]); in steps of [`TURN_ROWS`] while intake
    /// waits for the write lock.
    pub(super) async fn complete(
        &self,
        token: &str,
        delivered: &[Delivered],
        failed: &serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        let (mut delivered, mut failed) = (delivered, failed.as_array().map_or(&[][..], Vec::as_slice));
        while !(delivered.is_empty() && failed.is_empty()) {
            let turn = self.turn.take().await;
            let (synced_now, synced_later) = delivered.split_at(self.step(delivered.len()));
            let (failed_now, failed_later) = failed.split_at(self.step(failed.len()));
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            if !synced_now.is_empty() {
                mark_synced(&mut tx, &self.clock, Some(token), synced_now).await?;
            }
            if !failed_now.is_empty() {
                let failed_now = serde_json::Value::Array(failed_now.to_vec());
                mark_failed(&mut tx, &self.clock, Some(token), self.policy, &failed_now).await?;
            }
            tx.commit().await?;
            drop(turn);
            (delivered, failed) = (synced_later, failed_later);
        }
        Ok(())
    }

    pub(super) async fn retry(&self, queue_id: i64) -> Result<RetryFound, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sync_queue SET sync_status = 'pending', sync_attempts = 0, sync_error = NULL,
                 error_class = NULL, next_retry_after = NULL
             WHERE id = ?1 AND sync_status IN ('pending', 'max_retries_exceeded')",
        )
        .bind(queue_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(None);
        }
        let status: Option<SyncStatus> = sqlx::query_scalar("SELECT sync_status FROM sync_queue WHERE id = ?1")
            .bind(queue_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(Some(status))
    }

    /// `classes` empty: every `max_retries_exceeded` item.
    pub(super) async fn requeue_failed(&self, classes: &[ErrorClass]) -> Result<u64, sqlx::Error> {
        let classes = (!classes.is_empty()).then(|| json!(classes.iter().map(|c| c.as_str()).collect::<Vec<_>>()));
        let done = sqlx::query(
            "UPDATE sync_queue SET sync_status = 'pending', sync_attempts = 0, sync_error = NULL,
                 error_class = NULL, next_retry_after = NULL
             WHERE (?1 IS NULL AND sync_status = 'max_retries_exceeded')
                OR (error_class IN (SELECT value FROM json_each(?1))
                    AND sync_status IN ('pending', 'max_retries_exceeded'))",
        )
        .bind(classes.map(|c| c.to_string()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn cleanup(&self, days: u32) -> Result<u64, sqlx::Error> {
        let done =
            sqlx::query("DELETE FROM sync_queue WHERE sync_status = 'synced' AND synced_at < datetime('now', ?2, ?1)")
                .bind(format!("-{days} days"))
                .bind(self.clock.sqlite_modifier())
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// From the trigger-maintained counters: a few rows read whatever the
    /// queue's size.
    pub(super) async fn counts(&self) -> Result<QueueCounts, sqlx::Error> {
        // The labels are states: the triggers count the checked, NOT NULL
        // column, and migration 19 counted the depth afresh.
        let rows: Vec<(SyncStatus, i64)> =
            sqlx::query_as("SELECT label, value FROM keeper_sync_counters WHERE counter = 'depth'")
                .fetch_all(&self.pool)
                .await?;
        Ok(QueueCounts::from_rows(rows))
    }

    /// (class, count, first next_retry_after) of the pending items whose
    /// next attempt is in the future (the due-items index serves the range).
    pub(super) async fn waiting(&self) -> Result<Vec<(Option<ErrorClass>, i64, Option<String>)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT error_class, COUNT(*), MIN(next_retry_after)
             FROM sync_queue INDEXED BY idx_sync_queue_due
             WHERE sync_status = 'pending' AND next_retry_after > strftime('%Y-%m-%d %H:%M:%f', 'now', ?1)
             GROUP BY error_class ORDER BY error_class",
        )
        .bind(self.clock.sqlite_modifier())
        .fetch_all(&self.pool)
        .await
    }

    /// Up to `limit` failed and `limit` waiting items, and the failed
    /// items counted by class.
    #[allow(clippy::type_complexity)]
    pub(super) async fn troubles(
        &self,
        limit: u32,
    ) -> Result<(Vec<TroubledItem>, Vec<(Option<ErrorClass>, i64)>), sqlx::Error> {
        // Two queries, each served by its index, in the order listed.
        let failed: Vec<TroubledItem> = sqlx::query_as(
            "SELECT id, discovery_id, 1 AS failed, sync_attempts AS attempts, error_class AS class,
                    sync_error AS error, next_retry_after
             FROM sync_queue INDEXED BY idx_sync_queue_failed_recent
             WHERE sync_status = 'max_retries_exceeded'
             ORDER BY last_sync_attempt DESC, id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let waiting: Vec<TroubledItem> = sqlx::query_as(
            "SELECT id, discovery_id, 0 AS failed, sync_attempts AS attempts, error_class AS class,
                    sync_error AS error, next_retry_after
             FROM sync_queue INDEXED BY idx_sync_queue_due
             WHERE sync_status = 'pending' AND next_retry_after > strftime('%Y-%m-%d %H:%M:%f', 'now', ?2)
             ORDER BY next_retry_after, id LIMIT ?1",
        )
        .bind(limit)
        .bind(self.clock.sqlite_modifier())
        .fetch_all(&self.pool)
        .await?;
        let failed_classes = sqlx::query_as(
            "SELECT error_class, COUNT(*) FROM sync_queue INDEXED BY idx_sync_queue_failed_class
             WHERE sync_status = 'max_retries_exceeded' GROUP BY error_class",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok((failed.into_iter().chain(waiting).collect(), failed_classes))
    }

    /// The counters' rows but depth, and the failed items by class.
    #[allow(clippy::type_complexity)]
    pub(super) async fn totals(
        &self,
    ) -> Result<(Vec<(String, String, i64)>, Vec<(Option<ErrorClass>, i64)>), sqlx::Error> {
        let counters =
            sqlx::query_as("SELECT counter, label, value FROM keeper_sync_counters WHERE counter <> 'depth'")
                .fetch_all(&self.pool)
                .await?;
        let failed_by_class = sqlx::query_as(
            "SELECT error_class, COUNT(*)
             FROM sync_queue INDEXED BY idx_sync_queue_failed_class
             WHERE sync_status = 'max_retries_exceeded' GROUP BY error_class ORDER BY IFNULL(error_class, 'unknown')",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok((counters, failed_by_class))
    }

    pub(super) async fn statistics(&self) -> Result<QueueStatistics, sqlx::Error> {
        let errors = sqlx::query_as(
            "SELECT sync_status, error_class, COUNT(*) AS count FROM sync_queue
             WHERE sync_status IN ('pending', 'max_retries_exceeded') AND sync_error IS NOT NULL
             GROUP BY sync_status, error_class ORDER BY sync_status, IFNULL(error_class, 'unknown')",
        )
        .fetch_all(&self.pool)
        .await?;
        let attempts = sqlx::query_as(
            "SELECT sync_attempts AS n, COUNT(*) FROM sync_queue
             WHERE sync_status <> 'synced' GROUP BY n ORDER BY n",
        )
        .fetch_all(&self.pool)
        .await?;
        let oldest_pending = sqlx::query_as(
            "SELECT id, created_at FROM sync_queue WHERE sync_status = 'pending'
             ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let (synced_last_hour, synced_last_day): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE synced_at >= datetime('now', ?1, '-1 hour')), COUNT(*)
             FROM sync_queue INDEXED BY idx_sync_queue_synced_at
             WHERE sync_status = 'synced' AND synced_at >= datetime('now', ?1, '-1 day')",
        )
        .bind(self.clock.sqlite_modifier())
        .fetch_one(&self.pool)
        .await?;
        let latency_last_day = sqlx::query_as(
            "WITH l AS (SELECT (julianday(synced_at) - julianday(created_at)) * 86400.0 AS s
                        FROM sync_queue INDEXED BY idx_sync_queue_synced_at
                        WHERE sync_status = 'synced' AND synced_at >= datetime('now', ?1, '-1 day')
                          AND julianday(synced_at) IS NOT NULL AND julianday(created_at) IS NOT NULL),
                  n AS (SELECT COUNT(*) AS c FROM l)
             SELECT c AS count, (SELECT avg(s) FROM l) AS average, (SELECT max(s) FROM l) AS max,
                    (SELECT s FROM l ORDER BY s LIMIT 1 OFFSET (SELECT (c - 1) * 50 / 100 FROM n)) AS p50,
                    (SELECT s FROM l ORDER BY s LIMIT 1 OFFSET (SELECT (c - 1) * 95 / 100 FROM n)) AS p95
             FROM n",
        )
        .bind(self.clock.sqlite_modifier())
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueStatistics {
            errors,
            attempts,
            oldest_pending,
            synced_last_hour,
            synced_last_day,
            latency_last_day,
        })
    }

    pub(super) async fn synced_per_minute(&self) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT CAST((julianday('now', ?1) - julianday(synced_at)) * 1440 AS INTEGER) AS ago, COUNT(*)
             FROM sync_queue INDEXED BY idx_sync_queue_synced_at
             WHERE sync_status = 'synced' AND synced_at >= datetime('now', ?1, '-60 minutes')
             GROUP BY ago",
        )
        .bind(self.clock.sqlite_modifier())
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn failure_classes(&self) -> Result<Vec<FailureClass>, sqlx::Error> {
        sqlx::query_as(
            "WITH t AS (SELECT id, error_class, sync_status, created_at, last_sync_attempt, sync_error
                        FROM sync_queue
                        WHERE sync_status IN ('pending', 'max_retries_exceeded') AND sync_error IS NOT NULL)
             SELECT c.error_class AS class,
                    (SELECT COUNT(*) FROM t WHERE t.error_class IS c.error_class
                         AND t.sync_status = 'max_retries_exceeded') AS failed,
                    (SELECT COUNT(*) FROM t WHERE t.error_class IS c.error_class
                         AND t.sync_status = 'pending') AS waiting,
                    o.id AS oldest_queue_id, o.created_at AS oldest_created_at,
                    l.id AS latest_queue_id, l.sync_error AS latest_error
             FROM (SELECT DISTINCT error_class FROM t) c
             JOIN t o ON o.id = (SELECT id FROM t WHERE t.error_class IS c.error_class ORDER BY id LIMIT 1)
             JOIN t l ON l.id = (SELECT id FROM t WHERE t.error_class IS c.error_class
                                 ORDER BY last_sync_attempt DESC, id DESC LIMIT 1)",
        )
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn list_items(&self, filter: &ItemFilter, limit: u32) -> Result<Vec<ListedItem>, sqlx::Error> {
        sqlx::query_as(
            "SELECT q.id, q.discovery_id, q.sync_status,
                    q.sync_attempts, q.error_class, q.sync_error, q.created_at,
                    q.synced_at, q.haven_discovery_id, q.claimed_by,
                    CAST(d.system_name AS TEXT) AS system_name, CAST(d.location AS TEXT) AS location,
                    CAST(d.discovery_type AS TEXT) AS discovery_type, CAST(d.username AS TEXT) AS username
             FROM sync_queue q LEFT JOIN discoveries d ON d.id = q.discovery_id
             WHERE (?1 IS NULL OR q.sync_status = ?1)
               AND (?2 IS NULL OR d.system_name LIKE ?2 ESCAPE '\\')
               AND (?3 IS NULL OR d.username LIKE ?3 ESCAPE '\\')
               AND (?4 IS NULL OR d.discovery_type = ?4)
               AND (?5 IS NULL OR q.error_class = ?5)
               AND (?6 IS NULL OR q.id < ?6)
             ORDER BY q.id DESC LIMIT ?7",
        )
        .bind(filter.state)
        .bind(ItemFilter::contains(&filter.system))
        .bind(ItemFilter::contains(&filter.user))
        .bind(filter.discovery_type.as_deref())
        .bind(filter.class)
        .bind(filter.before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn item(&self, queue_id: i64) -> Result<Option<QueueItem>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, discovery_id, sync_status,
                    sync_attempts, max_attempts,
                    last_sync_attempt, next_retry_after, sync_error, error_class, haven_discovery_id,
                    created_at, synced_at, metadata, claimed_by
             FROM sync_queue WHERE id = ?1",
        )
        .bind(queue_id)
        .fetch_optional(&self.pool)
        .await
    }

    pub(super) async fn queue_id_of(&self, discovery_id: i64) -> Result<Option<i64>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        queue_id_in(&mut conn, discovery_id).await
    }

    pub(super) async fn pending_after(&self, after: i64, limit: u32) -> Result<Vec<ExportedItem>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id AS queue_id, discovery_id, sync_attempts, created_at,
                    COALESCE(json_valid(metadata) AND metadata ->> 'backfill', 0) != 0 AS backfill
             FROM sync_queue
             WHERE id > ?1 AND sync_status = 'pending'
               AND (next_retry_after IS NULL OR next_retry_after <= strftime('%Y-%m-%d %H:%M:%f', 'now', ?3))
             ORDER BY id LIMIT ?2",
        )
        .bind(after)
        .bind(limit)
        .bind(self.clock.sqlite_modifier())
        .fetch_all(&self.pool)
        .await
    }

    /// The ids marked synced, and the states of the acknowledged items after.
    pub(super) async fn acknowledge(
        &self,
        delivered: &[Delivered],
        ids: &[i64],
    ) -> Result<(Vec<i64>, Vec<(i64, SyncStatus)>), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let acknowledged = mark_synced(&mut conn, &self.clock, None, delivered).await?;
        let states =
            sqlx::query_as("SELECT id, sync_status FROM sync_queue WHERE id IN (SELECT value FROM json_each(?1))")
                .bind(json!(ids).to_string())
                .fetch_all(&mut *conn)
                .await?;
        Ok((acknowledged, states))
    }

    /// Reads the items' states, lets `decide` choose, records its failures;
    /// one transaction.
    pub(super) async fn fail_remote(
        &self,
        ids: &[i64],
        decide: &DecideRemoteFailures<'_>,
    ) -> Result<(FailOutcome, Vec<(i64, SyncStatus)>), sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let states: Vec<(i64, SyncStatus, i64)> = sqlx::query_as(
            "SELECT id, sync_status, sync_attempts FROM sync_queue
             WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json!(ids).to_string())
        .fetch_all(&mut *tx)
        .await?;
        let (outcome, failures) = decide(&states);
        let changed = mark_failed(&mut tx, &self.clock, None, self.policy, &failures).await?;
        tx.commit().await?;
        Ok((outcome, changed))
    }

    /// A report on a damaged page of keeper.db is listed without its
    /// details: a poison row must not hide the others.
    pub(super) async fn failed(&self, limit: u32) -> Result<Vec<FailedItem>, sqlx::Error> {
        let mut items: Vec<FailedItem> = sqlx::query_as::<_, (i64, i64, i64, Option<String>)>(
            "SELECT id, discovery_id, sync_attempts, sync_error
             FROM sync_queue INDEXED BY idx_sync_queue_failed_recent
             WHERE sync_status = 'max_retries_exceeded'
             ORDER BY last_sync_attempt DESC, id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(queue_id, discovery_id, sync_attempts, sync_error)| FailedItem {
            queue_id,
            discovery_id,
            sync_attempts,
            sync_error,
            system_name: None,
            location: None,
            discovery_type: None,
            username: None,
        })
        .collect();
        let ids: Vec<i64> = items.iter().map(|i| i.discovery_id).collect();
        let details = match self.report_details(&ids).await {
            Err(e) if Fault::of(&e) == Fault::Corrupt => {
                let mut readable = Vec::with_capacity(ids.len());
                for id in &ids {
                    match self.report_details(std::slice::from_ref(id)).await {
                        Ok(found) => readable.extend(found),
                        Err(e) if Fault::of(&e) == Fault::Corrupt => {}
                        Err(e) => return Err(e),
                    }
                }
                readable
            }
            other => other?,
        };
        for item in &mut items {
            if let Some(d) = details.iter().find(|d| d.0 == item.discovery_id) {
                item.system_name.clone_from(&d.1);
                item.location.clone_from(&d.2);
                item.discovery_type.clone_from(&d.3);
                item.username.clone_from(&d.4);
            }
        }
        Ok(items)
    }

    /// (id, system name, location, type, username) of the given discoveries.
    #[allow(clippy::type_complexity)]
    async fn report_details(
        &self,
        ids: &[i64],
    ) -> Result<Vec<(i64, Option<String>, Option<String>, Option<String>, Option<String>)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, CAST(system_name AS TEXT), CAST(location AS TEXT), CAST(discovery_type AS TEXT),
                    CAST(username AS TEXT)
             FROM discoveries WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(json!(ids).to_string())
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn last_synced(&self, limit: u32) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, discovery_id FROM sync_queue WHERE sync_status = 'synced'
             ORDER BY synced_at DESC, id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn backfill(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO sync_queue (discovery_id, max_attempts, metadata)
             SELECT d.id, ?1, '{\"backfill\":true}' FROM discoveries d
             WHERE NOT EXISTS (SELECT 1 FROM sync_queue q WHERE q.discovery_id = d.id)
             ORDER BY d.id",
        )
        .bind(self.policy.max_attempts)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// The one transition to `synced`, for a worker's batch (only items still
/// held under `token`) and for a remote puller's acknowledgements (`None`:
/// items not synced and not being synced here). Returns the ids it marked.
///
/// The batch arrives as one JSON array, unpacked once in a MATERIALIZED CTE:
/// joined directly, `json_each` was rescanned for every candidate row
/// (quadratic: 1,000 items/s at batches of 1,000).
async fn mark_synced(
    conn: &mut SqliteConnection,
    clock: &Clock,
    token: Option<&str>,
    delivered: &[Delivered],
) -> Result<Vec<i64>, sqlx::Error> {
    let payload = super::delivery_payload(delivered)?;
    let mut marked: Vec<i64> = sqlx::query_scalar(
        "WITH j AS MATERIALIZED (
             SELECT value ->> 'queue_id' AS queue_id, value ->> 'haven_id' AS haven_id, value -> 'meta' AS meta
             FROM json_each(?1))
         UPDATE sync_queue
         SET sync_status = 'synced', haven_discovery_id = j.haven_id,
             synced_at = datetime('now', ?3), sync_attempts = sync_attempts + 1,
             sync_error = NULL, error_class = NULL, next_retry_after = NULL,
             lease_expires_at = NULL, claim_token = NULL,
             metadata = json_patch(
                 CASE WHEN json_valid(sync_queue.metadata) THEN sync_queue.metadata
                      WHEN sync_queue.metadata IS NULL THEN '{}'
                      ELSE json_object('legacy', sync_queue.metadata) END,
                 j.meta)
         FROM j
         WHERE sync_queue.id = j.queue_id
           AND CASE WHEN ?2 IS NULL
                    THEN sync_queue.sync_status IN ('pending', 'max_retries_exceeded')
                    ELSE sync_queue.claim_token = ?2 END
         RETURNING sync_queue.id",
    )
    .bind(payload)
    .bind(token)
    .bind(clock.sqlite_modifier())
    .fetch_all(&mut *conn)
    .await?;
    marked.sort_unstable();
    let replaced = delivered
        .iter()
        .filter(|d| d.keeper_db_replaced && marked.binary_search(&d.queue_id).is_ok())
        .count();
    if replaced > 0 {
        sqlx::query(
            "INSERT INTO keeper_sync_counters (counter, label, value) VALUES ('keeper_db_replaced_total', '', ?1)
             ON CONFLICT (counter, label) DO UPDATE SET value = value + excluded.value",
        )
        .bind(replaced as i64)
        .execute(&mut *conn)
        .await?;
    }
    Ok(marked)
}

/// The one failure transition, for a worker's batch (only items still held
/// under `token`) and for a remote puller's reports (`None`: items pending
/// here, whose attempt time is then now). `attempts` of each item counts the
/// attempts before this one; the policy decides between a backoff and
/// `max_retries_exceeded`. Returns each changed item with its new state.
async fn mark_failed(
    conn: &mut SqliteConnection,
    clock: &Clock,
    token: Option<&str>,
    policy: RetryPolicy,
    failed: &serde_json::Value,
) -> Result<Vec<(i64, SyncStatus)>, sqlx::Error> {
    sqlx::query_as(
        "WITH j AS MATERIALIZED (
             SELECT value ->> 'queue_id' AS queue_id, value ->> 'status' AS status,
                 value ->> 'error' AS error, value ->> 'class' AS class, value ->> 'delay' AS delay
             FROM json_each(?1))
         UPDATE sync_queue
         SET sync_status = j.status,
             sync_attempts = sync_attempts + 1, max_attempts = ?3,
             sync_error = j.error, error_class = j.class,
             next_retry_after = CASE WHEN j.delay IS NULL THEN NULL
                 ELSE strftime('%Y-%m-%d %H:%M:%f', 'now', ?4, '+' || j.delay || ' seconds') END,
             last_sync_attempt = CASE WHEN ?2 IS NULL THEN strftime('%Y-%m-%d %H:%M:%f', 'now', ?4)
                 ELSE sync_queue.last_sync_attempt END,
             lease_expires_at = NULL, claim_token = NULL
         FROM j
         WHERE sync_queue.id = j.queue_id
           AND CASE WHEN ?2 IS NULL
                    THEN sync_queue.sync_status = 'pending'
                    ELSE sync_queue.claim_token = ?2 END
         RETURNING sync_queue.id, sync_queue.sync_status",
    )
    .bind(failed.to_string())
    .bind(token)
    .bind(policy.max_attempts)
    .bind(clock.sqlite_modifier())
    .fetch_all(&mut *conn)
    .await
}

/// Queues the discoveries just stored, inside the caller's transaction:
/// each one's queue id, by discovery id.
pub(crate) async fn enqueue_discoveries(
    conn: &mut SqliteConnection,
    discovery_ids: &[i64],
    max_attempts: u32,
) -> Result<std::collections::HashMap<i64, i64>, sqlx::Error> {
    let pairs: Vec<(i64, i64)> = sqlx::query_as(
        "INSERT INTO sync_queue (discovery_id, max_attempts)
         SELECT value, ?2 FROM json_each(?1) ORDER BY key
         RETURNING discovery_id, id",
    )
    .bind(json!(discovery_ids).to_string())
    .bind(max_attempts)
    .fetch_all(&mut *conn)
    .await?;
    Ok(pairs.into_iter().collect())
}

/// The queue item of a discovery (its latest, should it have several).
pub(crate) async fn queue_id_in(conn: &mut SqliteConnection, discovery_id: i64) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT MAX(id) FROM sync_queue WHERE discovery_id = ?1")
        .bind(discovery_id)
        .fetch_one(&mut *conn)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row as _;

    /// 250 due items on a fresh keeper.db, and a queue sharing the store's
    /// write turn.
    async fn two_hundred_fifty_due() -> (tempfile::TempDir, crate::store::Store, Queue) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::Store::open(&dir.path().join("keeper.db"), crate::store::Access::Create)
            .await
            .expect("open keeper.db");
        let reports: Vec<crate::report::Report> = (0..250)
            .map(|n| {
                crate::report::Report::from_json(&json!({
                    "discovery_type": "🦴", "system_name": "Oculi", "location": "planet:Erren",
                    "description": format!("report {n}"), "username": "Explorer#1234",
                }))
                .expect("a valid report")
            })
            .collect();
        store.submit(&reports, 3).await.expect("submit");
        let policy = RetryPolicy {
            base: Duration::from_secs(30),
            max_delay: Duration::from_secs(3600),
            max_attempts: 3,
        };
        let queue =
            Queue::new(store.db().clone(), policy, Duration::from_secs(60)).sharing_write_turn(store.write_turn());
        (dir, store, queue)
    }

    async fn count(pool: &sqlx::SqlitePool, status: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM sync_queue WHERE sync_status = ?1")
            .bind(status)
            .fetch_one(pool)
            .await
            .expect("count")
    }

    /// Runs `write` while this test holds the write turn, with another
    /// writer queued behind it; the count of `status` items that writer
    /// read once it had its turn, and what `write` came to.
    async fn with_a_writer_waiting<T: Send + 'static>(
        store: &crate::store::Store,
        status: &'static str,
        write: impl std::future::Future<Output = T> + Send + 'static,
    ) -> (i64, T) {
        let bound = Duration::from_secs(30);
        let turn = store.write_turn();
        let pool = store.db().sqlite().expect("keeper.db").clone();
        let held = turn.take().await;
        let write = tokio::spawn(write);
        wait_until(|| turn.wanted(), bound).await;
        let writer = tokio::spawn({
            let turn = turn.clone();
            async move {
                let _mine = turn.take().await;
                count(&pool, status).await
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        let seen = tokio::time::timeout(bound, writer)
            .await
            .expect("the waiting writer got a turn")
            .expect("writer task");
        let written = tokio::time::timeout(bound, write)
            .await
            .expect("the write finished")
            .expect("write task");
        (seen, written)
    }

    /// A claim of several steps hands keeper.db's write lock over between
    /// two of them when another writer waits (its first step committed and
    /// visible), and then takes the rest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_claim_hands_the_write_turn_to_a_waiting_writer_between_steps() {
        let (_dir, store, queue) = two_hundred_fifty_due().await;
        let claiming = queue.clone();
        let (seen, claimed) =
            with_a_writer_waiting(&store, "syncing", async move { claiming.claim(250, None).await }).await;
        assert_eq!(seen, TURN_ROWS as i64, "handed over after the first step, committed");
        assert_eq!(claimed.expect("claim").items.len(), 250, "and then took the rest");
        let pool = store.db().sqlite().expect("keeper.db");
        assert_eq!(count(pool, "syncing").await, 250);
    }

    /// The same for a completion: its first 100 items synced and visible
    /// to the writer that waited, then every one of them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_completion_hands_the_write_turn_to_a_waiting_writer_between_steps() {
        let (_dir, store, queue) = two_hundred_fifty_due().await;
        let claim = queue.claim(250, None).await.expect("claim");
        let done: Vec<Delivered> = claim
            .items
            .iter()
            .map(|item| super::super::driver_tests::delivered(item.queue_id, item.queue_id))
            .collect();
        let completing = queue.clone();
        let (seen, completed) = with_a_writer_waiting(&store, "synced", async move {
            completing.complete(&claim.token, &done, &[]).await
        })
        .await;
        completed.expect("complete");
        assert_eq!(seen, TURN_ROWS as i64, "handed over after the first step, committed");
        let pool = store.db().sqlite().expect("keeper.db");
        assert_eq!(count(pool, "synced").await, 250, "and then completed the rest");
    }

    async fn wait_until(condition: impl Fn() -> bool, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "not within {bound:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// The claim's plan: both partial indexes walked, nothing sorted.
    #[tokio::test]
    async fn claim_walks_its_indexes_and_never_sorts_the_backlog() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::Store::open(&dir.path().join("keeper.db"), crate::store::Access::Create)
            .await
            .expect("open keeper.db");
        let plan = explain(store.db().sqlite().expect("keeper.db")).await;
        let text = plan.join("\n");
        assert!(!text.contains("TEMP B-TREE"), "the claim sorts:\n{text}");
        assert!(text.contains("idx_sync_queue_pending_fifo"), "{text}");
        assert!(text.contains("idx_sync_queue_syncing_lease"), "{text}");
    }

    /// `EXPLAIN QUERY PLAN` rows' `detail` column.
    async fn explain(pool: &sqlx::SqlitePool) -> Vec<String> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {CLAIM}")))
            .bind("token")
            .bind("+30 seconds")
            .bind(10)
            .bind(Option::<String>::None)
            .fetch_all(pool)
            .await
            .expect("explain the claim");
        rows.iter()
            .map(|r| r.try_get::<String, _>("detail").expect("detail"))
            .collect()
    }
}
