//! Entra tenants: v1 and v2 tokens, and the multi-tenant allowlist.

use super::*;

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
