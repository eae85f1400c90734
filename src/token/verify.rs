//! JWT verification (RFC 7519, RFC 8725, the Entra profile).
//!
//! The token's `iss` picks one [`IssuerTrust`] in O(1); everything else comes
//! from that trust and the key, never from the token header: the allowed
//! algorithms, the audiences, the key itself. `jku`, `x5u`, `jwk` and `x5c`
//! headers are never read.
//!
//! jsonwebtoken parses the header; the signature is checked by aws-lc-rs
//! against a key parsed once per JWKS fetch ([`crate::keys::VerifyKey`]), and
//! the payload is decoded once, here, into the claims we use and checked
//! (RFC 7519 §4.1: `exp`, `nbf`, `iss`, `aud`). Why not `jsonwebtoken::decode`:
//! it can verify only through a key it rebuilds on every call, and decodes the
//! payload three times.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, Header};
use serde::Deserialize;

use super::TokenError;
use super::cache::{AcceptedBy, TokenCache, TokenDigest};
use super::claims::{Shared, VerifiedClaims};
use super::lifetime::{check_lifetime, unix_now};
use super::raw::{Audience, RawClaims};
use super::reading::ClaimReading;
use crate::keys::{KeyLookup, KeySource};

/// Why verification did not produce claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    Invalid(TokenError),
    /// The issuer's keys are not loaded (or too stale): 503, not 401.
    KeysUnavailable,
}

impl From<TokenError> for VerifyError {
    fn from(e: TokenError) -> Self {
        Self::Invalid(e)
    }
}

/// How the verified-token cache took part in one verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    Hit,
    Miss,
    Off,
}

/// The outcome of one [`Verifier::verify`].
pub struct Verification {
    pub result: Result<Arc<VerifiedClaims>, VerifyError>,
    pub cache: CacheUse,
    /// SHA-256 of the token (not computed for an oversize one).
    pub digest: Option<TokenDigest>,
}

/// Numbers every [`IssuerTrust`] ever made, so cache entries can name theirs.
static NEXT_TRUST_ID: AtomicU64 = AtomicU64::new(1);

/// Everything needed to verify tokens bearing one exact `iss`.
pub struct IssuerTrust {
    /// Unique per instance: a reload that keeps an issuer keeps its trust
    /// (and the cache entries it accepted); one that changes it makes a new one.
    id: u64,
    pub name: Arc<str>,
    pub iss: Arc<str>,
    /// Entra tenant the `tid` claim must equal.
    pub tenant: Option<String>,
    /// Expected `ver` claim (Entra: "1.0" or "2.0").
    pub version: Option<&'static str>,
    /// Issuers a key's own `issuer` may name for this trust (after
    /// `{tenantid}` substitution): this `iss`, and for Entra v1 the v2 form.
    pub key_issuers: Vec<String>,
    pub keys: Arc<KeySource>,
    pub max_token_size: usize,
    pub clock_skew: u64,
    accepted_typ: Vec<String>,
    algorithms: Vec<Algorithm>,
    audiences: Vec<String>,
    reading: ClaimReading,
}

impl IssuerTrust {
    pub fn new(
        name: Arc<str>,
        anchor: &crate::config::IssuerAnchor,
        keys: Arc<KeySource>,
        settings: &crate::config::IssuerConfig,
    ) -> Self {
        Self {
            id: NEXT_TRUST_ID.fetch_add(1, Ordering::Relaxed),
            name,
            iss: Arc::from(anchor.iss.as_str()),
            tenant: anchor.tenant.clone(),
            version: anchor.version,
            key_issuers: anchor.key_issuers.clone(),
            keys,
            max_token_size: settings.max_token_size,
            clock_skew: settings.clock_skew.as_secs(),
            accepted_typ: settings.accepted_typ.clone(),
            algorithms: settings.algorithms.clone(),
            audiences: settings.audiences.clone(),
            reading: ClaimReading::new(settings.kind, settings.claims.clone()),
        }
    }
}

/// Verifies tokens for every configured issuer. Cheap to share (`Arc`).
pub struct Verifier {
    trusts: HashMap<Arc<str>, Arc<IssuerTrust>>,
    /// The largest per-issuer limit: checked before any parsing.
    max_token_size: usize,
    cache: Option<TokenCache>,
    /// Claim values shared among the tokens this verifier accepts.
    shared: Shared,
}

#[derive(Deserialize)]
struct AlgPeek {
    alg: String,
}

impl Verifier {
    pub fn new(trusts: Vec<Arc<IssuerTrust>>, cache: Option<TokenCache>) -> Self {
        let max_token_size = trusts.iter().map(|t| t.max_token_size).max().unwrap_or(0);
        let trusts = trusts.into_iter().map(|t| (t.iss.clone(), t)).collect();
        // Claims outlive their request only in the cache.
        let shared = match cache {
            Some(_) => Shared::default(),
            None => Shared::off(),
        };
        Self {
            trusts,
            max_token_size,
            cache,
            shared,
        }
    }

    pub fn cache(&self) -> Option<&TokenCache> {
        self.cache.as_ref()
    }

    /// The last second (Unix time) `claims` are accepted: their `exp`
    /// plus the clock skew of the issuer that accepted them.
    pub fn accepted_until(&self, claims: &VerifiedClaims) -> u64 {
        let skew = self.trusts.get(claims.iss()).map_or(0, |t| t.clock_skew);
        claims.exp().saturating_add(skew)
    }

    /// The configured issuer name that accepts `iss`, if any.
    pub fn issuer_name(&self, iss: &str) -> Option<&str> {
        self.trusts.get(iss).map(|t| &*t.name)
    }

    /// Claims read as the issuer their `iss` names would read them, taken
    /// on trust: nothing is verified. For `portcullis explain --claims`
    /// only, which says so; the gateway never calls it.
    pub fn claims_taken_on_trust(
        &self,
        claims: serde_json::Value,
    ) -> Result<VerifiedClaims, String> {
        let iss = claims.get("iss").and_then(serde_json::Value::as_str);
        match iss.and_then(|iss| self.trusts.get(iss)) {
            Some(t) => VerifiedClaims::taken_on_trust(&t.name, &t.reading, claims),
            None => VerifiedClaims::taken_on_trust(
                "(no configured issuer)",
                &ClaimReading::default(),
                claims,
            ),
        }
    }

    /// Verifies `token` now. Cache hits skip the signature check but not the
    /// expiry check. Also says how the cache was used, for metrics, and the
    /// token's digest, for the audit record.
    pub async fn verify(&self, token: &str) -> Verification {
        // Why: refuse oversize input before spending anything on it.
        if token.len() > self.max_token_size {
            return Verification {
                result: Err(TokenError::Oversize.into()),
                cache: CacheUse::Off,
                digest: None,
            };
        }
        let now = unix_now();
        let digest = TokenCache::digest(token);
        let Some(cache) = &self.cache else {
            return Verification {
                result: self
                    .verify_uncached(token, now)
                    .await
                    .map(|(c, ..)| Arc::new(c)),
                cache: CacheUse::Off,
                digest: Some(digest),
            };
        };
        // Why: an entry counts only while the trust that accepted it is in
        // force (a reload may change or drop the issuer) with the key set it
        // was verified under.
        if let Some((claims, accepted)) = cache.get(&digest, now)
            && self.trusts.get(claims.iss()).is_some_and(|t| {
                t.id == accepted.trust && t.keys.generation() == accepted.key_generation
            })
        {
            return Verification {
                result: Ok(claims),
                cache: CacheUse::Hit,
                digest: Some(digest),
            };
        }
        let result =
            self.verify_uncached(token, now)
                .await
                .map(|(claims, trust, key_generation)| {
                    let claims = Arc::new(claims);
                    let accepted = AcceptedBy {
                        trust: trust.id,
                        key_generation,
                    };
                    let skew = Duration::from_secs(trust.clock_skew);
                    cache.insert(digest, claims.clone(), accepted, now, skew);
                    claims
                });
        Verification {
            result,
            cache: CacheUse::Miss,
            digest: Some(digest),
        }
    }

    /// Every check, the signature included, in a box. Why boxed: a full
    /// verification (which may wait for a key fetch) is a future of about
    /// 1.4 KB, which inline would make every request's future that much
    /// larger, cache hits and public routes included, and be copied with
    /// it; a verification can afford the allocation.
    fn verify_uncached<'a>(
        &'a self,
        token: &'a str,
        now: u64,
    ) -> Pin<Box<impl Future<Output = Result<Accepted<'a>, VerifyError>> + 'a>> {
        Box::pin(self.verify_in_full(token, now))
    }

    async fn verify_in_full(&self, token: &str, now: u64) -> Result<Accepted<'_>, VerifyError> {
        let parts = Parts::split(token)?;
        let header = decode_header(token, parts.header)?;
        let (raw, payload) = decode_payload(parts.payload)?;
        let trust = self
            .trusts
            .get(raw.iss.as_str())
            .ok_or(TokenError::UnknownIssuer)?;
        if token.len() > trust.max_token_size {
            return Err(TokenError::Oversize.into());
        }
        check_header(trust, &header)?;
        let kid = header
            .kid
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or(TokenError::MissingKid)?;
        // Read before the key: a set replaced meanwhile leaves the entry stale.
        let generation = trust.keys.generation();
        let key = match trust.keys.key(kid).await {
            KeyLookup::Found(key) => key,
            KeyLookup::Unknown => return Err(TokenError::UnknownKid.into()),
            KeyLookup::Unavailable => return Err(VerifyError::KeysUnavailable),
        };
        if !key.accepts(header.alg) {
            return Err(TokenError::AlgorithmNotAllowed.into());
        }
        if let Some(key_issuer) = &key.issuer {
            // Why (Entra multi-tenant): a key published with an issuer may
            // only sign for that issuer, after `{tenantid}` substitution.
            let tenant = trust.tenant.as_deref().unwrap_or("");
            let expected = key_issuer.replace("{tenantid}", tenant);
            if !trust.key_issuers.contains(&expected) {
                return Err(TokenError::KeyIssuerMismatch.into());
            }
        }
        let signature = URL_SAFE_NO_PAD
            .decode(parts.signature)
            .map_err(|_| TokenError::Malformed)?;
        if !key.verifies(header.alg, parts.signed.as_bytes(), &signature) {
            return Err(TokenError::BadSignature.into());
        }
        check_claims(trust, &raw, now)?;
        Ok((
            VerifiedClaims::from_raw(
                trust.name.clone(),
                trust.iss.clone(),
                &trust.reading,
                raw,
                &payload,
                &self.shared,
            ),
            trust,
            generation,
        ))
    }
}

/// A verified token's claims, the trust that accepted it and the key
/// generation it was verified under.
type Accepted<'a> = (VerifiedClaims, &'a IssuerTrust, u64);

/// The three parts of a compact JWS (RFC 7515 §7.1), still encoded.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`: what the signature covers.
    signed: &'a str,
}

impl<'a> Parts<'a> {
    fn split(token: &'a str) -> Result<Self, TokenError> {
        let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let (header, payload) = signed.split_once('.').ok_or(TokenError::Malformed)?;
        if payload.contains('.') {
            return Err(TokenError::Malformed);
        }
        Ok(Self {
            header,
            payload,
            signature,
            signed,
        })
    }
}

/// The payload, decoded once. Why the UTF-8 check: JSON must be UTF-8
/// (RFC 8259 §8.1), and serde checks that only in the fields it keeps; a
/// payload with invalid bytes in any claim is malformed, whoever signed it.
/// A payload that is JSON but not claims we can read (`exp` as a string, a
/// claim named twice) is `invalid_claims`.
/// Returns the claims and the payload JSON.
fn decode_payload(payload: &str) -> Result<(RawClaims, Vec<u8>), TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let text = std::str::from_utf8(&bytes).map_err(|_| TokenError::Malformed)?;
    let raw = serde_json::from_str(text).map_err(|e| {
        if e.is_data() {
            TokenError::InvalidClaims
        } else {
            TokenError::Malformed
        }
    })?;
    Ok((raw, bytes))
}

fn decode_header(token: &str, encoded: &str) -> Result<Header, TokenError> {
    jsonwebtoken::decode_header(token).map_err(|_| {
        // Why: an `alg` we do not model (`none`, `HS*` variants, junk) makes
        // the header unparsable; report it as the algorithm it is.
        let alg_named = URL_SAFE_NO_PAD
            .decode(encoded)
            .ok()
            .and_then(|json| serde_json::from_slice::<AlgPeek>(&json).ok())
            .is_some_and(|peek| !peek.alg.is_empty());
        if alg_named {
            TokenError::AlgorithmNotAllowed
        } else {
            TokenError::Malformed
        }
    })
}

fn check_header(trust: &IssuerTrust, header: &Header) -> Result<(), TokenError> {
    if !trust.algorithms.contains(&header.alg) {
        return Err(TokenError::AlgorithmNotAllowed);
    }
    if header.crit.is_some() {
        // Why (RFC 7515 §4.1.11): we understand no extension, and the
        // library does not check `crit`; a critical one must be refused.
        return Err(TokenError::UnsupportedCrit);
    }
    match &header.typ {
        Some(typ)
            if trust
                .accepted_typ
                .iter()
                .any(|t| t.eq_ignore_ascii_case(typ)) =>
        {
            Ok(())
        }
        _ => Err(TokenError::WrongTyp),
    }
}

/// The registered claims (RFC 7519 §4.1) with the trust's clock skew, then
/// the Entra ones. `iss` needs no check: it chose the trust.
fn check_claims(trust: &IssuerTrust, raw: &RawClaims, now: u64) -> Result<(), TokenError> {
    let exp = raw.exp.ok_or(TokenError::MissingExp)?;
    check_lifetime(exp, raw.nbf, now, trust.clock_skew)?;
    let audience_ok = match &raw.aud {
        Some(Audience::One(aud)) => trust.audiences.contains(aud),
        Some(Audience::Many(auds)) => auds.iter().any(|a| trust.audiences.contains(a)),
        Some(Audience::Other(_)) | None => false,
    };
    if !audience_ok {
        return Err(TokenError::WrongAudience);
    }
    if raw.nbf.is_some_and(|nbf| nbf > exp) {
        return Err(TokenError::InvalidClaims);
    }
    if raw.cnf.is_some() {
        // Why: a `cnf` token is bound to a key (DPoP, mTLS) we do not check;
        // accepting it as a plain bearer token would defeat the binding.
        return Err(TokenError::SenderConstrained);
    }
    if let Some(tenant) = &trust.tenant {
        // Why: the tenant in `iss` picked the keys; `tid` must agree with it.
        if raw.tid.as_deref().map(str::to_ascii_lowercase).as_deref() != Some(tenant.as_str()) {
            return Err(TokenError::WrongTenant);
        }
    }
    if let (Some(expected), Some(ver)) = (trust.version, raw.ver.as_deref())
        && ver != expected
    {
        return Err(TokenError::InvalidClaims);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(json: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    #[test]
    fn a_payload_with_invalid_utf8_in_a_claim_we_do_not_read_is_malformed() {
        // serde skips the bytes of a claim it does not keep without
        // checking them; the payload is checked whole.
        let bad = b"{\"iss\":\"https://idp\",\"name\":\"\xff\xfe\"}";
        assert!(matches!(
            decode_payload(&payload(bad)),
            Err(TokenError::Malformed)
        ));
        let good = br#"{"iss":"https://idp","name":"Ada"}"#;
        assert_eq!(
            decode_payload(&payload(good)).map(|(c, _)| c.iss),
            Ok("https://idp".into())
        );
    }

    #[test]
    fn a_jws_has_exactly_three_parts() {
        for token in ["", "a", "a.b", "a.b.c.d", "a..b.c"] {
            assert!(Parts::split(token).is_err(), "{token:?}");
        }
        let parts = Parts::split("h.p.s").unwrap();
        assert_eq!(
            (parts.header, parts.payload, parts.signature, parts.signed),
            ("h", "p", "s", "h.p")
        );
    }
}
