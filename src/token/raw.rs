//! The serde view of a token's payload: the claims verification and
//! identity read, typed, each refused if repeated.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// The serde view of a payload. Struct deserialization refuses duplicate
/// keys for every field named here.
#[derive(Deserialize)]
pub(super) struct RawClaims {
    pub iss: String,
    /// Optional here so that a missing `exp` has its own reason; validation
    /// requires it, so a verified token always has it.
    pub exp: Option<u64>,
    pub aud: Option<Audience>,
    pub nbf: Option<u64>,
    pub iat: Option<u64>,
    pub auth_time: Option<u64>,
    pub sub: Option<String>,
    pub oid: Option<String>,
    pub tid: Option<String>,
    pub azp: Option<String>,
    pub appid: Option<String>,
    /// RFC 9068's client id; Okta's `cid`. Read for `kind = "oidc"` only.
    pub client_id: Option<String>,
    pub cid: Option<String>,
    pub azpacr: Option<String>,
    pub appidacr: Option<String>,
    pub scp: Option<Names>,
    /// RFC 9068 §2.2.3.1.
    pub scope: Option<Names>,
    pub roles: Option<Names>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub wids: Vec<String>,
    pub acr: Option<String>,
    #[serde(default)]
    pub amr: Vec<String>,
    #[serde(default)]
    pub acrs: Vec<String>,
    pub idtyp: Option<String>,
    pub ver: Option<String>,
    pub uti: Option<String>,
    pub jti: Option<String>,
    #[serde(default)]
    pub xms_cc: Vec<String>,
    pub xms_act_fct: Option<String>,
    pub xms_sub_fct: Option<String>,
    pub xms_par_app_azp: Option<String>,
    /// Groups overage: `{"groups": "src1"}` instead of a `groups` claim.
    pub _claim_names: Option<BTreeMap<String, IgnoredAny>>,
    pub cnf: Option<IgnoredAny>,
}

/// `aud`: one string or an array of them (RFC 7519 §4.1.3). Anything else
/// names no audience, so it matches none (rather than failing the parse).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Audience {
    One(String),
    Many(Vec<String>),
    Other(IgnoredAny),
}

/// A claim that lists names: a space-delimited string (Entra `scp`, RFC
/// 9068 `scope`) or an array of strings (Entra `roles`, Okta `scp`).
/// Anything else lists nothing (rather than failing the parse).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Names {
    Spaced(String),
    Listed(Vec<String>),
    Other(IgnoredAny),
}

impl Names {
    pub(super) fn add_to(&self, out: &mut Vec<String>) {
        match self {
            Self::Spaced(s) => s.split(' ').for_each(|n| add(out, n)),
            Self::Listed(list) => list.iter().for_each(|n| add(out, n)),
            Self::Other(_) => {}
        }
    }
}

/// Adds a name once. Entra writes `/` for "no delegated scope" on agent
/// tokens: it is no name.
pub(super) fn add(out: &mut Vec<String>, name: &str) {
    if !name.is_empty() && name != "/" && !out.iter().any(|n| n == name) {
        out.push(name.to_owned());
    }
}
