//! Hostile token encodings.

use super::*;

#[tokio::test]
async fn hostile_token_encodings_are_refused_with_a_reason() {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let (idp, upstream, gw, _) = stack_with("", DEFAULT_ROUTES).await;
    let header = r#"{"alg":"RS256","typ":"JWT","kid":"key-1"}"#;
    let claims = idp.token().claims.clone();
    let with = |name: &str, raw: &str| {
        let text = claims.to_string();
        text.replacen('{', &format!("{{\"{name}\":{raw},"), 1)
    };
    let nested = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut invalid_utf8 = claims.to_string().into_bytes();
    let at = invalid_utf8.len() - 1;
    invalid_utf8.splice(at..at, b",\"name\":\"\xff\xfe\"".iter().copied());
    // A payload whose base64url has `-` or `_`, sent in the standard
    // alphabet (`+`, `/`) and signed as sent.
    let payload = with("note", "\"\u{fb}\u{ff}\u{fe}>>>???\"");
    let url = URL_SAFE_NO_PAD.encode(&payload);
    assert!(url.contains(['-', '_']));
    let std_alphabet = STANDARD.encode(&payload).trim_end_matches('=').to_owned();
    let encoded_header = URL_SAFE_NO_PAD.encode(header);
    // Trailing bits that a canonical encoder leaves zero, set.
    let odd_tail = {
        let mut p = URL_SAFE_NO_PAD.encode(claims.to_string());
        if p.len() % 4 != 0 {
            let last = p.pop().unwrap();
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let i = alphabet.iter().position(|&c| c == last as u8).unwrap();
            p.push(alphabet[i | 1] as char);
        }
        p
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "nested 10,000 deep",
            idp.key.sign_raw(header, with("x", &nested)),
        ),
        (
            "exp beyond f64",
            idp.key.sign_raw(header, with("exp", "1e400")),
        ),
        (
            "exp beyond u64",
            idp.key
                .sign_raw(header, with("exp", "18446744073709551616")),
        ),
        ("exp negative", idp.key.sign_raw(header, with("exp", "-1"))),
        (
            "exp fractional",
            idp.key.sign_raw(header, with("exp", "1.5")),
        ),
        ("invalid UTF-8", idp.key.sign_raw(header, &invalid_utf8)),
        (
            "padding",
            idp.key.sign_encoded(&format!("{encoded_header}.{url}==")),
        ),
        (
            "standard alphabet",
            idp.key
                .sign_encoded(&format!("{encoded_header}.{std_alphabet}")),
        ),
        (
            "non-zero trailing bits",
            idp.key
                .sign_encoded(&format!("{encoded_header}.{odd_tail}")),
        ),
        (
            "a header that is an array",
            idp.key.sign_raw("[1,2,3]", claims.to_string()),
        ),
        (
            "a payload that is a string",
            idp.key.sign_raw(header, "\"x\""),
        ),
    ];
    for (name, token) in cases {
        support::secrets::remember(&token);
        let resp = get(&gw.url("/v1/x"), Some(&token)).await;
        // Padding inside the token is not a b64token at all (RFC 6750
        // §2.1): the request is malformed, 400.
        let (status, error) = if name == "padding" {
            (StatusCode::BAD_REQUEST, "error=\"invalid_request\"")
        } else {
            (StatusCode::UNAUTHORIZED, "error=\"invalid_token\"")
        };
        assert_eq!(resp.status(), status, "{name}");
        let c = challenge(resp.headers()).unwrap();
        assert!(c.contains(error), "{name}: {c}");
    }
    assert!(upstream.seen().is_empty());
    // The gateway is unharmed.
    let ok = idp.token().scp("Models.Invoke").sign();
    assert_eq!(
        get(&gw.url("/v1/x"), Some(&ok)).await.status(),
        StatusCode::OK
    );
}
