//! How one request ended, before it is observed.

use std::sync::Arc;

use http::Response;

use super::tunnel::Upgrade;
use crate::audit::UpstreamInfo;
use crate::body::Body;
use crate::metrics::DecisionLabel;
use crate::rejection::Rejection;
use crate::upstream::ForwardError;

/// How one request ended: what its metrics and its audit record are built
/// from, once.
pub(super) enum Outcome {
    /// The upstream answered, whatever its status.
    Forwarded {
        response: Response<Body>,
        upstream: UpstreamInfo,
        upgrade: Option<Upgrade>,
    },
    /// The gateway said no; the answer is the rejection's. `upstream` is
    /// set when forwarding had begun (a body cut at the limit, or broken).
    Refused {
        response: Response<Body>,
        rejection: Rejection,
        upstream: Option<UpstreamInfo>,
    },
    /// The gateway answered itself: an MCP route's protected-resource
    /// metadata.
    Served { response: Response<Body> },
    /// Allowed, but the upstream could not be reached or did not answer in
    /// time.
    Failed {
        response: Response<Body>,
        error: ForwardError,
        /// The upstream's name.
        upstream: Arc<str>,
    },
}

impl Outcome {
    pub(super) fn response(&self) -> &Response<Body> {
        match self {
            Self::Forwarded { response, .. }
            | Self::Refused { response, .. }
            | Self::Served { response }
            | Self::Failed { response, .. } => response,
        }
    }

    pub(super) fn response_mut(&mut self) -> &mut Response<Body> {
        match self {
            Self::Forwarded { response, .. }
            | Self::Refused { response, .. }
            | Self::Served { response }
            | Self::Failed { response, .. } => response,
        }
    }

    /// How it is counted: a refusal for the gateway's or the upstream's
    /// fault (5xx) is an error, one for the client's (4xx) a deny.
    pub(super) fn label(&self) -> DecisionLabel {
        match self {
            Self::Forwarded { .. } | Self::Served { .. } => DecisionLabel::Allow,
            Self::Refused { rejection, .. } if rejection.status().is_server_error() => {
                DecisionLabel::Error
            }
            Self::Refused { .. } => DecisionLabel::Deny,
            Self::Failed { .. } => DecisionLabel::Error,
        }
    }

    pub(super) fn reason(&self) -> &'static str {
        match self {
            Self::Forwarded { .. } => "allowed",
            Self::Served { .. } => "resource_metadata",
            Self::Refused { rejection, .. } => rejection.reason(),
            Self::Failed { error, .. } => error.reason(),
        }
    }

    /// The response, what the upstream did, and the tunnel to run.
    pub(super) fn into_parts(self) -> (Response<Body>, Option<UpstreamInfo>, Option<Upgrade>) {
        match self {
            Self::Forwarded {
                response,
                upstream,
                upgrade,
            } => (response, Some(upstream), upgrade),
            Self::Refused {
                response, upstream, ..
            } => (response, upstream, None),
            Self::Served { response } => (response, None, None),
            Self::Failed {
                response,
                error,
                upstream,
            } => {
                let upstream = UpstreamInfo {
                    name: upstream,
                    credential: None,
                    status: None,
                    duration: None,
                    error: Some(error.to_string()),
                };
                (response, Some(upstream), None)
            }
        }
    }
}
