//! Authorization: (verified claims, request facts) → [`Grant`] or
//! [`Denial`]. Pure: no runtime, no I/O, tested as plain functions.
//!
//! The order is fixed and default-deny: the route's issuers, identity kinds
//! and permissions, then the agent registry, then conditional-access
//! policies (any block wins; report-only never enforces).

mod agents;
mod conditional;
pub mod path;
mod revocation;
mod routes;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::Method;

use crate::config::Config;
use crate::token::VerifiedClaims;

pub use agents::{Agent, AgentRegistry};
pub use conditional::{PolicyOutcome, PolicyResult, PolicySet};
pub use revocation::{RevocationList, RevokedBy};
pub use routes::{Route, RouteMatchResult, RouteTable};

/// Why a request was not allowed, once its token (if any) was fine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No route covers this method, host and path.
    NoRoute,
    /// The route accepts tokens from other issuers only.
    IssuerNotAccepted,
    /// The route does not accept this identity kind.
    KindNotAllowed,
    /// The token has neither `scp` nor `roles` (Microsoft.Identity.Web
    /// IDW10201): an ID token, or a tenant that never consented.
    NoPermissions,
    /// The token lacks the scopes or roles the route requires.
    InsufficientScope,
    AgentUnregistered,
    AgentDisabled,
    AgentExpired,
    /// The agent's registration does not reach this route, method or
    /// parameter (e.g. deployment).
    AgentNotAllowed,
    /// The token lacks a permission the agent's registration requires.
    AgentPermissionMissing,
    /// The route, or the agent's registration, does not allow the model
    /// the request asks for.
    ModelNotAllowed,
    /// A policy depends on groups, but the token has a groups overage.
    GroupsOverage,
    PolicyBlock(Arc<str>),
    /// A `require` policy is not met; `claims_challenge` names the policy
    /// whose authentication-context challenge the client can answer.
    PolicyUnmet {
        policy: Arc<str>,
        claims_challenge: Option<Arc<str>>,
    },
}

impl Denial {
    /// Stable machine-readable reason (metric label); policy denials also
    /// have a [`Denial::policy`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::IssuerNotAccepted => "issuer_not_accepted",
            Self::KindNotAllowed => "kind_not_allowed",
            Self::NoPermissions => "no_permissions",
            Self::InsufficientScope => "scope_missing",
            Self::AgentUnregistered => "agent_unregistered",
            Self::AgentDisabled => "agent_disabled",
            Self::AgentExpired => "agent_expired",
            Self::AgentNotAllowed => "agent_not_allowed",
            Self::AgentPermissionMissing => "agent_permission_missing",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::GroupsOverage => "groups_overage",
            Self::PolicyBlock(_) => "policy_block",
            Self::PolicyUnmet { .. } => "policy_unmet",
        }
    }

    /// The policy behind a policy denial.
    pub fn policy(&self) -> Option<&str> {
        match self {
            Self::PolicyBlock(p) | Self::PolicyUnmet { policy: p, .. } => Some(p),
            _ => None,
        }
    }
}

/// What the request says besides its token.
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    /// Route parameters, e.g. `("deployment", "gpt-4o")`.
    pub params: &'a [(&'a str, &'a str)],
    /// The client address: the socket peer, or from `X-Forwarded-For` only
    /// through trusted proxies.
    pub client_ip: IpAddr,
    pub now: SystemTime,
}

impl RequestFacts<'_> {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }
}

/// Permission to forward one request. Only this module creates it, and
/// forwarding requires it.
#[derive(Debug, Clone)]
pub struct Grant {
    route: Arc<Route>,
    claims: Option<Arc<VerifiedClaims>>,
    /// Where the request came from and when it was decided: for the
    /// policies decided once a stage has read the body.
    client_ip: Option<IpAddr>,
    decided_at: SystemTime,
}

impl Grant {
    /// The facts a stage decides the rest of the policies on (no route
    /// parameters: policies on models take none).
    pub fn facts<'a>(&self, method: &'a Method) -> Option<RequestFacts<'a>> {
        Some(RequestFacts {
            method,
            params: &[],
            client_ip: self.client_ip?,
            now: self.decided_at,
        })
    }
    pub fn route(&self) -> &Arc<Route> {
        &self.route
    }
    /// The verified identity; `None` on a public route.
    pub fn claims(&self) -> Option<&Arc<VerifiedClaims>> {
        self.claims.as_ref()
    }
}

/// The authorization rules of one snapshot: agents and policies.
pub struct Policies {
    pub agents: AgentRegistry,
    pub policies: PolicySet,
}

impl Policies {
    pub fn compile(config: &Config) -> Self {
        Self {
            agents: AgentRegistry::compile(
                &config.agents,
                config.identity.allow_unregistered_agents,
            ),
            policies: PolicySet::compile(
                &config.policies,
                &config.locations,
                config.identity.deny_on_groups_overage,
            ),
        }
    }
}

/// A grant for a public route: no token was asked for.
pub fn admit_public(route: &Arc<Route>) -> Option<Grant> {
    route.is_public().then(|| Grant {
        route: route.clone(),
        claims: None,
        client_ip: None,
        decided_at: SystemTime::now(),
    })
}

/// The whole decision for a verified token: a grant or a denial, and every
/// policy's result (report-only included) for the record.
pub fn authorize(
    rules: &Policies,
    route: &Arc<Route>,
    claims: Arc<VerifiedClaims>,
    facts: &RequestFacts<'_>,
) -> (Result<Grant, Denial>, Vec<PolicyOutcome>) {
    if let Err(d) = check_route(route, &claims) {
        return (Err(d), Vec::new());
    }
    // The registered agent itself is recorded by the pipeline (also when
    // refused); here only its verdict counts.
    if let Err(d) = rules.agents.check(&claims, route, facts) {
        return (Err(d), Vec::new());
    }
    let (verdict, outcomes) = rules.policies.evaluate(route.name(), &claims, facts);
    let result = verdict.map(|()| Grant {
        route: route.clone(),
        claims: Some(claims),
        client_ip: Some(facts.client_ip),
        decided_at: facts.now,
    });
    (result, outcomes)
}

/// The conditional-access policies on models, for a request whose model
/// a stage has read: any block wins, report-only never enforces.
pub fn authorize_model(
    rules: &Policies,
    grant: &Grant,
    method: &Method,
    model: &str,
) -> (Result<(), Denial>, Vec<PolicyOutcome>) {
    let (Some(claims), Some(facts)) = (grant.claims(), grant.facts(method)) else {
        return (Ok(()), Vec::new());
    };
    rules
        .policies
        .evaluate_model(grant.route().name(), claims, &facts, model)
}

/// The route's own requirements.
fn check_route(route: &Route, claims: &VerifiedClaims) -> Result<(), Denial> {
    if let Some(issuers) = route.issuers()
        && !issuers.iter().any(|i| i == claims.issuer_name())
    {
        return Err(Denial::IssuerNotAccepted);
    }
    if !route.allows_kind(claims.kind()) {
        return Err(Denial::KindNotAllowed);
    }
    if !claims.has_permissions() && !route.allows_without_permissions() {
        return Err(Denial::NoPermissions);
    }
    let (scopes, roles) = (route.scopes(), route.roles());
    if scopes.is_empty() && roles.is_empty() {
        return Ok(());
    }
    let ok = if route.requires_all() {
        scopes.iter().all(|s| claims.scopes().contains(s))
            && roles.iter().all(|r| claims.roles().contains(r))
    } else {
        claims.scopes().iter().any(|s| scopes.contains(s))
            || claims.roles().iter().any(|r| roles.contains(r))
    };
    if ok {
        Ok(())
    } else {
        Err(Denial::InsufficientScope)
    }
}

#[cfg(test)]
mod tests;
