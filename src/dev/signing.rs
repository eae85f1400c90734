//! Signing keys for the development issuer and the test suite: generated at
//! run time (aws-lc-rs), published as JWKs, used through `jsonwebtoken`.

use aws_lc_rs::encoding::{AsBigEndian, AsDer, EcPublicKeyUncompressedBin, Pkcs8V1Der};
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

/// A private key with its `kid` and public JWK.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Why: never print private key material.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("key generation failed: {0}")]
pub struct KeyGenError(String);

impl SigningKey {
    /// A fresh RSA-2048 key for RS256.
    pub fn rsa(kid: &str) -> Result<Self, KeyGenError> {
        Self::rsa_sized(kid, KeySize::Rsa2048)
    }

    /// A fresh RSA key of the given size (tests use it for weak-key cases).
    pub fn rsa_sized(kid: &str, size: KeySize) -> Result<Self, KeyGenError> {
        let pair =
            aws_lc_rs::rsa::KeyPair::generate(size).map_err(|e| KeyGenError(e.to_string()))?;
        let der: Pkcs8V1Der = pair.as_der().map_err(|e| KeyGenError(e.to_string()))?;
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_ref().to_vec()));
        let encoding =
            EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| KeyGenError(e.to_string()))?;
        let public = pair.public_key();
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "kid": kid,
            "x5t": kid,
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        });
        Ok(Self {
            kid: kid.to_owned(),
            alg: Algorithm::RS256,
            encoding,
            jwk,
        })
    }

    /// A fresh P-256 key for ES256.
    pub fn ec_p256(kid: &str) -> Result<Self, KeyGenError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|e| KeyGenError(e.to_string()))?;
        let pkcs8 = pair.to_pkcs8v1().map_err(|e| KeyGenError(e.to_string()))?;
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        let point: EcPublicKeyUncompressedBin = pair
            .public_key()
            .as_be_bytes()
            .map_err(|e| KeyGenError(e.to_string()))?;
        let point = point.as_ref();
        let (x, y) = point[1..].split_at(32);
        let jwk = json!({
            "kty": "EC", "use": "sig", "kid": kid, "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        });
        Ok(Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES256,
            encoding,
            jwk,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public JWK, as published in a JWKS.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A header with `typ: JWT`, this key's `alg` and `kid`.
    pub fn header(&self) -> Header {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        h
    }

    /// Signs `claims` under `header` (which may be bent for tests).
    pub fn sign_with(&self, header: &Header, claims: &Value) -> String {
        // Signing a serde_json::Value with a key we generated cannot fail
        // unless the header names an algorithm of another family.
        jsonwebtoken::encode(header, claims, &self.encoding).unwrap_or_default()
    }

    /// Signs raw header and payload JSON, byte for byte: for tests of hostile
    /// tokens (duplicate keys, odd numbers) that a `serde_json::Value` cannot
    /// express.
    pub fn sign_raw(
        &self,
        header_json: impl AsRef<[u8]>,
        payload_json: impl AsRef<[u8]>,
    ) -> String {
        self.sign_encoded(&format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header_json),
            URL_SAFE_NO_PAD.encode(payload_json)
        ))
    }

    /// Signs an encoded `header.payload` as it is written: for tests of
    /// encodings a well-behaved signer never produces.
    pub fn sign_encoded(&self, message: &str) -> String {
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &self.encoding, self.alg)
            .unwrap_or_default();
        format!("{message}.{signature}")
    }

    /// Signs `claims` under this key's standard header.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with(&self.header(), claims)
    }
}
