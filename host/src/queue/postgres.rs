//! The queue on PostgreSQL (`KEEPER_DATABASE_URL`): the same transitions as
//! `queue/sqlite.rs`, for any number of hosts on one database. The contract
//! is [`super::Queue`]'s.
//!
//! - A claim locks the rows it takes with `FOR UPDATE SKIP LOCKED`: two
//!   hosts claiming at once never take the same item, and neither waits for
//!   the other.
//! - Times are `timestamptz` from the database's clock (`now()`, moved by
//!   the queue's [`Clock`] skew: zero but in tests), given out
//!   as the same UTC text as keeper.db's (`keeper_ms`, `keeper_s`: SQL
//!   functions of migration 1 in `store/postgres.rs`).
//! - Monotonic counters (synced, failures by class, the latency histogram)
//!   are bumped by the transition statement itself (a data-modifying CTE),
//!   counter rows in a fixed order so that concurrent hosts never deadlock;
//!   queue depth is counted from `sync_queue` (indexed by state).

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::*;
use crate::clock::Clock;

/// [`Queue::claim`]'s statement: $1 token, $2 lease seconds, $3 limit, $4
/// `not_tried_since` (UTC text from [`PgQueue::now`]), $5 the claiming host,
/// $6 the clock's skew in seconds. Expired leases come
/// first (they have waited longest), then due pending items in id order.
const CLAIM: &str = "WITH expired AS (
         SELECT id FROM sync_queue
         WHERE sync_status = 'syncing' AND (lease_expires_at IS NULL OR lease_expires_at <= (now() + make_interval(secs => $6)))
         ORDER BY lease_expires_at NULLS FIRST LIMIT $3
         FOR UPDATE SKIP LOCKED),
     pending AS (
         SELECT id FROM sync_queue
         WHERE sync_status = 'pending' AND (next_retry_after IS NULL OR next_retry_after <= (now() + make_interval(secs => $6)))
           AND ($4::text IS NULL OR last_sync_attempt IS NULL
                OR last_sync_attempt < ($4::timestamp AT TIME ZONE 'UTC'))
         ORDER BY id LIMIT GREATEST($3 - (SELECT COUNT(*) FROM expired), 0)
         FOR UPDATE SKIP LOCKED),
     due AS (SELECT id FROM expired UNION ALL SELECT id FROM pending)
     UPDATE sync_queue q
     SET sync_status = 'syncing', claim_token = $1, claimed_by = $5,
         lease_expires_at = now() + make_interval(secs => $6) + make_interval(secs => $2),
         last_sync_attempt = now() + make_interval(secs => $6)
     FROM due WHERE q.id = due.id
     RETURNING q.id, q.discovery_id, q.sync_attempts AS attempts,
         COALESCE(q.metadata @> '{\"backfill\": true}', false) AS backfill";

/// The queue's operations on a PostgreSQL pool: [`super::Queue`]'s contract.
#[derive(Clone)]
pub(crate) struct PgQueue {
    pub(super) pool: PgPool,
    pub(super) policy: RetryPolicy,
    pub(super) lease: Duration,
    pub(super) clock: Clock,
}

/// Limits as PostgreSQL takes them (it has no unsigned integers).
fn limit(n: u32) -> i64 {
    i64::from(n)
}

impl PgQueue {
    /// Microseconds, as `timestamptz` stores them: a claim in the same
    /// pass compares exactly.
    pub(super) async fn now(&self) -> Result<String, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT to_char((now() + make_interval(secs => $1)) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
        )
        .bind(self.clock.seconds())
        .fetch_one(&self.pool)
        .await
    }

    pub(super) async fn claim(
        &self,
        token: &str,
        limit_to: u32,
        not_tried_since: Option<&str>,
        host: &str,
    ) -> Result<Vec<ClaimedItem>, sqlx::Error> {
        sqlx::query_as(CLAIM)
            .bind(token)
            .bind(self.lease.as_secs_f64())
            .bind(limit(limit_to))
            .bind(not_tried_since)
            .bind(host)
            .bind(self.clock.seconds())
            .fetch_all(&self.pool)
            .await
    }

    pub(super) async fn renew(&self, token: &str) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sync_queue SET lease_expires_at = now() + make_interval(secs => $3) + make_interval(secs => $2)
             WHERE claim_token = $1 AND sync_status = 'syncing'",
        )
        .bind(token)
        .bind(self.lease.as_secs_f64())
        .bind(self.clock.seconds())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn release(&self, token: &str) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sync_queue SET sync_status = 'pending', claim_token = NULL, lease_expires_at = NULL
             WHERE claim_token = $1 AND sync_status = 'syncing'",
        )
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn complete(
        &self,
        token: &str,
        delivered: &[Delivered],
        failed: &serde_json::Value,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        if !delivered.is_empty() {
            mark_synced(&mut tx, &self.clock, Some(token), delivered).await?;
        }
        if failed.as_array().is_some_and(|f| !f.is_empty()) {
            mark_failed(&mut tx, &self.clock, Some(token), self.policy, failed).await?;
        }
        tx.commit().await
    }

    pub(super) async fn retry(&self, queue_id: i64) -> Result<RetryFound, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE sync_queue SET sync_status = 'pending', sync_attempts = 0, sync_error = NULL,
                 error_class = NULL, next_retry_after = NULL
             WHERE id = $1 AND sync_status IN ('pending', 'max_retries_exceeded')",
        )
        .bind(queue_id)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(None);
        }
        let status: Option<SyncStatus> = sqlx::query_scalar("SELECT sync_status FROM sync_queue WHERE id = $1")
            .bind(queue_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(Some(status))
    }

    /// `classes` empty: every `max_retries_exceeded` item.
    pub(super) async fn requeue_failed(&self, classes: &[ErrorClass]) -> Result<u64, sqlx::Error> {
        let classes = (!classes.is_empty()).then(|| classes.iter().map(|c| c.as_str()).collect::<Vec<_>>());
        let done = sqlx::query(
            "UPDATE sync_queue SET sync_status = 'pending', sync_attempts = 0, sync_error = NULL,
                 error_class = NULL, next_retry_after = NULL
             WHERE ($1::text[] IS NULL AND sync_status = 'max_retries_exceeded')
                OR (error_class = ANY($1) AND sync_status IN ('pending', 'max_retries_exceeded'))",
        )
        .bind(classes)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn cleanup(&self, days: u32) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "DELETE FROM sync_queue WHERE sync_status = 'synced'
             AND synced_at < now() + make_interval(secs => $2) - make_interval(days => $1::int)",
        )
        .bind(i64::from(days))
        .bind(self.clock.seconds())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub(super) async fn counts(&self) -> Result<QueueCounts, sqlx::Error> {
        let rows: Vec<(SyncStatus, i64)> =
            sqlx::query_as("SELECT sync_status, COUNT(*) FROM sync_queue GROUP BY sync_status")
                .fetch_all(&self.pool)
                .await?;
        Ok(QueueCounts::from_rows(rows))
    }

    pub(super) async fn waiting(&self) -> Result<Vec<(Option<ErrorClass>, i64, Option<String>)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT error_class, COUNT(*), keeper_ms(MIN(next_retry_after))
             FROM sync_queue
             WHERE sync_status = 'pending' AND next_retry_after > now() + make_interval(secs => $1)
             GROUP BY error_class ORDER BY error_class",
        )
        .bind(self.clock.seconds())
        .fetch_all(&self.pool)
        .await
    }

    #[allow(clippy::type_complexity)]
    pub(super) async fn troubles(
        &self,
        limit_to: u32,
    ) -> Result<(Vec<TroubledItem>, Vec<(Option<ErrorClass>, i64)>), sqlx::Error> {
        let items = sqlx::query_as(
            "(SELECT id, discovery_id, true AS failed, sync_attempts AS attempts, error_class AS class,
                     sync_error AS error, keeper_ms(next_retry_after) AS next_retry_after, 0 AS part,
                     last_sync_attempt AS failed_at, NULL::timestamptz AS due
              FROM sync_queue WHERE sync_status = 'max_retries_exceeded'
              ORDER BY last_sync_attempt DESC NULLS LAST, id DESC LIMIT $1)
             UNION ALL
             (SELECT id, discovery_id, false, sync_attempts, error_class, sync_error,
                     keeper_ms(next_retry_after), 1, NULL, next_retry_after
              FROM sync_queue WHERE sync_status = 'pending' AND next_retry_after > now() + make_interval(secs => $2)
              ORDER BY next_retry_after, id LIMIT $1)
             ORDER BY part, failed_at DESC NULLS LAST, due, id",
        )
        .bind(limit(limit_to))
        .bind(self.clock.seconds())
        .fetch_all(&self.pool)
        .await?;
        let failed_classes = sqlx::query_as(
            "SELECT error_class, COUNT(*) FROM sync_queue
             WHERE sync_status = 'max_retries_exceeded' GROUP BY error_class",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok((items, failed_classes))
    }

    #[allow(clippy::type_complexity)]
    pub(super) async fn totals(
        &self,
    ) -> Result<(Vec<(String, String, i64)>, Vec<(Option<ErrorClass>, i64)>), sqlx::Error> {
        let counters = sqlx::query_as("SELECT counter, label, value FROM keeper_sync_counters")
            .fetch_all(&self.pool)
            .await?;
        let failed_by_class = sqlx::query_as(
            "SELECT error_class, COUNT(*) FROM sync_queue
             WHERE sync_status = 'max_retries_exceeded'
             GROUP BY error_class ORDER BY COALESCE(error_class, 'unknown')",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok((counters, failed_by_class))
    }

    pub(super) async fn statistics(&self) -> Result<QueueStatistics, sqlx::Error> {
        let errors = sqlx::query_as(
            "SELECT sync_status, error_class, COUNT(*) AS count FROM sync_queue
             WHERE sync_status IN ('pending', 'max_retries_exceeded') AND sync_error IS NOT NULL
             GROUP BY sync_status, error_class ORDER BY sync_status, COALESCE(error_class, 'unknown')",
        )
        .fetch_all(&self.pool)
        .await?;
        let attempts = sqlx::query_as(
            "SELECT sync_attempts, COUNT(*) FROM sync_queue
             WHERE sync_status <> 'synced' GROUP BY sync_attempts ORDER BY sync_attempts",
        )
        .fetch_all(&self.pool)
        .await?;
        let oldest_pending = sqlx::query_as(
            "SELECT id, keeper_s(created_at) FROM sync_queue WHERE sync_status = 'pending' ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        let (synced_last_hour, synced_last_day): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE synced_at >= now() + make_interval(secs => $1) - interval '1 hour'),
                    COUNT(*)
             FROM sync_queue
             WHERE sync_status = 'synced' AND synced_at >= now() + make_interval(secs => $1) - interval '1 day'",
        )
        .bind(self.clock.seconds())
        .fetch_one(&self.pool)
        .await?;
        // The same ranks as keeper.db's query: the value at offset
        // floor((n - 1) · p) in ascending order.
        let latency_last_day = sqlx::query_as(
            "WITH l AS (SELECT extract(epoch FROM synced_at - created_at)::float8 AS s
                        FROM sync_queue
                        WHERE sync_status = 'synced'
                          AND synced_at >= now() + make_interval(secs => $1) - interval '1 day'),
                  n AS (SELECT COUNT(*) AS c FROM l)
             SELECT c AS count, (SELECT avg(s) FROM l) AS average, (SELECT max(s) FROM l) AS max,
                    (SELECT s FROM l ORDER BY s LIMIT 1 OFFSET (SELECT (c - 1) * 50 / 100 FROM n)) AS p50,
                    (SELECT s FROM l ORDER BY s LIMIT 1 OFFSET (SELECT (c - 1) * 95 / 100 FROM n)) AS p95
             FROM n",
        )
        .bind(self.clock.seconds())
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
            "SELECT floor(extract(epoch FROM now() + make_interval(secs => $1) - synced_at) / 60)::int8 AS ago,
                    COUNT(*)
             FROM sync_queue
             WHERE sync_status = 'synced' AND synced_at >= now() + make_interval(secs => $1) - interval '60 minutes'
             GROUP BY ago",
        )
        .bind(self.clock.seconds())
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn failure_classes(&self) -> Result<Vec<FailureClass>, sqlx::Error> {
        sqlx::query_as(
            "WITH t AS (SELECT id, error_class, sync_status, created_at, last_sync_attempt, sync_error
                        FROM sync_queue
                        WHERE sync_status IN ('pending', 'max_retries_exceeded') AND sync_error IS NOT NULL)
             SELECT c.error_class AS class,
                    (SELECT COUNT(*) FROM t WHERE t.error_class IS NOT DISTINCT FROM c.error_class
                         AND t.sync_status = 'max_retries_exceeded') AS failed,
                    (SELECT COUNT(*) FROM t WHERE t.error_class IS NOT DISTINCT FROM c.error_class
                         AND t.sync_status = 'pending') AS waiting,
                    o.id AS oldest_queue_id, keeper_s(o.created_at) AS oldest_created_at,
                    l.id AS latest_queue_id, l.sync_error AS latest_error
             FROM (SELECT DISTINCT error_class FROM t) c
             JOIN t o ON o.id = (SELECT id FROM t WHERE t.error_class IS NOT DISTINCT FROM c.error_class
                                 ORDER BY id LIMIT 1)
             JOIN t l ON l.id = (SELECT id FROM t WHERE t.error_class IS NOT DISTINCT FROM c.error_class
                                 ORDER BY last_sync_attempt DESC NULLS LAST, id DESC LIMIT 1)",
        )
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn list_items(&self, filter: &ItemFilter, limit_to: u32) -> Result<Vec<ListedItem>, sqlx::Error> {
        sqlx::query_as(
            "SELECT q.id, q.discovery_id, q.sync_status, q.sync_attempts, q.error_class, q.sync_error,
                    keeper_s(q.created_at) AS created_at, keeper_s(q.synced_at) AS synced_at, q.haven_discovery_id,
                    q.claimed_by, d.system_name, d.location, d.discovery_type, d.username
             FROM sync_queue q LEFT JOIN discoveries d ON d.id = q.discovery_id
             WHERE ($1::text IS NULL OR q.sync_status = $1)
               AND ($2::text IS NULL OR d.system_name ILIKE $2 ESCAPE '\\')
               AND ($3::text IS NULL OR d.username ILIKE $3 ESCAPE '\\')
               AND ($4::text IS NULL OR d.discovery_type = $4)
               AND ($5::text IS NULL OR q.error_class = $5)
               AND ($6::int8 IS NULL OR q.id < $6)
             ORDER BY q.id DESC LIMIT $7",
        )
        .bind(filter.state)
        .bind(ItemFilter::contains(&filter.system))
        .bind(ItemFilter::contains(&filter.user))
        .bind(filter.discovery_type.as_deref())
        .bind(filter.class)
        .bind(filter.before)
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn item(&self, queue_id: i64) -> Result<Option<QueueItem>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, discovery_id, sync_status, sync_attempts, max_attempts,
                    keeper_ms(last_sync_attempt) AS last_sync_attempt,
                    keeper_ms(next_retry_after) AS next_retry_after, sync_error, error_class,
                    haven_discovery_id, keeper_s(created_at) AS created_at,
                    keeper_s(synced_at) AS synced_at, metadata::text AS metadata, claimed_by
             FROM sync_queue WHERE id = $1",
        )
        .bind(queue_id)
        .fetch_optional(&self.pool)
        .await
    }

    pub(super) async fn queue_id_of(&self, discovery_id: i64) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar("SELECT MAX(id) FROM sync_queue WHERE discovery_id = $1")
            .bind(discovery_id)
            .fetch_one(&self.pool)
            .await
    }

    pub(super) async fn pending_after(&self, after: i64, limit_to: u32) -> Result<Vec<ExportedItem>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id AS queue_id, discovery_id, sync_attempts, keeper_s(created_at) AS created_at,
                    COALESCE(metadata @> '{\"backfill\": true}', false) AS backfill
             FROM sync_queue
             WHERE id > $1 AND sync_status = 'pending'
               AND (next_retry_after IS NULL OR next_retry_after <= now() + make_interval(secs => $3))
             ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit(limit_to))
        .bind(self.clock.seconds())
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn acknowledge(
        &self,
        delivered: &[Delivered],
        ids: &[i64],
    ) -> Result<(Vec<i64>, Vec<(i64, SyncStatus)>), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let acknowledged = mark_synced(&mut tx, &self.clock, None, delivered).await?;
        let states = sqlx::query_as("SELECT id, sync_status FROM sync_queue WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((acknowledged, states))
    }

    /// The items are locked while `decide` chooses, so a host claiming or
    /// acknowledging them at the same time waits for this transaction.
    pub(super) async fn fail_remote(
        &self,
        ids: &[i64],
        decide: &DecideRemoteFailures<'_>,
    ) -> Result<(FailOutcome, Vec<(i64, SyncStatus)>), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let states: Vec<(i64, SyncStatus, i64)> = sqlx::query_as(
            "SELECT id, sync_status, sync_attempts FROM sync_queue WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        )
        .bind(ids)
        .fetch_all(&mut *tx)
        .await?;
        let (outcome, failures) = decide(&states);
        let changed = mark_failed(&mut tx, &self.clock, None, self.policy, &failures).await?;
        tx.commit().await?;
        Ok((outcome, changed))
    }

    pub(super) async fn failed(&self, limit_to: u32) -> Result<Vec<FailedItem>, sqlx::Error> {
        sqlx::query_as(
            "SELECT q.id AS queue_id, q.discovery_id, q.sync_attempts, q.sync_error,
                    d.system_name, d.location, d.discovery_type, d.username
             FROM sync_queue q LEFT JOIN discoveries d ON d.id = q.discovery_id
             WHERE q.sync_status = 'max_retries_exceeded'
             ORDER BY q.last_sync_attempt DESC NULLS LAST, q.id DESC LIMIT $1",
        )
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn last_synced(&self, limit_to: u32) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, discovery_id FROM sync_queue WHERE sync_status = 'synced'
             ORDER BY synced_at DESC NULLS LAST, id DESC LIMIT $1",
        )
        .bind(limit(limit_to))
        .fetch_all(&self.pool)
        .await
    }

    pub(super) async fn backfill(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "INSERT INTO sync_queue (discovery_id, max_attempts, metadata)
             SELECT d.id, $1, '{\"backfill\": true}'::jsonb FROM discoveries d
             WHERE NOT EXISTS (SELECT 1 FROM sync_queue q WHERE q.discovery_id = d.id)
             ORDER BY d.id",
        )
        .bind(i64::from(self.policy.max_attempts))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// Adds counter rows in the statement's CTE named `from`; `rows` selects
/// (counter, label, value) from it. In (counter, label) order, so that two
/// hosts bumping the same rows lock them in the same order.
fn bump_counters(rows: &str) -> String {
    format!(
        "INSERT INTO keeper_sync_counters (counter, label, value)
         SELECT counter, label, SUM(value) FROM ({rows}) c(counter, label, value)
         GROUP BY counter, label ORDER BY counter, label
         ON CONFLICT (counter, label) DO UPDATE SET value = keeper_sync_counters.value + excluded.value"
    )
}

/// Seconds from submission to synced, whole, as keeper.db's trigger counts them.
const LATENCY: &str = "GREATEST(0, round(extract(epoch FROM synced_at - created_at)))::bigint";

/// The one transition to `synced` (see the SQLite driver's `mark_synced`):
/// a worker's batch (only items still held under `token`) or a remote
/// puller's acknowledgements (`None`). Returns the ids it marked.
async fn mark_synced(
    conn: &mut PgConnection,
    clock: &Clock,
    token: Option<&str>,
    delivered: &[Delivered],
) -> Result<Vec<i64>, sqlx::Error> {
    let payload = super::delivery_payload(delivered)?;
    let mut bucket = String::from("CASE");
    for le in LATENCY_BUCKETS {
        bucket.push_str(&format!(" WHEN {LATENCY} <= {le} THEN '{le}'"));
    }
    bucket.push_str(" ELSE '+Inf' END");
    let replaced: Vec<i64> = delivered
        .iter()
        .filter(|d| d.keeper_db_replaced)
        .map(|d| d.queue_id)
        .collect();
    let counted = bump_counters(&format!(
        "SELECT 'synced_total', '', 1::bigint FROM done
         UNION ALL SELECT 'latency_bucket', {bucket}, 1 FROM done
         UNION ALL SELECT 'latency_seconds_sum', '', {LATENCY} FROM done
         UNION ALL SELECT 'keeper_db_replaced_total', '', 1 FROM done WHERE id = ANY($3)"
    ));
    let sql = format!(
        "WITH j AS (SELECT * FROM jsonb_to_recordset($1::jsonb) AS j(queue_id bigint, haven_id bigint, meta jsonb)),
         done AS (
             UPDATE sync_queue q
             SET sync_status = 'synced', haven_discovery_id = j.haven_id, synced_at = now() + make_interval(secs => $4),
                 sync_attempts = q.sync_attempts + 1, sync_error = NULL, error_class = NULL,
                 next_retry_after = NULL, lease_expires_at = NULL, claim_token = NULL,
                 metadata = COALESCE(q.metadata, '{{}}'::jsonb) || j.meta
             FROM j
             WHERE q.id = j.queue_id
               AND CASE WHEN $2::text IS NULL THEN q.sync_status IN ('pending', 'max_retries_exceeded')
                        ELSE q.claim_token = $2 END
             RETURNING q.id, q.created_at, q.synced_at),
         counted AS ({counted})
         SELECT id FROM done ORDER BY id"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(payload)
        .bind(token)
        .bind(replaced)
        .bind(clock.seconds())
        .fetch_all(&mut *conn)
        .await
}

/// The one failure transition (see the SQLite driver's `mark_failed`);
/// `failed` is [`failure_payload`]'s array.
async fn mark_failed(
    conn: &mut PgConnection,
    clock: &Clock,
    token: Option<&str>,
    policy: RetryPolicy,
    failed: &serde_json::Value,
) -> Result<Vec<(i64, SyncStatus)>, sqlx::Error> {
    let counted = bump_counters("SELECT 'failures_total', error_class, 1::bigint FROM done");
    let sql = format!(
        "WITH j AS (SELECT * FROM jsonb_to_recordset($1::jsonb)
                    AS j(queue_id bigint, status text, error text, class text, delay bigint)),
         done AS (
             UPDATE sync_queue q
             SET sync_status = j.status, sync_attempts = q.sync_attempts + 1, max_attempts = $3,
                 sync_error = j.error, error_class = j.class,
                 next_retry_after = CASE WHEN j.delay IS NULL THEN NULL
                     ELSE now() + make_interval(secs => $4) + make_interval(secs => j.delay) END,
                 last_sync_attempt = CASE WHEN $2::text IS NULL THEN now() + make_interval(secs => $4)
                     ELSE q.last_sync_attempt END,
                 lease_expires_at = NULL, claim_token = NULL
             FROM j
             WHERE q.id = j.queue_id
               AND CASE WHEN $2::text IS NULL THEN q.sync_status = 'pending' ELSE q.claim_token = $2 END
             RETURNING q.id, q.sync_status, q.error_class),
         counted AS ({counted})
         SELECT id, sync_status FROM done ORDER BY id"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(failed.to_string())
        .bind(token)
        .bind(i64::from(policy.max_attempts))
        .bind(clock.seconds())
        .fetch_all(&mut *conn)
        .await
}
