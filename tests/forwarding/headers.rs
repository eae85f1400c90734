//! Header hygiene: identity headers cannot be spoofed, the token stays here,
//! forwarding headers are the gateway's.

use super::*;

#[tokio::test]
async fn identity_headers_cannot_be_spoofed_and_the_token_stays_here() {
    let (idp, _upstream, gw) = default_stack().await;
    let token = idp.token().sign();
    let req = Request::get(gw.url("/x?q=1"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-portcullis-subject", "spoofed-admin")
        .header("x-portcullis-tenant", "spoofed-tenant")
        .header("x-portcullis-tenant", "spoofed-again")
        .header("x-portcullis-roles", "Admin")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-request-id", "req-123")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("connection", "keep-alive, x-custom-hop")
        .header("x-custom-hop", "dropped")
        .body(Full::default())
        .unwrap();
    let resp = send(req).await;
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    let seen = echoed(resp).await;
    let h = &seen["headers"];
    assert!(
        h.get("authorization").is_none(),
        "the token must not reach the upstream"
    );
    assert_eq!(
        h["x-portcullis-subject"],
        serde_json::json!(["690222be-ff1a-4d56-abd1-7e4f7d38e474"])
    );
    assert_eq!(
        h["x-portcullis-tenant"],
        serde_json::json!([TENANT]),
        "every spoofed copy is replaced"
    );
    assert!(
        h.get("x-portcullis-roles").is_none(),
        "a user token has no roles to send"
    );
    assert_eq!(h["x-portcullis-scopes"][0], "Models.Invoke");
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"]),
        "client values are replaced"
    );
    assert_eq!(h["x-forwarded-host"][0], gw.addr.to_string());
    assert_eq!(h["x-request-id"][0], "req-123");
    assert_eq!(
        h["traceparent"][0],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert!(h.get("x-custom-hop").is_none() && h.get("connection").is_none());
    assert_eq!(seen["query"], "q=1");

    // A public route forwards no identity at all, and strips spoofed copies.
    let req = Request::get(gw.url("/health"))
        .header("x-portcullis-subject", "spoofed")
        .body(Full::default())
        .unwrap();
    let seen = echoed(send(req).await).await;
    assert!(seen["headers"].get("x-portcullis-subject").is_none());
    // A request id is generated when the client sends none.
    let resp = get(&gw.url("/health"), None).await;
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
}

#[tokio::test]
async fn trusted_proxies_extend_x_forwarded_for() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES).replace(
        "realm = \"test\"",
        "realm = \"test\"\ntrusted_proxies = [\"127.0.0.0/8\"]",
    );
    let gw = TestGateway::start(&cfg).await;
    let req = Request::get(gw.url("/health"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .body(Full::default())
        .unwrap();
    let seen = echoed(send(req).await).await;
    assert_eq!(
        seen["headers"]["x-forwarded-for"][0],
        "203.0.113.7, 127.0.0.1"
    );
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
}

#[tokio::test]
async fn forwarded_is_the_gateways_like_x_forwarded_for() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let plain = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES);
    let spoofed = || {
        Request::get("/health")
            .header("forwarded", "for=6.6.6.6;host=evil.example;proto=https")
            .header("forwarded", "for=7.7.7.7")
    };
    // An untrusted peer: replaced by this hop's element.
    let gw = TestGateway::start(&plain).await;
    let mut req = spoofed().body(Full::default()).unwrap();
    *req.uri_mut() = gw.url("/health").parse().unwrap();
    let seen = echoed(send(req).await).await;
    assert_eq!(
        seen["headers"]["forwarded"],
        serde_json::json!([format!("for=127.0.0.1;proto=http;host=\"{}\"", gw.addr)])
    );
    // A trusted proxy: its chain grows by this hop.
    let trusted = plain.replace(
        "realm = \"test\"",
        "realm = \"test\"\ntrusted_proxies = [\"127.0.0.0/8\"]",
    );
    let gw = TestGateway::start(&trusted).await;
    let mut req = spoofed().body(Full::default()).unwrap();
    *req.uri_mut() = gw.url("/health").parse().unwrap();
    let seen = echoed(send(req).await).await;
    assert_eq!(
        seen["headers"]["forwarded"],
        serde_json::json!([format!(
            "for=6.6.6.6;host=evil.example;proto=https, for=7.7.7.7, for=127.0.0.1;proto=http;host=\"{}\"",
            gw.addr
        )])
    );
}

#[tokio::test]
async fn underscore_spellings_of_owned_headers_never_reach_the_upstream() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES).replace(
        "response_timeout = \"2s\"",
        "response_timeout = \"2s\"\nstrip_headers = [\"X-MS-CLIENT-PRINCIPAL\", \"x-ms-client-principal-*\", \"X-Original-URL\", \"x-auth-request-*\"]",
    );
    let gw = TestGateway::start(&cfg).await;
    let token = idp.token().sign();
    let mut req = Request::get(gw.url("/x")).header("authorization", format!("Bearer {token}"));
    for name in [
        "x_portcullis_subject",
        "x_portcullis_roles",
        "X_Portcullis-Scopes",
        "x_forwarded_for",
        "x_forwarded_host",
        "x_request_id",
        "x-ms-client-principal",
        "x_ms_client_principal_id",
        "x-ms-client-principal-name",
        "x-original-url",
        "x-auth-request-email",
    ] {
        req = req.header(name, "spoofed");
    }
    let seen = echoed(
        send(
            req.header("x_custom", "kept")
                .body(Full::default())
                .unwrap(),
        )
        .await,
    )
    .await;
    let h = seen["headers"].as_object().unwrap();
    let spoofed: Vec<&String> = h
        .iter()
        .filter(|(_, v)| v.to_string().contains("spoofed"))
        .map(|(k, _)| k)
        .collect();
    assert!(spoofed.is_empty(), "reached the upstream: {spoofed:?}");
    assert_eq!(h["x_custom"][0], "kept", "other names pass");
    assert_eq!(
        h["x-portcullis-subject"][0],
        "690222be-ff1a-4d56-abd1-7e4f7d38e474"
    );
}

#[tokio::test]
async fn a_route_can_opt_in_to_forward_the_authorization_header() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes =
        "[[routes]]\nname = \"passthrough\"\nprefix = \"/\"\nforward_authorization = true\n";
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), routes)).await;
    let token = idp.token().sign();
    let seen = echoed(get(&gw.url("/x"), Some(&token)).await).await;
    assert_eq!(
        seen["headers"]["authorization"][0],
        format!("Bearer {token}")
    );
}
