//! Model API routes through the real gateway: the effective model decided
//! on, usage read from JSON answers and streams (and asked for when the
//! client did not, without showing it the extra chunk), budgets reserved
//! at admission and settled from what was used.
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use support::upstream::{CACHED_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS};
use support::*;

const ROUTES: &str = r#"
[[routes]]
name = "models"
prefix = "/openai/"
scopes = ["Models.Invoke"]
roles = ["Models.Invoke"]
[routes.model]
models = ["gpt-4o*"]

[metering]
remaining_header = "x-portcullis-remaining-tokens"
"#;

fn chat(gw: &TestGateway, token: &str, path: &str, body: Value) -> Request<Full<Bytes>> {
    Request::post(gw.url(path))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn usage_of(record: &Value) -> (u64, u64, u64, &str) {
    let u = &record["model"]["usage"];
    (
        u["gen_ai.usage.input_tokens"].as_u64().unwrap(),
        u["gen_ai.usage.output_tokens"].as_u64().unwrap(),
        u["cached_input_tokens"].as_u64().unwrap(),
        u["source"].as_str().unwrap(),
    )
}

const V1: &str = "/openai/v1/chat/completions";
const REPORTED: (u64, u64, u64, &str) =
    (PROMPT_TOKENS, COMPLETION_TOKENS, CACHED_TOKENS, "reported");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_read_from_answers_and_streams_and_the_asked_for_chunk_stays_hidden() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), ROUTES)).await;
    let token = idp.token().sign();
    let messages = json!([{"role": "user", "content": "hi"}]);

    // A JSON answer.
    let resp = send(chat(
        &gw,
        &token,
        V1,
        json!({"model": "GPT-4o-mini", "messages": messages}),
    ))
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        !resp.headers().contains_key("x-portcullis-remaining-tokens"),
        "no budget, nothing to tell"
    );
    assert!(text(resp).await.contains("hi there"));

    // A stream that did not ask for its usage: the gateway asks, reads it,
    // and keeps the usage-only chunk from the client.
    let resp = send(chat(
        &gw,
        &token,
        V1,
        json!({"model": "gpt-4o", "messages": messages, "stream": true}),
    ))
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let events = text(resp).await;
    assert_eq!(events.matches("data: ").count(), 4, "{events}");
    assert!(!events.contains("\"choices\":[]"), "{events}");
    assert!(events.ends_with("data: [DONE]\n\n"), "{events}");

    // A stream that asked gets its usage chunk, as sent.
    let body = json!({"model": "gpt-4o", "messages": messages, "stream": true, "stream_options": {"include_usage": true}});
    let events = text(send(chat(&gw, &token, V1, body)).await).await;
    assert!(events.contains("\"choices\":[],"), "{events}");

    // An Azure path: the deployment is the model, whatever the body says.
    let resp = send(chat(
        &gw,
        &token,
        "/openai/deployments/GPT-4o/chat/completions?api-version=2025-04-01",
        json!({"model": "o3", "messages": messages}),
    ))
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    // A stream the upstream ends before its usage: charged at its reservation.
    let resp = send(chat(
        &gw,
        &token,
        &format!("{V1}?cut=1"),
        json!({"model": "gpt-4o", "messages": messages, "stream": true, "max_tokens": 50}),
    ))
    .await;
    let _ = text(resp).await;

    let records = gw.audit_records(5).await;
    let model = |r: &Value| {
        r["model"]["gen_ai.request.model"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        records.iter().map(model).collect::<Vec<_>>(),
        ["gpt-4o-mini", "gpt-4o", "gpt-4o", "gpt-4o", "gpt-4o"]
    );
    for r in &records[..4] {
        assert_eq!(usage_of(r), REPORTED, "{r}");
        assert_eq!(r["model"]["gen_ai.operation.name"], "chat");
        assert!(r["mcp"].is_null());
    }
    assert_eq!(records[1]["model"]["stream"], true);
    let (input, output, _, source) = usage_of(&records[4]);
    assert_eq!((output, source), (50, "reserved"));
    assert!(input > 0);
    let series = format!(
        "gateway_model_tokens_total{{agent=\"none\",app=\"{}\",model=\"gpt-4o\",route=\"models\",source=\"reported\",type=\"input\"}}",
        records[1]["identity"]["client_app"]
            .as_str()
            .unwrap_or("none")
    );
    assert_eq!(gw.metric(&series).await, 3 * PROMPT_TOKENS, "{series}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_no_list_allows_and_a_spent_budget_are_refused_before_the_upstream() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = format!(
        "{ROUTES}\n[[budgets]]\nname = \"per-caller\"\nkey = [\"oid\"]\ntokens_per_minute = 5000\n\n[[policies]]\nname = \"no-o-series-for-apps\"\ninclude_kinds = [\"app\"]\nmodels = [\"gpt-4o-mini\"]\ngrant = \"block\"\n"
    );
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    let token = idp.token().sign();
    let messages = json!([{"role": "user", "content": "hi"}]);

    for (body, status, reason) in [
        (
            json!({"model": "o3", "messages": messages}),
            403,
            "model_not_allowed",
        ),
        (json!({"messages": messages}), 400, "model_missing"),
    ] {
        let resp = send(chat(&gw, &token, V1, body)).await;
        assert_eq!(resp.status(), status);
        let error: Value = serde_json::from_str(&text(resp).await).unwrap();
        assert_eq!(error["error"]["code"], reason);
    }
    // A key given twice (built by hand: a Value keeps one).
    let raw = Request::post(gw.url(V1))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","model":"o3","messages":[]}"#,
        )))
        .unwrap();
    assert_eq!(send(raw).await.status(), StatusCode::BAD_REQUEST);
    // The policy on a model blocks an app, not a user.
    let app = idp
        .token()
        .claim("idtyp", "app")
        .without("scp")
        .roles(&["Models.Invoke"])
        .sign();
    let resp = send(chat(
        &gw,
        &app,
        V1,
        json!({"model": "gpt-4o-mini", "messages": messages}),
    ))
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let error: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(error["error"]["code"], "policy_block");
    assert!(
        upstream.seen().is_empty(),
        "refused requests reached the upstream"
    );

    // 4,096 output tokens reserved a request: one fits in 5,000 at a time.
    let resp = send(chat(
        &gw,
        &token,
        V1,
        json!({"model": "gpt-4o", "messages": messages}),
    ))
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let left: u64 = resp.headers()["x-portcullis-remaining-tokens"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(left < 5000 - 4096, "{left}");
    let _ = text(resp).await;
    // Settled at 18 tokens: there is room again, until a cap that cannot fit.
    let resp = send(chat(
        &gw,
        &token,
        V1,
        json!({"model": "gpt-4o", "messages": messages, "max_tokens": 4000}),
    ))
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = text(resp).await;
    let resp = send(chat(
        &gw,
        &token,
        V1,
        json!({"model": "gpt-4o", "messages": messages, "max_tokens": 4990}),
    ))
    .await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let error: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(error["error"]["code"], "budget_rate_exceeded");
    assert_eq!(error["error"]["type"], "rate_limit_error");

    let records = gw.audit_records(7).await;
    let last = records.last().unwrap();
    assert_eq!(last["reason"], "budget_rate_exceeded");
    assert!(
        last["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "budget:per-caller" && p["result"] == "failure"),
        "{last}"
    );
    assert_eq!(
        gw.metric("gateway_budget_tokens_total{budget=\"per-caller\"}")
            .await,
        2 * (PROMPT_TOKENS + COMPLETION_TOKENS)
    );
}

/// A streamed request whose answer the test controls: `path` picks the
/// upstream's behaviour (`?cut=1`, `?gate=1`).
fn stream_request(
    gw: &TestGateway,
    token: &str,
    path: &str,
    max_tokens: u64,
) -> Request<Full<Bytes>> {
    chat(
        gw,
        token,
        path,
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": max_tokens}),
    )
}

/// What the gateway reserves for [`stream_request`]: its prompt's estimate
/// and its output cap.
fn reserved(max_tokens: u64) -> u64 {
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": max_tokens});
    portcullis::model::request::prompt_estimate(body.to_string().as_bytes()) + max_tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_after_the_last_delta_is_charged_its_reservation() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = format!(
        "{ROUTES}\n[[budgets]]\nname = \"b\"\nkey = [\"oid\"]\ntokens = 100000\nperiod = \"day\"\n"
    );
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    let token = idp.token().sign();

    let resp = send(stream_request(&gw, &token, &format!("{V1}?gate=1"), 300)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // Every delta read; then the client leaves before the usage chunk,
    // which the upstream holds.
    let mut body = resp.into_body();
    let mut seen = String::new();
    while seen.matches("data: ").count() < 3 {
        let frame = body.frame().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(frame.data_ref().unwrap()));
    }
    drop(body);
    // The gateway closed the upstream's connection: the model stops.
    tokio::time::timeout(std::time::Duration::from_secs(10), upstream.abandoned())
        .await
        .expect("the upstream's stream is dropped");

    let records = gw.audit_records(1).await;
    let (input, output, _, source) = usage_of(&records[0]);
    assert_eq!((input + output, source), (reserved(300), "reserved"));
    assert_eq!(records[0]["end"], "client_gone");
    assert_eq!(
        gw.metric("gateway_budget_tokens_total{budget=\"b\"}").await,
        reserved(300)
    );
}

fn redis_store(redis: &support::redis::RedisServer, on_error: &str) -> String {
    format!(
        "\n[budget_store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"1s\"\non_error = \"{on_error}\"\n",
        redis.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_redis_admit_a_concurrent_burst_up_to_the_budget_and_no_further() {
    let redis = support::redis::RedisServer::start();
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    // Room for ten reservations and a half; every answer is cut before its
    // usage, so each admitted request is charged exactly its reservation.
    let each = reserved(100);
    let limit = each * 10 + each / 2;
    let routes = format!(
        "{ROUTES}\n[[budgets]]\nname = \"fleet\"\nkey = [\"oid\"]\ntokens = {limit}\nperiod = \"day\"\n{}",
        redis_store(&redis, "deny")
    );
    let both = config(upstream.addr, &oidc_issuer(&idp, ""), &routes);
    let (a, b) = (
        TestGateway::start(&both).await,
        TestGateway::start(&both).await,
    );
    let token = idp.token().sign();
    let path = format!("{V1}?cut=1");

    let burst = (0..40).map(|i| {
        let gw = if i % 2 == 0 { &a } else { &b };
        let req = stream_request(gw, &token, &path, 100);
        async move {
            let resp = send(req).await;
            let status = resp.status();
            let _ = text(resp).await;
            status
        }
    });
    let statuses = futures_util::future::join_all(burst).await;
    let admitted = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::FORBIDDEN)
        .count();
    assert_eq!((admitted, refused), (10, 30), "{statuses:?}");

    // One counter for both: ten reservations, within the limit.
    let keys = redis.command("KEYS portcullis:budget:fleet:*").unwrap();
    assert_eq!(keys.len(), 3, "one counter: {keys:?}");
    let counter = redis.command(&format!("GET {}", keys[2])).unwrap();
    assert_eq!(counter.last().unwrap().parse::<u64>().unwrap(), 10 * each);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_met_as_configured_and_its_return_is_used_at_once() {
    let mut redis = support::redis::RedisServer::start();
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gateway = |on_error: &str| {
        let routes = format!(
            "{ROUTES}\n[[budgets]]\nname = \"b\"\nkey = [\"oid\"]\ntokens_per_minute = 1000000\n{}",
            redis_store(&redis, on_error)
        );
        config(upstream.addr, &oidc_issuer(&idp, ""), &routes)
    };
    let deny = TestGateway::start(&gateway("deny")).await;
    let local = TestGateway::start(&gateway("local")).await;
    let allow = TestGateway::start(&gateway("allow")).await;
    let token = idp.token().sign();
    let call = |gw: &TestGateway| {
        send(chat(
            gw,
            &token,
            V1,
            json!({"model": "gpt-4o", "messages": []}),
        ))
    };

    for gw in [&deny, &local, &allow] {
        assert_eq!(call(gw).await.status(), StatusCode::OK);
    }
    let (status, ready) = deny.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert!(ready.contains("\"budget_store\":\"ok\""), "{ready}");

    redis.kill();
    let resp = call(&deny).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let error: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(error["error"]["code"], "store_unavailable");
    assert_eq!(
        call(&local).await.status(),
        StatusCode::OK,
        "counted in the replica"
    );
    assert_eq!(call(&allow).await.status(), StatusCode::OK, "let through");
    let (status, ready) = deny.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    assert!(ready.contains("\"budget_store\":\"failing\""), "{ready}");
    let (status, ready) = local.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(deny.metric("gateway_budget_store_up").await, 0);
    assert!(deny.metric("gateway_budget_store_errors_total").await > 0);

    redis.restart();
    let (status, ready) = deny.admin_get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{ready}");
    assert_eq!(call(&deny).await.status(), StatusCode::OK);
    assert_eq!(deny.metric("gateway_budget_store_up").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realtime_session_is_decided_on_the_model_its_query_names() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = ROUTES.replace(
        "[routes.model]",
        "upgrades = [\"websocket\"]\n[routes.model]",
    );
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    let connect = |query: &str| {
        let mut req = format!(
            "ws://{}/openai/realtime?api-version=2025-04-01&{query}",
            gw.addr
        )
        .into_client_request()
        .unwrap();
        let bearer = format!("Bearer {}", idp.token().sign());
        req.headers_mut()
            .insert("authorization", bearer.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    let (mut ws, resp) = connect("deployment=gpt-4o-realtime")
        .await
        .expect("handshake");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws.send(Message::text("session.update")).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "session.update");
    ws.close(None).await.unwrap();
    for (query, status) in [
        ("deployment=o3-realtime", StatusCode::FORBIDDEN),
        (
            "model=gpt-4o-realtime&deployment=o3-realtime",
            StatusCode::BAD_REQUEST,
        ),
        ("", StatusCode::BAD_REQUEST),
    ] {
        match connect(query).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), status, "{query}")
            }
            other => panic!("{query}: expected a refused handshake, got {other:?}"),
        }
    }
}
