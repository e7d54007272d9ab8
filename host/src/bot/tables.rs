//! The Discord bot's two tables on either store driver: open forms
//! (`keeper_bot_forms`, forms.rs) and whom to tell of a report's news
//! (`keeper_bot_notices`, notices.rs). Each operation's SQL for keeper.db
//! and for PostgreSQL sits side by side here; the logic above them is one.
//!
//! Several hosts may run the bot on one PostgreSQL database (their shards
//! split between them), each with a notice follower. A piece of news is
//! therefore claimed before it is said ([`claim_news`]): the host whose
//! update or delete changes the row says it; the others find it done.

use super::notices::{Notice, Tell};
use crate::db::Db;
use crate::queue::SyncStatus;

/// Binds a form's four values in the column order both dialects' INSERTs
/// list them: one list for both drivers.
macro_rules! bind_form {
    ($query:expr, $nonce:expr, $form:expr) => {
        $query
            .bind($nonce)
            .bind(&$form.user_id)
            .bind(&$form.options)
            .bind($form.expires_at)
    };
}

/// Binds a notice's seven values in the column order both dialects'
/// INSERTs list them: one list for both drivers.
macro_rules! bind_notice {
    ($query:expr, $notice:expr, $channel_id:expr, $user_id:expr, $now:expr) => {
        $query
            .bind($notice.discovery_id)
            .bind(&$notice.token)
            .bind($channel_id)
            .bind($user_id)
            .bind(&$notice.confirmation)
            .bind($notice.placed)
            .bind($now)
    };
}

crate::db::from_row! {
    /// One open form's row.
    #[derive(Debug)]
    pub struct FormRow {
        pub user_id: String,
        /// The command's options, as JSON (forms.rs `StoredOptions`).
        pub options: String,
        /// Unix seconds.
        pub expires_at: i64,
    }
}

/// Writes (or replaces) the form `nonce`, and drops the rows of forms that
/// expired before `expired_before` (unix seconds), in one transaction.
pub async fn save_form(db: &Db, nonce: i64, form: &FormRow, expired_before: i64) -> Result<(), sqlx::Error> {
    match db {
        Db::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("DELETE FROM keeper_bot_forms WHERE expires_at < ?1")
                .bind(expired_before)
                .execute(&mut *tx)
                .await?;
            bind_form!(
                sqlx::query(
                    "INSERT OR REPLACE INTO keeper_bot_forms (nonce, user_id, options, expires_at)
                     VALUES (?1, ?2, ?3, ?4)",
                ),
                nonce,
                form
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM keeper_bot_forms WHERE expires_at < $1")
                .bind(expired_before)
                .execute(&mut *tx)
                .await?;
            bind_form!(
                sqlx::query(
                    "INSERT INTO keeper_bot_forms (nonce, user_id, options, expires_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (nonce) DO UPDATE
                         SET user_id = EXCLUDED.user_id, options = EXCLUDED.options, expires_at = EXCLUDED.expires_at",
                ),
                nonce,
                form
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
    }
}

/// Deletes the form `nonce` opened by `user_id` and returns it: whoever
/// deletes the row takes the form, once.
pub async fn take_form(db: &Db, nonce: i64, user_id: &str) -> Result<Option<FormRow>, sqlx::Error> {
    match db {
        Db::Sqlite(pool) => {
            sqlx::query_as(
                "DELETE FROM keeper_bot_forms WHERE nonce = ?1 AND user_id = ?2
                 RETURNING user_id, options, expires_at",
            )
            .bind(nonce)
            .bind(user_id)
            .fetch_optional(pool)
            .await
        }
        Db::Postgres(pool) => {
            sqlx::query_as(
                "DELETE FROM keeper_bot_forms WHERE nonce = $1 AND user_id = $2
                 RETURNING user_id, options, expires_at",
            )
            .bind(nonce)
            .bind(user_id)
            .fetch_optional(pool)
            .await
        }
    }
}

/// Remembers how to reach the reporter of `notice.discovery_id`; `now` is
/// the report's time in unix seconds.
pub async fn remember_notice(db: &Db, notice: &Notice, now: i64) -> Result<(), sqlx::Error> {
    let channel_id = notice.channel_id.map(|c| c.to_string());
    let user_id = notice.user_id.to_string();
    match db {
        Db::Sqlite(pool) => {
            bind_notice!(
                sqlx::query(
                    "INSERT OR REPLACE INTO keeper_bot_notices
                         (discovery_id, token, channel_id, user_id, confirmation, placed, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                ),
                notice,
                channel_id,
                user_id,
                now
            )
            .execute(pool)
            .await?;
        }
        Db::Postgres(pool) => {
            bind_notice!(
                sqlx::query(
                    "INSERT INTO keeper_bot_notices
                         (discovery_id, token, channel_id, user_id, confirmation, placed, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (discovery_id) DO UPDATE
                         SET token = EXCLUDED.token, channel_id = EXCLUDED.channel_id, user_id = EXCLUDED.user_id,
                             confirmation = EXCLUDED.confirmation, placed = EXCLUDED.placed,
                             created_at = EXCLUDED.created_at, told_waiting = false, told_failed = false",
                ),
                notice,
                channel_id,
                user_id,
                now
            )
            .execute(pool)
            .await?;
        }
    }
    Ok(())
}

crate::db::from_row! {
    /// A notice row read beside its report's queue row.
    #[derive(Debug)]
    pub struct NewsRow {
        pub discovery_id: i64,
        pub token: String,
        pub channel_id: Option<String>,
        pub user_id: String,
        pub confirmation: String,
        pub placed: bool,
        /// Unix seconds.
        pub created_at: i64,
        pub told_waiting: bool,
        pub told_failed: bool,
        pub sync_status: SyncStatus,
        pub haven_discovery_id: Option<i64>,
        pub sync_attempts: i64,
        pub error_class: Option<String>,
        pub sync_error: Option<String>,
    }
}

/// [`news`]'s query, the same on both drivers.
const NEWS: &str = "SELECT n.discovery_id, n.token, n.channel_id, n.user_id, n.confirmation, n.placed, n.created_at,
            n.told_waiting, n.told_failed, q.sync_status, q.haven_discovery_id, q.sync_attempts,
            q.error_class, q.sync_error
     FROM keeper_bot_notices n JOIN sync_queue q ON q.discovery_id = n.discovery_id
     WHERE q.sync_status = 'synced'
        OR (q.sync_status = 'max_retries_exceeded' AND NOT n.told_failed)
        OR (q.sync_status NOT IN ('synced', 'max_retries_exceeded') AND NOT n.told_waiting AND q.sync_attempts > 0)
     ORDER BY n.discovery_id";

/// The reports that may have news: synced, failed and not yet told so, or
/// still on their way after a failed attempt and not yet told they wait.
/// Rows whose queue row was cleaned up are dropped first: they have nothing
/// more to say.
pub async fn news(db: &Db) -> Result<Vec<NewsRow>, sqlx::Error> {
    const CLEANED_UP: &str = "DELETE FROM keeper_bot_notices
         WHERE NOT EXISTS (SELECT 1 FROM sync_queue q WHERE q.discovery_id = keeper_bot_notices.discovery_id)";
    match db {
        Db::Sqlite(pool) => {
            sqlx::query(CLEANED_UP).execute(pool).await?;
            sqlx::query_as(NEWS).fetch_all(pool).await
        }
        Db::Postgres(pool) => {
            sqlx::query(CLEANED_UP).execute(pool).await?;
            sqlx::query_as(NEWS).fetch_all(pool).await
        }
    }
}

/// Marks `tell` as said for report `discovery_id`; whether this call did
/// (false: another host's follower said it first, or a failure was retried
/// in the meantime and is no longer news). Said only after this returns
/// true: news is said at most once, never twice.
pub async fn claim_news(db: &Db, discovery_id: i64, tell: &Tell) -> Result<bool, sqlx::Error> {
    let (sqlite, postgres) = match tell {
        Tell::Waiting => (
            "UPDATE keeper_bot_notices SET told_waiting = 1 WHERE discovery_id = ?1 AND told_waiting = 0",
            "UPDATE keeper_bot_notices SET told_waiting = true WHERE discovery_id = $1 AND NOT told_waiting",
        ),
        // Kept: a retry may still put it on the map (a trigger on
        // `sync_queue` clears the mark when one happens). Only while it is
        // still failed: a retry since the round read it is a new chance.
        Tell::Failed => (
            "UPDATE keeper_bot_notices SET told_failed = 1
             WHERE discovery_id = ?1 AND told_failed = 0
               AND discovery_id IN (SELECT discovery_id FROM sync_queue
                                    WHERE sync_status = 'max_retries_exceeded')",
            "UPDATE keeper_bot_notices SET told_failed = true
             WHERE discovery_id = $1 AND NOT told_failed
               AND discovery_id IN (SELECT discovery_id FROM sync_queue
                                    WHERE sync_status = 'max_retries_exceeded')",
        ),
        Tell::OnTheMap => (
            "DELETE FROM keeper_bot_notices WHERE discovery_id = ?1",
            "DELETE FROM keeper_bot_notices WHERE discovery_id = $1",
        ),
    };
    let changed = match db {
        Db::Sqlite(pool) => sqlx::query(sqlite)
            .bind(discovery_id)
            .execute(pool)
            .await?
            .rows_affected(),
        Db::Postgres(pool) => sqlx::query(postgres)
            .bind(discovery_id)
            .execute(pool)
            .await?
            .rows_affected(),
    };
    Ok(changed == 1)
}
