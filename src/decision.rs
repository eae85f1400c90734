//! The decision on one request: the record that metrics count, `explain`
//! prints and the audit trail keeps. Below both the request pipeline that
//! makes it and the audit records that carry it.

use std::sync::Arc;

use crate::call::Call;
use crate::policy::{Agent, PolicyOutcome, Route};
use crate::rejection::Rejection;
use crate::token::{CacheUse, TokenDigest, VerifiedClaims};

/// The one outcome of the auth pipeline for a request: allow or deny with a
/// stable reason, the route, the verified identity, the registered agent and
/// every policy result. Metrics count it, `explain` prints it, and the audit
/// record carries it.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Result<(), Rejection>,
    pub route: Option<Arc<Route>>,
    /// The matched route's parameters, e.g. `deployment`.
    pub params: Vec<(String, String)>,
    pub cache: Option<CacheUse>,
    /// SHA-256 of the token, for the audit record (never the token).
    pub token_digest: Option<TokenDigest>,
    /// The verified identity, also when the request is then denied.
    pub identity: Option<Arc<VerifiedClaims>>,
    pub agent: Option<Arc<Agent>>,
    pub policies: Vec<PolicyOutcome>,
    /// What the request asks, as the stages read it (an MCP method and
    /// its tool, prompt or resource).
    pub call: Option<Call>,
}

impl Decision {
    /// A decision not yet made: filled in step by step.
    pub fn pending() -> Self {
        Self {
            verdict: Ok(()),
            route: None,
            params: Vec::new(),
            cache: None,
            token_digest: None,
            identity: None,
            agent: None,
            policies: Vec::new(),
            call: None,
        }
    }

    pub fn is_allowed(&self) -> bool {
        self.verdict.is_ok()
    }

    /// Stable machine-readable reason: `allowed`, or the rejection's.
    pub fn reason(&self) -> &'static str {
        match &self.verdict {
            Ok(()) => "allowed",
            Err(r) => r.reason(),
        }
    }

    /// The reason with its policy, as records show it: `policy_block:NAME`.
    pub fn reason_detail(&self) -> std::borrow::Cow<'static, str> {
        match self.policy() {
            Some(p) => format!("{}:{p}", self.reason()).into(),
            None => self.reason().into(),
        }
    }

    /// The policy behind a policy denial.
    pub fn policy(&self) -> Option<&str> {
        match &self.verdict {
            Err(Rejection::Denied(d)) => d.policy(),
            _ => None,
        }
    }
}
