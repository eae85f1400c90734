//! Upstream connections held by client connections.
//!
//! An HTTP/1 client connection sends one request at a time, so it needs one
//! upstream connection, and keeps it: each request is sent on the
//! connection its client connection holds ([`Held`]), taken and put back
//! without a shared lock, a hash of the pool key or a task to hand the
//! connection back once its answer is read, which is what a shared pool
//! costs each request (`docs/performance.md`). When the client connection
//! ends, its upstream connection, if idle, joins the upstream's list of
//! idle ones ([`Direct`]), where the next client connection finds it: a
//! lock per client connection, not per request. HTTP/2 clients, upgrades and HTTP/2
//! upstreams keep the shared pool, which multiplexes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::Uri;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_service::Service;

use super::{BoxError, SendError};
use crate::body::Body;

/// An upstream's connections outside the shared pool: how to make one, and
/// the idle ones no client connection holds.
pub struct Direct {
    connector: HttpsConnector<HttpConnector>,
    idle_timeout: Duration,
    /// Most recently idle last.
    idle: Mutex<Vec<Idle>>,
}

/// A connection and when it was last put back.
struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Idle {
    /// Open, and idle for less than `timeout` at `now`.
    fn usable(&self, now: Instant, timeout: Duration) -> bool {
        !self.sender.is_closed() && now.duration_since(self.since) < timeout
    }
}

impl Direct {
    pub fn new(connector: HttpsConnector<HttpConnector>, idle_timeout: Duration) -> Self {
        Self {
            connector,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// A new connection to the request's authority. Boxed: the connector's
    /// and the handshake's states are large, and a request's future, which
    /// is moved as it is polled, holds only a pointer to them.
    fn connect(
        &self,
        uri: &Uri,
    ) -> Pin<Box<dyn Future<Output = Result<SendRequest<Body>, SendError>> + Send>> {
        let connecting = self.connector.clone().call(uri.clone());
        Box::pin(async move {
            let io = connecting.await.map_err(SendError::Connect)?;
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| SendError::Connect(e.into()))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %crate::telemetry::error_chain(&e), "upstream connection ended");
                }
            });
            Ok(sender)
        })
    }

    /// The most recently idle connection still open and within the idle
    /// timeout; the stale ones are closed on the way.
    fn take_idle(&self, now: Instant) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        self.expire(&mut idle, now);
        while let Some(conn) = idle.pop() {
            if conn.usable(now, self.idle_timeout) {
                return Some(conn.sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: SendRequest<Body>, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        self.expire(&mut idle, now);
        idle.push(Idle { sender, since: now });
    }

    /// Closes the connections idle for longer than the timeout (the oldest
    /// come first).
    fn expire(&self, idle: &mut Vec<Idle>, now: Instant) {
        let stale = idle
            .iter()
            .take_while(|c| !c.usable(now, self.idle_timeout))
            .count();
        idle.drain(..stale);
    }
}

/// The upstream connection one client connection holds.
#[derive(Default)]
pub struct Held(Mutex<Option<Kept>>);

/// A held connection and the upstream it goes to.
struct Kept {
    direct: Arc<Direct>,
    conn: Idle,
}

impl Held {
    /// Sends the request on the held connection to `direct`'s upstream, or
    /// on one of its idle connections, or on a new one. A request that was
    /// not written before a reused connection failed is sent again on a new
    /// connection; so is `replay`, a request that may be sent twice, when
    /// the upstream closed a reused connection before answering.
    ///
    /// (Not an `async fn`, and the retry's future made outside the `match`
    /// that binds the error: a request's future keeps the request and the
    /// error only once, and is moved as it is polled.)
    #[allow(clippy::manual_async_fn)] // reason: its arguments stored once, not twice (see Gateway::handle)
    pub fn send<'a>(
        &'a self,
        direct: &'a Arc<Direct>,
        mut req: Request<Body>,
        replay: Option<http::request::Parts>,
    ) -> impl Future<Output = Result<Response<Incoming>, SendError>> + 'a {
        async move {
            let (mut sender, mut reused) = match self.take(direct, Instant::now()) {
                Some(sender) => (sender, true),
                None => (direct.connect(req.uri()).await?, false),
            };
            // Ready at once unless the previous answer's last bytes are
            // still on their way; closed if that answer was abandoned.
            if sender.ready().await.is_err() {
                sender = direct.connect(req.uri()).await?;
                reused = false;
            }
            let uri = req.uri().clone();
            origin_form(&mut req);
            let again = match answer(&mut sender, req).await {
                Ok(resp) => {
                    self.put(direct, sender);
                    return Ok(resp);
                }
                Err((unsent, error)) if reused => self.again(direct, &uri, unsent, error, replay),
                Err((_, error)) => return Err(SendError::Exchange(error)),
            };
            again.await
        }
    }

    /// After a reused connection failed: the request on a new connection if
    /// none of it was written, or `replay` if the upstream closed before
    /// answering. Boxed, as it is rare: a request's future, moved as it is
    /// polled, stays small.
    fn again<'a>(
        &'a self,
        direct: &'a Arc<Direct>,
        uri: &Uri,
        unsent: Option<Request<Body>>,
        error: BoxError,
        replay: Option<http::request::Parts>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Incoming>, SendError>> + Send + 'a>> {
        let again = match (unsent, replay) {
            (Some(unsent), _) => unsent,
            (None, Some(parts)) if super::closed_before_answer(&*error) => {
                tracing::debug!(
                    error = %crate::telemetry::error_chain(&*error),
                    "the upstream closed the connection before answering: sending again on a new one"
                );
                let mut again = Request::from_parts(parts, crate::body::full(bytes::Bytes::new()));
                origin_form(&mut again);
                again
            }
            _ => return Box::pin(std::future::ready(Err(SendError::Exchange(error)))),
        };
        let connecting = direct.connect(uri);
        Box::pin(async move {
            let mut sender = connecting.await?;
            let resp = sender
                .send_request(again)
                .await
                .map_err(|e| SendError::Exchange(e.into()))?;
            self.put(direct, sender);
            Ok(resp)
        })
    }

    fn take(&self, direct: &Arc<Direct>, now: Instant) -> Option<SendRequest<Body>> {
        let kept = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        match kept {
            Some(kept)
                if Arc::ptr_eq(&kept.direct, direct)
                    && kept.conn.usable(now, direct.idle_timeout) =>
            {
                Some(kept.conn.sender)
            }
            // Held for another upstream (a reload replaced it, or another
            // route's): that one's idle list takes it.
            Some(kept) if !Arc::ptr_eq(&kept.direct, direct) => {
                kept.release();
                direct.take_idle(now)
            }
            _ => direct.take_idle(now),
        }
    }

    fn put(&self, direct: &Arc<Direct>, sender: SendRequest<Body>) {
        let kept = Kept {
            direct: direct.clone(),
            conn: Idle {
                sender,
                since: Instant::now(),
            },
        };
        let replaced = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(kept);
        if let Some(other) = replaced {
            other.release();
        }
    }
}

impl Kept {
    /// To its upstream's idle list if it can take another request now;
    /// closed otherwise.
    fn release(self) {
        if self.conn.sender.is_ready() {
            self.direct.put_idle(self.conn.sender, Instant::now());
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(kept) = self
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            kept.release();
        }
    }
}

/// The upstream's answer to `req` on `sender`'s connection, or the request
/// back if none of it was written, with why it failed.
///
/// Why not `try_send_request` alone: when the upstream closes the
/// connection just as a request is handed to it, hyper's connection can
/// close with that request neither answered nor given back, and the
/// request would wait out the response timeout (rare, and met by
/// `an_upstream_that_closes_connections_at_random_costs_no_request`). The
/// connection's closing is watched beside the answer; once it is closed,
/// the answer (or the request given back, or an error) has [`CLOSING`] to
/// come, and is then taken for a connection closed before answering.
async fn answer(
    sender: &mut SendRequest<Body>,
    req: Request<Body>,
) -> Result<Response<Incoming>, (Option<Request<Body>>, BoxError)> {
    let sent = sender.try_send_request(req);
    tokio::pin!(sent);
    let mut watching = true;
    let answered = std::future::poll_fn(|cx| {
        if let Poll::Ready(answered) = sent.as_mut().poll(cx) {
            return Poll::Ready(Some(answered));
        }
        // Once the connection says it is ready, it is no longer watched
        // (its answer is on its way).
        if watching {
            match sender.poll_ready(cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(())) => watching = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await;
    let answered = match answered {
        Some(answered) => answered,
        None => match tokio::time::timeout(CLOSING, sent).await {
            Ok(answered) => answered,
            Err(_) => {
                let closed = std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the upstream connection closed under the request",
                );
                return Err((None, closed.into()));
            }
        },
    };
    answered.map_err(|mut failed| (failed.take_message(), failed.into_error().into()))
}

/// How long a request on a connection that closed under it may still be
/// answered or given back; in the tests it is at once.
const CLOSING: Duration = Duration::from_millis(100);

/// What the shared pool does to a request on an HTTP/1 connection: the
/// target in origin form (`/path?query`), and a `Host` if it had none.
fn origin_form(req: &mut Request<Body>) {
    if req.method() == Method::CONNECT {
        return;
    }
    if !req.headers().contains_key(header::HOST)
        && let Some(host) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, host);
    }
    let pq = req.uri().path_and_query().cloned();
    *req.uri_mut() = match pq {
        Some(pq) if pq.as_str() != "/" => Uri::from(pq),
        _ => Uri::from_static("/"),
    };
}
