//! The body type of every response the gateway writes or forwards, and of
//! every request it forwards: a static answer or a stream, boxed. And the
//! one way to watch a body stream past: [`Watched`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body: a static rejection or a streamed upstream body.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body from bytes in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// How a watched body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Its last frame was read, or it had none.
    Complete,
    /// Its stream failed: the upstream broke off.
    Failed,
    /// It was dropped before its end: the client left, or shutdown cut it.
    Dropped,
}

/// Sees a body's data frames as they pass, then how it ended, once.
pub trait Watch {
    fn frame(&mut self, data: &Bytes);
    fn end(self, ended: Ended);
}

/// A body shown to a [`Watch`] as it streams, without holding a frame
/// back: the audit record of a response and the stages' observers both
/// watch through it.
pub struct Watched<W: Watch> {
    inner: Body,
    /// Taken when the body ends, so the watcher hears of it once.
    watch: Option<W>,
}

impl<W: Watch> Watched<W> {
    pub fn new(inner: Body, watch: W) -> Self {
        Self {
            inner,
            watch: Some(watch),
        }
    }

    fn end(&mut self, ended: Ended) {
        if let Some(watch) = self.watch.take() {
            watch.end(ended);
        }
    }
}

impl<W: Watch + Unpin> HttpBody for Watched<W> {
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
                if let (Some(data), Some(watch)) = (frame.data_ref(), this.watch.as_mut()) {
                    watch.frame(data);
                }
                // Why: hyper may stop polling once the body says it ended.
                if this.inner.is_end_stream() {
                    this.end(Ended::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(Ended::Failed),
            Poll::Ready(None) => this.end(Ended::Complete),
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

impl<W: Watch> Drop for Watched<W> {
    fn drop(&mut self) {
        // An empty body (101, 204, HEAD) is never polled, yet complete.
        let ended = if self.inner.is_end_stream() {
            Ended::Complete
        } else {
            Ended::Dropped
        };
        // Why: what the inner body ends when dropped (a model answer's
        // usage) must be known before this watcher hears of the end (the
        // audit record). An empty body takes its place: no allocation.
        drop(std::mem::replace(&mut self.inner, empty()));
        self.end(ended);
    }
}

/// `body`, once `first` has run: its frames wait for it (its head does
/// not). What an answer's reader must not see before a write is done (a
/// session binding, stored where other replicas read it).
pub fn after(first: Pin<Box<dyn Future<Output = ()> + Send>>, body: Body) -> Body {
    After {
        first: Some(Mutex::new(first)),
        body,
    }
    .boxed()
}

struct After {
    /// In a mutex only to be `Sync` (as a boxed body must): it is reached
    /// through `&mut self`, never locked.
    first: Option<Mutex<Pin<Box<dyn Future<Output = ()> + Send>>>>,
    body: Body,
}

impl HttpBody for After {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.as_mut() {
            let first = first.get_mut().unwrap_or_else(|e| e.into_inner());
            match first.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => self.first = None,
            }
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A body with nothing in it.
fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A watcher for tests: what it saw, and that it heard of the end once.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What the watcher saw: bytes, and how the body ended.
    #[derive(Default)]
    pub(crate) struct Seen {
        pub(crate) bytes: usize,
        pub(crate) ended: Option<Ended>,
    }

    pub(crate) struct Counter(pub(crate) Arc<Mutex<Seen>>);

    impl Watch for Counter {
        fn frame(&mut self, data: &Bytes) {
            self.0.lock().unwrap().bytes += data.len();
        }
        fn end(self, ended: Ended) {
            let mut seen = self.0.lock().unwrap();
            assert!(seen.ended.is_none(), "ended twice");
            seen.ended = Some(ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::testing::{Counter, Seen};
    use super::*;

    fn watched(body: Body) -> (Watched<Counter>, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        (Watched::new(body, Counter(seen.clone())), seen)
    }

    fn seen(seen: &Mutex<Seen>) -> (usize, Option<Ended>) {
        let s = seen.lock().unwrap();
        (s.bytes, s.ended)
    }

    #[tokio::test]
    async fn a_body_read_to_its_end_is_complete_once() {
        let (body, s) = watched(full("twelve bytes"));
        let _ = body.collect().await.unwrap();
        assert_eq!(seen(&s), (12, Some(Ended::Complete)));
    }

    #[tokio::test]
    async fn a_body_whose_last_frame_was_read_is_complete_without_another_poll() {
        let (mut body, s) = watched(full("all"));
        // What hyper does: one frame, then no poll once the body says it
        // ended.
        let _ = body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(seen(&s), (3, Some(Ended::Complete)));
        // An empty body is complete though never read.
        let (body, s) = watched(full(""));
        drop(body);
        assert_eq!(seen(&s), (0, Some(Ended::Complete)));
    }

    #[tokio::test]
    async fn a_body_dropped_half_way_is_dropped_and_a_failed_one_failed() {
        let (body, s) = watched(full("never read"));
        drop(body);
        assert_eq!(seen(&s), (0, Some(Ended::Dropped)));

        let frames = futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"half"))),
            Err(BoxError::from("upstream broke off")),
        ]);
        let (mut body, s) = watched(http_body_util::StreamBody::new(frames).boxed());
        let _ = body.frame().await.unwrap().unwrap();
        assert!(body.frame().await.unwrap().is_err());
        drop(body);
        assert_eq!(seen(&s), (4, Some(Ended::Failed)));
    }
}
