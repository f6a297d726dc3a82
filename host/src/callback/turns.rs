//! `GET turns/next`: where the guest in a persistent job's kept VM waits
//! for its next turn (see `delegate_proto::turn`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use delegate_proto::api::{MAX_CONTROL_WAIT_SECS, PROTOCOL_HEADER, PROTOCOL_VERSION};
use delegate_proto::turn::NextTurnQuery;

use super::handlers::{MAX_GET_REQUEST_BODY, bearer, check_length, reply};
use crate::jobs::JobManager;
use crate::jobs::guest::GuestError;

pub(super) async fn next_turn(
    State(m): State<JobManager>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<NextTurnQuery>, QueryRejection>,
) -> Response {
    let r = async {
        // `admit`'s checks, but the token is the session's, which its
        // first job's result does not end (the manager checks it).
        check_length(&headers, MAX_GET_REQUEST_BODY, "a turn request body")?;
        let version = headers.get(PROTOCOL_HEADER).and_then(|v| v.to_str().ok());
        if version != Some(PROTOCOL_VERSION.to_string().as_str()) {
            return Err(GuestError::UnsupportedProtocol(
                version.unwrap_or("none").to_string(),
            ));
        }
        let Query(q) = query.map_err(|e| GuestError::BadRequest(format!("the turn query: {e}")))?;
        let wait = q.wait.unwrap_or(MAX_CONTROL_WAIT_SECS);
        m.guest_next_turn(
            &id,
            bearer(&headers),
            q.after,
            std::time::Duration::from_secs(wait),
        )
        .await
    };
    reply(r.await)
}
