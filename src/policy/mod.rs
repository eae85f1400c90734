//! Authorization: (verified claims, request facts) → [`Grant`] or
//! [`Denial`]. Pure: no runtime, no I/O, tested as plain functions.
//!
//! Routes are matched by a `matchit` tree after path normalization; an
//! unmatched request is denied (default deny).

pub mod path;
mod routes;

use std::sync::Arc;

use crate::token::VerifiedClaims;

pub use routes::{Route, RouteMatchResult, RouteTable};

/// Why a request was not allowed, once its token (if any) was fine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No route covers this method and path.
    NoRoute,
    /// The route accepts tokens from other issuers only.
    IssuerNotAccepted,
    /// The token lacks every scope and role the route accepts.
    InsufficientScope,
}

impl Denial {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::IssuerNotAccepted => "issuer_not_accepted",
            Self::InsufficientScope => "scope_missing",
        }
    }
}

/// Permission to forward one request. Only this module creates it, and
/// forwarding requires it.
#[derive(Debug, Clone)]
pub struct Grant {
    route: Arc<Route>,
    claims: Option<Arc<VerifiedClaims>>,
}

impl Grant {
    pub fn route(&self) -> &Arc<Route> {
        &self.route
    }
    /// The verified identity; `None` on a public route.
    pub fn claims(&self) -> Option<&Arc<VerifiedClaims>> {
        self.claims.as_ref()
    }
}

/// A grant for a public route: no token was asked for.
pub fn admit_public(route: &Arc<Route>) -> Option<Grant> {
    route.is_public().then(|| Grant {
        route: route.clone(),
        claims: None,
    })
}

/// Checks a verified token against the route's requirements: the issuer must
/// be accepted, and when the route names scopes or roles the token must hold
/// at least one of them (any-of).
pub fn authorize(route: &Arc<Route>, claims: Arc<VerifiedClaims>) -> Result<Grant, Denial> {
    if let Some(issuers) = route.issuers()
        && !issuers.iter().any(|i| i == claims.issuer_name())
    {
        return Err(Denial::IssuerNotAccepted);
    }
    let requires = !route.scopes().is_empty() || !route.roles().is_empty();
    if requires {
        let has_scope = claims.scopes().iter().any(|s| route.scopes().contains(s));
        let has_role = claims.roles().iter().any(|r| route.roles().contains(r));
        if !has_scope && !has_role {
            return Err(Denial::InsufficientScope);
        }
    }
    Ok(Grant {
        route: route.clone(),
        claims: Some(claims),
    })
}
