//! A token's lifetime against the clock (RFC 7519 §4.1.4, §4.1.5): what
//! verification checks and what a cache hit checks again.

use std::time::{SystemTime, UNIX_EPOCH};

use super::TokenError;

/// `exp` and `nbf` at `now`, each allowed `skew` seconds of clock
/// difference (RFC 7519 §4.1.4, §4.1.5).
pub(super) fn check_lifetime(
    exp: u64,
    nbf: Option<u64>,
    now: u64,
    skew: u64,
) -> Result<(), TokenError> {
    // Why `<=`: a token is refused on or after its `exp` (RFC 7519
    // §4.1.4): an open stream ends at that instant, and a request then
    // must not be let in again with the same token.
    if exp.saturating_add(skew) <= now {
        return Err(TokenError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifetime_allows_the_clock_skew_at_both_ends_and_no_more() {
        let (now, skew) = (1_000_000, 60);
        assert_eq!(check_lifetime(now - 59, None, now, skew), Ok(()));
        assert_eq!(
            check_lifetime(now - 60, None, now, skew),
            Err(TokenError::Expired)
        );
        assert_eq!(check_lifetime(now + 600, Some(now + 60), now, skew), Ok(()));
        assert_eq!(
            check_lifetime(now + 600, Some(now + 61), now, skew),
            Err(TokenError::NotYetValid)
        );
        // No skew means none: a token is refused from its `exp` on.
        assert_eq!(check_lifetime(now + 1, None, now, 0), Ok(()));
        assert_eq!(check_lifetime(now, None, now, 0), Err(TokenError::Expired));
    }
}
