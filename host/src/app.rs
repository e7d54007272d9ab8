//! Wires the services every command shares from one [`Settings`]: keeper.db,
//! its queue, VH-Database, the plugin runtime and the worker.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Settings;
use crate::mapper::{DEFAULT_PLUGIN, Limits, PluginError, PluginSlot, Runtime};
use crate::queue::Queue;
use crate::registry::{BUILT_IN, Registry};
use crate::sink::Sink;
use crate::store::{Store, StoreError};
use crate::worker::{Worker, WorkerStatus};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the built-in mapping plugin cannot be loaded: {0}")]
    Plugin(#[from] PluginError),
    #[error("keeper.db: {0}")]
    Sql(#[from] sqlx::Error),
}

/// The open databases and the rules they are run by.
#[derive(Clone)]
pub struct App {
    pub settings: Settings,
    pub store: Store,
    pub queue: Queue,
    pub registry: Registry,
    pub wake: Arc<Notify>,
}

impl App {
    /// Opens (and migrates) keeper.db. Cheap: no plugin is compiled.
    pub async fn open(settings: Settings) -> Result<App, AppError> {
        let store = Store::open(&settings.keeper_db).await?;
        let queue = Queue::new(store.pool().clone(), settings.retry_policy(), settings.lease());
        let registry = Registry::new(store.pool().clone());
        Ok(App {
            settings,
            store,
            queue,
            registry,
            wake: Arc::new(Notify::new()),
        })
    }

    /// The worker, with the built-in plugin compiled (blocking work done on
    /// a blocking thread).
    pub async fn worker(&self) -> Result<Worker, AppError> {
        let runtime = Runtime::new(Limits::default())?;
        let plugin = tokio::task::spawn_blocking(move || runtime.load(DEFAULT_PLUGIN))
            .await
            .map_err(|e| PluginError::Start(e.to_string()))??;
        tracing::info!(
            name = %plugin.info().name,
            version = %plugin.info().version,
            hash = %plugin.info().hash,
            "mapping plugin active"
        );
        self.registry.activated(plugin.info(), BUILT_IN).await?;
        let settings = &self.settings;
        Ok(Worker {
            store: self.store.clone(),
            queue: self.queue.clone(),
            sink: Sink::new(settings.haven_location(), settings.haven_busy_timeout()),
            plugins: PluginSlot::new(plugin),
            batch_size: settings.sync_batch_size,
            interval: Duration::from_secs(settings.sync_interval.max(1)),
            wake: self.wake.clone(),
            status: Arc::new(WorkerStatus::default()),
        })
    }
}
