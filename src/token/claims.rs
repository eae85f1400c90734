//! The claims we use, decoded once and shared as `Arc<VerifiedClaims>`.
//! Unknown claims are ignored; display claims (`upn`, `email`, `name`,
//! `preferred_username`) are never read, so nothing can authorize on them.

use std::sync::Arc;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// The serde view of a payload. Struct deserialization refuses duplicate
/// keys for every field named here.
#[derive(Deserialize)]
pub(super) struct RawClaims {
    pub iss: String,
    /// Optional here so that jsonwebtoken reports it missing by name;
    /// validation requires it, so a verified token always has it.
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    pub sub: Option<String>,
    pub oid: Option<String>,
    pub tid: Option<String>,
    pub azp: Option<String>,
    pub appid: Option<String>,
    pub scp: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub idtyp: Option<String>,
    pub ver: Option<String>,
    pub uti: Option<String>,
    pub jti: Option<String>,
    pub xms_cc: Option<Vec<String>>,
    pub cnf: Option<IgnoredAny>,
}

/// Claims of a token that passed every check. Only `token::verify` makes
/// one; the fields are private so no other code can forge it.
#[derive(Debug)]
pub struct VerifiedClaims {
    issuer_name: Arc<str>,
    iss: String,
    exp: u64,
    sub: Option<String>,
    oid: Option<String>,
    tid: Option<String>,
    client_app: Option<String>,
    scopes: Vec<String>,
    roles: Vec<String>,
    idtyp: Option<String>,
    token_id: Option<String>,
    handles_claims_challenge: bool,
}

impl VerifiedClaims {
    pub(super) fn from_raw(issuer_name: Arc<str>, raw: RawClaims) -> Self {
        let scopes = raw
            .scp
            .as_deref()
            .map(|s| {
                s.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            issuer_name,
            iss: raw.iss,
            exp: raw.exp.unwrap_or(0),
            sub: raw.sub,
            oid: raw.oid,
            tid: raw.tid,
            client_app: raw.azp.or(raw.appid),
            scopes,
            roles: raw.roles,
            idtyp: raw.idtyp,
            token_id: raw.uti.or(raw.jti),
            handles_claims_challenge: raw
                .xms_cc
                .is_some_and(|cc| cc.iter().any(|c| c.eq_ignore_ascii_case("cp1"))),
        }
    }

    /// The configured name of the issuer entry that accepted the token.
    pub fn issuer_name(&self) -> &str {
        &self.issuer_name
    }
    pub fn iss(&self) -> &str {
        &self.iss
    }
    /// Expiry, seconds since the epoch.
    pub fn exp(&self) -> u64 {
        self.exp
    }
    pub fn sub(&self) -> Option<&str> {
        self.sub.as_deref()
    }
    /// Entra object id; with the tenant, the stable principal key.
    pub fn oid(&self) -> Option<&str> {
        self.oid.as_deref()
    }
    pub fn tid(&self) -> Option<&str> {
        self.tid.as_deref()
    }
    /// The calling client: `azp` (v2) or `appid` (v1).
    pub fn client_app(&self) -> Option<&str> {
        self.client_app.as_deref()
    }
    /// Delegated scopes (`scp`, split on spaces).
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
    /// App roles (`roles`).
    pub fn roles(&self) -> &[String] {
        &self.roles
    }
    pub fn idtyp(&self) -> Option<&str> {
        self.idtyp.as_deref()
    }
    /// `uti` (Entra) or `jti`.
    pub fn token_id(&self) -> Option<&str> {
        self.token_id.as_deref()
    }
    /// Whether the client declared `xms_cc` = `cp1` (handles claims challenges).
    pub fn handles_claims_challenge(&self) -> bool {
        self.handles_claims_challenge
    }
    /// The subject to report upstream: `oid` when present (stable across
    /// apps), else `sub`.
    pub fn principal(&self) -> Option<&str> {
        self.oid().or(self.sub())
    }
}
