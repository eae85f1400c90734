//! Tokens shaped like other OpenID providers' (RFC 9068, Okta, Keycloak,
//! Auth0): where their scopes and roles are, what identity kind they get,
//! and that Entra's defaults do not move.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod support;

use http::StatusCode;
use serde_json::json;
use support::*;

/// One route per permission shape, on an OIDC issuer with `extra` lines.
async fn gateway(idp: &TestIdp, upstream: &TestUpstream, extra: &str) -> TestGateway {
    let routes = r#"
[[routes]]
name = "invoke"
prefix = "/invoke"
scopes = ["Models.Invoke"]

[[routes]]
name = "admin"
prefix = "/admin"
roles = ["Models.Admin"]

[[routes]]
name = "apps"
prefix = "/apps"
kinds = ["app"]
allow_without_permissions = true
"#;
    TestGateway::start(&config(upstream.addr, &oidc_issuer(idp, extra), routes)).await
}

/// The token's claims but `scp`, `roles` and `idtyp` (the Entra ones).
fn plain(idp: &TestIdp) -> TokenBuilder {
    idp.token().without("scp").without("roles").without("idtyp")
}

fn header(echo: &serde_json::Value, name: &str) -> String {
    echo["headers"][name][0].as_str().unwrap_or("").to_owned()
}

#[tokio::test]
async fn rfc9068_scope_and_okta_scp_arrays_grant_scopes_by_default() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = gateway(&idp, &upstream, "").await;

    // RFC 9068 §2.2.3: `scope`, space-delimited.
    let rfc9068 = plain(&idp).claim("scope", "openid Models.Invoke").sign();
    let resp = get(&gw.url("/invoke"), Some(&rfc9068)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&echoed(resp).await, "x-portcullis-scopes"),
        "openid Models.Invoke"
    );

    // Okta: `scp` as a JSON array (used to fail verification).
    let okta = plain(&idp)
        .claim("scp", json!(["Models.Invoke", "offline_access"]))
        .claim("cid", "0oa1okta")
        .without("azp")
        .sign();
    let resp = get(&gw.url("/invoke"), Some(&okta)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let echo = echoed(resp).await;
    assert_eq!(
        header(&echo, "x-portcullis-scopes"),
        "Models.Invoke offline_access"
    );
    assert_eq!(header(&echo, "x-portcullis-client-app"), "0oa1okta");

    // Neither holds the scope: 403 insufficient_scope.
    let other = plain(&idp).claim("scope", "openid profile").sign();
    let resp = get(&gw.url("/invoke"), Some(&other)).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(
        challenge(resp.headers())
            .unwrap()
            .contains("insufficient_scope")
    );
}

#[tokio::test]
async fn keycloak_realm_and_client_roles_come_from_nested_paths() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = gateway(
        &idp,
        &upstream,
        r#"role_claims = ["realm_access.roles", "resource_access.portcullis.roles"]"#,
    )
    .await;
    let keycloak = |realm: &[&str], client: &str, client_roles: &[&str]| {
        plain(&idp)
            .claim("scope", "openid profile")
            .claim("realm_access", json!({ "roles": realm }))
            .claim(
                "resource_access",
                json!({ client: { "roles": client_roles } }),
            )
            .sign()
    };

    let resp = get(
        &gw.url("/admin"),
        Some(&keycloak(
            &["offline_access"],
            "portcullis",
            &["Models.Admin"],
        )),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&echoed(resp).await, "x-portcullis-roles"),
        "offline_access Models.Admin"
    );
    let realm_role = keycloak(&["Models.Admin"], "portcullis", &[]);
    assert_eq!(
        get(&gw.url("/admin"), Some(&realm_role)).await.status(),
        StatusCode::OK
    );
    // Another client's role is not ours.
    let elsewhere = keycloak(&[], "billing", &["Models.Admin"]);
    assert_eq!(
        get(&gw.url("/admin"), Some(&elsewhere)).await.status(),
        StatusCode::FORBIDDEN
    );
    // A top-level `roles` is not read once the sources are configured.
    let top = plain(&idp)
        .claim("scope", "openid")
        .claim("roles", json!(["Models.Admin"]))
        .sign();
    assert_eq!(
        get(&gw.url("/admin"), Some(&top)).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn auth0_permissions_and_namespaced_claims_are_read_where_configured() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = gateway(
        &idp,
        &upstream,
        r#"scope_claims = ["permissions", "scope"]
role_claims = ['"https://portcullis.example/roles"']"#,
    )
    .await;
    let auth0 = plain(&idp)
        .claim("scope", "openid")
        .claim("permissions", json!(["Models.Invoke"]))
        .claim("https://portcullis.example/roles", json!(["Models.Admin"]))
        .sign();
    assert_eq!(
        get(&gw.url("/invoke"), Some(&auth0)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&gw.url("/admin"), Some(&auth0)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_claim_of_the_wrong_shape_grants_nothing_and_fails_nothing() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = gateway(
        &idp,
        &upstream,
        r#"scope_claims = ["permissions"]
role_claims = ["realm_access.roles"]"#,
    )
    .await;
    for (name, value) in [
        ("permissions", json!(42)),
        ("permissions", json!({"Models.Invoke": true})),
        ("permissions", json!(["Models.Invoke", 7])),
        ("realm_access", json!("Models.Admin")),
        ("realm_access", json!({"roles": {"Models.Admin": 1}})),
    ] {
        let token = plain(&idp)
            .claim("scope", "Models.Invoke")
            .claim(name, value.clone())
            .sign();
        for path in ["/invoke", "/admin"] {
            let status = get(&gw.url(path), Some(&token)).await.status();
            assert_eq!(status, StatusCode::FORBIDDEN, "{name}={value} on {path}");
        }
    }
}

#[tokio::test]
async fn oidc_client_credentials_tokens_are_apps_even_with_scopes() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = gateway(&idp, &upstream, "").await;

    // Client credentials (RFC 9068 §2.2): the subject is the client.
    let service = plain(&idp)
        .claim("sub", "svc-client")
        .claim("client_id", "svc-client")
        .claim("scope", "Models.Invoke")
        .without("azp")
        .sign();
    let resp = get(&gw.url("/apps"), Some(&service)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&echoed(resp).await, "x-portcullis-client-app"),
        "svc-client"
    );
    // A user: a subject of its own, with scopes.
    let user = plain(&idp).claim("scope", "Models.Invoke").sign();
    assert_eq!(
        get(&gw.url("/apps"), Some(&user)).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&gw.url("/invoke"), Some(&user)).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn entra_issuers_keep_reading_scp_and_roles_only() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let issuer = format!(
        r#"
[[issuers]]
name = "entra"
kind = "entra"
authority = "{}"
tenants = ["{TENANT}"]
token_versions = ["2.0"]
audiences = ["{AUDIENCE_GUID}"]
"#,
        idp.url()
    );
    let routes = "[[routes]]\nname = \"invoke\"\nprefix = \"/\"\nscopes = [\"Models.Invoke\"]\n";
    let gw = TestGateway::start(&config(upstream.addr, &issuer, routes)).await;
    let scp = idp.entra_v2(TENANT).scp("Models.Invoke").sign();
    assert_eq!(
        get(&gw.url("/x"), Some(&scp)).await.status(),
        StatusCode::OK
    );
    // `scope` is another provider's claim: an Entra token's is not read.
    let scope = idp
        .entra_v2(TENANT)
        .without("scp")
        .claim("scope", "Models.Invoke")
        .sign();
    assert_eq!(
        get(&gw.url("/x"), Some(&scope)).await.status(),
        StatusCode::FORBIDDEN
    );
}
