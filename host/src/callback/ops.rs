//! The operator's endpoints, `/healthz` and `/metrics`, on their own
//! listener (`DELEGATE_METRICS_ADDR`): never on the callback listener,
//! which every guest can reach.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::error::respond;
use super::handlers;
use crate::jobs::JobManager;
use crate::jobs::guest::GuestError;

/// The operator's router: `/healthz` and `/metrics`, nothing else.
pub fn ops_router(manager: JobManager) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(
            manager.clone(),
            handlers::count_requests,
        ))
        .with_state(manager)
}

async fn healthz(State(m): State<JobManager>) -> Response {
    match m.store().run(|s| s.count_by_state()).await {
        Ok(_) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unavailable", "error": e.to_string()})),
        )
            .into_response(),
    }
}

async fn metrics(State(m): State<JobManager>) -> Response {
    match m.render_metrics().await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => respond(GuestError::Internal(e.to_string())),
    }
}
