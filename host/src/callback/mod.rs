//! The callback API guests report to (`/v1/jobs/{id}/...`), plus `/healthz`
//! and `/metrics`.
//!
//! Handlers are thin: check the size, the protocol version and the token,
//! parse, call the job manager, map its answer. Every route has a body
//! cap, checked against `Content-Length` before anything else and again
//! while the body streams in. Status codes come from one function,
//! [`error::respond`].

mod error;
mod handlers;
mod repo;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use delegate_proto::api::routes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::jobs::JobManager;

pub use error::respond;

/// The router, for tests that drive it without a socket.
pub fn router(manager: JobManager) -> Router {
    Router::new()
        .route(routes::MANIFEST, get(handlers::manifest))
        .route(routes::EVENTS, post(handlers::events))
        .route(routes::ARTIFACTS, put(handlers::artifacts))
        .route(routes::RESULT, post(handlers::result))
        .route(routes::REPO, get(repo::repo))
        .route(routes::PATCH, put(repo::patch))
        .route("/healthz", get(handlers::healthz))
        .route("/metrics", get(handlers::metrics))
        // Handlers read bodies themselves, each with its own cap.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            manager.clone(),
            handlers::count_requests,
        ))
        .with_state(manager)
}

/// Serves the callback API on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    manager: JobManager,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "callback API listening");
    }
    axum::serve(listener, router(manager))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
