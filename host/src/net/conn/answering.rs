//! A response body that keeps its request counted as being answered
//! ([`super::Answered::AtBodyEnd`]) until it ends or is dropped, so a long
//! stream (MCP's SSE, a proxied download) is never taken for an idle
//! connection.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};

use super::activity::InFlight;

/// `B`, holding its request's [`InFlight`] while it streams (or not at all).
#[derive(Debug)]
pub struct Answering<B> {
    body: B,
    answering: Option<InFlight>,
}

impl<B> Answering<B> {
    pub(super) fn new(body: B, answering: Option<InFlight>) -> Self {
        Answering { body, answering }
    }
}

impl<B: Body + Unpin> Body for Answering<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let out = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(out, Poll::Ready(None | Some(Err(_)))) {
            self.answering = None;
        }
        out
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
