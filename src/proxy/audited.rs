//! The response body that reports to the audit record: it finishes the
//! record when it ends (or is dropped).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::audit::{End, Pending};
use crate::body::{Body, BoxError};

/// A response body that sends its request's record when the last frame
/// has been produced, the stream fails, or the body is dropped early.
pub struct Audited {
    inner: Body,
    pending: Option<Pending>,
    bytes: u64,
}

impl Audited {
    pub fn new(inner: Body, pending: Pending) -> Self {
        Self {
            inner,
            pending: Some(pending),
            bytes: 0,
        }
    }

    fn finish(&mut self, end: End) {
        if let Some(mut pending) = self.pending.take() {
            if let Some(r) = pending.record() {
                r.bytes_out = self.bytes;
            }
            pending.finish(end);
        }
    }
}

impl HttpBody for Audited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
                // Why: hyper may stop polling once the body says it ended.
                if this.inner.is_end_stream() {
                    this.finish(End::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.finish(End::UpstreamError),
            Poll::Ready(None) => this.finish(End::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        let end = match &self.pending {
            None => return,
            // An empty body (101, 204, HEAD) is never polled.
            Some(_) if self.inner.is_end_stream() => End::Complete,
            Some(p) => p.dropped_end(),
        };
        self.finish(end);
    }
}
