//! The admin listener: liveness, readiness, metrics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure
mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use http_body_util::Full;
use support::*;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let (idp, _upstream, gw) = default_stack().await;

    assert_eq!(
        gw.admin_get("/healthz").await,
        (StatusCode::OK, "ok\n".to_owned())
    );
    let (status, body) = gw.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["audit"], "ok");
    assert_eq!(ready["waiting_for_keys"], serde_json::json!([]));
    assert_eq!(ready["config_version"].as_str().unwrap().len(), 12);

    assert_eq!(
        get(&gw.url("/x"), Some(&idp.token().sign())).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&gw.url("/x"), None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(&gw.url("/x"), Some("garbage")).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let resp = get(&format!("http://{}/metrics", gw.admin), None).await;
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let metrics = text(resp).await;
    for line in [
        "gateway_requests_total{decision=\"allow\",kind=\"user\",reason=\"allowed\",route=\"api\"} 1",
        "gateway_requests_total{decision=\"deny\",kind=\"none\",reason=\"missing_token\",route=\"api\"} 1",
        "gateway_requests_total{decision=\"deny\",kind=\"none\",reason=\"malformed\",route=\"api\"} 1",
        "gateway_request_duration_seconds_count{decision=\"allow\",route=\"api\"} 1",
        "gateway_upstream_duration_seconds_count{route=\"api\"} 1",
        "gateway_requests_in_flight 0",
        "gateway_key_refreshes_total{issuer=\"idp\",result=\"updated\"} 1",
        "gateway_key_set_keys{issuer=\"idp\"} 1",
        "gateway_key_refresh_consecutive_failures{issuer=\"idp\"} 0",
        "gateway_ready 1",
        "gateway_build_info{version=\"",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    assert!(metrics.contains("gateway_key_set_age_seconds{issuer=\"idp\"}"));
    assert!(metrics.contains("gateway_key_refresh_last_success_timestamp_seconds{issuer=\"idp\"}"));
    // No label carries a subject, a path or a token.
    assert!(!metrics.contains("690222be") && !metrics.contains("/x\""));
}

#[tokio::test]
async fn the_admin_port_serves_only_admin_paths() {
    let (_idp, _upstream, gw) = default_stack().await;
    assert_eq!(gw.admin_get("/x").await.0, StatusCode::NOT_FOUND);
    let post = Request::post(format!("http://{}/metrics", gw.admin))
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(send(post).await.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// A scrape with every family populated (requests, policies, open
/// connections, the audit trail) passes `promtool check metrics`. CI sets
/// PORTCULLIS_REQUIRE_PROMTOOL=1 so that a missing promtool fails the test.
#[tokio::test]
async fn a_scrape_passes_promtool_check_metrics() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = format!(
        "{DEFAULT_ROUTES}\n[[policies]]\nname = \"watch\"\nstate = \"report_only\"\ngrant = \"block\"\n"
    );
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    let token = idp.token().sign();
    // Every request on one connection, so that exactly one is open when
    // the scrape runs (a pooled client may open a second while the first
    // is on its way back to its pool).
    let mut sender = http1_connection(gw.addr).await;
    let mut get = |path: &str, token: Option<&str>| {
        let mut req = Request::get(path).header("host", "gateway");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        sender.send_request(req.body(Full::default()).unwrap())
    };
    for (path, token, status) in [
        ("/x", Some(token.as_str()), StatusCode::OK),
        ("/x", None, StatusCode::UNAUTHORIZED),
        ("/health", None, StatusCode::OK),
    ] {
        let resp = get(path, token).await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        text(resp).await;
    }
    // A stream held open: its connection is counted while the scrape runs.
    let mut sse = get("/sse", Some(&token)).await.unwrap();
    assert!(sse.body_mut().frame().await.unwrap().unwrap().is_data());
    gw.audit_records(3).await;

    let (_, metrics) = gw.admin_get("/metrics").await;
    for line in [
        "gateway_open_connections{protocol=\"http1\"} 1",
        "gateway_open_connections{protocol=\"websocket\"} 0",
        "gateway_config_info{version=\"",
        "gateway_audit_records_total 3",
        "gateway_audit_queue_depth 0",
        "gateway_audit_records_dropped_total{reason=\"queue_full\"} 0",
        "gateway_audit_sink_healthy 1",
        "gateway_policy_results_total{policy=\"watch\",result=\"reportOnlyFailure\"} 2",
        "gateway_token_cache_requests_total{result=\"hit\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    drop(sse);

    let scrape = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("scrape.prom");
    std::fs::write(&scrape, &metrics).unwrap();
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&scrape).unwrap())
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check metrics:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => assert!(
            std::env::var_os("PORTCULLIS_REQUIRE_PROMTOOL").is_none(),
            "promtool is required here: {e}"
        ),
    }
}
