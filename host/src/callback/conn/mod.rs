//! The callback listeners' connections, served by this module rather than
//! `axum::serve`, which holds a connection for as long as its client
//! likes and retries a failing `accept` once a second forever. Here:
//!
//! - each connection has a watchdog ([`activity`]): a request head must be
//!   complete within the header timeout of its first byte, and a
//!   connection that sends and receives nothing between requests is closed
//!   after the idle timeout; a request being answered (a held control
//!   request too) is never cut by them;
//! - a request body that stalls longer than the body timeout between two
//!   pieces ends the request (tower-http's `TimeoutBody`);
//! - the TCP and Unix listeners share one cap ([`registry`]), derived from
//!   the open-file limit ([`fds`]); at the cap a new connection closes the
//!   oldest idle one and waits until it is gone, or is closed at once when
//!   every held connection is answering a request;
//! - an `accept` that fails (out of descriptors) closes the oldest idle
//!   connection and backs off, up to a second, logging at most every
//!   [`WARN_EVERY`].
//!
//! None of this needs a token, so none of it may: every rule holds for a
//! client that never authenticates.

mod activity;
pub mod fds;
mod registry;
pub mod settings;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

pub use registry::Registry;
pub use settings::{ConnArgs, ConnSettings};

use registry::Slot;

use crate::counted::Counted;

/// The first wait after a failed `accept`; it doubles up to
/// [`ACCEPT_BACKOFF_MAX`] while `accept` keeps failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning this often while `accept` fails.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// The connection settings and the one registry every callback listener
/// shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Conns {
    settings: ConnSettings,
    registry: Arc<Registry>,
}

impl Conns {
    /// `settings` with the cap lowered to what an open-file limit of
    /// `nofile` leaves ([`fds::connection_cap`]).
    pub fn new(settings: ConnSettings, nofile: u64) -> Conns {
        let cap = fds::connection_cap(settings.max_connections, nofile);
        if cap < settings.max_connections {
            tracing::info!(
                cap,
                wanted = settings.max_connections,
                nofile,
                "callback connections capped by the open-file limit"
            );
        }
        Conns {
            settings,
            registry: Registry::new(cap),
        }
    }

    /// The cap in force.
    pub fn cap(&self) -> usize {
        self.registry.cap()
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.registry.len()
    }
}

/// A listener the callback API accepts connections on.
pub trait Accept: Send + 'static {
    /// A connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn accept_io(&self) -> impl Future<Output = std::io::Result<Self::Io>> + Send;
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept_io(&self) -> std::io::Result<Self::Io> {
        let (stream, _) = self.accept().await?;
        // Small JSON answers go out at once rather than after Nagle's wait.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept_io(&self) -> std::io::Result<Self::Io> {
        Ok(self.accept().await?.0)
    }
}

/// Errors of one connection that `accept` reports; the listener is fine.
fn per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    )
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets the
/// connections finish their requests (idle ones close at once).
pub async fn serve<L: Accept>(listener: L, app: Router, conns: Conns, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    let mut warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept_io() => r,
        };
        match accepted {
            Ok(io) => {
                backoff = ACCEPT_BACKOFF_MIN;
                // Over the cap with every connection busy: closed at once.
                let Some(slot) = conns.registry.admit().await else {
                    continue;
                };
                tracker.spawn(connection(
                    io,
                    slot,
                    app.clone(),
                    conns.settings,
                    shutdown.clone(),
                ));
            }
            Err(e) if per_connection(&e) => {}
            Err(e) => {
                // Most likely out of descriptors: give one back, then wait.
                let shed = conns.registry.shed();
                if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    warned = Some(Instant::now());
                    tracing::warn!(
                        error = %e,
                        shed_an_idle_connection = shed,
                        held = conns.registry.len(),
                        "accepting a callback connection failed; backing off"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

/// One connection: HTTP/1 (all a guest speaks) under its watchdog.
async fn connection<IO>(
    io: IO,
    slot: Slot,
    app: Router,
    settings: ConnSettings,
    shutdown: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = slot.activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let answering = activity.begin();
        let req =
            req.map(|body| axum::body::Body::new(TimeoutBody::new(settings.body_timeout, body)));
        let app = app.clone();
        async move {
            let response = app.oneshot(req).await;
            drop(answering);
            response
        }
    });
    let io = TokioIo::new(Counted::new(io, slot.activity.clone()));
    let conn = http1::Builder::new().serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        let deadline = slot.activity.deadline(&settings);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "callback connection ended");
                }
                return;
            }
            _ = slot.activity.changed.notified() => {}
            _ = slot.activity.evict.cancelled() => {
                tracing::debug!("idle callback connection closed for a new one");
                return;
            }
            _ = sleep_until(deadline) => {
                if slot.activity.deadline(&settings).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("callback connection closed: idle or a head too slow");
                    return;
                }
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Sleeps until `at`; forever when there is none.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
