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
//! One contract, two drivers: [`Queue`] is the state machine's API; each
//! operation runs one driver's SQL, `queue/sqlite.rs` (keeper.db) or
//! `queue/postgres.rs` (`KEEPER_DATABASE_URL`, several hosts on one queue:
//! claims take rows with `FOR UPDATE SKIP LOCKED`). What a failure leads to
//! (the retry rule, the error classes) is decided here, once, for both.
//!
//! Times come from the database's clock. On SQLite they are stored as UTC
//! text; the ones the queue compares to decide what is due
//! (`last_sync_attempt`, `next_retry_after`, `lease_expires_at`) carry
//! milliseconds; the rest keep the guide's `YYYY-MM-DD HH:MM:SS`. A
//! second-precision value from the old bot still compares correctly. On
//! PostgreSQL they are `timestamptz`, given out as the same UTC text.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::clock::Clock;
use crate::db::{Db, text_column};
use crate::store::write_turn::WriteTurn;

#[cfg(test)]
mod driver_tests;
pub(crate) mod postgres;
pub(crate) mod sqlite;

/// The states of the guide, as stored in `sync_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, poem_openapi::Enum)]
#[serde(rename_all = "snake_case")]
#[oai(rename_all = "snake_case")]
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

    /// The state stored as `name`; `None` for a name the guide does not have.
    pub fn parse(name: &str) -> Option<SyncStatus> {
        [
            SyncStatus::Pending,
            SyncStatus::Syncing,
            SyncStatus::Synced,
            SyncStatus::MaxRetriesExceeded,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

text_column!(SyncStatus);

impl std::fmt::Display for SyncStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
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

    /// What usually fixes it, for an operator looking at failed items (the
    /// console shows it beside each class).
    pub fn remedy(self) -> &'static str {
        match self {
            ErrorClass::Unavailable => {
                "Check that HAVEN_DB_PATH points at Control Room's VH-Database.db and that the file is there \
                 and readable (see /health's haven_db); items retry by themselves once it is."
            }
            ErrorClass::Locked => {
                "Another program holds VH-Database (Control Room mid-write, a DB browser with unsaved changes): \
                 close it or raise HAVEN_BUSY_TIMEOUT_MS, then retry this class."
            }
            ErrorClass::Full => "Free space on VH-Database's disk (or raise its quota), then retry this class.",
            ErrorClass::ReadOnly => {
                "Make VH-Database, its folder and its mount writable for the user keeper runs as, then retry \
                 this class."
            }
            ErrorClass::Schema => {
                "VH-Database's discoveries table and the plugin's row disagree: update Control Room's schema or \
                 activate a plugin that fits it (its activation retries these), then retry this class."
            }
            ErrorClass::Mapping => {
                "The plugin refused these reports or broke on them: a retry with the same plugin fails again. \
                 Activate a fixed plugin (it heals them), or correct the reports in keeper.db and retry."
            }
            ErrorClass::Timeout => {
                "The plugin ran past KEEPER_PLUGIN_TIMEOUT_MS: usually a busy machine; retry this class, or raise \
                 the deadline if it keeps happening."
            }
            ErrorClass::Source => {
                "keeper.db's row cannot be read (a damaged page, bytes that are not UTF-8): restore or repair \
                 keeper.db (sqlite3 .recover), then retry this class."
            }
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

    /// A class as labelled in counts and metrics: `unknown` when an item's
    /// failure has no class recorded (a legacy row).
    pub fn label(class: Option<ErrorClass>) -> &'static str {
        class.map_or("unknown", ErrorClass::as_str)
    }
}

text_column!(ErrorClass);

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

crate::db::from_row! {
    /// An item handed to a worker by [`Queue::claim`]. Read by column name
    /// (`FromRow`): each driver's claim returns these columns.
    #[derive(Debug, Clone)]
    pub struct ClaimedItem {
        pub queue_id: i64 = "id",
        pub discovery_id: i64,
        /// Attempts that had finished before this one.
        pub attempts: u32 as i64,
        /// Enqueued by `keeper backfill`: may already be in VH-Database from the old bot.
        pub backfill: bool,
    }
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

impl QueueCounts {
    /// Queue depth from (state, items) rows, as both drivers count them.
    pub fn from_rows(rows: impl IntoIterator<Item = (SyncStatus, i64)>) -> QueueCounts {
        let mut counts = QueueCounts::default();
        for (status, n) in rows {
            match status {
                SyncStatus::Pending => counts.pending += n,
                SyncStatus::Syncing => counts.syncing += n,
                SyncStatus::Synced => counts.synced += n,
                SyncStatus::MaxRetriesExceeded => counts.failed += n,
            }
        }
        counts
    }
}

/// Pending items waiting out a retry's backoff (their next attempt is in
/// the future). The four states alone show them as plain `pending`, which
/// hides that they failed and when they will be tried again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Waiting {
    pub count: i64,
    /// When the first of them is due again, as stored (SQLite's UTC text).
    pub next_retry_after: Option<String>,
    /// Their last attempt's error class (`None`: not recorded) and how
    /// many have it, by class name.
    pub last_error_classes: Vec<(Option<ErrorClass>, i64)>,
}

crate::db::from_row! {
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
}

crate::db::from_row! {
    /// An item a moderator should look at: out of attempts, or waiting out a
    /// retry's backoff after a failure (what `/sync-status` lists).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TroubledItem {
        pub queue_id: i64 = "id",
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

crate::db::from_row! {
    /// The failed and waiting items of one error class, for the console's
    /// failures page.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct FailureClass {
        /// `None`: no class recorded (an error written by the old bot).
        pub class: Option<ErrorClass>,
        /// Out of attempts (`max_retries_exceeded`).
        pub failed: i64,
        /// Pending again after a failure, waiting out their backoff or due.
        pub waiting: i64,
        /// The item that has waited longest, and when it was submitted (UTC text).
        pub oldest_queue_id: i64,
        pub oldest_created_at: Option<String>,
        /// The most recent failure of the class, and its error.
        pub latest_queue_id: i64,
        pub latest_error: Option<String>,
    }
}

/// What [`Queue::list_items`] looks for; `None` fields match everything.
#[derive(Debug, Clone, Default)]
pub struct ItemFilter {
    pub state: Option<SyncStatus>,
    /// Part of the system's name, any letter case.
    pub system: Option<String>,
    /// Part of the reporter's name, any letter case.
    pub user: Option<String>,
    /// The discovery type as stored (its emoji).
    pub discovery_type: Option<String>,
    /// The last failure's class.
    pub class: Option<ErrorClass>,
    /// Only items with a queue id below this one (the page cursor).
    pub before: Option<i64>,
}

impl ItemFilter {
    /// `text` as a LIKE pattern for "contains": its own `%`, `_` and `\`
    /// match themselves (both drivers' statements say `ESCAPE '\'`).
    fn contains(text: &Option<String>) -> Option<String> {
        text.as_ref().map(|t| {
            let escaped = t.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            format!("%{escaped}%")
        })
    }
}

crate::db::from_row! {
    /// One line of the item list: the queue row and what its report is about.
    /// Times are UTC text, as keeper.db stores them.
    #[derive(Debug, Clone)]
    pub struct ListedItem {
        pub queue_id: i64 = "id",
        pub discovery_id: i64,
        pub sync_status: SyncStatus,
        pub sync_attempts: i64,
        pub error_class: Option<ErrorClass>,
        pub sync_error: Option<String>,
        pub created_at: Option<String>,
        pub synced_at: Option<String>,
        pub haven_discovery_id: Option<i64>,
        /// The host that claimed it last (see [`Queue::named`]).
        pub claimed_by: Option<String>,
        pub system_name: Option<String>,
        pub location: Option<String>,
        pub discovery_type: Option<String>,
        pub username: Option<String>,
    }
}

crate::db::from_row! {
    /// One queue row as stored, for `GET /sync/items/{queue_id}`. Times are
    /// UTC text, as keeper.db stores them.
    #[derive(Debug, Clone)]
    pub struct QueueItem {
        pub queue_id: i64 = "id",
        pub discovery_id: i64,
        pub sync_status: SyncStatus,
        pub sync_attempts: i64,
        pub max_attempts: Option<i64>,
        pub last_sync_attempt: Option<String>,
        pub next_retry_after: Option<String>,
        pub sync_error: Option<String>,
        pub error_class: Option<ErrorClass>,
        pub haven_discovery_id: Option<i64>,
        pub created_at: Option<String>,
        pub synced_at: Option<String>,
        /// The `metadata` column: JSON text (provenance under `plugin`), or
        /// whatever a legacy bot stored there.
        pub metadata: Option<String>,
        /// The host that claimed it last (see [`Queue::named`]); `None` if
        /// never claimed since migration 15.
        pub claimed_by: Option<String>,
    }
}

crate::db::from_row! {
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

crate::db::from_row! {
    /// Counts by (state, error class) for items that are not synced.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ClassCount {
        pub sync_status: SyncStatus,
        /// `None`: the failure has no class recorded (a legacy row).
        pub error_class: Option<ErrorClass>,
        pub count: i64,
    }
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

crate::db::from_row! {
    /// Seconds from submission (`created_at`) to `synced_at`.
    #[derive(Debug, Clone, Copy, Default, PartialEq)]
    pub struct LatencySummary {
        pub count: i64,
        pub average: Option<f64>,
        pub p50: Option<f64>,
        pub p95: Option<f64>,
        pub max: Option<f64>,
    }
}

/// Monotonic totals and the latency histogram, maintained by triggers on
/// `sync_queue` in `keeper_sync_counters` (since the keeper.db was migrated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueTotals {
    /// Transitions to `synced`.
    pub synced: i64,
    /// Failed attempts by error class.
    pub failures_by_class: Vec<(ErrorClass, i64)>,
    /// Items now `max_retries_exceeded`, by error class (`None`: none recorded).
    pub failed_by_class: Vec<(Option<ErrorClass>, i64)>,
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetryError {
    #[error("queue item {0} does not exist")]
    NotFound(i64),
    #[error("queue item {0} is already synced")]
    AlreadySynced(i64),
    #[error("queue item {0} is being synced right now")]
    InProgress(i64),
}

/// The queue, with the rules it is run by, on either driver.
#[derive(Clone)]
pub struct Queue {
    driver: Driver,
    policy: RetryPolicy,
    lease: Duration,
    /// Recorded in each item this queue claims (`sync_queue.claimed_by`).
    host: Arc<str>,
}

/// How a host names itself in its claims when `KEEPER_HOST_NAME` is unset:
/// the machine's name and the process id, so two processes on one machine
/// are told apart too.
pub fn default_host_name() -> String {
    let machine = crate::platform::machine_name().unwrap_or_else(|| "unknown-machine".to_owned());
    format!("{machine}:{}", std::process::id())
}

#[derive(Clone)]
enum Driver {
    Sqlite(sqlite::SqliteQueue),
    Postgres(postgres::PgQueue),
}

/// Runs one operation on whichever driver the queue has: the one place
/// each operation chooses its SQL.
macro_rules! on_driver {
    ($queue:expr, $op:ident ( $($arg:expr),* )) => {
        match &$queue.driver {
            Driver::Sqlite(q) => q.$op($($arg),*).await,
            Driver::Postgres(q) => q.$op($($arg),*).await,
        }
    };
}

impl Queue {
    pub fn new(db: Db, policy: RetryPolicy, lease: Duration) -> Queue {
        let clock = Clock::default();
        let driver = match db {
            Db::Sqlite(pool) => Driver::Sqlite(sqlite::SqliteQueue {
                pool,
                policy,
                lease,
                turn: WriteTurn::default(),
                clock,
            }),
            Db::Postgres(pool) => Driver::Postgres(postgres::PgQueue {
                pool,
                policy,
                lease,
                clock,
            }),
        };
        Queue {
            driver,
            policy,
            lease,
            host: default_host_name().into(),
        }
    }

    /// The same queue, its claims and completions taking `turn` at
    /// keeper.db's write lock: the store's ([`crate::store::Store::write_turn`]),
    /// so that intake and the worker take turns. No effect on PostgreSQL.
    pub fn sharing_write_turn(mut self, turn: WriteTurn) -> Queue {
        if let Driver::Sqlite(queue) = &mut self.driver {
            queue.turn = turn;
        }
        self
    }

    /// The same queue on `clock`: tests move it forward to end a backoff
    /// or a lease at once (`clock.rs`).
    pub fn with_clock(mut self, clock: Clock) -> Queue {
        match &mut self.driver {
            Driver::Sqlite(queue) => queue.clock = clock,
            Driver::Postgres(queue) => queue.clock = clock,
        }
        self
    }

    /// The same queue, naming its claims `host` (`KEEPER_HOST_NAME`),
    /// trimmed; a blank name keeps the default ([`default_host_name`]).
    pub fn named(mut self, host: &str) -> Queue {
        let host = host.trim();
        if !host.is_empty() {
            self.host = host.into();
        }
        self
    }

    /// How this host names itself in its claims.
    pub fn host_name(&self) -> &str {
        &self.host
    }

    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The database's clock with (at least) milliseconds, as
    /// `last_sync_attempt` is stored; given back to [`Queue::claim`] as
    /// `not_tried_since`.
    pub async fn now(&self) -> Result<String, sqlx::Error> {
        on_driver!(self, now())
    }

    /// Takes up to `limit` due items (on keeper.db, the write lock handed to
    /// a waiting intake group every 100): pending ones whose retry
    /// time has come, and syncing ones whose lease has expired. With
    /// `not_tried_since`, a pending item last attempted at or after that time
    /// is left for the next pass, so one pass tries each item at most once
    /// even when its retry delay is zero. On PostgreSQL, claims from several
    /// hosts at once never take the same item (`FOR UPDATE SKIP LOCKED`).
    pub async fn claim(&self, limit: u32, not_tried_since: Option<&str>) -> Result<Claim, sqlx::Error> {
        let token = format!("{:032x}", rand::random::<u128>());
        let mut items = on_driver!(self, claim(&token, limit, not_tried_since, &self.host))?;
        items.sort_by_key(|i| i.queue_id);
        Ok(Claim { token, items })
    }

    /// Extends the lease of a batch that is still being worked on.
    pub async fn renew(&self, token: &str) -> Result<u64, sqlx::Error> {
        on_driver!(self, renew(token))
    }

    /// Gives a claimed batch back untouched (shutdown before it was worked on).
    pub async fn release(&self, token: &str) -> Result<u64, sqlx::Error> {
        on_driver!(self, release(token))
    }

    /// Records the outcome of a batch; only items still held under `token`
    /// change. In one transaction, except on keeper.db while an intake
    /// group waits for the write lock: then it is handed over every 100
    /// items (an item left out by a failure keeps its lease and is
    /// delivered again).
    pub async fn complete(&self, token: &str, delivered: &[Delivered], failed: &[Failed]) -> Result<(), sqlx::Error> {
        let failed = failure_payload(self.policy, failed);
        on_driver!(self, complete(token, delivered, &failed))
    }

    /// Makes one item due now with a fresh attempt count (the guide's manual retry).
    pub async fn retry(&self, queue_id: i64) -> Result<(), RetryRefused> {
        match on_driver!(self, retry(queue_id))? {
            None => Ok(()),
            Some(found) => Err(RetryRefused::Refused(match found {
                None => RetryError::NotFound(queue_id),
                Some(SyncStatus::Synced) => RetryError::AlreadySynced(queue_id),
                Some(_) => RetryError::InProgress(queue_id),
            })),
        }
    }

    /// Retries every `max_retries_exceeded` item; returns how many.
    pub async fn retry_all_failed(&self) -> Result<u64, sqlx::Error> {
        on_driver!(self, requeue_failed(&[]))
    }

    /// Retries the items whose last failure is of `class`, failed or still
    /// waiting out a backoff: after fixing the cause (a schema, a lock) an
    /// operator retries just those. Returns how many.
    pub async fn retry_class(&self, class: ErrorClass) -> Result<u64, sqlx::Error> {
        on_driver!(self, requeue_failed(&[class]))
    }

    /// Retries the items that failed because of what the plugin did — it
    /// refused or broke (`mapping`), ran past its deadline (`timeout`), or
    /// returned a row that does not fit the table (`schema`) — failed or
    /// still waiting: called when a new plugin version becomes active.
    pub async fn requeue_mapping_failures(&self) -> Result<u64, sqlx::Error> {
        on_driver!(
            self,
            requeue_failed(&[ErrorClass::Mapping, ErrorClass::Timeout, ErrorClass::Schema])
        )
    }

    /// Deletes synced items older than `days`; returns how many.
    pub async fn cleanup(&self, days: u32) -> Result<u64, sqlx::Error> {
        on_driver!(self, cleanup(days))
    }

    /// Queue depth by state.
    pub async fn counts(&self) -> Result<QueueCounts, sqlx::Error> {
        on_driver!(self, counts())
    }

    /// The pending items whose next attempt is in the future.
    pub async fn waiting(&self) -> Result<Waiting, sqlx::Error> {
        let rows = on_driver!(self, waiting())?;
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
        let (items, failed_classes) = on_driver!(self, troubles(limit))?;
        // By class name; the unknown class is counted but not listed.
        let mut by_class: std::collections::BTreeMap<&str, (Option<ErrorClass>, i64)> =
            std::collections::BTreeMap::new();
        let waiting_classes = self.waiting().await?.last_error_classes;
        for (class, n) in failed_classes.into_iter().chain(waiting_classes) {
            by_class.entry(ErrorClass::label(class)).or_insert((class, 0)).1 += n;
        }
        Ok(Troubles {
            items,
            total: by_class.values().map(|(_, n)| n).sum(),
            classes: by_class
                .into_values()
                .filter_map(|(class, n)| Some((class?, n)))
                .collect(),
        })
    }

    /// Totals and the latency histogram for `/metrics`.
    pub async fn totals(&self) -> Result<QueueTotals, sqlx::Error> {
        let (counters, failed_by_class) = on_driver!(self, totals())?;
        let mut totals = QueueTotals {
            latency_buckets: LATENCY_BUCKETS
                .iter()
                .map(|le| (Some(*le), 0))
                .chain([(None, 0)])
                .collect(),
            failed_by_class,
            ..QueueTotals::default()
        };
        for (counter, label, value) in counters {
            match counter.as_str() {
                "synced_total" => totals.synced += value,
                "failures_total" => match ErrorClass::parse(&label) {
                    Some(class) => totals.failures_by_class.push((class, value)),
                    None => {
                        tracing::warn!(class = %label, "failed attempts counted under a class this keeper does not know")
                    }
                },
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
        totals.failures_by_class.sort_by_key(|(class, _)| class.as_str());
        Ok(totals)
    }

    /// The detailed figures of `/sync/statistics`. Unlike [`Queue::counts`]
    /// these read the unsynced items (and the last day's synced ones).
    pub async fn statistics(&self) -> Result<QueueStatistics, sqlx::Error> {
        on_driver!(self, statistics())
    }

    /// Items synced in each of the last 60 minutes, the oldest minute first
    /// (the console's chart).
    pub async fn synced_per_minute(&self) -> Result<Vec<i64>, sqlx::Error> {
        let rows = on_driver!(self, synced_per_minute())?;
        let mut minutes = vec![0; 60];
        for (ago, count) in rows {
            if let Some(slot) = usize::try_from(ago).ok().filter(|a| *a < 60).map(|a| 59 - a) {
                minutes[slot] += count;
            }
        }
        Ok(minutes)
    }

    /// Failed and waiting items (pending or `max_retries_exceeded` with an
    /// error) grouped by their last failure's class, the class with the most
    /// failed items first.
    pub async fn failure_classes(&self) -> Result<Vec<FailureClass>, sqlx::Error> {
        let mut classes = on_driver!(self, failure_classes())?;
        classes.sort_by_key(|c| {
            (
                std::cmp::Reverse(c.failed),
                std::cmp::Reverse(c.waiting),
                c.oldest_queue_id,
            )
        });
        Ok(classes)
    }

    /// Items matching `filter`, the newest first, at most `limit`, with
    /// what keeper.db says of their reports: the console's searchable list.
    pub async fn list_items(&self, filter: &ItemFilter, limit: u32) -> Result<Vec<ListedItem>, sqlx::Error> {
        on_driver!(self, list_items(filter, limit))
    }

    /// One queue row, or `None` when there is no such item.
    pub async fn item(&self, queue_id: i64) -> Result<Option<QueueItem>, sqlx::Error> {
        on_driver!(self, item(queue_id))
    }

    /// The queue item of a discovery (the newest, should there be several).
    pub async fn queue_id_of(&self, discovery_id: i64) -> Result<Option<i64>, sqlx::Error> {
        on_driver!(self, queue_id_of(discovery_id))
    }

    /// Pending items that are due (their `next_retry_after`, if any, has
    /// passed) with a queue id above `after`, in id order: the remote
    /// puller's page (remote mode; no worker here claims them). An item whose
    /// remote failure is waiting out its backoff is not offered.
    pub async fn pending_after(&self, after: i64, limit: u32) -> Result<Vec<ExportedItem>, sqlx::Error> {
        on_driver!(self, pending_after(after, limit))
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
        let ids: Vec<i64> = acks.iter().map(|a| a.queue_id).collect();
        let (mut acknowledged, states) = on_driver!(self, acknowledge(&delivered, &ids))?;
        acknowledged.sort_unstable();
        let mut outcome = AckOutcome::default();
        let mut seen = std::collections::BTreeSet::new();
        for ack in acks {
            if !seen.insert(ack.queue_id) || acknowledged.binary_search(&ack.queue_id).is_ok() {
                continue;
            }
            match states.iter().find(|(id, _)| *id == ack.queue_id).map(|(_, s)| *s) {
                None => outcome.unknown.push(ack.queue_id),
                Some(SyncStatus::Synced) => outcome.already_synced.push(ack.queue_id),
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
        let policy = self.policy;
        // The driver reads the items' states and records the failures of the
        // pending ones in one transaction; what to record is decided here.
        let decide = |states: &[(i64, SyncStatus, i64)]| {
            let mut outcome = FailOutcome::default();
            let mut pending = Vec::new();
            for f in &failures {
                match states.iter().find(|(id, _, _)| *id == f.queue_id) {
                    None => outcome.unknown.push(f.queue_id),
                    Some((_, SyncStatus::Pending, attempts)) => pending.push(Failed {
                        queue_id: f.queue_id,
                        attempts: u32::try_from(*attempts).unwrap_or(0),
                        class: f.class,
                        message: f.message.clone(),
                    }),
                    Some(_) => outcome.not_pending.push(f.queue_id),
                }
            }
            (outcome, failure_payload(policy, &pending))
        };
        let ids: Vec<i64> = failures.iter().map(|f| f.queue_id).collect();
        let (mut outcome, changed) = on_driver!(self, fail_remote(&ids, &decide))?;
        for (queue_id, status) in changed {
            match status {
                SyncStatus::MaxRetriesExceeded => outcome.gave_up.push(queue_id),
                _ => outcome.retrying.push(queue_id),
            }
        }
        Ok(outcome)
    }

    /// The most recently failed items first, with what keeper.db says of
    /// their reports.
    pub async fn failed(&self, limit: u32) -> Result<Vec<FailedItem>, sqlx::Error> {
        on_driver!(self, failed(limit))
    }

    /// The most recently synced items, newest first, as (queue id, discovery
    /// id): what `keeper plugin preview` maps again.
    pub async fn last_synced(&self, limit: u32) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        on_driver!(self, last_synced(limit))
    }

    /// Queues every discovery that has no queue row (a keeper.db adopted from
    /// the old bot); returns how many. They are marked so that the sink links
    /// any the old bot already wrote instead of inserting them twice.
    pub async fn backfill(&self) -> Result<u64, sqlx::Error> {
        on_driver!(self, backfill())
    }
}

/// Delivered items as each driver's synced transition unpacks them: one
/// JSON array of `queue_id`, `haven_id` and `meta` (merged into the item's
/// metadata), written straight into its text. (Built as a
/// `serde_json::Value` first, a batch of 1,000 held its metadata twice more
/// while the worker mapped the next batch.)
pub(crate) fn delivery_payload(delivered: &[Delivered]) -> Result<String, sqlx::Error> {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        queue_id: i64,
        haven_id: i64,
        meta: &'a serde_json::Value,
    }
    let entries: Vec<Entry<'_>> = delivered
        .iter()
        .map(|d| Entry {
            queue_id: d.queue_id,
            haven_id: d.haven_id,
            meta: &d.metadata,
        })
        .collect();
    serde_json::to_string(&entries).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// What a failed attempt leads to, decided once for both drivers by the
/// retry policy: one JSON array, unpacked by each driver's failure
/// transition (`queue_id`, `status`, `delay` in seconds or null, `class`,
/// `error`).
pub(crate) fn failure_payload(policy: RetryPolicy, failed: &[Failed]) -> serde_json::Value {
    failed
        .iter()
        .map(|f| {
            let (status, delay) = match policy.after_failure(f.attempts.saturating_add(1), f.class.is_permanent()) {
                AfterFailure::RetryIn(d) => (SyncStatus::Pending, Some(d.as_secs())),
                AfterFailure::GiveUp => (SyncStatus::MaxRetriesExceeded, None),
            };
            json!({"queue_id": f.queue_id, "status": status.as_str(), "delay": delay,
                   "class": f.class.as_str(), "error": f.message})
        })
        .collect()
}

/// [`Queue::fail_remote`]'s decision, given the states the driver read
/// inside its transaction: what to report, and the failures to record.
pub(crate) type DecideRemoteFailures<'a> =
    dyn Fn(&[(i64, SyncStatus, i64)]) -> (FailOutcome, serde_json::Value) + Send + Sync + 'a;

/// A manual retry's outcome from a driver: `None` when the item was made
/// due; else what was found instead (`None`: no such item).
pub(crate) type RetryFound = Option<Option<SyncStatus>>;

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
    fn a_host_is_named_by_its_machine_and_process() {
        let name = super::default_host_name();
        let (machine, pid) = name.rsplit_once(':').expect("machine:pid");
        assert!(!machine.is_empty(), "{name}");
        assert_eq!(pid, std::process::id().to_string());
    }

    #[tokio::test]
    async fn a_blank_host_name_keeps_the_default_and_a_given_one_is_trimmed() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:")
            .await
            .expect("in-memory SQLite");
        let queue = Queue::new(Db::Sqlite(pool), policy(), Duration::from_secs(60));
        for blank in ["", "   ", "\t\n"] {
            assert_eq!(queue.clone().named(blank).host_name(), default_host_name(), "{blank:?}");
        }
        assert_eq!(queue.named("  bot-host-2 ").host_name(), "bot-host-2");
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
