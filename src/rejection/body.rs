//! The JSON bodies of the gateway's own refusals, in the envelope that
//! OpenAI-compatible SDKs show their users:
//! `{"error":{"message":…,"type":…,"code":…}}`. `code` is the stable
//! reason of the metric label and the audit record; `type` follows the
//! status (`invalid_request_error`, `authentication_error`,
//! `permission_error`, `api_error`); `message` says the reason in words.
//! Every body is a constant: nothing from the request or the token, and no
//! library message, is ever in one.

use crate::policy::Denial;
use crate::token::TokenError;
use crate::upstream::ForwardError;

use bytes::Bytes;

use super::{McpFault, Rejection};
use crate::call::McpTarget;

/// One body, built at compile time. Messages hold no `"` or `\`.
macro_rules! envelope {
    ($type:literal, $code:literal, $message:literal) => {
        concat!(
            r#"{"error":{"message":""#,
            $message,
            r#"","type":""#,
            $type,
            r#"","code":""#,
            $code,
            r#""}}"#
        )
    };
}

/// A JSON-RPC error without an id: what MCP clients read from a refused
/// message (the id of a message that could be read two ways is not known).
macro_rules! jsonrpc_error {
    ($code:literal, $message:literal) => {
        concat!(
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":"#,
            $code,
            r#","message":""#,
            $message,
            r#""}}"#
        )
    };
}

/// The body for `rejection`.
pub(crate) fn of(rejection: &Rejection) -> Bytes {
    match (constant(rejection), rejection) {
        (Some(body), _) => Bytes::from_static(body.as_bytes()),
        (None, Rejection::McpNotAllowed { target, id, hidden }) => {
            Bytes::from(mcp_not_allowed(target, id.as_deref(), *hidden))
        }
        (
            None,
            Rejection::McpRateLimited {
                id,
                retry_after_secs,
            },
        ) => {
            let id = id.as_deref().unwrap_or("null");
            Bytes::from(format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32000,"message":"Too many calls to this tool; retry in {retry_after_secs} s."}}}}"#
            ))
        }
        (
            None,
            Rejection::BudgetExceeded {
                budget,
                quota,
                retry_after_secs,
            },
        ) => {
            // The name comes from the config (letters, digits, '_-.').
            let (code, what) = match quota {
                true => ("budget_quota_exceeded", "quota"),
                false => ("budget_rate_exceeded", "rate"),
            };
            let ty = match quota {
                true => "permission_error",
                false => "rate_limit_error",
            };
            Bytes::from(format!(
                r#"{{"error":{{"message":"Token budget '{budget}' ({what}) is spent for this caller; it renews in {retry_after_secs} s.","type":"{ty}","code":"{code}"}}}}"#
            ))
        }
        (None, _) => Bytes::new(),
    }
}

/// The JSON-RPC error of a call no rule allows: by default what a server
/// answers for a tool or prompt it does not have (`-32602`) or a resource
/// it cannot find (`-32002`), so that what the caller may not use cannot
/// be told from what does not exist.
fn mcp_not_allowed(target: &McpTarget, id: Option<&str>, hidden: bool) -> String {
    let (code, message) = match (target, hidden) {
        (McpTarget::Tool(n), true) => (-32602, format!("Unknown tool: {n}")),
        (McpTarget::Prompt(n), true) => (-32602, format!("Unknown prompt: {n}")),
        (McpTarget::Resource(u), true) => (-32002, format!("Resource not found: {u}")),
        (McpTarget::Tool(n), false) => (-32602, format!("Tool not allowed for this caller: {n}")),
        (McpTarget::Prompt(n), false) => {
            (-32602, format!("Prompt not allowed for this caller: {n}"))
        }
        (McpTarget::Resource(u), false) => {
            (-32002, format!("Resource not allowed for this caller: {u}"))
        }
    };
    // The id is JSON text the message parser read (a string or a number).
    let id = id.unwrap_or("null");
    let message = serde_json::Value::String(message);
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message}}}}}"#)
}

/// The constant body of a rejection; `None` for one whose answer carries
/// what the call asked.
fn constant(rejection: &Rejection) -> Option<&'static str> {
    Some(match rejection {
        Rejection::McpNotAllowed { .. }
        | Rejection::McpRateLimited { .. }
        | Rejection::BudgetExceeded { .. } => return None,
        Rejection::ModelInvalid => envelope!(
            "invalid_request_error",
            "model_request_invalid",
            "The request body is not one JSON object with the fields a model API reads (a key given twice, a field of the wrong type, or not JSON)."
        ),
        Rejection::ModelMissing => envelope!(
            "invalid_request_error",
            "model_missing",
            "The request names no model (in its path, body or query)."
        ),
        Rejection::OboNotAUser => envelope!(
            "permission_error",
            "obo_not_a_user",
            "This API is called on behalf of a signed-in user: app-only and agent callers cannot use it."
        ),
        Rejection::OboClaimsChallenge { capable: true, .. } => envelope!(
            "authentication_error",
            "obo_claims_challenge",
            "Additional authentication is required before this API can be called on your behalf: answer the claims challenge in WWW-Authenticate."
        ),
        Rejection::OboClaimsChallenge { capable: false, .. } => OBO_INTERACTION_REQUIRED,
        Rejection::StoreUnavailable => envelope!(
            "api_error",
            "store_unavailable",
            "Token budgets and MCP session bindings cannot be checked right now (their store is unreachable); retry later."
        ),
        Rejection::MissingToken => envelope!(
            "authentication_error",
            "missing_token",
            "This API needs an access token: send it as 'Authorization: Bearer <token>'."
        ),
        Rejection::InvalidRequest => envelope!(
            "invalid_request_error",
            "invalid_request",
            "Send exactly one bearer token, in the Authorization header (not in the query or the body)."
        ),
        Rejection::BadPath => envelope!(
            "invalid_request_error",
            "bad_path",
            "The request path is not allowed: it is ambiguous (encoded slashes or dots), climbs above the root, or has ';' parameters."
        ),
        Rejection::BadHost => envelope!(
            "invalid_request_error",
            "bad_host",
            "The request needs exactly one Host that agrees with its target."
        ),
        Rejection::UriTooLong => envelope!(
            "invalid_request_error",
            "uri_too_long",
            "The request path and query are longer than this gateway accepts."
        ),
        Rejection::BodyTooLarge => BODY_TOO_LARGE,
        Rejection::BadRequestBody => BAD_REQUEST_BODY,
        Rejection::OriginNotAllowed => envelope!(
            "permission_error",
            "origin_not_allowed",
            "Pages from this origin may not call this MCP server; its allowed_origins name the ones that may."
        ),
        Rejection::McpInvalid(f) => mcp(*f),
        // What MCP servers answer for a session they do not know.
        Rejection::McpSessionNotFound => jsonrpc_error!(-32001, "Session not found"),
        Rejection::McpScopeMissing { .. } => envelope!(
            "permission_error",
            "mcp_scope_missing",
            "This call needs a scope the access token does not have; the WWW-Authenticate header names it."
        ),
        Rejection::InvalidToken(e) => token(*e),
        Rejection::Denied(d) => denial(d),
        Rejection::KeysUnavailable => envelope!(
            "api_error",
            "keys_unavailable",
            "Token validation is temporarily unavailable (the issuer's signing keys cannot be fetched); retry later."
        ),
        Rejection::AuditUnavailable => envelope!(
            "api_error",
            "audit_unavailable",
            "The gateway cannot record requests right now; retry later."
        ),
    })
}

fn mcp(f: McpFault) -> &'static str {
    match f {
        McpFault::Malformed => jsonrpc_error!(
            -32600,
            "Invalid Request: not one JSON-RPC 2.0 message (a key given twice, a field of the wrong type, or not JSON)."
        ),
        McpFault::Batch => jsonrpc_error!(
            -32600,
            "Invalid Request: batches are not part of MCP; send one message per request."
        ),
        McpFault::HeaderMismatch => jsonrpc_error!(
            -32600,
            "Invalid Request: the Mcp-Method or Mcp-Name header does not match the message."
        ),
    }
}

const OBO_INTERACTION_REQUIRED: &str = envelope!(
    "permission_error",
    "obo_interaction_required",
    "Entra requires more of the user (Conditional Access) before this API can be called on their behalf; sign in again with a client that answers claims challenges."
);

const BODY_TOO_LARGE: &str = envelope!(
    "invalid_request_error",
    "body_too_large",
    "The request body is larger than this route accepts."
);

const BAD_REQUEST_BODY: &str = envelope!(
    "invalid_request_error",
    "bad_request_body",
    "The request body is not well framed, or ended early."
);

/// The body for a request that failed after it was allowed (a fault of
/// the client's body has its rejection's body).
pub(crate) fn forward(e: &ForwardError) -> &'static str {
    match e {
        ForwardError::Connect(_) => envelope!(
            "api_error",
            "upstream_unreachable",
            "The upstream could not be reached."
        ),
        ForwardError::Protocol(_) => envelope!(
            "api_error",
            "upstream_protocol_error",
            "The upstream's answer could not be read."
        ),
        ForwardError::Timeout(_) => envelope!(
            "api_error",
            "upstream_timeout",
            "The upstream did not answer in time."
        ),
        ForwardError::BodyTooLarge => BODY_TOO_LARGE,
        ForwardError::ClientBody(_) => BAD_REQUEST_BODY,
        ForwardError::ClaimsChallenge(_) => OBO_INTERACTION_REQUIRED,
        ForwardError::Credential(_) => envelope!(
            "api_error",
            "upstream_credential_unavailable",
            "The gateway cannot obtain its own credential for the upstream right now; retry later."
        ),
    }
}

fn token(e: TokenError) -> &'static str {
    match e {
        TokenError::Malformed => envelope!(
            "authentication_error",
            "malformed",
            "The access token is not a well-formed JWT."
        ),
        TokenError::Oversize => envelope!(
            "authentication_error",
            "oversize",
            "The access token is larger than this API accepts."
        ),
        TokenError::UnknownIssuer => envelope!(
            "authentication_error",
            "wrong_issuer",
            "The access token's issuer (iss) is not one this API trusts: request the token from the authority and tenant the API is configured for."
        ),
        TokenError::AlgorithmNotAllowed => envelope!(
            "authentication_error",
            "alg_not_allowed",
            "The access token's signing algorithm is not allowed here."
        ),
        TokenError::WrongTyp => envelope!(
            "authentication_error",
            "wrong_typ",
            "The access token's type (typ) is not accepted: send an access token, not an ID token."
        ),
        TokenError::UnsupportedCrit => envelope!(
            "authentication_error",
            "unsupported_crit",
            "The access token has critical header parameters this API does not understand."
        ),
        TokenError::MissingKid => envelope!(
            "authentication_error",
            "missing_kid",
            "The access token names no signing key (kid)."
        ),
        TokenError::UnknownKid => envelope!(
            "authentication_error",
            "unknown_kid",
            "The access token's signing key (kid) is not among its issuer's published keys."
        ),
        TokenError::KeyIssuerMismatch => envelope!(
            "authentication_error",
            "key_issuer_mismatch",
            "The access token's signing key belongs to another issuer."
        ),
        TokenError::BadSignature => envelope!(
            "authentication_error",
            "bad_signature",
            "The access token's signature is not valid."
        ),
        TokenError::Expired => envelope!(
            "authentication_error",
            "expired",
            "The access token has expired: request a new one."
        ),
        TokenError::NotYetValid => envelope!(
            "authentication_error",
            "not_yet_valid",
            "The access token is not valid yet (its nbf is in the future): check the clocks."
        ),
        TokenError::MissingExp => envelope!(
            "authentication_error",
            "missing_exp",
            "The access token has no expiry (exp)."
        ),
        TokenError::InvalidClaims => envelope!(
            "authentication_error",
            "invalid_claims",
            "The access token's claims are not valid: a claim has the wrong type or is repeated, or its version (ver) does not match its issuer."
        ),
        TokenError::WrongAudience => envelope!(
            "authentication_error",
            "wrong_audience",
            "The access token was issued for another audience (aud): request a token for this API."
        ),
        TokenError::WrongTenant => envelope!(
            "authentication_error",
            "wrong_tenant",
            "The access token's tenant (tid) is not accepted here."
        ),
        TokenError::SenderConstrained => envelope!(
            "authentication_error",
            "sender_constrained",
            "Sender-constrained (DPoP or certificate-bound) tokens are not accepted: send a bearer token."
        ),
        TokenError::IssuerNotAccepted => envelope!(
            "authentication_error",
            "issuer_not_accepted",
            "This route does not accept tokens from this token's issuer."
        ),
        TokenError::Revoked => envelope!(
            "authentication_error",
            "revoked",
            "The access token was revoked: sign in again."
        ),
    }
}

fn denial(d: &Denial) -> &'static str {
    match d {
        Denial::NoRoute => envelope!(
            "permission_error",
            "no_route",
            "No route of this gateway matches the request's method and path."
        ),
        // The 401 of a route that takes another issuer's tokens.
        Denial::IssuerNotAccepted => token(TokenError::IssuerNotAccepted),
        Denial::KindNotAllowed => envelope!(
            "permission_error",
            "kind_not_allowed",
            "This route does not accept this kind of caller (user, app or agent)."
        ),
        Denial::NoPermissions => envelope!(
            "permission_error",
            "no_permissions",
            "The access token carries no scopes or roles: is it an ID token, or was the API never consented to in this tenant?"
        ),
        Denial::InsufficientScope => envelope!(
            "permission_error",
            "scope_missing",
            "The access token lacks the scopes or roles this route requires (see the scope in WWW-Authenticate)."
        ),
        Denial::AgentUnregistered => envelope!(
            "permission_error",
            "agent_unregistered",
            "This agent is not registered with the gateway."
        ),
        Denial::AgentDisabled => envelope!(
            "permission_error",
            "agent_disabled",
            "This agent is disabled."
        ),
        Denial::AgentExpired => envelope!(
            "permission_error",
            "agent_expired",
            "This agent's registration has expired."
        ),
        Denial::AgentNotAllowed => envelope!(
            "permission_error",
            "agent_not_allowed",
            "This agent's registration does not allow this route, method or parameter."
        ),
        Denial::AgentPermissionMissing => envelope!(
            "permission_error",
            "agent_permission_missing",
            "The access token lacks a permission this agent's registration requires."
        ),
        Denial::ModelNotAllowed => envelope!(
            "permission_error",
            "model_not_allowed",
            "This caller may not use the model the request names (see the route's and the agent's model lists)."
        ),
        Denial::GroupsOverage => envelope!(
            "permission_error",
            "groups_overage",
            "The access token's group list is incomplete (groups overage) and a policy depends on it."
        ),
        Denial::PolicyBlock(_) => envelope!(
            "permission_error",
            "policy_block",
            "Access is blocked by a conditional-access policy."
        ),
        Denial::PolicyUnmet {
            claims_challenge: Some(_),
            ..
        } => envelope!(
            "authentication_error",
            "policy_unmet",
            "Additional authentication is required: answer the claims challenge in WWW-Authenticate."
        ),
        Denial::PolicyUnmet { .. } => envelope!(
            "permission_error",
            "policy_unmet",
            "The request does not meet a conditional-access policy's requirements."
        ),
    }
}

/// The `type` a status gets; the bodies above spell it out, the tests hold
/// them to it.
#[cfg(test)]
pub(crate) fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        500.. => "api_error",
        _ => "invalid_request_error",
    }
}
