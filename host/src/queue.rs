//! The sync queue: every state an item can be in and every transition between
//! them, each one a single SQL statement. Nothing else in the host writes
//! `sync_queue`.
//!
//! ```text
//!             claim                    complete (ok)
//!  pending ──────────► syncing ───────────────────────► synced ──► (cleanup deletes)
//!     ▲                  │  │
//!     │ retry / heal     │  │ complete (failed, attempts left): next_retry_after = now + backoff
//!     │                  │  └──────────────────────────────────► pending
//!     │                  │ complete (failed, no attempts left, or a permanent error)
//!     │                  ▼
//!     └──────── max_retries_exceeded
//! ```
//!
//! A claim is a lease: it names a random token and an expiry. A worker that
//! dies leaves its items `syncing`; once the lease expires the next claim
//! takes them again. Only the holder of the token may complete an item, so a
//! worker that lost its lease cannot overwrite its successor's outcome (the
//! VH-Database ledger makes the write itself idempotent; see `sink`).
//!
//! Times are SQLite's UTC text. The ones the queue compares to decide what is
//! due (`last_sync_attempt`, `next_retry_after`, `lease_expires_at`) carry
//! milliseconds; the rest keep the guide's `YYYY-MM-DD HH:MM:SS`. A
//! second-precision value from the old bot still compares correctly.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use sqlx::{Row as _, SqliteConnection, SqlitePool};

use crate::sqlite_error::Fault;

/// The states of the guide, as stored in `sync_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    Pending,
    Syncing,
    Synced,
    MaxRetriesExceeded,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Pending => "pending",
            SyncStatus::Syncing => "syncing",
            SyncStatus::Synced => "synced",
            SyncStatus::MaxRetriesExceeded => "max_retries_exceeded",
        }
    }
}

/// When a failed item is tried again: the guide's schedule, 30 s · 2^(n−1)
/// after the n-th failure, and no more tries after `max_attempts` failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max_delay: Duration,
    pub max_attempts: u32,
}

/// What happens to an item after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    RetryIn(Duration),
    GiveUp,
}

impl RetryPolicy {
    /// The wait after the `failures`-th failed attempt (1-based).
    pub fn delay_after(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(63);
        let factor = 1u64 << exponent;
        let secs = self.base.as_secs().saturating_mul(factor);
        Duration::from_secs(secs).min(self.max_delay)
    }

    /// Decides the next step for an item that has now failed `failures` times.
    /// A permanent error (the same input always fails) is not retried.
    pub fn after_failure(&self, failures: u32, permanent: bool) -> AfterFailure {
        if permanent || failures >= self.max_attempts {
            AfterFailure::GiveUp
        } else {
            AfterFailure::RetryIn(self.delay_after(failures))
        }
    }
}

/// Why an attempt failed, stored in `error_class`; decides whether to retry
/// and which items a new plugin version heals. The same names in the API
/// (`POST /sync/fail`, `POST /sync/retry?class=`) and on the command line
/// (`keeper retry --all-failed --class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, poem_openapi::Enum, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum ErrorClass {
    /// VH-Database missing, unreadable or not a database.
    Unavailable,
    /// VH-Database locked by another program past the busy timeout.
    Locked,
    /// VH-Database cannot grow: its disk (or quota) is full.
    Full,
    /// VH-Database, its folder or its mount is not writable for keeper.
    ReadOnly,
    /// The mapped row does not fit VH-Database's table.
    Schema,
    /// The plugin rejected the row or broke (trap, memory): permanent for
    /// this plugin version, healed when a new version becomes active.
    Mapping,
    /// The plugin ran past its deadline; may pass on a quieter machine.
    Timeout,
    /// The keeper.db row cannot be read: a damaged page, bytes that are not
    /// UTF-8. Retried on the normal schedule (a restored or repaired
    /// keeper.db heals it); the rest of its batch syncs meanwhile.
    Source,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::Locked => "locked",
            ErrorClass::Full => "full",
            ErrorClass::ReadOnly => "read_only",
            ErrorClass::Schema => "schema",
            ErrorClass::Mapping => "mapping",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Source => "source",
        }
    }

    /// Retrying the same input with the same plugin cannot succeed.
    pub fn is_permanent(self) -> bool {
        matches!(self, ErrorClass::Mapping)
    }

    /// The class stored as `name` in `error_class` (what [`ErrorClass::as_str`]
    /// writes); `None` for anything else (a legacy row, a newer keeper's class).
    pub fn parse(name: &str) -> Option<ErrorClass> {
        <ErrorClass as clap::ValueEnum>::value_variants()
            .iter()
            .copied()
            .find(|c| c.as_str() == name)
    }
}

/// [`Queue::claim`]'s statement: ?1 token, ?2 lease modifier, ?3 limit,
/// ?4 `not_tried_since`. Expired leases come first (they have waited
/// longest), then due pending items in id order. Each part walks its own
/// partial index (migration 12) and stops at the limit: the cost of a claim
/// does not grow with the backlog (no sort of every pending row).
const CLAIM: &str = "UPDATE sync_queue
             SET sync_status = 'syncing', claim_token = ?1,
                 lease_expires_at = strftime('%Y-%m-%d %H:%M:%f', 'now', ?2), last_sync_attempt = strftime('%Y-%m-%d %H:%M:%f', 'now')
             WHERE id IN (
                 SELECT id FROM (
                     SELECT id FROM sync_queue INDEXED BY idx_sync_queue_syncing_lease
                         WHERE sync_status = 'syncing'
                         AND (lease_expires_at IS NULL OR lease_expires_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
                         LIMIT ?3)
                 UNION ALL
                 SELECT id FROM (
                     SELECT id FROM sync_queue INDEXED BY idx_sync_queue_pending_fifo
                         WHERE sync_status = 'pending'
                         AND (next_retry_after IS NULL OR next_retry_after <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
                         AND (?4 IS NULL OR last_sync_attempt IS NULL OR last_sync_attempt < ?4)
                         ORDER BY id LIMIT ?3)
                 LIMIT ?3)
             RETURNING id, discovery_id, COALESCE(sync_attempts, 0) AS attempts,
                 COALESCE(json_valid(metadata) AND metadata ->> 'backfill', 0) AS backfill";

/// An item handed to a worker by [`Queue::claim`].
#[derive(Debug, Clone)]
pub struct ClaimedItem {
    pub queue_id: i64,
    pub discovery_id: i64,
    /// Attempts that had finished before this one.
    pub attempts: u32,
    /// Enqueued by `keeper backfill`: may already be in VH-Database from the old bot.
    pub backfill: bool,
}

#[derive(Debug, Clone)]
pub struct Claim {
    pub token: String,
    pub items: Vec<ClaimedItem>,
}

/// A delivered item: its VH-Database id and what to remember about it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub queue_id: i64,
    pub haven_id: i64,
    /// Merged into the item's `metadata` (provenance, warnings).
    pub metadata: serde_json::Value,
    /// Written as a new report although VH-Database's ledger held another
    /// under its discovery id (keeper.db restored or replaced); counted in
    /// `keeper_db_replaced_total`.
    pub keeper_db_replaced: bool,
}

#[derive(Debug, Clone)]
pub struct Failed {
    pub queue_id: i64,
    /// Attempts that had finished before this one.
    pub attempts: u32,
    pub class: ErrorClass,
    pub message: String,
}

/// Queue depth by state (the guide's `queue` object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, poem_openapi::Object)]
pub struct QueueCounts {
    /// Waiting for their first or next attempt.
    pub pending: i64,
    /// Claimed by a worker right now.
    pub syncing: i64,
    /// Written to VH-Database (until `cleanup` deletes them).
    pub synced: i64,
    /// `max_retries_exceeded`: need a manual retry.
    pub failed: i64,
}

/// Pending items waiting out a retry's backoff (their next attempt is in
/// the future). The four states alone show them as plain `pending`, which
/// hides that they failed and when they will be tried again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Waiting {
    pub count: i64,
    /// When the first of them is due again, as stored (SQLite's UTC text).
    pub next_retry_after: Option<String>,
    /// Their last attempt's error class and how many have it, by class name.
    pub last_error_classes: Vec<(String, i64)>,
}

/// A `max_retries_exceeded` item with what an operator needs to judge it
/// (the guide's `failed_items` entry).
#[derive(Debug, Clone, Serialize)]
pub struct FailedItem {
    pub queue_id: i64,
    pub discovery_id: i64,
    pub sync_attempts: i64,
    pub sync_error: Option<String>,
    pub system_name: Option<String>,
    pub location: Option<String>,
    pub discovery_type: Option<String>,
    pub username: Option<String>,
}

/// An item a moderator should look at: out of attempts, or waiting out a
/// retry's backoff after a failure (what `/sync-status` lists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TroubledItem {
    pub queue_id: i64,
    pub discovery_id: i64,
    /// Out of attempts (`max_retries_exceeded`); else waiting to retry.
    pub failed: bool,
    pub attempts: i64,
    /// The last failure's class; `None` when unknown (a legacy row).
    pub class: Option<ErrorClass>,
    pub error: Option<String>,
    /// When a waiting item is tried again (SQLite's UTC text).
    pub next_retry_after: Option<String>,
}

/// The items that need a look ([`TroubledItem`]): the first `limit` of each
/// kind, and how many there are of each class (all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Troubles {
    /// Failed items first (the most recent first), then waiting ones (the
    /// next due first).
    pub items: Vec<TroubledItem>,
    /// (class, items of that class failed or waiting), by class name; the
    /// unknown class is left out: nothing can retry by it.
    pub classes: Vec<(ErrorClass, i64)>,
    /// Failed or waiting items in all, listed or not.
    pub total: i64,
}

/// One queue row as stored, for `GET /sync/items/{queue_id}`. Times are
/// SQLite's UTC text.
#[derive(Debug, Clone)]
pub struct QueueItem {
    pub queue_id: i64,
    pub discovery_id: i64,
    pub sync_status: Option<String>,
    pub sync_attempts: i64,
    pub max_attempts: Option<i64>,
    pub last_sync_attempt: Option<String>,
    pub next_retry_after: Option<String>,
    pub sync_error: Option<String>,
    pub error_class: Option<String>,
    pub haven_discovery_id: Option<i64>,
    pub created_at: Option<String>,
    pub synced_at: Option<String>,
    /// The `metadata` column: JSON text (provenance under `plugin`), or
    /// whatever a legacy bot stored there.
    pub metadata: Option<String>,
}

/// A pending item offered to a remote puller.
#[derive(Debug, Clone)]
pub struct ExportedItem {
    pub queue_id: i64,
    pub discovery_id: i64,
    pub sync_attempts: i64,
    pub created_at: Option<String>,
    /// Enqueued by `keeper backfill`: the puller links a copy the old bot
    /// already wrote instead of inserting it again.
    pub backfill: bool,
}

/// A remote puller's report that it wrote an item to its VH-Database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub queue_id: i64,
    pub haven_discovery_id: i64,
    /// The puller found this keeper.db's discovery id delivered before as
    /// another report (see [`Delivered::keeper_db_replaced`]).
    pub keeper_db_replaced: bool,
}

/// A remote puller's report that it could not write an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFailure {
    pub queue_id: i64,
    pub class: ErrorClass,
    pub message: String,
}

/// What became of a batch of remote failure reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailOutcome {
    /// Recorded; pending again after their backoff (`next_retry_after`).
    pub retrying: Vec<i64>,
    /// Recorded; out of attempts or a permanent class: `max_retries_exceeded`.
    pub gave_up: Vec<i64>,
    /// Not pending here (synced, being synced, or already failed): left alone.
    pub not_pending: Vec<i64>,
    /// No such queue item.
    pub unknown: Vec<i64>,
}

/// What became of a batch of acknowledgements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AckOutcome {
    /// Marked synced by this call.
    pub acknowledged: Vec<i64>,
    /// Already synced before (a repeated acknowledgement; nothing changed).
    pub already_synced: Vec<i64>,
    /// Claimed by a local worker right now; not changed.
    pub in_progress: Vec<i64>,
    /// No such queue item.
    pub unknown: Vec<i64>,
}

/// Counts by (state, error class) for items that are not synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassCount {
    pub sync_status: String,
    pub error_class: String,
    pub count: i64,
}

/// Figures for `GET /sync/statistics` that need more than the counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueStatistics {
    /// Unsynced items that have an error, by state and error class.
    pub errors: Vec<ClassCount>,
    /// Unsynced items by number of finished attempts: (attempts, count).
    pub attempts: Vec<(i64, i64)>,
    /// The oldest pending item: (queue id, created_at).
    pub oldest_pending: Option<(i64, Option<String>)>,
    pub synced_last_hour: i64,
    pub synced_last_day: i64,
    /// Submission-to-synced latency of the items synced in the last day.
    pub latency_last_day: LatencySummary,
}

/// Seconds from submission (`created_at`) to `synced_at`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    pub count: i64,
    pub average: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

/// Monotonic totals and the latency histogram, maintained by triggers on
/// `sync_queue` in `keeper_sync_counters` (since the keeper.db was migrated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueTotals {
    /// Transitions to `synced`.
    pub synced: i64,
    /// Failed attempts by error class.
    pub failures_by_class: Vec<(String, i64)>,
    /// Items now `max_retries_exceeded`, by error class (`unknown` if none recorded).
    pub failed_by_class: Vec<(String, i64)>,
    /// Synced items per latency bucket: (upper bound in seconds, `None` for
    /// +Inf; count in that bucket alone, not cumulative).
    pub latency_buckets: Vec<(Option<u64>, i64)>,
    /// Sum of all observed latencies, seconds.
    pub latency_sum_seconds: i64,
    /// Reports delivered as new although VH-Database's ledger held another
    /// report under the same discovery id: keeper.db was restored or replaced.
    pub keeper_db_replaced: i64,
}

/// Upper bounds (seconds) of the submission-to-synced latency histogram.
/// Fixed when migration 6 creates the trigger that fills it.
pub const LATENCY_BUCKETS: &[u64] = &[1, 5, 15, 30, 60, 300, 900, 3600, 21_600, 86_400];

/// The table and triggers that keep queue counts and totals current, so
/// `/sync/status` and `/metrics` read a handful of rows instead of scanning a
/// queue of millions. Each trigger touches one or two counter rows per
/// changed queue row. Run once by keeper.db migration 6, which then fills the
/// counters from the rows already there ([`COUNTERS_INIT`]).
pub fn counter_schema() -> Vec<String> {
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
        "CREATE TABLE IF NOT EXISTS keeper_sync_counters (
             counter TEXT NOT NULL,
             label TEXT NOT NULL DEFAULT '',
             value INTEGER NOT NULL DEFAULT 0,
             PRIMARY KEY (counter, label)) WITHOUT ROWID"
            .to_owned(),
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_insert AFTER INSERT ON sync_queue BEGIN {} END",
            bump("depth", "IFNULL(NEW.sync_status, 'pending')", "1")
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_delete AFTER DELETE ON sync_queue BEGIN {} END",
            bump("depth", "IFNULL(OLD.sync_status, 'pending')", "-1")
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_status AFTER UPDATE OF sync_status ON sync_queue
             WHEN IFNULL(OLD.sync_status, 'pending') IS NOT IFNULL(NEW.sync_status, 'pending')
             BEGIN {} {} END",
            bump("depth", "IFNULL(OLD.sync_status, 'pending')", "-1"),
            bump("depth", "IFNULL(NEW.sync_status, 'pending')", "1")
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_synced AFTER UPDATE OF sync_status ON sync_queue
             WHEN NEW.sync_status = 'synced' AND IFNULL(OLD.sync_status, 'pending') <> 'synced'
             BEGIN {} END",
            bump("synced_total", "''", "1")
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_latency AFTER UPDATE OF sync_status ON sync_queue
             WHEN NEW.sync_status = 'synced' AND IFNULL(OLD.sync_status, 'pending') <> 'synced'
                 AND julianday(NEW.synced_at) IS NOT NULL AND julianday(NEW.created_at) IS NOT NULL
             BEGIN {} {} END",
            bump("latency_bucket", &bucket, "1"),
            bump("latency_seconds_sum", "''", latency)
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS keeper_sync_count_failure AFTER UPDATE OF sync_attempts ON sync_queue
             WHEN NEW.error_class IS NOT NULL AND IFNULL(NEW.sync_attempts, 0) > IFNULL(OLD.sync_attempts, 0)
             BEGIN {} END",
            bump("failures_total", "NEW.error_class", "1")
        ),
        // An adopted keeper.db: start from the rows already there.
        "INSERT OR REPLACE INTO keeper_sync_counters (counter, label, value)
             SELECT 'depth', IFNULL(sync_status, 'pending'), COUNT(*) FROM sync_queue GROUP BY 2"
            .to_owned(),
        "INSERT OR REPLACE INTO keeper_sync_counters (counter, label, value)
             SELECT 'synced_total', '', COUNT(*) FROM sync_queue WHERE sync_status = 'synced'"
            .to_owned(),
    ]
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetryError {
    #[error("queue item {0} does not exist")]
    NotFound(i64),
    #[error("queue item {0} is already synced")]
    AlreadySynced(i64),
    #[error("queue item {0} is being synced right now")]
    InProgress(i64),
}

/// The queue in keeper.db, with the rules it is run by.
#[derive(Clone)]
pub struct Queue {
    pool: SqlitePool,
    policy: RetryPolicy,
    lease: Duration,
}

const NOW_MS: &str = "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')";

/// `datetime('now', ?)` modifier for a duration in whole seconds.
fn seconds_modifier(d: Duration) -> String {
    format!("+{} seconds", d.as_secs())
}

impl Queue {
    pub fn new(pool: SqlitePool, policy: RetryPolicy, lease: Duration) -> Queue {
        Queue { pool, policy, lease }
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The database's clock with milliseconds, as `last_sync_attempt` is
    /// stored (it sorts after a second-precision time of the same second).
    pub async fn now(&self) -> Result<String, sqlx::Error> {
        sqlx::query_scalar(NOW_MS).fetch_one(&self.pool).await
    }

    /// Atomically takes up to `limit` due items: pending ones whose retry
    /// time has come, and syncing ones whose lease has expired. With
    /// `not_tried_since`, a pending item last attempted at or after that time
    /// is left for the next pass, so one pass tries each item at most once
    /// even when its retry delay is zero.
    pub async fn claim(&self, limit: u32, not_tried_since: Option<&str>) -> Result<Claim, sqlx::Error> {
        let token = format!("{:032x}", rand::random::<u128>());
        let rows = sqlx::query(CLAIM)
            .bind(&token)
            .bind(seconds_modifier(self.lease))
            .bind(limit)
            .bind(not_tried_since)
            .fetch_all(&self.pool)
            .await?;
        let mut items = rows
            .iter()
            .map(|r| {
                Ok(ClaimedItem {
                    queue_id: r.try_get("id")?,
                    discovery_id: r.try_get("discovery_id")?,
                    attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
                    backfill: r.try_get::<i64, _>("backfill")? != 0,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        items.sort_by_key(|i| i.queue_id);
        Ok(Claim { token, items })
    }

    /// Extends the lease of a batch that is still being worked on.
    pub async fn renew(&self, token: &str) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sync_queue SET lease_expires_at = strftime('%Y-%m-%d %H:%M:%f', 'now', ?2)
             WHERE claim_token = ?1 AND sync_status = 'syncing'",
        )
        .bind(token)
        .bind(seconds_modifier(self.lease))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Gives a claimed batch back untouched (shutdown before it was worked on).
    pub async fn release(&self, token: &str) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sync_queue SET sync_status = 'pending', claim_token = NULL, lease_expires_at = NULL
             WHERE claim_token = ?1 AND sync_status = 'syncing'",
        )
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Records the outcome of a batch in one transaction.
    ///
    /// Each list arrives as one JSON array, unpacked once in a MATERIALIZED
    /// CTE (see [`mark_synced`]).
    pub async fn complete(&self, token: &str, delivered: &[Delivered], failed: &[Failed]) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if !delivered.is_empty() {
            mark_synced(&mut tx, Some(token), delivered).await?;
        }
        if !failed.is_empty() {
            mark_failed(&mut tx, Some(token), self.policy, failed).await?;
        }
        tx.commit().await
    }

    /// Makes one item due now with a fresh attempt count (the guide's manual retry).
    pub async fn retry(&self, queue_id: i64) -> Result<(), RetryRefused> {
        let done = sqlx::query(
            "UPDATE sync_queue SET sync_status = 'pending', sync_attempts = 0, sync_error = NULL,
                 error_class = NULL, next_retry_after = NULL
             WHERE id = ?1 AND sync_status IN ('pending', 'max_retries_exceeded')",
        )
        .bind(queue_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(());
        }
        let status: Option<Option<String>> = sqlx::query_scalar("SELECT sync_status FROM sync_queue WHERE id = ?1")
            .bind(queue_id)
            .fetch_optional(&self.pool)
            .await?;
        Err(RetryRefused::Refused(match status.flatten().as_deref() {
            None => RetryError::NotFound(queue_id),
            Some("synced") => RetryError::AlreadySynced(queue_id),
            Some(_) => RetryError::InProgress(queue_id),
        }))
    }

    /// Retries every `max_retries_exceeded` item; returns how many.
    pub async fn retry_all_failed(&self) -> Result<u64, sqlx::Error> {
        self.requeue_failed(&[]).await
    }

    /// Retries the items whose last failure is of `class`, failed or still
    /// waiting out a backoff: after fixing the cause (a schema, a lock) an
    /// operator retries just those. Returns how many.
    pub async fn retry_class(&self, class: ErrorClass) -> Result<u64, sqlx::Error> {
        self.requeue_failed(&[class]).await
    }

    /// Retries the items that failed because of what the plugin did — it
    /// refused or broke (`mapping`), ran past its deadline (`timeout`), or
    /// returned a row that does not fit the table (`schema`) — failed or
    /// still waiting: called when a new plugin version becomes active.
    pub async fn requeue_mapping_failures(&self) -> Result<u64, sqlx::Error> {
        self.requeue_failed(&[ErrorClass::Mapping, ErrorClass::Timeout, ErrorClass::Schema])
            .await
    }

    /// `classes` empty: every `max_retries_exceeded` item.
    async fn requeue_failed(&self, classes: &[ErrorClass]) -> Result<u64, sqlx::Error> {
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

    /// Deletes synced items older than `days`; returns how many.
    pub async fn cleanup(&self, days: u32) -> Result<u64, sqlx::Error> {
        let done =
            sqlx::query("DELETE FROM sync_queue WHERE sync_status = 'synced' AND synced_at < datetime('now', ?1)")
                .bind(format!("-{days} days"))
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }

    /// Queue depth by state, from the trigger-maintained counters: a few
    /// rows read whatever the queue's size.
    pub async fn counts(&self) -> Result<QueueCounts, sqlx::Error> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT label, value FROM keeper_sync_counters WHERE counter = 'depth'")
                .fetch_all(&self.pool)
                .await?;
        let mut counts = QueueCounts::default();
        for (status, n) in rows {
            match status.as_str() {
                "pending" => counts.pending += n,
                "syncing" => counts.syncing += n,
                "synced" => counts.synced += n,
                _ => counts.failed += n,
            }
        }
        Ok(counts)
    }

    /// The pending items whose next attempt is in the future (the due-items
    /// index serves the range).
    pub async fn waiting(&self) -> Result<Waiting, sqlx::Error> {
        let rows: Vec<(String, i64, Option<String>)> = sqlx::query_as(
            "SELECT IFNULL(error_class, 'unknown') AS class, COUNT(*), MIN(next_retry_after)
             FROM sync_queue INDEXED BY idx_sync_queue_due
             WHERE sync_status = 'pending' AND next_retry_after > strftime('%Y-%m-%d %H:%M:%f', 'now')
             GROUP BY class ORDER BY class",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut waiting = Waiting::default();
        for (class, count, next) in rows {
            waiting.count += count;
            waiting.next_retry_after = match (waiting.next_retry_after, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            waiting.last_error_classes.push((class, count));
        }
        Ok(waiting)
    }

    /// The items that failed for good or wait out a retry's backoff, for
    /// moderators: up to `limit` of each kind, with their classes counted.
    pub async fn troubles(&self, limit: u32) -> Result<Troubles, sqlx::Error> {
        // Two queries, each served by its index, in the order listed.
        let failed: Vec<TroubledRow> = sqlx::query_as(
            "SELECT id, discovery_id, 1, COALESCE(sync_attempts, 0), error_class, sync_error, next_retry_after
             FROM sync_queue INDEXED BY idx_sync_queue_failed_recent
             WHERE sync_status = 'max_retries_exceeded'
             ORDER BY last_sync_attempt DESC, id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let waiting: Vec<TroubledRow> = sqlx::query_as(
            "SELECT id, discovery_id, 0, COALESCE(sync_attempts, 0), error_class, sync_error, next_retry_after
             FROM sync_queue INDEXED BY idx_sync_queue_due
             WHERE sync_status = 'pending' AND next_retry_after > strftime('%Y-%m-%d %H:%M:%f', 'now')
             ORDER BY next_retry_after, id LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let failed_classes: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT error_class, COUNT(*) FROM sync_queue INDEXED BY idx_sync_queue_failed_class
             WHERE sync_status = 'max_retries_exceeded' GROUP BY error_class",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_class: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        let waiting_classes = self.waiting().await?.last_error_classes;
        for (class, n) in failed_classes
            .into_iter()
            .map(|(class, n)| (class.unwrap_or_default(), n))
            .chain(waiting_classes)
        {
            *by_class.entry(class).or_default() += n;
        }
        Ok(Troubles {
            items: failed
                .into_iter()
                .chain(waiting)
                .map(
                    |(queue_id, discovery_id, failed, attempts, class, error, next_retry_after)| TroubledItem {
                        queue_id,
                        discovery_id,
                        failed,
                        attempts,
                        class: class.as_deref().and_then(ErrorClass::parse),
                        error,
                        next_retry_after,
                    },
                )
                .collect(),
            total: by_class.values().sum(),
            classes: by_class
                .into_iter()
                .filter_map(|(class, n)| Some((ErrorClass::parse(&class)?, n)))
                .collect(),
        })
    }

    /// Totals and the latency histogram for `/metrics`.
    pub async fn totals(&self) -> Result<QueueTotals, sqlx::Error> {
        let counters: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT counter, label, value FROM keeper_sync_counters WHERE counter <> 'depth'")
                .fetch_all(&self.pool)
                .await?;
        let mut totals = QueueTotals {
            latency_buckets: LATENCY_BUCKETS
                .iter()
                .map(|le| (Some(*le), 0))
                .chain([(None, 0)])
                .collect(),
            ..QueueTotals::default()
        };
        for (counter, label, value) in counters {
            match counter.as_str() {
                "synced_total" => totals.synced += value,
                "failures_total" => totals.failures_by_class.push((label, value)),
                "latency_seconds_sum" => totals.latency_sum_seconds += value,
                "keeper_db_replaced_total" => totals.keeper_db_replaced += value,
                "latency_bucket" => {
                    let le = label.parse::<u64>().ok();
                    if let Some(bucket) = totals.latency_buckets.iter_mut().find(|(b, _)| *b == le) {
                        bucket.1 += value;
                    }
                }
                _ => {}
            }
        }
        totals.failed_by_class = sqlx::query_as(
            "SELECT IFNULL(error_class, 'unknown') AS class, COUNT(*)
             FROM sync_queue INDEXED BY idx_sync_queue_failed_class
             WHERE sync_status = 'max_retries_exceeded' GROUP BY class ORDER BY class",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(totals)
    }

    /// The detailed figures of `/sync/statistics`. Unlike [`Queue::counts`]
    /// these read the unsynced items (and the last day's synced ones).
    pub async fn statistics(&self) -> Result<QueueStatistics, sqlx::Error> {
        let errors = sqlx::query_as::<_, (String, String, i64)>(
            "SELECT sync_status, IFNULL(error_class, 'unknown') AS class, COUNT(*) FROM sync_queue
             WHERE sync_status IN ('pending', 'max_retries_exceeded') AND sync_error IS NOT NULL
             GROUP BY sync_status, class ORDER BY sync_status, class",
        )
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(sync_status, error_class, count)| ClassCount {
            sync_status,
            error_class,
            count,
        })
        .collect();
        let attempts = sqlx::query_as(
            "SELECT IFNULL(sync_attempts, 0) AS n, COUNT(*) FROM sync_queue
             WHERE IFNULL(sync_status, 'pending') <> 'synced' GROUP BY n ORDER BY n",
        )
        .fetch_all(&self.pool)
        .await?;
        let oldest_pending = sqlx::query_as(
            "SELECT id, created_at FROM sync_queue WHERE IFNULL(sync_status, 'pending') = 'pending'
             ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let (synced_last_hour, synced_last_day): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE synced_at >= datetime('now', '-1 hour')), COUNT(*)
             FROM sync_queue INDEXED BY idx_sync_queue_synced_at
             WHERE sync_status = 'synced' AND synced_at >= datetime('now', '-1 day')",
        )
        .fetch_one(&self.pool)
        .await?;
        let latency = sqlx::query(
            "WITH l AS (SELECT (julianday(synced_at) - julianday(created_at)) * 86400.0 AS s
                        FROM sync_queue INDEXED BY idx_sync_queue_synced_at
                        WHERE sync_status = 'synced' AND synced_at >= datetime('now', '-1 day')
                          AND julianday(synced_at) IS NOT NULL AND julianday(created_at) IS NOT NULL),
                  n AS (SELECT COUNT(*) AS c FROM l)
             SELECT c, (SELECT avg(s) FROM l) AS average, (SELECT max(s) FROM l) AS max,
                    (SELECT s FROM l ORDER BY s LIMIT 1 OFFSET (SELECT (c - 1) * 50 / 100 FROM n)) AS p50,
                    (SELECT s FROM l ORDER BY s LIMIT 1 OFFSET (SELECT (c - 1) * 95 / 100 FROM n)) AS p95
             FROM n",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueStatistics {
            errors,
            attempts,
            oldest_pending,
            synced_last_hour,
            synced_last_day,
            latency_last_day: LatencySummary {
                count: latency.try_get("c")?,
                average: latency.try_get("average")?,
                p50: latency.try_get("p50")?,
                p95: latency.try_get("p95")?,
                max: latency.try_get("max")?,
            },
        })
    }

    /// One queue row, or `None` when there is no such item.
    pub async fn item(&self, queue_id: i64) -> Result<Option<QueueItem>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, discovery_id, sync_status, IFNULL(sync_attempts, 0) AS sync_attempts, max_attempts,
                    last_sync_attempt, next_retry_after, sync_error, error_class, haven_discovery_id,
                    created_at, synced_at, metadata
             FROM sync_queue WHERE id = ?1",
        )
        .bind(queue_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(QueueItem {
                queue_id: r.try_get("id")?,
                discovery_id: r.try_get("discovery_id")?,
                sync_status: r.try_get("sync_status")?,
                sync_attempts: r.try_get("sync_attempts")?,
                max_attempts: r.try_get("max_attempts")?,
                last_sync_attempt: r.try_get("last_sync_attempt")?,
                next_retry_after: r.try_get("next_retry_after")?,
                sync_error: r.try_get("sync_error")?,
                error_class: r.try_get("error_class")?,
                haven_discovery_id: r.try_get("haven_discovery_id")?,
                created_at: r.try_get("created_at")?,
                synced_at: r.try_get("synced_at")?,
                metadata: r.try_get("metadata")?,
            })
        })
        .transpose()
    }

    /// The queue item of a discovery (the newest, should there be several).
    pub async fn queue_id_of(&self, discovery_id: i64) -> Result<Option<i64>, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        queue_id_in(&mut conn, discovery_id).await
    }

    /// Pending items that are due (their `next_retry_after`, if any, has
    /// passed) with a queue id above `after`, in id order: the remote
    /// puller's page (remote mode; no worker here claims them). An item whose
    /// remote failure is waiting out its backoff is not offered.
    pub async fn pending_after(&self, after: i64, limit: u32) -> Result<Vec<ExportedItem>, sqlx::Error> {
        let rows: Vec<(i64, i64, i64, Option<String>, bool)> = sqlx::query_as(
            "SELECT id, discovery_id, IFNULL(sync_attempts, 0), created_at,
                    COALESCE(json_valid(metadata) AND metadata ->> 'backfill', 0) != 0
             FROM sync_queue
             WHERE id > ?1 AND IFNULL(sync_status, 'pending') = 'pending'
               AND (next_retry_after IS NULL OR next_retry_after <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
             ORDER BY id LIMIT ?2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(queue_id, discovery_id, sync_attempts, created_at, backfill)| ExportedItem {
                    queue_id,
                    discovery_id,
                    sync_attempts,
                    created_at,
                    backfill,
                },
            )
            .collect())
    }

    /// Marks items a remote puller wrote to its VH-Database as synced, in one
    /// statement; items already synced, being synced here, or unknown are
    /// reported and left alone. `plugin` (the puller's name, version, hash)
    /// is remembered under `plugin` in each item's metadata, as the local
    /// worker remembers its own.
    pub async fn acknowledge(
        &self,
        acks: &[Ack],
        plugin: Option<&crate::mapper::PluginInfo>,
    ) -> Result<AckOutcome, sqlx::Error> {
        let mut metadata = json!({"pulled": true});
        if let Some(plugin) = plugin {
            metadata["plugin"] = json!(plugin);
        }
        let delivered: Vec<Delivered> = acks
            .iter()
            .map(|a| Delivered {
                queue_id: a.queue_id,
                haven_id: a.haven_discovery_id,
                metadata: {
                    let mut m = metadata.clone();
                    if a.keeper_db_replaced {
                        m["keeper_db_replaced"] = json!(true);
                    }
                    m
                },
                keeper_db_replaced: a.keeper_db_replaced,
            })
            .collect();
        let mut conn = self.pool.acquire().await?;
        let acknowledged = mark_synced(&mut conn, None, &delivered).await?;
        let ids = serde_json::Value::Array(acks.iter().map(|a| json!(a.queue_id)).collect()).to_string();
        let states: Vec<(i64, Option<String>)> =
            sqlx::query_as("SELECT id, sync_status FROM sync_queue WHERE id IN (SELECT value FROM json_each(?1))")
                .bind(&ids)
                .fetch_all(&mut *conn)
                .await?;
        let mut outcome = AckOutcome::default();
        let mut seen = std::collections::BTreeSet::new();
        for ack in acks {
            if !seen.insert(ack.queue_id) || acknowledged.binary_search(&ack.queue_id).is_ok() {
                continue;
            }
            match states
                .iter()
                .find(|(id, _)| *id == ack.queue_id)
                .map(|(_, s)| s.as_deref())
            {
                None => outcome.unknown.push(ack.queue_id),
                Some(Some("synced")) => outcome.already_synced.push(ack.queue_id),
                Some(_) => outcome.in_progress.push(ack.queue_id),
            }
        }
        outcome.acknowledged = acknowledged;
        Ok(outcome)
    }

    /// Records failures a remote puller reports, with the rules of the local
    /// worker's own failures ([`Queue::complete`]): one more attempt, the
    /// error and its class, the backoff before the item is exported again, or
    /// `max_retries_exceeded` when the attempts are used up or the class is
    /// permanent. Only pending items change; the rest are reported.
    pub async fn fail_remote(&self, failures: &[RemoteFailure]) -> Result<FailOutcome, sqlx::Error> {
        let mut seen = std::collections::BTreeSet::new();
        let failures: Vec<&RemoteFailure> = failures.iter().filter(|f| seen.insert(f.queue_id)).collect();
        let ids = serde_json::Value::Array(failures.iter().map(|f| json!(f.queue_id)).collect()).to_string();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let states: Vec<(i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT id, sync_status, IFNULL(sync_attempts, 0) FROM sync_queue
             WHERE id IN (SELECT value FROM json_each(?1))",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut outcome = FailOutcome::default();
        let mut pending = Vec::new();
        for f in failures {
            match states.iter().find(|(id, _, _)| *id == f.queue_id) {
                None => outcome.unknown.push(f.queue_id),
                Some((_, status, attempts)) if status.as_deref().unwrap_or("pending") == "pending" => {
                    pending.push(Failed {
                        queue_id: f.queue_id,
                        attempts: u32::try_from(*attempts).unwrap_or(0),
                        class: f.class,
                        message: f.message.clone(),
                    })
                }
                Some(_) => outcome.not_pending.push(f.queue_id),
            }
        }
        if !pending.is_empty() {
            for (queue_id, status) in mark_failed(&mut tx, None, self.policy, &pending).await? {
                match status {
                    SyncStatus::MaxRetriesExceeded => outcome.gave_up.push(queue_id),
                    _ => outcome.retrying.push(queue_id),
                }
            }
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// The most recently failed items first, with what keeper.db says of
    /// their reports. A report on a damaged page of keeper.db is listed
    /// without those details: a poison row must not hide the others.
    pub async fn failed(&self, limit: u32) -> Result<Vec<FailedItem>, sqlx::Error> {
        let mut items: Vec<FailedItem> = sqlx::query_as::<_, (i64, i64, i64, Option<String>)>(
            "SELECT id, discovery_id, COALESCE(sync_attempts, 0), sync_error
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

    /// The most recently synced items, newest first, as (queue id, discovery
    /// id): what `keeper plugin preview` maps again.
    pub async fn last_synced(&self, limit: u32) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, discovery_id FROM sync_queue WHERE sync_status = 'synced'
             ORDER BY synced_at DESC, id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Queues every discovery that has no queue row (a keeper.db adopted from
    /// the old bot); returns how many. They are marked so that the sink links
    /// any the old bot already wrote instead of inserting them twice.
    pub async fn backfill(&self) -> Result<u64, sqlx::Error> {
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
    token: Option<&str>,
    delivered: &[Delivered],
) -> Result<Vec<i64>, sqlx::Error> {
    let payload: Vec<serde_json::Value> = delivered
        .iter()
        .map(|d| json!({"queue_id": d.queue_id, "haven_id": d.haven_id, "meta": d.metadata}))
        .collect();
    let mut marked: Vec<i64> = sqlx::query_scalar(
        "WITH j AS MATERIALIZED (
             SELECT value ->> 'queue_id' AS queue_id, value ->> 'haven_id' AS haven_id, value -> 'meta' AS meta
             FROM json_each(?1))
         UPDATE sync_queue
         SET sync_status = 'synced', haven_discovery_id = j.haven_id,
             synced_at = datetime('now'), sync_attempts = COALESCE(sync_attempts, 0) + 1,
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
                    THEN IFNULL(sync_queue.sync_status, 'pending') IN ('pending', 'max_retries_exceeded')
                    ELSE sync_queue.claim_token = ?2 END
         RETURNING sync_queue.id",
    )
    .bind(serde_json::Value::Array(payload).to_string())
    .bind(token)
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
    token: Option<&str>,
    policy: RetryPolicy,
    failed: &[Failed],
) -> Result<Vec<(i64, SyncStatus)>, sqlx::Error> {
    let payload: Vec<serde_json::Value> = failed
        .iter()
        .map(|f| {
            let (status, delay) = match policy.after_failure(f.attempts.saturating_add(1), f.class.is_permanent()) {
                AfterFailure::RetryIn(d) => (SyncStatus::Pending, Some(d.as_secs())),
                AfterFailure::GiveUp => (SyncStatus::MaxRetriesExceeded, None),
            };
            json!({"queue_id": f.queue_id, "status": status.as_str(), "delay": delay,
                   "class": f.class.as_str(), "error": f.message})
        })
        .collect();
    let changed: Vec<(i64, String)> = sqlx::query_as(
        "WITH j AS MATERIALIZED (
             SELECT value ->> 'queue_id' AS queue_id, value ->> 'status' AS status,
                 value ->> 'error' AS error, value ->> 'class' AS class, value ->> 'delay' AS delay
             FROM json_each(?1))
         UPDATE sync_queue
         SET sync_status = j.status,
             sync_attempts = COALESCE(sync_attempts, 0) + 1, max_attempts = ?3,
             sync_error = j.error, error_class = j.class,
             next_retry_after = CASE WHEN j.delay IS NULL THEN NULL
                 ELSE strftime('%Y-%m-%d %H:%M:%f', 'now', '+' || j.delay || ' seconds') END,
             last_sync_attempt = CASE WHEN ?2 IS NULL THEN strftime('%Y-%m-%d %H:%M:%f', 'now')
                 ELSE sync_queue.last_sync_attempt END,
             lease_expires_at = NULL, claim_token = NULL
         FROM j
         WHERE sync_queue.id = j.queue_id
           AND CASE WHEN ?2 IS NULL
                    THEN IFNULL(sync_queue.sync_status, 'pending') = 'pending'
                    ELSE sync_queue.claim_token = ?2 END
         RETURNING sync_queue.id, sync_queue.sync_status",
    )
    .bind(serde_json::Value::Array(payload).to_string())
    .bind(token)
    .bind(policy.max_attempts)
    .fetch_all(&mut *conn)
    .await?;
    Ok(changed
        .into_iter()
        .map(|(id, status)| {
            let status = if status == SyncStatus::MaxRetriesExceeded.as_str() {
                SyncStatus::MaxRetriesExceeded
            } else {
                SyncStatus::Pending
            };
            (id, status)
        })
        .collect())
}

/// Queues the discoveries with ids above `after`: called by the submission
/// transaction that has just inserted them, so both commit together.
pub async fn enqueue_discoveries_after(
    conn: &mut SqliteConnection,
    after: i64,
    max_attempts: u32,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO sync_queue (discovery_id, max_attempts)
         SELECT id, ?2 FROM discoveries WHERE id > ?1 ORDER BY id",
    )
    .bind(after)
    .bind(max_attempts)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// The queue item of a discovery, inside the caller's transaction (the
/// intake that just enqueued it).
pub async fn queue_id_in(conn: &mut SqliteConnection, discovery_id: i64) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT MAX(id) FROM sync_queue WHERE discovery_id = ?1")
        .bind(discovery_id)
        .fetch_one(&mut *conn)
        .await
}

/// A row of [`Queue::troubles`].
type TroubledRow = (i64, i64, bool, i64, Option<String>, Option<String>, Option<String>);

/// A manual retry that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RetryRefused {
    #[error(transparent)]
    Refused(#[from] RetryError),
    #[error("keeper.db: {0}")]
    Sql(#[from] sqlx::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(30),
            max_delay: Duration::from_secs(86_400),
            max_attempts: 10,
        }
    }

    #[test]
    fn backoff_follows_the_guide() {
        let p = policy();
        let delays: Vec<u64> = (1..=9).map(|n| p.delay_after(n).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3840, 7680]);
    }

    #[test]
    fn tenth_failure_gives_up() {
        let p = policy();
        assert_eq!(
            p.after_failure(9, false),
            AfterFailure::RetryIn(Duration::from_secs(7680))
        );
        assert_eq!(p.after_failure(10, false), AfterFailure::GiveUp);
        assert_eq!(p.after_failure(1, true), AfterFailure::GiveUp);
    }

    /// The claim's plan: both partial indexes walked, nothing sorted.
    #[tokio::test]
    async fn claim_walks_its_indexes_and_never_sorts_the_backlog() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::store::Store::open(&dir.path().join("keeper.db"), crate::store::Access::Create)
            .await
            .expect("open keeper.db");
        let plan = explain(store.pool()).await;
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

    #[test]
    fn delay_is_capped_and_never_overflows() {
        let p = RetryPolicy {
            max_delay: Duration::from_secs(600),
            ..policy()
        };
        assert_eq!(p.delay_after(6).as_secs(), 600);
        assert_eq!(p.delay_after(u32::MAX).as_secs(), 600);
    }
}
