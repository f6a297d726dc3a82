//! A stream that reports the bytes read from and written to it, for those
//! that count them: the callback API's connection watchdog
//! (`net::conn::activity`) and the egress gateway's connection log
//! (`egress::io`, bytes each way of a forwarded request).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What is told of the bytes through a [`Counted`] stream.
pub trait Tally {
    /// `n` bytes were read (zero at the end of the stream).
    fn read(&self, n: usize);
    /// `n` bytes were written.
    fn wrote(&self, n: usize);
}

/// `S` with every byte it reads or writes told to a [`Tally`].
#[derive(Debug)]
pub struct Counted<S, T> {
    inner: S,
    tally: Arc<T>,
}

impl<S, T> Counted<S, T> {
    /// Wraps `inner`.
    pub fn new(inner: S, tally: Arc<T>) -> Self {
        Counted { inner, tally }
    }
}

impl<S: AsyncRead + Unpin, T: Tally> AsyncRead for Counted<S, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let out = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = out {
            self.tally.read(buf.filled().len() - before);
        }
        out
    }
}

impl<S: AsyncWrite + Unpin, T: Tally> AsyncWrite for Counted<S, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let out = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = out {
            self.tally.wrote(n);
        }
        out
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let out = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = out {
            self.tally.wrote(n);
        }
        out
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
