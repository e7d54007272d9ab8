//! The sync worker: claims due items, maps them with the active plugin and
//! delivers them to VH-Database, one batch at a time.
//!
//! Every stage works on the whole batch: one claim, one read of keeper.db,
//! one VH-Database transaction, one queue update. A batch runs wholly on the
//! plugin that was active when it started. On shutdown the batch in hand is
//! finished; its lease covers a worker killed outright.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::{Notify, watch};

use crate::mapper::{Lookup, MapError, Mapped, PluginSlot};
use crate::queue::{Claim, ClaimedItem, Delivered, ErrorClass, Failed, Queue};
use crate::row::Row;
use crate::sink::{Delivery, Sink};
use crate::store::Store;

/// What the API reports about the worker; shared with it.
#[derive(Debug)]
pub struct WorkerStatus {
    pub started_at: OffsetDateTime,
    pub running: AtomicBool,
    pub last_sync_time: Mutex<Option<OffsetDateTime>>,
}

impl Default for WorkerStatus {
    fn default() -> Self {
        WorkerStatus {
            started_at: OffsetDateTime::now_utc(),
            running: AtomicBool::new(false),
            last_sync_time: Mutex::new(None),
        }
    }
}

/// Totals of one drain, for `keeper sync --once`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub synced: u64,
    pub failed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("keeper.db: {0}")]
    Keeper(#[from] sqlx::Error),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[derive(Clone)]
pub struct Worker {
    pub store: Store,
    pub queue: Queue,
    pub sink: Sink,
    pub plugins: PluginSlot,
    pub batch_size: u32,
    pub interval: Duration,
    /// Notified by in-process submissions so they sync at once.
    pub wake: Arc<Notify>,
    pub status: Arc<WorkerStatus>,
}

impl Worker {
    /// Processes everything due now, batch after batch, each item at most
    /// once, and returns.
    pub async fn drain(&self) -> Result<Drained, WorkerError> {
        self.drain_until(None).await
    }

    /// [`Worker::drain`], stopping between two batches once `stop` turns
    /// true: a shutdown waits for the batch in hand, not for the whole queue.
    async fn drain_until(&self, stop: Option<&watch::Receiver<bool>>) -> Result<Drained, WorkerError> {
        let mut total = Drained::default();
        let started = self.queue.now().await?;
        loop {
            if stop.is_some_and(|s| *s.borrow()) {
                return Ok(total);
            }
            let claim = self.queue.claim(self.batch_size, Some(&started)).await?;
            if claim.items.is_empty() {
                return Ok(total);
            }
            let done = self.process(claim).await?;
            total.synced += done.synced;
            total.failed += done.failed;
        }
    }

    /// Runs until `shutdown` turns true: drains, then sleeps until the
    /// interval passes or a submission wakes it.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        self.status.running.store(true, Ordering::Relaxed);
        while !*shutdown.borrow() {
            if let Err(error) = self.drain_until(Some(&shutdown)).await {
                tracing::error!(%error, "sync pass failed; trying again next interval");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.changed() => {}
            }
        }
        self.status.running.store(false, Ordering::Relaxed);
        tracing::info!("sync worker stopped");
    }

    /// One claimed batch, from keeper.db to VH-Database and back.
    async fn process(&self, claim: Claim) -> Result<Drained, WorkerError> {
        let renewer = self.spawn_lease_renewal(claim.token.clone());
        let outcome = self.deliver(&claim.items).await;
        renewer.abort();
        let (delivered, failed) = match outcome {
            Ok(result) => result,
            Err(error) => {
                // keeper.db itself failed mid-batch: give the items back.
                self.queue.release(&claim.token).await?;
                return Err(error);
            }
        };
        self.queue.complete(&claim.token, &delivered, &failed).await?;
        if let Ok(mut last) = self.status.last_sync_time.lock() {
            *last = Some(OffsetDateTime::now_utc());
        }
        tracing::info!(
            claimed = claim.items.len(),
            synced = delivered.len(),
            failed = failed.len(),
            "sync batch done"
        );
        for f in &failed {
            tracing::warn!(queue_id = f.queue_id, class = f.class.as_str(), error = %f.message, "sync item failed");
        }
        Ok(Drained {
            synced: delivered.len() as u64,
            failed: failed.len() as u64,
        })
    }

    fn spawn_lease_renewal(&self, token: String) -> tokio::task::JoinHandle<()> {
        let queue = self.queue.clone();
        let every = (queue.lease() / 3).max(Duration::from_millis(300));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if let Err(error) = queue.renew(&token).await {
                    tracing::warn!(%error, "cannot renew the batch lease");
                }
            }
        })
    }

    /// Maps and writes a batch; returns each item's outcome. Errors only when
    /// keeper.db cannot be read: a VH-Database problem is an item outcome.
    async fn deliver(&self, items: &[ClaimedItem]) -> Result<(Vec<Delivered>, Vec<Failed>), WorkerError> {
        let ids: Vec<i64> = items.iter().map(|i| i.discovery_id).collect();
        let mut rows = self.store.discoveries(&ids).await?;
        let mut failed = Vec::new();
        let fail = |item: &ClaimedItem, class: ErrorClass, message: String| Failed {
            queue_id: item.queue_id,
            attempts: item.attempts,
            class,
            message,
        };

        let mut haven = match self.sink.open().await {
            Ok(h) => h,
            Err(e) => {
                return Ok((
                    Vec::new(),
                    items.iter().map(|i| fail(i, e.class(), e.to_string())).collect(),
                ));
            }
        };
        let lookup = match haven.lookup().await {
            Ok(l) => Arc::new(l),
            Err(e) => {
                return Ok((
                    Vec::new(),
                    items.iter().map(|i| fail(i, e.class(), e.to_string())).collect(),
                ));
            }
        };

        // Items whose keeper.db row can be read, with the row.
        let mut mappable: Vec<(&ClaimedItem, Row)> = Vec::with_capacity(items.len());
        for item in items {
            match rows.remove(&item.discovery_id) {
                Some(Ok(row)) => mappable.push((item, row)),
                Some(Err(e)) => failed.push(fail(
                    item,
                    ErrorClass::Source,
                    format!("keeper.db discovery {}: {e}", item.discovery_id),
                )),
                None => failed.push(fail(
                    item,
                    ErrorClass::Source,
                    format!("discovery {} no longer exists in keeper.db", item.discovery_id),
                )),
            }
        }

        let plugin = self.plugins.current();
        let mapped = map_rows(&plugin, lookup, mappable.iter().map(|(_, r)| r.clone()).collect()).await;

        let mut accepted: Vec<(&ClaimedItem, Mapped)> = Vec::with_capacity(mapped.len());
        for ((item, _), result) in mappable.iter().zip(mapped) {
            match result {
                Ok(m) => match haven.schema().check(&m.row) {
                    Ok(()) => accepted.push((item, m)),
                    Err(e) => failed.push(fail(item, e.class(), e.to_string())),
                },
                Err(e) => {
                    let class = if matches!(e, MapError::TimedOut(_)) {
                        ErrorClass::Timeout
                    } else {
                        ErrorClass::Mapping
                    };
                    failed.push(fail(item, class, e.to_string()));
                }
            }
        }

        let deliveries: Vec<Delivery> = accepted
            .iter()
            .map(|(item, m)| Delivery {
                keeper_discovery_id: item.discovery_id,
                row: &m.row,
                backfill: item.backfill,
            })
            .collect();
        if deliveries.is_empty() {
            return Ok((Vec::new(), failed));
        }
        let info = plugin.info();
        match haven.write(self.store.source_id(), info, &deliveries).await {
            Ok(written) => {
                let delivered = accepted
                    .iter()
                    .zip(written)
                    .map(|((item, m), w)| {
                        let mut metadata = json!({"plugin": info});
                        if !m.warnings.is_empty() {
                            metadata["warnings"] = json!(m.warnings);
                        }
                        if w.already_there {
                            metadata["already_in_vh"] = json!(true);
                        }
                        Delivered {
                            queue_id: item.queue_id,
                            haven_id: w.haven_id,
                            metadata,
                        }
                    })
                    .collect();
                Ok((delivered, failed))
            }
            Err(e) => {
                failed.extend(accepted.iter().map(|(item, _)| fail(item, e.class(), e.to_string())));
                Ok((Vec::new(), failed))
            }
        }
    }
}

/// Runs the plugin on a blocking thread: wasm calls are synchronous and WASI
/// must not run on an async worker thread.
async fn map_rows(
    plugin: &Arc<crate::mapper::Plugin>,
    lookup: Arc<Lookup>,
    rows: Vec<Row>,
) -> Vec<Result<Mapped, MapError>> {
    let plugin = plugin.clone();
    let count = rows.len();
    match tokio::task::spawn_blocking(move || plugin.map_all(lookup, &rows)).await {
        Ok(results) => results,
        Err(join) => {
            let message = format!("mapper thread failed: {join}");
            (0..count).map(|_| Err(MapError::Trapped(message.clone()))).collect()
        }
    }
}
