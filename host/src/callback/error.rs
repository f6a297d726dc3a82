//! The one place that turns a refusal into a status code and an
//! [`ApiError`] body.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use delegate_proto::api::ApiError;

use crate::jobs::guest::GuestError;

/// Maps a refusal to its response.
pub fn respond(e: GuestError) -> Response {
    let (status, code) = match &e {
        GuestError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
        // 409: the guest stops calling (it treats 409/410 as "job is over").
        GuestError::Final(_) => (StatusCode::CONFLICT, "conflict"),
        GuestError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        GuestError::TooLarge { .. } | GuestError::TooMany { .. } => {
            (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        }
        GuestError::UnsupportedProtocol(_) => (StatusCode::BAD_REQUEST, "unsupported_protocol"),
        // 503: the guest retries with backoff.
        GuestError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        GuestError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    if matches!(e, GuestError::Busy(_)) {
        tracing::warn!(error = %e, "callback request refused");
    } else if status.is_server_error() {
        tracing::error!(error = %e, "callback request failed");
    } else {
        tracing::debug!(error = %e, %status, "callback request refused");
    }
    let mut resp = (
        status,
        Json(ApiError {
            code: code.to_string(),
            message: e.to_string(),
        }),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    resp
}
