//! `GET repo` (the job's repository archive, streamed from disk) and
//! `PUT patch` (the job's patch, streamed to disk while hashed and capped;
//! `?against=previous`: a follow-up turn's own change).

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use delegate_proto::api::BASE_COMMIT_HEADER;
use delegate_proto::turn::{PatchAgainst, PatchQuery};

use super::error::respond;
use super::handlers::{MAX_GET_REQUEST_BODY, admit, reply};
use crate::jobs::JobManager;
use crate::jobs::guest::GuestError;

pub(super) async fn repo(
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
            "a repository request body",
        )
        .await?;
        let (path, commit) = m.guest_repo(&id).await?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| GuestError::Internal(format!("opening the repository archive: {e}")))?;
        let len = file.metadata().await.map(|md| md.len()).ok();
        Ok::<_, GuestError>((file, len, commit))
    };
    match r.await {
        Ok((file, len, commit)) => {
            let mut resp =
                Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/gzip"),
            );
            if let Some(len) = len {
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            if let Some(commit) = commit.and_then(|c| HeaderValue::from_str(&c).ok()) {
                h.insert(BASE_COMMIT_HEADER, commit);
            }
            resp
        }
        Err(e) => respond(e),
    }
}

pub(super) async fn patch(
    State(m): State<JobManager>,
    Path(id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<PatchQuery>, QueryRejection>,
    body: Body,
) -> Response {
    let cap = m.settings().max_artifact_bytes;
    let r = async {
        admit(&m, &id, &headers, cap, "a patch upload").await?;
        let Query(q) =
            query.map_err(|e| GuestError::BadRequest(format!("the patch query: {e}")))?;
        let against = q.against.unwrap_or(PatchAgainst::Base);
        let (staged, cap) = m.guest_stage_patch(&id, against).await?;
        let (size, sha) = receive(body, staged.path(), cap, "the patch upload").await?;
        m.guest_commit_patch(&id, staged, size, sha).await
    };
    reply(r.await)
}

/// Streams `body` into the file at `path`, hashing it; refuses more than
/// `cap` bytes. Returns the size and the SHA-256.
pub(super) async fn receive(
    body: Body,
    path: &std::path::Path,
    cap: u64,
    what: &str,
) -> Result<(u64, String), GuestError> {
    let io = |e: std::io::Error| GuestError::Internal(format!("writing {what}: {e}"));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .await
        .map_err(io)?;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| GuestError::BadRequest(format!("{what} broke off: {e}")))?;
        size += chunk.len() as u64;
        if size > cap {
            return Err(GuestError::TooLarge {
                what: what.to_string(),
                limit: cap,
            });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    Ok((size, crate::store::hex(&hasher.finalize())))
}
