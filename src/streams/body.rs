//! An answer's body under its exchange's [`Lifetime`]: passed through as
//! it comes until the access ends, then ended the way its client
//! understands. A resumable event stream (its last event had an `id`) gets
//! a `retry:` hint and ends cleanly, so the client reconnects with
//! `Last-Event-ID` and a fresh token, decided like any request (the MCP
//! transport's resumption, 2025-11-25); anything else is cut, which the
//! client sees as a broken answer. Either way the upstream's answer is
//! dropped at once, which closes its connection (a model stops
//! generating).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use sse_parse::SseParser;

use super::{Ending, Lifetime};
use crate::body::{Body, BoxError};

/// How an answer ends when its access does.
pub enum Style {
    /// An event stream: resumed by its client if its last event had an id.
    Events(Box<EventsSeen>),
    /// Anything else: cut.
    Cut,
}

impl Style {
    /// For an event stream that tells its client to reconnect after
    /// `retry`.
    pub fn events(retry: Duration) -> Self {
        Self::Events(Box::new(EventsSeen::new(retry)))
    }
}

/// What the client of an event stream has seen: where its events end, and
/// the last event id it would reconnect with.
pub struct EventsSeen {
    /// Reads each event's fields; only its last event id is kept.
    parser: SseParser,
    /// The bytes sent end with a blank line (or nothing was sent): an event
    /// boundary, where a field can be added.
    at_boundary: bool,
    /// The last byte sent ended a line.
    line_start: bool,
    /// The last byte sent was a CR (an LF after it ends nothing).
    after_cr: bool,
    retry: Duration,
}

impl EventsSeen {
    fn new(retry: Duration) -> Self {
        Self {
            // Why bounded: only the id matters; a huge event is not kept.
            parser: SseParser::new().max_buffer(64 * 1024),
            at_boundary: true,
            line_start: true,
            after_cr: false,
            retry,
        }
    }

    fn saw(&mut self, bytes: &[u8]) {
        self.parser.feed(bytes);
        while self.parser.next_event().is_some() {}
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    // A line end at a line's start is a blank line: the event
                    // is complete.
                    self.at_boundary = self.line_start;
                    self.line_start = true;
                    self.after_cr = b == b'\r';
                }
                _ => {
                    self.at_boundary = false;
                    self.line_start = false;
                    self.after_cr = false;
                }
            }
        }
    }

    /// The client can resume after the events it has: they end whole and
    /// the last had an id.
    fn resumable(&self) -> bool {
        self.at_boundary && !self.parser.last_event_id().is_empty()
    }

    /// The hint that ends the stream: reconnect after `retry`.
    fn retry_hint(&self) -> Bytes {
        // Why the comment line: a reader of the raw stream sees why.
        Bytes::from(format!(
            ": access ended\nretry: {}\n\n",
            self.retry.as_millis()
        ))
    }
}

/// The answer's body, ended when its access ends.
pub struct Guarded {
    /// `None` once ended: the upstream's answer is dropped then.
    inner: Option<Body>,
    lifetime: Lifetime,
    style: Style,
}

impl Guarded {
    pub fn new(inner: Body, lifetime: Lifetime, style: Style) -> Self {
        Self {
            inner: Some(inner),
            lifetime,
            style,
        }
    }

    fn end(&mut self, ending: &Ending) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.lifetime.acted(ending);
        self.inner = None;
        match &self.style {
            Style::Events(seen) if seen.resumable() => {
                Poll::Ready(Some(Ok(Frame::data(seen.retry_hint()))))
            }
            _ => Poll::Ready(Some(Err(Ended(ending.reason()).into()))),
        }
    }
}

/// The error a cut answer ends with (what hyper closes the stream for).
#[derive(Debug)]
pub struct Ended(pub &'static str);

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "access ended: {}", self.0)
    }
}

impl std::error::Error for Ended {}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        // Ended (after the hint, if there was one): nothing more.
        if this.inner.is_none() {
            return Poll::Ready(None);
        }
        // Why first: a stream that always has its next frame ready must
        // still end on time.
        if let Poll::Ready(ending) = this.lifetime.poll_passed(cx) {
            return this.end(&ending);
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        // Waiting for the upstream: the deadline's timer wakes it.
        if polled.is_pending()
            && let Poll::Ready(ending) = this.lifetime.poll_end(cx)
        {
            return this.end(&ending);
        }
        if let (Poll::Ready(Some(Ok(frame))), Style::Events(seen)) = (&polled, &mut this.style)
            && let Some(data) = frame.data_ref()
        {
            seen.saw(data);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(|inner| inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(chunks: &[&str]) -> EventsSeen {
        let mut s = EventsSeen::new(Duration::from_millis(1500));
        for c in chunks {
            s.saw(c.as_bytes());
        }
        s
    }

    #[test]
    fn a_stream_is_resumable_at_an_event_end_after_an_id() {
        assert!(!seen(&[]).resumable(), "no id yet");
        assert!(seen(&["id: 1\ndata: a\n\n"]).resumable());
        assert!(seen(&["id: 1\nda", "ta: a\n", "\n"]).resumable());
        assert!(seen(&["id: 1\r\ndata: a\r\n\r\n"]).resumable());
        assert!(seen(&["id: 1\rdata: a\r\r"]).resumable());
        assert!(
            !seen(&["id: 1\ndata: a\n\nid: 2\ndata: b\n"]).resumable(),
            "half an event sent: the client would drop it, a hint would complete it"
        );
        assert!(
            seen(&["id: 1\ndata: a\n\ndata: b\n\n"]).resumable(),
            "an event without an id keeps the last one"
        );
        assert!(
            !seen(&["id: 1\ndata: a\n\nid\ndata: b\n\n"]).resumable(),
            "an empty id clears it"
        );
        assert!(!seen(&["data: a\n\n"]).resumable());
    }

    #[test]
    fn the_hint_is_a_retry_field_and_a_blank_line() {
        assert_eq!(
            seen(&["id: 1\ndata: a\n\n"]).retry_hint(),
            ": access ended\nretry: 1500\n\n"
        );
        // After a lone CR too: the client reads the hint as a field.
        let after_cr = seen(&["id: 1\rdata: a\r\r"]);
        let mut parser = SseParser::new();
        parser.feed(b"id: 7\rdata: a\r\r");
        parser.feed(&after_cr.retry_hint());
        assert_eq!(parser.retry(), Some(Duration::from_millis(1500)));
        assert_eq!(parser.last_event_id(), "7");
    }
}
