//! Forwarding an admitted request: the upstream client (and the one retry a
//! request may get), the outbound request built from the inbound one
//! (header hygiene is `headers`), streaming bodies both ways, and protocol
//! upgrades a route allows, as tunnels.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use http_body_util::LengthLimitError;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::Body;
use super::connect::WithoutInfo;
use super::headers::{
    ClientConn, X_REQUEST_ID, connection_tokens, is_trusted, set_forwarded_headers,
    set_identity_headers, strip_hop_by_hop,
};
use super::inbound::ClientBodyError;
use super::tunnel::Upgrade;
use crate::config::UpstreamConfig;
use crate::policy::{Grant, Route};
use crate::snapshot::Snapshot;

/// Why forwarding failed; never shown to the client beyond its status.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("upstream unreachable: {0}")]
    Connect(String),
    #[error("upstream protocol error: {0}")]
    Protocol(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The client's body passed the route's `max_body_bytes` while it was
    /// being sent.
    #[error("request body larger than the route's max_body_bytes")]
    BodyTooLarge,
    /// The client broke its body's framing, or left while sending it.
    #[error("{0}")]
    ClientBody(String),
}

impl ForwardError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Connect(_) | Self::Protocol(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect(_) => "upstream_unreachable",
            Self::Protocol(_) => "upstream_protocol_error",
            Self::Timeout(_) => "upstream_timeout",
            Self::BodyTooLarge => "body_too_large",
            Self::ClientBody(_) => "bad_request_body",
        }
    }
}

/// The pooled upstream client. Cloning shares the pool.
#[derive(Clone)]
pub struct Upstream {
    client: Client<WithoutInfo<HttpsConnector<HttpConnector>>, Body>,
    /// The same, keeping no idle connection: for the one retry that must
    /// not meet another connection the upstream is closing.
    fresh: Client<WithoutInfo<HttpsConnector<HttpConnector>>, Body>,
    response_timeout: Duration,
    version: Version,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, crate::tls::TlsError> {
        let tls = crate::tls::client_config(cfg.ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_nodelay(true);
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if cfg.http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .retry_canceled_requests(true)
            .http2_only(cfg.http2);
        let client = builder.build(WithoutInfo(connector.clone()));
        let fresh = builder
            .pool_max_idle_per_host(0)
            .build(WithoutInfo(connector));
        Ok(Self {
            client,
            fresh,
            response_timeout: cfg.response_timeout,
            version: if cfg.http2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            },
        })
    }
}

/// The upstream's answer to a forwarded request.
pub struct Forwarded {
    /// Streaming; the upstream's hop-by-hop headers removed.
    pub response: Response<Body>,
    /// Time to the upstream's response headers.
    pub elapsed: Duration,
    /// Set when the upstream switched protocols: the tunnel to run.
    pub upgrade: Option<Upgrade>,
}

/// Forwards the request and returns the upstream's response, streaming.
/// (Not an `async fn`: see `Gateway::handle`.)
#[allow(clippy::manual_async_fn)] // reason: its arguments stored once, not twice (see Gateway::handle)
pub fn forward(
    upstream: &Upstream,
    snapshot: &Snapshot,
    mut req: Request<Body>,
    grant: &Grant,
    rewritten_path: Option<String>,
    conn: &ClientConn,
    request_id: &HeaderValue,
) -> impl Future<Output = Result<Forwarded, ForwardError>> {
    async move {
        // Why: only a protocol switch the route allows is forwarded, so a
        // tunnel never carries requests the gateway cannot see (an h2c
        // upgrade would) (`an_h2c_upgrade_is_never_forwarded_so_nothing_passes_unchecked`).
        let offered = allowed_upgrade(&req, grant.route());
        let client_upgrade = offered.is_some().then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();

        // The request's own path and query (a refcount clone) unless
        // normalization rewrote the path.
        let pq = match (rewritten_path, parts.uri.query()) {
            (None, _) => parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            (Some(path), None) => {
                PathAndQuery::try_from(path).map_err(|e| ForwardError::Protocol(e.to_string()))?
            }
            (Some(path), Some(q)) => PathAndQuery::try_from(format!("{path}?{q}"))
                .map_err(|e| ForwardError::Protocol(e.to_string()))?,
        };
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        parts.uri = Uri::builder()
            .scheme(snapshot.upstream_scheme.clone())
            .authority(snapshot.upstream_authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| ForwardError::Protocol(e.to_string()))?;

        strip_hop_by_hop(&mut parts.headers);
        snapshot.inbound_strip.apply(&mut parts.headers);
        if let Some(proto) = &offered {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
            parts.version = Version::HTTP_11;
        } else {
            parts.version = upstream.version;
        }
        if !grant.route().forwards_authorization() {
            // Why: the token is for us; the upstream must not be able to replay it.
            parts.headers.remove(header::AUTHORIZATION);
        }
        set_identity_headers(&mut parts.headers, &snapshot.identity_headers, grant);
        let trusted = is_trusted(&snapshot.trusted_proxies, conn.peer.ip());
        set_forwarded_headers(&mut parts.headers, trusted, conn, original_host.as_ref());
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        if let Some(host) = original_host {
            parts.headers.insert(header::HOST, host);
        }

        // Kept only for a request that may be sent twice (see `send`).
        let replay = is_replayable(&parts.method, &body).then(|| parts.clone());
        let outbound = Request::from_parts(parts, body);
        let started = Instant::now();
        let mut resp =
            match tokio::time::timeout(upstream.response_timeout, send(upstream, outbound, replay))
                .await
            {
                Err(_) => return Err(ForwardError::Timeout(upstream.response_timeout)),
                Ok(Err(e)) if e.is_connect() => {
                    return Err(ForwardError::Connect(crate::telemetry::error_chain(&e)));
                }
                Ok(Err(e)) if caused_by::<LengthLimitError>(&e) => {
                    return Err(ForwardError::BodyTooLarge);
                }
                // Why: a client's broken body is the client's fault: a 400 that
                // feeds no upstream-failure alert (`broken_chunked_framing_is_the_clients_fault`).
                Ok(Err(e)) if caused_by::<ClientBodyError>(&e) => {
                    return Err(ForwardError::ClientBody(crate::telemetry::error_chain(&e)));
                }
                Ok(Err(e)) => {
                    return Err(ForwardError::Protocol(crate::telemetry::error_chain(&e)));
                }
                Ok(Ok(resp)) => resp,
            };
        let elapsed = started.elapsed();

        let mut upgrade = None;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // Why: a switch the client did not ask for, or to a protocol it
            // did not offer (all it offers, the route allows), would hand
            // the upstream a tunnel.
            let chosen = resp
                .headers()
                .get(header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .map(protocol_name);
            let was_offered = |p: &str| {
                offered
                    .as_ref()
                    .and_then(|o| o.to_str().ok())
                    .is_some_and(|o| {
                        o.split(',')
                            .any(|q| protocol_name(q).eq_ignore_ascii_case(p))
                    })
            };
            match client_upgrade {
                Some(client) if chosen.is_some_and(was_offered) => {
                    upgrade = Some(Upgrade {
                        client,
                        upstream: hyper::upgrade::on(&mut resp),
                    });
                }
                _ => {
                    return Err(ForwardError::Protocol(
                        "the upstream switched to a protocol that was not asked for".to_owned(),
                    ));
                }
            }
        } else {
            strip_hop_by_hop(resp.headers_mut());
        }
        resp.headers_mut()
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        Ok(Forwarded {
            response: resp.map(|b| b.map_err(Into::into).boxed()),
            elapsed,
            upgrade,
        })
    }
}

/// Sends the request on a pooled connection. A request that failed before
/// any of it was written on a reused connection is sent again by the pool
/// itself (`retry_canceled_requests`). One that was written but got no
/// answer because the upstream closed the connection (an idle connection
/// it was closing as ours arrived) is sent once more, on a fresh
/// connection, when it is `replay`able; never a request that may have
/// changed something upstream
/// (`an_upstream_that_closes_connections_at_random_costs_no_request`).
#[allow(clippy::manual_async_fn)] // reason: its arguments stored once, not twice (see Gateway::handle)
fn send(
    upstream: &Upstream,
    req: Request<Body>,
    replay: Option<http::request::Parts>,
) -> impl Future<Output = Result<Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>>
{
    async move {
        match (upstream.client.request(req).await, replay) {
            (Err(e), Some(parts)) if closed_before_answer(&e) => {
                tracing::debug!(
                    error = %crate::telemetry::error_chain(&e),
                    "the upstream closed the connection before answering: sending again on a new one"
                );
                let again = Request::from_parts(parts, super::full(Bytes::new()));
                upstream.fresh.request(again).await
            }
            (answered, _) => answered,
        }
    }
}

/// A request the gateway may send twice: idempotent (RFC 9110 §9.2.2) and
/// without a body, so that nothing of it is lost with the first attempt.
fn is_replayable(method: &http::Method, body: &Body) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) && http_body::Body::is_end_stream(body)
}

/// The upstream closed or reset the connection before a byte of its answer.
fn closed_before_answer(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    any_cause(e, |err| {
        err.downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_incomplete_message() || h.is_canceled())
            || err.downcast_ref::<std::io::Error>().is_some_and(|io| {
                matches!(io.kind(), ConnectionReset | BrokenPipe | ConnectionAborted)
            })
    })
}

/// Whether `T` is anywhere in `e`'s chain of sources.
fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    any_cause(e, |err| err.is::<T>())
}

/// Whether `e` or any error in its chain of sources is what `matches` asks.
fn any_cause(
    e: &(dyn std::error::Error + 'static),
    matches: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if matches(err) {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The `Upgrade` value of an HTTP/1.1 upgrade request whose every offered
/// protocol the route allows; `None` for any other request, which is then
/// forwarded as plain HTTP (RFC 9110 §7.8 lets a server ignore `Upgrade`).
fn allowed_upgrade<B>(req: &Request<B>, route: &Route) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11
        || !connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
    {
        return None;
    }
    let mut values = req.headers().get_all(header::UPGRADE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    let mut offered = value.to_str().ok()?.split(',').map(str::trim).peekable();
    offered.peek()?;
    offered
        .all(|p| route.allows_upgrade(protocol_name(p)))
        .then(|| value.clone())
}

/// An `Upgrade` protocol without its version: `websocket` of `websocket/13`.
fn protocol_name(protocol: &str) -> &str {
    protocol.split('/').next().unwrap_or_default().trim()
}

/// A static JSON error for 502/504 (and 413 or 400 for a body cut at the
/// limit or broken): no internal detail.
pub fn error_response(e: &ForwardError, request_id: &HeaderValue) -> Response<Body> {
    let body = crate::rejection::body::forward(e);
    let mut resp = Response::new(super::full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = e.status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    resp
}
