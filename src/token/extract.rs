//! The bearer token from a request: only from `Authorization: Bearer`
//! (RFC 6750 §2.1), borrowed in place, never copied.

use http::HeaderMap;
use http::header::AUTHORIZATION;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// No bearer credentials at all (401 without an error code).
    Missing,
    /// Two credentials, a malformed header or a token in the query (400).
    InvalidRequest,
}

/// Finds the bearer token. `query` is the request's raw query string.
pub fn extract_bearer<'a>(
    headers: &'a HeaderMap,
    query: Option<&str>,
) -> Result<&'a str, BearerError> {
    if query.is_some_and(has_access_token_param) {
        // Why (RFC 6750 §2.3, §5.3): tokens in URLs leak into logs and
        // referrers; we accept the header method only and say so.
        return Err(BearerError::InvalidRequest);
    }
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(BearerError::Missing);
    };
    if values.next().is_some() {
        return Err(BearerError::InvalidRequest);
    }
    let bytes = value.as_bytes();
    let (scheme, rest) = match bytes.iter().position(|b| *b == b' ') {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        // Another scheme (Basic, SharedKey, …) is not a bearer credential,
        // unless the header is not even text.
        return Err(if value.to_str().is_ok() {
            BearerError::Missing
        } else {
            BearerError::InvalidRequest
        });
    }
    let start = rest.iter().position(|b| *b != b' ').unwrap_or(rest.len());
    let token = &rest[start..];
    if !is_token68(token) {
        return Err(BearerError::InvalidRequest);
    }
    // token68 is ASCII, so this cannot fail: one fast pass instead of a
    // second character check over the longest header most requests carry.
    std::str::from_utf8(token).map_err(|_| BearerError::InvalidRequest)
}

/// RFC 7235 §2.1 token68: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_token68(s: &[u8]) -> bool {
    let end = s
        .iter()
        .rposition(|b| *b != b'=')
        .map_or(0, |last| last + 1);
    let body = &s[..end];
    // Why a fold without an early exit: the compiler then checks sixteen
    // bytes per instruction, and this runs over every request's token
    // (~1 KB), valid ones whole anyway.
    !body.is_empty() && body.iter().fold(true, |ok, b| ok & is_token68_char(*b))
}

/// The token68 characters but `=`, as comparisons (no table lookups, which
/// the compiler cannot do sixteen at a time).
fn is_token68_char(b: u8) -> bool {
    // `| 0x20` lower-cases letters and maps no other byte into `a..=z`.
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'-')
        | (b == b'.')
        | (b == b'_')
        | (b == b'~')
        | (b == b'+')
        | (b == b'/')
}

fn has_access_token_param(query: &str) -> bool {
    query.split('&').any(|pair| {
        pair.split('=')
            .next()
            .is_some_and(|k| k.eq_ignore_ascii_case("access_token"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_token68_check_agrees_with_its_definition() {
        for b in 0..=u8::MAX {
            let defined =
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
            assert_eq!(is_token68_char(b), defined, "byte {b:#04x}");
            // Anywhere in a long token, and as its only character.
            let mut token = vec![b'a'; 100];
            token[57] = b;
            assert_eq!(is_token68(&token), defined, "byte {b:#04x} inside");
            assert_eq!(is_token68(&[b]), defined, "byte {b:#04x} alone");
        }
        assert!(is_token68(b"abc=="));
        assert!(!is_token68(b"=="));
        assert!(!is_token68(b"a=b"));
    }

    #[test]
    fn a_header_that_is_not_text_is_a_bad_request_whatever_its_scheme() {
        for value in [&b"Basic \xff\xfe"[..], b"Bearer \xffabc"] {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
            assert_eq!(
                extract_bearer(&h, None),
                Err(BearerError::InvalidRequest),
                "{value:?}"
            );
        }
    }

    #[test]
    fn bearer_extraction_table() {
        use BearerError::*;
        type Case<'a> = (
            &'a str,
            &'a [&'a str],
            Option<&'a str>,
            Result<&'a str, BearerError>,
        );
        let cases: &[Case] = &[
            ("plain", &["Bearer abc.def.ghi"], None, Ok("abc.def.ghi")),
            (
                "scheme is case-insensitive",
                &["bEaReR abc"],
                None,
                Ok("abc"),
            ),
            (
                "extra spaces after scheme",
                &["Bearer   abc"],
                None,
                Ok("abc"),
            ),
            ("padding allowed", &["Bearer abc=="], None, Ok("abc==")),
            ("no header", &[], None, Err(Missing)),
            ("other scheme", &["Basic dXNlcjpwYXNz"], None, Err(Missing)),
            ("scheme only", &["Bearer"], None, Err(InvalidRequest)),
            ("empty token", &["Bearer "], None, Err(InvalidRequest)),
            ("two tokens", &["Bearer a b"], None, Err(InvalidRequest)),
            ("padding only", &["Bearer =="], None, Err(InvalidRequest)),
            ("padding inside", &["Bearer a=b"], None, Err(InvalidRequest)),
            (
                "trailing space",
                &["Bearer abc "],
                None,
                Err(InvalidRequest),
            ),
            (
                "tab before token",
                &["Bearer \tabc"],
                None,
                Err(InvalidRequest),
            ),
            (
                "bad characters",
                &["Bearer a\"b"],
                None,
                Err(InvalidRequest),
            ),
            (
                "two headers",
                &["Bearer a", "Bearer b"],
                None,
                Err(InvalidRequest),
            ),
            (
                "token in query",
                &["Bearer a"],
                Some("x=1&access_token=abc"),
                Err(InvalidRequest),
            ),
            (
                "query only",
                &[],
                Some("access_token=abc"),
                Err(InvalidRequest),
            ),
            (
                "other query",
                &["Bearer a"],
                Some("api-version=2024-10-21"),
                Ok("a"),
            ),
        ];
        for (name, values, query, want) in cases {
            let h = headers(values);
            assert_eq!(extract_bearer(&h, *query), *want, "{name}");
        }
    }
}
