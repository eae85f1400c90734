//! The gateway's own credentials for upstreams, against the dev issuer's
//! real token endpoints on loopback: the client credentials grant with the
//! workload identity's projected token as client assertion, and the
//! managed identity endpoint. The upstream gets the gateway's token, never
//! the caller's; tokens are cached and refreshed ahead by one request; a
//! failing endpoint is met with the cached token, or with 503 and backoff.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use support::*;

const SCOPE: &str = "https://cognitiveservices.azure.com/.default";

fn routes(credential: &str, upstream: &TestUpstream) -> String {
    format!(
        r#"
{credential}

[[upstreams]]
name = "aoai"
url = "http://{}"
host_header = "upstream"
credential = "own"

[[routes]]
name = "models"
prefix = "/openai"
scopes = ["Models.Invoke"]
roles = ["Models.Invoke"]
upstream = "aoai"
"#,
        upstream.addr
    )
}

fn workload_identity(idp: &TestIdp, token_file: &std::path::Path) -> String {
    format!(
        "[[credentials]]\nname = \"own\"\nkind = \"workload_identity\"\ntenant = \"{TENANT}\"\nclient_id = \"gateway-app\"\ntoken_file = \"{}\"\nauthority = \"{}/\"\nscope = \"{SCOPE}\"\n",
        token_file.display(),
        idp.url()
    )
}

fn managed_identity(idp: &TestIdp) -> String {
    format!(
        "[[credentials]]\nname = \"own\"\nkind = \"managed_identity\"\nendpoint = \"{}/metadata/identity/oauth2/token\"\nscope = \"{SCOPE}\"\n",
        idp.url()
    )
}

fn call(gw: &TestGateway, token: &str) -> Request<Full<Bytes>> {
    Request::get(gw.url("/openai/models"))
        .header("authorization", format!("Bearer {token}"))
        .header("api-key", "the caller's key")
        .body(Full::default())
        .unwrap()
}

/// The claims of the token the upstream was sent.
fn presented(echo: &Value) -> Value {
    let header = echo["headers"]["authorization"][0].as_str().unwrap();
    let token = header.strip_prefix("Bearer ").unwrap();
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// An issuer with its token endpoints, an upstream, a projected token
/// file (`projected-1`, which the issuer checks the assertion against) and
/// the gateway with the credential `credential` writes for them.
struct Stack {
    idp: TestIdp,
    upstream: TestUpstream,
    gw: TestGateway,
    token_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn stack(credential: fn(&TestIdp, &std::path::Path) -> String) -> Stack {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let dir = temp_dir();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "projected-1").unwrap();
    idp.server.expect_assertion_from(&token_file);
    let routes = routes(&credential(&idp, &token_file), &upstream);
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    Stack {
        idp,
        upstream,
        gw,
        token_file,
        _dir: dir,
    }
}

#[tokio::test]
async fn the_upstream_gets_the_gateways_own_token_and_never_the_callers() {
    let Stack {
        idp,
        upstream,
        gw,
        token_file: _,
        _dir,
    } = stack(workload_identity).await;
    let caller = idp.token().sign();

    let echo = echoed(send(call(&gw, &caller)).await).await;
    let claims = presented(&echo);
    assert_eq!(claims["aud"], "https://cognitiveservices.azure.com");
    assert_eq!(claims["sub"], "gateway-app");
    assert!(echo["headers"].get("api-key").is_none(), "{echo}");
    assert_eq!(echo["headers"]["host"][0], upstream.addr.to_string());
    // Cached: a second request asks the token endpoint nothing.
    let again = echoed(send(call(&gw, &caller)).await).await;
    assert_eq!(
        again["headers"]["authorization"],
        echo["headers"]["authorization"]
    );
    assert_eq!(idp.server.token_requests(), 1);
    // The caller's token never reached the upstream.
    let seen = format!("{:?}", upstream.seen());
    assert!(
        !seen.contains(&caller),
        "the caller's token reached the upstream"
    );
    // The record names the gateway's token by its digest, never in full.
    let records = gw.audit_records(2).await;
    let digest = records[0]["upstream"]["credential_token"].as_str().unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 23,
        "{digest}"
    );
    assert_eq!(records[1]["upstream"]["credential_token"], digest);
    assert_eq!(records[0]["upstream"]["credential"], "own");
    let presented = echo["headers"]["authorization"][0].as_str().unwrap();
    let trail = std::fs::read_to_string(gw.audit_path()).unwrap();
    assert!(!trail.contains(&presented[7..]));
    let ok = "gateway_credential_exchanges_total{credential=\"own\",result=\"ok\"}";
    assert_eq!(gw.metric(ok).await, 1);
}

#[tokio::test]
async fn the_projected_token_is_read_again_for_every_exchange() {
    let Stack {
        idp,
        upstream: _upstream,
        gw,
        token_file,
        _dir,
    } = stack(workload_identity).await;
    // Tokens too short to keep: every request is an exchange.
    idp.server.set_token_lifetime(5);
    let caller = idp.token().sign();
    assert_eq!(send(call(&gw, &caller)).await.status(), StatusCode::OK);
    // The kubelet rotates the file: a gateway that kept the old one would
    // be refused (AADSTS700024).
    std::fs::write(&token_file, "projected-2").unwrap();
    assert_eq!(send(call(&gw, &caller)).await.status(), StatusCode::OK);
    assert_eq!(idp.server.token_requests(), 2);
}

#[tokio::test]
async fn a_token_is_refreshed_ahead_of_its_expiry_once_while_requests_go_on() {
    let Stack {
        idp,
        upstream: _upstream,
        gw,
        token_file: _,
        _dir,
    } = stack(|idp, _| managed_identity(idp)).await;
    let caller = idp.token().sign();
    // The identity platform asks for a refresh at once; the refresh is slow.
    idp.server.set_token_refresh_in(Some(0));
    let first = echoed(send(call(&gw, &caller)).await).await;
    assert_eq!(
        presented(&first)["aud"],
        "https://cognitiveservices.azure.com"
    );
    idp.server.set_token_delay(Duration::from_millis(300));
    idp.server.set_token_refresh_in(None);
    let burst = (0..20).map(|_| async { send(call(&gw, &caller)).await.status() });
    let statuses = futures_util::future::join_all(burst).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // One refresh for the twenty, then the new token is used.
    tokio::time::timeout(Duration::from_secs(10), idp.server.token_requests_reach(2))
        .await
        .unwrap();
    let after = echoed(send(call(&gw, &caller)).await).await;
    assert_ne!(
        after["headers"]["authorization"],
        first["headers"]["authorization"]
    );
    assert_eq!(idp.server.token_requests(), 2);
}

#[tokio::test]
async fn a_failing_identity_endpoint_is_met_with_the_cached_token_or_503_and_backoff() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let both = config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &routes(&managed_identity(&idp), &upstream),
    );
    let gw = TestGateway::start(&both).await;
    let caller = idp.token().sign();
    idp.server.set_token_refresh_in(Some(0));
    assert_eq!(send(call(&gw, &caller)).await.status(), StatusCode::OK);
    // The refresh fails: the token still valid is used meanwhile.
    idp.server.set_token_endpoint_failing(true);
    assert_eq!(send(call(&gw, &caller)).await.status(), StatusCode::OK);
    tokio::time::timeout(Duration::from_secs(10), idp.server.token_requests_reach(2))
        .await
        .unwrap();
    assert_eq!(send(call(&gw, &caller)).await.status(), StatusCode::OK);

    // With no token at all: 503 with a reason, and no second attempt
    // before the backoff ends.
    let fresh = TestGateway::start(&both).await;
    let before = idp.server.token_requests();
    let resp = send(call(&fresh, &caller)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(error["error"]["code"], "upstream_credential_unavailable");
    assert_eq!(
        send(call(&fresh, &caller)).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        idp.server.token_requests(),
        before + 1,
        "asked once, then backed off"
    );
    let series = "gateway_credential_exchanges_total{credential=\"own\",result=\"AADSTS50089\"}";
    assert_eq!(fresh.metric(series).await, 1);
    let records = fresh.audit_records(2).await;
    assert_eq!(records[0]["reason"], "upstream_credential_unavailable");
    let (status, ready) = fresh.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert!(
        ready.contains(
            "\"own\":\"failing: 500 Internal Server Error: AADSTS50089 temporarily_unavailable\""
        ),
        "{ready}"
    );
    assert!(
        records[0]["upstream"]["error"]
            .as_str()
            .unwrap()
            .contains("AADSTS50089"),
        "{}",
        records[0]
    );
}

/// A workload identity the gateway exchanges as, and the on-behalf-of
/// credential (`own`) that exchanges the caller's token for Graph.
fn on_behalf_of(idp: &TestIdp, token_file: &std::path::Path) -> String {
    let client = workload_identity(idp, token_file).replace("name = \"own\"", "name = \"app\"");
    format!(
        "{client}\n[[credentials]]\nname = \"own\"\nkind = \"on_behalf_of\"\nclient = \"app\"\nscope = \"https://graph.microsoft.com/.default\"\n"
    )
}

#[tokio::test]
async fn a_users_token_is_exchanged_on_their_behalf_and_other_callers_are_refused() {
    let Stack {
        idp,
        upstream: _upstream,
        gw,
        token_file: _,
        _dir,
    } = stack(on_behalf_of).await;

    // A user: the upstream gets a Graph token for that user, which never
    // outlives the user's own.
    let user = idp.token().claim("uti", "user-1").expires_in(120);
    let user_exp = user.claims["exp"].as_u64().unwrap();
    let echo = echoed(send(call(&gw, &user.sign())).await).await;
    let derived = presented(&echo);
    assert_eq!(derived["aud"], "https://graph.microsoft.com");
    assert_eq!(derived["sub"], "690222be-ff1a-4d56-abd1-7e4f7d38e474");
    assert!(derived["exp"].as_u64().unwrap() <= user_exp, "{derived}");
    // Cached for that token.
    assert_eq!(send(call(&gw, &user.sign())).await.status(), StatusCode::OK);
    assert_eq!(idp.server.token_requests(), 1);

    // An app-only caller is refused here, not sent to Entra.
    let app = idp
        .token()
        .claim("idtyp", "app")
        .without("scp")
        .roles(&["Models.Invoke"])
        .sign();
    let resp = send(call(&gw, &app)).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let error: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(error["error"]["code"], "obo_not_a_user");
    assert_eq!(idp.server.token_requests(), 1);
}

#[tokio::test]
async fn conditional_access_at_the_exchange_becomes_the_callers_claims_challenge() {
    let Stack {
        idp,
        upstream,
        gw,
        token_file: _,
        _dir,
    } = stack(on_behalf_of).await;
    let claims = r#"{"access_token":{"capolids":{"essential":true,"values":["mfa-policy"]}}}"#;
    idp.server.require_interaction(Some(claims));

    // A client that answers claims challenges gets Entra's, as a 401.
    let capable = idp
        .token()
        .claim("uti", "capable")
        .claim("xms_cc", json!(["cp1"]))
        .sign();
    let resp = send(call(&gw, &capable)).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let challenge = challenge(resp.headers()).unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(claims);
    assert_eq!(
        challenge,
        format!(
            "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", error=\"insufficient_claims\", claims=\"{encoded}\""
        )
    );
    // Another gets a 403 that says why.
    let plain = idp.token().claim("uti", "plain").sign();
    let resp = send(call(&gw, &plain)).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let error: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(error["error"]["code"], "obo_interaction_required");
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
    let records = gw.audit_records(2).await;
    assert_eq!(records[0]["reason"], "obo_claims_challenge");
    assert_eq!(records[1]["reason"], "obo_interaction_required");
}

#[tokio::test]
async fn an_app_proves_itself_with_a_certificate_or_where_allowed_a_secret() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let dir = temp_dir();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["gateway-app".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("secret"), "s3cret\n").unwrap();
    idp.server.expect_assertion_key(&key.public_key_pem());
    idp.server.expect_client_secret("s3cret");
    let app = |kind: &str, proof: &str| {
        format!(
            "[[credentials]]\nname = \"own\"\nkind = \"{kind}\"\ntenant = \"{TENANT}\"\nclient_id = \"gateway-app\"\nauthority = \"{}/\"\nscope = \"{SCOPE}\"\n{proof}",
            idp.url()
        )
    };
    let certificate = app(
        "client_certificate",
        &format!(
            "certificate = \"{}\"\nkey = \"{}\"\n",
            dir.path().join("cert.pem").display(),
            dir.path().join("key.pem").display()
        ),
    );
    let secret = app(
        "client_secret",
        &format!(
            "secret_file = \"{}\"\nallow_client_secret = true\n",
            dir.path().join("secret").display()
        ),
    );
    for credential in [certificate, secret] {
        let routes = routes(&credential, &upstream);
        let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
        let echo = echoed(send(call(&gw, &idp.token().sign())).await).await;
        assert_eq!(presented(&echo)["sub"], "gateway-app", "{credential}");
    }
    // A key the endpoint does not know is refused as Entra would.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    idp.server.expect_assertion_key(&other.public_key_pem());
    let certificate = app(
        "client_certificate",
        &format!(
            "certificate = \"{}\"\nkey = \"{}\"\n",
            dir.path().join("cert.pem").display(),
            dir.path().join("key.pem").display()
        ),
    );
    let routes = routes(&certificate, &upstream);
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    let resp = send(call(&gw, &idp.token().sign())).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let series = "gateway_credential_exchanges_total{credential=\"own\",result=\"AADSTS700027\"}";
    assert_eq!(gw.metric(series).await, 1);
}

#[tokio::test]
async fn a_redirect_from_the_identity_endpoint_is_not_followed() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let elsewhere = TestUpstream::start().await;
    idp.server
        .redirect_tokens_to(Some(&format!("http://{}/steal", elsewhere.addr)));
    let routes = routes(&managed_identity(&idp), &upstream);
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    let resp = send(call(&gw, &idp.token().sign())).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(elsewhere.seen().is_empty(), "the redirect was followed");
    assert!(upstream.seen().is_empty());
    let series = "gateway_credential_exchanges_total{credential=\"own\",result=\"status_302\"}";
    assert_eq!(gw.metric(series).await, 1);
}
