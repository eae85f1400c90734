//! The call-rate limit of MCP tools (the specification asks servers to
//! rate-limit tool calls; the gateway does it for every server behind
//! it): per rule, per caller and per tool, a token bucket that holds a
//! minute's calls and refills evenly.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::sessions::Owner;

/// Most buckets one replica keeps; past it the least recently used are
/// forgotten (and start full again).
const CAPACITY: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitKey {
    pub route: Arc<str>,
    /// The rule that allowed the call.
    pub rule: usize,
    pub owner: Owner,
    pub tool: Box<str>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets of one replica.
pub struct CallLimiter {
    buckets: quick_cache::sync::Cache<LimitKey, Arc<Mutex<Bucket>>>,
}

impl Default for CallLimiter {
    fn default() -> Self {
        Self {
            buckets: quick_cache::sync::Cache::new(CAPACITY),
        }
    }
}

impl CallLimiter {
    /// Takes one call from the key's bucket, or says how long until one
    /// is there.
    pub fn take(&self, key: LimitKey, per_minute: u32, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(per_minute.max(1));
        let bucket = match self.buckets.get(&key) {
            Some(b) => b,
            None => {
                let fresh = Arc::new(Mutex::new(Bucket {
                    tokens: capacity,
                    at: now,
                }));
                self.buckets.insert(key, fresh.clone());
                fresh
            }
        };
        let mut b = bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let per_second = capacity / 60.0;
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * per_second).min(capacity);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tool: &str, owner: u8) -> LimitKey {
        LimitKey {
            route: Arc::from("mcp"),
            rule: 0,
            owner: Owner::for_tests(owner),
            tool: tool.into(),
        }
    }

    #[test]
    fn a_minute_of_calls_then_one_every_sixtieth_of_a_minute_each_caller_and_tool_its_own() {
        let limiter = CallLimiter::default();
        let t0 = Instant::now();
        for _ in 0..6 {
            assert_eq!(limiter.take(key("search", 1), 6, t0), Ok(()));
        }
        let wait = limiter.take(key("search", 1), 6, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        // Others are not held back by it.
        assert_eq!(limiter.take(key("search", 2), 6, t0), Ok(()));
        assert_eq!(limiter.take(key("delete", 1), 6, t0), Ok(()));
        // Ten seconds refill one call.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(limiter.take(key("search", 1), 6, t1), Ok(()));
        assert!(limiter.take(key("search", 1), 6, t1).is_err());
    }
}
