//! Key rollover and IdP failures, against a real JWKS server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure

mod support;

use std::time::Duration;

use http::StatusCode;
use portcullis::dev::{JwksMode, SigningKey};
use support::*;

#[tokio::test]
async fn a_new_signing_key_is_accepted_after_one_refresh() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = default_gateway(&idp, &upstream).await;
    let old_token = idp.token().sign();
    assert_eq!(
        get(&gw.url("/x"), Some(&old_token)).await.status(),
        StatusCode::OK
    );
    let fetches = idp.fetch_count();

    // The IdP rolls over immediately: only the new key is published.
    let new_key = SigningKey::rsa("key-2").unwrap();
    idp.set_keys(vec![new_key.clone()]);
    let new_token = idp.token().key(&new_key).sign();
    assert_eq!(
        get(&gw.url("/x"), Some(&new_token)).await.status(),
        StatusCode::OK
    );
    assert_eq!(idp.fetch_count(), fetches + 1, "exactly one refresh");

    // The removed key stops validating, even for a token already cached.
    let resp = get(&gw.url("/x"), Some(&old_token)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        challenge(resp.headers())
            .unwrap()
            .contains("The token signing key is unknown")
    );
}

#[tokio::test]
async fn a_storm_of_random_kids_causes_at_most_one_fetch_per_cooldown() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = default_gateway(&idp, &upstream).await;
    let before = idp.fetch_count();
    let mut tasks = tokio::task::JoinSet::new();
    let (tx, rx) = std::sync::mpsc::channel();
    for batch in 0..20 {
        let tokens: Vec<String> = (0..50)
            .map(|i| {
                idp.token()
                    .header(|h| h.kid = Some(format!("random-{batch}-{i}-{:x}", fastrand::u64(..))))
                    .sign()
            })
            .collect();
        let url = gw.url("/x");
        let tx = tx.clone();
        tasks.spawn(async move {
            for t in tokens {
                tx.send(get(&url, Some(&t)).await.status()).unwrap();
            }
        });
    }
    drop(tx);
    while tasks.join_next().await.is_some() {}
    let statuses: Vec<StatusCode> = rx.iter().collect();
    assert_eq!(statuses.len(), 1000);
    assert!(statuses.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    assert!(
        idp.fetch_count() - before <= 1,
        "{} fetches",
        idp.fetch_count() - before
    );
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("gateway_key_refresh_suppressed_total{issuer=\"idp\"}"),
        "{metrics}"
    );
    // Valid tokens are unaffected throughout.
    assert_eq!(
        get(&gw.url("/x"), Some(&idp.token().sign())).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn idp_down_at_start_means_not_ready_and_503() {
    let (idp, _upstream, gw) = started_with_the_issuer_down().await;
    let (status, body) = gw.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"idp\""), "{body}");
    let resp = get(&gw.url("/x"), Some(&idp.token().sign())).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));
    // Tokens while it is down are not a fetch each: a request fetches at
    // most once a second (with the background retry, a few in all).
    let before = idp.fetch_count();
    for _ in 0..20 {
        let resp = get(&gw.url("/x"), Some(&idp.token().sign())).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert!(
        idp.fetch_count() - before <= 4,
        "{}",
        idp.fetch_count() - before
    );
    // Public routes need no keys.
    assert_eq!(get(&gw.url("/health"), None).await.status(), StatusCode::OK);

    // When the IdP comes back, the background retry loads the keys.
    idp.set_mode(JwksMode::Serving);
    tokio::time::timeout(Duration::from_secs(10), gw.running().wait_ready())
        .await
        .expect("keys loaded after recovery");
    assert_eq!(gw.admin_get("/readyz").await.0, StatusCode::OK);
    assert_eq!(
        get(&gw.url("/x"), Some(&idp.token().sign())).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn idp_down_later_keeps_the_last_good_keys() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = default_gateway(&idp, &upstream).await;
    idp.set_mode(JwksMode::Down);
    let before = idp.fetch_count();
    // An unknown kid forces a refresh, which fails.
    let probe = idp
        .token()
        .header(|h| h.kid = Some("unknown".into()))
        .sign();
    assert_eq!(
        get(&gw.url("/x"), Some(&probe)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(idp.fetch_count(), before, "down: nothing served");
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("gateway_key_refreshes_total{issuer=\"idp\",result=\"error\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gateway_key_refresh_consecutive_failures{issuer=\"idp\"} 1"),
        "{metrics}"
    );
    // Known keys keep working and the gateway stays ready, saying why the
    // refresh fails.
    assert_eq!(
        get(&gw.url("/x"), Some(&idp.token().sign())).await.status(),
        StatusCode::OK
    );
    let (status, ready) = gw.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        ready.contains(r#""key_errors":{"idp":"HTTP status 503 Service Unavailable"}"#),
        "{ready}"
    );
}

/// Reads `/readyz` after each key fetch until `want` is in it (the
/// background refresh runs on its own clock).
async fn readyz_until(gw: &TestGateway, want: &str) -> StatusCode {
    let mut fetched = gw.running().key_fetches_done();
    loop {
        let (status, body) = gw.admin_get("/readyz").await;
        if body.contains(want) {
            return status;
        }
        tokio::time::timeout(Duration::from_secs(10), fetched.changed())
            .await
            .unwrap_or_else(|_| panic!("never {want}: {body}"))
            .unwrap();
    }
}

#[tokio::test]
async fn a_flapping_idp_never_interrupts_requests() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(
        upstream.addr,
        &oidc_issuer(&idp, "refresh_interval = \"1s\""),
        DEFAULT_ROUTES,
    ))
    .await;
    let token = idp.token().sign();
    for _ in 0..2 {
        idp.set_mode(JwksMode::Down);
        let status = readyz_until(&gw, r#""key_errors":{"idp":"HTTP status 503"#).await;
        assert_eq!(status, StatusCode::OK, "the last good keys keep it ready");
        assert_eq!(
            get(&gw.url("/x"), Some(&token)).await.status(),
            StatusCode::OK
        );
        idp.set_mode(JwksMode::Serving);
        readyz_until(&gw, r#""key_errors":{}"#).await;
        assert_eq!(
            get(&gw.url("/x"), Some(&token)).await.status(),
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn an_empty_jwks_never_replaces_a_good_one() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = default_gateway(&idp, &upstream).await;
    idp.set_mode(JwksMode::Empty);
    let before = idp.fetch_count();
    let probe = idp
        .token()
        .header(|h| h.kid = Some("unknown".into()))
        .sign();
    assert_eq!(
        get(&gw.url("/x"), Some(&probe)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(idp.fetch_count(), before + 1, "the empty set was fetched");
    assert_eq!(
        get(&gw.url("/x"), Some(&idp.token().sign())).await.status(),
        StatusCode::OK
    );
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("gateway_key_set_keys{issuer=\"idp\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn discovery_that_names_another_issuer_is_refused() {
    let idp = TestIdp::start().await;
    let fetcher = portcullis::keys::Fetcher::new(None, Duration::from_secs(10)).unwrap();
    let url: http::Uri = format!("{}/.well-known/openid-configuration", idp.url())
        .parse()
        .unwrap();
    let jwks = fetcher.discover(&url, &idp.issuer()).await.unwrap();
    assert_eq!(jwks.to_string(), format!("{}/keys", idp.url()));
    // Why (OIDC Discovery §4.3): the document must name the configured issuer.
    let err = fetcher
        .discover(&url, "https://impostor.example")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert_eq!(idp.fetch_count(), 0, "no key set fetched");
}

/// An issuer that comes up after the gateway costs no 503s once it serves:
/// the first token then fetches the keys, whatever the background retry's
/// backoff says.
#[tokio::test]
async fn a_token_after_the_issuer_comes_up_fetches_the_keys_at_once() {
    let (idp, _upstream, gw) = started_with_the_issuer_down().await;
    // Two background fetches failed: the next one is two seconds away.
    let mut fetched = gw.running().key_fetches_done();
    tokio::time::timeout(Duration::from_secs(10), fetched.wait_for(|n| *n >= 2))
        .await
        .expect("two fetches")
        .unwrap();
    idp.set_mode(JwksMode::Serving);
    assert_eq!(
        get(&gw.url("/x"), Some(&idp.token().sign())).await.status(),
        StatusCode::OK
    );
}

/// The default stack, started while the issuer's key endpoint is down.
async fn started_with_the_issuer_down() -> (TestIdp, TestUpstream, TestGateway) {
    let idp = TestIdp::start().await;
    idp.set_mode(JwksMode::Down);
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start_unready(&config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        DEFAULT_ROUTES,
    ))
    .await;
    (idp, upstream, gw)
}
