//! The verified-token cache: SHA-256 of the token → verified claims.
//!
//! Keyed by a digest, never the token. An entry lives for min(token `exp`,
//! configured TTL); `exp` is re-checked on every hit. An entry names the
//! issuer trust that accepted it and that trust's key generation: a key set
//! change invalidates that issuer's entries, and a reload that changes (or
//! drops) an issuer invalidates its entries and no others.

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
    /// Which [`IssuerTrust`](super::IssuerTrust) accepted the token: an
    /// entry counts only while that same trust is in force (a reload that
    /// changes the issuer's settings retires it).
    trust: u64,
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
        let entries = Cache::builder()
            .max_capacity(capacity)
            .expire_after(EntryLifetime)
            .build();
        Self { entries, ttl }
    }

    pub fn digest(token: &str) -> TokenDigest {
        let d = digest::digest(&digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// The cached claims, the id of the trust that accepted them and the
    /// key generation they were verified under, if present and not past
    /// `exp` + the issuer's skew at `now` (seconds since the epoch).
    pub fn get(&self, key: &TokenDigest, now: u64) -> Option<(Arc<VerifiedClaims>, u64, u64)> {
        let entry = self.entries.get(key)?;
        if now > entry.claims.exp().saturating_add(entry.skew) {
            return None;
        }
        Some((entry.claims, entry.trust, entry.generation))
    }

    pub fn insert(
        &self,
        key: TokenDigest,
        claims: Arc<VerifiedClaims>,
        generation: u64,
        now: u64,
        skew: u64,
        trust: u64,
    ) {
        let remaining = Duration::from_secs(claims.exp().saturating_sub(now));
        let lifetime = remaining.min(self.ttl);
        if lifetime.is_zero() {
            return;
        }
        self.entries.insert(
            key,
            Entry {
                claims,
                generation,
                lifetime,
                skew,
                trust,
            },
        );
    }

    /// Live entries (runs moka's pending maintenance first, so the count is
    /// exact; meant for the metrics scrape, not the request path).
    pub fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Arc<VerifiedClaims> {
        let json = serde_json::json!({"iss": "i", "exp": exp});
        Arc::new(VerifiedClaims::unverified("idp", json).unwrap())
    }

    #[test]
    fn hits_recheck_expiry_with_the_issuer_skew() {
        let cache = TokenCache::new(10, Duration::from_secs(300));
        let key = TokenCache::digest("token");
        cache.insert(key, claims(1_000), 7, 900, 60, 1);
        assert!(cache.get(&key, 950).is_some());
        assert!(cache.get(&key, 1_060).is_some(), "within skew");
        assert!(
            cache.get(&key, 1_061).is_none(),
            "expired even though cached"
        );
    }

    #[test]
    fn entries_carry_their_trust_and_key_generation() {
        let cache = TokenCache::new(10, Duration::from_secs(300));
        let key = TokenCache::digest("token");
        cache.insert(key, claims(2_000), 7, 900, 0, 3);
        let (_, trust, generation) = cache.get(&key, 950).unwrap();
        assert_eq!((trust, generation), (3, 7));
    }

    #[test]
    fn already_expired_tokens_are_not_cached() {
        let cache = TokenCache::new(10, Duration::from_secs(300));
        let key = TokenCache::digest("token");
        cache.insert(key, claims(900), 1, 900, 60, 1);
        assert_eq!(cache.entry_count(), 0);
    }

    #[test]
    fn the_key_is_a_digest_not_the_token() {
        assert_eq!(TokenCache::digest("a").len(), 32);
        assert_ne!(TokenCache::digest("a"), TokenCache::digest("b"));
    }
}
