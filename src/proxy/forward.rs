//! Forwarding an admitted request: the outbound request built from the
//! inbound one (header hygiene is `upstream::headers`), sent on the
//! upstream connection the client connection holds (or the shared pool),
//! streaming bodies both ways, and protocol upgrades a route allows, as
//! tunnels.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use http_body_util::LengthLimitError;

use super::inbound::ClientBodyError;
use super::tunnel::Upgrade;
use crate::body::{Body, full};
use crate::config::HostHeader;
use crate::policy::{Grant, Route};
use crate::snapshot::{Snapshot, Target};
use crate::telemetry::caused_by;
use crate::upstream::ForwardError;
use crate::upstream::headers::{
    ClientConn, X_REQUEST_ID, connection_tokens, is_trusted, set_forwarded_headers,
    set_identity_headers, strip_hop_by_hop,
};

/// The upstream's answer to a forwarded request.
pub struct Forwarded {
    /// Streaming; the upstream's hop-by-hop headers removed.
    pub response: Response<Body>,
    /// Time to the upstream's response headers.
    pub elapsed: Duration,
    /// Set when the upstream switched protocols: the tunnel to run.
    pub upgrade: Option<Upgrade>,
    /// The gateway's own credential it was sent: its name, and the
    /// token's digest.
    pub credential: Option<(Arc<str>, Arc<str>)>,
}

/// Forwards the request and returns the upstream's response, streaming.
/// (Not an `async fn`: see `Gateway::handle`.)
#[allow(clippy::manual_async_fn)] // reason: its arguments stored once, not twice (see Gateway::handle)
pub fn forward(
    target: &Target,
    snapshot: &Snapshot,
    mut req: Request<Body>,
    grant: &Grant,
    rewritten_path: Option<String>,
    conn: &ClientConn,
    request_id: &HeaderValue,
) -> impl Future<Output = Result<Forwarded, ForwardError>> {
    async move {
        let upstream = &target.client;
        // Why: only a protocol switch the route allows is forwarded, so a
        // tunnel never carries requests the gateway cannot see (an h2c
        // upgrade would) (`an_h2c_upgrade_is_never_forwarded_so_nothing_passes_unchecked`).
        let offered = allowed_upgrade(&req, grant.route());
        let client_upgrade = offered.is_some().then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        let inbound_version = parts.version;

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
            .scheme(target.scheme.clone())
            .authority(target.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| ForwardError::Protocol(e.to_string()))?;

        strip_hop_by_hop(&mut parts.headers);
        target.strip.apply(&mut parts.headers);
        if let Some(proto) = &offered {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
            parts.version = Version::HTTP_11;
        } else {
            parts.version = upstream.version();
        }
        // An on-behalf-of exchange is for the caller's own token.
        let caller = target
            .credential
            .as_ref()
            .filter(|c| c.config().source.is_on_behalf_of())
            .and_then(|_| parts.headers.get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned());
        if !grant.route().forwards_authorization() || target.credential.is_some() {
            // Why: the token is for us; the upstream must not be able to replay it.
            parts.headers.remove(header::AUTHORIZATION);
        }
        let mut presented = None;
        if let Some(credential) = &target.credential {
            // The gateway's own token in place of the caller's, and no key
            // the caller sent (only ever on an allowed request: forwarding
            // needs a grant).
            parts.headers.remove("api-key");
            let token = match (&caller, grant.claims()) {
                (Some(caller), Some(claims)) => {
                    let expires = std::time::UNIX_EPOCH + Duration::from_secs(claims.exp());
                    credential.on_behalf_of(caller, expires).await?
                }
                _ => credential.authorization().await?,
            };
            parts.headers.insert(header::AUTHORIZATION, token.header);
            presented = Some((credential.name.clone(), token.digest));
        }
        set_identity_headers(&mut parts.headers, &snapshot.identity_headers, grant);
        let trusted = is_trusted(&snapshot.trusted_proxies, conn.peer.ip());
        set_forwarded_headers(&mut parts.headers, trusted, conn, original_host.as_ref());
        parts
            .headers
            .insert(X_REQUEST_ID.clone(), request_id.clone());
        // A service on its own name (an Azure resource) is asked by that
        // name; a sidecar's local server sees the name the client used.
        let host = match target.host_header {
            HostHeader::Client => original_host,
            HostHeader::Upstream => HeaderValue::from_str(target.authority.as_str()).ok(),
        };
        if let Some(host) = host {
            parts.headers.insert(header::HOST, host);
        }

        // Kept only for a request that may be sent twice (see `send`).
        let replay = is_replayable(&parts.method, &body).then(|| parts.clone());
        // An HTTP/1 client sends one request at a time: its connection's own
        // upstream connection serves it, unless it becomes a tunnel.
        let held = (inbound_version < Version::HTTP_2 && offered.is_none()).then_some(&*conn.held);
        let outbound = Request::from_parts(parts, body);
        let started = Instant::now();
        let mut resp = match tokio::time::timeout(
            upstream.response_timeout(),
            upstream.send(outbound, replay, held),
        )
        .await
        {
            Err(_) => return Err(ForwardError::Timeout(upstream.response_timeout())),
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
                    let websocket = chosen.is_some_and(|p| p.eq_ignore_ascii_case("websocket"));
                    upgrade = Some(Upgrade {
                        client,
                        upstream: hyper::upgrade::on(&mut resp),
                        websocket,
                        lifetime: None,
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
            credential: presented,
        })
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
    let mut resp = Response::new(full(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = e.status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    resp
}
