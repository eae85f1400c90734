//! Rejections → responses. The only writer of the gateway's own refusals:
//! 400/401/403/503 for auth (RFC 6750 §3, §3.1), 413/414 for limits, with
//! the bodies of [`body`]. Challenge values are built once per snapshot with
//! the realm baked in and cloned per rejection (a refcount bump). Nothing
//! from the request, the token or a library message reaches a header or
//! body, but for the JSON-RPC id and the name of a denied MCP call, which
//! its answer must carry (JSON-encoded).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Response, StatusCode};

use crate::call::McpTarget;
use crate::policy::{Denial, PolicySet, Route};
use crate::token::{BearerError, TokenError};

pub(crate) mod body;

/// Why the gateway refused a request before forwarding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// No bearer credentials (401, challenge without an error code).
    MissingToken,
    /// Two credentials, a malformed header or a token in the query (400).
    InvalidRequest,
    /// The request path is ambiguous or climbs above the root (400).
    BadPath,
    /// Two `Host` headers, none on HTTP/1.1, or one that disagrees with the
    /// request target or `:authority` (400, RFC 9112 §3.2, RFC 9113 §8.3.1).
    BadHost,
    /// The path and query are longer than `limits.max_uri_bytes` (414).
    UriTooLong,
    /// The body is larger than the route's `max_body_bytes` (413).
    BodyTooLarge,
    /// The body broke its chunked framing, or the client left while
    /// sending it (400).
    BadRequestBody,
    /// A browser page from another origin calls an MCP route (403: the
    /// MCP transport's protection against DNS rebinding).
    OriginNotAllowed,
    /// A message to an MCP route that could be read two ways (400, with a
    /// JSON-RPC error).
    McpInvalid(McpFault),
    /// No MCP rule lets this caller reach the tool, prompt or resource:
    /// answered 200 with the JSON-RPC error a server without it would send
    /// (`hidden`), or one that says it is not allowed.
    McpNotAllowed {
        target: McpTarget,
        /// The call's JSON-RPC id, as its JSON text.
        id: Option<String>,
        hidden: bool,
    },
    /// A delegated caller short of the scopes an MCP rule asks for this
    /// call (403 `insufficient_scope` naming them, in full form).
    McpScopeMissing {
        scope: Arc<str>,
    },
    /// An MCP session presented by another principal than the one that
    /// opened it: 404, as for a session that does not exist.
    McpSessionNotFound,
    /// A caller past a rule's `calls_per_minute` for a tool: 429 with
    /// `Retry-After`, and a JSON-RPC error with the call's id.
    McpRateLimited {
        id: Option<String>,
        retry_after_secs: u64,
    },
    /// A model API request whose body cannot be read one way (400).
    ModelInvalid,
    /// A model API request that names no model (400).
    ModelMissing,
    /// A budget that applies has no room for the request: 429 with
    /// `Retry-After` for a per-minute rate, 403 for a longer quota.
    BudgetExceeded {
        budget: Arc<str>,
        quota: bool,
        /// Until the budget's window renews.
        retry_after_secs: u64,
    },
    /// The route's upstream is called on behalf of a user, and the caller
    /// is not one (403): Entra exchanges user tokens only.
    OboNotAUser,
    /// Entra asks the user for more (Conditional Access) before it
    /// exchanges their token: the claims challenge (401) to a client that
    /// declared it answers them (`xms_cc` cp1), else 403.
    OboClaimsChallenge {
        /// The challenge's `claims`: base64 of Entra's JSON.
        claims: Arc<str>,
        capable: bool,
    },
    /// The shared store (budgets, MCP session bindings) cannot be reached
    /// and is configured to deny (503 + Retry-After).
    StoreUnavailable,
    InvalidToken(TokenError),
    Denied(Denial),
    /// The issuer's keys are not loaded or are too stale (503 + Retry-After).
    KeysUnavailable,
    /// The audit trail cannot record the request (its queue stayed full,
    /// or its sink fails with `on_failure = "deny"`): 503 + Retry-After.
    AuditUnavailable,
}

/// Why a message to an MCP route is refused before it is authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpFault {
    /// Not one JSON-RPC 2.0 message: not JSON, a key twice, a field of the
    /// wrong type, or no `jsonrpc: "2.0"`.
    Malformed,
    /// An array of messages: batching left the protocol (2025-06-18).
    Batch,
    /// `Mcp-Method` or `Mcp-Name` says something the body does not.
    HeaderMismatch,
}

impl McpFault {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "mcp_malformed",
            Self::Batch => "mcp_batch",
            Self::HeaderMismatch => "mcp_header_mismatch",
        }
    }
}

impl From<BearerError> for Rejection {
    fn from(e: BearerError) -> Self {
        match e {
            BearerError::Missing => Self::MissingToken,
            BearerError::InvalidRequest => Self::InvalidRequest,
        }
    }
}

impl Rejection {
    /// Stable machine-readable reason (metric label, audit, tests).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidRequest => "invalid_request",
            Self::BadPath => "bad_path",
            Self::BadHost => "bad_host",
            Self::UriTooLong => "uri_too_long",
            Self::BodyTooLarge => "body_too_large",
            Self::BadRequestBody => "bad_request_body",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::McpInvalid(f) => f.reason(),
            Self::McpNotAllowed { .. } => "mcp_not_allowed",
            Self::McpScopeMissing { .. } => "mcp_scope_missing",
            Self::McpSessionNotFound => "mcp_session_not_found",
            Self::McpRateLimited { .. } => "mcp_rate_limited",
            Self::ModelInvalid => "model_request_invalid",
            Self::ModelMissing => "model_missing",
            Self::BudgetExceeded { quota: false, .. } => "budget_rate_exceeded",
            Self::BudgetExceeded { quota: true, .. } => "budget_quota_exceeded",
            Self::StoreUnavailable => "store_unavailable",
            Self::OboNotAUser => "obo_not_a_user",
            Self::OboClaimsChallenge { capable: true, .. } => "obo_claims_challenge",
            Self::OboClaimsChallenge { capable: false, .. } => "obo_interaction_required",
            Self::InvalidToken(e) => e.reason(),
            Self::Denied(d) => d.reason(),
            Self::KeysUnavailable => "keys_unavailable",
            Self::AuditUnavailable => "audit_unavailable",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingToken | Self::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest
            | Self::BadPath
            | Self::BadHost
            | Self::BadRequestBody
            | Self::McpInvalid(_)
            | Self::ModelInvalid
            | Self::ModelMissing => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::McpSessionNotFound => StatusCode::NOT_FOUND,
            Self::McpRateLimited { .. } | Self::BudgetExceeded { quota: false, .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            // Why (as Azure API Management answers a spent token quota):
            // retrying before the window renews cannot succeed.
            Self::BudgetExceeded { quota: true, .. } => StatusCode::FORBIDDEN,
            Self::OboNotAUser | Self::OboClaimsChallenge { capable: false, .. } => {
                StatusCode::FORBIDDEN
            }
            Self::OboClaimsChallenge { capable: true, .. } => StatusCode::UNAUTHORIZED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Denied(Denial::IssuerNotAccepted) => StatusCode::UNAUTHORIZED,
            // Why (Entra claims challenge): the step-up answer must be a 401.
            Self::Denied(Denial::PolicyUnmet {
                claims_challenge: Some(_),
                ..
            }) => StatusCode::UNAUTHORIZED,
            Self::Denied(_) | Self::OriginNotAllowed | Self::McpScopeMissing { .. } => {
                StatusCode::FORBIDDEN
            }
            // Why: what a server without the tool answers; clients treat a
            // 4xx as an authentication failure and stop.
            Self::McpNotAllowed { .. } => StatusCode::OK,
            Self::KeysUnavailable | Self::AuditUnavailable | Self::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }
}

/// Challenge header values for one realm, built once per snapshot.
pub struct Challenges {
    realm: String,
    insufficient_scope: HashMap<Arc<str>, HeaderValue>,
    /// Per policy with an authentication context: the claims challenge.
    insufficient_claims: HashMap<Arc<str>, HeaderValue>,
    missing: HeaderValue,
    invalid_request: HeaderValue,
    invalid_token: Vec<HeaderValue>,
}

impl Challenges {
    /// `realm` and the routes' scopes must be quoted-string safe (checked
    /// when the config loads).
    pub fn new(realm: &str, routes: &[Arc<Route>], policies: &PolicySet) -> Self {
        let build = |text: String| {
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
        };
        let invalid_token = TokenError::ALL
            .iter()
            .map(|e| {
                build(format!(
                    "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                    e.description()
                ))
            })
            .collect();
        let insufficient_scope = routes
            .iter()
            .map(|r| {
                let text = format!(
                    "Bearer realm=\"{realm}\", error=\"insufficient_scope\", scope=\"{}\"",
                    r.required_scope()
                );
                (r.name_arc().clone(), build(text))
            })
            .collect();
        // Entra's format for a claims challenge: `realm=""` with the common
        // authorization_uri, one header, status 401.
        let insufficient_claims = policies
            .claims_challenges()
            .map(|(name, claims)| {
                let text = format!(
                    "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"{claims}\""
                );
                (name.clone(), build(text))
            })
            .collect();
        Self {
            realm: realm.to_owned(),
            insufficient_scope,
            insufficient_claims,
            missing: build(format!("Bearer realm=\"{realm}\"")),
            invalid_request: build(format!(
                "Bearer realm=\"{realm}\", error=\"invalid_request\", error_description=\"Send one bearer token in the Authorization header\""
            )),
            invalid_token,
        }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn invalid_token(&self, e: TokenError) -> HeaderValue {
        let i = TokenError::ALL.iter().position(|x| *x == e).unwrap_or(0);
        self.invalid_token[i].clone()
    }

    /// The full response for a rejection. `route` supplies the prebuilt
    /// insufficient-scope challenge where one applies.
    pub fn respond(&self, rejection: &Rejection, route: Option<&Route>) -> Response<Bytes> {
        let challenge = match rejection {
            Rejection::MissingToken => Some(self.missing.clone()),
            Rejection::InvalidRequest => Some(self.invalid_request.clone()),
            Rejection::InvalidToken(e) => Some(self.invalid_token(*e)),
            Rejection::Denied(Denial::IssuerNotAccepted) => {
                Some(self.invalid_token(TokenError::IssuerNotAccepted))
            }
            Rejection::Denied(Denial::InsufficientScope | Denial::NoPermissions) => {
                route.and_then(|r| self.insufficient_scope.get(r.name()).cloned())
            }
            Rejection::Denied(Denial::PolicyUnmet {
                claims_challenge: Some(policy),
                ..
            }) => self.insufficient_claims.get(policy).cloned(),
            // Entra's claims challenge format (base64: header-safe).
            Rejection::OboClaimsChallenge {
                claims,
                capable: true,
            } => HeaderValue::from_str(&format!(
                "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"{claims}\""
            ))
            .ok(),
            // The scope comes from the config (checked quoted-string safe).
            Rejection::McpScopeMissing { scope } => HeaderValue::from_str(&format!(
                "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{scope}\"",
                self.realm
            ))
            .ok(),
            _ => None,
        };
        // Why (MCP authorization, RFC 9728 §5.1): an MCP client finds the
        // authorization server through the metadata the challenge names.
        let challenge = match (challenge, route.and_then(Route::mcp)) {
            (Some(c), Some(mcp)) => Some(with_resource_metadata(&c, &mcp.metadata_url)),
            (c, _) => c,
        };
        let mut resp = Response::new(body::of(rejection));
        *resp.status_mut() = rejection.status();
        let h = resp.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Why (RFC 6750 §5.3): auth answers must not be cached by intermediaries.
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(c) = challenge {
            h.insert(WWW_AUTHENTICATE, c);
        }
        match rejection {
            Rejection::KeysUnavailable => {
                h.insert(RETRY_AFTER, HeaderValue::from_static("30"));
            }
            Rejection::AuditUnavailable | Rejection::StoreUnavailable => {
                h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Rejection::BudgetExceeded {
                retry_after_secs, ..
            } => {
                h.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            Rejection::McpRateLimited {
                retry_after_secs, ..
            } => {
                h.insert(RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ => {}
        }
        resp
    }
}

/// `challenge` with the `resource_metadata` parameter. The URL was checked
/// to be a URI when the config loaded, so it is header-safe.
fn with_resource_metadata(challenge: &HeaderValue, url: &str) -> HeaderValue {
    let mut text = Vec::with_capacity(challenge.len() + url.len() + 22);
    text.extend_from_slice(challenge.as_bytes());
    text.extend_from_slice(b", resource_metadata=\"");
    text.extend_from_slice(url.as_bytes());
    text.push(b'"');
    HeaderValue::from_bytes(&text).unwrap_or_else(|_| challenge.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn challenge(r: &Rejection) -> Option<String> {
        let c = Challenges::new("api", &[], &PolicySet::compile(&[], &[], true));
        let resp: Response<Bytes> = c.respond(r, None);
        assert_eq!(resp.headers()[CACHE_CONTROL], "no-store");
        resp.headers()
            .get(WWW_AUTHENTICATE)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn rejection_table() {
        let cases: &[(Rejection, u16, Option<&str>)] = &[
            (Rejection::MissingToken, 401, Some("Bearer realm=\"api\"")),
            (
                Rejection::InvalidRequest,
                400,
                Some(
                    "Bearer realm=\"api\", error=\"invalid_request\", error_description=\"Send one bearer token in the Authorization header\"",
                ),
            ),
            (
                Rejection::InvalidToken(TokenError::Expired),
                401,
                Some(
                    "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"The access token expired\"",
                ),
            ),
            (Rejection::Denied(Denial::NoRoute), 403, None),
            (Rejection::BadPath, 400, None),
            (Rejection::BadHost, 400, None),
            (Rejection::UriTooLong, 414, None),
            (Rejection::BodyTooLarge, 413, None),
            (Rejection::KeysUnavailable, 503, None),
            (Rejection::AuditUnavailable, 503, None),
        ];
        for (r, status, want) in cases {
            assert_eq!(r.status().as_u16(), *status, "{r:?}");
            assert_eq!(challenge(r).as_deref(), *want, "{r:?}");
        }
    }

    #[test]
    fn every_body_is_the_envelope_with_the_reason_as_its_code() {
        let policy: Arc<str> = Arc::from("p");
        let mut rejections = vec![
            Rejection::MissingToken,
            Rejection::InvalidRequest,
            Rejection::BadPath,
            Rejection::BadHost,
            Rejection::UriTooLong,
            Rejection::BodyTooLarge,
            Rejection::BadRequestBody,
            Rejection::OriginNotAllowed,
            Rejection::KeysUnavailable,
            Rejection::AuditUnavailable,
            Rejection::ModelInvalid,
            Rejection::ModelMissing,
            Rejection::BudgetExceeded {
                budget: Arc::from("b"),
                quota: false,
                retry_after_secs: 7,
            },
            Rejection::BudgetExceeded {
                budget: Arc::from("b"),
                quota: true,
                retry_after_secs: 7,
            },
            Rejection::StoreUnavailable,
            Rejection::OboNotAUser,
            Rejection::OboClaimsChallenge {
                claims: Arc::from("e30="),
                capable: true,
            },
        ];
        rejections.extend(TokenError::ALL.map(Rejection::InvalidToken));
        rejections.extend(
            [
                Denial::NoRoute,
                Denial::IssuerNotAccepted,
                Denial::KindNotAllowed,
                Denial::NoPermissions,
                Denial::InsufficientScope,
                Denial::AgentUnregistered,
                Denial::AgentDisabled,
                Denial::AgentExpired,
                Denial::AgentNotAllowed,
                Denial::AgentPermissionMissing,
                Denial::ModelNotAllowed,
                Denial::GroupsOverage,
                Denial::PolicyBlock(policy.clone()),
                Denial::PolicyUnmet {
                    policy: policy.clone(),
                    claims_challenge: Some(policy.clone()),
                },
                Denial::PolicyUnmet {
                    policy: policy.clone(),
                    claims_challenge: None,
                },
            ]
            .map(Rejection::Denied),
        );
        let mut messages = std::collections::HashSet::new();
        let mut check = |text: &str, status: u16, reason: &str| {
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            let e = &v["error"];
            assert_eq!(e["code"], reason, "{text}");
            assert_eq!(e["type"], body::error_type(status), "{text}");
            assert_eq!(v.as_object().unwrap().len(), 1);
            assert_eq!(e.as_object().unwrap().len(), 3, "{text}");
            let message = e["message"].as_str().unwrap();
            assert!(
                message.ends_with(['.', '?']) && message.len() > 20,
                "{text}"
            );
            messages.insert(message.to_owned());
        };
        for r in &rejections {
            let body = body::of(r);
            check(
                std::str::from_utf8(&body).unwrap(),
                r.status().as_u16(),
                r.reason(),
            );
        }
        use crate::upstream::ForwardError;
        for e in [
            ForwardError::Connect(String::new()),
            ForwardError::Protocol(String::new()),
            ForwardError::Timeout(std::time::Duration::ZERO),
            ForwardError::BodyTooLarge,
            ForwardError::ClientBody(String::new()),
            ForwardError::Credential(crate::credentials::CredentialError {
                credential: Arc::from("c"),
                reason: String::new(),
            }),
            ForwardError::ClaimsChallenge(String::new()),
        ] {
            check(body::forward(&e), e.status().as_u16(), e.reason());
        }
        // The claims challenge to a client that cannot answer it has the
        // forwarding error's body.
        let unanswerable = Rejection::OboClaimsChallenge {
            claims: Arc::from("e30="),
            capable: false,
        };
        check(
            std::str::from_utf8(&body::of(&unanswerable)).unwrap(),
            403,
            "obo_interaction_required",
        );
        // Each reason in its own words (the 401 of a route's issuer list
        // and of the token check are one reason; a forwarding error that is
        // the client's has its rejection's).
        assert_eq!(messages.len(), rejections.len() + 7 - 3);
    }

    #[test]
    fn every_token_error_has_a_valid_challenge() {
        let c = Challenges::new("portcullis", &[], &PolicySet::compile(&[], &[], true));
        for e in TokenError::ALL {
            let v = c.invalid_token(e);
            assert!(v.to_str().unwrap().contains(e.description()));
        }
    }

    mod properties {
        use std::path::Path;
        use std::sync::Arc;

        use proptest::prelude::*;

        use super::super::*;
        use crate::snapshot::{KeyEnv, Snapshot};

        /// Checks `value` against RFC 7235 §4.1: `Bearer` then
        /// comma-separated `token=quoted-string` parameters; returns them.
        fn parse_challenge(value: &str) -> Option<Vec<(String, String)>> {
            let rest = value.strip_prefix("Bearer")?;
            if rest.is_empty() {
                return Some(Vec::new());
            }
            let mut rest = rest.strip_prefix(' ')?;
            let mut params = Vec::new();
            loop {
                let (name, after) = rest.split_once("=\"")?;
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return None;
                }
                let (quoted, after) = after.split_once('"')?;
                if quoted.contains('\\') {
                    return None;
                }
                params.push((name.to_owned(), quoted.to_owned()));
                if after.is_empty() {
                    return Some(params);
                }
                rest = after.strip_prefix(", ")?;
            }
        }

        fn quoted(s: &str) -> String {
            toml::Value::String(s.to_owned()).to_string()
        }

        proptest! {
            /// Whatever realm and scope the config accepts, every challenge
            /// built from them is a valid header value and a well-formed
            /// challenge that carries them unchanged.
            #[test]
            fn every_challenge_of_an_accepted_config_is_well_formed(
                // Mostly printable ASCII (most of it accepted), some of
                // anything (refused at load, or it would show here).
                realm in prop_oneof![3 => "[ -~]{0,12}", 1 => "\\PC{0,6}"],
                scope in prop_oneof![3 => "[!-~]{1,12}", 1 => "\\PC{1,6}"],
            ) {
                let text = format!(
                    "[server]\nrealm = {}\n[upstream]\nurl = \"http://127.0.0.1:1\"\n\
                     [[issuers]]\nname = \"idp\"\nkind = \"oidc\"\n\
                     issuer = \"https://idp.example\"\naudiences = [\"api://x\"]\n\
                     [[routes]]\nname = \"r\"\nprefix = \"/\"\nscopes = [{}]\n",
                    quoted(&realm),
                    quoted(&scope)
                );
                let Ok(config) = crate::config::parse(&text, Path::new(".")) else {
                    return Ok(());
                };
                let env = KeyEnv { observer: Arc::new(crate::metrics::Metrics::new().unwrap()) };
                let snapshot = Snapshot::compile(&config, &env).unwrap();
                let route = snapshot.routes.routes()[0].clone();
                let mut rejections = vec![
                    Rejection::MissingToken,
                    Rejection::InvalidRequest,
                    Rejection::Denied(Denial::InsufficientScope),
                ];
                rejections.extend(TokenError::ALL.iter().map(|e| Rejection::InvalidToken(*e)));
                for r in &rejections {
                    let resp = snapshot.challenges.respond(r, Some(&route));
                    let value = resp.headers()[WWW_AUTHENTICATE].to_str().unwrap();
                    let params = parse_challenge(value);
                    prop_assert!(params.is_some(), "{:?}: malformed challenge {:?}", r, value);
                    let params = params.unwrap();
                    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                    prop_assert_eq!(get("realm"), Some(realm.as_str()));
                    if matches!(r, Rejection::Denied(_)) {
                        prop_assert_eq!(get("scope"), Some(scope.as_str()));
                    }
                }
            }
        }
    }
}
