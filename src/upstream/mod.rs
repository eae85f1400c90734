//! The upstream side: the pooled client (and the one retry a request may
//! get), its connector, what forwarding can fail with, and the headers an
//! upstream sees (`headers`). Below the request pipeline and the snapshot,
//! which both hold or use these.

mod connect;
pub mod headers;
mod held;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_util::either::Either;

pub use headers::{ClientConn, InboundStrip};
pub use held::Held;

use crate::body::{Body, full};
use crate::config::UpstreamConfig;
use crate::telemetry::any_cause;
use connect::WithoutInfo;

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
    /// The gateway's own credential for the upstream could not be had.
    #[error(transparent)]
    Credential(#[from] crate::credentials::CredentialError),
    /// Entra asks the user for more before it exchanges their token
    /// (on-behalf-of): the claims, as JSON text.
    #[error("on-behalf-of: the user must answer a claims challenge")]
    ClaimsChallenge(String),
}

impl From<crate::credentials::OboError> for ForwardError {
    fn from(e: crate::credentials::OboError) -> Self {
        match e {
            crate::credentials::OboError::Failed(e) => Self::Credential(e),
            crate::credentials::OboError::ClaimsChallenge { claims, .. } => {
                Self::ClaimsChallenge(claims)
            }
        }
    }
}

impl ForwardError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Connect(_) | Self::Protocol(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ClientBody(_) => StatusCode::BAD_REQUEST,
            Self::Credential(_) => StatusCode::SERVICE_UNAVAILABLE,
            // Refused as the client's (see `proxy::client_fault`).
            Self::ClaimsChallenge(_) => StatusCode::FORBIDDEN,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Self::Connect(_) => "upstream_unreachable",
            Self::Protocol(_) => "upstream_protocol_error",
            Self::Timeout(_) => "upstream_timeout",
            Self::BodyTooLarge => "body_too_large",
            Self::ClientBody(_) => "bad_request_body",
            Self::Credential(_) => "upstream_credential_unavailable",
            Self::ClaimsChallenge(_) => "obo_interaction_required",
        }
    }
}

/// Why sending a request upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connecting to the upstream")]
    Connect(#[source] BoxError),
    #[error("the exchange with the upstream")]
    Exchange(#[source] BoxError),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect(_))
    }
}

impl From<hyper_util::client::legacy::Error> for SendError {
    fn from(e: hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            Self::Connect(e.into())
        } else {
            Self::Exchange(e.into())
        }
    }
}

/// The upstream client: HTTP/1 connections held by client connections
/// (`held`), and a shared pool for the rest. Cloning shares both.
#[derive(Clone)]
pub struct Upstream {
    client: Client<WithoutInfo<HttpsConnector<HttpConnector>>, Body>,
    /// For HTTP/1 upstreams: the connections client connections hold.
    direct: Option<Arc<held::Direct>>,
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
        let (connector, direct) = if cfg.http2 {
            (builder.enable_http2().wrap_connector(http), None)
        } else {
            let connector = builder.enable_http1().wrap_connector(http);
            let direct = held::Direct::new(connector.clone(), cfg.pool_idle_timeout);
            (connector, Some(Arc::new(direct)))
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
            direct,
            fresh,
            response_timeout: cfg.response_timeout,
            version: if cfg.http2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            },
        })
    }

    /// How long the upstream has for its response headers.
    pub fn response_timeout(&self) -> Duration {
        self.response_timeout
    }

    /// The HTTP version requests are sent with.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Sends the request on the connection `held` by its client connection
    /// when there is one (an HTTP/1 client's request that is no upgrade, to
    /// an HTTP/1 upstream), on a pooled connection otherwise. A request that
    /// failed before any of it was written on a reused connection is sent
    /// again on a new one. One that was written but got no answer because
    /// the upstream closed the connection (an idle connection it was
    /// closing as ours arrived) is sent once more, on a new connection, when
    /// it is `replay`able; never a request that may have changed something
    /// upstream (`an_upstream_that_closes_connections_at_random_costs_no_request`).
    #[allow(clippy::manual_async_fn)] // reason: its arguments stored once, not twice (see Gateway::handle)
    pub fn send<'a>(
        &'a self,
        req: Request<Body>,
        replay: Option<http::request::Parts>,
        held: Option<&'a Held>,
    ) -> impl Future<Output = Result<Response<Incoming>, SendError>> + 'a {
        if let (Some(direct), Some(held)) = (&self.direct, held) {
            return Either::Left(held.send(direct, req, replay));
        }
        Either::Right(async move {
            Ok(match (self.client.request(req).await, replay) {
                (Err(e), Some(parts)) if closed_before_answer(&e) => {
                    tracing::debug!(
                        error = %crate::telemetry::error_chain(&e),
                        "the upstream closed the connection before answering: sending again on a new one"
                    );
                    let again = Request::from_parts(parts, full(Bytes::new()));
                    self.fresh.request(again).await?
                }
                (answered, _) => answered?,
            })
        })
    }
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
