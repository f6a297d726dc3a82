//! The answer to a connection over the cap while every held one is busy: a
//! client that sent a head is told why (503, `Retry-After`) rather than
//! seeing its socket closed for no reason. At most [`AT_ONCE`] such
//! answers are pending (their descriptors come out of the reserve), each
//! for at most the header timeout; beyond that the socket is closed at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;

/// Refusals answered at once, at most.
pub(super) const AT_ONCE: usize = 8;

/// Reads one head from `io` within `within` and answers it 503 with
/// `reason`, then closes; `_permit` is one of the [`AT_ONCE`].
pub(super) async fn answer<IO>(
    io: IO,
    _permit: OwnedSemaphorePermit,
    within: Duration,
    reason: Arc<str>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |_req| {
        let mut r = Response::new(Full::new(Bytes::from(format!("{reason}\n"))));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        let h = r.headers_mut();
        h.insert(CONNECTION, HeaderValue::from_static("close"));
        h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        std::future::ready(Ok::<_, Infallible>(r))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    let _ = tokio::time::timeout(within, conn).await;
}
