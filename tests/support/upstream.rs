//! A real upstream on loopback: echo by default, plus `/sse` (events gated
//! by the test), `/ws` (WebSocket echo), `/upload` (counts a streamed body
//! and the process's peak RSS while it arrives) and `/slow`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

type Body = BoxBody<Bytes, Infallible>;

pub struct TestUpstream {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    connections: Arc<AtomicUsize>,
    gates: Arc<Gates>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

/// What the tests hold streams back with, and hear of them by.
#[derive(Default)]
struct Gates {
    /// Lets a held event go.
    sse: Notify,
    /// Told when a held completion stream is dropped before its end: its
    /// client (the gateway) closed the connection.
    abandoned: Notify,
    /// Told when a WebSocket session ends.
    websocket_closed: Notify,
}

/// A request as the upstream parsed it: the smuggling tests count these.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    /// Which connection it came on: 0 for the first accepted.
    pub connection: usize,
}

impl TestUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gates = Arc::new(Gates::default());
        let gate = gates.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let connection = accepted.fetch_add(1, Ordering::Relaxed);
                let gate = gate.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let gate = gate.clone();
                        log.lock().unwrap().push(Seen {
                            method: req.method().to_string(),
                            path: req.uri().to_string(),
                            headers: req.headers().clone(),
                            connection,
                        });
                        async move { Ok::<_, Infallible>(route(req, gate).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            connections,
            gates,
            seen,
            task,
        }
    }

    /// How many connections the upstream has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Every request the upstream has parsed so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets the `/sse` stream send its next event.
    pub fn release_sse_event(&self) {
        self.gates.sse.notify_one();
    }

    /// Waits until a held completion stream (or a `/ticks` stream) is
    /// dropped unfinished.
    pub async fn abandoned(&self) {
        self.gates.abandoned.notified().await;
    }

    /// Waits until a WebSocket session's connection is gone.
    pub async fn websocket_closed(&self) {
        self.gates.websocket_closed.notified().await;
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn route(req: Request<Incoming>, gates: Arc<Gates>) -> Response<Body> {
    match req.uri().path() {
        p if p.starts_with("/openai/") && p.ends_with("/chat/completions") => {
            completion(req, gates).await
        }
        "/sse" => sse(gates),
        p if p.ends_with("/ticks") => ticks(&req, gates),
        // The Realtime API of a model API: a WebSocket echo too.
        p if p == "/ws" || p.ends_with("/realtime") => websocket(req, gates),
        "/upload" => upload(req).await,
        "/dies" => dies(),
        // Reports the body it read: what an MCP server would have parsed;
        // names the session the test asks it to (as a server does in its
        // answer to `initialize`).
        "/mcp" => {
            let session = req.headers().get("x-test-session").cloned();
            let mut resp = portcullis::dev::echo_with_body(req)
                .await
                .map(|b| b.map_err(|never| match never {}).boxed());
            if let Some(id) = session {
                resp.headers_mut().insert("mcp-session-id", id);
            }
            resp
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            full(StatusCode::OK, "late")
        }
        _ => portcullis::dev::echo(&req).map(|b| b.map_err(|never| match never {}).boxed()),
    }
}

/// What every completion of the OpenAI-compatible endpoint uses.
pub const PROMPT_TOKENS: u64 = 11;
pub const COMPLETION_TOKENS: u64 = 7;
pub const CACHED_TOKENS: u64 = 2;

/// An OpenAI-compatible chat completion: a JSON answer with its usage, or
/// a stream of three deltas whose usage comes in a chunk of its own only
/// when the request asked (`stream_options.include_usage`), as OpenAI's
/// and Azure's do. `?cut=1` ends the stream after its deltas, unfinished;
/// `?gate=1` holds its usage chunk until the test releases it
/// ([`TestUpstream::release_sse_event`]).
async fn completion(req: Request<Incoming>, gates: Arc<Gates>) -> Response<Body> {
    let query = req.uri().query().unwrap_or("").to_owned();
    let cut = query.contains("cut=1");
    let gated = query.contains("gate=1");
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = request["model"].as_str().unwrap_or("deployment").to_owned();
    let usage = serde_json::json!({"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS, "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS}});
    if request["stream"] != true {
        let answer = serde_json::json!({"id": "c1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi there"}, "finish_reason": "stop"}],
            "usage": usage});
        let mut resp = Response::new(Full::new(Bytes::from(answer.to_string())).boxed());
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        return resp;
    }
    let asked = request["stream_options"]["include_usage"] == true;
    let chunk = |choices: serde_json::Value, usage: serde_json::Value| {
        let mut c = serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": choices});
        if asked {
            c["usage"] = usage;
        }
        format!("data: {c}\n\n")
    };
    let mut events: Vec<String> = ["hi", " there", "!"]
        .iter()
        .map(|t| {
            chunk(
                serde_json::json!([{"index": 0, "delta": {"content": t}, "finish_reason": null}]),
                serde_json::Value::Null,
            )
        })
        .collect();
    if !cut {
        if asked {
            events.push(chunk(serde_json::json!([]), usage));
        }
        events.push("data: [DONE]\n\n".to_owned());
    }
    // The usage chunk, when there is one: the last but `[DONE]`.
    let usage_at = (asked && !cut).then(|| events.len() - 2);
    let unfinished = Unfinished(gated.then(|| gates.clone()));
    let frames = futures_util::stream::unfold(
        (events.into_iter().enumerate(), gates, unfinished),
        move |(mut events, gates, mut unfinished)| async move {
            let Some((i, event)) = events.next() else {
                // Ended: nothing abandoned.
                unfinished.0.take();
                return None;
            };
            if gated && Some(i) == usage_at {
                gates.sse.notified().await;
            }
            let frame = Ok::<_, Infallible>(Frame::data(Bytes::from(event)));
            Some((frame, (events, gates, unfinished)))
        },
    );
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    resp
}

/// Tells the tests, when dropped while armed, that a held stream was
/// abandoned.
struct Unfinished(Option<Arc<Gates>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(gates) = self.0.take() {
            gates.abandoned.notify_one();
        }
    }
}

fn full(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
    *resp.status_mut() = status;
    resp
}

/// Promises 1,000 bytes, sends 10 (flushed: the body then waits a
/// moment) and ends: hyper drops the connection, as an upstream that
/// crashes mid-response would.
fn dies() -> Response<Body> {
    let chunks = futures_util::stream::unfold(0u8, |n| async move {
        match n {
            0 => Some((
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"0123456789"))),
                1,
            )),
            _ => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                None
            }
        }
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(chunks)));
    resp.headers_mut().insert(
        header::CONTENT_LENGTH,
        header::HeaderValue::from_static("1000"),
    );
    resp
}

/// Three events; each after the first waits for the test's go-ahead, so a
/// test can prove events arrive before the stream ends.
fn sse(gates: Arc<Gates>) -> Response<Body> {
    let events = futures_util::stream::unfold(0u32, move |n| {
        let gates = gates.clone();
        async move {
            if n > 2 {
                return None;
            }
            if n > 0 {
                gates.sse.notified().await;
            }
            let text = if n == 2 {
                "data: [DONE]\n\n".to_owned()
            } else {
                format!("data: {{\"n\":{n}}}\n\n")
            };
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(text))), n + 1))
        }
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(events)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    resp
}

/// An endless event stream as a resumable server sends it (an MCP
/// server's with an event store): one event every 100 ms, each with an
/// id, resumed after the request's `Last-Event-ID`; `?ids=0` sends none.
/// Tells [`TestUpstream::abandoned`] when its client closes it.
fn ticks(req: &Request<Incoming>, gates: Arc<Gates>) -> Response<Body> {
    let with_ids = !req.uri().query().unwrap_or("").contains("ids=0");
    let first = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map_or(1, |last| last + 1);
    let unfinished = Unfinished(Some(gates));
    let events =
        futures_util::stream::unfold((first, unfinished), move |(n, unfinished)| async move {
            if n > first {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let event = match with_ids {
                true => format!("id: {n}\ndata: {{\"n\":{n}}}\n\n"),
                false => format!("data: {{\"n\":{n}}}\n\n"),
            };
            let frame = Ok::<_, Infallible>(Frame::data(Bytes::from(event)));
            Some((frame, (n + 1, unfinished)))
        });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(events)));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    resp
}

fn websocket(mut req: Request<Incoming>, gates: Arc<Gates>) -> Response<Body> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return full(StatusCode::BAD_REQUEST, "not a websocket request");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
        gates.websocket_closed.notify_one();
    });
    let mut resp = Response::new(Full::default().boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    let accept = derive_accept_key(key.as_bytes());
    h.insert(
        "sec-websocket-accept",
        header::HeaderValue::from_str(&accept).unwrap(),
    );
    resp
}

/// Counts the body as it streams in and samples the process's RSS.
async fn upload(req: Request<Incoming>) -> Response<Body> {
    let start_rss = rss_bytes();
    let mut peak = start_rss;
    let mut body = req.into_body();
    let mut total: u64 = 0;
    let mut next_sample: u64 = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Some(data) = frame.data_ref() {
            total += data.len() as u64;
        }
        if total >= next_sample {
            peak = peak.max(rss_bytes());
            next_sample = total + 4 * 1024 * 1024;
        }
    }
    peak = peak.max(rss_bytes());
    let text = format!("{{\"bytes\":{total},\"start_rss\":{start_rss},\"peak_rss\":{peak}}}");
    let mut resp = Response::new(Full::new(Bytes::from(text)).boxed());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Resident set size of this process, from /proc/self/statm.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}
