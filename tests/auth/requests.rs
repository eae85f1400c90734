//! Faults of the request rather than the token, and tokens meant for another
//! service.

use super::*;

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
