//! The auth decision, top to bottom: normalize → route → extract → verify →
//! authorize. Each step returns a typed value or a [`Rejection`]; none logs
//! or counts (the caller observes the outcome once).

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;

use crate::policy::{self, Grant, Route, path};
use crate::rejection::Rejection;
use crate::snapshot::Snapshot;
use crate::token::{CacheUse, VerifyError, extract_bearer};

/// A request that may be forwarded, with its normalized path.
pub struct Admitted<'a> {
    pub grant: Grant,
    pub path: Cow<'a, str>,
}

/// What `admit` learned, whatever the outcome: for metrics.
#[derive(Default)]
pub struct AdmitFacts {
    pub route: Option<Arc<Route>>,
    pub cache: Option<CacheUse>,
}

/// Decides whether `parts` may be forwarded.
pub async fn admit<'a>(
    snapshot: &Snapshot,
    parts: &'a Parts,
    facts: &mut AdmitFacts,
) -> Result<Admitted<'a>, Rejection> {
    let path = path::normalize(parts.uri.path()).map_err(|_| Rejection::BadPath)?;
    let matched = snapshot
        .routes
        .find(&parts.method, &path)
        .map(|m| m.route.clone());
    if let Some(route) = &matched {
        facts.route = Some(route.clone());
        if let Some(grant) = policy::admit_public(route) {
            return Ok(Admitted { grant, path });
        }
    }
    // Why: the token is checked even when no route matches, so that callers
    // without a valid token cannot map which paths exist (401 before 403).
    let token = extract_bearer(&parts.headers, parts.uri.query())?;
    let (verified, cache) = snapshot.verifier.verify(token).await;
    facts.cache = Some(cache);
    let claims = verified.map_err(|e| match e {
        VerifyError::Invalid(reason) => Rejection::InvalidToken(reason),
        VerifyError::KeysUnavailable => Rejection::KeysUnavailable,
    })?;
    let route = matched.ok_or(Rejection::Denied(policy::Denial::NoRoute))?;
    let grant = policy::authorize(&route, claims).map_err(Rejection::Denied)?;
    Ok(Admitted { grant, path })
}
