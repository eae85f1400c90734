//! The local deny list (continuous-access style): Entra cannot revoke an
//! issued token for a third-party API, so we do. Checked after signature
//! validation and on every cache hit, so a change takes effect on the next
//! request even for tokens already verified.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use crate::config::{ConfigError, ConfigErrors};
use crate::token::VerifiedClaims;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationFile {
    #[serde(default)]
    tenants: Vec<String>,
    #[serde(default)]
    agents: Vec<String>,
    #[serde(default)]
    client_apps: Vec<String>,
    #[serde(default)]
    token_ids: Vec<String>,
    #[serde(default)]
    principals: Vec<PrincipalFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalFile {
    tenant: String,
    oid: String,
    /// Only tokens issued before this time; without it, every token.
    issued_before: Option<String>,
}

/// Why a token is revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokedBy {
    Tenant,
    Agent,
    ClientApp,
    TokenId,
    Principal,
}

/// An immutable deny list; replaced whole when its file changes.
#[derive(Debug, Default)]
pub struct RevocationList {
    tenants: HashSet<String>,
    agents: HashSet<String>,
    client_apps: HashSet<String>,
    /// Token ids are case-sensitive (`uti` is base64url).
    token_ids: HashSet<String>,
    /// (tenant, oid) → issued-before bound in seconds (`None`: all tokens).
    principals: HashMap<(String, String), Option<u64>>,
}

impl RevocationList {
    /// Reads and validates a revocation file, every error with its path.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: format!("cannot read {}: {e}", path.display()),
            }])
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let file: RevocationFile = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: String::new(),
                message: e.to_string().trim_end().to_owned(),
            }])
        })?;
        let mut errors = Vec::new();
        let lower = |v: Vec<String>| {
            v.into_iter()
                .map(|s| s.to_ascii_lowercase())
                .collect::<HashSet<_>>()
        };
        let mut principals = HashMap::new();
        for (i, p) in file.principals.into_iter().enumerate() {
            let bound = match p
                .issued_before
                .as_deref()
                .map(humantime::parse_rfc3339_weak)
            {
                None => None,
                Some(Ok(t)) => t
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs()),
                Some(Err(_)) => {
                    errors.push(ConfigError {
                        path: format!("principals[{i}].issued_before"),
                        message: "not an RFC 3339 date-time".into(),
                    });
                    None
                }
            };
            principals.insert(
                (p.tenant.to_ascii_lowercase(), p.oid.to_ascii_lowercase()),
                bound,
            );
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(Self {
            tenants: lower(file.tenants),
            agents: lower(file.agents),
            client_apps: lower(file.client_apps),
            token_ids: file.token_ids.into_iter().collect(),
            principals,
        })
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
            + self.agents.len()
            + self.client_apps.len()
            + self.token_ids.len()
            + self.principals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Why `claims` are revoked, if they are.
    pub fn check(&self, claims: &VerifiedClaims) -> Option<RevokedBy> {
        if self.is_empty() {
            return None;
        }
        let has = |set: &HashSet<String>, v: Option<&str>| {
            v.is_some_and(|v| set.contains(&v.to_ascii_lowercase()))
        };
        if has(&self.tenants, claims.tid()) {
            return Some(RevokedBy::Tenant);
        }
        if has(&self.agents, claims.agent_id()) {
            return Some(RevokedBy::Agent);
        }
        if has(&self.client_apps, claims.client_app()) {
            return Some(RevokedBy::ClientApp);
        }
        if claims
            .token_id()
            .is_some_and(|t| self.token_ids.contains(t))
        {
            return Some(RevokedBy::TokenId);
        }
        let key = (claims.tid()?.to_owned(), claims.oid()?.to_ascii_lowercase());
        match self.principals.get(&key) {
            Some(None) => Some(RevokedBy::Principal),
            // Why: without `iat` the issue time is unknown; fail closed.
            Some(Some(before)) if claims.iat().is_none_or(|iat| iat < *before) => {
                Some(RevokedBy::Principal)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(extra: serde_json::Value) -> VerifiedClaims {
        let mut c = json!({"iss": "i", "exp": 2_000_000_000u64, "iat": 1_000, "tid": "T1", "oid": "O1",
            "azp": "App1", "uti": "Uti-1", "scp": "s"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        VerifiedClaims::for_tests("idp", c)
    }

    #[test]
    fn revocation_table() {
        let list = RevocationList::parse(
            r#"
tenants = ["t-bad"]
agents = ["AGENT-1"]
client_apps = ["app-bad"]
token_ids = ["Uti-bad"]
[[principals]]
tenant = "t1"
oid = "o-all"
[[principals]]
tenant = "t1"
oid = "o1"
issued_before = "1970-01-01T00:20:00Z"
"#,
        )
        .unwrap();
        let cases = [
            ("clean", claims(json!({"iat": 1_500})), None),
            (
                "tenant",
                claims(json!({"tid": "T-BAD"})),
                Some(RevokedBy::Tenant),
            ),
            (
                "agent",
                claims(json!({"azp": "agent-1", "xms_act_fct": "11"})),
                Some(RevokedBy::Agent),
            ),
            (
                "client app",
                claims(json!({"azp": "app-bad"})),
                Some(RevokedBy::ClientApp),
            ),
            (
                "token id",
                claims(json!({"uti": "Uti-bad"})),
                Some(RevokedBy::TokenId),
            ),
            (
                "token ids are case-sensitive",
                claims(json!({"uti": "uti-bad", "iat": 1_500})),
                None,
            ),
            (
                "every token of a principal",
                claims(json!({"oid": "o-all"})),
                Some(RevokedBy::Principal),
            ),
            (
                "issued before T",
                claims(json!({"iat": 1_100})),
                Some(RevokedBy::Principal),
            ),
            ("issued after T", claims(json!({"iat": 1_300})), None),
            (
                "no iat fails closed",
                claims(json!({"iat": null})),
                Some(RevokedBy::Principal),
            ),
        ];
        for (name, c, want) in cases {
            assert_eq!(list.check(&c), want, "{name}");
        }
    }

    #[test]
    fn bad_files_are_refused_with_paths() {
        let err = RevocationList::parse(
            "[[principals]]\ntenant = \"t\"\noid = \"o\"\nissued_before = \"yesterday\"\n",
        )
        .unwrap_err();
        assert_eq!(err.0[0].path, "principals[0].issued_before");
        assert!(
            RevocationList::parse("agentz = []").is_err(),
            "unknown keys are errors"
        );
    }
}
