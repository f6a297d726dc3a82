//! MCP over streamable HTTP: rmcp's service at `/mcp` behind the [`Guard`].
//!
//! Connections are served by [`crate::net::conn`] (`DELEGATE_HTTP_*`):
//! header and idle timeouts and a cap, none of which cuts an SSE stream.
//! Sessions (legacy revisions) live in memory; 2026-07-28 requests are
//! served statelessly by rmcp. Host and Origin are checked by the guard, the
//! one place that decides, so rmcp's own copies of those checks are turned
//! off rather than configured twice.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::jobs::JobManager;
use crate::net::conn::{self, Conns};

use super::guard::{Guard, Refusal};
use super::limits::{MAX_MANIFEST_BYTES, MAX_MESSAGE_BYTES};
use super::server::DelegateServer;

/// The path MCP is served at.
pub const MCP_PATH: &str = "/mcp";

/// Serves MCP on `listener` until `shutdown` is cancelled, under the
/// connection rules and cap of `conns` (`DELEGATE_HTTP_*`).
pub async fn serve(
    listener: TcpListener,
    jobs: JobManager,
    guard: Guard,
    conns: Conns,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let config = StreamableHttpServerConfig::default()
        .with_cancellation_token(shutdown.child_token())
        .disable_allowed_hosts()
        .disable_allowed_origins();
    let factory_jobs = jobs.clone();
    let service: StreamableHttpService<DelegateServer, LocalSessionManager> =
        StreamableHttpService::new(
            move || Ok(DelegateServer::new(factory_jobs.clone())),
            Arc::new(LocalSessionManager::default()),
            config,
        );
    let router = axum::Router::new()
        .nest_service(MCP_PATH, service)
        .layer(axum::middleware::from_fn_with_state(Arc::new(guard), gate));
    // rmcp ends its streams when `shutdown` is cancelled, so the graceful
    // end of the connections does not wait on them.
    conn::serve(listener, router, conns, shutdown).await;
    Ok(())
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn gate(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let request = match capped(request) {
        Ok(request) => request,
        Err(refused) => return refused.into_response(),
    };
    let headers = request.headers();
    // HTTP/2 has no Host header, only the URI authority.
    let host = header_str(headers, header::HOST)
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let checked = guard.check(
        host.as_deref(),
        header_str(headers, header::ORIGIN),
        header_str(headers, header::AUTHORIZATION),
    );
    let delete = request.method() == axum::http::Method::DELETE;
    match checked {
        Ok(()) => {
            let mut response = next.run(request).await;
            // rmcp acknowledges a session's DELETE with 202; clients (the
            // Python SDK) expect 200 or 204 and warn otherwise. The session
            // is gone either way, so say so with 204.
            if delete && response.status() == StatusCode::ACCEPTED {
                *response.status_mut() = StatusCode::NO_CONTENT;
                *response.body_mut() = axum::body::Body::empty();
            }
            response
        }
        Err(refusal) => refuse(refusal),
    }
}

/// Caps the request body at one MCP message ([`MAX_MESSAGE_BYTES`]): a
/// declared length over it is refused at once with 413; a chunked body is
/// cut off there, and rmcp refuses the truncated request.
fn capped(request: Request) -> Result<Request, (StatusCode, String)> {
    let declared = header_str(request.headers(), header::CONTENT_LENGTH)
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared
        && len > MAX_MESSAGE_BYTES as u64
    {
        tracing::warn!(len, "MCP HTTP request refused: body too large");
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is {len} bytes; one MCP message may be at most \
                 {MAX_MESSAGE_BYTES} bytes (a manifest at most {MAX_MANIFEST_BYTES})"
            ),
        ));
    }
    Ok(request
        .map(|body| axum::body::Body::new(http_body_util::Limited::new(body, MAX_MESSAGE_BYTES))))
}

fn refuse(refusal: Refusal) -> Response {
    tracing::warn!(%refusal, "MCP HTTP request refused");
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
    let mut response = (status, refusal.to_string()).into_response();
    if refusal == Refusal::Token {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"delegate\""),
        );
    }
    response
}
