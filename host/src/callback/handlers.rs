//! Route handlers: size, protocol and token checks, then one manager call.

use axum::Json;
use axum::body::Body;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use delegate_proto::api::{
    ControlQuery, MAX_CONTROL_WAIT_SECS, MAX_EVENTS_BODY, MAX_RESULT_BODY, PROTOCOL_HEADER,
    PROTOCOL_VERSION,
};
use delegate_proto::{EventBatch, JobResult};
use serde::de::DeserializeOwned;

use super::budget;
use super::error::respond;
use crate::jobs::JobManager;
use crate::jobs::guest::GuestError;

/// `GET manifest` and `GET control` carry no body; anything beyond this is
/// refused.
pub(super) const MAX_GET_REQUEST_BODY: u64 = 4096;

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Refuses a body whose declared length is over `limit` before reading it.
pub(super) fn check_length(headers: &HeaderMap, limit: u64, what: &str) -> Result<(), GuestError> {
    match content_length(headers) {
        Some(n) if n > limit => Err(GuestError::TooLarge {
            what: format!("{what} of {n} bytes"),
            limit,
        }),
        _ => Ok(()),
    }
}

pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The checks every job route makes, in order: size, protocol, token.
pub(super) async fn admit(
    manager: &JobManager,
    job_id: &str,
    headers: &HeaderMap,
    limit: u64,
    what: &str,
) -> Result<(), GuestError> {
    check_length(headers, limit, what)?;
    let version = headers.get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok());
    if version != Some(PROTOCOL_VERSION.to_string().as_str()) {
        return Err(GuestError::UnsupportedProtocol(
            version.unwrap_or("none").to_string(),
        ));
    }
    manager.authorize_guest(job_id, bearer(headers)).await
}

async fn json_body<T: DeserializeOwned>(
    body: Body,
    limit: usize,
    what: &str,
) -> Result<T, GuestError> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
        if over {
            GuestError::TooLarge {
                what: what.to_string(),
                limit: limit as u64,
            }
        } else {
            // The body stalled past its timeout, or the client went away.
            GuestError::BadRequest(format!("the {what} broke off: {e}"))
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| GuestError::BadRequest(format!("{what}: {e}")))
}

pub(super) fn reply<T: serde::Serialize>(r: Result<T, GuestError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => respond(e),
    }
}

pub(super) async fn manifest(
    State(m): State<JobManager>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let r = async {
        admit(
            &m,
            &id,
            &headers,
            MAX_GET_REQUEST_BODY,
            "a manifest request body",
        )
        .await?;
        m.guest_spec(&id).await
    };
    reply(r.await)
}

pub(super) async fn events(
    State(m): State<JobManager>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        admit(&m, &id, &headers, MAX_EVENTS_BODY as u64, "an event batch").await?;
        let _share = budget::reserve(&headers, MAX_EVENTS_BODY).await;
        let batch: EventBatch = json_body(body, MAX_EVENTS_BODY, "event batch").await?;
        m.guest_events(&id, batch).await
    };
    reply(r.await)
}

/// `GET control`: a long poll, held until the job must stop or `wait`
/// seconds (at most [`MAX_CONTROL_WAIT_SECS`]) pass.
pub(super) async fn control(
    State(m): State<JobManager>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<ControlQuery>, QueryRejection>,
) -> Response {
    let r = async {
        admit(
            &m,
            &id,
            &headers,
            MAX_GET_REQUEST_BODY,
            "a control request body",
        )
        .await?;
        let Query(q) =
            query.map_err(|e| GuestError::BadRequest(format!("the control query: {e}")))?;
        let wait = q
            .wait
            .unwrap_or(MAX_CONTROL_WAIT_SECS)
            .min(MAX_CONTROL_WAIT_SECS);
        m.guest_control(&id, std::time::Duration::from_secs(wait))
            .await
    };
    reply(r.await)
}

pub(super) async fn result(
    State(m): State<JobManager>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        admit(&m, &id, &headers, MAX_RESULT_BODY as u64, "a result").await?;
        let _share = budget::reserve(&headers, MAX_RESULT_BODY).await;
        let result: JobResult = json_body(body, MAX_RESULT_BODY, "result").await?;
        m.guest_result(&id, result).await
    };
    reply(r.await)
}

pub(super) async fn artifacts(
    State(m): State<JobManager>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let cap = m.settings().max_artifact_bytes;
    let r = async {
        admit(&m, &id, &headers, cap, "an artifact upload").await?;
        let (staged, cap) = m.guest_stage_artifacts(&id).await?;
        // `staged` is dropped on an error, removing the partial file.
        let (size, sha) =
            super::repo::receive(body, staged.path(), cap, "the artifact upload").await?;
        m.guest_commit_artifacts(&id, staged, size, sha).await
    };
    reply(r.await)
}

/// Counts every request by route and status for `/metrics`.
pub(super) async fn count_requests(
    State(m): State<JobManager>,
    req: Request,
    next: Next,
) -> Response {
    let route = match req.extensions().get::<MatchedPath>().map(|p| p.as_str()) {
        Some(p) if p.ends_with("/manifest") => "manifest",
        Some(p) if p.ends_with("/events") => "events",
        Some(p) if p.ends_with("/artifacts") => "artifacts",
        Some(p) if p.ends_with("/result") => "result",
        Some(p) if p.ends_with("/control") => "control",
        Some(p) if p.ends_with("/repo") => "repo",
        Some(p) if p.ends_with("/patch") => "patch",
        Some("/healthz") => "healthz",
        Some("/metrics") => "metrics",
        _ => "other",
    };
    let resp = next.run(req).await;
    m.count_callback_request(route, resp.status().as_u16());
    resp
}
