//! MCP routes: the gateway is the resource server of the MCP server behind
//! it. It serves the route's protected-resource metadata (RFC 9728) itself
//! and names it in every challenge, so that an MCP client can find where
//! to get a token.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure

mod support;

use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use support::*;

const RESOURCE: &str = "https://mcp.contoso.example/mcp";
const METADATA: &str = "https://mcp.contoso.example/.well-known/oauth-protected-resource/mcp";
const SCOPE: &str = "api://portcullis/Tools.Call";

const ROUTES: &str = r#"
[[routes]]
name = "mcp"
path = "/mcp"
methods = ["POST", "GET", "DELETE"]
scopes = ["Tools.Call"]

[routes.mcp]
resource = "https://mcp.contoso.example/mcp"
scopes_supported = ["api://portcullis/Tools.Call"]
allowed_origins = ["https://chat.contoso.example"]
"#;

fn post_mcp(gw: &TestGateway, token: Option<&str>) -> Request<Full<bytes::Bytes>> {
    post_mcp_from(gw, token, None)
}

fn post_mcp_from(
    gw: &TestGateway,
    token: Option<&str>,
    origin: Option<&str>,
) -> Request<Full<bytes::Bytes>> {
    let mut req = Request::post(gw.url("/mcp")).header("content-type", "application/json");
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.body(Full::from(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#))
        .unwrap()
}

#[tokio::test]
async fn the_gateway_serves_the_metadata_and_names_it_in_every_challenge() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), ROUTES)).await;

    // The metadata, beside the resource's path and (one MCP route) at the
    // bare well-known path, without a token, from the gateway itself.
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let resp = get(&gw.url(path), None).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let doc: Value = serde_json::from_str(&text(resp).await).unwrap();
        assert_eq!(
            doc,
            json!({
                "resource": RESOURCE,
                "authorization_servers": [idp.issuer()],
                "scopes_supported": [SCOPE],
                "bearer_methods_supported": ["header"],
            })
        );
    }
    assert!(upstream.seen().is_empty(), "the upstream was asked");

    // No token, a bad one: 401 naming the metadata.
    for token in [None, Some("not-a-token")] {
        let resp = send(post_mcp(&gw, token)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let c = challenge(resp.headers()).unwrap();
        assert!(
            c.ends_with(&format!(", resource_metadata=\"{METADATA}\"")),
            "{c}"
        );
    }
    // Short of the scope: 403 with the scope in the form clients request.
    let resp = send(post_mcp(&gw, Some(&idp.token().scp("Tools.Read").sign()))).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        challenge(resp.headers()).unwrap(),
        format!(
            "Bearer realm=\"test\", error=\"insufficient_scope\", scope=\"{SCOPE}\", resource_metadata=\"{METADATA}\""
        )
    );
    // Allowed: forwarded as before.
    let resp = send(post_mcp(&gw, Some(&idp.token().scp("Tools.Call").sign()))).await;
    assert_eq!(resp.status(), StatusCode::OK);

    // One record each, the metadata's counted on its route.
    let records = gw.audit_records(6).await;
    let served: Vec<_> = records
        .iter()
        .filter(|r| r["reason"] == "resource_metadata")
        .collect();
    assert_eq!(served.len(), 2, "{records:?}");
    assert!(
        served
            .iter()
            .all(|r| r["route"] == "mcp" && r["decision"] == "allow")
    );
}

#[tokio::test]
async fn routes_that_are_not_mcp_routes_serve_no_metadata() {
    let (idp, upstream, gw) = default_stack().await;
    let resp = get(
        &gw.url("/.well-known/oauth-protected-resource"),
        Some(&idp.token().sign()),
    )
    .await;
    // Forwarded like any path the catch-all route covers.
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream.seen().len(), 1);
    let resp = get(&gw.url("/x"), None).await;
    assert!(
        !challenge(resp.headers())
            .unwrap()
            .contains("resource_metadata")
    );
}

/// DNS rebinding: a page on another origin, in a browser that can reach
/// the MCP server, is refused before its token is read; the resource's own
/// origin and the configured ones, and clients that are not browser pages
/// (no `Origin`), are not.
#[tokio::test]
async fn pages_from_other_origins_cannot_call_an_mcp_route() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), ROUTES)).await;
    let token = idp.token().scp("Tools.Call").sign();
    for origin in [
        "http://evil.example",
        "https://mcp.contoso.example.evil.example",
        "null",
    ] {
        let resp = send(post_mcp_from(&gw, Some(&token), Some(origin))).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{origin}");
        let body: Value = serde_json::from_str(&text(resp).await).unwrap();
        assert_eq!(body["error"]["code"], "origin_not_allowed");
    }
    assert!(upstream.seen().is_empty());
    for origin in [
        Some("https://mcp.contoso.example"),
        Some("https://CHAT.contoso.example"),
        None,
    ] {
        let resp = send(post_mcp_from(&gw, Some(&token), origin)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{origin:?}");
    }
}

/// A JSON-RPC message posted to the MCP route with `token`.
fn message(
    gw: &TestGateway,
    token: &str,
    body: impl Into<bytes::Bytes>,
) -> Request<Full<bytes::Bytes>> {
    Request::post(gw.url("/mcp"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

fn post_body(gw: &TestGateway, token: &str, body: &'static str) -> Request<Full<bytes::Bytes>> {
    Request::post(gw.url("/mcp"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("mcp-protocol-version", "2025-06-18")
        .header("mcp-session-id", "session-7f3a")
        .body(Full::from(body))
        .unwrap()
}

/// A message is read once, strictly: the upstream gets the bytes the
/// client sent, and the record says what the message asks.
#[tokio::test]
async fn messages_are_forwarded_as_sent_and_recorded_by_what_they_ask() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), ROUTES)).await;
    let token = idp.token().scp("Tools.Call").sign();
    const CALL: &str = r#"{ "jsonrpc": "2.0", "id": "call-1", "method": "tools/call",
        "params": {"name": "search", "arguments": {"q": "tickets"}} }"#;
    let echoed = echoed(send(post_body(&gw, &token, CALL)).await).await;
    assert_eq!(echoed["body"]["bytes"], CALL.len());
    assert_eq!(echoed["body"]["json"]["params"]["name"], "search");

    let resp = send(post_body(
        &gw,
        &token,
        r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///tickets/7"}}"#,
    ))
    .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let records = gw.audit_records(2).await;
    assert_eq!(
        records[0]["mcp"],
        json!({
            "mcp.method.name": "tools/call",
            "gen_ai.tool.name": "search",
            "jsonrpc.request.id": "call-1",
            "mcp.protocol.version": "2025-06-18",
            "mcp.session.id": records[0]["mcp"]["mcp.session.id"].clone(),
        })
    );
    let session = records[0]["mcp"]["mcp.session.id"].as_str().unwrap();
    assert!(
        session.starts_with("sha256:") && !session.contains("7f3a"),
        "{session}"
    );
    assert_eq!(records[1]["mcp"]["mcp.resource.uri"], "file:///tickets/7");
    assert_eq!(records[1]["mcp"]["jsonrpc.request.id"], "2");
}

/// What the server could read otherwise than the gateway is refused with
/// a JSON-RPC error, and never reaches the server.
#[tokio::test]
async fn messages_that_could_be_read_two_ways_are_refused() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), ROUTES)).await;
    let token = idp.token().scp("Tools.Call").sign();
    for (n, (body, reason)) in [
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","name":"delete_everything"}}"#,
            "mcp_malformed",
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["delete_everything"]}"#,
            "mcp_malformed",
        ),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}]"#,
            "mcp_batch",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let resp = send(post_body(&gw, &token, body)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let error: Value = serde_json::from_str(&text(resp).await).unwrap();
        assert_eq!(error["jsonrpc"], "2.0");
        assert_eq!(error["id"], Value::Null);
        assert_eq!(error["error"]["code"], -32600, "{body}");
        let records = gw.audit_records(n as u64 + 1).await;
        assert_eq!(records[n]["reason"], reason);
    }
    let mut req = post_body(
        &gw,
        &token,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#,
    );
    req.headers_mut().insert(
        "mcp-name",
        http::HeaderValue::from_static("delete_everything"),
    );
    assert_eq!(send(req).await.status(), StatusCode::BAD_REQUEST);
    assert!(upstream.seen().is_empty(), "the server was asked");
}

const RULED: &str = r#"
[[routes]]
name = "mcp"
path = "/mcp"
methods = ["POST", "GET", "DELETE"]
scopes = ["Tools.Read", "Tools.Write"]
roles = ["Tools.Read", "Tools.Write"]

[routes.mcp]
resource = "https://mcp.contoso.example/mcp"
scopes_supported = ["api://portcullis/Tools.Read", "api://portcullis/Tools.Write"]

[[mcp_rules]]
route = "mcp"
tools = ["search_*"]
scopes = ["Tools.Read"]
roles = ["Tools.Read"]

[[mcp_rules]]
route = "mcp"
tools = ["delete_*"]
scopes = ["Tools.Write"]
roles = ["Tools.Write"]
kinds = ["user"]
"#;

fn tool_call(id: u32, name: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{name}","arguments":{{}}}}}}"#
    )
}

/// Per tool: a call reaches the server only when a rule allows it; a
/// delegated caller short of a scope is told which (step-up), an app is
/// answered as by a server without the tool.
#[tokio::test]
async fn each_tool_call_needs_a_rule_and_each_denial_fits_its_caller() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), RULED)).await;
    let post = |token: String, body: String| message(&gw, &token, body);
    let reader = idp.token().scp("Tools.Read").sign();
    let app = idp
        .token()
        .without("scp")
        .claim("idtyp", "app")
        .roles(&["Tools.Read"])
        .sign();

    // Allowed: forwarded as sent.
    let echoed = echoed(send(post(reader.clone(), tool_call(1, "search_docs"))).await).await;
    assert_eq!(echoed["body"]["json"]["params"]["name"], "search_docs");

    // A user short of Tools.Write: 403 naming it, in full form, with the
    // metadata to get it from.
    let resp = send(post(reader.clone(), tool_call(2, "delete_everything"))).await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        challenge(resp.headers()).unwrap(),
        format!(
            "Bearer realm=\"test\", error=\"insufficient_scope\", scope=\"api://portcullis/Tools.Write\", resource_metadata=\"{METADATA}\""
        )
    );

    // An app: the JSON-RPC error of a server without the tool, with the
    // call's id, so that it cannot tell what exists from what it may use.
    for (n, name) in ["delete_everything", "no_such_tool"].iter().enumerate() {
        let resp = send(post(app.clone(), tool_call(10 + n as u32, name))).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let error: Value = serde_json::from_str(&text(resp).await).unwrap();
        assert_eq!(
            error,
            json!({"jsonrpc": "2.0", "id": 10 + n,
                "error": {"code": -32602, "message": format!("Unknown tool: {name}")}})
        );
    }
    // Lists and the handshake need only the route.
    let list = r#"{"jsonrpc":"2.0","id":20,"method":"tools/list"}"#.to_owned();
    assert_eq!(send(post(app.clone(), list)).await.status(), StatusCode::OK);

    assert_eq!(
        upstream.seen().len(),
        2,
        "only allowed calls reach the server"
    );
    let records = gw.audit_records(5).await;
    let reasons: Vec<&str> = records
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "allowed",
            "mcp_scope_missing",
            "mcp_not_allowed",
            "mcp_not_allowed",
            "allowed"
        ]
    );
    assert_eq!(records[2]["mcp"]["gen_ai.tool.name"], "delete_everything");
    assert_eq!(records[2]["decision"], "deny");
    let series = |reason: &str| {
        format!(
            "gateway_mcp_messages_total{{method=\"tools/call\",reason=\"{reason}\",route=\"mcp\"}}"
        )
    };
    assert_eq!(gw.metric(&series("mcp_not_allowed")).await, 2);
    assert_eq!(gw.metric(&series("allowed")).await, 1);
    assert_eq!(
        gw.metric(
            "gateway_mcp_messages_total{method=\"tools/list\",reason=\"allowed\",route=\"mcp\"}"
        )
        .await,
        1
    );
}

/// A session is its opener's: presented by anyone else it is answered as
/// a session that does not exist (404, the client starts its own), and a
/// DELETE ends the binding. The gateway never requires, mints or rewrites
/// a session id.
#[tokio::test]
async fn a_session_is_bound_to_the_principal_that_opened_it() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), ROUTES)).await;
    let ada = idp.token().scp("Tools.Call").claim("oid", "ada").sign();
    let eve = idp.token().scp("Tools.Call").claim("oid", "eve").sign();
    let request = |method: &str, token: &str, headers: &[(&str, &str)]| {
        let mut req = Request::builder()
            .method(method)
            .uri(gw.url("/mcp"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = if method == "POST" {
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#
        } else {
            ""
        };
        req.body(Full::from(body)).unwrap()
    };
    // The server names the session in its answer to Ada.
    let resp = send(request("POST", &ada, &[("x-test-session", "s-1")])).await;
    assert_eq!(
        resp.headers()["mcp-session-id"],
        "s-1",
        "passed as the server sent it"
    );
    let with = [("mcp-session-id", "s-1")];
    assert_eq!(
        send(request("POST", &ada, &with)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(request("GET", &ada, &with)).await.status(),
        StatusCode::OK
    );

    let seen = upstream.seen().len();
    let resp = send(request("POST", &eve, &with)).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let error: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(error["error"]["code"], -32001);
    assert_eq!(upstream.seen().len(), seen, "the server was not asked");
    // A session the gateway has not seen is the server's to judge.
    let other = [("mcp-session-id", "s-2")];
    assert_eq!(
        send(request("POST", &eve, &other)).await.status(),
        StatusCode::OK
    );
    // Ended by its opener: no longer anyone's.
    assert_eq!(
        send(request("DELETE", &ada, &with)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(request("POST", &eve, &with)).await.status(),
        StatusCode::OK
    );
    // An answer that repeats the session a request named binds nothing
    // (after a restart, the first to present a session must not take it).
    let echoing = [("mcp-session-id", "s-3"), ("x-test-session", "s-3")];
    assert_eq!(
        send(request("POST", &eve, &echoing)).await.status(),
        StatusCode::OK
    );
    let s3 = [("mcp-session-id", "s-3")];
    assert_eq!(
        send(request("POST", &ada, &s3)).await.status(),
        StatusCode::OK
    );

    let records = gw.audit_records(7).await;
    assert_eq!(records[3]["reason"], "mcp_session_not_found");
}

/// With the store in Redis, a session opened through one replica is bound
/// on every replica: its answer's body waits for the binding to be
/// written, so the client's next message, wherever it lands, finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_share_session_bindings() {
    let redis = support::redis::RedisServer::start();
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let store = format!(
        "\n[budget_store]\nkind = \"redis\"\nurl = \"{}\"\ntimeout = \"1s\"\n",
        redis.url()
    );
    let both = config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &format!("{ROUTES}{store}"),
    );
    let (a, b) = (
        TestGateway::start(&both).await,
        TestGateway::start(&both).await,
    );
    let ada = idp.token().scp("Tools.Call").claim("oid", "ada").sign();
    let eve = idp.token().scp("Tools.Call").claim("oid", "eve").sign();
    let post = |gw: &TestGateway, token: &str, headers: &[(&str, &str)]| {
        let mut req = Request::post(gw.url("/mcp"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(Full::from(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#))
            .unwrap()
    };
    // Opened through A: the answer read whole, the binding is everywhere.
    let resp = send(post(&a, &ada, &[("x-test-session", "s-1")])).await;
    assert_eq!(resp.headers()["mcp-session-id"], "s-1");
    let _ = text(resp).await;
    let with = [("mcp-session-id", "s-1")];
    assert_eq!(
        send(post(&b, &eve, &with)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(send(post(&b, &ada, &with)).await.status(), StatusCode::OK);
    let keys = redis.command("KEYS portcullis:mcp-session:*").unwrap();
    assert_eq!(keys.len(), 3, "one binding: {keys:?}");
    // Ended through B: no longer anyone's, on A either.
    let end = Request::delete(b.url("/mcp"))
        .header("authorization", format!("Bearer {ada}"))
        .header("mcp-session-id", "s-1")
        .body(Full::default())
        .unwrap();
    let resp = send(end).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = text(resp).await;
    assert_eq!(send(post(&a, &eve, &with)).await.status(), StatusCode::OK);
}

/// Tool calls are rate-limited per rule, caller and tool: past the limit,
/// 429 with Retry-After and a JSON-RPC error with the call's id; others
/// are not held back.
#[tokio::test]
async fn tool_calls_past_a_rules_rate_get_429_for_that_caller_and_tool_only() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = RULED.replacen(
        "tools = [\"search_*\"]\n",
        "tools = [\"search_*\"]\ncalls_per_minute = 2\n",
        1,
    );
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    let call = |token: &str, id: u32, tool: &str| message(&gw, token, tool_call(id, tool));
    let ada = idp.token().scp("Tools.Read").claim("oid", "ada").sign();
    let bob = idp.token().scp("Tools.Read").claim("oid", "bob").sign();
    for id in 1..=2 {
        assert_eq!(
            send(call(&ada, id, "search_docs")).await.status(),
            StatusCode::OK
        );
    }
    let resp = send(call(&ada, 3, "search_docs")).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    let error: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(
        (error["id"].clone(), error["error"]["code"].clone()),
        (json!(3), json!(-32000))
    );
    // Another tool, another caller: their own budgets.
    assert_eq!(
        send(call(&ada, 4, "search_tickets")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(call(&bob, 5, "search_docs")).await.status(),
        StatusCode::OK
    );
    let records = gw.audit_records(5).await;
    assert_eq!(records[2]["reason"], "mcp_rate_limited");
}

/// Arguments a rule looks into must fit it, read as strictly as the
/// message: a project outside the list, or one given twice, is not
/// allowed.
#[tokio::test]
async fn a_rule_can_hold_a_tools_arguments_to_a_list() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = format!(
        "{RULED}\n[[mcp_rules]]\nroute = \"mcp\"\ntools = [\"close_*\"]\nscopes = [\"Tools.Read\"]\narguments = [{{ pointer = \"/project\", in = [\"ops\", \"sec\"] }}]\n"
    );
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    let token = idp.token().scp("Tools.Read").sign();
    let call = |id: u32, arguments: &str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"close_ticket","arguments":{arguments}}}}}"#
        );
        message(&gw, &token, body)
    };
    let echoed = echoed(send(call(1, r#"{"project":"ops","ticket":7}"#)).await).await;
    assert_eq!(
        echoed["body"]["json"]["params"]["arguments"]["project"],
        "ops"
    );
    for (id, arguments) in [
        (2, r#"{"project":"prod"}"#),
        (3, r#"{"ticket":7}"#),
        (4, r#"{"project":"ops","project":"prod"}"#),
    ] {
        let resp = send(call(id, arguments)).await;
        assert_eq!(resp.status(), StatusCode::OK, "{arguments}");
        let error: Value = serde_json::from_str(&text(resp).await).unwrap();
        assert_eq!(
            error["error"]["message"], "Unknown tool: close_ticket",
            "{arguments}"
        );
    }
    assert_eq!(upstream.seen().len(), 1);
}

/// Rules that only report: every call goes through, and the record says
/// what enforcing them would have done, as a report-only policy result.
#[tokio::test]
async fn rules_in_report_mode_record_what_they_would_have_done() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = RULED.replacen("[routes.mcp]\n", "[routes.mcp]\nrules = \"report\"\n", 1);
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), &routes)).await;
    let app = idp
        .token()
        .without("scp")
        .claim("idtyp", "app")
        .roles(&["Tools.Read"])
        .sign();
    for (id, tool) in [(1, "delete_everything"), (2, "search_docs")] {
        let echoed = echoed(send(message(&gw, &app, tool_call(id, tool))).await).await;
        assert_eq!(echoed["body"]["json"]["params"]["name"], tool);
    }
    let records = gw.audit_records(2).await;
    let report = |r: &Value| (r["reason"].clone(), r["policies"].clone());
    assert_eq!(
        report(&records[0]),
        (
            json!("allowed"),
            json!([{"name": "mcp:mcp", "result": "reportOnlyFailure"}])
        )
    );
    assert_eq!(
        report(&records[1]),
        (
            json!("allowed"),
            json!([{"name": "mcp:mcp", "result": "reportOnlySuccess"}])
        )
    );
    assert_eq!(
        gw.metric("gateway_policy_results_total{policy=\"mcp:mcp\",result=\"reportOnlyFailure\"}")
            .await,
        1
    );
}
