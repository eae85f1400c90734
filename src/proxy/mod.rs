//! The gateway service: one request, one snapshot, one outcome, observed
//! once (metrics, audit record). [`Gateway::handle`] is what `serve` calls
//! for every request.

mod audited;
mod forward;
mod inbound;
mod outcome;
pub mod pipeline;
mod tunnel;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT, WWW_AUTHENTICATE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::body::{Body, Watched, full};
use crate::call::Call;
use crate::upstream::headers::{self, ClientConn};

use crate::audit::{Auditor, Field, Pending, Record, RequestInfo, UpstreamInfo};
use crate::decision::Decision;
use crate::metrics::Metrics;
use crate::policy::Route;
use crate::rejection::Rejection;
use crate::revocation_file::Revocations;
use crate::snapshot::Snapshot;
use crate::streams::{Ending, EndingOf, Guarded, Lifetime, Streams, Style};
use crate::token::CacheUse;
use crate::upstream::ForwardError;
use inbound::Inbound;
use outcome::Outcome;
use pipeline::Admission;

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Shared handles for request handling. Cloning the `Arc` is all a
/// connection needs.
pub struct Gateway {
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    revocations: Arc<Revocations>,
    /// `None` when audit is off.
    auditor: Option<Auditor>,
    /// Every open exchange, for the end of its access.
    streams: Arc<Streams>,
    /// Upgraded connections, tracked so that shutdown can wait for them.
    tunnels: TaskTracker,
    /// Cancelled when shutdown cuts what the drain did not finish.
    cut: CancellationToken,
}

/// One request's surroundings: what every step of its handling reads.
struct Context<'a> {
    /// The config generation that decides it, held to the end.
    snapshot: &'a Snapshot,
    conn: &'a ClientConn,
    request_id: &'a HeaderValue,
}

impl Gateway {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        revocations: Arc<Revocations>,
        auditor: Option<Auditor>,
        streams: Arc<Streams>,
        tunnels: TaskTracker,
        cut: CancellationToken,
    ) -> Self {
        Self {
            snapshot,
            metrics,
            revocations,
            auditor,
            streams,
            tunnels,
            cut,
        }
    }

    /// The request's future, as hyper's service returns it (no wrapper
    /// around it in `serve` or `app`).
    ///
    /// Why the request path is written as `fn … -> impl Future` with an
    /// `async move` body rather than as `async fn`s: an `async fn` keeps its
    /// by-value arguments twice in its state (rust-lang/rust#62958), and each
    /// wrapping level keeps its own copy of the request and moves the whole
    /// inner future once more; written this way, the request's future is
    /// less than half the size, and cheaper to move on every poll.
    pub fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ClientConn,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static {
        let request_id = request_id(&req);
        let span = tracing::info_span!("request", request_id = request_id.to_str().unwrap_or("-"));
        self.respond(req, conn, request_id).instrument(span)
    }

    /// Never fails: every failure is an answer (the `Result` is hyper's).
    #[allow(clippy::manual_async_fn)] // reason: its arguments stored once, not twice (see Gateway::handle)
    fn respond(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ClientConn,
        request_id: HeaderValue,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> {
        async move {
            // One config generation per request, held to the end.
            let snapshot = self.snapshot.load_full();
            let started = Instant::now();
            // One reading of the wall clock: the audit record's time and the
            // time policies are evaluated at.
            let now = std::time::SystemTime::now();
            // Decremented on drop, so a client that disconnects mid-request is
            // not counted forever.
            let _in_flight = InFlight::enter(self.metrics.in_flight());

            let (parts, body) = req.into_parts();
            let client_ip = pipeline::client_ip(&parts, &conn, &snapshot.trusted_proxies);
            // Why: begun before anything can fail or be abandoned, so that
            // every request that reached us leaves exactly one record.
            let mut pending = self.auditor.as_ref().map(|a| {
                a.begin(
                    Record::new(
                        request_info(&parts, &request_id, client_ip, now),
                        snapshot.version.clone(),
                    ),
                    started,
                )
            });
            let ctx = Context {
                snapshot: &snapshot,
                conn: &conn,
                request_id: &request_id,
            };
            let (decision, outcome, ending) = match &self.auditor {
                Some(a) if a.admit().await.is_err() => {
                    // Nothing of it is read while the trail cannot record.
                    let ended = hyper::body::Body::is_end_stream(&body);
                    let mut outcome = ctx.refuse(Rejection::AuditUnavailable, None, None);
                    inbound::close_unless_read(outcome.response_mut(), parts.version, ended);
                    (Decision::pending(), outcome, None)
                }
                _ => {
                    self.admit_and_forward(&ctx, parts, body, client_ip, now, pending.as_mut())
                        .await
                }
            };
            self.observe(&decision, &outcome, started);
            let identity = decision.identity.as_deref();
            tracing::debug!(
                status = outcome.response().status().as_u16(),
                reason = outcome.reason(),
                route = decision.route.as_ref().map(|r| r.name()),
                kind = identity.map(|c| c.kind().as_str()),
                client = identity.and_then(|c| c.client_app()),
                scopes = identity.map(|c| c.scopes().join(" ")),
                roles = identity.map(|c| c.roles().join(" ")),
                "request decided"
            );
            Ok(self.answer(decision, outcome, pending, ending))
        }
    }

    /// The response, with the request's audit record (sent when its body
    /// ends) and its tunnel, if the upstream switched protocols.
    fn answer(
        &self,
        decision: Decision,
        outcome: Outcome,
        pending: Option<Pending>,
        ending: Option<EndingOf>,
    ) -> Response<Body> {
        let (label, reason) = (outcome.label(), outcome.reason());
        let (response, upstream, upgrade) = outcome.into_parts();
        let Some(mut pending) = pending else {
            if let Some(upgrade) = upgrade {
                self.spawn_tunnel(upgrade, None);
            }
            return response;
        };
        if let Some(r) = pending.record() {
            r.status = Some(response.status().as_u16());
            r.challenge = response.headers().get(WWW_AUTHENTICATE).cloned();
            r.stream = is_event_stream(&response);
            r.label = label;
            r.reason = reason;
            r.upstream = upstream;
            r.decision = Some(decision);
        }
        if let Some(upgrade) = upgrade {
            let close = pending.fork(|r| r.event = crate::audit::Event::TunnelClose);
            self.spawn_tunnel(upgrade, close);
        }
        response.map(|body| Watched::new(body, audited::Recorder::new(pending, ending)).boxed())
    }

    /// The auth pipeline, then forwarding what it admits, under the
    /// exchange's lifetime (whose ending the record reads). (Not an `async
    /// fn`: see [`Self::handle`].)
    #[allow(clippy::manual_async_fn)] // reason: its arguments stored once, not twice (see Gateway::handle)
    fn admit_and_forward<'a>(
        &'a self,
        ctx: &'a Context<'a>,
        parts: Parts,
        body: Incoming,
        client_ip: std::net::IpAddr,
        now: std::time::SystemTime,
        pending: Option<&'a mut Pending>,
    ) -> impl Future<Output = (Decision, Outcome, Option<EndingOf>)> + 'a {
        async move {
            if hyper::body::Body::is_end_stream(&body)
                && let Some((response, route)) = ctx.snapshot.resource_metadata.answer(&parts)
            {
                let mut decision = Decision::pending();
                decision.route = Some(route);
                return (decision, Outcome::Served { response }, None);
            }
            let revoked = self.revocations.current().clone();
            let circumstances = pipeline::Circumstances {
                client_ip,
                now,
                revoked: &revoked,
            };
            let Admission {
                mut decision,
                admitted,
            } = pipeline::admit(ctx.snapshot, &parts, circumstances).await;
            let body_bytes = pending
                .filter(|_| !hyper::body::Body::is_end_stream(&body))
                .map(Pending::count_bytes_in);
            let inbound = Inbound::new(body, body_bytes);
            let mut ending = None;
            let outcome = match admitted {
                Err(rejection) => {
                    let route = decision.route.as_deref();
                    ctx.refuse_unread(rejection, route, inbound, parts.version)
                        .await
                }
                // Forwarding, in the same future: each way it can end the
                // request (a body over the limit, a stage's refusal, the
                // upstream's answer or failure) reads in order here.
                Ok(admitted) => 'forward: {
                    let (grant, rewritten) = admitted.into_forwarding();
                    let version = parts.version;
                    let route = grant.route();
                    // Why: Entra exchanges user tokens only; an app's or an
                    // agent's is refused here, not sent to Entra.
                    let on_behalf_of = ctx
                        .snapshot
                        .upstream_of(route)
                        .credential
                        .as_ref()
                        .is_some_and(|c| c.config().source.is_on_behalf_of());
                    if on_behalf_of
                        && grant
                            .claims()
                            .is_some_and(|c| c.kind() != crate::token::IdentityKind::User)
                    {
                        break 'forward ctx
                            .refuse_unread(Rejection::OboNotAUser, Some(route), inbound, version)
                            .await;
                    }
                    let limit = route.max_body_bytes();
                    if limit.is_some_and(|max| declared_length(&parts).is_some_and(|n| n > max)) {
                        break 'forward ctx
                            .refuse_unread(Rejection::BodyTooLarge, Some(route), inbound, version)
                            .await;
                    }
                    let path = rewritten.as_deref().unwrap_or(parts.uri.path());
                    let facts = crate::streams::Facts {
                        claims: grant.claims().cloned(),
                        route: route.clone(),
                        method: parts.method.clone(),
                        host: pipeline::request_host(&parts).map(Box::from),
                        path: Box::from(path),
                        client_ip,
                        model: std::sync::OnceLock::new(),
                    };
                    let mut lifetime = self.streams.open(crate::streams::Admitted {
                        snapshot: ctx.snapshot,
                        facts,
                        agent_expires: decision.agent.as_ref().and_then(|a| a.expires),
                        now,
                    });
                    let ended = inbound.ended();
                    let body = inbound.boxed();
                    // A body without a length (chunked, HTTP/2) is cut at the limit:
                    // the upstream sees an aborted request, the client a 413.
                    let body = match limit {
                        Some(max) => {
                            Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX)).boxed()
                        }
                        None => body,
                    };
                    let req = Request::from_parts(parts, body);
                    let snapshot = ctx.snapshot;
                    // The AI-aware stages: inspection of the request, responders to
                    // its answer.
                    let (req, responders) = if snapshot.stages.is_empty() {
                        (req, None)
                    } else {
                        let staged = snapshot.stages.inspect(&grant, req).await;
                        // What the stages read is part of what was decided on.
                        decision.call = staged.call;
                        decision.policies.extend(staged.reports);
                        match staged.result {
                            Ok((req, responders)) => (req, Some(responders)),
                            Err(rejection) => {
                                let mut refused = ctx.refuse(rejection, Some(route), None);
                                let read = ended.is_true();
                                inbound::close_unless_read(refused.response_mut(), version, read);
                                break 'forward refused;
                            }
                        }
                    };
                    if let Some(Call::Model(call)) = &decision.call
                        && let Some(model) = &call.model
                    {
                        lifetime.set_model(model);
                    }
                    let target = snapshot.upstream_of(route);
                    let forwarding = forward::forward(
                        target,
                        snapshot,
                        req,
                        &grant,
                        rewritten,
                        ctx.conn,
                        ctx.request_id,
                    );
                    // Why: an upload, or an upstream slow to answer, does not
                    // outlive the access either.
                    let horizon = std::time::Instant::now() + target.client.response_timeout();
                    let sent = tokio::select! {
                        biased;
                        sent = forwarding => sent,
                        end = lifetime.ended_before(horizon) => {
                            lifetime.acted(&end);
                            ending = Some(lifetime.watcher());
                            let mut outcome = ctx.ended_unanswered(&end, route, &target.name);
                            inbound::close_unless_read(outcome.response_mut(), version, false);
                            break 'forward outcome;
                        }
                    };
                    let mut outcome = match sent {
                        Ok(forwarded) => {
                            let (status, elapsed) =
                                (forwarded.response.status(), forwarded.elapsed);
                            self.metrics
                                .upstream_answered(route.name(), status, elapsed);
                            let response = match responders {
                                Some(r) => r.answer(forwarded.response),
                                None => forwarded.response,
                            };
                            ending = Some(lifetime.watcher());
                            let retry = snapshot.streams.sse_retry;
                            let (response, upgrade) =
                                under(lifetime, response, forwarded.upgrade, route, retry);
                            Outcome::Forwarded {
                                response,
                                upstream: UpstreamInfo {
                                    name: target.name.clone(),
                                    credential: forwarded.credential,
                                    status: Some(status.as_u16()),
                                    duration: Some(elapsed),
                                    error: None,
                                },
                                upgrade,
                            }
                        }
                        Err(error) => {
                            tracing::debug!(error = %error, route = route.name(), "forwarding failed");
                            let capable =
                                grant.claims().is_some_and(|c| c.handles_claims_challenge());
                            match client_fault(&error, capable) {
                                // The client's body, not the upstream, ended it.
                                Some(rejection) => {
                                    let upstream = UpstreamInfo {
                                        name: target.name.clone(),
                                        credential: None,
                                        status: None,
                                        duration: None,
                                        error: Some(error.to_string()),
                                    };
                                    ctx.refuse(rejection, Some(route), Some(upstream))
                                }
                                None => {
                                    self.metrics.upstream_failed(route.name());
                                    let response = forward::error_response(&error, ctx.request_id);
                                    let upstream = target.name.clone();
                                    Outcome::Failed {
                                        response,
                                        error,
                                        upstream,
                                    }
                                }
                            }
                        }
                    };
                    // The upstream answered before the body was all sent (or it was
                    // cut at the limit, or broken): this connection is done.
                    inbound::close_unless_read(outcome.response_mut(), version, ended.is_true());
                    outcome
                }
            };
            (decision, outcome, ending)
        }
    }

    /// Metrics for one request, counted once.
    fn observe(&self, decision: &Decision, outcome: &Outcome, started: Instant) {
        if let Some(cache) = decision.cache.filter(|c| *c != CacheUse::Off) {
            self.metrics.token_cache(cache == CacheUse::Hit);
        }
        for o in &decision.policies {
            self.metrics.policy_result(&o.policy, o.result.as_str());
        }
        let route = decision.route.as_ref().map_or("unmatched", |r| r.name());
        if let Some(Call::Mcp(call)) = &decision.call {
            self.metrics
                .mcp_message(route, call.method.as_deref(), outcome.reason());
        }
        let kind = decision
            .identity
            .as_ref()
            .map_or("none", |c| c.kind().as_str());
        self.metrics.request(
            route,
            outcome.label(),
            outcome.reason(),
            kind,
            started.elapsed(),
        );
    }

    fn spawn_tunnel(&self, upgrade: tunnel::Upgrade, record: Option<Pending>) {
        let open = self.metrics.connection("websocket");
        self.tunnels
            .spawn(tunnel::run(upgrade, record, self.cut.clone(), open));
    }
}

/// The answer, or the session it switched to, under the exchange's
/// lifetime: each ends when the access does, the way its client
/// understands (an event stream, unless a model's, may be resumed).
fn under(
    mut lifetime: Lifetime,
    response: Response<Body>,
    upgrade: Option<tunnel::Upgrade>,
    route: &Route,
    sse_retry: std::time::Duration,
) -> (Response<Body>, Option<tunnel::Upgrade>) {
    if let Some(mut upgrade) = upgrade {
        // A session is not an answer to finish.
        lifetime.never_finish();
        upgrade.lifetime = Some(lifetime);
        return (response, Some(upgrade));
    }
    let style = if is_event_stream(&response) && !route.is_model_api() {
        Style::events(sse_retry)
    } else {
        Style::Cut
    };
    (
        response.map(|b| Guarded::new(b, lifetime, style).boxed()),
        None,
    )
}

/// What the audit record keeps of the request line and headers.
fn request_info(
    parts: &Parts,
    request_id: &HeaderValue,
    client_ip: std::net::IpAddr,
    now: std::time::SystemTime,
) -> RequestInfo {
    let mut info = RequestInfo::new(now, parts.method.clone(), parts.version, client_ip);
    info.set(Field::RequestId, request_id.as_bytes());
    info.set(Field::Path, parts.uri.path().as_bytes());
    match parts.headers.get(http::header::HOST) {
        Some(host) => info.set(Field::Host, host.as_bytes()),
        None => {
            if let Some(a) = parts.uri.authority() {
                info.set(Field::Host, a.as_str().as_bytes());
            }
        }
    }
    if let Some(ua) = parts.headers.get(USER_AGENT) {
        info.set(Field::UserAgent, ua.as_bytes());
    }
    if let Some(id) = parts
        .headers
        .get(&TRACEPARENT)
        .and_then(|tp| crate::audit::trace_id(tp.as_bytes()))
    {
        info.set(Field::TraceId, id);
    }
    info
}

impl Context<'_> {
    /// The answer to a refused request.
    fn refuse(
        &self,
        rejection: Rejection,
        route: Option<&Route>,
        upstream: Option<UpstreamInfo>,
    ) -> Outcome {
        let mut response = self
            .snapshot
            .challenges
            .respond(&rejection, route)
            .map(full);
        response
            .headers_mut()
            .insert(headers::X_REQUEST_ID.clone(), self.request_id.clone());
        Outcome::Refused {
            response,
            rejection,
            upstream,
        }
    }

    /// The answer to a request whose access ended before its answer came:
    /// the refusal a new request would get now, or at the route's maximum
    /// duration, the upstream's timeout.
    fn ended_unanswered(&self, end: &Ending, route: &Route, upstream: &Arc<str>) -> Outcome {
        if let Some(rejection) = end.rejection() {
            return self.refuse(rejection, Some(route), None);
        }
        let error = ForwardError::Timeout(route.max_stream_duration().unwrap_or_default());
        Outcome::Failed {
            response: forward::error_response(&error, self.request_id),
            error,
            upstream: upstream.clone(),
        }
    }

    /// The answer to a refused request, after draining what is left of its
    /// body so the client's connection can carry its next request. (Not an
    /// `async fn`: see [`Gateway::handle`].)
    fn refuse_unread(
        &self,
        rejection: Rejection,
        route: Option<&Route>,
        body: Inbound,
        version: http::Version,
    ) -> impl Future<Output = Outcome> {
        let mut outcome = self.refuse(rejection, route, None);
        async move {
            let ended = body.drain().await;
            inbound::close_unless_read(outcome.response_mut(), version, ended);
            outcome
        }
    }
}

/// A forwarding error that is the client's doing: its body was larger than
/// the route accepts, or broke its framing, or its user must answer a
/// claims challenge before the token exchange. Refused like any other
/// request (`capable`: the client declared it answers claims challenges).
fn client_fault(error: &ForwardError, capable: bool) -> Option<Rejection> {
    match error {
        ForwardError::BodyTooLarge => Some(Rejection::BodyTooLarge),
        ForwardError::ClientBody(_) => Some(Rejection::BadRequestBody),
        ForwardError::ClaimsChallenge(claims) => {
            use base64::Engine;
            let claims = base64::engine::general_purpose::STANDARD.encode(claims);
            Some(Rejection::OboClaimsChallenge {
                claims: Arc::from(claims),
                capable,
            })
        }
        ForwardError::Connect(_)
        | ForwardError::Protocol(_)
        | ForwardError::Timeout(_)
        | ForwardError::Credential(_) => None,
    }
}

/// The request's `Content-Length`, when it has a valid one (hyper has
/// refused the request already if it is malformed or repeated).
fn declared_length(parts: &Parts) -> Option<u64> {
    parts
        .headers
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn is_event_stream<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
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
        .get(&headers::X_REQUEST_ID)
        .filter(|v| {
            v.len() <= 128 && !v.is_empty() && v.as_bytes().iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            let mut id = Vec::with_capacity(32);
            crate::text::write_hex(&mut id, &fastrand::u128(..).to_be_bytes());
            HeaderValue::from_maybe_shared(Bytes::from(id))
                .unwrap_or_else(|_| HeaderValue::from_static("-"))
        })
}
