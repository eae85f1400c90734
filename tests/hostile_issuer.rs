//! A hostile or broken identity provider: key sets that are huge, slow,
//! malformed, ambiguous or weak, and discovery documents that redirect or
//! point elsewhere. Each is refused with its reason in `/readyz`, requests
//! get 503 (never a 5xx of another kind, never a hang), and public routes
//! keep being served. The IdP is a real HTTP server on loopback that answers
//! what each test tells it to.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis::dev::SigningKey;
use serde_json::{Value, json};
use support::*;
use tokio::net::TcpListener;

/// One canned answer.
#[derive(Clone)]
struct Canned {
    status: u16,
    location: Option<String>,
    body: Bytes,
    delay: Duration,
}

impl Canned {
    fn json(body: impl Into<Bytes>) -> Self {
        Self {
            status: 200,
            location: None,
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
}

/// An IdP that answers each path as told, and counts the requests.
struct FakeIdp {
    addr: SocketAddr,
    answers: Arc<Mutex<HashMap<String, Canned>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeIdp {
    /// Serves discovery pointing at `/keys`; `keys` is what `/keys` answers.
    async fn start(keys: Canned) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answers: Arc<Mutex<HashMap<String, Canned>>> = Arc::default();
        let table = answers.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let table = table.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let canned = table.lock().unwrap().get(req.uri().path()).cloned();
                        async move {
                            let Some(c) = canned else {
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = StatusCode::NOT_FOUND;
                                return Ok::<_, Infallible>(r);
                            };
                            tokio::time::sleep(c.delay).await;
                            let mut r = Response::new(Full::new(c.body));
                            *r.status_mut() = StatusCode::from_u16(c.status).unwrap();
                            if let Some(l) = c.location {
                                r.headers_mut().insert("location", l.parse().unwrap());
                            }
                            Ok(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let idp = Self {
            addr,
            answers,
            task,
        };
        idp.set(
            "/.well-known/openid-configuration",
            Canned::json(
                json!({"issuer": idp.url(), "jwks_uri": format!("{}/keys", idp.url())}).to_string(),
            ),
        );
        idp.set("/keys", keys);
        idp
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, path: &str, canned: Canned) {
        self.answers.lock().unwrap().insert(path.to_owned(), canned);
    }
}

/// A gateway trusting `idp` (OIDC discovery), with a public `/health`.
async fn gateway_for(idp: &FakeIdp, extra: &str) -> (TestGateway, TestUpstream) {
    let upstream = TestUpstream::start().await;
    let issuer = format!(
        "[[issuers]]\nname = \"idp\"\nkind = \"oidc\"\nissuer = \"{}\"\naudiences = [\"{AUDIENCE}\"]\nrefresh_cooldown = \"1h\"\n{extra}\n",
        idp.url()
    );
    let gw = TestGateway::start_unready(&config(upstream.addr, &issuer, DEFAULT_ROUTES)).await;
    (gw, upstream)
}

/// Waits until `/readyz` reports a key error (read after each key fetch),
/// and returns it with the readiness document.
async fn key_error(gw: &TestGateway) -> (String, Value) {
    let mut fetched = gw.running().key_fetches_done();
    loop {
        let (status, body) = gw.admin_get("/readyz").await;
        let doc: Value = serde_json::from_str(&body).unwrap();
        if let Some((_, error)) = doc["key_errors"].as_object().and_then(|m| m.iter().next()) {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{doc}");
            return (error.as_str().unwrap().to_owned(), doc);
        }
        tokio::time::timeout(Duration::from_secs(10), fetched.changed())
            .await
            .unwrap_or_else(|_| panic!("no key error reported: {doc}"))
            .unwrap();
    }
}

/// A token the IdP could have signed (its keys are never usable here).
fn token(idp: &FakeIdp) -> String {
    let key = SigningKey::rsa("k1").unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    let t = key.sign(&json!({
        "iss": idp.url(), "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600,
        "sub": "s", "scp": "Models.Invoke",
    }));
    support::secrets::remember(&t);
    t
}

/// Checks the gateway's answers while its keys are refused: 503 for a
/// token, 200 on the public route, both promptly.
async fn still_serving(gw: &TestGateway, idp: &FakeIdp) {
    let started = Instant::now();
    let resp = get(&gw.url("/v1/x"), Some(&token(idp))).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(text(resp).await.contains("unavailable"));
    assert_eq!(get(&gw.url("/health"), None).await.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn weak_rsa_jwk() -> Value {
    let mut n = vec![0xc5u8; 128]; // a 1024-bit modulus
    n[127] |= 1;
    json!({"kty": "RSA", "use": "sig", "kid": "weak", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"})
}

#[tokio::test]
async fn hostile_key_sets_are_refused_with_their_reason() {
    let good = SigningKey::rsa("k1").unwrap().jwk().clone();
    let mut enc = good.clone();
    enc["use"] = "enc".into();
    let deep = format!(
        "{{\"keys\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let huge = format!(
        "{{\"keys\":[{}],\"padding\":\"{}\"}}",
        good,
        "x".repeat(2 << 20)
    );
    let cases: Vec<(&str, String, &str)> = vec![
        ("over 1 MiB", huge, "larger than 1048576 bytes"),
        ("not JSON", "{\"keys\": [".into(), "not valid JSON"),
        ("nested 100,000 deep", deep, "not valid JSON"),
        (
            "two keys under one kid",
            json!({"keys": [good, good]}).to_string(),
            "two keys with kid \"k1\"",
        ),
        (
            "RSA under 2048 bits",
            json!({"keys": [weak_rsa_jwk()]}).to_string(),
            "RSA key of 1024 bits is below 2048",
        ),
        (
            "a symmetric key",
            json!({"keys": [{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}]}).to_string(),
            "kid \"hmac\"",
        ),
        (
            "an encryption key",
            json!({"keys": [enc]}).to_string(),
            "use is not \"sig\"",
        ),
        (
            "an RSA key claiming an EC algorithm",
            json!({"keys": [{"kty": "RSA", "kid": "k2", "alg": "ES256", "n": good["n"], "e": "AQAB"}]})
                .to_string(),
            "does not fit key type RSA",
        ),
    ];
    for (name, body, reason) in cases {
        let idp = FakeIdp::start(Canned::json(body)).await;
        let (gw, _upstream) = gateway_for(&idp, "").await;
        let (error, doc) = key_error(&gw).await;
        assert!(error.contains(reason), "{name}: {error:?}");
        assert_eq!(doc["ready"], false, "{name}");
        still_serving(&gw, &idp).await;
    }
}

#[tokio::test]
async fn a_slow_key_endpoint_times_out_without_holding_requests() {
    let mut slow = Canned::json(json!({"keys": []}).to_string());
    slow.delay = Duration::from_secs(60);
    let idp = FakeIdp::start(slow).await;
    let (gw, _upstream) = gateway_for(&idp, "fetch_timeout = \"300ms\"").await;
    let (error, _) = key_error(&gw).await;
    assert_eq!(error, "timed out after 300ms");
    still_serving(&gw, &idp).await;
}

/// Serves the discovery document `discovery` makes (given the FakeIdp and
/// a real IdP elsewhere) and returns the refusal's reason, after checking
/// that nothing was fetched elsewhere and the gateway still serves.
async fn discovery_refusal(discovery: impl FnOnce(&FakeIdp, &TestIdp) -> Canned) -> String {
    let elsewhere = TestIdp::start().await;
    let idp = FakeIdp::start(Canned::json("{}")).await;
    idp.set(
        "/.well-known/openid-configuration",
        discovery(&idp, &elsewhere),
    );
    let (gw, _upstream) = gateway_for(&idp, "").await;
    let (error, _) = key_error(&gw).await;
    assert_eq!(elsewhere.fetch_count(), 0);
    still_serving(&gw, &idp).await;
    error
}

#[tokio::test]
async fn a_redirecting_discovery_document_is_not_followed() {
    let error = discovery_refusal(|_, elsewhere| Canned {
        status: 302,
        location: Some(format!(
            "{}/.well-known/openid-configuration",
            elsewhere.url()
        )),
        body: Bytes::new(),
        delay: Duration::ZERO,
    })
    .await;
    assert_eq!(error, "HTTP status 302 Found");
}

#[tokio::test]
async fn a_jwks_uri_on_another_host_is_never_fetched() {
    let error = discovery_refusal(|idp, elsewhere| {
        Canned::json(
            json!({"issuer": idp.url(), "jwks_uri": format!("{}/keys", elsewhere.url())})
                .to_string(),
        )
    })
    .await;
    assert_eq!(
        error,
        "discovery document: jwks_uri points to another host or scheme"
    );
}
