//! A model answer, metered as it streams: its usage is read from the JSON
//! answer or the stream's events without holding a frame back (but the one
//! usage-only chunk a client did not ask for, which is dropped), and when
//! the answer ends, however it ends, the usage is recorded and the
//! request's reservation settled.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use sse_parse::SseParser;

use super::usage::{self, Event};
use super::{ModelObserver, UsageLabels};
use crate::body::{Body, BoxError};
use crate::budget::{Estimate, Reservation};
use crate::call::{Metered, Usage, UsageSource};
use crate::sse::event_end;
use crate::stages::Respond;

/// The most of a JSON answer copied to read its usage; a longer one (a
/// large batch of embeddings) is charged at its reservation.
const JSON_READ_LIMIT: usize = 8 << 20;
/// The most of one stream event held to read it.
const EVENT_LIMIT: usize = 1 << 20;

/// The model stage's part in an answer.
pub struct ModelAnswer {
    pub closing: Closing,
    /// Drop the usage-only chunk: the gateway asked for it, not the client.
    pub strip: bool,
    /// The tokens left in the tightest budget, for the remaining header.
    pub remaining: Option<(HeaderName, u64)>,
}

/// What the end of an answer does.
pub struct Closing {
    pub metered: Metered,
    pub reservation: Option<Reservation>,
    /// What an answer that never says its usage is charged at.
    pub estimate: Estimate,
    pub observer: Arc<dyn ModelObserver>,
    pub route: Arc<str>,
    pub model: String,
    /// The registered agent calling, if one is.
    pub agent: Option<Arc<crate::policy::Agent>>,
    pub app: Option<String>,
    /// The upstream answered with success: without a usage, what was
    /// reserved is charged; a refusal or failure is charged nothing.
    pub answered: bool,
}

impl Closing {
    fn finish(self, reported: Option<Usage>) {
        let usage = match (reported, self.answered) {
            (Some(u), _) => u,
            (None, true) => self.estimate.as_usage(),
            (None, false) => Usage {
                source: UsageSource::None,
                ..Usage::default()
            },
        };
        self.metered.set(usage);
        let labels = UsageLabels {
            route: &self.route,
            model: &self.model,
            agent: self.agent.as_ref().map_or("none", |a| a.name.as_str()),
            app: self.app.as_deref().unwrap_or("none"),
        };
        self.observer.tokens(&labels, &usage);
        if let Some(reservation) = self.reservation {
            let observer = self.observer.clone();
            reservation.settle(&usage, SystemTime::now(), move |settled| {
                for s in &settled {
                    observer.settled(s);
                }
            });
        }
    }
}

impl Respond for ModelAnswer {
    fn respond(self: Box<Self>, mut response: Response<Body>) -> Response<Body> {
        let ModelAnswer {
            mut closing,
            strip,
            remaining,
        } = *self;
        closing.answered = response.status().is_success();
        if let Some((name, left)) = remaining
            && !response.headers().contains_key(&name)
        {
            response.headers_mut().insert(name, HeaderValue::from(left));
        }
        let media = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase());
        let reading = match media.as_deref() {
            _ if !closing.answered => Reading::Nothing,
            Some("application/json") => Reading::Json(Some(Vec::new())),
            Some("text/event-stream") if strip => {
                response.headers_mut().remove(CONTENT_LENGTH);
                Reading::Events {
                    parser: parser(),
                    held: Some(BytesMut::new()),
                    scanned: 0,
                }
            }
            Some("text/event-stream") => Reading::Events {
                parser: parser(),
                held: None,
                scanned: 0,
            },
            _ => Reading::Nothing,
        };
        response.map(|inner| {
            MeteredBody {
                inner,
                reading,
                usage: None,
                closing: Some(closing),
            }
            .boxed()
        })
    }
}

fn parser() -> Box<SseParser> {
    Box::new(SseParser::new().max_buffer(EVENT_LIMIT))
}

/// How an answer's usage is read.
enum Reading {
    /// A copy of the JSON answer, until it is too long to keep.
    Json(Option<Vec<u8>>),
    /// Stream events; `held`, when the usage-only chunk is dropped: the
    /// bytes of the event not yet complete.
    Events {
        parser: Box<SseParser>,
        held: Option<BytesMut>,
        scanned: usize,
    },
    /// An answer without usage (a refusal, another media type).
    Nothing,
}

struct MeteredBody {
    inner: Body,
    reading: Reading,
    usage: Option<Usage>,
    /// Taken when the answer ends.
    closing: Option<Closing>,
}

impl MeteredBody {
    /// Reads one frame; what passes on (all of it, unless the usage-only
    /// chunk is dropped from it).
    fn read(&mut self, data: Bytes) -> Option<Bytes> {
        match &mut self.reading {
            Reading::Nothing => Some(data),
            Reading::Json(copy) => {
                if let Some(c) = copy {
                    if c.len() + data.len() > JSON_READ_LIMIT {
                        *copy = None;
                    } else {
                        c.extend_from_slice(&data);
                    }
                }
                Some(data)
            }
            Reading::Events {
                parser, held: None, ..
            } => {
                parser.feed(&data);
                while let Some(event) = parser.next_event() {
                    if let Event::Usage(u) | Event::UsageOnly(u) = usage::of_event(&event.data) {
                        self.usage = Some(u);
                    }
                }
                Some(data)
            }
            Reading::Events {
                parser,
                held: Some(held),
                scanned,
            } => {
                held.extend_from_slice(&data);
                let mut out = BytesMut::new();
                while let Ok(end) = event_end(held, *scanned) {
                    let event = held.split_to(end);
                    *scanned = 0;
                    parser.feed(&event);
                    let mut keep = true;
                    while let Some(e) = parser.next_event() {
                        match usage::of_event(&e.data) {
                            Event::UsageOnly(u) => {
                                self.usage = Some(u);
                                keep = false;
                            }
                            Event::Usage(u) => self.usage = Some(u),
                            Event::Other => {}
                        }
                    }
                    if keep {
                        out.extend_from_slice(&event);
                    }
                }
                if let Err(resume) = event_end(held, *scanned) {
                    *scanned = resume;
                }
                if held.len() > EVENT_LIMIT {
                    // An event too long to read is not a usage chunk: it
                    // passes as it came.
                    out.extend_from_slice(&held.split());
                    *scanned = 0;
                }
                (!out.is_empty()).then(|| out.freeze())
            }
        }
    }

    /// The answer ended: the rest of what was held, and the usage settled.
    fn end(&mut self) -> Option<Bytes> {
        let rest = match &mut self.reading {
            Reading::Json(Some(copy)) => {
                self.usage = usage::of_answer(copy);
                None
            }
            Reading::Events {
                held: Some(held), ..
            } if !held.is_empty() => Some(held.split().freeze()),
            _ => None,
        };
        if let Some(closing) = self.closing.take() {
            closing.finish(self.usage);
        }
        rest
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.closing.is_none() {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => {
                    this.end();
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let out = match frame.into_data() {
                        Ok(data) => this.read(data),
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    // Why: hyper may stop polling once the body says it
                    // ended (a body of known length, all sent).
                    let out = match this.inner.is_end_stream() {
                        false => out,
                        true => match (out, this.end()) {
                            (Some(a), Some(b)) => Some([a, b].concat().into()),
                            (a, b) => a.or(b),
                        },
                    };
                    match out {
                        Some(out) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                        None if this.closing.is_none() => return Poll::Ready(None),
                        None => continue,
                    }
                }
                Poll::Ready(None) => {
                    return Poll::Ready(this.end().map(|rest| Ok(Frame::data(rest))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.closing.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.reading {
            Reading::Events { held: Some(_), .. } => SizeHint::default(),
            _ => self.inner.size_hint(),
        }
    }
}

impl Drop for MeteredBody {
    /// Cut before its end (the client left, the gateway shut down): the
    /// usage read so far, if any, else the reservation, is charged. The
    /// upstream's connection closes with the inner body.
    fn drop(&mut self) {
        if let Some(closing) = self.closing.take() {
            closing.finish(self.usage);
        }
    }
}
