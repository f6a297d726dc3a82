//! A service's listeners' connections, served by this module rather than
//! `axum::serve`, which holds a connection for as long as its client likes
//! and retries a failing `accept` once a second forever. The callback API,
//! the egress gateway and MCP over HTTP each serve through it, each with its
//! own [`ConnSettings`] and cap. Here:
//!
//! - each connection has a watchdog ([`activity`]): a request head must be
//!   complete within the header timeout of its first byte, and a
//!   connection that sends and receives nothing between requests is closed
//!   after the idle timeout; a request being answered (a held control
//!   request, an SSE stream, a tunnel) is cut only by the busy timeout,
//!   where the service sets one;
//! - a request body that stalls longer than the body timeout between two
//!   pieces ends the request (tower-http's `TimeoutBody`);
//! - a service's TCP and Unix listeners share one cap ([`registry`]), its
//!   share of what the open-file limit leaves ([`fds`]); at the cap a new
//!   connection closes the oldest idle one and waits until it is gone, or
//!   is refused when every held connection is answering a request (with a
//!   503 and the reason, [`refuse`]);
//! - an `accept` that fails (out of descriptors) closes the oldest idle
//!   connection and backs off, up to a second, logging at most every
//!   [`WARN_EVERY`].
//!
//! None of this needs a token, so none of it may: every rule holds for a
//! client that never authenticates. A request can reach its connection
//! through [`Held`] (the egress gateway keeps a tunnel's connection counted
//! and busy with it).

mod activity;
mod answering;
pub mod fds;
mod refuse;
mod registry;
pub mod settings;

use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};
use tower_http::timeout::TimeoutBody;

pub use activity::Tracked;
pub use answering::Answering;
pub use registry::Registry;
pub use settings::{Answered, ConnSettings};

use activity::InFlight;
use registry::Slot;

/// A request's body as services get it: stalls are cut.
pub type RequestBody = TimeoutBody<Incoming>;

/// The first wait after a failed `accept`; it doubles up to
/// [`ACCEPT_BACKOFF_MAX`] while `accept` keeps failing.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one warning this often while `accept` fails.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// One service's connection settings and the one registry its listeners
/// share. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Conns {
    /// The service, for the log.
    name: &'static str,
    settings: ConnSettings,
    registry: Arc<Registry>,
    /// Refusals being answered ([`refuse::AT_ONCE`]).
    refusing: Arc<Semaphore>,
    /// What a refused client is told.
    refusal: Arc<str>,
}

impl Conns {
    /// The service `name` under `settings`, holding at most `cap`
    /// connections (its share of the open-file limit, [`fds`]); `setting`
    /// names its cap's variable for the log.
    pub fn new(
        name: &'static str,
        setting: &'static str,
        settings: ConnSettings,
        cap: usize,
    ) -> Conns {
        if cap < settings.max_connections {
            tracing::info!(
                cap,
                wanted = settings.max_connections,
                "{name} connections capped by the open-file limit ({setting})"
            );
        }
        let registry = Registry::new(cap, name, setting);
        let refusal = format!(
            "the {name} holds its cap of {} connections and every one is busy \
             ({setting}); try again shortly",
            registry.cap()
        );
        Conns {
            name,
            settings,
            registry,
            refusing: Arc::new(Semaphore::new(refuse::AT_ONCE)),
            refusal: refusal.into(),
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

/// A listener a service accepts connections on.
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
        // Small answers go out at once rather than after Nagle's wait.
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

/// The connection a request came on, in the request's extensions. It does
/// not keep the connection counted by itself (a service that keeps its
/// requests' extensions must not hold connections that are gone).
#[derive(Debug, Clone)]
pub struct Held {
    slot: Weak<Slot>,
    busy_timeout: Option<Duration>,
}

/// A connection kept counted and busy (never idle-closed nor closed for a
/// new one) until dropped, even after the HTTP connection handed its socket
/// over (a `CONNECT` tunnel).
#[derive(Debug)]
pub struct Busy {
    slot: Arc<Slot>,
    _answering: InFlight,
    busy_timeout: Option<Duration>,
}

impl Held {
    /// Marks the connection busy; `None` when it is already gone.
    pub fn busy(&self) -> Option<Busy> {
        let slot = self.slot.upgrade()?;
        Some(Busy {
            _answering: slot.activity.begin(),
            slot,
            busy_timeout: self.busy_timeout,
        })
    }
}

impl Busy {
    /// Resolves once nothing was sent either way for the busy timeout (the
    /// bytes counted are the socket's, also after a hand-over); never
    /// without one.
    pub async fn quiet(&self) {
        let Some(d) = self.busy_timeout else {
            return std::future::pending().await;
        };
        loop {
            let at = self.slot.activity.quiet_after(d);
            if at <= Instant::now() {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }

    /// The busy timeout, for what a service says when it ends a quiet one.
    pub fn timeout(&self) -> Option<Duration> {
        self.busy_timeout
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
/// connections finish their requests within the shutdown grace (idle ones
/// close at once). Upgrades
/// (`CONNECT`) are handed to the service's `hyper::upgrade::on`.
pub async fn serve<L, S, B>(listener: L, app: S, conns: Conns, shutdown: CancellationToken)
where
    L: Accept,
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
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
                // Over the cap with every connection busy: told so, or
                // closed at once when too many are being told.
                let Some(slot) = conns.registry.admit().await else {
                    tracing::debug!("{} connection refused at the cap", conns.name);
                    if let Ok(permit) = conns.refusing.clone().try_acquire_owned() {
                        tracker.spawn(refuse::answer(
                            io,
                            permit,
                            conns.settings.header_timeout,
                            conns.refusal.clone(),
                        ));
                    }
                    continue;
                };
                tracker.spawn(connection(
                    io,
                    Arc::new(slot),
                    app.clone(),
                    conns.settings,
                    shutdown.clone(),
                    conns.name,
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
                        "accepting a {} connection failed; backing off",
                        conns.name
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

/// One connection: HTTP/1 (all guests and MCP clients speak) under its
/// watchdog.
async fn connection<IO, S, B>(
    io: IO,
    slot: Arc<Slot>,
    app: S,
    settings: ConnSettings,
    shutdown: CancellationToken,
    name: &'static str,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<RequestBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = slot.activity.clone();
    let held = Held {
        slot: Arc::downgrade(&slot),
        busy_timeout: settings.busy_timeout,
    };
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let answering = activity.begin();
        let mut req = req.map(|body| TimeoutBody::new(settings.body_timeout, body));
        req.extensions_mut().insert(held.clone());
        let app = app.clone();
        async move {
            let response = app.oneshot(req).await?;
            let answering = match settings.answered {
                Answered::AtHead => None,
                Answered::AtBodyEnd => Some(answering),
            };
            Ok::<_, Infallible>(response.map(|body| Answering::new(body, answering)))
        }
    });
    let io = TokioIo::new(Tracked::new(io, slot.activity.clone()));
    let conn = http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    let mut grace_ends: Option<Instant> = None;
    loop {
        let deadline = slot.activity.deadline(&settings);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "{name} connection ended");
                }
                return;
            }
            _ = slot.activity.changed.notified() => {}
            _ = slot.activity.evict.cancelled() => {
                tracing::debug!("idle {name} connection closed for a new one");
                return;
            }
            _ = sleep_until(deadline) => {
                if slot.activity.deadline(&settings).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!("{name} connection closed: idle, quiet or a head too slow");
                    return;
                }
            }
            _ = shutdown.cancelled(), if !closing => {
                closing = true;
                grace_ends = settings.shutdown_grace.map(|g| Instant::now() + g);
                conn.as_mut().graceful_shutdown();
            }
            _ = sleep_until(grace_ends), if grace_ends.is_some() => {
                tracing::debug!("{name} connection closed: shutting down");
                return;
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
