//! The verified-token cache: SHA-256 of the token → verified claims.
//!
//! Keyed by a digest, never the token. An entry is used until the earlier
//! of its token's `exp` (plus the issuer's clock skew) and the configured
//! TTL after it was cached; both are checked on every hit, and an entry
//! past either is removed when found. An entry names the issuer trust that
//! accepted it and that trust's key generation: a key set change
//! invalidates that issuer's entries, and a reload that changes (or drops)
//! an issuer invalidates its entries and no others.
//!
//! Why `quick_cache` and not moka: moka keeps about 330 bytes of its own
//! per entry (deques, timer wheel, per-entry locks) and a hit goes through
//! its read-op channel; quick_cache keeps about 25 (S3-FIFO eviction, one
//! atomic bit per hit). With 100,000 cached tokens that was the difference
//! between missing and meeting the 64 MiB target. Its lack of expiry costs
//! nothing: every hit checks the deadlines anyway.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use quick_cache::sync::Cache;

use super::VerifiedClaims;
use super::lifetime::{check_lifetime, unix_now};

pub type TokenDigest = [u8; 32];

/// Which [`IssuerTrust`](super::IssuerTrust) accepted a token, and under
/// which of its key sets: a cache entry counts only while that same trust
/// is in force (a reload that changes the issuer's settings retires it)
/// with that key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptedBy {
    pub trust: u64,
    pub key_generation: u64,
}

#[derive(Clone)]
struct Entry {
    claims: Arc<VerifiedClaims>,
    accepted: AcceptedBy,
    /// The TTL's end, seconds since the epoch.
    until: u64,
    /// The accepting issuer's clock skew (seconds), applied to `exp` on a
    /// hit.
    skew: u64,
}

impl Entry {
    /// Within the TTL, and not expired by the rule a fresh verification
    /// applies.
    fn is_live(&self, now: u64) -> bool {
        now < self.until && check_lifetime(self.claims.exp(), None, now, self.skew).is_ok()
    }
}

/// A bounded cache of verified tokens. Cloning shares it.
#[derive(Clone)]
pub struct TokenCache {
    entries: Arc<Cache<TokenDigest, Entry>>,
    ttl: Duration,
}

impl TokenCache {
    pub fn new(capacity: u64, ttl: Duration) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        Self {
            entries: Arc::new(Cache::new(capacity)),
            ttl,
        }
    }

    pub fn digest(token: &str) -> TokenDigest {
        let d = digest::digest(&digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }

    /// The cached claims and what accepted them, if present and live at
    /// `now` (seconds since the epoch).
    pub fn get(&self, key: &TokenDigest, now: u64) -> Option<(Arc<VerifiedClaims>, AcceptedBy)> {
        let entry = self.entries.get(key)?;
        if !entry.is_live(now) {
            self.entries.remove(key);
            return None;
        }
        Some((entry.claims, entry.accepted))
    }

    /// Caches `claims` at `now` (seconds since the epoch); a hit checks
    /// their expiry again with the accepting issuer's `skew`.
    pub fn insert(
        &self,
        key: TokenDigest,
        claims: Arc<VerifiedClaims>,
        accepted: AcceptedBy,
        now: u64,
        skew: Duration,
    ) {
        if claims.exp() <= now || self.ttl.is_zero() {
            return;
        }
        self.entries.insert(
            key,
            Entry {
                claims,
                accepted,
                until: now.saturating_add(self.ttl.as_secs().max(1)),
                skew: skew.as_secs(),
            },
        );
    }

    /// Live entries. Removes the expired ones first, so that the count is
    /// exact and their memory is returned; meant for the metrics scrape
    /// (one pass over the cache), not the request path.
    pub fn entry_count(&self) -> u64 {
        let now = unix_now();
        self.entries.retain(|_, entry| entry.is_live(now));
        self.entries.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> Arc<VerifiedClaims> {
        let json = serde_json::json!({"iss": "i", "exp": exp});
        Arc::new(VerifiedClaims::for_tests("idp", json))
    }

    /// Entries whose trust and key set do not matter to the test.
    const ANY: AcceptedBy = AcceptedBy {
        trust: 1,
        key_generation: 1,
    };

    /// A 300-second cache holding one token (trust 3, key generation 7),
    /// cached at 900.
    fn holding(exp: u64, skew: u64) -> (TokenCache, TokenDigest) {
        let cache = TokenCache::new(10, Duration::from_secs(300));
        let key = TokenCache::digest("token");
        let accepted = AcceptedBy {
            trust: 3,
            key_generation: 7,
        };
        cache.insert(key, claims(exp), accepted, 900, Duration::from_secs(skew));
        (cache, key)
    }

    #[test]
    fn hits_recheck_expiry_with_the_issuer_skew() {
        let (cache, key) = holding(1_000, 60);
        assert!(cache.get(&key, 950).is_some());
        assert!(cache.get(&key, 1_059).is_some(), "within skew");
        assert!(
            cache.get(&key, 1_060).is_none(),
            "expired even though cached"
        );
    }

    #[test]
    fn entries_carry_their_trust_and_key_generation() {
        let (cache, key) = holding(2_000, 0);
        let (_, accepted) = cache.get(&key, 950).unwrap();
        assert_eq!((accepted.trust, accepted.key_generation), (3, 7));
    }

    #[test]
    fn the_ttl_ends_an_entry_however_long_its_token_lives() {
        let (cache, key) = holding(5_000, 0);
        assert!(cache.get(&key, 1_199).is_some());
        assert!(cache.get(&key, 1_200).is_none(), "TTL over");
        assert!(cache.entries.is_empty(), "removed when found expired");
    }

    #[test]
    fn counting_removes_expired_entries() {
        let now = unix_now();
        let cache = TokenCache::new(10, Duration::from_secs(300));
        // Cached 400 s ago: its TTL ended 100 s ago.
        let (by, no_skew) = (ANY, Duration::ZERO);
        cache.insert(
            TokenCache::digest("old"),
            claims(now + 3_600),
            by,
            now - 400,
            no_skew,
        );
        cache.insert(
            TokenCache::digest("new"),
            claims(now + 3_600),
            by,
            now,
            no_skew,
        );
        assert_eq!(cache.entries.len(), 2);
        assert_eq!(cache.entry_count(), 1);
        assert_eq!(cache.entries.len(), 1, "the expired entry is gone");
    }

    #[test]
    fn the_capacity_bounds_the_entries() {
        let cache = TokenCache::new(100, Duration::from_secs(300));
        for i in 0..1_000 {
            cache.insert(
                TokenCache::digest(&i.to_string()),
                claims(2_000),
                ANY,
                900,
                Duration::ZERO,
            );
        }
        assert!(cache.entries.len() <= 100, "{}", cache.entries.len());
    }

    #[test]
    fn already_expired_tokens_are_not_cached() {
        let (cache, _) = holding(900, 60);
        // The raw length: counting would sweep it anyway.
        assert!(cache.entries.is_empty());
    }

    #[test]
    fn the_key_is_a_digest_not_the_token() {
        assert_eq!(TokenCache::digest("a").len(), 32);
        assert_ne!(TokenCache::digest("a"), TokenCache::digest("b"));
    }
}
