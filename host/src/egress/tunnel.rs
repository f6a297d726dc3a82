//! `CONNECT host:port`: after the job and the destination are admitted, a
//! byte tunnel the gateway does not read (TLS stays end to end). Logged
//! when it closes, with the bytes each way. A tunnel keeps its connection
//! busy (counted, never closed for a new one) and is closed only when
//! nothing crossed it either way for the tunnel idle timeout.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hyper::upgrade::Upgraded;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, copy_bidirectional_with_sizes};
use tokio::net::{TcpStream, UnixStream};

use super::inject::{self, Intercept};
use super::io::Counters;
use super::log::{self, ConnRecord, Via};
use super::settings::Injection;
use super::{Body, Req, Shared, admit, open, over_cap, text};
use crate::counted::Counted;
use crate::net::conn::{Busy, Held, Tracked};

/// Buffer per direction: large enough that a bulk download is not held
/// back by copying 8 KiB at a time.
const BUF: usize = 256 * 1024;

/// Copies both ways until both sides are done. hyper hands back the
/// accepted stream when asked by its type, so a bulk transfer copies
/// between two plain sockets instead of through hyper's boxed I/O (still
/// tracked, for the idle timeout). The bytes are counted by `upstream`, so
/// a tunnel closed while quiet is logged with them too.
async fn pump<U>(upgraded: Upgraded, upstream: &mut U) -> std::io::Result<()>
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    let upgraded = match upgraded.downcast::<TokioIo<Tracked<TcpStream>>>() {
        Ok(parts) => return copy_plain(parts.io.into_inner(), &parts.read_buf, upstream).await,
        Err(u) => u,
    };
    let upgraded = match upgraded.downcast::<TokioIo<Tracked<UnixStream>>>() {
        Ok(parts) => return copy_plain(parts.io.into_inner(), &parts.read_buf, upstream).await,
        Err(u) => u,
    };
    let mut client = TokioIo::new(upgraded);
    copy_bidirectional_with_sizes(&mut client, upstream, BUF, BUF).await?;
    Ok(())
}

/// `early` is what the client sent right after its `CONNECT` head, already
/// read by hyper: it goes first.
async fn copy_plain<S, U>(mut client: S, early: &[u8], upstream: &mut U) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    upstream.write_all(early).await?;
    copy_bidirectional_with_sizes(&mut client, upstream, BUF, BUF).await?;
    Ok(())
}

/// The connection `req` came on, marked busy for a tunnel's life.
fn busy(req: &Req) -> Option<Busy> {
    req.extensions().get::<Held>().and_then(Held::busy)
}

/// Resolves when `busy`'s connection was quiet for its busy timeout, with
/// what the log says then.
pub(super) async fn quiet(busy: &Option<Busy>) -> String {
    let Some(b) = busy else {
        return std::future::pending().await;
    };
    b.quiet().await;
    format!(
        "closed: nothing crossed the tunnel either way for {} s \
         (DELEGATE_EGRESS_TUNNEL_IDLE_TIMEOUT_SECONDS)",
        b.timeout().unwrap_or_default().as_secs()
    )
}

pub(super) async fn handle(shared: Arc<Shared>, req: Req) -> Response<Body> {
    let Some((host, port)) = req
        .uri()
        .authority()
        .and_then(|a| a.port_u16().map(|p| (a.host().to_string(), p)))
    else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if let Some(injection) = inject::injection_for(&shared.settings, &host) {
        return intercept(shared.clone(), req, host, port, injection.clone()).await;
    }
    let (job, upstream) = match open(&shared, req.headers(), &host, port, Via::Connect).await {
        Ok(pair) => pair,
        Err(refusal) => return refusal,
    };
    let busy = busy(&req);
    tokio::spawn(async move {
        let mut record = ConnRecord::now(&host, port, Via::Connect);
        record.allowed = true;
        let super::Upstream { stream, counted } = upstream;
        let bytes = Arc::new(Counters::default());
        let mut upstream = Counted::new(stream, bytes.clone());
        let tunnel = async {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => pump(upgraded, &mut upstream)
                    .await
                    .err()
                    .map(|e| format!("tunnel ended: {e}")),
                Err(e) => Some(format!("the client never took the tunnel: {e}")),
            }
        };
        record.reason = tokio::select! {
            why = tunnel => why,
            why = quiet(&busy) => {
                tracing::info!(job = %job.id, host, port, "egress tunnel {why}");
                Some(why)
            }
        };
        record.sent = bytes.sent.load(Ordering::Relaxed);
        record.received = bytes.received.load(Ordering::Relaxed);
        // The upstream socket is closed before the job's count drops.
        drop(upstream);
        drop((counted, busy));
        log::append(&shared.store, &job.id, &record).await;
    });
    Response::new(Body::default())
}

/// A `CONNECT` to a host where the gateway injects a credential: admitted
/// like any other, then read by `inject` instead of tunnelled.
async fn intercept(
    shared: Arc<Shared>,
    req: Req,
    host: String,
    port: u16,
    injection: Injection,
) -> Response<Body> {
    let job = match admit(&shared, req.headers(), &host, port, Via::Inject).await {
        Ok(j) => j,
        Err(refusal) => return refusal,
    };
    // The job's side of the interception is a connection of its own (its
    // requests' upstream connections count too, in `connect`).
    let counted = match shared.jobs.take(&job.id) {
        Ok(c) => c,
        Err(over) => return over_cap(&shared, &job.id, &host, port, Via::Inject, over).await,
    };
    let tls = match shared
        .settings
        .ca
        .as_ref()
        .map(|ca| ca.server_config(&host))
    {
        Some(Ok(c)) => c,
        Some(Err(e)) => return text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        None => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the gateway has no CA for the hosts where it injects credentials",
            );
        }
    };
    let it = Intercept {
        shared,
        job_id: job.id,
        host,
        port,
        injection,
        tls,
    };
    let busy = busy(&req);
    tokio::spawn(async move {
        let job = it.job_id.clone();
        let served = async {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => it.serve(upgraded).await,
                Err(e) => {
                    tracing::debug!(error = %e, "egress gateway: the client never took the tunnel")
                }
            }
        };
        tokio::select! {
            () = served => {}
            why = quiet(&busy) => tracing::info!(job, "egress interception {why}"),
        }
        drop((counted, busy));
    });
    Response::new(Body::default())
}
