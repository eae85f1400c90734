//! Bearer tokens: extraction ([`extract_bearer`]), verification against the
//! issuers' keys ([`Verifier`]) and the verified-token cache.
//!
//! [`VerifiedClaims`] has private fields and only this module creates it:
//! holding one is proof that a token passed every check.

mod cache;
mod claims;
mod extract;
mod identity;
mod inspect;
mod intern;
mod lifetime;
mod raw;
mod reading;
mod verify;

pub use cache::{TokenCache, TokenDigest};
pub use claims::{Groups, ProfileHeaders, VerifiedClaims};
pub use extract::{BearerError, extract_bearer};
pub use identity::IdentityKind;
pub use inspect::TokenFacts;
pub use verify::{CacheUse, IssuerTrust, Verification, Verifier, VerifyError};

/// Why a token was refused. The same word appears in the metric label, the
/// audit record and the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenError {
    Malformed,
    Oversize,
    UnknownIssuer,
    AlgorithmNotAllowed,
    WrongTyp,
    UnsupportedCrit,
    MissingKid,
    UnknownKid,
    KeyIssuerMismatch,
    BadSignature,
    Expired,
    NotYetValid,
    MissingExp,
    InvalidClaims,
    WrongAudience,
    WrongTenant,
    SenderConstrained,
    IssuerNotAccepted,
    Revoked,
}

impl TokenError {
    pub const ALL: [TokenError; 19] = [
        Self::Malformed,
        Self::Oversize,
        Self::UnknownIssuer,
        Self::AlgorithmNotAllowed,
        Self::WrongTyp,
        Self::UnsupportedCrit,
        Self::MissingKid,
        Self::UnknownKid,
        Self::KeyIssuerMismatch,
        Self::BadSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::MissingExp,
        Self::InvalidClaims,
        Self::WrongAudience,
        Self::WrongTenant,
        Self::SenderConstrained,
        Self::IssuerNotAccepted,
        Self::Revoked,
    ];

    /// Stable machine-readable reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Oversize => "oversize",
            Self::UnknownIssuer => "wrong_issuer",
            Self::AlgorithmNotAllowed => "alg_not_allowed",
            Self::WrongTyp => "wrong_typ",
            Self::UnsupportedCrit => "unsupported_crit",
            Self::MissingKid => "missing_kid",
            Self::UnknownKid => "unknown_kid",
            Self::KeyIssuerMismatch => "key_issuer_mismatch",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::MissingExp => "missing_exp",
            Self::InvalidClaims => "invalid_claims",
            Self::WrongAudience => "wrong_audience",
            Self::WrongTenant => "wrong_tenant",
            Self::SenderConstrained => "sender_constrained",
            Self::IssuerNotAccepted => "issuer_not_accepted",
            Self::Revoked => "revoked",
        }
    }

    /// The fixed `error_description` for the challenge. Never a claim value
    /// or a library message.
    pub fn description(self) -> &'static str {
        match self {
            Self::Malformed => "The access token is malformed",
            Self::Oversize => "The access token is too large",
            Self::UnknownIssuer => "The token issuer is not trusted",
            Self::AlgorithmNotAllowed => "The token signing algorithm is not allowed",
            Self::WrongTyp => "The token type is not accepted",
            Self::UnsupportedCrit => "The token has critical header parameters",
            Self::MissingKid => "The token has no key id",
            Self::UnknownKid => "The token signing key is unknown",
            Self::KeyIssuerMismatch => "The token signing key belongs to another issuer",
            Self::BadSignature => "The token signature is invalid",
            Self::Expired => "The access token expired",
            Self::NotYetValid => "The access token is not yet valid",
            Self::MissingExp => "The access token has no expiry",
            Self::InvalidClaims => "The access token claims are invalid",
            Self::WrongAudience => "The token audience is not accepted",
            Self::WrongTenant => "The token tenant is not accepted",
            Self::SenderConstrained => "Sender-constrained tokens are not accepted",
            Self::IssuerNotAccepted => "The token issuer is not accepted for this resource",
            Self::Revoked => "The access token was revoked",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_quoted_string_safe_and_reasons_unique() {
        let mut reasons = std::collections::HashSet::new();
        for e in TokenError::ALL {
            assert!(
                e.description()
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
            );
            assert!(
                reasons.insert(e.reason()),
                "duplicate reason {}",
                e.reason()
            );
        }
    }
}
