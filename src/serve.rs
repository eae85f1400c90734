//! The accept loop: TCP, optional TLS (ALPN `h2`/`http/1.1`), HTTP/1.1 and
//! HTTP/2 (h2c prior knowledge included) on one port, upgrades allowed,
//! graceful drain on shutdown. Timeouts live here, not in the pipeline.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::body::Body;
use crate::config::Limits;
use crate::metrics::{Metrics, OpenConnection};
use crate::shutdown::stopped;
use crate::upstream::ClientConn;

/// HTTP/2 streams the client opened and reset before we accepted them,
/// queued at once, beyond which the connection is closed with GOAWAY.
const PENDING_RESETS: usize = 20;
/// Streams we reset for the client's protocol errors, over a connection's
/// life, beyond which it is closed with GOAWAY.
const ERROR_RESETS: usize = 1024;

/// Connection-level settings.
#[derive(Clone)]
pub struct ServeSettings {
    pub client_header_timeout: Duration,
    pub idle_timeout: Duration,
    pub limits: Limits,
    /// HTTP/2 and upgrades on; the admin port turns them off.
    pub is_main: bool,
    /// Counts open connections by protocol (the main listener).
    pub metrics: Option<Arc<Metrics>>,
}

/// Accepts connections until `shutdown` fires, then waits for open
/// connections to finish their requests, or for `cut` (the drain timeout,
/// kept by the caller) to end them.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    handler: H,
    settings: ServeSettings,
    mut shutdown: watch::Receiver<bool>,
    cut: CancellationToken,
) where
    H: Fn(Request<Incoming>, ClientConn) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let open = Arc::new(OpenConnections::default());
    let connections = TaskTracker::new();
    let builder = Arc::new(builder(&settings));
    // Why: past the limit, new connections wait in the kernel's backlog
    // rather than each taking a task, buffers and a descriptor here.
    let slots = Arc::new(Semaphore::new(settings.limits.max_connections));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stopped(&mut shutdown) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let builder = builder.clone();
        let open = open.clone();
        let tls = tls.clone();
        let header_timeout = settings.client_header_timeout;
        let counted = settings.metrics.clone().map(|metrics| {
            Arc::new(ConnectionGauge {
                metrics,
                open: OnceLock::new(),
            })
        });
        connections.spawn(async move {
            let _slot = slot;
            let is_tls = tls.is_some();
            let conn_info = ClientConn::new(peer, is_tls);
            // Why: what the connection holds (its upstream connection) is
            // let go before it leaves the gauge, so whoever sees the gauge
            // fall sees that too (`an_http1_client_connection_holds_one_upstream_connection_and_passes_it_on`).
            let (held, gauge) = (conn_info.held.clone(), counted.clone());
            let service = service_fn(move |req: Request<Incoming>| {
                if let Some(c) = &counted {
                    c.saw(req.version());
                }
                handler(req, conn_info.clone())
            });
            let result = match tls {
                None => {
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    open.join().serve(conn, |c| c.graceful_shutdown()).await
                }
                Some(acceptor) => {
                    // Why: the handshake is bounded like a request header, so a
                    // client cannot hold a socket open without speaking.
                    let tls_stream =
                        match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                    open.join().serve(conn, |c| c.graceful_shutdown()).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(held);
            drop(gauge);
        });
    }
    drop(listener);
    open.raise(Signal::Drain);
    connections.close();
    tokio::select! {
        () = connections.wait() => {}
        () = cut.cancelled() => {
            open.raise(Signal::Cut);
            connections.wait().await;
        }
    }
}

/// What open connections are told, in the order it can happen (a later
/// signal is a larger number and is never taken back).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Signal {
    Serve = 0,
    /// Finish the request in flight, then close (hyper's graceful shutdown).
    Drain = 1,
    /// The drain timeout is over: end now.
    Cut = 2,
}

impl Signal {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Serve,
            1 => Self::Drain,
            _ => Self::Cut,
        }
    }
}

/// The listener's open connections, to drain and cut them at shutdown.
///
/// Why not hyper-util's graceful watcher plus a cancellation token: a
/// connection's future is polled several times per request, and each poll
/// polled both (a watch channel and a token, each a lock), a measurable
/// share of a request's CPU on a public route. Here a poll reads
/// one atomic, and takes a lock only when the task's waker changes (for a
/// tokio task, on its first poll).
#[derive(Default)]
struct OpenConnections {
    inner: Mutex<OpenInner>,
}

#[derive(Default)]
struct OpenInner {
    /// The signal so far: a connection that joins later starts from it.
    signal: u8,
    next_id: u64,
    members: HashMap<u64, Arc<Mailbox>>,
}

/// One connection's signal and the waker of the task that serves it.
struct Mailbox {
    signal: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Mailbox {
    fn raise(&self, signal: Signal) {
        self.signal.fetch_max(signal as u8, Ordering::Release);
        if let Some(w) = &*self.waker.lock().unwrap_or_else(PoisonError::into_inner) {
            w.wake_by_ref();
        }
    }
}

impl OpenConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn join(self: &Arc<Self>) -> Registration {
        // Under the lock: a signal raised meanwhile either is read here or
        // reaches the new mailbox.
        let mut inner = self.lock();
        let mailbox = Arc::new(Mailbox {
            signal: AtomicU8::new(inner.signal),
            waker: Mutex::new(None),
        });
        let id = inner.next_id;
        inner.next_id += 1;
        inner.members.insert(id, mailbox.clone());
        Registration {
            open: self.clone(),
            id,
            mailbox,
            registered: None,
        }
    }

    fn raise(&self, signal: Signal) {
        let mut inner = self.lock();
        inner.signal = inner.signal.max(signal as u8);
        for mailbox in inner.members.values() {
            mailbox.raise(signal);
        }
    }
}

/// A connection's membership in [`OpenConnections`]; leaving it on drop.
struct Registration {
    open: Arc<OpenConnections>,
    id: u64,
    mailbox: Arc<Mailbox>,
    /// The waker last stored in the mailbox.
    registered: Option<Waker>,
}

impl Registration {
    /// Serves `conn` until it ends, draining it with `drain` when told to
    /// and dropping it when cut.
    async fn serve<C, E>(mut self, conn: C, drain: fn(Pin<&mut C>)) -> Result<(), E>
    where
        C: Future<Output = Result<(), E>>,
    {
        let mut conn = std::pin::pin!(conn);
        let mut draining = false;
        std::future::poll_fn(|cx| {
            match self.signal(cx) {
                Signal::Serve => {}
                Signal::Drain if draining => {}
                Signal::Drain => {
                    draining = true;
                    drain(conn.as_mut());
                }
                Signal::Cut => return Poll::Ready(Ok(())),
            }
            conn.as_mut().poll(cx)
        })
        .await
    }

    /// The signal, after making sure that this task is woken by the next.
    fn signal(&mut self, cx: &Context<'_>) -> Signal {
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            let waker = cx.waker().clone();
            *self
                .mailbox
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(waker.clone());
            self.registered = Some(waker);
        }
        // Read after the waker is stored: a signal raised before that is
        // seen here, one raised after it wakes the task.
        Signal::from_u8(self.mailbox.signal.load(Ordering::Acquire))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.open.lock().members.remove(&self.id);
    }
}

/// One connection's entry in `gateway_open_connections`, labelled by the
/// protocol of its first request.
struct ConnectionGauge {
    metrics: Arc<Metrics>,
    open: OnceLock<OpenConnection>,
}

impl ConnectionGauge {
    fn saw(&self, version: Version) {
        self.open.get_or_init(|| {
            self.metrics.connection(if version == Version::HTTP_2 {
                "http2"
            } else {
                "http1"
            })
        });
    }
}

fn builder(settings: &ServeSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let limits = &settings.limits;
    // Over the header limits, hyper answers 431 (and 414 past its own URI
    // ceiling) and closes the connection; the request never reaches us.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.client_header_timeout)
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.idle_timeout / 2)
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        // Rapid reset (CVE-2023-44487): a client that opens streams and
        // cancels them faster than we finish them gets GOAWAY.
        .max_pending_accept_reset_streams(PENDING_RESETS)
        .max_local_error_reset_streams(ERROR_RESETS);
    if !settings.is_main {
        builder = builder.http1_only();
    }
    builder
}

/// Binds a listener, with the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that is idle until drained, then ends at once; or, if
    /// `stubborn`, never ends by itself.
    struct Idle {
        drained: bool,
        stubborn: bool,
    }

    impl Future for Idle {
        type Output = Result<(), ()>;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if self.drained && !self.stubborn {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    fn drain(conn: Pin<&mut Idle>) {
        conn.get_mut().drained = true;
    }

    fn serving(
        open: &Arc<OpenConnections>,
        stubborn: bool,
    ) -> tokio::task::JoinHandle<Result<(), ()>> {
        let member = open.join();
        tokio::spawn(member.serve(
            Idle {
                drained: false,
                stubborn,
            },
            drain,
        ))
    }

    async fn ends(task: tokio::task::JoinHandle<Result<(), ()>>) {
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(
            matches!(ended, Ok(Ok(Ok(())))),
            "the connection did not end"
        );
    }

    #[tokio::test]
    async fn the_drain_reaches_an_idle_connection_and_wakes_it() {
        let open = Arc::new(OpenConnections::default());
        let task = serving(&open, false);
        // Polled once (and its waker stored) before the drain.
        tokio::task::yield_now().await;
        open.raise(Signal::Drain);
        ends(task).await;
        assert!(open.lock().members.is_empty(), "an ended connection leaves");
    }

    #[tokio::test]
    async fn a_connection_that_ignores_the_drain_is_cut() {
        let open = Arc::new(OpenConnections::default());
        let task = serving(&open, true);
        tokio::task::yield_now().await;
        open.raise(Signal::Drain);
        tokio::task::yield_now().await;
        assert!(!task.is_finished(), "draining does not end it by force");
        open.raise(Signal::Cut);
        ends(task).await;
    }

    #[tokio::test]
    async fn a_connection_that_joins_during_the_drain_is_drained_at_once() {
        let open = Arc::new(OpenConnections::default());
        open.raise(Signal::Drain);
        ends(serving(&open, false)).await;
        open.raise(Signal::Cut);
        ends(serving(&open, true)).await;
    }

    #[test]
    fn a_signal_never_goes_back() {
        let open = Arc::new(OpenConnections::default());
        let member = open.join();
        open.raise(Signal::Cut);
        open.raise(Signal::Drain);
        assert!(Signal::from_u8(member.mailbox.signal.load(Ordering::Acquire)) == Signal::Cut);
        assert!(Signal::from_u8(open.join().mailbox.signal.load(Ordering::Acquire)) == Signal::Cut);
    }
}
