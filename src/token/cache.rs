//! The verified-token cache: SHA-256 of the token → verified claims.
//!
//! Keyed by a digest, never the token. An entry lives for min(token `exp`,
//! configured TTL); `exp` is re-checked on every hit; entries made under an
//! older key generation are ignored, so a key set change invalidates the
//! whole cache at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use moka::Expiry;
use moka::sync::Cache;

use super::VerifiedClaims;

pub type TokenDigest = [u8; 32];

#[derive(Clone)]
struct Entry {
    claims: Arc<VerifiedClaims>,
    generation: u64,
    lifetime: Duration,
    /// The accepting issuer's clock skew, applied to `exp` on a hit.
    skew: u64,
}

struct EntryLifetime;

impl Expiry<TokenDigest, Entry> for EntryLifetime {
    fn expire_after_create(&self, _: &TokenDigest, value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.lifetime)
    }
}

/// A bounded cache of verified tokens. Cloning shares it.
#[derive(Clone)]
pub struct TokenCache {
    entries: Cache<TokenDigest, Entry>,
    ttl: Duration,
}

impl TokenCache {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let entries = Cache::builder().max_capacity(capacity).expire_after(EntryLifetime).build();
        Self { entries, ttl }
    }

    pub fn digest(token: &str) -> TokenDigest {
        let d = digest::digest(&digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// The cached claims, if present, made under `generation`, and not past
    /// `exp` + the issuer's skew at `now` (seconds since the epoch).
    pub fn get(&self, key: &TokenDigest, generation: u64, now: u64) -> Option<Arc<VerifiedClaims>> {
        let entry = self.entries.get(key)?;
        if entry.generation != generation || now > entry.claims.exp().saturating_add(entry.skew) {
            return None;
        }
        Some(entry.claims)
    }

    pub fn insert(&self, key: TokenDigest, claims: Arc<VerifiedClaims>, generation: u64, now: u64, skew: u64) {
        let remaining = Duration::from_secs(claims.exp().saturating_sub(now));
        let lifetime = remaining.min(self.ttl);
        if lifetime.is_zero() {
            return;
        }
        self.entries.insert(key, Entry { claims, generation, lifetime, skew });
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }
}
