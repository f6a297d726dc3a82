//! The MCP server that clients (Claude Code, any MCP client) talk to.
//!
//! Tools with input and output schemas ([`tools`], [`args`], [`views`]),
//! job artifacts and logs as resources ([`resources`]), resource update
//! notifications in both protocol revisions ([`subscriptions`]), the tasks
//! extension over jobs ([`tasks`]), over stdio ([`serve_stdio`]) or
//! streamable HTTP behind a token and Host/Origin checks ([`http`],
//! [`guard`]). Every tool goes through the [`crate::jobs::JobManager`]; nothing here
//! holds job state.

pub mod args;
pub mod calls;
pub mod guard;
pub mod http;
pub mod manifest_schema;
pub mod progress;
pub mod recent;
pub mod resources;
pub mod schema;
pub mod server;
pub mod subscriptions;
pub mod tasks;
pub mod tools;
pub mod views;

pub use guard::Guard;
pub use server::{DelegateServer, JobsHandle};

use rmcp::ServiceExt;
use tokio_util::sync::CancellationToken;

/// Why serving MCP stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The client did not open a session properly.
    #[error("MCP session could not start: {0}")]
    Start(#[from] Box<rmcp::service::ServerInitializeError>),
    /// The session task failed.
    #[error("MCP session ended abnormally: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The HTTP listener failed.
    #[error("MCP HTTP server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Serves one MCP session on stdin/stdout until the client closes it or
/// `shutdown` is cancelled. stdout carries nothing but MCP messages.
pub async fn serve_stdio(
    jobs: impl Into<JobsHandle>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let running = DelegateServer::new(jobs)
        .serve_with_ct(rmcp::transport::stdio(), shutdown.child_token())
        .await
        .map_err(Box::new)?;
    let reason = running.waiting().await?;
    tracing::info!(?reason, "MCP stdio session ended");
    Ok(())
}
