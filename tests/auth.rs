//! Token validation through the real gateway: the rejection matrix, Entra
//! tenant and multi-tenant modes, and the verified-token cache.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::dev::SigningKey;
use serde_json::json;
use support::*;

fn desc(text: &str) -> String {
    format!("Bearer realm=\"test\", error=\"invalid_token\", error_description=\"{text}\"")
}

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

#[tokio::test]
async fn request_faults_get_400_or_401_per_rfc6750() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = default_gateway(&idp, &upstream).await;
    let token = idp.token().sign();

    let resp = get(&gw.url("/v1/chat"), None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(resp.headers()).as_deref(),
        Some("Bearer realm=\"test\"")
    );

    let invalid_request = "Bearer realm=\"test\", error=\"invalid_request\", error_description=\"Send one bearer token in the Authorization header\"";
    let two_headers = Request::get(gw.url("/v1/chat"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let malformed = Request::get(gw.url("/v1/chat"))
        .header("authorization", "Bearer a b")
        .body(Full::default())
        .unwrap();
    let in_query = Request::get(gw.url(&format!("/v1/chat?access_token={token}")))
        .body(Full::default())
        .unwrap();
    for (name, req) in [
        ("two headers", two_headers),
        ("malformed", malformed),
        ("query token", in_query),
    ] {
        let resp = send(req).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{name}");
        assert_eq!(
            challenge(resp.headers()).as_deref(),
            Some(invalid_request),
            "{name}"
        );
        assert_eq!(resp.headers()["cache-control"], "no-store");
    }

    // The Bearer scheme is case-insensitive.
    let lower = Request::get(gw.url("/v1/chat"))
        .header("authorization", format!("bearer {token}"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(lower).await.status(), StatusCode::OK);
}

/// Graph tokens (`nonce` header) and Agent ID intermediate tokens
/// (token-exchange audience) are refused by plain audience pinning.
#[tokio::test]
async fn graph_and_token_exchange_tokens_are_refused() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = default_gateway(&idp, &upstream).await;
    let graph = idp
        .token()
        .aud("00000003-0000-0000-c000-000000000000")
        .header(|h| h.nonce = Some("AQABAAAAAAD--DLA3VO7QrddgJg7WevrHqSg".into()))
        .sign();
    let exchange = idp
        .token()
        .aud("fb60f99c-7a34-4190-8149-302f77469936")
        .claim("sub", "/eid1/c/pub/t/x/a/y/z")
        .sign();
    let federated = idp.token().aud("api://AzureADTokenExchange").sign();
    for (name, token) in [
        ("graph", graph),
        ("token exchange", exchange),
        ("federated assertion", federated),
    ] {
        let resp = get(&gw.url("/v1/chat"), Some(&token)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(
            challenge(resp.headers()),
            Some(desc("The token audience is not accepted")),
            "{name}"
        );
    }
}

fn entra_issuer(idp: &TestIdp, tenants: &[&str]) -> String {
    let tenants: Vec<String> = tenants.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        r#"
[[issuers]]
name = "entra"
kind = "entra"
tenants = [{}]
authority = "{}"
audiences = ["{AUDIENCE}", "{AUDIENCE_GUID}"]
refresh_cooldown = "1h"
"#,
        tenants.join(", "),
        idp.url()
    )
}

#[tokio::test]
async fn entra_tenant_accepts_v1_and_v2_tokens() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(
        upstream.addr,
        &entra_issuer(&idp, &[TENANT]),
        DEFAULT_ROUTES,
    ))
    .await;

    let v2 = echoed(get(&gw.url("/x"), Some(&idp.entra_v2(TENANT).sign())).await).await;
    assert_eq!(v2["headers"]["x-portcullis-tenant"][0], TENANT);
    let v1 = echoed(
        get(
            &gw.url("/x"),
            Some(&idp.entra_v1(TENANT).roles(&["Models.Invoke"]).sign()),
        )
        .await,
    )
    .await;
    assert_eq!(
        v1["headers"]["x-portcullis-client-app"][0],
        "00001111-aaaa-2222-bbbb-3333cccc4444"
    );

    // Each version has its own key set, fetched from its own endpoint.
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "gateway_key_set_keys{{issuer=\"entra/{TENANT}/v1\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "gateway_key_set_keys{{issuer=\"entra/{TENANT}/v2\"}} 1"
        )),
        "{metrics}"
    );

    // A `ver` that contradicts the issuer shape is refused.
    let bent = idp.entra_v2(TENANT).claim("ver", "1.0").sign();
    assert_eq!(
        get(&gw.url("/x"), Some(&bent)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The tenant in `tid` must be the tenant in `iss`.
    let mixed = idp.entra_v2(TENANT).claim("tid", OTHER_TENANT).sign();
    let resp = get(&gw.url("/x"), Some(&mixed)).await;
    assert_eq!(
        challenge(resp.headers()),
        Some(desc("The token tenant is not accepted"))
    );
}

#[tokio::test]
async fn entra_multi_tenant_allowlist() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(
        upstream.addr,
        &entra_issuer(&idp, &[TENANT, OTHER_TENANT]),
        DEFAULT_ROUTES,
    ))
    .await;
    for tenant in [TENANT, OTHER_TENANT] {
        let resp = get(&gw.url("/x"), Some(&idp.entra_v2(tenant).sign())).await;
        assert_eq!(resp.status(), StatusCode::OK, "{tenant}");
    }
    let outsider = "12345678-1234-1234-1234-123456789abc";
    let resp = get(&gw.url("/x"), Some(&idp.entra_v2(outsider).sign())).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(resp.headers()),
        Some(desc("The token issuer is not trusted"))
    );
    // The consumer (MSA) tenant is refused unless configured.
    let msa = idp.entra_v2("9188040d-6c67-4c5b-b112-36a304b66dad").sign();
    assert_eq!(
        get(&gw.url("/x"), Some(&msa)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn route_issuer_restriction() {
    let idp = TestIdp::start().await;
    let other = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let issuers = format!(
        "{}\n[[issuers]]\nname = \"other\"\nkind = \"oidc\"\nissuer = \"{}\"\naudiences = [\"{AUDIENCE}\"]\n",
        oidc_issuer(&idp, ""),
        other.issuer()
    );
    let routes = "[[routes]]\nname = \"only-idp\"\nprefix = \"/\"\nissuers = [\"idp\"]\n";
    let gw = TestGateway::start(&config(upstream.addr, &issuers, routes)).await;
    assert_eq!(
        get(&gw.url("/a"), Some(&idp.token().sign())).await.status(),
        StatusCode::OK
    );
    let resp = get(&gw.url("/a"), Some(&other.token().sign())).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(resp.headers()),
        Some(desc("The token issuer is not accepted for this resource"))
    );
}

#[tokio::test]
async fn unmatched_paths_are_denied_after_authentication() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = "[[routes]]\nname = \"chat\"\npath = \"/openai/deployments/{deployment}/chat/completions\"\nmethods = [\"POST\"]\n";
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), routes)).await;
    // Without a token the caller learns nothing about which paths exist.
    assert_eq!(
        get(&gw.url("/admin"), None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = get(&gw.url("/admin"), Some(&idp.token().sign())).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(challenge(resp.headers()), None);
    // The route exists for POST only.
    let resp = get(
        &gw.url("/openai/deployments/gpt/chat/completions"),
        Some(&idp.token().sign()),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn path_tricks_cannot_reach_a_protected_route_through_a_public_one() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = r#"
[[routes]]
name = "public"
prefix = "/public"
public = true

[[routes]]
name = "admin"
prefix = "/admin"
roles = ["Admin"]
"#;
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), routes)).await;
    for path in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "//admin",
        "/public/./../admin",
        "/public;x/../admin",
        "/%61dmin",
    ] {
        let resp = get(&gw.url(path), None).await;
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "{path} must route to /admin"
        );
    }
    for path in [
        "/public/..%2Fadmin",
        "/public/%2e%2e%2fadmin",
        "/public%5C..%5Cadmin",
        "/../admin",
        // `;` parameters: refused unless the route allows them (below).
        "/public/..;/admin",
        "/public/%2e%2e;/admin",
        "/admin;x",
    ] {
        let resp = get(&gw.url(path), None).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    // Case variants are other paths: no route takes them, so they are
    // denied (401 without a token), never public.
    for path in ["/ADMIN", "/Admin/x", "/PUBLIC/../admin"] {
        let resp = get(&gw.url(path), None).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let resp = get(&gw.url("/ADMIN"), Some(&idp.token().sign())).await;
    assert_eq!(
        resp.status(),
        StatusCode::FORBIDDEN,
        "authenticated, but no route"
    );
    // The normalized path is what the upstream sees.
    let echoed = echoed(get(&gw.url("/public/a/../b//c?x=1"), None).await).await;
    assert_eq!(echoed["path"], "/public/b/c");
    assert_eq!(echoed["query"], "x=1");
}

#[tokio::test]
async fn es256_and_ps256_tokens_verify_when_configured() {
    let idp = TestIdp::start().await;
    let ec = SigningKey::ec_p256("ec-1").unwrap();
    idp.set_keys(vec![idp.key.clone(), ec.clone()]);
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(
        upstream.addr,
        &oidc_issuer(&idp, "algorithms = [\"RS256\", \"ES256\", \"PS256\"]"),
        DEFAULT_ROUTES,
    ))
    .await;
    let ps256 = idp.token().header(|h| h.alg = Algorithm::PS256).sign();
    for token in [idp.token().key(&ec).sign(), idp.token().sign(), ps256] {
        assert_eq!(
            get(&gw.url("/x"), Some(&token)).await.status(),
            StatusCode::OK
        );
    }
    // A PKCS#1 v1.5 signature relabelled PS256 does not verify as PSS.
    let relabelled = {
        let rs256 = idp.token().sign();
        let (_, rest) = rs256.split_once('.').unwrap();
        let mut header = idp.key.header();
        header.alg = Algorithm::PS256;
        let header = serde_json::to_vec(&header).unwrap();
        format!("{}.{rest}", URL_SAFE_NO_PAD.encode(header))
    };
    let resp = get(&gw.url("/x"), Some(&relabelled)).await;
    assert_eq!(
        challenge(resp.headers()),
        Some(desc("The token signature is invalid"))
    );

    // ES256 is not allowed unless configured: the default is RS256 only.
    let gw = TestGateway::start(&config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        DEFAULT_ROUTES,
    ))
    .await;
    let resp = get(&gw.url("/x"), Some(&idp.token().key(&ec).sign())).await;
    assert_eq!(
        challenge(resp.headers()),
        Some(desc("The token signing algorithm is not allowed"))
    );
}

#[tokio::test]
async fn verified_tokens_are_cached() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = default_gateway(&idp, &upstream).await;
    let token = idp.token().sign();
    for _ in 0..3 {
        assert_eq!(
            get(&gw.url("/x"), Some(&token)).await.status(),
            StatusCode::OK
        );
    }
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("gateway_token_cache_requests_total{result=\"hit\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_token_cache_requests_total{result=\"miss\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_token_cache_entries 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn path_parameters_are_refused_unless_the_route_allows_them() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = r#"
[[routes]]
name = "legacy"
prefix = "/legacy"
public = true
allow_matrix_params = true

[[routes]]
name = "open"
prefix = "/open"
public = true

[[routes]]
name = "admin"
prefix = "/admin"
roles = ["Admin"]
"#;
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), routes)).await;
    // A servlet-style upstream reads `/open/..;/admin` as `/admin`.
    for path in [
        "/open/..;/admin",
        "/open/.;/x",
        "/open/x;jsessionid=1",
        "/legacy/..;/admin",
        "/legacy/;x/a",
    ] {
        let resp = get(&gw.url(path), None).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{path}");
        let body = text(resp).await;
        assert!(body.contains("invalid_request"), "{path}: {body}");
    }
    // Plain matrix parameters where the route allows them, as sent.
    let echoed = echoed(get(&gw.url("/legacy/a;v=2/b;jsessionid=1"), None).await).await;
    assert_eq!(echoed["path"], "/legacy/a;v=2/b;jsessionid=1");
    let records = gw.audit_records(6).await;
    assert!(
        records[..5].iter().all(|r| r["reason"] == "bad_path"),
        "{records:?}"
    );
}
