//! Dev tokens of every shape the gateway tells apart, built one way for
//! dev mode, the fixtures, the issuer's `POST /dev/token` and `portcullis
//! dev token`. Their claims follow Entra's v2 access tokens (docs/dev.md):
//! fixed, documented ids, so that configs and agent registrations written
//! against dev mode keep working from run to run.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::DEV_AUDIENCE;

/// The tenant of every dev token (`tid`).
pub const DEV_TENANT: &str = "00000000-0000-4000-8000-00000000dead";
/// The human of user tokens and of an agent acting for a user (`oid`).
pub const DEV_USER: &str = "33333333-3333-4333-8333-333333333333";
/// The client app a user signs in to (`azp` of user tokens).
pub const DEV_USER_APP: &str = "44444444-4444-4444-8444-444444444444";
/// The workload of app-only tokens (`azp`; its service principal is `oid`).
pub const DEV_APP: &str = "22222222-2222-4222-8222-222222222222";
const DEV_APP_PRINCIPAL: &str = "11111111-1111-4111-8111-111111111111";
/// The agent identity of agent tokens (`azp`, and `oid` when autonomous).
pub const DEV_AGENT: &str = "55555555-5555-4555-8555-555555555555";
/// The agent's blueprint (`xms_par_app_azp`).
pub const DEV_BLUEPRINT: &str = "66666666-6666-4666-8666-666666666666";
/// The agent's own user account (`oid` of agent-user tokens).
pub const DEV_AGENT_USER: &str = "77777777-7777-4777-8777-777777777777";

/// Who a dev token speaks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DevKind {
    /// A human, delegated: `scp`.
    #[default]
    User,
    /// A workload, app-only: `roles`.
    App,
    /// An autonomous agent (app-only, agent facets).
    Agent,
    /// An agent acting for the dev user (on-behalf-of).
    AgentObo,
    /// An agent's own user account.
    AgentUser,
}

/// What to mint. Every field has a default: `{}` is a user token with
/// scopes `Models.Invoke Models.Read`, valid for an hour.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenRequest {
    pub kind: DevKind,
    /// `scp`; `None` (and no `roles`) for the kind's defaults.
    pub scopes: Option<Vec<String>>,
    /// `roles`; `None` (and no `scopes`) for the kind's defaults.
    pub roles: Option<Vec<String>>,
    /// Seconds until `exp`; negative for a token that has expired.
    pub lifetime_secs: i64,
    pub audience: String,
    pub tenant: String,
    /// Claims added last: they replace any of the above (`null` removes).
    pub claims: Map<String, Value>,
    /// Sign with the P-256 key (ES256) instead of the RSA one (RS256).
    pub es256: bool,
}

impl Default for TokenRequest {
    fn default() -> Self {
        Self {
            kind: DevKind::User,
            scopes: None,
            roles: None,
            lifetime_secs: 3600,
            audience: DEV_AUDIENCE.to_owned(),
            tenant: DEV_TENANT.to_owned(),
            claims: Map::new(),
            es256: false,
        }
    }
}

impl TokenRequest {
    pub fn of(kind: DevKind) -> Self {
        Self {
            kind,
            ..Self::default()
        }
    }

    /// The claims of this token from `issuer`.
    pub fn claims(&self, issuer: &str) -> Value {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let mut c = json!({
            "iss": issuer, "aud": self.audience, "iat": now, "nbf": now.min(now + self.lifetime_secs),
            "exp": now + self.lifetime_secs, "tid": self.tenant, "ver": "2.0", "azpacr": "1",
            "uti": format!("dev{:x}", fastrand::u64(..)),
        });
        let (delegated, app_only) = (
            || vec!["Models.Invoke".to_owned(), "Models.Read".to_owned()],
            || vec!["Models.Invoke".to_owned()],
        );
        let (mut scopes, mut roles) = (None, None);
        match self.kind {
            DevKind::User => {
                set(
                    &mut c,
                    &[
                        ("idtyp", "user"),
                        ("oid", DEV_USER),
                        ("sub", DEV_USER),
                        ("azp", DEV_USER_APP),
                    ],
                );
                scopes = Some(delegated());
            }
            DevKind::App => {
                set(
                    &mut c,
                    &[
                        ("idtyp", "app"),
                        ("oid", DEV_APP_PRINCIPAL),
                        ("sub", DEV_APP_PRINCIPAL),
                        ("azp", DEV_APP),
                    ],
                );
                c["azpacr"] = "2".into();
                roles = Some(app_only());
            }
            DevKind::Agent => {
                set(
                    &mut c,
                    &[
                        ("idtyp", "app"),
                        ("oid", DEV_AGENT),
                        ("sub", DEV_AGENT),
                        ("azp", DEV_AGENT),
                        ("xms_par_app_azp", DEV_BLUEPRINT),
                        ("xms_act_fct", "3 9 11"),
                        ("xms_sub_fct", "9 3 11"),
                    ],
                );
                c["azpacr"] = "2".into();
                roles = Some(app_only());
            }
            DevKind::AgentObo => {
                set(
                    &mut c,
                    &[
                        ("idtyp", "user"),
                        ("oid", DEV_USER),
                        ("sub", DEV_USER),
                        ("azp", DEV_AGENT),
                        ("xms_par_app_azp", DEV_BLUEPRINT),
                        ("xms_act_fct", "3 9 11"),
                        ("xms_sub_fct", "1 2"),
                    ],
                );
                scopes = Some(delegated());
            }
            DevKind::AgentUser => {
                set(
                    &mut c,
                    &[
                        ("idtyp", "user"),
                        ("oid", DEV_AGENT_USER),
                        ("sub", DEV_AGENT_USER),
                        ("azp", DEV_AGENT),
                        ("xms_par_app_azp", DEV_BLUEPRINT),
                        ("xms_act_fct", "1 9 11"),
                        ("xms_sub_fct", "1 13"),
                    ],
                );
                scopes = Some(delegated());
            }
        }
        if self.scopes.is_some() || self.roles.is_some() {
            (scopes, roles) = (self.scopes.clone(), self.roles.clone());
        }
        if let Some(s) = scopes.filter(|s| !s.is_empty()) {
            c["scp"] = s.join(" ").into();
        }
        if let Some(r) = roles.filter(|r| !r.is_empty()) {
            c["roles"] = r.into();
        }
        if let Some(map) = c.as_object_mut() {
            for (name, value) in &self.claims {
                match value {
                    Value::Null => map.remove(name),
                    v => map.insert(name.clone(), v.clone()),
                };
            }
        }
        c
    }
}

fn set(claims: &mut Value, values: &[(&str, &str)]) {
    for (name, value) in values {
        claims[*name] = (*value).into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_their_entra_shapes_and_overrides_win() {
        let user = TokenRequest::default().claims("https://i");
        assert_eq!(user["scp"], "Models.Invoke Models.Read");
        assert!(user.get("roles").is_none());
        assert_eq!(
            user["exp"].as_i64().unwrap() - user["iat"].as_i64().unwrap(),
            3600
        );

        let agent = TokenRequest::of(DevKind::Agent).claims("https://i");
        assert_eq!(
            (agent["idtyp"].as_str(), agent["azp"].as_str()),
            (Some("app"), Some(DEV_AGENT))
        );
        assert_eq!(agent["roles"], json!(["Models.Invoke"]));

        let shaped = TokenRequest {
            kind: DevKind::AgentObo,
            roles: Some(vec!["Tools.Call".into()]),
            lifetime_secs: -60,
            claims: [
                ("acrs".to_owned(), json!(["c1"])),
                ("ver".to_owned(), Value::Null),
            ]
            .into_iter()
            .collect(),
            ..TokenRequest::default()
        }
        .claims("https://i");
        assert!(
            shaped.get("scp").is_none(),
            "explicit permissions replace the defaults"
        );
        assert_eq!(shaped["roles"], json!(["Tools.Call"]));
        assert_eq!(shaped["acrs"], json!(["c1"]));
        assert!(shaped.get("ver").is_none());
        assert!(shaped["exp"].as_i64() < shaped["iat"].as_i64());
        assert!(shaped["nbf"].as_i64() <= shaped["exp"].as_i64());
    }
}
