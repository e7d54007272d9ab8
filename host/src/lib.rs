//! Keeper sync: the queue-based sync of No Man's Sky discovery reports from
//! the Keeper bot's keeper.db to the Control Room's VH-Database, with the
//! mapping between the two running as a sandboxed wasm plugin.
//!
//! Modules, one concern each:
//! - [`config`] — settings from the environment, `.env` and flags
//! - [`report`] — the ten report forms and validation of incoming reports
//! - [`records`] — `keeper submit --json`'s input split into records, bounded
//! - [`db`] — which database holds the store and queue: SQLite (keeper.db) or PostgreSQL
//! - [`store`] — keeper.db or PostgreSQL (schema, migrations, submission)
//! - [`queue`] — the sync queue's states, transitions and retry rule
//! - [`mapper`] — the wasm plugin sandbox
//! - [`plugins`] — start-up choice, hot reload, conformance, `keeper plugin`
//! - [`registry`] — which plugins were active, retired or rejected
//! - [`sink`] — VH-Database (schema check, exactly-once writes)
//! - [`ledger`] — VH-Database's delivery ledger: which report became which row
//! - [`sqlite_error`] — SQLite failures classified by result code
//! - [`delivery`] — map, check, write: the step the worker and the puller share
//! - [`worker`] — the loop that moves batches from one to the other
//! - [`pull`] — remote mode: fetch a bot host's pending items, deliver, acknowledge
//! - [`bot`] — the Discord bot: `/discovery-report`, its forms, autocomplete, `/sync-status`
//! - [`evidence`] — images attached in Discord, kept in keeper.db and served by the API
//! - [`api`] — the sync API (HTTP, OpenAPI, Swagger UI, metrics)
//! - [`tls`] — the API's certificate and the puller's trusted roots (rustls, ring)
//! - [`app`], [`cli`] — wiring and the command line
//! - [`logging`], [`output`] — log lines on stderr, a command's results on stdout

pub mod api;
pub mod app;
pub mod bot;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod delivery;
pub mod evidence;
pub mod ledger;
pub mod logging;
pub mod mapper;
pub mod output;
pub mod platform;
pub mod plugins;
pub mod pull;
pub mod queue;
pub mod records;
pub mod registry;
pub mod report;
pub mod row;
pub mod sink;
pub mod sqlite_error;
pub mod store;
pub mod tls;
pub mod worker;
