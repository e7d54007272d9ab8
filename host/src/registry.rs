//! The plugin registry: which mapping plugins this keeper.db has run, which
//! one is active, and which were refused and why.
//!
//! It lives in keeper.db (table `keeper_plugins`, one row per event) so that
//! `keeper plugin list`, `GET /plugins` and every process sharing the
//! database see the same answer, and it survives restarts. The plugin slot in
//! memory decides what a batch runs on; this table is its record.
//!
//! Beside it, `keeper_plugin_artifacts` keeps the bytes of every version
//! that became active, by content hash: every process on the same store
//! (several `keeper run` hosts on one PostgreSQL database, or several
//! processes on one keeper.db) loads the active version from there
//! (`plugins/follow.rs`). On PostgreSQL an activation is also announced on
//! the [`ACTIVATED_CHANNEL`] (`NOTIFY`), so the others load it at once
//! instead of at their next look.

use serde::Serialize;

use crate::db::{Db, Param};
use crate::mapper::{Limits, PluginInfo};

/// Where the built-in plugin comes from, in `source`.
pub const BUILT_IN: &str = "built-in";

/// The PostgreSQL notification channel an activation is announced on; its
/// payload is the active version's hash.
pub const ACTIVATED_CHANNEL: &str = "keeper_plugin_activated";

/// How many retired and rejected plugins [`Registry::list`] returns.
const LIST_LIMIT: i64 = 50;

/// What a registry row says of its plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum PluginStatus {
    /// The one batches run on now.
    Active,
    /// Active before, replaced by a newer one.
    Retired,
    /// Refused by the conformance check (or not a plugin at all).
    Rejected,
}

impl PluginStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginStatus::Active => "active",
            PluginStatus::Retired => "retired",
            PluginStatus::Rejected => "rejected",
        }
    }

    pub fn parse(name: &str) -> Option<PluginStatus> {
        [PluginStatus::Active, PluginStatus::Retired, PluginStatus::Rejected]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

crate::db::text_column!(PluginStatus);

/// How a plugin became active: what an operator asks first when the
/// plugin changed under them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, poem_openapi::Enum)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Chosen when keeper started (the newest good file in the plugins
    /// folder, else the built-in plugin).
    StartUp,
    /// A file dropped into (or removed from) the watched plugins folder.
    Folder,
    /// Uploaded through the sync API (`PUT /plugins/{name}`).
    Upload,
    /// An earlier version activated through the sync API.
    ApiActivation,
    /// `POST /plugins/rollback`.
    Rollback,
    /// A canary that reached its count of items (plugins/canary.rs).
    CanaryPromotion,
}

impl Activation {
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::StartUp => "start_up",
            Activation::Folder => "folder",
            Activation::Upload => "upload",
            Activation::ApiActivation => "api_activation",
            Activation::Rollback => "rollback",
            Activation::CanaryPromotion => "canary_promotion",
        }
    }

    pub fn parse(name: &str) -> Option<Activation> {
        [
            Activation::StartUp,
            Activation::Folder,
            Activation::Upload,
            Activation::ApiActivation,
            Activation::Rollback,
            Activation::CanaryPromotion,
        ]
        .into_iter()
        .find(|a| a.as_str() == name)
    }

    /// In words, for `keeper plugin list` and the console.
    pub fn describe(self) -> &'static str {
        match self {
            Activation::StartUp => "chosen at start-up",
            Activation::Folder => "plugins folder",
            Activation::Upload => "uploaded through the API",
            Activation::ApiActivation => "activated through the API",
            Activation::Rollback => "rolled back to through the API",
            Activation::CanaryPromotion => "canary promoted at its count",
        }
    }
}

crate::db::text_column!(Activation);

impl std::fmt::Display for Activation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for PluginStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

crate::db::from_row! {
    /// One registry row.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct PluginRecord {
        /// Empty for a file that never reported a name (not a plugin at all).
        pub name: String,
        pub version: String,
        /// SHA-256 of the file, hex.
        pub hash: String,
        /// `built-in` or the path of the `.wasm` file.
        pub source: String,
        pub status: PluginStatus,
        /// Why a plugin was rejected.
        pub reason: Option<String>,
        /// When this row was written (UTC, `YYYY-MM-DD HH:MM:SS`).
        pub recorded_at: String,
        /// When an active plugin was replaced.
        pub retired_at: Option<String>,
        /// Memory one instance may use, in MiB, as granted when it was last
        /// made active (what it declared, or the ceiling `KEEPER_PLUGIN_MEMORY_MIB`).
        /// None for a rejected plugin, and for one recorded by an older keeper.
        pub memory_mib: Option<i64>,
        /// Time one call may take, in milliseconds, as granted (what it
        /// declared, or the ceiling `KEEPER_PLUGIN_TIMEOUT_MS`); None as above.
        pub timeout_ms: Option<i64>,
        /// How it became active; None for a rejected plugin and for one
        /// recorded by a keeper older than this column.
        pub activated_by: Option<Activation>,
    }
}

/// Active, earlier and refused plugins, newest first.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PluginHistory {
    pub active: Option<PluginRecord>,
    pub history: Vec<PluginRecord>,
    pub rejected: Vec<PluginRecord>,
}

#[derive(Clone)]
pub struct Registry {
    db: Db,
}

impl Registry {
    pub fn new(db: Db) -> Registry {
        Registry { db }
    }

    /// Records `plugin` as the active one with the limits it was `granted`,
    /// retiring the previous one, and `how` it became active. When it
    /// already is active (every process start reports the plugin it loaded)
    /// only its limits are brought up to date: the operator's ceilings may
    /// have changed, and how it became active stays as recorded. Returns
    /// whether it was newly activated.
    pub async fn activated(
        &self,
        plugin: &PluginInfo,
        source: &str,
        granted: Limits,
        how: Activation,
    ) -> Result<bool, sqlx::Error> {
        let memory_mib = i64::try_from(granted.memory_bytes >> 20).unwrap_or(i64::MAX);
        let timeout_ms = i64::try_from(granted.deadline.as_millis()).unwrap_or(i64::MAX);
        let changed = match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let retired = sqlx::query(
                    "UPDATE keeper_plugins SET status = 'retired', retired_at = datetime('now')
                     WHERE status = 'active' AND NOT (hash = ?1 AND source = ?2)",
                )
                .bind(&plugin.hash)
                .bind(source)
                .execute(&mut *tx)
                .await?;
                let inserted = sqlx::query(
                    "INSERT INTO keeper_plugins (name, version, hash, source, status, activated_by)
                     SELECT ?1, ?2, ?3, ?4, 'active', ?5
                     WHERE NOT EXISTS (SELECT 1 FROM keeper_plugins WHERE status = 'active')",
                )
                .bind(&plugin.name)
                .bind(&plugin.version)
                .bind(&plugin.hash)
                .bind(source)
                .bind(how)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE keeper_plugins SET memory_mib = ?1, timeout_ms = ?2 WHERE status = 'active'")
                    .bind(memory_mib)
                    .bind(timeout_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                retired.rows_affected() + inserted.rows_affected()
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // One activation at a time across hosts: the registry's rows.
                sqlx::query("LOCK TABLE keeper_plugins IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
                let retired = sqlx::query(
                    "UPDATE keeper_plugins SET status = 'retired', retired_at = now()
                     WHERE status = 'active' AND NOT (hash = $1 AND source = $2)",
                )
                .bind(&plugin.hash)
                .bind(source)
                .execute(&mut *tx)
                .await?;
                let inserted = sqlx::query(
                    "INSERT INTO keeper_plugins (name, version, hash, source, status, activated_by)
                     SELECT $1, $2, $3, $4, 'active', $5
                     WHERE NOT EXISTS (SELECT 1 FROM keeper_plugins WHERE status = 'active')",
                )
                .bind(&plugin.name)
                .bind(&plugin.version)
                .bind(&plugin.hash)
                .bind(source)
                .bind(how)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE keeper_plugins SET memory_mib = $1, timeout_ms = $2 WHERE status = 'active'")
                    .bind(memory_mib)
                    .bind(timeout_ms)
                    .execute(&mut *tx)
                    .await?;
                let changed = retired.rows_affected() + inserted.rows_affected();
                if changed > 0 {
                    // Delivered to the listening hosts when this commits.
                    sqlx::query("SELECT pg_notify($1, $2)")
                        .bind(ACTIVATED_CHANNEL)
                        .bind(&plugin.hash)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                changed
            }
        };
        Ok(changed > 0)
    }

    /// The active plugin's record, if any plugin was ever active.
    pub async fn active(&self) -> Result<Option<PluginRecord>, sqlx::Error> {
        Ok(self.of_status(PluginStatus::Active, 1).await?.pop())
    }

    /// Whether the version with `hash` was ever active on this store (a
    /// plugin file holding it is not new).
    pub async fn was_active(&self, hash: &str) -> Result<bool, sqlx::Error> {
        self.exists(
            "SELECT 1 FROM keeper_plugins WHERE hash = $1 AND status IN ('active', 'retired')",
            hash,
        )
        .await
    }

    /// Whether `query`, with `$1` bound to `hash`, finds a row.
    async fn exists(&self, query: &str, hash: &str) -> Result<bool, sqlx::Error> {
        let row: Option<(bool,)> = self
            .db
            .fetch_optional(&format!("SELECT EXISTS ({query})"), &[Param::Text(hash)])
            .await?;
        Ok(row.is_some_and(|(found,)| found))
    }

    /// Keeps the bytes of the version with `hash`, unless they are kept
    /// already. The caller has checked that `bytes` hash to `hash`.
    pub async fn keep_artifact(&self, hash: &str, bytes: &[u8]) -> Result<(), sqlx::Error> {
        self.db
            .execute(
                "INSERT INTO keeper_plugin_artifacts (hash, bytes) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
                &[Param::Text(hash), Param::Bytes(bytes)],
            )
            .await?;
        Ok(())
    }

    /// Whether the bytes of the version with `hash` are kept.
    pub async fn has_artifact(&self, hash: &str) -> Result<bool, sqlx::Error> {
        self.exists("SELECT 1 FROM keeper_plugin_artifacts WHERE hash = $1", hash)
            .await
    }

    /// The kept bytes of the version with `hash`, as stored: the caller
    /// verifies them against the hash before loading them.
    pub async fn artifact(&self, hash: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        let row: Option<(Vec<u8>,)> = self
            .db
            .fetch_optional(
                "SELECT bytes FROM keeper_plugin_artifacts WHERE hash = $1",
                &[Param::Text(hash)],
            )
            .await?;
        Ok(row.map(|(bytes,)| bytes))
    }

    /// Records a plugin that was refused; the active one stays. The same
    /// file refused for the same reason again (every start-up looks at it)
    /// only moves the existing record's time.
    pub async fn rejected(
        &self,
        name: &str,
        version: &str,
        hash: &str,
        source: &str,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let seen = sqlx::query(
                    "UPDATE keeper_plugins SET recorded_at = datetime('now')
                     WHERE status = 'rejected' AND hash = ?1 AND source = ?2 AND reason = ?3",
                )
                .bind(hash)
                .bind(source)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                if seen.rows_affected() == 0 {
                    sqlx::query(
                        "INSERT INTO keeper_plugins (name, version, hash, source, status, reason)
                         VALUES (?1, ?2, ?3, ?4, 'rejected', ?5)",
                    )
                    .bind(name)
                    .bind(version)
                    .bind(hash)
                    .bind(source)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("LOCK TABLE keeper_plugins IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
                let seen = sqlx::query(
                    "UPDATE keeper_plugins SET recorded_at = now()
                     WHERE status = 'rejected' AND hash = $1 AND source = $2 AND reason = $3",
                )
                .bind(hash)
                .bind(source)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                if seen.rows_affected() == 0 {
                    sqlx::query(
                        "INSERT INTO keeper_plugins (name, version, hash, source, status, reason)
                         VALUES ($1, $2, $3, $4, 'rejected', $5)",
                    )
                    .bind(name)
                    .bind(version)
                    .bind(hash)
                    .bind(source)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            }
        }
    }

    pub async fn list(&self) -> Result<PluginHistory, sqlx::Error> {
        Ok(PluginHistory {
            active: self.active().await?,
            history: self.of_status(PluginStatus::Retired, LIST_LIMIT).await?,
            rejected: self.of_status(PluginStatus::Rejected, LIST_LIMIT).await?,
        })
    }

    /// The newest `limit` records of `status`.
    async fn of_status(&self, status: PluginStatus, limit: i64) -> Result<Vec<PluginRecord>, sqlx::Error> {
        match &self.db {
            Db::Sqlite(pool) => sqlx::query_as(
                "SELECT name, version, hash, source, status, reason, recorded_at, retired_at, memory_mib, timeout_ms,
                            activated_by
                     FROM keeper_plugins WHERE status = ?1 ORDER BY id DESC LIMIT ?2",
            )
            .bind(status)
            .bind(limit)
            .fetch_all(pool)
            .await,
            Db::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT name, version, hash, source, status, reason, keeper_s(recorded_at) AS recorded_at,
                            keeper_s(retired_at) AS retired_at, memory_mib, timeout_ms, activated_by
                     FROM keeper_plugins WHERE status = $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(status)
                .bind(limit)
                .fetch_all(pool)
                .await
            }
        }
    }
}
