//! `Authorization` header values and query strings → the bearer token, or
//! the RFC 6750 error; never a panic.
#![no_main]

use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use portcullis::token::extract_bearer;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    // The first byte chooses: a query string (from the text after a NUL),
    // and a second copy of the header.
    let (value, query) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], std::str::from_utf8(&rest[i + 1..]).ok()),
        None => (rest, None),
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(value) {
        if flags & 1 == 1 {
            headers.append(AUTHORIZATION, v.clone());
        }
        headers.append(AUTHORIZATION, v);
    }
    if let Ok(token) = extract_bearer(&headers, query.filter(|_| flags & 2 == 2)) {
        // A token is a slice of the header, token68 only.
        assert!(!token.is_empty());
        assert!(token.bytes().all(|b| b.is_ascii_graphic()));
    }
});
