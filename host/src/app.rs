//! Wires the services every command shares from one [`Settings`]: keeper.db
//! (or the PostgreSQL store of `KEEPER_DATABASE_URL`), its queue and plugin
//! registry, VH-Database, and the worker on a given plugin slot.
//!
//! The plugin manager builds on an `App` (`plugins::PluginManager::start`
//! takes one, and the worker is made on its slot), never the other way
//! round: this module does not know the plugins module.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::mapper::PluginSlot;
use crate::queue::Queue;
use crate::registry::Registry;
use crate::sink::Sink;
use crate::store::{Access, Store, StoreError};
use crate::worker::{ClaimPacing, Wake, Worker, WorkerStatus};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
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
    /// Tells the worker of new reports and items due again.
    pub wake: Arc<Wake>,
}

impl App {
    /// Opens keeper.db as `access` allows (see [`Access`]). Cheap: no
    /// plugin is compiled.
    pub async fn open(settings: Settings, access: Access) -> Result<App, AppError> {
        let store = match &settings.keeper_database_url {
            Some(url) => Store::open_postgres(url, access).await?,
            None => Store::open(&settings.keeper_db, access).await?,
        };
        let mut queue = Queue::new(store.db().clone(), settings.retry_policy(), settings.lease())
            .sharing_write_turn(store.write_turn());
        if let Some(name) = &settings.keeper_host_name {
            queue = queue.named(name);
        }
        let registry = Registry::new(store.db().clone());
        Ok(App {
            settings,
            store,
            queue,
            registry,
            wake: Arc::new(Wake::default()),
        })
    }

    /// VH-Database where the settings say it is.
    pub fn sink(&self) -> Sink {
        Sink::new(self.settings.haven_location(), self.settings.haven_busy_timeout())
    }

    /// A worker that takes each batch's plugin from `plugins`.
    pub fn worker_on(&self, plugins: PluginSlot) -> Worker {
        let settings = &self.settings;
        Worker {
            store: self.store.clone(),
            queue: self.queue.clone(),
            sink: self.sink(),
            plugins,
            pacing: ClaimPacing::new(
                settings.sync_batch_size,
                settings.sync_batch_max,
                Duration::from_millis(settings.sync_cooldown_ms),
            ),
            interval: Duration::from_secs(settings.sync_interval.max(1)),
            wake: self.wake.clone(),
            status: Arc::new(WorkerStatus::default()),
            canary: None,
        }
    }
}
