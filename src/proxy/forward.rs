//! Forwarding an admitted request: the upstream client, header hygiene
//! (hop-by-hop stripping, identity headers, X-Forwarded-*), streaming bodies
//! both ways, and protocol upgrades (WebSocket) as tunnels.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
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
use super::tunnel::Upgrade;
use crate::config::UpstreamConfig;
use crate::policy::Grant;
use crate::snapshot::Snapshot;
use crate::text::write_ip;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

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
}

impl ForwardError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Connect(_) | Self::Protocol(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect(_) => "upstream_unreachable",
            Self::Protocol(_) => "upstream_protocol_error",
            Self::Timeout(_) => "upstream_timeout",
            Self::BodyTooLarge => "body_too_large",
        }
    }
}

/// The pooled upstream client. Cloning shares the pool.
#[derive(Clone)]
pub struct Upstream {
    client: Client<WithoutInfo<HttpsConnector<HttpConnector>>, Body>,
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
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(cfg.http2)
            .build(WithoutInfo(connector));
        Ok(Self {
            client,
            response_timeout: cfg.response_timeout,
            version: if cfg.http2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            },
        })
    }
}

/// Facts about the client connection that shape forwarded headers.
#[derive(Clone)]
pub struct ClientConn {
    pub peer: SocketAddr,
    pub is_tls: bool,
    /// The peer's address as an `X-Forwarded-For` value: the same for
    /// every request on the connection, so written once.
    forwarded_for: HeaderValue,
}

impl ClientConn {
    pub fn new(peer: SocketAddr, is_tls: bool) -> Self {
        let mut text = Vec::with_capacity(39);
        write_ip(&mut text, peer.ip());
        Self {
            peer,
            is_tls,
            // An address's text is always a valid value; RFC 7239's
            // "unknown" rather than a panic if that ever changed.
            forwarded_for: HeaderValue::from_maybe_shared(Bytes::from(text))
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        }
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
        let is_upgrade = is_upgrade_request(&req);
        let client_upgrade = is_upgrade.then(|| hyper::upgrade::on(&mut req));
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

        let upgrade_proto = if is_upgrade {
            parts.headers.get(header::UPGRADE).cloned()
        } else {
            None
        };
        strip_hop_by_hop(&mut parts.headers);
        if let Some(proto) = upgrade_proto {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto);
            parts.version = Version::HTTP_11;
        } else {
            parts.version = upstream.version;
        }
        if !grant.route().forwards_authorization() {
            // Why: the token is for us; the upstream must not be able to replay it.
            parts.headers.remove(header::AUTHORIZATION);
        }
        set_identity_headers(&mut parts.headers, snapshot, grant);
        set_forwarded_headers(&mut parts.headers, snapshot, conn, original_host.as_ref());
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        if let Some(host) = original_host {
            parts.headers.insert(header::HOST, host);
        }

        let outbound = Request::from_parts(parts, body);
        let started = Instant::now();
        let mut resp = match tokio::time::timeout(
            upstream.response_timeout,
            upstream.client.request(outbound),
        )
        .await
        {
            Err(_) => return Err(ForwardError::Timeout(upstream.response_timeout)),
            Ok(Err(e)) if e.is_connect() => {
                return Err(ForwardError::Connect(crate::telemetry::error_chain(&e)));
            }
            Ok(Err(e)) if caused_by::<LengthLimitError>(&e) => {
                return Err(ForwardError::BodyTooLarge);
            }
            Ok(Err(e)) => return Err(ForwardError::Protocol(crate::telemetry::error_chain(&e))),
            Ok(Ok(resp)) => resp,
        };
        let elapsed = started.elapsed();

        let mut upgrade = None;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client) = client_upgrade {
                upgrade = Some(Upgrade {
                    client,
                    upstream: hyper::upgrade::on(&mut resp),
                });
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

/// Whether `T` is anywhere in `e`'s chain of sources.
fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && connection_tokens(req.headers()).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including every header
/// named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let hop_by_hop = [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
        &header::PROXY_AUTHENTICATE,
    ];
    // Why: most messages carry none of them, and looking at each of their
    // few headers once costs less than nine removals by name (each hashes
    // the name). `Connection` is among them, so nothing it names is missed.
    if !headers.keys().any(|name| hop_by_hop.contains(&name)) {
        return;
    }
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in hop_by_hop {
        headers.remove(name);
    }
}

/// Sets the identity headers from the verified claims, replacing every
/// inbound copy, and removes the inbound copies of those it does not set
/// (all of them on a public route).
fn set_identity_headers(headers: &mut HeaderMap, snapshot: &Snapshot, grant: &Grant) {
    let names = &snapshot.identity_headers;
    let claims = grant.claims();
    let shared = claims.map(|c| c.profile_headers());
    let subject = claims
        .and_then(|c| c.principal())
        .and_then(|p| HeaderValue::from_str(p).ok());
    // Why: a client must never be able to send its own identity upstream.
    // `insert` replaces every value the client sent under the name.
    let mut set = |name: &HeaderName, value: Option<HeaderValue>| match value {
        Some(v) => {
            headers.insert(name.clone(), v);
        }
        None => {
            headers.remove(name);
        }
    };
    set(&names.subject, subject);
    set(&names.tenant, shared.and_then(|h| h.tenant.clone()));
    set(&names.client_app, shared.and_then(|h| h.client_app.clone()));
    set(&names.scopes, shared.and_then(|h| h.scopes.clone()));
    set(&names.roles, shared.and_then(|h| h.roles.clone()));
}

/// X-Forwarded-For/-Proto/-Host: set by us, replacing a client's values,
/// unless the peer is a configured trusted proxy (then the chain grows).
fn set_forwarded_headers(
    headers: &mut HeaderMap,
    snapshot: &Snapshot,
    conn: &ClientConn,
    host: Option<&HeaderValue>,
) {
    let trusted = is_trusted(&snapshot.trusted_proxies, conn.peer.ip());
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if trusted => {
            let mut chain = Vec::with_capacity(prior.len() + 2 + conn.forwarded_for.len());
            chain.extend_from_slice(prior.as_bytes());
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(conn.forwarded_for.as_bytes());
            HeaderValue::from_maybe_shared(Bytes::from(chain)).ok()
        }
        _ => Some(conn.forwarded_for.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if conn.is_tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => headers.insert(X_FORWARDED_HOST.clone(), h.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
}

pub(super) fn is_trusted(proxies: &[ipnet::IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

/// A static JSON error for 502/504 (and 413 for a body cut at the limit):
/// no internal detail.
pub fn error_response(e: &ForwardError, request_id: &HeaderValue) -> Response<Body> {
    let body = match e {
        ForwardError::Timeout(_) => {
            r#"{"error":{"code":"upstream_timeout","message":"The upstream did not answer in time."}}"#
        }
        ForwardError::BodyTooLarge => crate::rejection::body::BODY_TOO_LARGE,
        _ => r#"{"error":{"code":"bad_gateway","message":"The upstream could not be reached."}}"#,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-portcullis-subject, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-portcullis-subject", HeaderValue::from_static("spoof"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));

        // Each alone is found (the pass that skips clean messages).
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "proxy-authenticate",
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
    }
}
