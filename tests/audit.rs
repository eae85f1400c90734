//! The audit trail through the real gateway: exactly one record per
//! request whatever its end, the record's fields, the hash chain on disk,
//! backpressure and sink failures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure
mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const ROUTES: &str = r#"
[[routes]]
name = "health"
prefix = "/health"
public = true

[[routes]]
name = "chat"
path = "/openai/deployments/{deployment}/chat/completions"
scopes = ["Models.Invoke"]

[[routes]]
name = "admin"
prefix = "/admin"
scopes = ["Admin.All"]

[[routes]]
name = "api"
prefix = "/"
scopes = ["Models.Invoke"]
"#;

fn by_request_id<'a>(records: &'a [Value], id: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["request_id"] == id).collect()
}

async fn get_with_id(
    url: &str,
    token: Option<&str>,
    id: &str,
) -> http::Response<hyper::body::Incoming> {
    let mut req = Request::get(url).header("x-request-id", id);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    send(req.body(Full::default()).unwrap()).await
}

#[tokio::test]
async fn every_outcome_leaves_exactly_one_record_with_its_facts() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), ROUTES)
        .replace("response_timeout = \"2s\"", "response_timeout = \"300ms\"");
    let gw = TestGateway::start(&cfg).await;
    let token = idp.token().claim("acrs", serde_json::json!(["c1"])).sign();
    let expired = idp.token().expires_in(-3600).sign();

    let cases: &[(&str, &str, Option<&str>, u16)] = &[
        (
            "allow",
            "/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
            Some(&token),
            200,
        ),
        ("public", "/health", None, 200),
        ("missing", "/x", None, 401),
        ("expired", "/x", Some(&expired), 401),
        ("scope", "/admin/users", Some(&token), 403),
        ("timeout", "/slow", Some(&token), 504),
    ];
    for (id, path, token, status) in cases {
        let resp = get_with_id(&gw.url(path), *token, id).await;
        assert_eq!(resp.status().as_u16(), *status, "{id}");
        text(resp).await;
    }
    let records = gw.audit_records(cases.len() as u64).await;
    assert_eq!(records.len(), cases.len(), "one record per request");
    for (id, ..) in cases {
        assert_eq!(by_request_id(&records, id).len(), 1, "{id}");
    }
    let one = |id: &str| by_request_id(&records, id)[0].clone();

    let allow = one("allow");
    assert_eq!(allow["schema"], "portcullis.audit/v1");
    assert_eq!(allow["event"], "request");
    assert_eq!(allow["decision"], "allow");
    assert_eq!(allow["reason"], "allowed");
    assert_eq!(allow["status"], 200);
    assert_eq!(allow["route"], "chat");
    assert_eq!(allow["route_params"]["deployment"], "gpt-4o");
    assert_eq!(
        allow["path"], "/openai/deployments/gpt-4o/chat/completions",
        "no query string"
    );
    assert_eq!(allow["method"], "GET");
    assert_eq!(allow["client_ip"], "127.0.0.1");
    assert_eq!(allow["identity"]["kind"], "user");
    assert_eq!(allow["identity"]["tenant"], TENANT);
    assert_eq!(
        allow["identity"]["principal"],
        "690222be-ff1a-4d56-abd1-7e4f7d38e474"
    );
    assert_eq!(allow["token"]["issuer"], "idp");
    assert_eq!(allow["token"]["id"], "fqiBqXLPj0eQa82S-IYFAA");
    assert_eq!(
        allow["token"]["scopes_used"],
        serde_json::json!(["Models.Invoke"])
    );
    assert_eq!(allow["token"]["acrs"], serde_json::json!(["c1"]));
    let digest = allow["token"]["digest"].as_str().unwrap();
    assert!(
        // The first 8 bytes of the SHA-256 of the token, in hex.
        digest.starts_with("sha256:") && digest.len() == "sha256:".len() + 16,
        "{digest}"
    );
    assert_eq!(allow["upstream"]["status"], 200);
    assert!(allow["upstream"]["duration_ms"].as_f64().unwrap() > 0.0);
    assert!(allow["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(allow["end"], "complete");
    // The first 12 hex digits of the SHA-256 of the config file.
    assert_eq!(allow["config_version"].as_str().unwrap().len(), 12);
    assert!(allow["time"].as_str().unwrap().ends_with('Z'));
    assert!(allow["seq"].as_u64().is_some() && allow["prev"].as_str().is_some());

    let public = one("public");
    assert_eq!(public["decision"], "allow");
    assert!(public["identity"].is_null() && public["token"].is_null());

    let missing = one("missing");
    assert_eq!(
        (
            missing["decision"].clone(),
            missing["reason"].clone(),
            missing["status"].clone()
        ),
        ("deny".into(), "missing_token".into(), 401.into())
    );
    assert_eq!(missing["challenge"], "bearer");
    assert!(missing["upstream"].is_null());

    let expired = one("expired");
    assert_eq!(expired["reason"], "expired");
    assert_eq!(expired["challenge"], "invalid_token");
    assert!(
        expired["identity"].is_null() && expired["token"]["id"].is_null(),
        "no verified token, no claims"
    );
    assert!(
        expired["token"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "a refused token is still traceable by its digest"
    );

    let scope = one("scope");
    assert_eq!(scope["reason"], "scope_missing");
    assert_eq!(scope["challenge"], "insufficient_scope");
    assert_eq!(
        scope["identity"]["kind"], "user",
        "who was refused is recorded"
    );

    let timeout = one("timeout");
    assert_eq!(timeout["decision"], "error");
    assert_eq!(timeout["reason"], "upstream_timeout");
    assert_eq!(timeout["status"], 504);
    assert!(
        timeout["upstream"]["error"]
            .as_str()
            .unwrap()
            .contains("did not answer")
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_recorded_as_an_error() {
    let idp = TestIdp::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = TestGateway::start(&config(closed, &oidc_issuer(&idp, ""), DEFAULT_ROUTES)).await;
    let resp = get(&gw.url("/x"), Some(&idp.token().sign())).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let records = gw.audit_records(1).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["reason"], "upstream_unreachable");
    assert_eq!(records[0]["status"], 502);
    assert!(records[0]["upstream"]["status"].is_null());
}

#[tokio::test]
async fn a_stream_the_client_abandons_is_recorded_as_truncated() {
    let (idp, upstream, gw) = default_stack().await;
    let mut resp = get(&gw.url("/sse"), Some(&idp.token().sign())).await;
    let first = resp.body_mut().frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(resp);
    let records = gw.audit_records(1).await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["stream"], true);
    assert_eq!(r["end"], "client_gone");
    assert_eq!(r["status"], 200);
    drop(upstream);
}

#[tokio::test]
async fn uploads_count_bytes_in() {
    let (idp, _upstream, gw) = default_stack().await;
    let body = vec![b'x'; 3 * 1024 * 1024 + 17];
    let req = Request::post(gw.url("/upload"))
        .header("authorization", format!("Bearer {}", idp.token().sign()))
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    text(resp).await;
    let records = gw.audit_records(1).await;
    assert_eq!(records[0]["bytes_in"], 3 * 1024 * 1024 + 17);
    assert_eq!(records[0]["method"], "POST");
}

#[tokio::test]
async fn a_websocket_leaves_a_handshake_record_and_a_close_record() {
    let (idp, _upstream, gw) = default_stack().await;
    let mut req = format!("ws://{}/ws", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", idp.token().sign())).unwrap(),
    );
    req.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("ws-1"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text("ping through the tunnel"))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        echoed.into_text().unwrap().as_str(),
        "ping through the tunnel"
    );
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);

    let records = gw.audit_records(2).await;
    let mine = by_request_id(&records, "ws-1");
    assert_eq!(mine.len(), 2, "{records:#?}");
    let handshake = mine.iter().find(|r| r["event"] == "request").unwrap();
    assert_eq!(handshake["status"], 101);
    assert_eq!(handshake["decision"], "allow");
    let close = mine.iter().find(|r| r["event"] == "tunnel_close").unwrap();
    assert_eq!(close["end"], "complete");
    assert!(
        close["bytes_in"].as_u64().unwrap() > 23,
        "client frames counted"
    );
    assert!(
        close["bytes_out"].as_u64().unwrap() > 23,
        "upstream frames counted"
    );
    assert_eq!(close["identity"]["kind"], "user");
}

#[tokio::test]
async fn shutdown_flushes_every_record_and_marks_cut_streams() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES)
        .replace("drain_timeout = \"5s\"", "drain_timeout = \"200ms\"");
    let mut gw = TestGateway::start(&cfg).await;
    let token = idp.token().sign();
    const ANSWERED: usize = 20;
    for _ in 0..ANSWERED {
        assert_eq!(
            get(&gw.url("/x"), Some(&token)).await.status(),
            StatusCode::OK
        );
    }
    // A stream the upstream never finishes: the drain cannot end it.
    let mut resp = get(&gw.url("/sse"), Some(&token)).await;
    assert!(resp.body_mut().frame().await.unwrap().unwrap().is_data());

    let records = gw.stop().await;
    assert_eq!(
        records.len(),
        ANSWERED + 1,
        "every record written before join returns, the cut stream's included"
    );
    let cut: Vec<_> = records.iter().filter(|r| r["path"] == "/sse").collect();
    assert_eq!(cut.len(), 1);
    assert_eq!(cut[0]["end"], "shutdown");
    let verified = portcullis::audit::verify(&[gw.audit_path()]).unwrap();
    assert_eq!(verified.records, ANSWERED as u64 + 1);
    assert_eq!(
        verified.starts_after.as_deref(),
        Some(portcullis::audit::GENESIS)
    );
}

#[tokio::test]
async fn rotated_files_verify_as_one_chain_across_restarts() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let dir = temp_dir();
    let log = dir.path().join("trail.jsonl");
    let audit = format!(
        "[audit]\nsink = \"file\"\nfile = \"{}\"\nmax_file_bytes = 4000\nkeep_files = 20\n",
        log.display()
    );
    let cfg = format!(
        "{}\n{audit}",
        config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES)
    );
    let token = idp.token().sign();
    const RUNS: u64 = 2;
    const PER_RUN: u64 = 15;
    for _run in 0..RUNS {
        let mut gw = TestGateway::start(&cfg).await;
        for _ in 0..PER_RUN {
            let resp = get(&gw.url("/x"), Some(&token)).await;
            assert_eq!(resp.status(), StatusCode::OK);
            text(resp).await;
        }
        gw.stop().await;
    }
    let mut files: Vec<_> = (1..=20)
        .rev()
        .map(|n| dir.path().join(format!("trail.jsonl.{n}")))
        .filter(|p| p.exists())
        .collect();
    assert!(files.len() >= 3, "rotated at 4000 bytes: {files:?}");
    files.push(log.clone());
    let verified = portcullis::audit::verify(&files).unwrap();
    let all = RUNS * PER_RUN;
    assert_eq!(verified.records, all);
    assert_eq!(
        (verified.first_seq, verified.last_seq),
        (Some(1), Some(all))
    );

    // Removing a record anywhere is found, with the file and line.
    let victim = &files[1];
    let text = std::fs::read_to_string(victim).unwrap();
    let kept: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(victim, kept.join("\n") + "\n").unwrap();
    let broken = portcullis::audit::verify(&files).unwrap_err();
    assert_eq!(broken.file, victim.display().to_string());
    assert!(broken.problem.contains("is missing"), "{broken}");
}

/// A gateway auditing to `/dev/full` after its first request (see
/// [`fail_the_audit_sink`]).
async fn full_disk(audit: &str) -> (TestIdp, TestUpstream, TestGateway, String) {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let cfg = format!(
        "{}\n{FULL_DISK_AUDIT}{audit}",
        config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES)
    );
    let gw = TestGateway::start(&cfg).await;
    let token = idp.token().sign();
    fail_the_audit_sink(&gw, &token).await;
    (idp, upstream, gw, token)
}

#[tokio::test]
async fn a_failing_sink_with_on_failure_deny_refuses_requests_and_shows_it() {
    let (_idp, _upstream, gw, token) = full_disk("").await;

    let resp = get(&gw.url("/x"), Some(&token)).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let (status, body) = gw.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"audit\":\"failing\""), "{body}");
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("gateway_audit_sink_healthy 0"),
        "{metrics}"
    );
    assert!(metrics.contains("gateway_audit_sink_errors_total{sink=\"file\"}"));
    assert!(metrics.contains(
        "gateway_requests_total{decision=\"error\",kind=\"none\",reason=\"audit_unavailable\",route=\"unmatched\"} 1"
    ), "{metrics}");
}

#[tokio::test]
async fn a_failing_sink_with_on_failure_allow_serves_and_counts_the_loss() {
    let (_idp, _upstream, gw, token) = full_disk("on_failure = \"allow\"\n").await;
    let mut progress = gw.running().audit().unwrap().progress();
    assert_eq!(
        get(&gw.url("/x"), Some(&token)).await.status(),
        StatusCode::OK
    );

    let (status, body) = gw.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "allow keeps serving");
    assert!(body.contains("\"audit\":\"failing\""), "{body}");
    progress.wait_for(|p| p.failures >= 2).await.unwrap();
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("gateway_audit_records_dropped_total{reason=\"sink_error\"} 2"),
        "{metrics}"
    );
}

/// A FIFO nobody reads: the writer blocks once the pipe is full, the queue
/// fills, and new requests wait for room, then get 503.
fn stalled_sink(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::thread::JoinHandle<std::fs::File>) {
    let fifo = dir.join("audit.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // Opening either end of a FIFO waits for the other: open ours on a thread.
    let path = fifo.clone();
    let reader = std::thread::spawn(move || std::fs::File::open(path).unwrap());
    (fifo, reader)
}

async fn fill_until_refused(gw: &TestGateway, token: &str) -> (usize, StatusCode) {
    for n in 0..2000 {
        let resp = get(&gw.url("/x"), Some(token)).await;
        if resp.status() != StatusCode::OK {
            return (n, resp.status());
        }
        text(resp).await;
    }
    (2000, StatusCode::OK)
}

#[tokio::test]
async fn a_full_queue_makes_requests_wait_then_refuses_them() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let dir = temp_dir();
    let (fifo, reader) = stalled_sink(dir.path());
    let cfg = format!(
        "{}\n[audit]\nsink = \"file\"\nfile = \"{}\"\nqueue_capacity = 4\nblock_timeout = \"100ms\"\n",
        config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES),
        fifo.display()
    );
    let gw = TestGateway::start(&cfg).await;
    let mut reader = reader.join().unwrap();
    let (served, status) = fill_until_refused(&gw, &idp.token().sign()).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "after {served} requests"
    );
    assert!(served >= 4, "the queue's capacity was used first");

    // Reading the pipe lets the writer go on: requests pass again, and no
    // record was lost, the refused one's included.
    let drain = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 65536];
        while let Ok(n) = std::io::Read::read(&mut reader, &mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    });
    let token = idp.token().sign();
    assert_eq!(
        get(&gw.url("/x"), Some(&token)).await.status(),
        StatusCode::OK
    );
    let mut progress = gw.running().audit().unwrap().progress();
    let total = served as u64 + 2;
    progress.wait_for(|p| p.written >= total).await.unwrap();
    let mut gw = gw;
    gw.stop().await;
    let lines = drain.join().unwrap();
    let records: Vec<Value> = String::from_utf8(lines)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len() as u64, total);
    assert_eq!(
        records
            .iter()
            .filter(|r| r["reason"] == "audit_unavailable")
            .count(),
        1
    );
}

#[tokio::test]
async fn with_overflow_drop_requests_pass_and_drops_are_counted() {
    let (idp, upstream) = (TestIdp::start().await, TestUpstream::start().await);
    let dir = temp_dir();
    let (fifo, reader) = stalled_sink(dir.path());
    let cfg = format!(
        "{}\n[audit]\nsink = \"file\"\nfile = \"{}\"\nqueue_capacity = 4\noverflow = \"drop\"\n",
        config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES),
        fifo.display()
    );
    let gw = TestGateway::start(&cfg).await;
    let _reader = reader.join().unwrap();
    let token = idp.token().sign();
    for _ in 0..300 {
        let resp = get(&gw.url("/x"), Some(&token)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        text(resp).await;
    }
    assert!(
        gw.metric("gateway_audit_records_dropped_total{reason=\"queue_full\"}")
            .await
            > 0
    );
}

#[test]
fn the_token_scan_finds_a_leaked_token() {
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1sZWFr";
    secrets::remember(&format!("Bearer {token}"));
    let leaked = std::panic::catch_unwind(|| {
        secrets::assert_absent(
            "test text",
            "a log line with c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1sZWFr in it",
        )
    });
    assert!(leaked.is_err(), "the signature alone gives a token away");
    secrets::assert_absent("test text", "a clean line");
}
