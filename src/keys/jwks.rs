//! JWKS documents → [`KeySet`]: parsed once per fetch, looked up by `kid`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

/// RSA keys shorter than this are refused (NIST SP 800-131A; Entra uses 2048).
pub const MIN_RSA_BITS: usize = 2048;

/// A verification key with what it may verify.
pub struct VerifyKey {
    pub decoding: DecodingKey,
    pub kind: KeyKind,
    /// The key's own `alg`, when the JWKS names one.
    pub alg: Option<Algorithm>,
    /// Entra's per-key `issuer` (v2 endpoints), possibly a `{tenantid}` template.
    pub issuer: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
}

impl VerifyKey {
    /// Whether this key can verify a signature made with `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        let family_ok = match self.kind {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::EcP256 => alg == Algorithm::ES256,
            KeyKind::EcP384 => alg == Algorithm::ES384,
        };
        family_ok && self.alg.is_none_or(|a| a == alg)
    }
}

/// An immutable set of keys from one successful fetch.
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyKey>>,
    /// Digest of the key material, to tell a real rollover from a re-fetch.
    pub(crate) fingerprint: [u8; 32],
    pub(crate) fetched_at: Instant,
}

impl KeySet {
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyKey>> {
        self.keys.get(kid)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("JWKS is not valid JSON: {0}")]
    Json(String),
    /// Why each key was skipped, or that there were none.
    #[error("JWKS has no usable signing key ({0})")]
    NoUsableKeys(String),
    #[error("JWKS has two keys with kid {0:?}")]
    DuplicateKid(String),
}

#[derive(Deserialize)]
struct JwksDoc {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct JwkDoc {
    kty: String,
    kid: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    alg: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    issuer: Option<String>,
}

/// Parses a JWKS. Keys that cannot be used for signature verification (wrong
/// `use`, unknown type, weak RSA, no `kid`) are skipped and reported in
/// `skipped`; a document with no usable key at all is an error, so an empty
/// or broken set never replaces a good one.
pub fn parse(body: &[u8], fetched_at: Instant) -> Result<(KeySet, Vec<String>), JwksError> {
    let doc: JwksDoc = serde_json::from_slice(body).map_err(|e| JwksError::Json(e.to_string()))?;
    let mut keys = HashMap::new();
    let mut skipped = Vec::new();
    let mut material: Vec<String> = Vec::new();
    for raw in doc.keys {
        let jwk: JwkDoc = match serde_json::from_value(raw) {
            Ok(j) => j,
            Err(e) => {
                skipped.push(format!("unparsable key: {e}"));
                continue;
            }
        };
        let Some(kid) = jwk.kid.clone().filter(|k| !k.is_empty()) else {
            skipped.push("key without kid".to_owned());
            continue;
        };
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            skipped.push(format!("kid {kid:?}: use is not \"sig\""));
            continue;
        }
        match build_key(&jwk) {
            Ok(key) => {
                material.push(format!(
                    "{kid}|{}|{}|{}|{}|{}|{}",
                    jwk.kty,
                    jwk.n.as_deref().unwrap_or(""),
                    jwk.e.as_deref().unwrap_or(""),
                    jwk.x.as_deref().unwrap_or(""),
                    jwk.y.as_deref().unwrap_or(""),
                    jwk.issuer.as_deref().unwrap_or("")
                ));
                if keys.insert(kid.clone(), Arc::new(key)).is_some() {
                    // Why: two keys under one kid make the choice ambiguous;
                    // refuse the document rather than guess.
                    return Err(JwksError::DuplicateKid(kid));
                }
            }
            Err(why) => skipped.push(format!("kid {kid:?}: {why}")),
        }
    }
    if keys.is_empty() {
        let why = if skipped.is_empty() {
            "the set is empty".to_owned()
        } else {
            format!("skipped: {}", skipped.join("; "))
        };
        return Err(JwksError::NoUsableKeys(why));
    }
    material.sort();
    let digest =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, material.join("\n").as_bytes());
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(digest.as_ref());
    Ok((
        KeySet {
            keys,
            fingerprint,
            fetched_at,
        },
        skipped,
    ))
}

fn build_key(jwk: &JwkDoc) -> Result<VerifyKey, String> {
    let alg = match jwk.alg.as_deref() {
        None => None,
        Some(name) => Some(
            name.parse::<Algorithm>()
                .map_err(|_| format!("unsupported alg {name:?}"))?,
        ),
    };
    let (decoding, kind) = match jwk.kty.as_str() {
        "RSA" => {
            let (Some(n), Some(e)) = (&jwk.n, &jwk.e) else {
                return Err("RSA key without n or e".into());
            };
            let modulus = URL_SAFE_NO_PAD
                .decode(n)
                .map_err(|_| "n is not base64url")?;
            let bits = modulus.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key of {bits} bits is below {MIN_RSA_BITS}"));
            }
            let key =
                DecodingKey::from_rsa_components(n, e).map_err(|e| format!("bad RSA key: {e}"))?;
            (key, KeyKind::Rsa)
        }
        "EC" => {
            let (Some(x), Some(y)) = (&jwk.x, &jwk.y) else {
                return Err("EC key without x or y".into());
            };
            let kind = match jwk.crv.as_deref() {
                Some("P-256") => KeyKind::EcP256,
                Some("P-384") => KeyKind::EcP384,
                other => return Err(format!("unsupported curve {other:?}")),
            };
            let key =
                DecodingKey::from_ec_components(x, y).map_err(|e| format!("bad EC key: {e}"))?;
            (key, kind)
        }
        other => return Err(format!("unsupported key type {other:?}")),
    };
    let key = VerifyKey {
        decoding,
        kind,
        alg,
        issuer: jwk.issuer.clone(),
    };
    if let Some(a) = alg
        && !key.accepts(a)
    {
        return Err(format!("alg {a:?} does not fit key type {}", jwk.kty));
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_jwk(kid: &str, bits: usize) -> serde_json::Value {
        let n = URL_SAFE_NO_PAD.encode(vec![0xc5u8; bits / 8]);
        serde_json::json!({"kty":"RSA","use":"sig","kid":kid,"n":n,"e":"AQAB"})
    }

    fn doc(keys: Vec<serde_json::Value>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn usable_keys_are_indexed_by_kid() {
        let (set, skipped) = parse(
            &doc(vec![rsa_jwk("a", 2048), rsa_jwk("b", 4096)]),
            Instant::now(),
        )
        .unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.get("a").is_some() && set.get("b").is_some());
        assert!(skipped.is_empty());
    }

    #[test]
    fn weak_rsa_keys_are_skipped() {
        let (set, skipped) = parse(
            &doc(vec![rsa_jwk("weak", 1024), rsa_jwk("ok", 2048)]),
            Instant::now(),
        )
        .unwrap();
        assert!(set.get("weak").is_none());
        assert_eq!(skipped.len(), 1);
    }

    #[test]
    fn empty_or_unusable_sets_are_errors() {
        assert_eq!(
            parse(&doc(vec![]), Instant::now()).err(),
            Some(JwksError::NoUsableKeys("the set is empty".into()))
        );
        let enc = serde_json::json!({"kty":"RSA","use":"enc","kid":"e","n":"AQAB","e":"AQAB"});
        assert_eq!(
            parse(&doc(vec![enc]), Instant::now()).err(),
            Some(JwksError::NoUsableKeys(
                "skipped: kid \"e\": use is not \"sig\"".into()
            ))
        );
        assert!(matches!(
            parse(b"not json", Instant::now()),
            Err(JwksError::Json(_))
        ));
    }

    #[test]
    fn duplicate_kids_refuse_the_document() {
        let err = parse(
            &doc(vec![rsa_jwk("a", 2048), rsa_jwk("a", 2048)]),
            Instant::now(),
        )
        .err();
        assert_eq!(err, Some(JwksError::DuplicateKid("a".into())));
    }

    #[test]
    fn fingerprint_ignores_order_and_tracks_material() {
        let one = parse(
            &doc(vec![rsa_jwk("a", 2048), rsa_jwk("b", 2048)]),
            Instant::now(),
        )
        .unwrap()
        .0;
        let two = parse(
            &doc(vec![rsa_jwk("b", 2048), rsa_jwk("a", 2048)]),
            Instant::now(),
        )
        .unwrap()
        .0;
        let three = parse(&doc(vec![rsa_jwk("a", 2048)]), Instant::now())
            .unwrap()
            .0;
        assert_eq!(one.fingerprint, two.fingerprint);
        assert_ne!(one.fingerprint, three.fingerprint);
    }

    #[test]
    fn key_alg_restricts_what_it_verifies() {
        let mut jwk = rsa_jwk("a", 2048);
        jwk["alg"] = "RS256".into();
        let (set, _) = parse(&doc(vec![jwk]), Instant::now()).unwrap();
        let key = set.get("a").unwrap();
        assert!(key.accepts(Algorithm::RS256));
        assert!(!key.accepts(Algorithm::PS256));
        assert!(!key.accepts(Algorithm::ES256));
    }
}
