//! Agents and conditional access through the real gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure
mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;
use support::*;

const AGENT: &str = "a9e1c0de-0000-4a11-8a9e-000000000011";
const BLUEPRINT: &str = "b1e9c1a7-0000-4b00-8000-0000000000bb";

fn routes_and_agents(extra: &str) -> String {
    format!(
        r#"
[[routes]]
name = "chat"
path = "/openai/deployments/{{deployment}}/chat/completions"
methods = ["POST"]
scopes = ["Models.Invoke"]
roles = ["Models.Invoke"]

[[agents]]
id = "{AGENT}"
name = "Research agent"
owner = "ada@contoso.example"
tenant = "{TENANT}"
expires = "2099-01-01T00:00:00Z"
params = {{ deployment = ["gpt-4o-mini"] }}

[[agents]]
id = "c0000000-0000-4000-8000-0000000000e1"
name = "Expired agent"
owner = "ops@contoso.example"
expires = "2020-01-01T00:00:00Z"

{extra}
"#
    )
}

/// An autonomous agent token, in the shape Entra Agent ID issues.
fn agent_token(idp: &TestIdp, agent: &str) -> String {
    idp.agent(agent, BLUEPRINT).sign()
}

async fn post(
    gw: &TestGateway,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    let mut req = Request::post(gw.url(path)).header("authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(req.body(Full::<Bytes>::default()).unwrap()).await
}

#[tokio::test]
async fn agents_are_governed_identities() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &routes_and_agents(""),
    ))
    .await;
    let mini = "/openai/deployments/gpt-4o-mini/chat/completions";
    let big = "/openai/deployments/gpt-4o/chat/completions";

    // A registered agent reaches its deployment, and only that one.
    let token = agent_token(&idp, AGENT);
    assert_eq!(post(&gw, mini, &token, &[]).await.status(), StatusCode::OK);
    let resp = post(&gw, big, &token, &[]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        challenge(resp.headers()),
        None,
        "a new token would not help"
    );

    // Expired and unregistered agents are refused, each with its reason.
    assert_eq!(
        post(
            &gw,
            mini,
            &agent_token(&idp, "c0000000-0000-4000-8000-0000000000e1"),
            &[]
        )
        .await
        .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post(
            &gw,
            mini,
            &agent_token(&idp, "d0000000-0000-4000-8000-0000000000d1"),
            &[]
        )
        .await
        .status(),
        StatusCode::FORBIDDEN
    );
    let (_, metrics) = gw.admin_get("/metrics").await;
    for reason in ["agent_not_allowed", "agent_expired", "agent_unregistered"] {
        let line = format!(
            "gateway_requests_total{{decision=\"deny\",kind=\"agent\",reason=\"{reason}\",route=\"chat\"}} 1"
        );
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }

    // Users are not agents: the registry does not apply to them.
    assert_eq!(
        post(&gw, big, &idp.token().sign(), &[]).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn unregistered_agents_can_be_allowed_explicitly() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = routes_and_agents("[identity]\nunregistered_agents = \"allow\"");
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    let token = agent_token(&idp, "d0000000-0000-4000-8000-0000000000d1");
    assert_eq!(
        post(
            &gw,
            "/openai/deployments/gpt-4o/chat/completions",
            &token,
            &[]
        )
        .await
        .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn ip_conditions_use_forwarded_for_only_through_trusted_proxies() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let policy = r#"
[[locations]]
name = "corp"
ranges = ["10.0.0.0/8"]

[[policies]]
name = "corp-network-only"
grant = "block"
exclude_locations = ["corp"]
"#;
    let routes = routes_and_agents(policy);
    let path = "/openai/deployments/gpt-4o/chat/completions";
    let token = idp.token().sign();

    // Without trusted proxies the socket peer (127.0.0.1) decides, whatever
    // the client claims in X-Forwarded-For.
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    assert_eq!(
        post(&gw, path, &token, &[("x-forwarded-for", "10.1.2.3")])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    // Behind a trusted proxy (the loopback peer), the forwarded client decides.
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), &routes).replace(
        "realm = \"test\"",
        "realm = \"test\"\ntrusted_proxies = [\"127.0.0.1\"]",
    );
    let gw = TestGateway::start(&cfg).await;
    assert_eq!(
        post(&gw, path, &token, &[("x-forwarded-for", "10.1.2.3")])
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        post(&gw, path, &token, &[("x-forwarded-for", "203.0.113.7")])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains(
            "gateway_policy_results_total{policy=\"corp-network-only\",result=\"notApplied\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "gateway_policy_results_total{policy=\"corp-network-only\",result=\"failure\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn step_up_with_the_entra_claims_challenge() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let policy = r#"
[[policies]]
name = "sensitive-needs-c1"
grant = "require"
require_auth_context = "c1"
"#;
    let gw = TestGateway::start(&config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &routes_and_agents(policy),
    ))
    .await;
    let path = "/openai/deployments/gpt-4o/chat/completions";

    // A client that handles claims challenges (xms_cc = cp1) gets a 401 it can answer.
    let resp = post(
        &gw,
        path,
        &idp.token().claim("xms_cc", json!(["cp1"])).sign(),
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(resp.headers()).as_deref(),
        Some(
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiYzEifX19\""
        )
    );
    // Other clients get a plain 403.
    let resp = post(&gw, path, &idp.token().sign(), &[]).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(challenge(resp.headers()), None);
    // After step-up (acrs contains c1) the request passes.
    let stepped_up = idp
        .token()
        .claim("xms_cc", json!(["cp1"]))
        .claim("acrs", json!(["c1"]))
        .sign();
    assert_eq!(
        post(&gw, path, &stepped_up, &[]).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn report_only_policies_are_recorded_not_enforced() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let policy =
        "[[policies]]\nname = \"trial-block\"\nstate = \"report_only\"\ngrant = \"block\"\n";
    let gw = TestGateway::start(&config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &routes_and_agents(policy),
    ))
    .await;
    let path = "/openai/deployments/gpt-4o/chat/completions";
    assert_eq!(
        post(&gw, path, &idp.token().sign(), &[]).await.status(),
        StatusCode::OK
    );
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains(
            "gateway_policy_results_total{policy=\"trial-block\",result=\"reportOnlyFailure\"} 1"
        ),
        "{metrics}"
    );
    // The audit record carries every policy's result, report-only included.
    let records = gw.audit_records(1).await;
    assert_eq!(records[0]["decision"], "allow");
    assert_eq!(
        records[0]["policies"],
        json!([{"name": "trial-block", "result": "reportOnlyFailure"}])
    );
}

#[tokio::test]
async fn agent_records_name_the_agent_its_owner_and_blueprint() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &routes_and_agents(""),
    ))
    .await;
    let allowed = "/openai/deployments/gpt-4o-mini/chat/completions";
    let refused = "/openai/deployments/gpt-4o/chat/completions";
    let token = agent_token(&idp, AGENT);
    assert_eq!(
        post(&gw, allowed, &token, &[]).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        post(&gw, refused, &token, &[]).await.status(),
        StatusCode::FORBIDDEN
    );
    let records = gw.audit_records(2).await;
    for r in &records {
        let who = &r["identity"];
        assert_eq!(who["kind"], "agent");
        assert_eq!(who["agent_id"], AGENT);
        assert_eq!(who["blueprint"], BLUEPRINT);
        assert_eq!(who["client_app"], AGENT);
    }
    let ok = records.iter().find(|r| r["status"] == 200).unwrap();
    assert_eq!(ok["identity"]["agent_name"], "Research agent");
    assert_eq!(ok["identity"]["agent_owner"], "ada@contoso.example");
    assert_eq!(ok["token"]["roles_used"], json!(["Models.Invoke"]));
    assert_eq!(ok["route_params"], json!({"deployment": "gpt-4o-mini"}));
    let no = records.iter().find(|r| r["status"] == 403).unwrap();
    assert_eq!(no["reason"], "agent_not_allowed");
    assert_eq!(
        no["identity"]["agent_name"], "Research agent",
        "a refused agent is named too"
    );
}

#[tokio::test]
async fn tokens_without_permissions_are_refused() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &routes_and_agents(""),
    ))
    .await;
    let id_token_like = idp.token().without("scp").sign();
    let resp = post(
        &gw,
        "/openai/deployments/gpt-4o/chat/completions",
        &id_token_like,
        &[],
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(metrics.contains("reason=\"no_permissions\""));
}

#[tokio::test]
async fn revocation_applies_to_cached_tokens_on_the_next_request() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let file = RevocationFile::new();
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES) + &file.config();
    let gw = TestGateway::start(&cfg).await;
    let mut changes = gw.running().revocation_changes();
    let token = idp.token().claim("uti", "revoke-me-123").sign();
    let other = idp.token().claim("uti", "keep-me-456").sign();
    for t in [&token, &token, &other] {
        assert_eq!(get(&gw.url("/x"), Some(t)).await.status(), StatusCode::OK);
    }
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("gateway_token_cache_requests_total{result=\"hit\"} 1"),
        "the token is cached"
    );

    // Replace the file the way editors and ConfigMaps do: write, then rename.
    file.replace("token_ids = [\"revoke-me-123\"]\n");
    tokio::time::timeout(std::time::Duration::from_secs(10), changes.changed())
        .await
        .unwrap()
        .unwrap();

    let resp = get(&gw.url("/x"), Some(&token)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        challenge(resp.headers()).as_deref(),
        Some(
            "Bearer realm=\"test\", error=\"invalid_token\", error_description=\"The access token was revoked\""
        )
    );
    assert_eq!(
        get(&gw.url("/x"), Some(&other)).await.status(),
        StatusCode::OK
    );

    // A broken file is refused and the previous list keeps serving; a valid
    // one after it applies.
    let applied = *changes.borrow_and_update();
    std::fs::write(&file.path, "token_ids = [unquoted]\n").unwrap();
    let principal = format!(
        "[[principals]]\ntenant = \"{TENANT}\"\noid = \"690222be-ff1a-4d56-abd1-7e4f7d38e474\"\n"
    );
    file.replace(&principal);
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        changes.wait_for(|n| *n > applied),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        get(&gw.url("/x"), Some(&other)).await.status(),
        StatusCode::UNAUTHORIZED,
        "every token of the principal"
    );
}
