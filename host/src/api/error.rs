//! Every answer that is not a success: one JSON shape, [`ErrorBody`], with a
//! message that says what is wrong.
//!
//! Handlers return [`ApiError`] (documented per operation). Everything else
//! that can go wrong before a handler runs (an unknown path, a parameter or
//! body poem-openapi cannot parse, a missing or wrong API key, a body over the
//! limit) arrives as a plain [`poem::Error`] and is turned into the same JSON
//! shape by [`to_json_response`], so a client never sees a text error page.

use poem::Response;
use poem::http::{Method, StatusCode};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Enum, Object};

use crate::queue::{RetryError, RetryRefused};

/// Always `error` in an error body (successes say `ok`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ErrorStatus {
    Error,
}

/// What every failed request gets back.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
pub struct ErrorBody {
    /// Always `error`.
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

/// The errors an operation documents.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// A parameter, id or body that cannot be used; the message names it.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// `SYNC_API_KEY` is set and header `X-API-Key` is missing or wrong.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// No such queue item (or discovery).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The item is in a state that does not allow this (e.g. already synced).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request body is larger than 1 MiB.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// keeper.db cannot be read or written right now; try again.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::BadRequest(Json(ErrorBody::new(StatusCode::BAD_REQUEST, message)))
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::Unauthorized(Json(ErrorBody::new(StatusCode::UNAUTHORIZED, message)))
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::NotFound(Json(ErrorBody::new(StatusCode::NOT_FOUND, message)))
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::Conflict(Json(ErrorBody::new(StatusCode::CONFLICT, message)))
    }
}

impl From<sqlx::Error> for ApiError {
    /// A keeper.db failure is the server's problem, not the client's: logged
    /// in full, answered with 503 so a client retries.
    fn from(error: sqlx::Error) -> ApiError {
        tracing::error!(%error, "sync API: keeper.db request failed");
        ApiError::Unavailable(Json(ErrorBody::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("keeper.db: {error}"),
        )))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> ApiError {
        tracing::error!(%error, "sync API: keeper.db request failed");
        ApiError::Unavailable(Json(ErrorBody::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())))
    }
}

impl From<RetryRefused> for ApiError {
    fn from(error: RetryRefused) -> ApiError {
        match error {
            RetryRefused::Refused(refused @ RetryError::NotFound(_)) => ApiError::not_found(refused.to_string()),
            RetryRefused::Refused(refused) => ApiError::conflict(refused.to_string()),
            RetryRefused::Sql(e) => ApiError::from(e),
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
        StatusCode::PAYLOAD_TOO_LARGE => format!("request body is larger than {} bytes", super::MAX_BODY_BYTES),
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
