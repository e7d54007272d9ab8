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
//! The HTTP client is blocking (ureq): every exchange runs on a blocking
//! thread. `https://` trusts the system's roots and `--ca-cert`
//! ([`crate::tls::client_roots`]); plain `http://` is for private networks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use poem_openapi::types::{ParseFromJSON, ToJSON};
use tokio::sync::watch;

use crate::api::model::{
    AckEntry, AckRequest, AckResult, ExportPage, ExportedItem, FailEntry, FailRequest, FailResult, Provenance,
};
use crate::delivery::{self, Input, Outcome};
use crate::mapper::{PluginInfo, PluginSlot};
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
    /// The TLS handshake failed: an untrusted or wrong certificate, or a
    /// server that does not speak TLS. Waiting does not fix it.
    #[error("cannot reach the sync API at {url} securely: {reason}")]
    Tls { url: String, reason: String },
    #[error(transparent)]
    TlsSetup(#[from] crate::tls::TlsError),
    #[error("the sync API at {url} refused the request (401 Unauthorized): {hint}")]
    Unauthorized { url: String, hint: &'static str },
    /// A host that writes VH-Database itself: pulling from it would write
    /// every item into two VH-Databases.
    #[error("the sync API at {url} refused to export (409 Conflict): {message}")]
    Conflict { url: String, message: String },
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

impl PullError {
    /// Whether waiting cannot help: a wrong key, a wrong host or a wrong
    /// address stay wrong, so `--every` stops instead of retrying for ever.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            PullError::BadUrl { .. }
                | PullError::Unauthorized { .. }
                | PullError::Conflict { .. }
                | PullError::Tls { .. }
                | PullError::TlsSetup(_)
        )
    }
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
    /// `from` is the API's base address, e.g. `https://keeper-bot.example.com`
    /// or `http://bot-host:8080`; `ca_cert` a PEM file of CAs to trust
    /// besides the system's, for https.
    pub fn new(from: &str, api_key: Option<String>, ca_cert: Option<&Path>) -> Result<Remote, PullError> {
        let bad = |reason: &str| PullError::BadUrl {
            url: from.to_owned(),
            reason: reason.to_owned(),
        };
        let base = from.trim_end_matches('/');
        let (https, host) = match (base.strip_prefix("https://"), base.strip_prefix("http://")) {
            (Some(host), _) => (true, host),
            (None, Some(host)) => (false, host),
            (None, None) => {
                return Err(bad(
                    "expected an https:// or http:// address, e.g. https://keeper-bot.example.com",
                ));
            }
        };
        if host.is_empty() {
            return Err(bad("the address has no host"));
        }
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT));
        if https {
            let roots: Vec<ureq::tls::Certificate<'static>> = crate::tls::client_roots(ca_cert)?
                .iter()
                .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
                .collect();
            let tls = ureq::tls::TlsConfig::builder()
                .provider(ureq::tls::TlsProvider::Rustls)
                .unversioned_rustls_crypto_provider(crate::tls::provider())
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(roots)))
                .build();
            config = config.tls_config(tls);
        } else if let Some(path) = ca_cert {
            tracing::warn!(ca_cert = %path.display(), "--ca-cert is ignored: --from is plain http://");
        }
        let agent = config.build().into();
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

    /// Acknowledges written items with their VH-Database ids and the plugin
    /// that mapped them.
    pub async fn ack(&self, items: Vec<AckEntry>, plugin: &PluginInfo) -> Result<AckResult, PullError> {
        let plugin = Some(Provenance {
            name: plugin.name.clone(),
            version: plugin.version.clone(),
            hash: plugin.hash.clone(),
        });
        let body = AckRequest { items, plugin }.to_json_string();
        self.exchange("/sync/ack".to_owned(), Some(body)).await
    }

    /// Reports items that could not be written, so that the bot host counts
    /// the attempt, backs off and shows them as its own worker's failures.
    pub async fn fail(&self, items: Vec<FailEntry>) -> Result<FailResult, PullError> {
        let body = FailRequest { items }.to_json_string();
        self.exchange("/sync/fail".to_owned(), Some(body)).await
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
            if status == 409 {
                return Err(PullError::Conflict { url, message });
            }
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
    let unreachable = |e: ureq::Error| match tls_error(&e) {
        Some(tls) => PullError::Tls {
            url: url.to_owned(),
            reason: crate::tls::explain_handshake(tls, host_of(url)),
        },
        None => PullError::Unreachable {
            url: url.to_owned(),
            reason: e.to_string(),
        },
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

/// The rustls error behind a failed exchange, if TLS is what failed
/// (ureq passes a handshake failure on as an I/O error wrapping it).
fn tls_error(error: &ureq::Error) -> Option<&rustls::Error> {
    match error {
        ureq::Error::Rustls(tls) => Some(tls),
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// The host of an `http(s)://host[:port]/…` URL, for messages.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or(bracketed);
    }
    authority.split(':').next().unwrap_or(authority)
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
        let pulled = self.pages_until(stop).await;
        // Between rounds VH-Database is Control Room's alone (sink.rs).
        self.sink.release();
        pulled
    }

    async fn pages_until(&self, stop: Option<&watch::Receiver<bool>>) -> Result<Pulled, PullError> {
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
        let outcomes = delivery::deliver(&self.sink, &plugin, &page.source_id, inputs).await?;
        let mut acks = Vec::new();
        let mut failures = Vec::new();
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
                    tracing::warn!(
                        queue_id = item.queue_id,
                        discovery_id = item.discovery_id,
                        class = class.as_str(),
                        error = %message,
                        "pulled item not written; reported to the bot host"
                    );
                    failures.push(FailEntry {
                        queue_id: item.queue_id,
                        class,
                        message,
                    });
                }
            }
        }
        let failed = failures.len() as u64;
        if !failures.is_empty() {
            let result = self.remote.fail(failures).await?;
            tracing::info!(
                retrying = ?result.retrying,
                gave_up = ?result.gave_up,
                not_pending = ?result.not_pending,
                unknown = ?result.unknown,
                "failures reported to the bot host"
            );
        }
        if acks.is_empty() {
            return Ok(Pulled { pulled: 0, failed });
        }
        let written = acks.len();
        let result = self.remote.ack(acks, plugin.info()).await?;
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

    /// Rounds every `every` until `shutdown` turns true. A round that fails
    /// for a reason that may pass (bot host unreachable or answering 5xx,
    /// VH-Database locked) is logged and retried, waiting twice as long after
    /// each failure in a row (up to [`MAX_BACKOFF`], or `every` if longer).
    /// A reason that waiting cannot fix (401: wrong key; 409: a host that
    /// writes VH-Database itself) ends the loop with that error.
    pub async fn run(&self, every: Duration, mut shutdown: watch::Receiver<bool>) -> Result<(), PullError> {
        let mut failures_in_a_row: u32 = 0;
        while !*shutdown.borrow() {
            let wait = match self.round_until(Some(&shutdown)).await {
                Ok(_) => {
                    failures_in_a_row = 0;
                    every
                }
                Err(error) if error.is_permanent() => {
                    tracing::error!(%error, "pull stopped: this does not fix itself");
                    return Err(error);
                }
                Err(error) => {
                    failures_in_a_row = failures_in_a_row.saturating_add(1);
                    let wait = backoff(every, failures_in_a_row);
                    tracing::error!(%error, retry_in_seconds = wait.as_secs(), "pull round failed; trying again");
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!("puller stopped");
        Ok(())
    }
}

/// The longest wait between two failed rounds (unless `--every` is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// The wait after the `failures`-th failed round in a row: `every`, then
/// twice as long each time, capped.
fn backoff(every: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    every.saturating_mul(factor).min(MAX_BACKOFF.max(every))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_from_urls() {
        assert_eq!(host_of("https://127.0.0.1:8443/sync/export?after=0"), "127.0.0.1");
        assert_eq!(
            host_of("https://keeper-bot.example.com/sync/ack"),
            "keeper-bot.example.com"
        );
        assert_eq!(host_of("http://[::1]:8080/x"), "::1");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_or_every() {
        let s = Duration::from_secs;
        let waits: Vec<u64> = (1..=7).map(|n| backoff(s(60), n).as_secs()).collect();
        assert_eq!(waits, [60, 120, 240, 480, 900, 900, 900]);
        assert_eq!(backoff(s(3600), 5), s(3600));
        assert_eq!(backoff(s(1), u32::MAX), MAX_BACKOFF);
    }
}
