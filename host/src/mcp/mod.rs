//! The MCP server that clients (Claude Code, any MCP client) talk to.
//!
//! Tools with input and output schemas ([`tools`], [`args`], and the views
//! in [`crate::views`]), job artifacts and logs as resources (named in
//! [`crate::views::resources`]), resource update
//! notifications in both protocol revisions ([`subscriptions`]), the tasks
//! extension over jobs ([`tasks`]), over stdio ([`serve_stdio`]) or
//! streamable HTTP behind a token and Host/Origin checks ([`http`],
//! [`guard`]). Every tool goes through the [`crate::jobs::JobManager`]; nothing here
//! holds job state.

pub mod args;
pub mod calls;
pub mod guard;
pub mod http;
pub mod limits;
pub mod lines;
pub mod manifest_schema;
pub mod progress;
pub mod schema;
pub mod server;
pub mod stdio;
pub mod subscriptions;
pub mod tasks;
pub mod tools;
pub mod turns;

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
    /// The HTTP listener, or the stdio session's thread or runtime, failed.
    #[error("MCP server failed: {0}")]
    Io(#[from] std::io::Error),
    /// The stdio session's thread ended without an answer (it panicked).
    #[error("MCP stdio session thread stopped unexpectedly")]
    SessionThread,
}

/// Threads the stdio session's handlers run store calls on. Tokio's
/// default of 512 let a burst of 5,000 concurrent `get_job_status` calls
/// start hundreds of threads, each opening its own SQLite reader (the pool
/// keeps four), and the server stayed at 94 MiB after one burst and
/// 149 MiB after twelve (17.7 MiB idle; `--bench load`). Two cores serve
/// no more at once anyway.
const STDIO_BLOCKING_THREADS: usize = 8;

/// Serves one MCP session on stdin/stdout until the client closes it or
/// `shutdown` is cancelled. stdout carries nothing but MCP messages.
///
/// The session runs on a thread of its own with a current-thread runtime,
/// while the engine keeps the multi-thread one: a request, its handler and
/// its answer then stay on one thread. On the work-stealing runtime each
/// call crossed threads several times, which was most of its latency
/// (`get_job_status` p50 0.17–0.19 ms against 0.11 ms; ARCHITECTURE.md).
/// Handlers only touch the store and signal the engine through channels, so
/// nothing of the engine's runs on this thread.
pub async fn serve_stdio(
    jobs: impl Into<JobsHandle>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let jobs = jobs.into();
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("mcp-stdio".into())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .max_blocking_threads(STDIO_BLOCKING_THREADS)
                .enable_all()
                .build()
                .map_err(ServeError::Io)
                .and_then(|rt| rt.block_on(stdio_session(jobs, shutdown)));
            // The receiver is gone only when the server is going away.
            let _ = done.send(served);
        })?;
    finished.await.unwrap_or(Err(ServeError::SessionThread))
}

async fn stdio_session(jobs: JobsHandle, shutdown: CancellationToken) -> Result<(), ServeError> {
    let (reader, writer) = stdio::streams();
    let running = DelegateServer::new(jobs)
        .serve_with_ct(
            lines::LineTransport::new(reader, writer),
            shutdown.child_token(),
        )
        .await
        .map_err(Box::new)?;
    let reason = running.waiting().await?;
    tracing::info!(?reason, "MCP stdio session ended");
    Ok(())
}
