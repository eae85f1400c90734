//! The rejection matrix: every token fault, its status and challenge, and no
//! token echoed.

use super::*;

/// Every token fault in one table: how the token is bent, the status, the
/// challenge. Also checks that no rejection echoes the token.
#[tokio::test]
async fn rejection_matrix() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = default_gateway(&idp, &upstream).await;
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let impostor = SigningKey::rsa("key-1").unwrap(); // same kid, other key
    let alg_none = {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"key-1"}"#);
        let payload = URL_SAFE_NO_PAD.encode(idp.token().claims.to_string());
        format!("{header}.{payload}.")
    };
    let hs256_with_public_key = {
        // The classic confusion attack: HMAC keyed with the public key bytes.
        let secret = idp.key.jwk()["n"].as_str().unwrap().as_bytes().to_vec();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("key-1".into());
        jsonwebtoken::encode(
            &header,
            &idp.token().claims,
            &EncodingKey::from_secret(&secret),
        )
        .unwrap()
    };
    // Why (RFC 8725 §3.10): keys named or embedded by the token itself are
    // never fetched or trusted; the attacker's own key and a kid we do not
    // know must end in unknown_kid.
    let attacker = SigningKey::rsa("attacker-kid").unwrap();
    let via_jku = idp
        .token()
        .key(&attacker)
        .header(|h| h.jku = Some(format!("{}/keys", idp.url())))
        .sign();
    let via_jwk = {
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(attacker.jwk().clone()).unwrap();
        idp.token()
            .key(&attacker)
            .header(|h| h.jwk = Some(jwk))
            .sign()
    };
    let cases: Vec<(&str, String, u16, Option<String>)> = vec![
        ("valid", idp.token().sign(), 200, None),
        (
            "expired",
            idp.token().claim("exp", now - 3600).sign(),
            401,
            Some(desc("The access token expired")),
        ),
        (
            "expired within skew is fine",
            idp.token()
                .claim("nbf", now - 100)
                .claim("exp", now - 10)
                .sign(),
            200,
            None,
        ),
        (
            "not yet valid",
            idp.token().not_before_in(3600).sign(),
            401,
            Some(desc("The access token is not yet valid")),
        ),
        (
            "wrong issuer",
            idp.token().claim("iss", "https://evil.example/").sign(),
            401,
            Some(desc("The token issuer is not trusted")),
        ),
        (
            "wrong audience",
            idp.token().aud("api://other").sign(),
            401,
            Some(desc("The token audience is not accepted")),
        ),
        (
            "audience array without ours",
            idp.token()
                .claim("aud", json!(["api://a", "api://b"]))
                .sign(),
            401,
            Some(desc("The token audience is not accepted")),
        ),
        (
            "audience array with ours",
            idp.token()
                .claim("aud", json!(["api://a", AUDIENCE]))
                .sign(),
            200,
            None,
        ),
        (
            "numeric audience",
            idp.token().claim("aud", 42).sign(),
            401,
            Some(desc("The token audience is not accepted")),
        ),
        (
            "missing audience",
            idp.token().without("aud").sign(),
            401,
            Some(desc("The token audience is not accepted")),
        ),
        (
            "bad signature",
            idp.token().key(&impostor).sign(),
            401,
            Some(desc("The token signature is invalid")),
        ),
        (
            "tampered payload",
            tamper(&idp.token().sign()),
            401,
            Some(desc("The token signature is invalid")),
        ),
        (
            "unknown kid",
            idp.token().header(|h| h.kid = Some("nope".into())).sign(),
            401,
            Some(desc("The token signing key is unknown")),
        ),
        (
            "missing kid",
            idp.token().header(|h| h.kid = None).sign(),
            401,
            Some(desc("The token has no key id")),
        ),
        (
            "alg none",
            alg_none,
            401,
            Some(desc("The token signing algorithm is not allowed")),
        ),
        (
            "HS256 signed with the public key",
            hs256_with_public_key,
            401,
            Some(desc("The token signing algorithm is not allowed")),
        ),
        (
            "oversize",
            idp.token().claim("pad", "x".repeat(20_000)).sign(),
            401,
            Some(desc("The access token is too large")),
        ),
        (
            "garbage",
            "not-a-jwt".into(),
            401,
            Some(desc("The access token is malformed")),
        ),
        (
            "three garbage parts",
            "a.b.c".into(),
            401,
            Some(desc("The access token is malformed")),
        ),
        (
            "wrong typ",
            idp.token().header(|h| h.typ = Some("JOSE".into())).sign(),
            401,
            Some(desc("The token type is not accepted")),
        ),
        (
            "missing typ",
            idp.token().header(|h| h.typ = None).sign(),
            401,
            Some(desc("The token type is not accepted")),
        ),
        (
            "at+jwt typ accepted",
            idp.token().header(|h| h.typ = Some("at+jwt".into())).sign(),
            200,
            None,
        ),
        (
            "missing exp",
            idp.token().without("exp").sign(),
            401,
            Some(desc("The access token has no expiry")),
        ),
        (
            "string exp",
            idp.token().claim("exp", (now + 600).to_string()).sign(),
            401,
            Some(desc("The access token claims are invalid")),
        ),
        (
            "nbf after exp",
            idp.token()
                .claim("nbf", now + 6)
                .claim("exp", now + 5)
                .sign(),
            401,
            Some(desc("The access token claims are invalid")),
        ),
        (
            "crit header",
            idp.token()
                .header(|h| h.crit = Some(vec!["exp".into()]))
                .sign(),
            401,
            Some(desc("The token has critical header parameters")),
        ),
        (
            "sender-constrained (cnf)",
            idp.token().claim("cnf", json!({"jkt": "abc"})).sign(),
            401,
            Some(desc("Sender-constrained tokens are not accepted")),
        ),
        (
            "insufficient scope",
            idp.token().scp("Other.Scope").sign(),
            403,
            Some(
                "Bearer realm=\"test\", error=\"insufficient_scope\", scope=\"Models.Invoke\""
                    .into(),
            ),
        ),
        (
            "neither scp nor roles",
            idp.token().without("scp").sign(),
            403,
            Some(
                "Bearer realm=\"test\", error=\"insufficient_scope\", scope=\"Models.Invoke\""
                    .into(),
            ),
        ),
        (
            "jku header is never followed",
            via_jku,
            401,
            Some(desc("The token signing key is unknown")),
        ),
        (
            "embedded jwk is never trusted",
            via_jwk,
            401,
            Some(desc("The token signing key is unknown")),
        ),
        (
            "app role accepted",
            idp.token().roles(&["Models.Invoke"]).sign(),
            200,
            None,
        ),
        (
            "duplicate claim keys",
            duplicate_scp(&idp),
            401,
            Some(desc("The access token claims are invalid")),
        ),
    ];
    for (name, token, status, want) in cases {
        let resp = get(&gw.url("/v1/chat"), Some(&token)).await;
        assert_eq!(resp.status().as_u16(), status, "{name}");
        let got = challenge(resp.headers());
        if status != 200 {
            assert_eq!(resp.headers()["cache-control"], "no-store", "{name}");
            if let Some(want) = want {
                assert_eq!(got.as_deref(), Some(want.as_str()), "{name}");
            }
            let headers = format!("{:?}", resp.headers());
            let body = text(resp).await;
            // Why: a rejection must never echo the token.
            assert!(
                !headers.contains(&token) && !body.contains(&token),
                "{name} echoed the token"
            );
        }
    }
}

/// `"scp"` twice: a parser keeping the first for one purpose and the last for
/// another could be tricked into granting a scope.
fn duplicate_scp(idp: &TestIdp) -> String {
    let claims = idp.token().claims.to_string();
    let payload = claims.replacen('{', "{\"scp\":\"Admin.All\",", 1);
    assert_eq!(payload.matches("\"scp\"").count(), 2);
    idp.key
        .sign_raw(r#"{"alg":"RS256","typ":"JWT","kid":"key-1"}"#, &payload)
}

fn tamper(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    claims["scp"] = "Models.Invoke Admin.All".into();
    format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    )
}
