//! What a caller can discover: the answer to a `tools/list`,
//! `prompts/list`, `resources/list` or `resources/templates/list` on a
//! route with rules, filtered to what the caller could call.
//!
//! A plain JSON answer is read whole and filtered. An SSE answer streams:
//! each event is passed on, byte for byte, as soon as it is complete,
//! except the one that answers the list request (the JSON-RPC response
//! with its id), which is filtered; after it, the rest passes unread.
//! Either way the answer is marked private: it is this caller's.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::body::{Body, BoxError};
use crate::call::McpTarget;
use crate::sse::event_end;
use crate::stages::Respond;

/// The most of one answer (JSON) or one event (SSE) read to filter it; a
/// list longer than this is answered with an error, never passed whole.
const MAX_LIST_BYTES: usize = 16 << 20;

/// Which list, and how its entries name what they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    pub fn of(method: &str) -> Option<Self> {
        Some(match method {
            "tools/list" => Self::Tools,
            "prompts/list" => Self::Prompts,
            "resources/list" => Self::Resources,
            "resources/templates/list" => Self::ResourceTemplates,
            _ => return None,
        })
    }

    /// The result's array, and the key that names each entry.
    fn keys(self) -> (&'static str, &'static str) {
        match self {
            Self::Tools => ("tools", "name"),
            Self::Prompts => ("prompts", "name"),
            Self::Resources => ("resources", "uri"),
            Self::ResourceTemplates => ("resourceTemplates", "uriTemplate"),
        }
    }

    fn target(self, name: &str) -> McpTarget {
        match self {
            Self::Tools => McpTarget::Tool(name.to_owned()),
            Self::Prompts => McpTarget::Prompt(name.to_owned()),
            // A template is kept when a rule's pattern matches it as
            // written (`file:///shared/{path}` by `file:///shared/*`).
            Self::Resources | Self::ResourceTemplates => McpTarget::Resource(name.to_owned()),
        }
    }
}

/// Whether the caller could call this target.
pub type Callable = Arc<dyn Fn(&McpTarget) -> bool + Send + Sync>;

/// Filters one list answer.
pub struct ListFilter {
    kind: ListKind,
    /// The request's id, as JSON: the answer carries the same.
    id: Value,
    callable: Callable,
}

impl ListFilter {
    pub fn new(kind: ListKind, id: &str, callable: Callable) -> Self {
        Self {
            kind,
            id: serde_json::from_str(id).unwrap_or(Value::Null),
            callable,
        }
    }

    /// `message` filtered, if it is the answer to the list request; `None`
    /// for any other message.
    fn filter(&self, message: &[u8]) -> Option<Vec<u8>> {
        let mut message: Value = serde_json::from_slice(message).ok()?;
        if message.get("id") != Some(&self.id) {
            return None;
        }
        let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
            // An error answers the request too; it lists nothing.
            return None;
        };
        let (array, key) = self.kind.keys();
        if let Some(entries) = result.get_mut(array).and_then(Value::as_array_mut) {
            entries.retain(|entry| {
                entry
                    .get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|name| (self.callable)(&self.kind.target(name)))
            });
        }
        // Why (2026-07-28 result caching): the list is this caller's.
        if result.contains_key("cacheScope") {
            result.insert("cacheScope".into(), Value::from("private"));
        }
        serde_json::to_vec(&message).ok()
    }

    /// What is sent instead of a list too long to filter.
    fn too_long(&self) -> Vec<u8> {
        let error = serde_json::json!({
            "jsonrpc": "2.0",
            "id": self.id,
            "error": {"code": -32603, "message": "The list is too long for the gateway to filter."},
        });
        error.to_string().into_bytes()
    }
}

impl Respond for ListFilter {
    fn respond(self: Box<Self>, mut response: Response<Body>) -> Response<Body> {
        if !response.status().is_success() {
            return response;
        }
        let media = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let stream = match media.as_deref() {
            Some("application/json") => false,
            Some("text/event-stream") => true,
            _ => return response,
        };
        let h = response.headers_mut();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
        h.remove(CONTENT_LENGTH);
        response.map(|inner| {
            Filtered {
                inner,
                filter: *self,
                buffer: BytesMut::new(),
                scanned: 0,
                stream,
                done: false,
                cut: false,
            }
            .boxed()
        })
    }
}

/// The answer's body, filtered.
struct Filtered {
    inner: Body,
    filter: ListFilter,
    /// What is held until it is complete: the JSON answer, or the current
    /// SSE event.
    buffer: BytesMut,
    /// How far `buffer` was searched for an event's end.
    scanned: usize,
    stream: bool,
    /// The list answer was sent: the rest passes unread.
    done: bool,
    /// The list was too long to filter: its error was sent and the answer
    /// ends there (what followed would be the unfiltered rest).
    cut: bool,
}

impl Filtered {
    /// The next complete SSE events in the buffer, the list's filtered.
    fn events(&mut self) -> Option<Bytes> {
        let mut out = BytesMut::new();
        while !self.done {
            let end = match event_end(&self.buffer, self.scanned) {
                Ok(end) => end,
                Err(resume) => {
                    self.scanned = resume;
                    if self.buffer.len() > MAX_LIST_BYTES {
                        out.extend_from_slice(&sse_event(&self.filter.too_long()));
                        self.buffer.clear();
                        self.cut = true;
                        return Some(out.freeze());
                    }
                    break;
                }
            };
            let event = self.buffer.split_to(end);
            self.scanned = 0;
            match self.filtered_event(&event) {
                Some(rewritten) => {
                    out.extend_from_slice(&rewritten);
                    self.done = true;
                }
                None => out.extend_from_slice(&event),
            }
        }
        if self.done {
            // Whatever followed the list in this read passes as it came.
            out.extend_from_slice(&self.buffer.split());
        }
        (!out.is_empty()).then(|| out.freeze())
    }

    /// The event, rewritten, if it carries the list's answer.
    fn filtered_event(&self, event: &[u8]) -> Option<Vec<u8>> {
        let mut parser = sse_parse::SseParser::new();
        parser.feed(event);
        let parsed = parser.next_event()?;
        let data = self.filter.filter(parsed.data.as_bytes())?;
        let mut out = Vec::with_capacity(data.len() + 64);
        if parsed.event != "message" {
            out.extend_from_slice(format!("event: {}\n", parsed.event).as_bytes());
        }
        if !parsed.id.is_empty() {
            out.extend_from_slice(format!("id: {}\n", parsed.id).as_bytes());
        }
        out.extend_from_slice(&sse_event(&data));
        Some(out)
    }
}

/// `data` (one line of JSON) as an SSE event's last lines.
fn sse_event(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out
}

impl HttpBody for Filtered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.cut {
                return Poll::Ready(None);
            }
            if this.done && this.buffer.is_empty() {
                return Pin::new(&mut this.inner).poll_frame(cx);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    this.buffer.extend_from_slice(&data);
                    if this.stream {
                        if let Some(out) = this.events() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    } else if this.buffer.len() > MAX_LIST_BYTES {
                        this.buffer.clear();
                        this.cut = true;
                        let error = this.filter.too_long();
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(error)))));
                    }
                }
                Poll::Ready(None) => {
                    let rest = this.buffer.split().freeze();
                    this.done = true;
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    // The last event may end without its blank line (or with
                    // a CR that waited for an LF): it is complete now.
                    let filtered = match this.stream {
                        true => this.filtered_event(&rest),
                        false => this.filter.filter(&rest),
                    };
                    let out = filtered.map_or(rest, Bytes::from);
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut || (self.done && self.buffer.is_empty() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(allowed: &'static [&'static str]) -> Callable {
        Arc::new(move |t: &McpTarget| allowed.contains(&t.name()))
    }

    async fn through(filter: ListFilter, content_type: &str, chunks: Vec<&'static [u8]>) -> String {
        let frames = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, BoxError>(Frame::data(Bytes::from_static(c)))),
        );
        let response = Response::builder()
            .header(CONTENT_TYPE, content_type)
            .header(CONTENT_LENGTH, "999")
            .body(http_body_util::StreamBody::new(frames).boxed())
            .unwrap();
        let response = Box::new(filter).respond(response);
        assert_eq!(response.headers()[CACHE_CONTROL], "private, no-store");
        assert!(!response.headers().contains_key(CONTENT_LENGTH));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    const LIST: &[u8] = br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"search_docs","inputSchema":{}},{"name":"delete_everything"}],"nextCursor":"c2","cacheScope":"public","ttlMs":60000}}"#;

    #[tokio::test]
    async fn a_json_list_keeps_what_the_caller_could_call_and_its_cursor() {
        let filter = ListFilter::new(ListKind::Tools, "7", only(&["search_docs"]));
        let (head, tail) = LIST.split_at(40);
        let out = through(filter, "application/json", vec![head, tail]).await;
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v["result"]["tools"],
            serde_json::json!([{"name": "search_docs", "inputSchema": {}}])
        );
        assert_eq!(v["result"]["nextCursor"], "c2");
        assert_eq!(v["result"]["cacheScope"], "private");
        // Another id is another answer: untouched.
        let filter = ListFilter::new(ListKind::Tools, "8", only(&[]));
        let out = through(filter, "application/json; charset=utf-8", vec![LIST]).await;
        assert_eq!(out.as_bytes(), LIST);
    }

    #[tokio::test]
    async fn in_a_stream_only_the_lists_event_is_rewritten_and_the_rest_passes_byte_for_byte() {
        let progress = b": keep-alive\r\n\r\nevent: message\nid: e1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progress\":1}}\n\n";
        let list_event = [b"id: e2\ndata: ".as_slice(), LIST, b"\n\n"].concat();
        let after = b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\r\r";
        let list_event: &'static [u8] = Box::leak(list_event.into_boxed_slice());
        // Cut anywhere: in the middle of a CRLF, of the list, of the last event.
        let all = [progress.as_slice(), list_event, after.as_slice()].concat();
        let all: &'static [u8] = Box::leak(all.into_boxed_slice());
        for cut in [1, 15, 16, progress.len() + 30, all.len() - 1] {
            let (a, b) = all.split_at(cut);
            let filter = ListFilter::new(ListKind::Tools, "7", only(&["search_docs"]));
            let out = through(filter, "text/event-stream", vec![a, b]).await;
            let (before, rest) = out.split_at(progress.len());
            assert_eq!(before.as_bytes(), progress, "cut at {cut}");
            let (rewritten, tail) = rest.split_once("\n\n").unwrap();
            assert!(rewritten.starts_with("id: e2\ndata: {"), "{rewritten}");
            assert!(!rewritten.contains("delete_everything"), "{rewritten}");
            assert!(rewritten.contains("search_docs"), "{rewritten}");
            assert_eq!(tail.as_bytes(), after, "cut at {cut}");
        }
    }

    /// A list too long to filter is never passed on, in part or whole: the
    /// answer is the error, and ends there.
    #[tokio::test]
    async fn a_list_too_long_to_filter_is_an_error_and_nothing_after_it() {
        let chunk: &'static [u8] = Box::leak(vec![b'x'; 1 << 20].into_boxed_slice());
        for (content_type, head) in [
            ("application/json", &b"{"[..]),
            ("text/event-stream", &b"data: {"[..]),
        ] {
            let mut chunks = vec![head];
            chunks.extend(std::iter::repeat_n(chunk, 18));
            chunks.push(b"}\n\n");
            let filter = ListFilter::new(ListKind::Tools, "7", only(&[]));
            let out = through(filter, content_type, chunks).await;
            let error = r#"{"error":{"code":-32603,"message":"The list is too long for the gateway to filter."},"id":7,"jsonrpc":"2.0"}"#;
            let expected = match content_type {
                "application/json" => error.to_owned(),
                _ => format!("data: {error}\n\n"),
            };
            assert_eq!(out, expected, "{content_type}");
        }
    }
}
