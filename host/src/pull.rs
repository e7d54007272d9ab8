//! Remote mode, Control Room side: `keeper pull`.
//!
//! The bot host (`USE_HAVEN_DATABASE=false`) keeps the queue and serves it
//! through the sync API. The puller runs beside Control Room: it fetches
//! pending items (`GET /sync/export`), maps and writes them to the local
//! VH-Database with the same step as the local worker
//! ([`crate::delivery::deliver`]), then acknowledges what it wrote
//! (`POST /sync/ack`). One engine, two sources.
//!
//! Nothing is persisted here but VH-Database: the server's queue is the
//! truth (the export only offers pending items, so every round starts at
//! cursor 0), and the VH-Database ledger, keyed by the server's keeper.db
//! source id, makes a write that was never acknowledged (a crash, a lost
//! answer) come back as "already there" instead of a second row.
//!
//! The HTTP client is blocking (ureq, already in the tree, without TLS):
//! every exchange runs on a blocking thread. Plain `http://` only.

use std::time::Duration;

use poem_openapi::types::{ParseFromJSON, ToJSON};
use tokio::sync::watch;

use crate::api::model::{AckEntry, AckRequest, AckResult, ExportPage, ExportedItem};
use crate::delivery::{self, Input, Outcome};
use crate::mapper::PluginSlot;
use crate::row::Row;
use crate::sink::{Sink, SinkError};

/// How long one HTTP exchange may take, connection included.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this much of a wrong answer is quoted in an error.
const EXCERPT: usize = 200;

/// Why a pull round stopped. Nothing that was not written is acknowledged,
/// so every one of these is safe to retry as a whole.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("--from {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach the sync API at {url}: {reason} (is `keeper run` up on the bot host, and --from right?)")]
    Unreachable { url: String, reason: String },
    #[error("the sync API at {url} refused the request (401 Unauthorized): {hint}")]
    Unauthorized { url: String, hint: &'static str },
    #[error("the sync API at {url} answered HTTP {status}: {message}")]
    Status { url: String, status: u16, message: String },
    #[error("{url} did not answer JSON (is --from the address of the sync API?): {excerpt}")]
    NotJson { url: String, excerpt: String },
    #[error(
        "{url} answered JSON of an unexpected shape ({reason}); are the bot host and this keeper the same version?"
    )]
    Shape { url: String, reason: String },
    #[error("HTTP thread failed: {0}")]
    Thread(String),
    /// VH-Database cannot be used: nothing was written or acknowledged.
    #[error("{0}; nothing was acknowledged, the items stay pending on the bot host")]
    Sink(#[from] SinkError),
}

/// Totals of one round, for `keeper pull --once`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pulled {
    /// Written to VH-Database (or found there) and acknowledged.
    pub pulled: u64,
    /// Not written: mapping, schema or source problems; left pending.
    pub failed: u64,
}

/// The bot host's sync API.
#[derive(Clone)]
pub struct Remote {
    agent: ureq::Agent,
    /// Without a trailing slash.
    base: String,
    api_key: Option<String>,
}

impl Remote {
    /// `from` is the API's base address, e.g. `http://bot-host:8080`.
    pub fn new(from: &str, api_key: Option<String>) -> Result<Remote, PullError> {
        let bad = |reason: &str| PullError::BadUrl {
            url: from.to_owned(),
            reason: reason.to_owned(),
        };
        let base = from.trim_end_matches('/');
        if base.starts_with("https://") {
            return Err(bad(
                "https is not supported by this build (no TLS); reach the sync API over http, e.g. through an SSH tunnel or a private network",
            ));
        }
        let Some(host) = base.strip_prefix("http://") else {
            return Err(bad("expected an http:// address, e.g. http://127.0.0.1:8080"));
        };
        if host.is_empty() {
            return Err(bad("the address has no host"));
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .build()
            .into();
        Ok(Remote {
            agent,
            base: base.to_owned(),
            api_key: api_key.filter(|k| !k.is_empty()),
        })
    }

    /// One page of pending items with a queue id above `after`.
    pub async fn export(&self, after: i64, limit: u32) -> Result<ExportPage, PullError> {
        let page: ExportPage = self
            .exchange(format!("/sync/export?after={after}&limit={limit}"), None)
            .await?;
        if page.source_id.is_empty() {
            return Err(PullError::Shape {
                url: self.url("/sync/export"),
                reason: "source_id is empty".into(),
            });
        }
        Ok(page)
    }

    /// Acknowledges written items with their VH-Database ids.
    pub async fn ack(&self, items: Vec<AckEntry>) -> Result<AckResult, PullError> {
        let body = AckRequest { items }.to_json_string();
        self.exchange("/sync/ack".to_owned(), Some(body)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path`, or POST `body` as JSON to it; parses a 2xx answer as `T`.
    async fn exchange<T: ParseFromJSON>(&self, path: String, body: Option<String>) -> Result<T, PullError> {
        let url = self.url(&path);
        let (agent, key, target) = (self.agent.clone(), self.api_key.clone(), url.clone());
        let (status, text) = tokio::task::spawn_blocking(move || send(&agent, &target, key.as_deref(), body))
            .await
            .map_err(|e| PullError::Thread(e.to_string()))??;
        let excerpt = || text.chars().take(EXCERPT).collect::<String>();
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        if status == 401 {
            return Err(PullError::Unauthorized {
                url,
                hint: if self.api_key.is_some() {
                    "the API key given is wrong; use the bot host's SYNC_API_KEY (--api-key or SYNC_API_KEY)"
                } else {
                    "the bot host requires an API key; pass its SYNC_API_KEY with --api-key or set SYNC_API_KEY"
                },
            });
        }
        if !(200..300).contains(&status) {
            let message = json
                .as_ref()
                .and_then(|j| j.get("message"))
                .and_then(|m| m.as_str())
                .map_or_else(excerpt, str::to_owned);
            return Err(PullError::Status { url, status, message });
        }
        let Some(json) = json else {
            return Err(PullError::NotJson {
                url,
                excerpt: excerpt(),
            });
        };
        T::parse_from_json(Some(json)).map_err(|e| PullError::Shape {
            url,
            reason: e.message().to_owned(),
        })
    }
}

/// One blocking HTTP exchange: the status and the body as text.
fn send(agent: &ureq::Agent, url: &str, key: Option<&str>, body: Option<String>) -> Result<(u16, String), PullError> {
    let unreachable = |e: ureq::Error| PullError::Unreachable {
        url: url.to_owned(),
        reason: e.to_string(),
    };
    let response = match body {
        None => {
            let request = agent.get(url).header("accept", "application/json");
            match key {
                Some(k) => request.header("X-API-Key", k).call(),
                None => request.call(),
            }
        }
        Some(body) => {
            let request = agent
                .post(url)
                .header("accept", "application/json")
                .header("content-type", "application/json");
            match key {
                Some(k) => request.header("X-API-Key", k).send(body.as_bytes()),
                None => request.send(body.as_bytes()),
            }
        }
    };
    let mut response = response.map_err(unreachable)?;
    let status = response.status().as_u16();
    // An export page of 1000 full discovery rows stays well under this.
    let text = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .map_err(unreachable)?;
    Ok((status, text))
}

/// Fetches, delivers and acknowledges, round after round.
pub struct Puller {
    pub remote: Remote,
    pub sink: Sink,
    pub plugins: PluginSlot,
    /// Items per export page (and so per VH-Database transaction).
    pub page_size: u32,
}

impl Puller {
    /// Everything pending on the bot host now, page by page. The cursor lives
    /// only for the round: items that failed here stay pending there and are
    /// offered again next round.
    pub async fn round(&self) -> Result<Pulled, PullError> {
        self.round_until(None).await
    }

    /// [`Puller::round`], stopping between two pages once `stop` turns true:
    /// a shutdown waits for the page in hand, not for the whole queue.
    async fn round_until(&self, stop: Option<&watch::Receiver<bool>>) -> Result<Pulled, PullError> {
        let mut total = Pulled::default();
        let mut after = 0;
        loop {
            if stop.is_some_and(|s| *s.borrow()) {
                break;
            }
            let page = self.remote.export(after, self.page_size).await?;
            if page.items.is_empty() {
                break;
            }
            let done = self.page(&page).await?;
            total.pulled += done.pulled;
            total.failed += done.failed;
            // A cursor that does not move would loop for ever.
            if !page.has_more || page.next_after <= after {
                break;
            }
            after = page.next_after;
        }
        tracing::info!(pulled = total.pulled, failed = total.failed, "pull round done");
        Ok(total)
    }

    /// Writes one page to VH-Database and acknowledges what was written.
    async fn page(&self, page: &ExportPage) -> Result<Pulled, PullError> {
        let inputs: Vec<Input> = page.items.iter().map(input).collect();
        let plugin = self.plugins.current();
        let outcomes = delivery::deliver(&self.sink, &plugin, &page.source_id, &inputs).await?;
        let mut acks = Vec::new();
        let mut failed = 0;
        for (item, outcome) in page.items.iter().zip(outcomes) {
            match outcome {
                Outcome::Delivered {
                    haven_id,
                    keeper_db_replaced,
                    ..
                } => acks.push(AckEntry {
                    queue_id: item.queue_id,
                    haven_discovery_id: haven_id,
                    keeper_db_replaced: keeper_db_replaced.then_some(true),
                }),
                Outcome::Failed { class, message } => {
                    failed += 1;
                    tracing::warn!(
                        queue_id = item.queue_id,
                        discovery_id = item.discovery_id,
                        class = class.as_str(),
                        error = %message,
                        "pulled item not written; it stays pending on the bot host"
                    );
                }
            }
        }
        if acks.is_empty() {
            return Ok(Pulled { pulled: 0, failed });
        }
        let written = acks.len();
        let result = self.remote.ack(acks).await?;
        let pulled = (result.acknowledged.len() + result.already_synced.len()) as u64;
        if !result.in_progress.is_empty() || !result.unknown.is_empty() {
            // Written here, but the bot host did not take the acknowledgement
            // (its own worker holds them, or they were deleted); the ledger
            // keeps a later round from writing them again.
            tracing::warn!(
                in_progress = ?result.in_progress,
                unknown = ?result.unknown,
                "the bot host did not mark every written item synced"
            );
        }
        tracing::info!(
            source_id = %page.source_id,
            written,
            acknowledged = result.acknowledged.len(),
            already_synced = result.already_synced.len(),
            failed,
            "pull page done"
        );
        Ok(Pulled { pulled, failed })
    }

    /// Rounds every `every` until `shutdown` turns true. A failed round
    /// (bot host unreachable, VH-Database locked) is logged and retried.
    pub async fn run(&self, every: Duration, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            if let Err(error) = self.round_until(Some(&shutdown)).await {
                tracing::error!(%error, "pull round failed; trying again next interval");
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("puller stopped");
    }
}

/// An exported item as the delivery step's input.
fn input(item: &ExportedItem) -> Input {
    let row = match &item.discovery.0 {
        Some(json) => Row::from_json(json).map_err(|e| format!("bot host's discovery {}: {e}", item.discovery_id)),
        None => Err(item
            .discovery_error
            .clone()
            .unwrap_or_else(|| format!("the export carries no row for discovery {}", item.discovery_id))),
    };
    Input {
        discovery_id: item.discovery_id,
        backfill: item.backfill,
        row,
    }
}
