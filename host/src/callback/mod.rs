//! The callback API guests report to (`/v1/jobs/{id}/...`) and nothing
//! else: every guest reaches its listener. The operator's `/healthz` and
//! `/metrics` are served elsewhere ([`ops`], `DELEGATE_METRICS_ADDR`).
//!
//! Handlers are thin: check the size, the protocol version and the token,
//! parse, call the job manager, map its answer. Every route has a body
//! cap, checked against `Content-Length` before anything else and again
//! while the body streams in. Status codes come from one function,
//! [`error::respond`].

pub mod budget;
mod error;
mod handlers;
mod ops;
mod repo;
pub mod settings;
mod turns;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use delegate_proto::api::routes;
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::jobs::JobManager;
use crate::net::conn;

pub use error::respond;
pub use ops::ops_router;

/// The router, for tests that drive it without a socket.
pub fn router(manager: JobManager) -> Router {
    Router::new()
        .route(routes::MANIFEST, get(handlers::manifest))
        .route(routes::EVENTS, post(handlers::events))
        .route(routes::ARTIFACTS, put(handlers::artifacts))
        .route(routes::RESULT, post(handlers::result))
        .route(routes::CONTROL, get(handlers::control))
        .route(routes::REPO, get(repo::repo))
        .route(routes::PATCH, put(repo::patch))
        .route(delegate_proto::turn::NEXT_TURN_ROUTE, get(turns::next_turn))
        // Handlers read bodies themselves, each with its own cap.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            manager.clone(),
            handlers::count_requests,
        ))
        .with_state(manager)
}

/// Serves the callback API on `listener` until `shutdown` is cancelled,
/// under the connection rules of [`crate::net::conn`] shared through `conns`. Held
/// control requests are answered at once then, so the shutdown never
/// waits out a long poll.
pub async fn serve(
    listener: TcpListener,
    manager: JobManager,
    conns: conn::Conns,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, cap = conns.cap(), "callback API listening");
    }
    serve_on(listener, manager, conns, shutdown).await;
    Ok(())
}

async fn serve_on<L: conn::Accept>(
    listener: L,
    manager: JobManager,
    conns: conn::Conns,
    shutdown: CancellationToken,
) {
    let app = router(manager.clone());
    let ending = shutdown.clone();
    let answer_waits = async move {
        ending.cancelled().await;
        manager.end_control_waits();
    };
    tokio::join!(conn::serve(listener, app, conns, shutdown), answer_waits);
}

/// Serves `/healthz` and `/metrics` on `listener` until `shutdown` is
/// cancelled.
pub async fn serve_ops(
    listener: TcpListener,
    manager: JobManager,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "/healthz and /metrics listening");
    }
    axum::serve(listener, ops_router(manager))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Binds the callback API's Unix socket at `path` (a file left by an
/// earlier engine is replaced: this engine holds `host.lock`). The socket
/// is 0666: its directory decides who reaches it (the sandboxes, through a
/// bind mount; the data directory above it is 0700).
pub fn bind_unix(path: &std::path::Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "something other than a socket is in the way",
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves the callback API on a Unix socket until `shutdown` is cancelled,
/// under the same connection cap as the TCP listener (`conns`).
pub async fn serve_unix(
    listener: UnixListener,
    manager: JobManager,
    conns: conn::Conns,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(socket = ?addr.as_pathname(), "callback API listening");
    }
    serve_on(listener, manager, conns, shutdown).await;
    Ok(())
}
