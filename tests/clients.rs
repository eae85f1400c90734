//! The clients people use, through the gateway: what the official `openai`
//! Python SDK shows its user when the gateway says no.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod support;

use serde_json::{Value, json};
use support::*;

const ROUTES: &str = r#"
[[routes]]
name = "chat"
prefix = "/openai/v1/chat"
methods = ["POST"]
scopes = ["Models.Invoke"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_shows_the_reason_of_every_refusal() {
    let idp = TestIdp::start().await;
    let stranger = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), ROUTES)).await;

    let cases = json!([
        {"name": "allowed", "token": idp.token().sign(), "base": "/openai/v1"},
        {"name": "expired", "token": idp.token().expires_in(-3600).sign(), "base": "/openai/v1"},
        {"name": "audience", "token": idp.token().aud("api://another-api").sign(), "base": "/openai/v1"},
        {"name": "issuer", "token": stranger.token().sign(), "base": "/openai/v1"},
        {"name": "malformed", "token": "not-a-jwt", "base": "/openai/v1"},
        {"name": "scope", "token": idp.token().scp("Files.Read").sign(), "base": "/openai/v1"},
        {"name": "route", "token": idp.token().sign(), "base": "/somewhere/else"},
    ]);
    let base = gw.url("");
    let out = tokio::task::spawn_blocking(move || {
        python::script("openai_client.py", &[&base, &cases.to_string()])
    })
    .await
    .unwrap();
    let results: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_name = |name: &str| results.iter().find(|r| r["name"] == name).unwrap();

    assert_eq!(by_name("allowed")["status"], 200);
    for (name, status, class, code, kind, words) in [
        (
            "expired",
            401,
            "AuthenticationError",
            "expired",
            "authentication_error",
            "The access token has expired",
        ),
        (
            "audience",
            401,
            "AuthenticationError",
            "wrong_audience",
            "authentication_error",
            "issued for another audience (aud)",
        ),
        (
            "issuer",
            401,
            "AuthenticationError",
            "wrong_issuer",
            "authentication_error",
            "issuer (iss) is not one this API trusts",
        ),
        (
            "malformed",
            401,
            "AuthenticationError",
            "malformed",
            "authentication_error",
            "not a well-formed JWT",
        ),
        (
            "scope",
            403,
            "PermissionDeniedError",
            "scope_missing",
            "permission_error",
            "lacks the scopes or roles this route requires",
        ),
        (
            "route",
            403,
            "PermissionDeniedError",
            "no_route",
            "permission_error",
            "No route of this gateway matches",
        ),
    ] {
        let r = by_name(name);
        assert_eq!(r["status"], status, "{r}");
        assert_eq!(r["class"], class, "{r}");
        assert_eq!(r["code"], code, "{r}");
        assert_eq!(r["type"], kind, "{r}");
        let message = r["message"].as_str().unwrap();
        assert!(message.contains(words), "{name}: {message}");
        assert!(!message.contains("eyJ"), "{name} echoes a token: {message}");
    }
}
