//! Plain-HTTP proxy requests (`GET http://host/path`): admitted like a
//! tunnel, then sent on one upstream connection in origin form without the
//! proxy's own headers. The upstream connection's bytes are counted and
//! logged when it closes.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::io::Counters;
use super::log::{self, ConnRecord, Via};
use super::quota::JobConn;
use super::{Body, Req, Shared, Upstream, open, text};
use crate::counted::Counted;

/// Hop-by-hop headers a proxy must not pass on (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

pub(super) async fn handle(shared: Arc<Shared>, req: Req) -> Response<Body> {
    let uri = req.uri().clone();
    if uri.scheme_str() != Some("http") {
        return text(
            StatusCode::BAD_REQUEST,
            "only http:// is forwarded; use CONNECT for https",
        );
    }
    let Some(host) = uri
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
    else {
        return text(StatusCode::BAD_REQUEST, "the request URL has no host");
    };
    let port = uri.port_u16().unwrap_or(80);
    let (job, Upstream { stream, counted }) =
        match open(&shared, req.headers(), &host, port, Via::Http).await {
            Ok(pair) => pair,
            Err(refusal) => return refusal,
        };
    let mut req = req;
    strip_hop_by_hop(req.headers_mut());
    *req.uri_mut() = origin_form(&uri);
    let record = ConnRecord::now(&host, port, Via::Http);
    send(shared, job.id, record, (stream, counted), req).await
}

/// Removes hop-by-hop headers, including those `Connection` names.
pub(super) fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

/// `/path?query` of an absolute URI.
pub(super) fn origin_form(uri: &Uri) -> Uri {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    pq.parse().unwrap_or_else(|_| Uri::from_static("/"))
}

/// Sends `req` over `stream` (its bytes counted; held against the job's
/// cap by `counted` until it closes), returns the response streamed, and
/// logs `record` when the upstream connection closes.
pub(super) async fn send<S, B>(
    shared: Arc<Shared>,
    job_id: String,
    mut record: ConnRecord,
    (stream, counted): (S, JobConn),
    req: Request<B>,
) -> Response<Body>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let counters = Arc::new(Counters::default());
    let io = TokioIo::new(Counted::new(stream, counters.clone()));
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(pair) => pair,
        Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("upstream: {e}")),
    };
    let shared_log = shared.clone();
    let job = job_id.clone();
    record.allowed = true;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            record.reason = Some(format!("upstream connection: {e}"));
        }
        drop(counted);
        record.sent = counters.sent.load(std::sync::atomic::Ordering::Relaxed);
        record.received = counters.received.load(std::sync::atomic::Ordering::Relaxed);
        log::append(&shared_log.store, &job, &record).await;
    });
    match sender.send_request(req).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts
                .headers
                .insert("via", HeaderValue::from_static("1.1 delegate-egress"));
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => text(StatusCode::BAD_GATEWAY, &format!("upstream: {e}")),
    }
}
