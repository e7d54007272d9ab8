//! The operations: each one a method whose signature (parameters, body,
//! response types) is its documentation. They only translate: the queue's
//! rules live in `queue`, validation in `report`, storage in `store`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use poem::http::StatusCode;
use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::{Binary, Json, PlainText};
use poem_openapi::{ApiResponse, OpenApi, Tags};

use super::auth::ApiKeyGuard;
use super::error::{
    ErrorBody, EvidenceError, ExportError, ItemError, KeyError, PluginUploadError, PluginVersionError, QueryError,
    ReadError, RemoteWriteError, RetryItemError, SubmitError,
};
use super::image::ImageBody;
use super::model::*;
use super::nullable::Nullable;
use super::report_body::ReportBody;
use super::{ApiState, health, metrics, timestamp};
use crate::app::App;
use crate::evidence::EvidenceStore;
use crate::mapper::PluginInfo;
use crate::plugins::canary::{Canaries, CanaryRecord, Share};
use crate::plugins::control::{PluginControl, PluginName};
use crate::plugins::preview::{Change, Outcome, Preview};
use crate::queue::{Ack, ErrorClass, ItemFilter, RemoteFailure, SyncStatus};
use crate::registry::PluginRecord;
use crate::report::Report;
use crate::row::Row;
use crate::store::{IntakeError, IntakeKey, RowError, request_hash};

#[derive(Tags)]
enum Tag {
    /// Liveness, for Control Room and load balancers. Never needs the API key.
    Health,
    /// The sync queue: counts, failures, retries (the old bot's endpoints and more).
    Sync,
    /// Reports from clients other than Discord, validated like `keeper submit`.
    Intake,
    /// Images attached to reports in Discord, kept by keeper (Discord's own
    /// links expire).
    Evidence,
    /// The mapping plugins this keeper.db has run.
    Plugins,
    /// Remote mode: a puller beside Control Room fetches pending items, writes
    /// them to its VH-Database, and acknowledges them.
    Remote,
    /// Prometheus scrape endpoint.
    Metrics,
}

/// The sync API. Stateless: what it serves comes from [`ApiState`], which
/// the server attaches to every request, so the document can be generated
/// without opening a database (`keeper openapi`).
pub struct SyncApi;

fn default_failed_limit() -> u32 {
    20
}

fn default_export_limit() -> u32 {
    100
}

fn default_items_limit() -> u32 {
    50
}

fn default_preview_last() -> u32 {
    10
}

/// A plugin as uploaded: the `.wasm` component's bytes. Documented as
/// `application/octet-stream` (client generators know no `application/wasm`);
/// any content type is taken, `application/wasm` included.
type PluginUpload = Binary<Vec<u8>>;

#[derive(ApiResponse)]
enum HealthResponse {
    /// `healthy` or `degraded` (old monitors that read only the status code
    /// keep working; read `status` and `problems`).
    #[oai(status = 200)]
    Ok(Json<Health>),
    /// `unhealthy`: keeper.db cannot be read.
    #[oai(status = 503)]
    Unhealthy(Json<Health>),
}

/// An operation's one success: 200 with a JSON body, described (a plain
/// `Json` answer would leave the 200's description empty).
macro_rules! success {
    ($(#[doc = $doc:literal])* $name:ident($body:ty)) => {
        #[derive(ApiResponse)]
        enum $name {
            $(#[doc = $doc])*
            #[oai(status = 200)]
            Ok(Json<$body>),
        }
    };
}

success! {
    /// Queue depth by state (from counters keeper.db keeps), and this process's worker.
    StatusAnswer(SyncStatusReport)
}
success! {
    /// The queue in detail: errors by class, attempts, the oldest pending item, throughput and latency.
    StatisticsAnswer(Statistics)
}
success! {
    /// The items that exhausted their attempts (an empty list when there are none).
    FailedAnswer(FailedList)
}
success! {
    /// The item is due now with a fresh attempt count; the worker was woken.
    RetryAnswer(Message)
}
success! {
    /// How many items were made due again (0 when none matched).
    RetriedAllAnswer(RetriedAll)
}
success! {
    /// The queue item, its keeper.db discovery, its last error and its provenance.
    ItemAnswer(ItemDetail)
}
success! {
    /// Failed and waiting items by error class (an empty list when there are none).
    FailuresAnswer(FailureClasses)
}
success! {
    /// One page of matching items, the newest first (empty when none match).
    ItemsAnswer(ItemPage)
}
success! {
    /// The active plugin, the earlier ones and the rejected ones.
    PluginsAnswer(Plugins)
}
success! {
    /// The plugin passed the conformance check and is active: the next batch runs on it.
    ActivatedAnswer(PluginActivated)
}
success! {
    /// Each of the last synced items as both plugins map it, and what differs.
    PreviewAnswer(PluginPreview)
}
success! {
    /// The plugin passed the conformance check and runs as a canary: the next batches give it its share.
    CanaryAnswer(CanaryStarted)
}
success! {
    /// One page of pending, due items (empty when there are none).
    ExportAnswer(ExportPage)
}
success! {
    /// What became of each acknowledged queue id.
    AckAnswer(AckResult)
}
success! {
    /// What became of each reported queue id.
    FailAnswer(FailResult)
}

#[derive(ApiResponse)]
enum MetricsAnswer {
    /// Prometheus text exposition format (version 0.0.4).
    #[oai(status = 200)]
    Ok(PlainText<String>),
}

#[derive(ApiResponse)]
enum CreatedResponse {
    /// Stored in keeper.db and queued; the worker was woken. A repeat of a
    /// request with the same `Idempotency-Key` and body gets this same
    /// answer, and nothing new is stored.
    #[oai(status = 201)]
    Created(Json<Created>),
    /// The `Idempotency-Key` was used before with a different body; nothing
    /// was stored.
    #[oai(status = 422)]
    KeyReused(Json<ErrorBody>),
}

#[derive(ApiResponse)]
enum EvidenceResponse {
    /// The image as attached in Discord: PNG, JPEG, GIF or WebP, said by
    /// `Content-Type`.
    #[oai(status = 200)]
    Image(ImageBody),
}

#[OpenApi]
impl SyncApi {
    /// Health check
    ///
    /// `healthy`; `degraded` with each problem named (VH-Database unreachable
    /// since when, sync passes failing, keeper.db not writable, the worker
    /// stopped, the Discord gateway down); or `unhealthy` with 503 when
    /// keeper.db cannot be read. Open without an API key.
    #[oai(path = "/health", method = "get", operation_id = "get_health", tag = "Tag::Health")]
    async fn health(&self, state: Data<&Arc<ApiState>>) -> HealthResponse {
        let assessment = health::assess(&state).await;
        let body = Json(Health {
            status: assessment.status,
            bot_online: state.bot.online(),
            bot_gateway: state.bot.state(),
            sync_worker_running: state.worker.running.load(Ordering::Relaxed),
            timestamp: timestamp::now(),
            keeper_db_reachable: assessment.keeper_db_readable,
            problems: assessment.problems,
            haven_db: state.haven_db.clone().into(),
        });
        match assessment.status {
            HealthState::Unhealthy => HealthResponse::Unhealthy(body),
            HealthState::Healthy | HealthState::Degraded => HealthResponse::Ok(body),
        }
    }

    /// Queue status
    ///
    /// Queue depth by state and the worker's state. Reads counters kept by
    /// keeper.db itself, so it stays fast on a queue of millions and is right
    /// after a restart.
    #[oai(
        path = "/sync/status",
        method = "get",
        operation_id = "get_sync_status",
        tag = "Tag::Sync"
    )]
    async fn status(&self, _key: ApiKeyGuard, state: Data<&Arc<ApiState>>) -> Result<StatusAnswer, ReadError> {
        let counts = state.app.queue.counts().await?;
        let report = SyncStatusReport::new(Some(state.worker_report()), counts);
        Ok(StatusAnswer::Ok(Json(report)))
    }

    /// Queue statistics
    ///
    /// Errors by class, attempts, the oldest pending item, recent throughput
    /// and latency. Heavier than `/sync/status`: it reads the unsynced items.
    #[oai(
        path = "/sync/statistics",
        method = "get",
        operation_id = "get_sync_statistics",
        tag = "Tag::Sync"
    )]
    async fn statistics(&self, _key: ApiKeyGuard, state: Data<&Arc<ApiState>>) -> Result<StatisticsAnswer, ReadError> {
        let queue = &state.app.queue;
        let counts = queue.counts().await?;
        let totals = queue.totals().await?;
        let stats = queue.statistics().await?;
        let now = timestamp::now();
        let l = stats.latency_last_day;
        Ok(StatisticsAnswer::Ok(Json(Statistics {
            status: OkStatus::Ok,
            generated_at: now,
            queue: counts,
            totals: counts.into(),
            synced_ever: totals.synced,
            failed_attempts_by_class: totals
                .failures_by_class
                .into_iter()
                .map(|(class, n)| (class.as_str().to_owned(), n))
                .collect(),
            keeper_db_restored_or_replaced: totals.keeper_db_replaced,
            errors: stats
                .errors
                .into_iter()
                .map(|c| ErrorClassCount {
                    sync_status: c.sync_status,
                    error_class: ErrorClass::label(c.error_class).to_owned(),
                    count: c.count,
                })
                .collect(),
            attempts: stats
                .attempts
                .into_iter()
                .map(|(attempts, count)| AttemptsCount { attempts, count })
                .collect(),
            oldest_pending: stats
                .oldest_pending
                .map(|(queue_id, created_at)| {
                    let created_at = timestamp::parse_opt(created_at.as_deref());
                    OldestPending {
                        queue_id,
                        created_at: created_at.into(),
                        age_seconds: created_at.map(|t| (now - t).whole_seconds().max(0)).into(),
                    }
                })
                .into(),
            synced_last_hour: stats.synced_last_hour,
            synced_last_day: stats.synced_last_day,
            latency_last_day: LatencyStats {
                count: l.count,
                average_seconds: l.average.into(),
                p50_seconds: l.p50.into(),
                p95_seconds: l.p95.into(),
                max_seconds: l.max.into(),
            },
            synced_per_minute_last_hour: queue.synced_per_minute().await?,
        })))
    }

    /// Failed items
    ///
    /// Items that exhausted their attempts (`max_retries_exceeded`), most
    /// recently failed first.
    #[oai(
        path = "/sync/failed",
        method = "get",
        operation_id = "list_failed_items",
        tag = "Tag::Sync"
    )]
    async fn failed(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        /// How many items at most.
        #[oai(
            default = "default_failed_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
    ) -> Result<FailedAnswer, QueryError> {
        let failed = state.app.queue.failed(limit.0).await?;
        Ok(FailedAnswer::Ok(Json(FailedList::new(failed))))
    }

    /// Retry one item
    ///
    /// Makes a failed (or waiting) item due now with a fresh attempt count.
    /// 404 for an unknown id, 409 for an item that is synced or being synced.
    #[oai(
        path = "/sync/retry/:queue_id",
        method = "post",
        operation_id = "retry_item",
        tag = "Tag::Sync"
    )]
    async fn retry(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        /// The queue item's id (see `/sync/failed`).
        #[oai(validator(minimum(value = "1")))]
        queue_id: Path<i64>,
    ) -> Result<RetryAnswer, RetryItemError> {
        state.app.queue.retry(queue_id.0).await?;
        state.app.wake.items_due();
        tracing::info!(queue_id = queue_id.0, "sync API: item marked for retry");
        Ok(RetryAnswer::Ok(Json(Message {
            status: OkStatus::Ok,
            message: format!("Queue item {} marked for retry", queue_id.0),
        })))
    }

    /// Retry failed items
    ///
    /// Every `max_retries_exceeded` item becomes due now with a fresh attempt
    /// count. With `class`, only the items whose last failure has that class,
    /// failed or still waiting out a backoff: after fixing a schema problem,
    /// retry just the `schema` ones.
    #[oai(
        path = "/sync/retry",
        method = "post",
        operation_id = "retry_failed_items",
        tag = "Tag::Sync"
    )]
    async fn retry_all(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        /// Only items whose last failure has this class.
        class: Query<Option<ErrorClass>>,
    ) -> Result<RetriedAllAnswer, QueryError> {
        let queue = &state.app.queue;
        let (retried, message) = match class.0 {
            Some(class) => {
                let n = queue.retry_class(class).await?;
                (
                    n,
                    format!("{n} item(s) that failed with class {} marked for retry", class.as_str()),
                )
            }
            None => {
                let n = queue.retry_all_failed().await?;
                (n, format!("{n} failed item(s) marked for retry"))
            }
        };
        state.app.wake.items_due();
        tracing::info!(
            retried,
            class = class.0.map(ErrorClass::as_str),
            "sync API: failed items marked for retry"
        );
        Ok(RetriedAllAnswer::Ok(Json(RetriedAll {
            status: OkStatus::Ok,
            message,
            retried,
        })))
    }

    /// One item in detail
    ///
    /// The queue row, its keeper.db discovery, its last error and the plugin
    /// version that synced it.
    #[oai(
        path = "/sync/items/:queue_id",
        method = "get",
        operation_id = "get_item",
        tag = "Tag::Sync"
    )]
    async fn item(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        #[oai(validator(minimum(value = "1")))] queue_id: Path<i64>,
    ) -> Result<ItemAnswer, ItemError> {
        let item = state
            .app
            .queue
            .item(queue_id.0)
            .await?
            .ok_or_else(|| ItemError::not_found(format!("queue item {} does not exist", queue_id.0)))?;
        let mut rows = state.app.store.discoveries(&[item.discovery_id]).await?;
        let (discovery, discovery_error) = discovery_json(item.discovery_id, rows.remove(&item.discovery_id));
        let metadata = item
            .metadata
            .as_deref()
            .map(|m| serde_json::from_str(m).unwrap_or_else(|_| serde_json::Value::String(m.to_owned())));
        let provenance = metadata.as_ref().and_then(|m| m.get("plugin")).and_then(|p| {
            let text = |key: &str| p.get(key).and_then(|v| v.as_str()).map(str::to_owned);
            Some(Provenance {
                name: text("name")?,
                version: text("version")?,
                hash: text("hash")?,
            })
        });
        let (haven_row, haven_row_error) = match item.haven_discovery_id {
            Some(vh_id) if state.app.settings.use_haven_database => match state.app.sink().discovery_row(vh_id).await {
                Ok(Some(row)) => (Some(row.to_json()), None),
                Ok(None) => (
                    None,
                    Some(format!("VH-Database has no discoveries row {vh_id} (any more)")),
                ),
                Err(e) => (None, Some(e.to_string())),
            },
            _ => (None, None),
        };
        Ok(ItemAnswer::Ok(Json(ItemDetail {
            haven_row,
            haven_row_error,
            status: OkStatus::Ok,
            item: QueueItemView {
                queue_id: item.queue_id,
                discovery_id: item.discovery_id,
                sync_status: item.sync_status,
                sync_attempts: item.sync_attempts,
                max_attempts: item.max_attempts.into(),
                last_sync_attempt: timestamp::parse_opt(item.last_sync_attempt.as_deref()).into(),
                next_retry_after: timestamp::parse_opt(item.next_retry_after.as_deref()).into(),
                sync_error: item.sync_error.into(),
                error_class: item.error_class.into(),
                haven_discovery_id: item.haven_discovery_id.into(),
                claimed_by: item.claimed_by.into(),
                created_at: timestamp::parse_opt(item.created_at.as_deref()).into(),
                synced_at: timestamp::parse_opt(item.synced_at.as_deref()).into(),
                provenance: provenance.into(),
                metadata: metadata.into(),
            },
            discovery: discovery.into(),
            discovery_error,
        })))
    }

    /// Failures by class
    ///
    /// Failed (`max_retries_exceeded`) and waiting (pending after a failure)
    /// items grouped by their last failure's class: how many of each, the
    /// oldest, the latest error, and what usually fixes it. Retry a class
    /// with `POST /sync/retry?class=`.
    #[oai(
        path = "/sync/failures",
        method = "get",
        operation_id = "list_failure_classes",
        tag = "Tag::Sync"
    )]
    async fn failures(&self, _key: ApiKeyGuard, state: Data<&Arc<ApiState>>) -> Result<FailuresAnswer, ReadError> {
        let classes = state.app.queue.failure_classes().await?;
        let total = classes.iter().map(|c| c.failed + c.waiting).sum();
        Ok(FailuresAnswer::Ok(Json(FailureClasses {
            status: OkStatus::Ok,
            total,
            classes: classes
                .into_iter()
                .map(|c| FailureClassView {
                    error_class: c.class.map_or("unknown", ErrorClass::as_str).to_owned(),
                    failed: c.failed,
                    waiting: c.waiting,
                    permanent: c.class.is_some_and(ErrorClass::is_permanent),
                    remedy: c
                        .class
                        .map_or(
                            "Recorded by the old bot, without a class: open an item to read its error, fix the \
                             cause, then retry the items one by one (or every failed item at once).",
                            ErrorClass::remedy,
                        )
                        .to_owned(),
                    oldest_queue_id: c.oldest_queue_id,
                    oldest_created_at: timestamp::parse_opt(c.oldest_created_at.as_deref()).into(),
                    latest_queue_id: c.latest_queue_id,
                    latest_error: c.latest_error.into(),
                })
                .collect(),
        })))
    }

    /// Search items
    ///
    /// Queue items with what their reports are about, the newest first,
    /// filtered by state, system, reporter, discovery type and error class
    /// (all optional; `system` and `user` match part of the name in any
    /// letter case). Page with `before`: pass the last page's `next_before`.
    #[oai(path = "/sync/items", method = "get", operation_id = "list_items", tag = "Tag::Sync")]
    #[allow(clippy::too_many_arguments)]
    async fn items(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        /// Only items in this state.
        #[oai(name = "state")]
        sync_status: Query<Option<SyncStatus>>,
        /// Part of the system's name.
        #[oai(validator(max_length = 200))]
        system: Query<Option<String>>,
        /// Part of the reporter's name.
        #[oai(validator(max_length = 200))]
        user: Query<Option<String>>,
        /// The discovery type: its emoji or short name (`fossil`, `mineral`, …).
        #[oai(name = "type", validator(max_length = 40))]
        discovery_type: Query<Option<String>>,
        /// Only items whose last failure has this class.
        class: Query<Option<ErrorClass>>,
        /// Only items with a queue id below this one (the previous page's `next_before`).
        #[oai(validator(minimum(value = "1")))]
        before: Query<Option<i64>>,
        /// Items per page.
        #[oai(
            default = "default_items_limit",
            validator(minimum(value = "1"), maximum(value = "500"))
        )]
        limit: Query<u32>,
    ) -> Result<ItemsAnswer, QueryError> {
        let discovery_type = match discovery_type.0.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(given) => Some(
                crate::report::discovery_type(given)
                    .ok_or_else(|| {
                        let names: Vec<&str> = crate::report::discovery_types().iter().map(|t| t.short).collect();
                        QueryError::bad_request(format!(
                            "query parameter `type`: no discovery type {given:?}; use one of {} or its emoji",
                            names.join(", ")
                        ))
                    })?
                    .emoji
                    .to_owned(),
            ),
        };
        let non_empty = |text: Option<String>| text.filter(|t| !t.trim().is_empty());
        let filter = ItemFilter {
            state: sync_status.0,
            system: non_empty(system.0),
            user: non_empty(user.0),
            discovery_type,
            class: class.0,
            before: before.0,
        };
        let listed = state.app.queue.list_items(&filter, limit.0).await?;
        let next_before = (listed.len() as u64 == u64::from(limit.0))
            .then(|| listed.last().map(|i| i.queue_id))
            .flatten();
        let items: Vec<ItemSummary> = listed
            .into_iter()
            .map(|i| ItemSummary {
                queue_id: i.queue_id,
                discovery_id: i.discovery_id,
                sync_status: i.sync_status,
                sync_attempts: i.sync_attempts,
                error_class: i.error_class.into(),
                sync_error: i.sync_error.into(),
                created_at: timestamp::parse_opt(i.created_at.as_deref()).into(),
                synced_at: timestamp::parse_opt(i.synced_at.as_deref()).into(),
                haven_discovery_id: i.haven_discovery_id.into(),
                claimed_by: i.claimed_by.into(),
                system_name: i.system_name.into(),
                location: i.location.into(),
                discovery_type: i.discovery_type.into(),
                username: i.username.into(),
            })
            .collect();
        Ok(ItemsAnswer::Ok(Json(ItemPage {
            status: OkStatus::Ok,
            count: items.len() as u64,
            items,
            next_before: next_before.into(),
        })))
    }

    /// Submit a discovery
    ///
    /// One report as a JSON object, with the keys and rules of
    /// `keeper submit --json`: `discovery_type` (one of 🦴 📜 🏛️ ⚙️ 🦗 💎 🚀 ⚡ 🆕 📖,
    /// or its name: fossil, log, ruins, tech, species, mineral, ship, hazard,
    /// update, lore; the emoji is stored),
    /// `system_name`, `location` (`planet:NAME`, `moon:NAME` or `space:NAME`),
    /// `description`, `username`; optionally `user_id`, `guild_id`,
    /// `coordinates`, `condition`, `time_period`, `significance`,
    /// `evidence_url`, `tags` (array of strings), `discovery_name` and the
    /// type-specific fields of that discovery type. A bad report gets 400
    /// naming the field, and nothing is stored.
    ///
    /// With header `Idempotency-Key` a client can retry safely: a repeat with
    /// the same key and the same body within 24 hours gets the first answer
    /// (the same ids) and stores nothing; the same key with another body
    /// gets 422.
    #[oai(
        path = "/discoveries",
        method = "post",
        operation_id = "submit_discovery",
        tag = "Tag::Intake"
    )]
    async fn submit(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        report: Json<ReportBody>,
        /// Any 1 to 255 visible ASCII characters, new for each report (a
        /// UUID, say); repeat it only to retry the same report.
        #[oai(
            name = "Idempotency-Key",
            validator(min_length = 1, max_length = 255, pattern = "^[!-~]+$")
        )]
        idempotency_key: Header<Option<String>>,
    ) -> Result<CreatedResponse, SubmitError> {
        let body = &report.0.0;
        let report = Report::from_json(body).map_err(|e| SubmitError::bad_request(e.to_string()))?;
        let app = &state.app;
        let max_attempts = app.settings.sync_max_attempts;
        let submitted = match idempotency_key.0.as_deref() {
            Some(key) => {
                let key = IntakeKey::http(key);
                app.store
                    .submit_once(&key, &request_hash(body), &report, max_attempts)
                    .await
            }
            None => app.store.submit_report(&report, max_attempts).await,
        };
        let (discovery_id, queue_id, repeated) = match submitted {
            Ok(i) => (i.discovery_id, i.queue_id, i.repeated),
            Err(refused @ IntakeError::KeyReused { .. }) => {
                tracing::info!(error = %refused, "sync API: idempotency key reused for another report");
                return Ok(CreatedResponse::KeyReused(Json(ErrorBody::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    refused.to_string(),
                ))));
            }
            Err(IntakeError::Store(e)) => return Err(e.into()),
        };
        if repeated {
            tracing::info!(
                discovery_id,
                queue_id,
                "sync API: repeated request; first answer given, nothing stored"
            );
        } else {
            app.wake.reports_stored(1);
            tracing::info!(discovery_id, queue_id, "sync API: discovery archived and queued");
        }
        Ok(CreatedResponse::Created(Json(Created {
            status: OkStatus::Ok,
            discovery_id,
            queue_id,
            message: format!("Discovery {discovery_id} archived and queued"),
        })))
    }

    /// An evidence image
    ///
    /// An image attached to a report in Discord, kept in keeper.db when the
    /// report was submitted: what a report's `evidence_url` (and
    /// VH-Database's `photo_url`) points at when `SYNC_API_PUBLIC_URL` is
    /// set. The id is the image's SHA-256; 404 for an unknown one.
    #[oai(
        path = "/evidence/:id",
        method = "get",
        operation_id = "get_evidence_image",
        tag = "Tag::Evidence"
    )]
    async fn evidence(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        /// The image's id, from its URL.
        id: Path<String>,
    ) -> Result<EvidenceResponse, EvidenceError> {
        let store = EvidenceStore::new(state.app.store.db().clone());
        match store.get(&id.0).await? {
            Some(image) => Ok(EvidenceResponse::Image(ImageBody(image))),
            None => Err(EvidenceError::not_found("no evidence image with this id")),
        }
    }

    /// Mapping plugins
    ///
    /// The active plugin, the ones active before, and the ones refused with the reason.
    #[oai(
        path = "/plugins",
        method = "get",
        operation_id = "list_plugins",
        tag = "Tag::Plugins"
    )]
    async fn plugins(&self, _key: ApiKeyGuard, state: Data<&Arc<ApiState>>) -> Result<PluginsAnswer, ReadError> {
        let list = state.app.registry.list().await?;
        let canary = Canaries::new(state.app.store.db().clone()).latest().await?;
        Ok(PluginsAnswer::Ok(Json(Plugins {
            status: OkStatus::Ok,
            active: list.active.map(plugin_entry).into(),
            history: list.history.into_iter().map(plugin_entry).collect(),
            rejected: list.rejected.into_iter().map(plugin_entry).collect(),
            canary: canary.map(canary_entry).into(),
        })))
    }

    /// Upload a plugin
    ///
    /// The body is a `.wasm` mapping plugin (at most 64 MiB), sent as
    /// `application/octet-stream` or `application/wasm`. It gets the
    /// conformance check a file dropped into the plugins folder gets; if it
    /// passes it is saved there as `{name}.wasm` (replacing a file of that
    /// name) and is active at once: the next batch runs on it, and items an
    /// earlier plugin refused are queued again. If it fails, 422 gives the
    /// reason, `GET /plugins` lists it as rejected, and nothing else changes.
    /// 409 on a host in remote mode, which runs no plugin.
    #[oai(
        path = "/plugins/:name",
        method = "put",
        operation_id = "upload_plugin",
        tag = "Tag::Plugins"
    )]
    async fn upload_plugin(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        /// The file name in the plugins folder, without `.wasm`: 1 to 64
        /// letters, digits, `-` or `_`.
        name: Path<String>,
        body: PluginUpload,
    ) -> Result<ActivatedAnswer, PluginUploadError> {
        let control = plugin_control(&state).map_err(PluginUploadError::conflict)?;
        let name = PluginName::parse(&name.0)?;
        let bytes = &body.0;
        tracing::info!(name = ?name, bytes = bytes.len(), "sync API: plugin uploaded");
        let info = control.upload(&name, bytes).await?;
        Ok(ActivatedAnswer::Ok(Json(activated(&state, &info).await?)))
    }

    /// Preview an uploaded plugin
    ///
    /// Maps the last `last` synced items with the plugin in the body and
    /// with the active plugin, and answers both rows of each item and the
    /// columns that differ. The plugin gets the conformance check (422 with
    /// the reason if it fails) but is neither installed nor recorded.
    #[oai(
        path = "/plugins/preview",
        method = "post",
        operation_id = "preview_plugin",
        tag = "Tag::Plugins"
    )]
    async fn preview_plugin(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        body: PluginUpload,
        /// How many of the most recently synced items to map.
        #[oai(
            default = "default_preview_last",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        last: Query<u32>,
    ) -> Result<PreviewAnswer, PluginUploadError> {
        let control = plugin_control(&state).map_err(PluginUploadError::conflict)?;
        let preview = control.preview_upload(&state.app, &body.0, last.0).await?;
        Ok(PreviewAnswer::Ok(Json(preview_view(preview))))
    }

    /// Preview an earlier plugin version
    ///
    /// As `POST /plugins/preview`, for a version that was active on this
    /// host before (its hash from `GET /plugins`). 404 for a version this
    /// host never ran.
    #[oai(
        path = "/plugins/versions/:hash/preview",
        method = "get",
        operation_id = "preview_plugin_version",
        tag = "Tag::Plugins"
    )]
    async fn preview_version(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        /// The version's SHA-256, hex.
        #[oai(validator(pattern = "^[0-9a-f]{64}$"))]
        hash: Path<String>,
        /// How many of the most recently synced items to map.
        #[oai(
            default = "default_preview_last",
            validator(minimum(value = "1"), maximum(value = "200"))
        )]
        last: Query<u32>,
    ) -> Result<PreviewAnswer, PluginVersionError> {
        let control = plugin_control(&state).map_err(PluginVersionError::conflict)?;
        let preview = control.preview_version(&state.app, &hash.0, last.0).await?;
        Ok(PreviewAnswer::Ok(Json(preview_view(preview))))
    }

    /// Activate an earlier plugin version
    ///
    /// Makes a version that was active on this host before (its hash from
    /// `GET /plugins`) active again: its kept copy is checked and installed
    /// as an upload is, under the file name it had. 404 for a version this
    /// host never ran; 422 if it no longer passes the check (the plugin
    /// ceilings changed, say).
    #[oai(
        path = "/plugins/versions/:hash/activate",
        method = "post",
        operation_id = "activate_plugin_version",
        tag = "Tag::Plugins"
    )]
    async fn activate_version(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        /// The version's SHA-256, hex.
        #[oai(validator(pattern = "^[0-9a-f]{64}$"))]
        hash: Path<String>,
    ) -> Result<ActivatedAnswer, PluginVersionError> {
        let control = plugin_control(&state).map_err(PluginVersionError::conflict)?;
        let info = control.activate(&hash.0).await?;
        tracing::info!(name = %info.name, version = %info.version, hash = %info.hash, "sync API: earlier plugin version activated");
        Ok(ActivatedAnswer::Ok(Json(activated(&state, &info).await?)))
    }

    /// Start a canary of an uploaded plugin
    ///
    /// As `PUT /plugins/{name}`, but the plugin does not become active: it
    /// maps `percent` of the items, or the next `items` items, or `percent`
    /// of them until it has mapped `items`, beside the active plugin. If its
    /// failure rate exceeds the active plugin's by more than
    /// `KEEPER_CANARY_MARGIN_PERCENT` points (judged from
    /// `KEEPER_CANARY_MIN_ITEMS` items on) it is rolled back and the items
    /// it failed are queued again for the active plugin; at its count it
    /// becomes active, saved as `{name}.wasm`. `GET /plugins` shows it.
    /// 400 for a bad share, 409 while another canary runs or for the active
    /// version, 422 if it fails the conformance check.
    #[oai(
        path = "/plugins/:name/canary",
        method = "put",
        operation_id = "upload_plugin_canary",
        tag = "Tag::Plugins"
    )]
    async fn upload_canary(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        /// The file name it gets in the plugins folder once promoted,
        /// without `.wasm`: 1 to 64 letters, digits, `-` or `_`.
        name: Path<String>,
        body: PluginUpload,
        /// Of every 100 items, how many the canary maps (1 to 100).
        percent: Query<Option<i64>>,
        /// The count of items the canary maps before it becomes active.
        items: Query<Option<i64>>,
    ) -> Result<CanaryAnswer, PluginUploadError> {
        let control = plugin_control(&state).map_err(PluginUploadError::conflict)?;
        let name = PluginName::parse(&name.0)?;
        let share = Share::new(percent.0, items.0).map_err(|e| PluginUploadError::bad_request(e.to_string()))?;
        tracing::info!(name = ?name, bytes = body.0.len(), "sync API: plugin uploaded as a canary");
        let record = control.canary_upload(&name, &body.0, share).await?;
        Ok(CanaryAnswer::Ok(Json(canary_started(record))))
    }

    /// Start a canary of a kept plugin version
    ///
    /// As `PUT /plugins/{name}/canary`, for a version kept on this host (one
    /// that was active here, or an earlier canary; its hash from
    /// `GET /plugins`). The body gives the share: `{"percent": 10}`,
    /// `{"items": 50}`, or both. 404 for a version this host does not keep.
    #[oai(
        path = "/plugins/versions/:hash/canary",
        method = "post",
        operation_id = "canary_plugin_version",
        tag = "Tag::Plugins"
    )]
    async fn canary_version(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        /// The version's SHA-256, hex.
        #[oai(validator(pattern = "^[0-9a-f]{64}$"))]
        hash: Path<String>,
        body: Json<CanaryRequest>,
    ) -> Result<CanaryAnswer, PluginVersionError> {
        let control = plugin_control(&state).map_err(PluginVersionError::conflict)?;
        let share =
            Share::new(body.0.percent, body.0.items).map_err(|e| PluginVersionError::bad_request(e.to_string()))?;
        let record = control.canary_version(&hash.0, share).await?;
        Ok(CanaryAnswer::Ok(Json(canary_started(record))))
    }

    /// Roll back the plugin
    ///
    /// Activates the version that was active before the current one, as
    /// `POST /plugins/versions/{hash}/activate` would. 409 when there is none.
    #[oai(
        path = "/plugins/rollback",
        method = "post",
        operation_id = "roll_back_plugin",
        tag = "Tag::Plugins"
    )]
    async fn rollback(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
    ) -> Result<ActivatedAnswer, PluginVersionError> {
        let control = plugin_control(&state).map_err(PluginVersionError::conflict)?;
        let info = control.rollback().await?;
        tracing::info!(name = %info.name, version = %info.version, hash = %info.hash, "sync API: plugin rolled back");
        Ok(ActivatedAnswer::Ok(Json(activated(&state, &info).await?)))
    }

    /// Export pending items
    ///
    /// One page of pending items with a queue id above `after`, in id order,
    /// each with its whole keeper.db discovery row. Follow `next_after` while
    /// `has_more`. Exporting changes nothing: acknowledge what was written.
    #[oai(
        path = "/sync/export",
        method = "get",
        operation_id = "export_pending_items",
        tag = "Tag::Remote"
    )]
    async fn export(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        /// The cursor: the last queue id of the previous page (0 to start).
        #[oai(default, validator(minimum(value = "0")))]
        after: Query<i64>,
        /// Items per page.
        #[oai(
            default = "default_export_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
    ) -> Result<ExportAnswer, ExportError> {
        remote_mode_only(&state).map_err(ExportError::conflict)?;
        let app = &state.app;
        let pending = app.queue.pending_after(after.0, limit.0).await?;
        let ids: Vec<i64> = pending.iter().map(|i| i.discovery_id).collect();
        let mut rows = app.store.discoveries(&ids).await?;
        let next_after = pending.last().map_or(after.0, |i| i.queue_id);
        let items: Vec<ExportedItem> = pending
            .into_iter()
            .map(|i| {
                let (discovery, discovery_error) = discovery_json(i.discovery_id, rows.remove(&i.discovery_id));
                ExportedItem {
                    queue_id: i.queue_id,
                    discovery_id: i.discovery_id,
                    sync_attempts: i.sync_attempts,
                    created_at: timestamp::parse_opt(i.created_at.as_deref()).into(),
                    backfill: i.backfill,
                    discovery: discovery.into(),
                    discovery_error,
                }
            })
            .collect();
        Ok(ExportAnswer::Ok(Json(ExportPage {
            status: OkStatus::Ok,
            source_id: app.store.source_id().to_owned(),
            count: items.len() as u64,
            has_more: items.len() as u64 == u64::from(limit.0),
            items,
            next_after,
        })))
    }

    /// Acknowledge exported items
    ///
    /// Marks items a remote puller wrote to its VH-Database as synced, with
    /// their VH ids. Idempotent: repeating an acknowledgement changes nothing.
    /// Unknown queue ids are listed, not an error.
    #[oai(
        path = "/sync/ack",
        method = "post",
        operation_id = "acknowledge_items",
        tag = "Tag::Remote"
    )]
    async fn ack(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        body: Json<AckRequest>,
    ) -> Result<AckAnswer, RemoteWriteError> {
        remote_mode_only(&state).map_err(RemoteWriteError::conflict)?;
        let plugin = body.0.plugin.as_ref().map(|p| PluginInfo {
            name: p.name.clone(),
            version: p.version.clone(),
            hash: p.hash.clone(),
        });
        let acks: Vec<Ack> = body
            .0
            .items
            .iter()
            .map(|a| Ack {
                queue_id: a.queue_id,
                haven_discovery_id: a.haven_discovery_id,
                keeper_db_replaced: a.keeper_db_replaced.unwrap_or(false),
            })
            .collect();
        let outcome = state.app.queue.acknowledge(&acks, plugin.as_ref()).await?;
        tracing::info!(
            acknowledged = outcome.acknowledged.len(),
            unknown = outcome.unknown.len(),
            plugin = plugin.as_ref().map(|p| format!("{} {}", p.name, p.version)),
            "sync API: remote acknowledgement"
        );
        Ok(AckAnswer::Ok(Json(AckResult {
            status: OkStatus::Ok,
            acknowledged: outcome.acknowledged,
            already_synced: outcome.already_synced,
            in_progress: outcome.in_progress,
            unknown: outcome.unknown,
        })))
    }

    /// Report items that could not be written
    ///
    /// A remote puller reports each exported item it could not write to its
    /// VH-Database, with the error class and message. They count as failed
    /// attempts here, by the same rules as this host's own worker: the
    /// backoff before the item is exported again, `max_retries_exceeded`
    /// after `SYNC_MAX_ATTEMPTS` (at once for `mapping` and `source`); they
    /// show in `/sync/failed`, `/sync/items/{queue_id}`, `/sync/statistics`
    /// and `/metrics`. Only pending items change; the rest are listed.
    #[oai(
        path = "/sync/fail",
        method = "post",
        operation_id = "report_failed_items",
        tag = "Tag::Remote"
    )]
    async fn fail(
        &self,
        _key: ApiKeyGuard,
        state: Data<&Arc<ApiState>>,
        body: Json<FailRequest>,
    ) -> Result<FailAnswer, RemoteWriteError> {
        remote_mode_only(&state).map_err(RemoteWriteError::conflict)?;
        let failures: Vec<RemoteFailure> = body
            .0
            .items
            .into_iter()
            .map(|f| RemoteFailure {
                queue_id: f.queue_id,
                class: f.class,
                message: f.message,
            })
            .collect();
        let outcome = state.app.queue.fail_remote(&failures).await?;
        tracing::warn!(
            retrying = ?outcome.retrying,
            gave_up = ?outcome.gave_up,
            not_pending = outcome.not_pending.len(),
            unknown = outcome.unknown.len(),
            "sync API: a remote puller could not write items"
        );
        Ok(FailAnswer::Ok(Json(FailResult {
            status: OkStatus::Ok,
            retrying: outcome.retrying,
            gave_up: outcome.gave_up,
            not_pending: outcome.not_pending,
            unknown: outcome.unknown,
        })))
    }

    /// Prometheus metrics
    ///
    /// Queue depth by state, synced and failed totals by error class, the
    /// submission-to-synced latency histogram, the active plugin version,
    /// the worker's state, and health as `/health` reports it (status and
    /// one gauge per problem), in Prometheus text format.
    #[oai(
        path = "/metrics",
        method = "get",
        operation_id = "get_metrics",
        tag = "Tag::Metrics"
    )]
    async fn metrics(&self, _key: ApiKeyGuard, state: Data<&Arc<ApiState>>) -> Result<MetricsAnswer, KeyError> {
        let store = match store_figures(&state.app).await {
            Ok(figures) => Some(figures),
            Err(error) => {
                // The health series say why (keeper_db_unreadable).
                tracing::warn!(%error, "metrics: the store cannot be read; answering with the health series only");
                None
            }
        };
        Ok(MetricsAnswer::Ok(PlainText(metrics::render(&metrics::Snapshot {
            health: health::assess(&state).await,
            store,
            worker_running: state.worker.running.load(Ordering::Relaxed),
            last_sync: state.last_sync_time(),
            bot_gateway: state.bot.state(),
        }))))
    }
}

/// What a scrape reads from the store.
async fn store_figures(app: &App) -> Result<metrics::StoreFigures, sqlx::Error> {
    Ok(metrics::StoreFigures {
        counts: app.queue.counts().await?,
        totals: app.queue.totals().await?,
        active_plugin: app.registry.list().await?.active.map(|p| (p.name, p.version, p.hash)),
    })
}

/// Export, acknowledgement and failure reports serve a bot host in remote
/// mode only: on a host that writes VH-Database itself its own worker owns
/// the queue, and a puller would write every item into a second VH-Database.
/// `Err` with the 409's message on such a host.
fn remote_mode_only(state: &ApiState) -> Result<(), &'static str> {
    if state.app.settings.use_haven_database {
        return Err(
            "this host writes VH-Database itself (USE_HAVEN_DATABASE=true): its own worker syncs the queue, \
             so it does not export items to a remote puller; point `keeper pull --from` at a bot host \
             running with USE_HAVEN_DATABASE=false",
        );
    }
    Ok(())
}

/// The plugin manager of this host; `Err` with the 409's message in remote
/// mode, where no plugin runs here.
fn plugin_control(state: &ApiState) -> Result<&PluginControl, &'static str> {
    state.plugins.as_ref().ok_or(
        "this host runs no mapping plugin (USE_HAVEN_DATABASE=false, remote mode): plugins are installed where \
         `keeper pull` writes VH-Database, in its plugins folder",
    )
}

/// The answer to an install: the plugin as the registry now records it.
async fn activated(state: &ApiState, info: &PluginInfo) -> Result<PluginActivated, sqlx::Error> {
    // What is active now (another install may have come in between).
    let record = state
        .app
        .registry
        .list()
        .await?
        .active
        .ok_or(sqlx::Error::RowNotFound)?;
    let message = if record.hash == info.hash {
        format!("{} {} is active", info.name, info.version)
    } else {
        format!(
            "{} {} was installed, and {} {} has replaced it since",
            info.name, info.version, record.name, record.version
        )
    };
    Ok(PluginActivated {
        status: OkStatus::Ok,
        message,
        active: plugin_entry(record),
    })
}

fn preview_view(preview: Preview) -> PluginPreview {
    let version = |info: &PluginInfo| Provenance {
        name: info.name.clone(),
        version: info.version.clone(),
        hash: info.hash.clone(),
    };
    PluginPreview {
        status: OkStatus::Ok,
        active: version(&preview.active),
        candidate: version(&preview.candidate),
        compared: preview.compared() as u64,
        changed: preview.changed() as u64,
        notes: preview.notes,
        items: preview
            .items
            .into_iter()
            .map(|item| {
                let mut view = PreviewItem {
                    queue_id: item.queue_id,
                    discovery_id: item.discovery_id,
                    unreadable: None.into(),
                    active_row: None.into(),
                    active_error: None.into(),
                    candidate_row: None.into(),
                    candidate_error: None.into(),
                    changes: Vec::new(),
                };
                match item.outcome {
                    Outcome::Unreadable(why) => view.unreadable = Some(why).into(),
                    Outcome::Mapped {
                        active,
                        candidate,
                        changes,
                    } => {
                        (view.active_row, view.active_error) = row_or_error(active);
                        (view.candidate_row, view.candidate_error) = row_or_error(candidate);
                        view.changes = changes
                            .iter()
                            .map(|change| PreviewChange {
                                column: match change {
                                    Change::Column { column, .. } => Some(column.clone()),
                                    _ => None,
                                }
                                .into(),
                                description: change.to_string(),
                            })
                            .collect();
                    }
                }
                view
            })
            .collect(),
    }
}

fn row_or_error(mapped: Result<Row, String>) -> (Nullable<serde_json::Value>, Nullable<String>) {
    match mapped {
        Ok(row) => (Some(row.to_json()).into(), None.into()),
        Err(e) => (None.into(), Some(e).into()),
    }
}

/// The answer to a canary that started.
fn canary_started(record: CanaryRecord) -> CanaryStarted {
    let share = match (record.percent, record.items) {
        (Some(p), Some(n)) => format!("{p}% of the items until it has mapped {n}"),
        (Some(p), None) => format!("{p}% of the items"),
        (None, Some(n)) => format!("the next {n} items"),
        (None, None) => "every item".to_owned(),
    };
    tracing::info!(name = %record.name, version = %record.version, hash = %record.hash, %share, "sync API: canary started");
    CanaryStarted {
        status: OkStatus::Ok,
        message: format!("{} {} runs as a canary on {share}", record.name, record.version),
        canary: canary_entry(record),
    }
}

fn canary_entry(c: CanaryRecord) -> CanaryEntry {
    CanaryEntry {
        started_at: timestamp::parse(&c.started_at).into(),
        ended_at: timestamp::parse_opt(c.ended_at.as_deref()).into(),
        name: c.name,
        version: c.version,
        hash: c.hash,
        percent: c.percent.into(),
        items: c.items.into(),
        state: c.state,
        reason: c.reason.into(),
        active_hash: c.active_hash,
        canary_items: c.canary_items,
        canary_failed: c.canary_failed,
        active_items: c.active_items,
        active_failed: c.active_failed,
        started_by: c.started_by.into(),
    }
}

fn plugin_entry(p: PluginRecord) -> PluginEntry {
    PluginEntry {
        recorded_at: timestamp::parse(&p.recorded_at).into(),
        retired_at: timestamp::parse_opt(p.retired_at.as_deref()).into(),
        name: p.name,
        version: p.version,
        hash: p.hash,
        source: p.source,
        status: p.status,
        reason: p.reason.into(),
        memory_mib: p.memory_mib.into(),
        timeout_ms: p.timeout_ms.into(),
        activated_by: p.activated_by.into(),
    }
}

/// A keeper.db discovery row as a JSON object (column → value), or why not.
fn discovery_json(
    discovery_id: i64,
    row: Option<Result<Row, RowError>>,
) -> (Option<serde_json::Value>, Option<String>) {
    match row {
        Some(Ok(row)) => (Some(row.to_json()), None),
        Some(Err(e)) => (None, Some(format!("keeper.db discovery {discovery_id}: {e}"))),
        None => (
            None,
            Some(format!("discovery {discovery_id} no longer exists in keeper.db")),
        ),
    }
}
