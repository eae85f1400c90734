//! The accept loop: TCP, optional TLS (ALPN `h2`/`http/1.1`), HTTP/1.1 and
//! HTTP/2 (h2c prior knowledge included) on one port, upgrades allowed,
//! graceful drain on shutdown. Timeouts live here, not in the pipeline.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::metrics::{Metrics, OpenConnection};
use crate::proxy::{Body, ClientConn};

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
    let graceful = GracefulShutdown::new();
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
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let header_timeout = settings.client_header_timeout;
        let cut = cut.clone();
        let counted = settings.metrics.clone().map(|metrics| {
            Arc::new(Counted {
                metrics,
                open: OnceLock::new(),
            })
        });
        tokio::spawn(async move {
            let _slot = slot;
            let is_tls = tls.is_some();
            let conn_info = ClientConn::new(peer, is_tls);
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
                    tokio::select! {
                        r = watcher.watch(conn.into_owned()) => r,
                        () = cut.cancelled() => Ok(()),
                    }
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
                    tokio::select! {
                        r = watcher.watch(conn.into_owned()) => r,
                        () = cut.cancelled() => Ok(()),
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One connection's entry in `gateway_open_connections`, labelled by the
/// protocol of its first request.
struct Counted {
    metrics: Arc<Metrics>,
    open: OnceLock<OpenConnection>,
}

impl Counted {
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

/// Resolves when `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Binds a listener, with the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}
