//! Every answer that is not a success: one JSON shape, [`ErrorBody`], with a
//! message that says what is wrong.
//!
//! Handlers return one of the error types below, each listing only the
//! statuses its operations can answer (documented per operation). Everything else
//! that can go wrong before a handler runs (an unknown path, a parameter or
//! body poem-openapi cannot parse, a missing or wrong API key, a body over the
//! limit) arrives as a plain [`poem::Error`] and is turned into the same JSON
//! shape by [`to_json_response`], so a client never sees a text error page.

use poem::Response;
use poem::http::{Method, StatusCode};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Enum, Object};

use crate::plugins::PluginsError;
use crate::plugins::control::ControlError;
use crate::queue::{RetryError, RetryRefused};

/// Always `error` in an error body (successes say `ok`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ErrorStatus {
    Error,
}

/// What every failed request gets back; `status` is always `error`.
// (`status` carries no doc comment: it would wrap the enum's reference in an
// `allOf`, which openapi-python-client refuses: "Cannot take allOf a non-object".)
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(example)]
pub struct ErrorBody {
    pub status: ErrorStatus,
    /// The kind of problem, for programs: `bad_request`, `unauthorized`,
    /// `not_found`, `conflict`, `payload_too_large`, `unprocessable`,
    /// `unavailable`, …
    pub error: String,
    /// What is wrong, for people: names the parameter, field or item.
    pub message: String,
}

impl ErrorBody {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            status: ErrorStatus::Error,
            error: kind(status).to_owned(),
            message: message.into(),
        }
    }
}

/// The short machine-readable name of a status.
fn kind(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::MISDIRECTED_REQUEST => "misdirected_request",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "request_header_fields_too_large",
        StatusCode::CONFLICT => "conflict",
        StatusCode::LENGTH_REQUIRED => "length_required",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    }
}

/// Declares the error answers of a group of operations: only the statuses
/// listed, each documented, each with a constructor, so that an operation
/// cannot answer a status its document does not list (a constructor that is
/// not there does not compile). Statuses: `BadRequest` 400, `Unauthorized`
/// 401, `NotFound` 404, `Conflict` 409, `PayloadTooLarge` 413 (`PluginTooLarge`
/// for the plugin uploads), `Unprocessable` 422, `Unavailable` 503 (with
/// `From` keeper.db errors).
macro_rules! api_errors {
    ($(#[doc = $doc:literal])* $name:ident { $($variant:ident),+ $(,)? }) => {
        api_errors!(@munch [$(#[doc = $doc])*] $name [] $($variant)+);
    };
    (@constructor $name:ident, $fn:ident, $variant:ident, $status:ident) => {
        impl $name {
            pub fn $fn(message: impl Into<String>) -> $name {
                $name::$variant(Json(ErrorBody::new(StatusCode::$status, message)))
            }
        }
    };
    (@munch [$($docs:tt)*] $name:ident [$($body:tt)*]) => {
        $($docs)*
        #[derive(Debug, ApiResponse)]
        pub enum $name { $($body)* }
    };
    (@munch $docs:tt $name:ident [$($body:tt)*] BadRequest $($rest:ident)*) => {
        api_errors!(@munch $docs $name [$($body)*
            /// A parameter, id or body that cannot be used; the message names it.
            #[oai(status = 400)]
            BadRequest(Json<ErrorBody>),
        ] $($rest)*);
        api_errors!(@constructor $name, bad_request, BadRequest, BAD_REQUEST);
    };
    (@munch $docs:tt $name:ident [$($body:tt)*] Unauthorized $($rest:ident)*) => {
        api_errors!(@munch $docs $name [$($body)*
            /// `SYNC_API_KEY` is set and header `X-API-Key` is missing or wrong.
            #[oai(status = 401)]
            Unauthorized(Json<ErrorBody>),
        ] $($rest)*);
        api_errors!(@constructor $name, unauthorized, Unauthorized, UNAUTHORIZED);
    };
    (@munch $docs:tt $name:ident [$($body:tt)*] NotFound $($rest:ident)*) => {
        api_errors!(@munch $docs $name [$($body)*
            /// No such item (queue item or evidence image); the message says which.
            #[oai(status = 404)]
            NotFound(Json<ErrorBody>),
        ] $($rest)*);
        api_errors!(@constructor $name, not_found, NotFound, NOT_FOUND);
    };
    (@munch $docs:tt $name:ident [$($body:tt)*] Conflict $($rest:ident)*) => {
        api_errors!(@munch $docs $name [$($body)*
            /// Not possible in this state; the message says why (an item
            /// already synced or being synced, or remote mode asked of a host
            /// that writes VH-Database itself).
            #[oai(status = 409)]
            Conflict(Json<ErrorBody>),
        ] $($rest)*);
        api_errors!(@constructor $name, conflict, Conflict, CONFLICT);
    };
    (@munch $docs:tt $name:ident [$($body:tt)*] PayloadTooLarge $($rest:ident)*) => {
        api_errors!(@munch $docs $name [$($body)*
            /// The request body is larger than 1 MiB.
            #[oai(status = 413)]
            PayloadTooLarge(Json<ErrorBody>),
        ] $($rest)*);
    };
    (@munch $docs:tt $name:ident [$($body:tt)*] PluginTooLarge $($rest:ident)*) => {
        api_errors!(@munch $docs $name [$($body)*
            /// The plugin is larger than 64 MiB.
            #[oai(status = 413)]
            PayloadTooLarge(Json<ErrorBody>),
        ] $($rest)*);
    };
    (@munch $docs:tt $name:ident [$($body:tt)*] Unprocessable $($rest:ident)*) => {
        api_errors!(@munch $docs $name [$($body)*
            /// The plugin failed the conformance check (or is no plugin at
            /// all); the message gives the reason, as `GET /plugins` lists it.
            #[oai(status = 422)]
            Unprocessable(Json<ErrorBody>),
        ] $($rest)*);
        api_errors!(@constructor $name, unprocessable, Unprocessable, UNPROCESSABLE_ENTITY);
    };
    (@munch $docs:tt $name:ident [$($body:tt)*] Unavailable $($rest:ident)*) => {
        api_errors!(@munch $docs $name [$($body)*
            /// keeper.db cannot be read or written right now; try again.
            #[oai(status = 503)]
            Unavailable(Json<ErrorBody>),
        ] $($rest)*);
        impl From<sqlx::Error> for $name {
            fn from(error: sqlx::Error) -> $name {
                $name::Unavailable(Json(unavailable_with(&error, "keeper.db: ")))
            }
        }
        impl From<crate::store::StoreError> for $name {
            fn from(error: crate::store::StoreError) -> $name {
                // Its message already says which database failed.
                $name::Unavailable(Json(unavailable_with(&error, "")))
            }
        }
        impl $name {
            /// 503 for a failure that is not keeper.db's.
            #[allow(dead_code)]
            pub fn unavailable(message: impl Into<String>) -> $name {
                $name::Unavailable(Json(ErrorBody::new(StatusCode::SERVICE_UNAVAILABLE, message)))
            }
        }
    };
}

/// A keeper.db failure is the server's problem, not the client's: logged in
/// full, answered with 503 so that a client retries.
fn unavailable_with(error: &dyn std::fmt::Display, prefix: &str) -> ErrorBody {
    tracing::error!(%error, "sync API: keeper.db request failed");
    ErrorBody::new(StatusCode::SERVICE_UNAVAILABLE, format!("{prefix}{error}"))
}

api_errors! {
    /// The error of an operation that answers even when keeper.db cannot be
    /// read (`/metrics`): only a wrong key.
    KeyError { Unauthorized }
}

api_errors! {
    /// The errors of an operation that takes no input: a wrong key, or
    /// keeper.db unavailable.
    ReadError { Unauthorized, Unavailable }
}

api_errors! {
    /// The errors of an operation with query parameters.
    QueryError { BadRequest, Unauthorized, Unavailable }
}

api_errors! {
    /// The errors of reading one queue item.
    ItemError { BadRequest, Unauthorized, NotFound, Unavailable }
}

api_errors! {
    /// The errors of fetching an evidence image.
    EvidenceError { Unauthorized, NotFound, Unavailable }
}

api_errors! {
    /// The errors of retrying one queue item.
    RetryItemError { BadRequest, Unauthorized, NotFound, Conflict, Unavailable }
}

api_errors! {
    /// The errors of submitting a report (a reused `Idempotency-Key` is 422,
    /// documented with the success).
    SubmitError { BadRequest, Unauthorized, PayloadTooLarge, Unavailable }
}

api_errors! {
    /// The errors of exporting pending items (409: not a remote-mode host).
    ExportError { BadRequest, Unauthorized, Conflict, Unavailable }
}

api_errors! {
    /// The errors of acknowledging items or reporting failures (409: not a
    /// remote-mode host).
    RemoteWriteError { BadRequest, Unauthorized, Conflict, PayloadTooLarge, Unavailable }
}

api_errors! {
    /// The errors of uploading or previewing a plugin (409: this host runs
    /// no plugins, in remote mode).
    PluginUploadError { BadRequest, Unauthorized, Conflict, PluginTooLarge, Unprocessable, Unavailable }
}

api_errors! {
    /// The errors of previewing, activating or rolling back to an earlier
    /// plugin version (409: remote mode, or nothing to roll back to; 422: the
    /// version no longer passes the conformance check).
    PluginVersionError { BadRequest, Unauthorized, NotFound, Conflict, Unprocessable, Unavailable }
}

/// An upload's or activation's failure as the status that says who can fix it.
macro_rules! from_control_error {
    ($name:ident, $unknown:ident) => {
        impl From<ControlError> for $name {
            fn from(error: ControlError) -> $name {
                let message = error.to_string();
                match error {
                    ControlError::BadName(_) | ControlError::BadShare(_) => $name::bad_request(message),
                    ControlError::CanaryRunning { .. } | ControlError::CanaryOfActive(_) => $name::conflict(message),
                    ControlError::Rejected(_) | ControlError::Plugins(PluginsError::Rejected(_)) => {
                        $name::unprocessable(message)
                    }
                    ControlError::UnknownVersion(_) => $name::$unknown(message),
                    ControlError::NothingEarlier => $name::conflict(message),
                    ControlError::Sql(e) => $name::from(e),
                    ControlError::Folder { .. } | ControlError::Stopped | ControlError::Plugins(_) => {
                        tracing::error!(error = %message, "sync API: a plugin could not be installed");
                        $name::unavailable(message)
                    }
                }
            }
        }
    };
}

from_control_error!(PluginUploadError, conflict);
from_control_error!(PluginVersionError, not_found);

impl From<RetryRefused> for RetryItemError {
    fn from(error: RetryRefused) -> RetryItemError {
        match error {
            RetryRefused::Refused(refused @ RetryError::NotFound(_)) => RetryItemError::not_found(refused.to_string()),
            RetryRefused::Refused(refused) => RetryItemError::conflict(refused.to_string()),
            RetryRefused::Sql(e) => RetryItemError::from(e),
        }
    }
}

/// Turns any error that did not come from a handler into an [`ErrorBody`]
/// response with the same status (poem's own errors are plain text).
pub fn to_json_response(error: poem::Error, method: &Method, path: &str) -> Response {
    if error.is_from_response() {
        // Built by a handler or the API key check: already JSON.
        return error.into_response();
    }
    // A body that is not declared as JSON is a malformed request like any
    // other: 400, as documented, with what to do about it.
    let status = match error.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => StatusCode::BAD_REQUEST,
        s => s,
    };
    let message = match status {
        StatusCode::BAD_REQUEST if error.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            format!("{error}; send the body as JSON with Content-Type: application/json")
        }
        StatusCode::NOT_FOUND => format!("no endpoint {method} {path}; the list is at /docs"),
        StatusCode::METHOD_NOT_ALLOWED => format!("{path} does not accept {method}; see /docs"),
        StatusCode::PAYLOAD_TOO_LARGE => match super::body_limit(method, path) {
            super::MAX_PLUGIN_BODY_BYTES => format!(
                "the plugin is larger than {} MiB ({} bytes), the most a plugin may be",
                super::MAX_PLUGIN_BODY_BYTES >> 20,
                super::MAX_PLUGIN_BODY_BYTES
            ),
            limit => format!("request body is larger than {limit} bytes"),
        },
        s if s.is_server_error() => {
            tracing::error!(%error, %method, path, "sync API: request failed");
            format!("internal error: {error}")
        }
        // poem-openapi names path segments by position; ours are all queue ids.
        _ => error.to_string().replace("path `param0`", "path parameter `queue_id`"),
    };
    json_response(status, ErrorBody::new(status, message))
}

/// An [`ErrorBody`] response with any status.
pub fn json_response(status: StatusCode, body: ErrorBody) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(body.to_json_string())
}
