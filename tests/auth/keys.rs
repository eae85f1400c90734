//! Signing algorithms beyond RS256, and the verified-token cache.

use super::*;

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
