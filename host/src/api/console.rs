//! The operator console: a few hand-written pages served by `keeper run` at
//! `/console` (`/` redirects there), built into the binary so that it works
//! offline with nothing to install, and with no build step of its own.
//!
//! The pages are only a client of the JSON API: they read `/health`,
//! `/sync/statistics`, `/sync/failures`, `/sync/items`, `/plugins`, … and
//! retry through the same operations as any other client. With
//! `SYNC_API_KEY` set the page asks for the key once, keeps it in the tab's
//! `sessionStorage` and sends it as `X-API-Key`: there is no cookie, so
//! another site cannot make a browser act with it (no CSRF), and the pages
//! themselves (which hold no data) are served without the key, like `/docs`.
//!
//! Every answer carries a Content-Security-Policy that allows only this
//! server's own scripts and styles and no framing: report fields are shown
//! as text, never as HTML, and this keeps it so should that slip.

use poem::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, LOCATION, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS};
use poem::http::{Method, StatusCode};
use poem::web::Path;
use poem::{Response, Route, get, handler};

/// Where the console lives.
pub const PATH: &str = "/console";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// One embedded file of the console folder, by name.
macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_str!(concat!("console/", $name)),
        }
    };
}

/// The console's files: the page, its style, its script modules.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("console.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("ui.js", "text/javascript; charset=utf-8"),
    asset!("pages.js", "text/javascript; charset=utf-8"),
];

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                      connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `/console` and its files.
pub fn routes() -> Route {
    Route::new().at("/", get(index)).at("/:file", get(file))
}

#[handler]
fn index() -> Response {
    serve("index.html").unwrap_or_else(not_found)
}

#[handler]
fn file(Path(name): Path<String>) -> Response {
    serve(&name).unwrap_or_else(not_found)
}

fn serve(name: &str) -> Option<Response> {
    let asset = ASSETS.iter().find(|a| a.name == name)?;
    Some(
        Response::builder()
            .content_type(asset.content_type)
            // Embedded in the binary: a new keeper serves new files at once.
            .header(CACHE_CONTROL, "no-cache")
            .header(CONTENT_SECURITY_POLICY, POLICY)
            .header(X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(X_FRAME_OPTIONS, "DENY")
            .body(asset.body),
    )
}

fn not_found() -> Response {
    let status = StatusCode::NOT_FOUND;
    super::error::json_response(
        status,
        super::error::ErrorBody::new(status, format!("no such console file; the console is at {PATH}")),
    )
}

/// The answer to `/`, which has nothing of its own: the console (a
/// temporary redirect, so a later keeper may serve something else there).
/// `None` for a method other than GET or HEAD (405, like any path).
pub fn root(method: &Method) -> Option<Response> {
    (method == Method::GET || method == Method::HEAD).then(|| {
        Response::builder()
            .status(StatusCode::FOUND)
            .header(LOCATION, PATH)
            .finish()
    })
}
