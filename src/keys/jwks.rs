//! JWKS documents → [`KeySet`]: parsed once per fetch, looked up by `kid`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

/// RSA keys shorter than this are refused (NIST SP 800-131A; Entra uses 2048).
pub const MIN_RSA_BITS: usize = 2048;
/// And longer than this: aws-lc verifies up to 8192 bits, and a huge modulus
/// would make every verification expensive.
pub const MAX_RSA_BITS: usize = 8192;
/// Keys in one document. Identity providers publish a handful (Entra
/// about ten); each usable key is parsed for up to six algorithms, so a
/// document of thousands would cost its issuer's neighbours memory.
pub const MAX_KEYS: usize = 64;

const RSA_ALGORITHMS: [(Algorithm, &sig::RsaParameters); 6] = [
    (Algorithm::RS256, &sig::RSA_PKCS1_2048_8192_SHA256),
    (Algorithm::RS384, &sig::RSA_PKCS1_2048_8192_SHA384),
    (Algorithm::RS512, &sig::RSA_PKCS1_2048_8192_SHA512),
    (Algorithm::PS256, &sig::RSA_PSS_2048_8192_SHA256),
    (Algorithm::PS384, &sig::RSA_PSS_2048_8192_SHA384),
    (Algorithm::PS512, &sig::RSA_PSS_2048_8192_SHA512),
];

/// A verification key, parsed once per fetch for every algorithm it may
/// verify. Why not jsonwebtoken's `DecodingKey`: its aws-lc backend rebuilds
/// the RSA key (and its Montgomery context) from `n` and `e` on every
/// verification, which more than doubles the cost of a cache miss.
pub struct VerifyKey {
    parsed: Vec<(Algorithm, ParsedPublicKey)>,
    /// Entra's per-key `issuer` (v2 endpoints), possibly a `{tenantid}` template.
    pub issuer: Option<String>,
}

impl VerifyKey {
    /// Whether this key can verify a signature made with `alg`: its type
    /// fits, and the key's own `alg`, when the JWKS names one, is `alg`.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.parsed.iter().any(|(a, _)| *a == alg)
    }

    /// Whether `signature` is this key's `alg` signature over `message`.
    pub fn verifies(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.parsed
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, key)| key.verify_sig(message, signature).is_ok())
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
    #[error("JWKS has {0} keys; at most {MAX_KEYS} are accepted")]
    TooManyKeys(usize),
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
    if doc.keys.len() > MAX_KEYS {
        return Err(JwksError::TooManyKeys(doc.keys.len()));
    }
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
    let pinned = match jwk.alg.as_deref() {
        None => None,
        Some(name) => Some(
            name.parse::<Algorithm>()
                .map_err(|_| format!("unsupported alg {name:?}"))?,
        ),
    };
    let fits = |alg: Algorithm| pinned.is_none_or(|p| p == alg);
    let decode = |name: &str, value: &Option<String>| -> Result<Vec<u8>, String> {
        let value = value
            .as_deref()
            .ok_or(format!("{} key without {name}", jwk.kty))?;
        URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| format!("{name} is not base64url"))
    };
    let parsed = match jwk.kty.as_str() {
        "RSA" => {
            let n = decode("n", &jwk.n)?;
            let e = decode("e", &jwk.e)?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < MIN_RSA_BITS {
                return Err(format!("RSA key of {bits} bits is below {MIN_RSA_BITS}"));
            }
            if bits > MAX_RSA_BITS {
                return Err(format!("RSA key of {bits} bits is above {MAX_RSA_BITS}"));
            }
            let components = RsaPublicKeyComponents { n: &n, e: &e };
            RSA_ALGORITHMS
                .iter()
                .filter(|(alg, _)| fits(*alg))
                .map(|(alg, params)| {
                    components
                        .to_parsed_public_key(params)
                        .map(|key| (*alg, key))
                        .map_err(|e| format!("bad RSA key: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        "EC" => {
            let (alg, params, size): (_, &'static sig::EcdsaVerificationAlgorithm, _) =
                match jwk.crv.as_deref() {
                    Some("P-256") => (Algorithm::ES256, &sig::ECDSA_P256_SHA256_FIXED, 32),
                    Some("P-384") => (Algorithm::ES384, &sig::ECDSA_P384_SHA384_FIXED, 48),
                    other => return Err(format!("unsupported curve {other:?}")),
                };
            let (x, y) = (decode("x", &jwk.x)?, decode("y", &jwk.y)?);
            if x.len() != size || y.len() != size {
                return Err(format!("EC coordinates are not {size} bytes"));
            }
            // SEC 1 §2.3.3: an uncompressed point is 0x04 || x || y.
            let point = [&[4u8][..], &x, &y].concat();
            let key =
                ParsedPublicKey::new(params, point).map_err(|e| format!("bad EC key: {e}"))?;
            if fits(alg) {
                vec![(alg, key)]
            } else {
                Vec::new()
            }
        }
        other => return Err(format!("unsupported key type {other:?}")),
    };
    if parsed.is_empty() {
        let alg = pinned.map_or(String::new(), |a| format!("{a:?}"));
        return Err(format!("alg {alg} does not fit key type {}", jwk.kty));
    }
    Ok(VerifyKey {
        parsed,
        issuer: jwk.issuer.clone(),
    })
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
    fn oversized_rsa_keys_and_short_ec_points_are_skipped() {
        // A huge modulus would make every verification expensive.
        let ec = serde_json::json!({
            "kty": "EC", "kid": "ec", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode([1u8; 31]), "y": URL_SAFE_NO_PAD.encode([1u8; 32]),
        });
        let (set, skipped) = parse(
            &doc(vec![rsa_jwk("huge", 16384), ec, rsa_jwk("ok", 2048)]),
            Instant::now(),
        )
        .unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), ["ok"]);
        assert_eq!(
            skipped,
            [
                "kid \"huge\": RSA key of 16384 bits is above 8192",
                "kid \"ec\": EC coordinates are not 32 bytes"
            ]
        );
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
    fn a_document_of_too_many_keys_is_refused_before_any_is_parsed() {
        let keys = (0..=MAX_KEYS)
            .map(|i| rsa_jwk(&i.to_string(), 2048))
            .collect();
        assert_eq!(
            parse(&doc(keys), Instant::now()).err(),
            Some(JwksError::TooManyKeys(MAX_KEYS + 1))
        );
        let keys = (0..MAX_KEYS)
            .map(|i| rsa_jwk(&i.to_string(), 2048))
            .collect();
        assert_eq!(parse(&doc(keys), Instant::now()).unwrap().0.len(), MAX_KEYS);
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
