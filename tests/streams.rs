//! Continuous access: an exchange that stays open (an event stream, a
//! WebSocket, a model's answer) ends when its access does, at its token's
//! expiry or when a revocation or a reload takes it away, in the way its
//! client understands; and the upstream's connection is closed with it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The issuer without clock skew, so that a token's `exp` is its deadline.
fn issuer(idp: &TestIdp) -> String {
    oidc_issuer(idp, "clock_skew = \"0s\"")
}

const EVENTS: &str = r#"
[[routes]]
name = "events"
prefix = "/ticks"
scopes = ["Models.Invoke"]

[[routes]]
name = "api"
prefix = "/"
scopes = ["Models.Invoke"]
"#;

/// Seconds since the epoch, with a fraction.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A token of the default user that expires in `secs`, and its `exp`.
fn expiring(idp: &TestIdp, secs: i64) -> (String, f64) {
    let token = idp.token().expires_in(secs);
    let exp = token.claims["exp"].as_f64().unwrap();
    (token.sign(), exp)
}

async fn open(gw: &TestGateway, path: &str, token: &str) -> Response<Incoming> {
    let resp = get(&gw.url(path), Some(token)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    resp
}

/// Reads a body to its end: the text, whether it ended cleanly, and when.
async fn read_to_end(mut body: Incoming) -> (String, Result<(), String>, f64) {
    let mut text = String::new();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the stream ends in time")
        {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    text.push_str(std::str::from_utf8(d).unwrap());
                }
            }
            Some(Err(e)) => break Err(e.to_string()),
            None => break Ok(()),
        }
    };
    (text, ended, now())
}

/// Reads until the next data frame.
async fn next_data(body: &mut Incoming) -> String {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("a frame in time")
            .expect("the stream is still open")
            .expect("the stream is not broken");
        if let Some(d) = frame.data_ref() {
            return String::from_utf8(d.to_vec()).unwrap();
        }
    }
}

fn record<'a>(records: &'a [Value], path: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["path"] == path && r["event"] == "request")
        .unwrap_or_else(|| panic!("no record of {path} in {records:#?}"))
}

#[tokio::test]
async fn a_resumable_stream_ends_cleanly_at_expiry_plus_grace_with_a_retry_hint() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = format!(
        "{}\n[streams]\nexp_grace = \"1s\"\nsse_retry = \"250ms\"\n",
        config(upstream.addr, &issuer(&idp), EVENTS)
    );
    let gw = TestGateway::start(&cfg).await;
    let (token, exp) = expiring(&idp, 2);
    let (text, ended, at) = read_to_end(open(&gw, "/ticks", &token).await.into_body()).await;

    assert_eq!(ended, Ok(()), "a clean end: the client reconnects");
    assert!(
        text.ends_with("\n\n: access ended\nretry: 250\n\n"),
        "after the last whole event: {text:?}"
    );
    let deadline = exp + 1.0;
    assert!(
        at >= deadline - 0.05 && at <= deadline + 1.0,
        "ended {:.3} s after exp + grace",
        at - deadline
    );
    tokio::time::timeout(Duration::from_secs(2), upstream.abandoned())
        .await
        .expect("the upstream's connection is closed with it");

    let records = gw.audit_records(1).await;
    let r = record(&records, "/ticks");
    assert_eq!(r["end"], "terminated");
    assert_eq!(r["end_reason"], "token_expired");
    assert_eq!(r["stream"], true);
    assert!(r["bytes_out"].as_u64().unwrap() > 100);
    assert_eq!(
        gw.metric("gateway_streams_terminated_total{reason=\"token_expired\",route=\"events\"}")
            .await,
        1
    );
    assert_eq!(gw.metric("gateway_streams_open").await, 0);
}

#[tokio::test]
async fn a_revocation_written_mid_stream_cuts_that_stream_within_a_second_and_no_other() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let file = RevocationFile::new();
    let cfg = config(upstream.addr, &issuer(&idp), EVENTS) + &file.config();
    let gw = TestGateway::start(&cfg).await;
    let mut changes = gw.running().revocation_changes();
    let revoked = idp.token().claim("uti", "revoke-me-123").sign();
    let kept = idp.token().claim("uti", "keep-me-456").sign();
    // Without event ids: nothing to resume, so the stream is cut.
    let mut ended = open(&gw, "/ticks?ids=0", &revoked).await.into_body();
    let mut running = open(&gw, "/ticks?ids=0", &kept).await.into_body();
    next_data(&mut ended).await;
    next_data(&mut running).await;

    file.replace("token_ids = [\"revoke-me-123\"]\n");
    tokio::time::timeout(Duration::from_secs(10), changes.changed())
        .await
        .unwrap()
        .unwrap();
    let applied = now();
    let broke = loop {
        match tokio::time::timeout(Duration::from_secs(5), ended.frame())
            .await
            .expect("the revoked stream ends in time")
        {
            Some(Ok(_)) => continue,
            Some(Err(e)) => break e,
            None => panic!("a stream nobody can resume is cut, not ended cleanly"),
        }
    };
    assert!(
        now() - applied < 1.0,
        "ended {:.3} s after the list changed",
        now() - applied
    );
    assert!(broke.to_string().contains("error"), "{broke}");
    tokio::time::timeout(Duration::from_secs(2), upstream.abandoned())
        .await
        .expect("the upstream's connection is closed with it");
    // The other principal's stream goes on.
    for _ in 0..3 {
        assert!(next_data(&mut running).await.starts_with("data: "));
    }
    drop(running);

    let records = gw.audit_records(2).await;
    let cut = records
        .iter()
        .find(|r| r["end"] == "terminated")
        .expect("a terminated record");
    assert_eq!(cut["end_reason"], "revoked");
    assert_eq!(cut["token"]["id"], "revoke-me-123");
}

#[tokio::test]
async fn a_websocket_gets_a_close_frame_1008_at_expiry_and_its_upstream_is_closed() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(upstream.addr, &issuer(&idp), EVENTS)).await;
    let (token, exp) = expiring(&idp, 2);
    let mut req = format!("ws://{}/ws", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("ws-expiring"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    // Messages both ways while it lasts, large ones too (frames in flight
    // when the access ends are finished first).
    let big = "x".repeat(200_000);
    let close = loop {
        let _ = ws.send(Message::text(big.clone())).await;
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an echo or the close in time")
        {
            Some(Ok(Message::Text(t))) => assert_eq!(t.len(), big.len(), "whole messages only"),
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code and reason"),
            other => panic!("neither an echo nor a close: {other:?}"),
        }
    };
    let at = now();
    assert_eq!(close.code, CloseCode::Policy, "1008");
    assert_eq!(close.reason.as_str(), "token_expired");
    assert!(
        at >= exp - 0.05 && at <= exp + 1.0,
        "closed {:.3} s after exp",
        at - exp
    );
    tokio::time::timeout(Duration::from_secs(2), upstream.websocket_closed())
        .await
        .expect("the upstream's connection is closed");
    // The client answers the close; the gateway then closes the connection.
    let _ = ws.close(None).await;
    while let Some(Ok(_)) = ws.next().await {}

    let records = gw.audit_records(2).await;
    let close = records
        .iter()
        .find(|r| r["request_id"] == "ws-expiring" && r["event"] == "tunnel_close")
        .unwrap();
    assert_eq!(close["end"], "terminated");
    assert_eq!(close["end_reason"], "token_expired");
    assert!(close["bytes_out"].as_u64().unwrap() > 200_000);
}

const MCP_ROUTES: &str = r#"
[[routes]]
name = "mcp"
path = "/mcp/ticks"
methods = ["POST", "GET", "DELETE"]
scopes = ["Models.Invoke"]

[routes.mcp]
resource = "https://mcp.contoso.example/mcp"
scopes_supported = ["api://portcullis/Models.Invoke"]
"#;

#[tokio::test]
async fn an_mcp_stream_resumes_with_a_fresh_token_and_not_with_the_expired_one() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(upstream.addr, &issuer(&idp), MCP_ROUTES)).await;
    let (token, exp) = expiring(&idp, 2);
    let stream = |token: &str, last: Option<&str>| {
        let mut req = Request::get(gw.url("/mcp/ticks"))
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "text/event-stream");
        if let Some(id) = last {
            req = req.header("last-event-id", id);
        }
        send(req.body(Full::<Bytes>::default()).unwrap())
    };
    let resp = stream(&token, None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (text, ended, at) = read_to_end(resp.into_body()).await;
    assert_eq!(ended, Ok(()));
    assert!(at <= exp + 1.0, "ended {:.3} s after exp", at - exp);
    let mut parser = sse_parse::SseParser::new();
    parser.feed(text.as_bytes());
    let last = parser.last_event_id().to_owned();
    assert!(!last.is_empty());
    assert_eq!(
        parser.retry(),
        Some(Duration::from_secs(1)),
        "the default hint"
    );

    // Reconnecting as the client would: with the expired token, refused.
    let refused = stream(&token, Some(&last)).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(
        challenge(refused.headers())
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    // With a fresh one, the stream resumes after the last event it had.
    let fresh = idp.token().sign();
    let mut resumed = stream(&fresh, Some(&last)).await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let next = next_data(resumed.body_mut()).await;
    let n: u64 = last.parse().unwrap();
    assert!(
        next.starts_with(&format!("id: {}\n", n + 1)),
        "resumed after {n}: {next:?}"
    );
}

const MODEL_ROUTES: &str = r#"
[[routes]]
name = "chat"
prefix = "/openai/"
scopes = ["Models.Invoke"]

[routes.model]
"#;

async fn completion(gw: &TestGateway, token: &str, query: &str) -> Response<Incoming> {
    let body = json!({"messages": [{"role": "user", "content": "hi"}], "stream": true});
    send(
        Request::post(gw.url(&format!(
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21&{query}"
        )))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap(),
    )
    .await
}

#[tokio::test]
async fn a_model_answer_may_finish_past_expiry_up_to_its_bound_then_is_cut() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = MODEL_ROUTES.replace("[routes.model]", "[routes.model]\nmax_finish = \"1s\"");
    let gw = TestGateway::start(&config(upstream.addr, &issuer(&idp), &routes)).await;

    // Released within the bound: it finishes, with its usage.
    let (token, exp) = expiring(&idp, 2);
    let resp = completion(&gw, &token, "gate=1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let wait = exp + 0.5 - now();
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
    upstream.release_sse_event();
    let (text, ended, _) = read_to_end(resp.into_body()).await;
    assert_eq!(ended, Ok(()), "finished: {text}");
    assert!(text.ends_with("data: [DONE]\n\n"));

    // Never released: cut at the bound, and charged its reservation.
    let (token, exp) = expiring(&idp, 2);
    let resp = completion(&gw, &token, "gate=1").await;
    let (_, ended, at) = read_to_end(resp.into_body()).await;
    assert!(ended.is_err(), "cut");
    assert!(
        at >= exp + 1.0 - 0.05 && at <= exp + 2.0,
        "cut {:.3} s after exp",
        at - exp
    );
    tokio::time::timeout(Duration::from_secs(2), upstream.abandoned())
        .await
        .expect("the model stops generating");
    let records = gw.audit_records(2).await;
    let cut = records.iter().find(|r| r["end"] == "terminated").unwrap();
    assert_eq!(cut["end_reason"], "token_expired");
    assert_eq!(cut["model"]["usage"]["source"], "reserved", "{cut:#}");
}

#[tokio::test]
async fn a_model_answer_on_a_cutting_route_ends_at_expiry() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = MODEL_ROUTES.replace("[routes.model]", "[routes.model]\non_expiry = \"cut\"");
    let gw = TestGateway::start(&config(upstream.addr, &issuer(&idp), &routes)).await;
    let (token, exp) = expiring(&idp, 2);
    let resp = completion(&gw, &token, "gate=1").await;
    let (_, ended, at) = read_to_end(resp.into_body()).await;
    assert!(ended.is_err());
    assert!(at <= exp + 1.0, "cut {:.3} s after exp", at - exp);
}

const AGENT: &str = "d0000000-0000-4000-8000-0000000000a1";
const OTHER_AGENT: &str = "d0000000-0000-4000-8000-0000000000a2";

fn agent_token(idp: &TestIdp, agent: &str) -> String {
    idp.agent(agent, "b0000000-0000-4000-8000-0000000000b1")
        .sign()
}

fn agents_config(upstream: &TestUpstream, idp: &TestIdp, first: &str, extra: &str) -> String {
    let routes = EVENTS.replace(
        "scopes = [\"Models.Invoke\"]",
        "roles = [\"Models.Invoke\"]",
    );
    format!(
        "{}\n[[agents]]\nid = \"{AGENT}\"\nname = \"Research agent\"\nowner = \"ada@contoso.example\"\n{first}\n[[agents]]\nid = \"{OTHER_AGENT}\"\nname = \"Other agent\"\nowner = \"ada@contoso.example\"\n{extra}",
        config(upstream.addr, &issuer(idp), &routes)
    )
}

#[tokio::test]
async fn a_reload_that_disables_an_agent_ends_its_streams_only() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start_file(&agents_config(&upstream, &idp, "", "")).await;
    let mut reloads = gw.running().reloads();
    let mut disabled = open(&gw, "/ticks?ids=0", &agent_token(&idp, AGENT))
        .await
        .into_body();
    let mut other = open(&gw, "/ticks?ids=0", &agent_token(&idp, OTHER_AGENT))
        .await
        .into_body();
    next_data(&mut disabled).await;
    next_data(&mut other).await;

    gw.rewrite(&agents_config(&upstream, &idp, "enabled = false", ""));
    tokio::time::timeout(Duration::from_secs(10), reloads.changed())
        .await
        .unwrap()
        .unwrap();
    let reloaded = now();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), disabled.frame())
            .await
            .expect("ends in time")
        {
            Some(Ok(_)) => continue,
            other => break other,
        }
    };
    assert!(matches!(ended, Some(Err(_))), "cut");
    assert!(now() - reloaded < 1.0);
    next_data(&mut other).await;

    // An expiry set in a reload, two seconds from now, ends the other one
    // then.
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2))
        .round(jiff::Unit::Second)
        .unwrap();
    gw.rewrite(&agents_config(
        &upstream,
        &idp,
        "enabled = false",
        &format!("expires = \"{soon}\""),
    ));
    let (_, ended, at) = read_to_end(other).await;
    assert!(ended.is_err());
    let expires = soon.as_millisecond() as f64 / 1000.0;
    assert!(
        at >= expires - 0.05 && at <= expires + 1.0,
        "ended {:.3} s after the registration expired",
        at - expires
    );
    let records = gw.audit_records(2).await;
    let reasons: Vec<&str> = records
        .iter()
        .filter_map(|r| r["end_reason"].as_str())
        .collect();
    assert!(reasons.contains(&"agent_disabled"), "{reasons:?}");
    assert!(reasons.contains(&"agent_expired"), "{reasons:?}");
}

#[tokio::test]
async fn reevaluate_on_reload_ends_the_streams_a_new_rule_refuses() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let config_with = |scope: &str, reevaluate: bool| {
        format!(
            "{}\n[streams]\nreevaluate_on_reload = {reevaluate}\n",
            config(
                upstream.addr,
                &issuer(&idp),
                &EVENTS.replacen("Models.Invoke", scope, 1)
            )
        )
    };
    // Without the option, a reload leaves a user's stream alone.
    let gw = TestGateway::start_file(&config_with("Models.Invoke", false)).await;
    let mut reloads = gw.running().reloads();
    let mut body = open(&gw, "/ticks?ids=0", &idp.token().sign())
        .await
        .into_body();
    next_data(&mut body).await;
    gw.rewrite(&config_with("Models.Admin", false));
    reloads.changed().await.unwrap();
    for _ in 0..3 {
        next_data(&mut body).await;
    }
    // With it, the next reload decides it again: the route now asks for a
    // scope the token lacks.
    gw.rewrite(&config_with("Models.Admin", true));
    reloads.changed().await.unwrap();
    let (_, ended, _) = read_to_end(body).await;
    assert!(ended.is_err());
    let records = gw.audit_records(1).await;
    assert_eq!(record(&records, "/ticks")["end_reason"], "scope_missing");
}

#[tokio::test]
async fn a_route_maximum_ends_even_a_public_stream() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = r#"
[[routes]]
name = "public-events"
prefix = "/ticks"
public = true
max_stream_duration = "1s"
"#;
    let gw = TestGateway::start(&config(upstream.addr, &issuer(&idp), routes)).await;
    let started = now();
    let resp = get(&gw.url("/ticks"), None).await;
    let (_, ended, at) = read_to_end(resp.into_body()).await;
    assert_eq!(ended, Ok(()), "its events have ids: resumable");
    assert!((at - started - 1.0).abs() < 0.5, "{:.3} s", at - started);
    let records = gw.audit_records(1).await;
    assert_eq!(record(&records, "/ticks")["end_reason"], "max_duration");
}

#[tokio::test]
async fn an_upload_that_outlasts_its_token_is_refused_as_expired() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(upstream.addr, &issuer(&idp), EVENTS)).await;
    let (token, exp) = expiring(&idp, 2);
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::io::Error>::new(4);
    let sender = tokio::spawn(async move {
        for _ in 0..50 {
            if tx.send_data(Bytes::from(vec![b'x'; 1024])).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let req = Request::post(gw.url("/upload"))
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .unwrap()
        .unwrap();
    let at = now();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        challenge(resp.headers())
            .unwrap()
            .contains("error_description=\"The access token expired\"")
    );
    assert!(at <= exp + 1.0, "{:.3} s after exp", at - exp);
    sender.abort();
}
