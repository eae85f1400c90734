//! What a route admits: its issuers, its paths, its path parameters.

use super::*;

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
