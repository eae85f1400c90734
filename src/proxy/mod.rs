//! The gateway service: one request, one snapshot, one outcome, observed
//! once. [`Gateway::handle`] is what `serve` calls for every request.

mod forward;
pub mod pipeline;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tracing::Instrument;

pub use forward::{ClientConn, ForwardError, Upstream, strip_hop_by_hop};

use crate::metrics::{DecisionLabel, Metrics};
use crate::rejection::Rejection;
use crate::revocation::Revocations;
use crate::snapshot::Snapshot;
use crate::token::CacheUse;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body: a static rejection or a streamed upstream body.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body from bytes in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Shared handles for request handling. Cloning the `Arc` is all a
/// connection needs.
pub struct Gateway {
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    upstream: Upstream,
    revocations: Arc<Revocations>,
}

impl Gateway {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        upstream: Upstream,
        revocations: Arc<Revocations>,
    ) -> Self {
        Self {
            snapshot,
            metrics,
            upstream,
            revocations,
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: ClientConn) -> Response<Body> {
        let request_id = request_id(&req);
        let span =
            tracing::debug_span!("request", request_id = ?request_id, method = %req.method());
        self.handle_in_span(req, conn, request_id)
            .instrument(span)
            .await
    }

    async fn handle_in_span(
        &self,
        req: Request<Incoming>,
        conn: ClientConn,
        request_id: HeaderValue,
    ) -> Response<Body> {
        // One config generation per request, held to the end.
        let snapshot = self.snapshot.load_full();
        let started = Instant::now();
        // Decremented on drop, so a client that disconnects mid-request is
        // not counted forever.
        let _in_flight = InFlight::enter(self.metrics.in_flight());

        let (parts, body) = req.into_parts();
        let revoked = self.revocations.current().clone();
        let circumstances = pipeline::Circumstances {
            client_ip: pipeline::client_ip(&parts, conn, &snapshot.trusted_proxies),
            now: std::time::SystemTime::now(),
            revoked: &revoked,
        };
        let (decision, admitted) = pipeline::admit(&snapshot, &parts, circumstances).await;
        if let Some(cache) = decision.cache.filter(|c| *c != CacheUse::Off) {
            self.metrics.token_cache(cache == CacheUse::Hit);
        }
        for outcome in &decision.policies {
            self.metrics
                .policy_result(&outcome.policy, outcome.result.as_str());
        }
        let route_label = decision.route.as_ref().map_or("unmatched", |r| r.name());
        let (resp, label, reason) = match (admitted, &decision.verdict) {
            (Some(admitted), _) => {
                // Only a path that normalization changed needs rebuilding.
                let rewritten = match admitted.path {
                    std::borrow::Cow::Owned(p) => Some(p),
                    std::borrow::Cow::Borrowed(_) => None,
                };
                let grant = admitted.grant;
                let req = Request::from_parts(parts, body);
                match forward::forward(
                    &self.upstream,
                    &snapshot,
                    req,
                    &grant,
                    rewritten,
                    conn,
                    &request_id,
                )
                .await
                {
                    Ok((resp, upstream_elapsed)) => {
                        self.metrics
                            .upstream_answered(grant.route().name(), upstream_elapsed);
                        (resp, DecisionLabel::Allow, decision.reason())
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, route = grant.route().name(), "forwarding failed");
                        (
                            forward::error_response(&e, &request_id),
                            DecisionLabel::Error,
                            e.reason(),
                        )
                    }
                }
            }
            (None, Err(rejection)) => {
                let mut resp = snapshot
                    .challenges
                    .respond(rejection, decision.route.as_deref())
                    .map(full);
                resp.headers_mut()
                    .insert(forward::X_REQUEST_ID.clone(), request_id);
                let label = if rejection.status().is_server_error() {
                    DecisionLabel::Error
                } else {
                    DecisionLabel::Deny
                };
                (resp, label, decision.reason())
            }
            (None, Ok(())) => {
                // Unreachable by construction: no admission means a rejection.
                let rejection = Rejection::Denied(crate::policy::Denial::NoRoute);
                (
                    snapshot.challenges.respond(&rejection, None).map(full),
                    DecisionLabel::Deny,
                    rejection.reason(),
                )
            }
        };
        self.metrics
            .request(route_label, label, reason, started.elapsed());
        resp
    }
}

/// Counts one request in flight for as long as it lives.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The client's `x-request-id` when it is short printable ASCII, else a new
/// random one.
fn request_id<B>(req: &Request<B>) -> HeaderValue {
    req.headers()
        .get(&forward::X_REQUEST_ID)
        .filter(|v| {
            v.len() <= 128 && !v.is_empty() && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let id = format!("{:032x}", fastrand::u128(..));
            HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"))
        })
}
