//! How one issuer's tokens are read: whether Entra's identity rules
//! apply, and where scopes and roles are (`scope_claims`, `role_claims`).

use serde_json::Value;

use super::raw::{RawClaims, add};
use crate::config::{ClaimPath, ClaimSources, IssuerKind};

/// The names at `path` in the payload `document`, read like [`Names`]: an
/// array with anything but strings in it lists nothing.
fn names_at(document: &Value, path: &ClaimPath, out: &mut Vec<String>) {
    let mut value = document;
    for segment in path.segments() {
        match value.get(segment) {
            Some(v) => value = v,
            None => return,
        }
    }
    match value {
        Value::String(s) => s.split(' ').for_each(|n| add(out, n)),
        Value::Array(items) => {
            let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
            names.into_iter().flatten().for_each(|n| add(out, n));
        }
        _ => {}
    }
}

/// How one issuer's tokens are read: whether Entra's identity rules apply,
/// and where scopes and roles are.
#[derive(Debug, Clone)]
pub struct ClaimReading {
    pub(super) kind: IssuerKind,
    sources: ClaimSources,
    /// Some source is not one of the claims `RawClaims` keeps, so the
    /// payload must be read again as a document: known when the config
    /// loads, not per token.
    needs_document: bool,
}

impl ClaimReading {
    pub fn new(kind: IssuerKind, sources: ClaimSources) -> Self {
        let needs_document = sources
            .scopes
            .iter()
            .chain(&sources.roles)
            .any(|p| !matches!(p.top_level(), Some("scp" | "scope" | "roles")));
        Self {
            kind,
            sources,
            needs_document,
        }
    }

    /// Whether the payload must be read again as a document.
    pub(super) fn needs_document(&self) -> bool {
        self.needs_document
    }

    /// Scopes and roles from the configured sources, in order, once each.
    pub(super) fn names(
        &self,
        raw: &RawClaims,
        document: Option<&Value>,
    ) -> (Vec<String>, Vec<String>) {
        let read = |paths: &[ClaimPath]| {
            let mut out = Vec::new();
            for path in paths {
                let typed = match path.top_level() {
                    Some("scp") => Some(&raw.scp),
                    Some("scope") => Some(&raw.scope),
                    Some("roles") => Some(&raw.roles),
                    _ => None,
                };
                match (typed, document) {
                    (Some(names), _) => {
                        if let Some(names) = names {
                            names.add_to(&mut out);
                        }
                    }
                    (None, Some(doc)) => names_at(doc, path, &mut out),
                    (None, None) => {}
                }
            }
            out
        };
        (read(&self.sources.scopes), read(&self.sources.roles))
    }
}

impl Default for ClaimReading {
    /// Entra's, for claims with no configured issuer.
    fn default() -> Self {
        Self::new(IssuerKind::Entra, ClaimSources::entra())
    }
}
