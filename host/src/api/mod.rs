//! The sync API (poem + poem-openapi), served by `keeper run`.
//!
//! - [`routes`] — the operations; their types ([`model`]) are the documentation
//! - [`auth`] — the optional API key
//! - [`console`] — the operator console's pages, at `/console`
//! - [`error`] — one JSON error shape for everything that is not a success,
//!   and which statuses each operation can answer
//! - [`examples`] — the document's example bodies, typed
//! - [`image`] — an evidence image as a response body
//! - [`health`] — what `/health` and `/metrics` say about the service
//! - [`metrics`] — Prometheus text
//! - [`timestamp`] — keeper.db times as RFC 3339 UTC
//! - [`wire`] — JSON bodies for the errors hyper answers by itself
//! - [`tls`] — HTTPS, when `SYNC_API_TLS_CERT` and `SYNC_API_TLS_KEY` are set
//!
//! Swagger UI is at `/docs`, the OpenAPI document at `/openapi.json`, the
//! console at `/console` (and `/` leads there); all are open without the
//! API key (the document is public: it is in the repository; the console's
//! pages hold no data and ask for the key to read any).
//! `keeper openapi` prints the same document, committed as
//! `openapi/openapi.json`.

mod auth;
mod console;
mod error;
mod examples;
mod health;
mod image;
mod metrics;
pub mod model;
mod nullable;
mod report_body;
mod routes;
pub(crate) mod timestamp;
mod tls;
mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use poem::endpoint::make_sync;
use poem::http::header::{ALLOW, CONTENT_LENGTH, HOST};
use poem::http::{HeaderValue, StatusCode};
use poem::listener::{AcceptorExt as _, BoxAcceptor, TcpAcceptor};
use poem::middleware::CatchPanic;
use poem::web::Html;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, Server};
use poem_openapi::OpenApiService;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::app::App;
use crate::bot::Gateway;
use crate::worker::WorkerStatus;
pub use auth::ApiKey;
pub use routes::SyncApi;

/// The largest request body accepted; a larger one gets 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// The largest plugin an upload or preview takes: what the plugins folder
/// takes ([`crate::plugins::MAX_PLUGIN_FILE`]; a Python plugin is ~18.5 MB).
pub const MAX_PLUGIN_BODY_BYTES: usize = crate::plugins::MAX_PLUGIN_FILE as usize;

/// The body limit of a request: [`MAX_PLUGIN_BODY_BYTES`] for the operations
/// that take a plugin (`PUT /plugins/{name}`, `POST /plugins/preview`),
/// [`MAX_BODY_BYTES`] for every other.
pub fn body_limit(method: &poem::http::Method, path: &str) -> usize {
    let takes_plugin = match segments(path).as_slice() {
        [plugins, name] if plugins == "plugins" => {
            method == poem::http::Method::PUT || (method == poem::http::Method::POST && name == "preview")
        }
        _ => false,
    };
    if takes_plugin {
        MAX_PLUGIN_BODY_BYTES
    } else {
        MAX_BODY_BYTES
    }
}

/// What the operations serve from, attached to every request.
pub struct ApiState {
    pub app: App,
    /// The worker of this process (never running in remote mode).
    pub worker: Arc<WorkerStatus>,
    /// Whether this process is meant to run a worker (not in remote mode):
    /// a worker that should run and does not makes `/health` degraded.
    pub worker_expected: bool,
    /// `None`: the API is open.
    pub api_key: Option<ApiKey>,
    /// This process's Discord gateway session (`disabled` without
    /// DISCORD_TOKEN); kept up to date by the bot.
    pub bot: Arc<Gateway>,
    /// The VH-Database this process writes, as chosen at start-up (`None`
    /// in remote mode).
    pub haven_db: Option<model::HavenDb>,
    /// The plugin manager of this process's worker (`None` in remote mode,
    /// where this process runs no plugin).
    pub plugins: Option<crate::plugins::control::PluginControl>,
}

impl ApiState {
    pub fn new(app: App, worker: Arc<WorkerStatus>) -> ApiState {
        ApiState {
            worker_expected: app.settings.use_haven_database,
            haven_db: app.settings.use_haven_database.then(|| {
                let location = app.settings.haven_location();
                model::HavenDb {
                    path: location.path.display().to_string(),
                    source: location.source(),
                }
            }),
            api_key: app.settings.api_key().map(ApiKey::new),
            app,
            worker,
            bot: Arc::new(Gateway::default()),
            plugins: None,
        }
    }

    fn last_sync_time(&self) -> Option<OffsetDateTime> {
        self.worker.last_sync_time.lock().ok().and_then(|t| *t)
    }

    fn worker_report(&self) -> model::WorkerReport {
        let running = self.worker.running.load(Ordering::Relaxed);
        let uptime = (OffsetDateTime::now_utc() - self.worker.started_at).whole_seconds();
        model::WorkerReport {
            is_running: running,
            sync_interval: self.app.settings.sync_interval,
            uptime_seconds: if running { u64::try_from(uptime).unwrap_or(0) } else { 0 },
            last_sync_time: self.last_sync_time().map(timestamp::whole_seconds).into(),
        }
    }
}

/// The OpenAPI service: the operations and the document's front matter.
pub fn service() -> OpenApiService<SyncApi, ()> {
    OpenApiService::new(SyncApi, "Keeper sync API", env!("CARGO_PKG_VERSION")).description(
        "Status and control of Keeper sync's queue (keeper.db → VH-Database): the old bot's endpoints \
         with their shapes, plus item detail, retries, intake, plugins, remote-mode export and \
         acknowledgement, and Prometheus metrics. Times are RFC 3339 UTC. Every error is a JSON \
         object with a `message`. When the server has SYNC_API_KEY set, every operation but \
         /health needs header X-API-Key.",
    )
}

/// The OpenAPI document as served at `/openapi.json` and printed by `keeper openapi`.
pub fn document() -> String {
    service().spec()
}

/// The whole HTTP surface: operations, documentation, body limit, JSON errors.
pub fn endpoint(state: Arc<ApiState>) -> impl Endpoint {
    let api = service();
    let allow = Arc::new(AllowedMethods::of_api());
    let hosts = Arc::new(HostCheck::for_state(&state));
    Route::new()
        .at("/openapi.json", openapi_json())
        .nest("/docs", swagger_ui())
        .nest(console::PATH, console::routes())
        .nest("/", api)
        .with(CatchPanic::new().with_handler(panic_response))
        .data(state)
        .around(move |next, req| {
            let allow = allow.clone();
            let hosts = hosts.clone();
            async move { Ok(guard(next.as_ref(), req, &allow, &hosts).await) }
        })
}

/// Swagger UI, its page built for each request that asks for it.
///
/// The page carries Swagger UI's whole script and style (1.6 MB) and the
/// document. poem-openapi's own endpoint builds it when the server starts
/// and keeps it: every keeper read those 1.6 MB and held two copies of
/// them at once, raising an idle keeper's peak memory, whether or not
/// anyone ever opened `/docs`. Built on demand it costs a few milliseconds
/// a visit and nothing when unvisited. (The OAuth redirect page that
/// poem-openapi serves beside it is left out: this API has no OAuth.)
fn swagger_ui() -> impl Endpoint {
    Route::new().at("/", make_sync(|_| Html(service().swagger_ui_html())))
}

/// The OpenAPI document, written for each request, for the same reason as
/// [`swagger_ui`]: poem-openapi's endpoint writes it (150 KB) at start-up
/// and keeps it, and copies it for every request anyway.
fn openapi_json() -> impl Endpoint {
    make_sync(|_| Response::builder().content_type("application/json").body(document()))
}

/// The `Host` names an open API answers to. Without an API key the API is
/// bound to loopback, where only this machine can reach it; but a web page
/// in a browser on this machine can, through DNS rebinding (a name of the
/// attacker's that resolves to 127.0.0.1), and the browser then sends that
/// name as `Host`. So an open loopback API answers only to `localhost`,
/// loopback addresses (any port) and `SYNC_API_HOST`, and refuses other
/// names with 421. A keyed API is protected by its key instead.
struct HostCheck(Option<Option<IpAddr>>);

impl HostCheck {
    fn for_state(state: &ApiState) -> HostCheck {
        let settings = &state.app.settings;
        let open_loopback = state.api_key.is_none() && settings.api_addr().ip().is_loopback();
        HostCheck(open_loopback.then_some(settings.sync_api_host))
    }

    /// `None` when the request may go on; otherwise the refusal.
    fn refuse(&self, req: &Request) -> Option<Response> {
        let configured = self.0?;
        let host = req
            .headers()
            .get(HOST)
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
            .or_else(|| req.uri().authority().map(|a| a.to_string()))?;
        let name = host_name(&host);
        let allowed = name.eq_ignore_ascii_case("localhost")
            || name
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || Some(ip) == configured);
        if allowed {
            return None;
        }
        tracing::warn!(host = %host, "sync API: request for another host name refused (DNS rebinding?)");
        let status = StatusCode::MISDIRECTED_REQUEST;
        Some(error::json_response(
            status,
            error::ErrorBody::new(
                status,
                format!(
                    "this open sync API (no SYNC_API_KEY) answers only to localhost, loopback addresses and \
                     SYNC_API_HOST, not to Host {host:?}; use http://127.0.0.1:PORT or set SYNC_API_KEY"
                ),
            ),
        ))
    }
}

/// The name or address of a `Host` value, without its port or IPv6 brackets.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// A bug of ours, never the client's doing: JSON like every other answer,
/// details in the log (the panic message is printed there).
fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("sync API: a request handler panicked");
    let status = StatusCode::INTERNAL_SERVER_ERROR;
    error::json_response(
        status,
        error::ErrorBody::new(
            status,
            "internal error: the request could not be handled; see the server log",
        ),
    )
}

/// Checks the host, limits the body, then turns whatever error the request
/// meets into JSON.
async fn guard<E: Endpoint>(next: &E, mut req: Request, allow: &AllowedMethods, hosts: &HostCheck) -> Response {
    if let Some(refusal) = hosts.refuse(&req) {
        return refusal;
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // `/` is the OpenAPI service's own root (nested there), so it is
    // answered here rather than by a second route at the same path.
    if path == "/"
        && let Some(redirect) = console::root(&method)
    {
        return redirect;
    }
    if let Err(error) = limit_body(&mut req, body_limit(&method, &path)).await {
        return error::to_json_response(error, &method, &path);
    }
    let mut response = match next.call(req).await {
        Ok(response) => response.into_response(),
        Err(error) => error::to_json_response(error, &method, &path),
    };
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(methods) = allow.of(&path)
        && let Ok(value) = HeaderValue::from_str(methods)
    {
        // RFC 9110: a 405 lists what the resource does accept.
        response.headers_mut().insert(ALLOW, value);
    }
    response
}

/// The methods each documented path accepts, for the `Allow` header of a 405.
struct AllowedMethods(Vec<(Vec<String>, String)>);

impl AllowedMethods {
    /// From the operations' own declarations (what the document's `paths`
    /// are written from), plus the routes outside the OpenAPI service.
    fn of_api() -> AllowedMethods {
        let mut paths: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for api in <SyncApi as poem_openapi::OpenApi>::meta() {
            for path in api.paths {
                let methods = paths.entry(path.path).or_default();
                methods.extend(path.operations.iter().map(|o| o.method.as_str().to_owned()));
            }
        }
        let mut table: Vec<(Vec<String>, String)> = vec![
            (segments("/openapi.json"), "GET".into()),
            (segments("/docs"), "GET".into()),
            (segments(console::PATH), "GET".into()),
            (segments(&format!("{}/{{file}}", console::PATH)), "GET".into()),
        ];
        for (template, methods) in paths {
            table.push((segments(&template), Vec::from_iter(methods).join(", ")));
        }
        AllowedMethods(table)
    }

    fn of(&self, path: &str) -> Option<&str> {
        let wanted = segments(path);
        self.0
            .iter()
            .find(|(template, _)| {
                template.len() == wanted.len()
                    && template
                        .iter()
                        .zip(&wanted)
                        .all(|(t, w)| t == w || (t.starts_with('{') && t.ends_with('}')))
            })
            .map(|(_, methods)| methods.as_str())
    }
}

fn segments(path: &str) -> Vec<String> {
    path.split('/').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Reads the body into memory up to `limit` bytes (see [`body_limit`]): a
/// larger declared or actual body is refused with 413 before anything parses it.
async fn limit_body(req: &mut Request, limit: usize) -> poem::Result<()> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(poem::error::ReadBodyError::PayloadTooLarge.into());
    }
    let body = req.take_body().into_bytes_limit(limit).await?;
    req.set_body(body);
    Ok(())
}

/// A server that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} for the sync API: {source} (set SYNC_API_PORT or SYNC_API_HOST)")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// A bound, not yet serving, API: binding first lets `keeper run` fail at
/// start-up when the port is taken, before the worker starts.
pub struct Listening {
    listener: tokio::net::TcpListener,
    pub addr: SocketAddr,
    /// `None`: plain HTTP.
    tls: Option<crate::tls::ServerTls>,
}

impl Listening {
    /// Binds `addr`; with `tls`, the API will be served over HTTPS only.
    pub async fn bind(addr: SocketAddr, tls: Option<crate::tls::ServerTls>) -> Result<Listening, ServeError> {
        let bind_err = |source| ServeError::Bind { addr, source };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        Ok(Listening { listener, addr, tls })
    }

    /// Serves until `shutdown` turns true, then lets requests in flight finish.
    pub async fn serve(self, state: ApiState, mut shutdown: watch::Receiver<bool>) {
        let addr = self.addr;
        let protected = state.api_key.is_some();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(host = %addr.ip(), protected, scheme, "🌐 Sync API available on port {}", addr.port());
        if !protected && !addr.ip().is_loopback() {
            tracing::warn!(
                host = %addr.ip(),
                port = addr.port(),
                "the sync API is reachable from other machines without an API key: anyone who can \
                 connect can read the queue and submit reports; set SYNC_API_KEY"
            );
        }
        let tcp = match TcpAcceptor::from_tokio(self.listener) {
            Ok(a) => a,
            Err(error) => {
                tracing::error!(%error, %addr, "sync API cannot start");
                return;
            }
        };
        // hyper's own error answers are rewritten inside TLS, where they are plain.
        let acceptor: BoxAcceptor = match self.tls {
            Some(config) => wire::JsonErrors(tls::TlsAcceptor::new(tcp, config)).boxed(),
            None => wire::JsonErrors(tcp).boxed(),
        };
        let stop = async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    break;
                }
            }
        };
        let served = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(endpoint(Arc::new(state)), stop, Some(std::time::Duration::from_secs(5)))
            .await;
        match served {
            Ok(()) => tracing::info!("sync API stopped"),
            Err(error) => tracing::error!(%error, %addr, "sync API failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AllowedMethods, document, host_name};

    #[test]
    fn host_names_lose_their_port_and_brackets() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name("evil.example:x"), "evil.example:x");
    }

    /// A 405's `Allow` lists what the document says the path accepts: the
    /// table is built from the operations' declarations, not by reading
    /// the document back.
    #[test]
    fn every_documented_path_allows_the_documents_methods() {
        let document: serde_json::Value = serde_json::from_str(&document()).expect("the document is JSON");
        let paths = document["paths"].as_object().expect("the document has paths");
        let allowed = AllowedMethods::of_api();
        for (template, operations) in paths {
            let mut methods: Vec<String> = operations
                .as_object()
                .expect("a path's operations")
                .keys()
                .map(|m| m.to_uppercase())
                .collect();
            methods.sort();
            assert_eq!(allowed.of(template), Some(methods.join(", ").as_str()), "{template}");
        }
        assert_eq!(allowed.of("/docs"), Some("GET"));
        assert_eq!(allowed.of("/no/such/path"), None);
        // The document's paths and the four outside it, nothing else.
        assert_eq!(allowed.0.len(), paths.len() + 4);
    }
}
