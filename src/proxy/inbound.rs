//! The client's request body on its way upstream: its bytes counted for
//! the audit record, its framing errors marked as the client's, and whether
//! it was read to its end. An HTTP/1 connection whose request body was not
//! read to its end cannot carry another request, so the answer must say
//! `Connection: close` (RFC 9112 §9.6), or what is left must be drained.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, Version, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::BoxError;

/// A refused request's body is read and dropped up to this many bytes
/// (more than a chat completion with an image sends), so that the client's
/// connection stays usable; beyond it, the connection is closed.
pub const DRAIN_MAX_BYTES: u64 = 1 << 20;
/// ... and for at most this long.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// The client broke the body's framing (a bad chunk, a short body) or went
/// away while sending it: the client's fault, never the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body: {0}")]
pub struct ClientBodyError(#[source] pub hyper::Error);

/// The request body, counted and watched.
pub struct Inbound {
    inner: Incoming,
    bytes: Option<Arc<AtomicU64>>,
    /// `None` for a body that was empty from the start (most GETs): nothing
    /// to watch, nothing to allocate.
    ended: Option<Arc<AtomicBool>>,
}

/// Whether a request body has been read to its end, as seen after the
/// body itself has gone upstream.
pub struct Ended(Option<Arc<AtomicBool>>);

impl Ended {
    pub fn is_true(&self) -> bool {
        self.0.as_ref().is_none_or(|e| e.load(Ordering::Relaxed))
    }
}

impl Inbound {
    /// `bytes` is the audit record's counter, when there is a record.
    pub fn new(inner: Incoming, bytes: Option<Arc<AtomicU64>>) -> Self {
        let ended = (!inner.is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
        Self {
            inner,
            bytes,
            ended,
        }
    }

    /// Turns true once the body has been read to its end.
    pub fn ended(&self) -> Ended {
        Ended(self.ended.clone())
    }

    /// Reads and drops the rest of the body, within [`DRAIN_MAX_BYTES`] and
    /// [`DRAIN_TIME`]. Whether it was read to its end.
    pub async fn drain(mut self) -> bool {
        if self.is_end_stream() {
            return true;
        }
        if self
            .size_hint()
            .exact()
            .is_some_and(|n| n > DRAIN_MAX_BYTES)
        {
            return false;
        }
        let mut left = DRAIN_MAX_BYTES;
        let read = async {
            while let Some(frame) = self.frame().await {
                let Ok(frame) = frame else { return false };
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                let Some(rest) = left.checked_sub(n) else {
                    return false;
                };
                left = rest;
            }
            true
        };
        tokio::time::timeout(DRAIN_TIME, read)
            .await
            .unwrap_or(false)
    }
}

impl Inbound {
    fn mark_ended(&self) {
        if let Some(e) = &self.ended {
            e.store(true, Ordering::Relaxed);
        }
    }
}

impl HttpBody for Inbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(count)) = (frame.data_ref(), &this.bytes) {
                    count.fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                // Why: a reader that knows the length stops polling at the
                // last byte, before the end is reported.
                if this.inner.is_end_stream() {
                    this.mark_ended();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(ClientBodyError(e).into()))),
            Poll::Ready(None) => {
                this.mark_ended();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Says `Connection: close` on an HTTP/1 answer to a request whose body was
/// not read to its end, so the client does not send its next request on a
/// connection the gateway is about to close
/// (`a_refused_post_keeps_the_connection_usable`).
pub fn close_unless_read(
    response: &mut Response<crate::body::Body>,
    version: Version,
    ended: bool,
) {
    if !ended && version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}
