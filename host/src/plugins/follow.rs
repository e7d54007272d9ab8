//! A plugin activated by another process on the same store becomes active
//! here too.
//!
//! Every activation — a file in any host's plugins folder, an upload, an
//! earlier version activated again, a rollback, a start-up choice — keeps
//! the plugin's bytes in the store by content hash and records it as the
//! active version in the registry (`registry.rs`). Every other process on
//! that store (hosts on one PostgreSQL database, processes on one
//! keeper.db) then takes the same version: the plugin manager looks at the
//! registry's active version whenever [`StoreWatch`] says to — at once on
//! PostgreSQL, where the activation is announced with `NOTIFY`, and every
//! `KEEPER_PLUGINS_FOLLOW_SECS` on both drivers (the fallback while the
//! notification connection is down, the only way on keeper.db). It fetches
//! the artifact, verifies its hash, checks it as a dropped file is checked
//! (with this host's limits) and swaps it into the slot: a batch already
//! running finishes on the version it started with.
//!
//! A host that cannot take it (the bytes are missing or do not hash to the
//! recorded version, or the plugin asks more than this host's
//! `KEEPER_PLUGIN_MEMORY_MIB` or `KEEPER_PLUGIN_TIMEOUT_MS` allows) keeps the
//! plugin it runs, logs why, and says so in `/health` ([`NotFollowed`], the
//! problem `plugin_not_followed`): the registry is shared, so `GET /plugins`
//! says what the store's active version is, and only this host's health can
//! say that this host runs another. It does not write the refusal into the
//! registry, where it would read as if the plugin were refused everywhere.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use super::versions::Versions;
use super::{Loader, PluginsError};
use crate::db::Db;
use crate::mapper::{Plugin, content_hash};
use crate::registry::{ACTIVATED_CHANNEL, Registry};

/// Why this host does not run the store's active plugin version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowRefusal {
    #[error("the store has no copy of it (activated by a keeper older than this one?)")]
    Missing,
    #[error("the store's copy is damaged: its bytes hash to {found}, not to the recorded version")]
    HashMismatch { found: String },
    #[error("it cannot run on this host: {0}")]
    Rejected(String),
}

/// The store's active plugin version that this host does not run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotFollowed {
    pub name: String,
    pub version: String,
    pub hash: String,
    pub reason: FollowRefusal,
    /// The version this host runs instead.
    pub running: String,
}

impl std::fmt::Display for NotFollowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the store's active mapping plugin {} {} ({}) is not running on this host: {}; this host keeps running {}",
            self.name, self.version, self.hash, self.reason, self.running
        )
    }
}

/// What `/health` reads of the plugin manager: the store's active version
/// this host could not take, if any. Cleared once it runs the active one.
#[derive(Clone, Default)]
pub struct FollowStatus(Arc<Mutex<Option<NotFollowed>>>);

impl FollowStatus {
    pub fn not_followed(&self) -> Option<NotFollowed> {
        self.0
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    pub(super) fn set(&self, state: Option<NotFollowed>) {
        match self.0.lock() {
            Ok(mut s) => *s = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }
}

/// Says when to look at the registry's active version again.
pub struct StoreWatch {
    poll: tokio::time::Interval,
    /// Woken by the activations of other hosts (PostgreSQL only).
    heard: Arc<Notify>,
    /// The task that listens, so that it ends with the watch.
    listening: Option<tokio::task::JoinHandle<()>>,
}

impl StoreWatch {
    /// Listens for activations on PostgreSQL (a failure to is logged: the
    /// poll still finds them) and polls every `every`.
    pub async fn new(db: &Db, every: Duration) -> StoreWatch {
        let mut poll = tokio::time::interval(every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; start-up has just looked.
        poll.reset();
        let heard = Arc::new(Notify::new());
        let listening = match db {
            Db::Sqlite(_) => None,
            Db::Postgres(pool) => {
                let listening = async {
                    let mut listener = PgListener::connect_with(pool).await?;
                    listener.listen(ACTIVATED_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(listener)
                };
                match listening.await {
                    Ok(listener) => Some(tokio::spawn(listen(listener, heard.clone(), every))),
                    Err(error) => {
                        tracing::warn!(
                            %error,
                            poll_secs = every.as_secs(),
                            "cannot listen for plugin activations on PostgreSQL; looking every {}s instead",
                            every.as_secs()
                        );
                        None
                    }
                }
            }
        };
        StoreWatch { poll, heard, listening }
    }

    /// Returns when another process may have activated a plugin: a
    /// notification came, or the poll interval passed.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.poll.tick() => {}
            () = self.heard.notified() => {}
        }
    }
}

impl Drop for StoreWatch {
    fn drop(&mut self) {
        if let Some(task) = self.listening.take() {
            task.abort();
        }
    }
}

/// Wakes `heard` on every activation announced. The listener reconnects by
/// itself after a lost connection; while it cannot, the poll looks (the
/// failure is logged once per outage) and it tries again every `every`.
async fn listen(mut listener: PgListener, heard: Arc<Notify>, every: Duration) {
    let mut failing = false;
    loop {
        match listener.recv().await {
            Ok(notification) => {
                if failing {
                    tracing::info!("hearing plugin activations on PostgreSQL again");
                    failing = false;
                }
                tracing::debug!(hash = notification.payload(), "a plugin was activated on another host");
                heard.notify_one();
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(
                        %error,
                        poll_secs = every.as_secs(),
                        "the PostgreSQL connection that hears plugin activations failed; looking every {}s until it is back",
                        every.as_secs()
                    );
                    failing = true;
                }
                // Activations missed meanwhile are found by the poll.
                heard.notify_one();
                tokio::time::sleep(every).await;
            }
        }
    }
}

/// Why a version could not be taken from the store.
pub enum FetchError {
    /// It cannot run here; looking again will not change that.
    Refused(FollowRefusal),
    /// The store could not be read, or the work stopped: worth another look.
    Failed(PluginsError),
}

/// The version `hash`, checked as a dropped file is checked with this
/// host's limits, and whether it came from the compiled cache. Its bytes
/// come from this host's kept copy ([`Versions`]; the built-in plugin from
/// the binary), else from the store, and must hash to `hash`.
pub(super) async fn fetch(
    loader: &Loader,
    registry: &Registry,
    versions: &Versions,
    hash: &str,
) -> Result<(Plugin, bool), FetchError> {
    let bytes = match versions.bytes(hash).await {
        Some(bytes) => bytes,
        None => registry
            .artifact(hash)
            .await
            .map_err(|e| FetchError::Failed(e.into()))?
            .ok_or(FetchError::Refused(FollowRefusal::Missing))?,
    };
    let found = content_hash(&bytes);
    if found != hash {
        return Err(FetchError::Refused(FollowRefusal::HashMismatch { found }));
    }
    let verdict = loader.check_bytes(bytes).await.map_err(FetchError::Failed)?;
    let cached = verdict.cached;
    verdict
        .accepted()
        .map(|plugin| (plugin, cached))
        .map_err(|rejection| FetchError::Refused(FollowRefusal::Rejected(rejection.to_string())))
}
