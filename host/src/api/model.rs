//! The API's request and response bodies. These types are the documentation:
//! their doc comments become the OpenAPI descriptions. The guide's five
//! endpoints keep its field names exactly; ours add fields, never rename.
//! `keeper status --json` and `keeper failed --json` print the same types.

use std::collections::BTreeMap;

use poem_openapi::{Enum, Object};
use time::OffsetDateTime;

use super::nullable::Nullable;
use crate::plugins::canary::CanaryState;
use crate::queue::{ErrorClass, FailedItem, QueueCounts, SyncStatus};
use crate::registry::{Activation, PluginStatus};

/// `ok` on every successful answer (errors say `error`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum OkStatus {
    #[default]
    Ok,
}

/// Whether the service can do its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum HealthState {
    /// No problem: reports are stored and reach VH-Database.
    Healthy,
    /// Running, but something in `problems` stops part of the job. HTTP 200.
    Degraded,
    /// keeper.db cannot be read at its path: nothing can be stored or
    /// synced. HTTP 503.
    Unhealthy,
}

/// What a problem is about, for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ProblemKind {
    /// keeper.db cannot be opened or read at its path (makes the status `unhealthy`).
    KeeperDbUnreadable,
    /// keeper.db can be read but not written (read-only, or locked by another program).
    KeeperDbNotWritable,
    /// The worker cannot use VH-Database (missing, locked, unreadable); `since` says from when.
    VhDatabaseUnreachable,
    /// The last sync passes failed; the message says how many and why.
    SyncPassesFailing,
    /// This process should run a sync worker and does not.
    SyncWorkerStopped,
    /// DISCORD_TOKEN is set but the bot has no live gateway session.
    DiscordGatewayDown,
    /// Another host (or process) on the store activated a mapping plugin
    /// this host cannot run (damaged in the store, or beyond this host's
    /// plugin limits): this host keeps running its own.
    PluginNotFollowed,
}

impl ProblemKind {
    /// Every kind, in the order `/metrics` lists them.
    pub const ALL: [ProblemKind; 7] = [
        ProblemKind::KeeperDbUnreadable,
        ProblemKind::KeeperDbNotWritable,
        ProblemKind::VhDatabaseUnreachable,
        ProblemKind::SyncPassesFailing,
        ProblemKind::SyncWorkerStopped,
        ProblemKind::DiscordGatewayDown,
        ProblemKind::PluginNotFollowed,
    ];

    /// The name in JSON and in `/metrics` labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::KeeperDbUnreadable => "keeper_db_unreadable",
            ProblemKind::KeeperDbNotWritable => "keeper_db_not_writable",
            ProblemKind::VhDatabaseUnreachable => "vh_database_unreachable",
            ProblemKind::SyncPassesFailing => "sync_passes_failing",
            ProblemKind::SyncWorkerStopped => "sync_worker_stopped",
            ProblemKind::DiscordGatewayDown => "discord_gateway_down",
            ProblemKind::PluginNotFollowed => "plugin_not_followed",
        }
    }
}

/// One thing that keeps the service from doing its whole job.
#[derive(Debug, Clone, Object)]
pub struct HealthProblem {
    pub problem: ProblemKind,
    /// What is wrong and what it stops, for people.
    pub message: String,
    /// When it started, when known.
    pub since: Nullable<OffsetDateTime>,
}

/// `GET /health`: the guide's four fields, plus what is wrong.
/// `bot_gateway` is the Discord gateway session's state, read from the
/// gateway connection itself: `disabled` without DISCORD_TOKEN.
// (Fields whose type is a schema of its own carry no doc comment: it would
// wrap the reference in an `allOf`, which client generators mishandle.)
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Health {
    pub status: HealthState,
    /// The Discord bot has a live gateway session: `bot_gateway` is
    /// `connected` (false when DISCORD_TOKEN is not set).
    pub bot_online: bool,
    pub bot_gateway: crate::bot::GatewayState,
    pub sync_worker_running: bool,
    /// Now, UTC.
    pub timestamp: OffsetDateTime,
    /// keeper.db can be opened and read at its path.
    pub keeper_db_reachable: bool,
    /// Empty when `healthy`; otherwise each problem, named.
    pub problems: Vec<HealthProblem>,
    /// The VH-Database this process writes; null in remote mode
    /// (`USE_HAVEN_DATABASE=false`), where `keeper pull` writes it elsewhere.
    pub haven_db: Nullable<HavenDb>,
}

/// Which VH-Database file this process writes, and how it was chosen: when
/// Control Room shows nothing new, the first thing to compare.
#[derive(Debug, Clone, Object)]
pub struct HavenDb {
    /// The file's path as keeper opens it (relative paths are from keeper's
    /// working folder).
    pub path: String,
    pub source: crate::config::HavenSource,
}

/// The sync worker of this process.
#[derive(Debug, Clone, Object)]
pub struct WorkerReport {
    pub is_running: bool,
    /// Seconds between polls (a submission wakes it at once).
    pub sync_interval: u64,
    /// Seconds since the worker started.
    pub uptime_seconds: u64,
    /// When the worker last finished a batch; null before the first.
    pub last_sync_time: Nullable<OffsetDateTime>,
}

/// The guide's `totals`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Object)]
pub struct Totals {
    /// Items now `synced` (cleanup deletes old ones).
    pub total_synced: i64,
    /// Items now `max_retries_exceeded`.
    pub total_failed: i64,
}

impl From<QueueCounts> for Totals {
    fn from(counts: QueueCounts) -> Totals {
        Totals {
            total_synced: counts.synced,
            total_failed: counts.failed,
        }
    }
}

/// `GET /sync/status` (and `keeper status --json`, without `sync_worker`).
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct SyncStatusReport {
    pub status: OkStatus,
    /// The worker of the serving process; absent from `keeper status --json`,
    /// which runs none.
    #[oai(skip_serializing_if_is_none)]
    pub sync_worker: Option<WorkerReport>,
    pub queue: QueueCounts,
    pub totals: Totals,
}

impl SyncStatusReport {
    pub fn new(sync_worker: Option<WorkerReport>, queue: QueueCounts) -> SyncStatusReport {
        SyncStatusReport {
            status: OkStatus::Ok,
            sync_worker,
            queue,
            totals: queue.into(),
        }
    }
}

/// A `max_retries_exceeded` item with what an operator needs to judge it
/// (the guide's `failed_items` entry).
#[derive(Debug, Clone, Object)]
pub struct FailedItemView {
    pub queue_id: i64,
    pub discovery_id: i64,
    pub sync_attempts: i64,
    /// The last attempt's error, in words an operator can act on.
    pub sync_error: Nullable<String>,
    /// From the keeper.db discovery (null if it is gone).
    pub system_name: Nullable<String>,
    pub location: Nullable<String>,
    pub discovery_type: Nullable<String>,
    pub username: Nullable<String>,
}

impl From<FailedItem> for FailedItemView {
    fn from(i: FailedItem) -> FailedItemView {
        FailedItemView {
            queue_id: i.queue_id,
            discovery_id: i.discovery_id,
            sync_attempts: i.sync_attempts,
            sync_error: i.sync_error.into(),
            system_name: i.system_name.into(),
            location: i.location.into(),
            discovery_type: i.discovery_type.into(),
            username: i.username.into(),
        }
    }
}

/// `GET /sync/failed` (and `keeper failed --json`).
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct FailedList {
    pub status: OkStatus,
    /// Most recently failed first.
    pub failed_items: Vec<FailedItemView>,
    pub count: u64,
}

impl FailedList {
    pub fn new(failed_items: Vec<FailedItem>) -> FailedList {
        FailedList {
            status: OkStatus::Ok,
            count: failed_items.len() as u64,
            failed_items: failed_items.into_iter().map(Into::into).collect(),
        }
    }
}

/// A done deed, in words.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Message {
    pub status: OkStatus,
    pub message: String,
}

/// `POST /sync/retry`.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct RetriedAll {
    pub status: OkStatus,
    pub message: String,
    /// How many `max_retries_exceeded` items were made due again.
    pub retried: u64,
}

/// Unsynced items with an error, by state (`pending`: will be retried, or
/// `max_retries_exceeded`) and error class.
#[derive(Debug, Clone, Object)]
pub struct ErrorClassCount {
    // No doc comment: on a required field of an enum type, poem-openapi
    // writes `allOf` of the enum and the comment, which
    // openapi-python-client refuses (nullable ones are written differently).
    pub sync_status: SyncStatus,
    /// `unavailable`, `locked`, `schema`, `mapping`, `timeout`, `source`, or
    /// `unknown` for an error recorded by the old bot.
    pub error_class: String,
    pub count: i64,
}

/// Unsynced items that have had this many attempts.
#[derive(Debug, Clone, Object)]
pub struct AttemptsCount {
    pub attempts: i64,
    pub count: i64,
}

/// The item that has waited longest.
#[derive(Debug, Clone, Object)]
pub struct OldestPending {
    pub queue_id: i64,
    pub created_at: Nullable<OffsetDateTime>,
    /// Seconds since it was submitted.
    pub age_seconds: Nullable<i64>,
}

/// Submission-to-synced latency, in seconds.
#[derive(Debug, Clone, Object)]
pub struct LatencyStats {
    /// Items the figures are about.
    pub count: i64,
    pub average_seconds: Nullable<f64>,
    pub p50_seconds: Nullable<f64>,
    pub p95_seconds: Nullable<f64>,
    pub max_seconds: Nullable<f64>,
}

/// `GET /sync/statistics`: the queue in more detail than `/sync/status`.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Statistics {
    pub status: OkStatus,
    pub generated_at: OffsetDateTime,
    pub queue: QueueCounts,
    pub totals: Totals,
    /// Items that went from another state to `synced` since keeper.db got its
    /// counters (adopted rows included); not reduced by cleanup.
    pub synced_ever: i64,
    /// Failed attempts by error class since keeper.db got its counters.
    pub failed_attempts_by_class: BTreeMap<String, i64>,
    /// Reports delivered as new although VH-Database's ledger held another
    /// report under the same discovery id: "keeper.db restored or
    /// replaced" (a backup copied back, a stale copy of a live file).
    /// Each is in VH-Database once; the count says it happened.
    pub keeper_db_restored_or_replaced: i64,
    /// Unsynced items that carry an error, by state and class.
    pub errors: Vec<ErrorClassCount>,
    /// Unsynced items by number of finished attempts.
    pub attempts: Vec<AttemptsCount>,
    /// Null when nothing is pending.
    pub oldest_pending: Nullable<OldestPending>,
    pub synced_last_hour: i64,
    pub synced_last_day: i64,
    /// Over the items synced in the last 24 hours.
    pub latency_last_day: LatencyStats,
    /// Items synced in each of the last 60 minutes, the oldest minute first
    /// (60 numbers; the last is the current minute).
    pub synced_per_minute_last_hour: Vec<i64>,
}

/// The failed and waiting items of one error class.
#[derive(Debug, Clone, Object)]
pub struct FailureClassView {
    /// `unavailable`, `locked`, `full`, `read_only`, `schema`, `mapping`,
    /// `timeout`, `source`, or `unknown` for an error recorded by the old bot
    /// (those are retried one by one, or all failed items at once).
    pub error_class: String,
    /// Out of attempts (`max_retries_exceeded`).
    pub failed: i64,
    /// Pending again after a failure: waiting out a backoff, or due.
    pub waiting: i64,
    /// A retry with the same plugin cannot succeed (`mapping`).
    pub permanent: bool,
    /// What usually fixes it.
    pub remedy: String,
    /// The item of the class that has waited longest.
    pub oldest_queue_id: i64,
    /// When that item was submitted.
    pub oldest_created_at: Nullable<OffsetDateTime>,
    /// The item that failed most recently.
    pub latest_queue_id: i64,
    /// Its error, in words an operator can act on.
    pub latest_error: Nullable<String>,
}

/// `GET /sync/failures`: failed and waiting items by error class.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct FailureClasses {
    pub status: OkStatus,
    /// The class with the most failed items first.
    pub classes: Vec<FailureClassView>,
    /// Failed and waiting items in all.
    pub total: i64,
}

/// One line of the item list.
#[derive(Debug, Clone, Object)]
pub struct ItemSummary {
    pub queue_id: i64,
    pub discovery_id: i64,
    pub sync_status: SyncStatus,
    pub sync_attempts: i64,
    pub error_class: Nullable<ErrorClass>,
    pub sync_error: Nullable<String>,
    pub created_at: Nullable<OffsetDateTime>,
    pub synced_at: Nullable<OffsetDateTime>,
    pub haven_discovery_id: Nullable<i64>,
    /// The host that claimed it last (`KEEPER_HOST_NAME`, else machine name
    /// and process id), kept after delivery: with several hosts on one
    /// queue, which one holds a `syncing` item or delivered a `synced` one.
    /// Null if never claimed (or last claimed by a keeper older than this
    /// field).
    pub claimed_by: Nullable<String>,
    /// From the keeper.db discovery (null if it is gone).
    pub system_name: Nullable<String>,
    pub location: Nullable<String>,
    /// As stored: the emoji.
    pub discovery_type: Nullable<String>,
    pub username: Nullable<String>,
}

/// `GET /sync/items`: one page of items, the newest first.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ItemPage {
    pub status: OkStatus,
    pub items: Vec<ItemSummary>,
    pub count: u64,
    /// Pass as `before` for the next page (the last queue id here); null
    /// when there is none.
    pub next_before: Nullable<i64>,
}

/// One plugin version: which one wrote an item to VH-Database, or which
/// two a preview compares.
#[derive(Debug, Clone, Object)]
pub struct Provenance {
    pub name: String,
    pub version: String,
    /// SHA-256 of the plugin's wasm, hex.
    pub hash: String,
}

/// One queue item with everything keeper.db keeps about it.
#[derive(Debug, Clone, Object)]
pub struct QueueItemView {
    pub queue_id: i64,
    pub discovery_id: i64,
    pub sync_status: SyncStatus,
    /// Finished attempts.
    pub sync_attempts: i64,
    pub max_attempts: Nullable<i64>,
    pub last_sync_attempt: Nullable<OffsetDateTime>,
    /// When a pending item is due again; null means now.
    pub next_retry_after: Nullable<OffsetDateTime>,
    /// The last attempt's error: the only error history keeper.db keeps
    /// (every failure is also in the log).
    pub sync_error: Nullable<String>,
    pub error_class: Nullable<ErrorClass>,
    /// The row id in VH-Database's `discoveries`, once synced.
    pub haven_discovery_id: Nullable<i64>,
    /// The host holding a `syncing` item, or the one that claimed it last
    /// (`KEEPER_HOST_NAME`, else machine name and process id); null if
    /// never claimed since keeper recorded it.
    pub claimed_by: Nullable<String>,
    /// When it was submitted.
    pub created_at: Nullable<OffsetDateTime>,
    pub synced_at: Nullable<OffsetDateTime>,
    /// The plugin that mapped it, once synced by this host.
    pub provenance: Nullable<Provenance>,
    /// The item's `metadata` JSON as stored (warnings, provenance, backfill marks).
    pub metadata: Nullable<serde_json::Value>,
}

/// `GET /sync/items/{queue_id}`.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ItemDetail {
    pub status: OkStatus,
    pub item: QueueItemView,
    /// The keeper.db `discoveries` row, column by column; null if it is gone
    /// or unreadable (see `discovery_error`).
    pub discovery: Nullable<serde_json::Value>,
    #[oai(skip_serializing_if_is_none)]
    pub discovery_error: Option<String>,
    /// The VH-Database `discoveries` row the item became, column by column,
    /// as it is there now; absent until the item is synced, and on a host
    /// that does not write VH-Database itself (remote mode).
    #[oai(skip_serializing_if_is_none)]
    pub haven_row: Option<serde_json::Value>,
    /// Why `haven_row` could not be read (VH-Database unreachable, the row
    /// deleted in Control Room).
    #[oai(skip_serializing_if_is_none)]
    pub haven_row_error: Option<String>,
}

/// `POST /discoveries`: the report was stored and queued.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Created {
    pub status: OkStatus,
    /// The new keeper.db discovery id.
    pub discovery_id: i64,
    /// Its sync queue item (see `/sync/items/{queue_id}`).
    pub queue_id: i64,
    pub message: String,
}

/// One plugin in the registry.
#[derive(Debug, Clone, Object)]
pub struct PluginEntry {
    /// Empty for a file that never reported a name (not a plugin at all).
    pub name: String,
    pub version: String,
    /// SHA-256 of the wasm, hex.
    pub hash: String,
    /// `built-in` or the path of the `.wasm` file.
    pub source: String,
    pub status: PluginStatus,
    /// Why a plugin was rejected.
    pub reason: Nullable<String>,
    pub recorded_at: Nullable<OffsetDateTime>,
    pub retired_at: Nullable<OffsetDateTime>,
    /// Memory one instance may use, in MiB, as granted when it was last made
    /// active: what the plugin declared (`requested-limits`), or the ceiling
    /// `KEEPER_PLUGIN_MEMORY_MIB`. Null for a rejected plugin and for one
    /// recorded by an older keeper.
    pub memory_mib: Nullable<i64>,
    /// Time one call may take, in milliseconds, as granted: what the plugin
    /// declared, or the ceiling `KEEPER_PLUGIN_TIMEOUT_MS`. Null as above.
    pub timeout_ms: Nullable<i64>,
    /// How it became active: `start_up` (chosen when keeper started),
    /// `folder` (a file in the watched plugins folder), `upload`
    /// (`PUT /plugins/{name}`), `api_activation`
    /// (`POST /plugins/versions/{hash}/activate`), `rollback`
    /// (`POST /plugins/rollback`) or `canary_promotion` (a canary that
    /// reached its count). Null for a rejected plugin and for one recorded
    /// by an older keeper.
    pub activated_by: Nullable<Activation>,
}

/// `GET /plugins`: newest first.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct Plugins {
    pub status: OkStatus,
    /// The plugin new batches run on; null before a worker ever started.
    pub active: Nullable<PluginEntry>,
    /// Plugins that were active before.
    pub history: Vec<PluginEntry>,
    /// Plugins that were refused, with the reason.
    pub rejected: Vec<PluginEntry>,
    /// The newest canary: the one running, or the last one with how it
    /// ended. Null when none was ever started.
    pub canary: Nullable<CanaryEntry>,
}

/// A canary activation: a plugin version mapping a share of the items
/// beside the active one, with each version's counts since it started.
#[derive(Debug, Clone, Object)]
pub struct CanaryEntry {
    pub name: String,
    pub version: String,
    /// SHA-256 of the wasm, hex: promote it with
    /// `POST /plugins/versions/{hash}/activate`.
    pub hash: String,
    /// Its share of the items, in percent; null when it takes every item
    /// until its count.
    pub percent: Nullable<i64>,
    /// The count of items at which it becomes active; null when it runs
    /// until promoted or rolled back.
    pub items: Nullable<i64>,
    pub state: CanaryState,
    /// Why it ended: its failure rate against the active plugin's for a
    /// rollback.
    pub reason: Nullable<String>,
    /// The plugin that was active when it started.
    pub active_hash: String,
    /// Items the canary mapped, and how many of them it failed.
    pub canary_items: i64,
    pub canary_failed: i64,
    /// Items the active plugin mapped meanwhile, and how many it failed.
    pub active_items: i64,
    pub active_failed: i64,
    pub started_at: Nullable<OffsetDateTime>,
    pub ended_at: Nullable<OffsetDateTime>,
    /// The host whose `keeper run` maps the canary's share
    /// (`KEEPER_HOST_NAME`, else machine name and process id); null for a
    /// canary recorded before hosts were.
    pub started_by: Nullable<String>,
}

/// `POST /plugins/versions/{hash}/canary`: the canary's share, a
/// percentage, a count, or both (that percentage until the count).
#[derive(Debug, Clone, Object)]
pub struct CanaryRequest {
    /// Of every 100 items, how many the canary maps (1 to 100).
    pub percent: Option<i64>,
    /// The count of items the canary maps before it becomes active.
    pub items: Option<i64>,
}

/// A canary that started.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct CanaryStarted {
    pub status: OkStatus,
    pub message: String,
    pub canary: CanaryEntry,
}

/// `PUT /plugins/{name}`, `POST /plugins/versions/{hash}/activate`,
/// `POST /plugins/rollback`: the plugin now active.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct PluginActivated {
    pub status: OkStatus,
    pub message: String,
    /// The plugin new batches run on from now on, as the registry records it.
    pub active: PluginEntry,
}

/// What a candidate plugin would change on the most recently synced items,
/// compared with the active plugin. Nothing was written.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct PluginPreview {
    pub status: OkStatus,
    /// The plugin new batches run on now.
    pub active: Provenance,
    /// The plugin previewed.
    pub candidate: Provenance,
    /// What the comparison could not do as asked (VH-Database missing, so
    /// locations are not resolved; the active plugin's file changed).
    pub notes: Vec<String>,
    /// How many items both plugins mapped (or failed to).
    pub compared: u64,
    /// How many of those the candidate maps differently.
    pub changed: u64,
    /// The items, the most recently synced first.
    pub items: Vec<PreviewItem>,
}

/// One synced item in a preview: the VH-Database row each plugin makes of it.
#[derive(Debug, Clone, Object)]
pub struct PreviewItem {
    pub queue_id: i64,
    pub discovery_id: i64,
    /// Why the item was not mapped (its keeper.db report cannot be read or
    /// is gone); null when it was.
    pub unreadable: Nullable<String>,
    /// The row the active plugin writes for it, column → value; null when
    /// it fails (see `active_error`).
    pub active_row: Nullable<serde_json::Value>,
    pub active_error: Nullable<String>,
    /// The row the candidate would write; null when it fails.
    pub candidate_row: Nullable<serde_json::Value>,
    pub candidate_error: Nullable<String>,
    /// What differs; empty when both make the same of it.
    pub changes: Vec<PreviewChange>,
}

/// One difference in a preview.
#[derive(Debug, Clone, Object)]
pub struct PreviewChange {
    /// The column set differently (or by one plugin only); null when the
    /// outcome differs instead (one plugin fails).
    pub column: Nullable<String>,
    /// The difference in words, as `keeper plugin preview` prints it.
    pub description: String,
}

/// A pending item for a remote puller, with its whole keeper.db row.
#[derive(Debug, Clone, Object)]
pub struct ExportedItem {
    pub queue_id: i64,
    pub discovery_id: i64,
    pub sync_attempts: i64,
    pub created_at: Nullable<OffsetDateTime>,
    /// Enqueued by `keeper backfill` (a keeper.db adopted from the old bot):
    /// the puller links a row the old bot already wrote instead of inserting it.
    pub backfill: bool,
    /// The keeper.db `discoveries` row, column by column (what a mapping
    /// plugin receives); null if it is gone or unreadable.
    pub discovery: Nullable<serde_json::Value>,
    #[oai(skip_serializing_if_is_none)]
    pub discovery_error: Option<String>,
}

/// `GET /sync/export`: one page of pending items.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct ExportPage {
    pub status: OkStatus,
    /// Identifies this server's keeper.db for good. A puller keys its
    /// VH-Database ledger by it and `discovery_id`, so an item written but
    /// not acknowledged (a crash, a lost answer) is never inserted twice.
    pub source_id: String,
    pub items: Vec<ExportedItem>,
    pub count: u64,
    /// Pass as `after` to get the next page (the last queue id here, or the
    /// given `after` when the page is empty).
    pub next_after: i64,
    /// The page was full: there may be more.
    pub has_more: bool,
}

/// One item a remote puller wrote to its VH-Database.
#[derive(Debug, Clone, Copy, Object)]
pub struct AckEntry {
    #[oai(validator(minimum(value = "1")))]
    pub queue_id: i64,
    /// The row id it got in VH-Database's `discoveries`.
    pub haven_discovery_id: i64,
    /// True when the puller's ledger held another report under this
    /// discovery id, so it wrote this one as new: this keeper.db was
    /// restored from a backup or replaced. Counted in `/sync/statistics`
    /// (`keeper_db_restored_or_replaced`) and `/metrics`.
    pub keeper_db_replaced: Option<bool>,
}

/// `POST /sync/ack` body (at most 1 MiB, like every body: some 25,000
/// items). `plugin` is the plugin that mapped these items on the puller,
/// stored with each item as the bot host's own worker stores its provenance.
// (Fields whose type is a schema of its own carry no doc comment: it would
// wrap the reference in an `allOf`, which client generators mishandle.)
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct AckRequest {
    #[oai(validator(min_items = 1))]
    pub items: Vec<AckEntry>,
    pub plugin: Option<Provenance>,
}

/// One item a remote puller could not write to its VH-Database. `class` is
/// why, as the local worker classifies its own failures: it decides the
/// backoff and whether the item is retried at all (`mapping` and `source`
/// are not).
#[derive(Debug, Clone, Object)]
pub struct FailEntry {
    #[oai(validator(minimum(value = "1")))]
    pub queue_id: i64,
    pub class: ErrorClass,
    /// What went wrong, in words an operator can act on.
    #[oai(validator(max_length = 4000))]
    pub message: String,
}

/// `POST /sync/fail` body.
#[derive(Debug, Clone, Object)]
#[oai(example, deny_unknown_fields)]
pub struct FailRequest {
    #[oai(validator(min_items = 1))]
    pub items: Vec<FailEntry>,
}

/// `POST /sync/fail`: what became of each reported queue id.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct FailResult {
    pub status: OkStatus,
    /// Recorded; exported again after their backoff (`next_retry_after`).
    pub retrying: Vec<i64>,
    /// Recorded; out of attempts or failed for a reason a retry cannot fix:
    /// now `max_retries_exceeded` (see `/sync/failed`).
    pub gave_up: Vec<i64>,
    /// Not pending (synced, being synced or already failed); left alone.
    pub not_pending: Vec<i64>,
    /// No such queue item.
    pub unknown: Vec<i64>,
}

/// `POST /sync/ack`: what became of each acknowledged queue id.
#[derive(Debug, Clone, Object)]
#[oai(example)]
pub struct AckResult {
    pub status: OkStatus,
    /// Marked synced now.
    pub acknowledged: Vec<i64>,
    /// Were synced already (a repeated acknowledgement changes nothing).
    pub already_synced: Vec<i64>,
    /// Claimed by this server's own worker right now; left alone.
    pub in_progress: Vec<i64>,
    /// No such queue item.
    pub unknown: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use poem_openapi::types::{ParseFromJSON, ToJSON};
    use serde_json::json;

    use super::*;

    /// On the wire, every state, class and status has the name the store
    /// keeps, the logs print and the console compares with, and reads
    /// back as itself; any other name is refused.
    fn wire_names_match<T>(all: &[T], as_str: fn(&T) -> &'static str)
    where
        T: poem_openapi::types::Type + ToJSON + ParseFromJSON + PartialEq + std::fmt::Debug,
    {
        for value in all {
            assert_eq!(value.to_json(), Some(json!(as_str(value))), "{value:?}");
            let parsed = T::parse_from_json(Some(json!(as_str(value)))).expect("reads back");
            assert_eq!(&parsed, value);
        }
        assert!(T::parse_from_json(Some(json!("no-such-name"))).is_err());
    }

    #[test]
    fn states_classes_and_statuses_have_their_stored_names_on_the_wire() {
        use SyncStatus::*;
        wire_names_match(&[Pending, Syncing, Synced, MaxRetriesExceeded], |s| s.as_str());
        let classes = <ErrorClass as clap::ValueEnum>::value_variants();
        wire_names_match(classes, |c| c.as_str());
        wire_names_match(
            &[PluginStatus::Active, PluginStatus::Retired, PluginStatus::Rejected],
            |s| s.as_str(),
        );
        use Activation::*;
        wire_names_match(
            &[StartUp, Folder, Upload, ApiActivation, Rollback, CanaryPromotion],
            |a| a.as_str(),
        );
        use CanaryState::*;
        wire_names_match(&[Running, Promoted, RolledBack, Ended], |s| s.as_str());
    }
}
