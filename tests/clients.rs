//! The clients people use, through the gateway: what the official `openai`
//! Python SDK shows its user when the gateway says no, and what it iterates
//! of a model route's streams; the official MCP SDK's client and server on
//! either side of an MCP route.
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

/// Runs `openai_client.py` on `cases`: one result per case.
async fn openai_cases(gw: &TestGateway, cases: Value) -> Vec<Value> {
    let base = gw.url("");
    let out = tokio::task::spawn_blocking(move || {
        python::script("openai_client.py", &[&base, &cases.to_string()])
    })
    .await
    .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_sdk_streams_through_a_model_route_sees_only_what_it_asked_and_meets_budgets_as_its_own_errors()
 {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes = r#"
[[routes]]
name = "models"
prefix = "/openai/v1/"
scopes = ["Models.Invoke"]
[routes.model]
models = ["gpt-4o*"]

[[budgets]]
name = "tight"
key = ["oid"]
models = ["gpt-4o-mini"]
tokens_per_minute = 9000
"#;
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), routes)).await;
    let token = idp.token().sign();
    let case = |name: &str, extra: Value| {
        let mut c = json!({"name": name, "token": token, "base": "/openai/v1", "model": "gpt-4o"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let cases = json!([
        case("json", json!({})),
        case("stream", json!({"stream": true})),
        case(
            "stream asking",
            json!({"stream": true, "include_usage": true})
        ),
        case("denied model", json!({"model": "o3"})),
        // 4,096 output tokens reserved each; settled at 18.
        case("budget 1", json!({"model": "gpt-4o-mini", "stream": true})),
        case("budget 2", json!({"model": "gpt-4o-mini"})),
        // A cap the budget cannot hold: refused before the upstream.
        case(
            "budget spent",
            json!({"model": "gpt-4o-mini", "max_tokens": 9000})
        ),
    ]);
    let results = openai_cases(&gw, cases).await;
    let by_name = |name: &str| results.iter().find(|r| r["name"] == name).unwrap();
    let usage = json!({"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18});
    let json_call = by_name("json");
    assert_eq!(json_call["status"], 200, "{json_call}");
    for key in ["prompt_tokens", "completion_tokens", "total_tokens"] {
        assert_eq!(json_call["usage"][key], usage[key], "{json_call}");
    }
    // The SDK iterates every chunk of the stream: none without choices.
    let stream = by_name("stream");
    assert_eq!(
        (stream["chunks"].as_u64(), stream["empty_choices"].as_u64()),
        (Some(3), Some(0)),
        "{stream}"
    );
    assert_eq!(stream["usage"], Value::Null, "{stream}");
    assert_eq!(stream["text"], "hi there!");
    let asking = by_name("stream asking");
    assert_eq!(
        (asking["chunks"].as_u64(), asking["empty_choices"].as_u64()),
        (Some(4), Some(1)),
        "{asking}"
    );
    assert_eq!(asking["usage"]["completion_tokens"], 7, "{asking}");
    let denied = by_name("denied model");
    assert_eq!(
        (denied["status"].as_u64(), denied["class"].as_str()),
        (Some(403), Some("PermissionDeniedError")),
        "{denied}"
    );
    assert_eq!(denied["code"], "model_not_allowed");
    assert!(
        denied["message"]
            .as_str()
            .unwrap()
            .contains("may not use the model"),
        "{denied}"
    );
    assert_eq!(by_name("budget 1")["status"], 200);
    assert_eq!(by_name("budget 2")["status"], 200);
    let spent = by_name("budget spent");
    assert_eq!(
        (spent["status"].as_u64(), spent["class"].as_str()),
        (Some(429), Some("RateLimitError")),
        "{spent}"
    );
    assert_eq!(
        (spent["code"].as_str(), spent["type"].as_str()),
        (Some("budget_rate_exceeded"), Some("rate_limit_error"))
    );
    assert!(
        spent["message"]
            .as_str()
            .unwrap()
            .contains("Token budget 'tight' (rate) is spent"),
        "{spent}"
    );
    let budget_tokens = "gateway_budget_tokens_total{budget=\"tight\"}";
    assert_eq!(gw.metric(budget_tokens).await, 36);

    // The usage of every answer, as the upstream reported it, in the
    // records: the SDK's streams included, whether they asked or not.
    let records = gw.audit_records(7).await;
    assert_eq!(records.len(), 7);
    let reported: Vec<_> = records
        .iter()
        .filter(|r| r["model"]["usage"]["source"] == "reported")
        .map(|r| {
            r["model"]["usage"]["gen_ai.usage.output_tokens"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(reported, [7; 5]);
}

/// The official MCP SDK's server, on a free loopback port; killed on drop.
struct McpServer {
    child: std::process::Child,
    port: u16,
}

impl McpServer {
    /// Starts it and waits for the line that says it listens.
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts it with `args` (`--resumable`).
    fn start_with(args: &[&str]) -> Self {
        use std::io::BufRead;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/mcp_server.py");
        let mut child = std::process::Command::new(python::python())
            .arg(script)
            .arg(port.to_string())
            .args(args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut lines = std::io::BufReader::new(stderr).lines();
        let mut seen = String::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("Uvicorn running on") => break,
                Some(Ok(line)) => seen.push_str(&line),
                _ => panic!("the MCP server did not start: {seen}"),
            }
        }
        // Keep reading its log, so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Self { child, port }
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The official MCP SDK, client and server, through the gateway: a tool
/// call reaches the server only when a rule allows it, and each refusal
/// reaches the SDK's user in the form the protocol gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_sdk_calls_only_what_the_rules_allow() {
    let server = tokio::task::spawn_blocking(McpServer::start).await.unwrap();
    let idp = TestIdp::start().await;
    let routes = r#"
[[routes]]
name = "mcp"
path = "/mcp"
methods = ["POST", "GET", "DELETE"]
scopes = ["Tools.Read", "Tools.Write"]
roles = ["Tools.Read", "Tools.Write"]

[routes.mcp]
resource = "http://127.0.0.1/mcp"
scopes_supported = ["api://tickets/Tools.Read", "api://tickets/Tools.Write"]

[[mcp_rules]]
route = "mcp"
tools = ["search_*"]
scopes = ["Tools.Read"]
roles = ["Tools.Read"]

[[mcp_rules]]
route = "mcp"
tools = ["delete_*"]
scopes = ["Tools.Write"]
kinds = ["user"]
"#;
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], server.port).into();
    let mut gw = TestGateway::start(&config(upstream, &oidc_issuer(&idp, ""), routes)).await;
    let app = idp
        .token()
        .without("scp")
        .claim("idtyp", "app")
        .roles(&["Tools.Read"])
        .sign();
    let cases = json!([
        {"name": "writer", "token": idp.token().scp("Tools.Read Tools.Write").sign(),
         "calls": ["search_docs", "delete_everything"]},
        {"name": "reader", "token": idp.token().scp("Tools.Read").sign(),
         "calls": ["search_docs", "delete_everything"]},
        {"name": "app", "token": app.clone(), "calls": ["search_docs", "delete_everything"]},
        {"name": "legacy", "token": idp.token().scp("Tools.Read").sign(), "mode": "legacy",
         "calls": ["search_docs", "delete_everything"]},
        {"name": "legacy-app", "token": app.clone(), "mode": "legacy", "calls": []},
    ]);
    let url = gw.url("/mcp");
    let out = tokio::task::spawn_blocking(move || {
        python::script("mcp_client.py", &[&url, &cases.to_string()])
    })
    .await
    .unwrap();
    let results: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_name = |name: &str| results.iter().find(|r| r["name"] == name).unwrap().clone();

    let writer = by_name("writer");
    assert_eq!(
        writer["calls"]["search_docs"]["text"], "found: printer",
        "{writer}"
    );
    assert_eq!(
        writer["calls"]["delete_everything"]["text"], "deleted",
        "{writer}"
    );
    let reader = by_name("reader");
    assert_eq!(
        reader["calls"]["search_docs"]["text"], "found: printer",
        "{reader}"
    );
    // Short of a scope: the 403 that asks for it (an SDK with an auth
    // provider steps up; without one, it raises).
    assert_eq!(
        reader["calls"]["delete_everything"]["raised"], "MCPError",
        "{reader}"
    );
    let app = by_name("app");
    assert_eq!(
        app["calls"]["search_docs"]["text"], "found: printer",
        "{app}"
    );
    assert_eq!(
        app["calls"]["delete_everything"]["message"], "Unknown tool: delete_everything",
        "{app}"
    );
    // What each can discover: what it could call (a user may ask for the
    // scope a tool needs, so it sees it; an app cannot).
    let both = json!(["delete_everything", "search_docs"]);
    assert_eq!(writer["tools"], both);
    assert_eq!(reader["tools"], both);
    assert_eq!(app["tools"], json!(["search_docs"]));
    // The 2025 protocol answers in SSE: the list event is filtered there.
    assert_eq!(by_name("legacy-app")["tools"], json!(["search_docs"]));

    // The 2025 protocol too: a session, the handshake, the same decisions.
    let legacy = by_name("legacy");
    assert_eq!(
        legacy["calls"]["search_docs"]["text"], "found: printer",
        "{legacy}"
    );
    assert_eq!(
        legacy["calls"]["delete_everything"]["raised"], "MCPError",
        "{legacy}"
    );

    // Each call is on record with its tool, under both protocols; every
    // record flushed as the gateway stops (as on SIGTERM).
    let records = gw.stop().await;
    let calls = |version_is_2026: bool| {
        records
            .iter()
            .filter(|r| r["mcp"]["gen_ai.tool.name"] == "delete_everything")
            .filter(|r| (r["mcp"]["mcp.protocol.version"] == "2026-07-28") == version_is_2026)
            .map(|r| r["reason"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        calls(true),
        ["allowed", "mcp_scope_missing", "mcp_not_allowed"]
    );
    assert_eq!(calls(false), ["mcp_scope_missing"]);
    let lists: Vec<bool> = records
        .iter()
        .filter(|r| r["mcp"]["mcp.method.name"] == "tools/list")
        .map(|r| r["stream"].as_bool().unwrap())
        .collect();
    assert!(lists.contains(&true), "an SSE list was filtered: {lists:?}");
    assert!(
        records.iter().any(|r| r["mcp"]["mcp.session.id"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:"))),
        "the legacy session is followed by its digest"
    );
}

/// The official MCP SDK, client and server, when the client's token
/// expires in the middle of a slow tool call: the gateway ends the call's
/// event stream after its last whole event with a `retry:` hint, the
/// client reconnects with `Last-Event-ID` and its fresh token, and the
/// server (which keeps its events) resumes: every progress event and the
/// answer arrive, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_sdk_resumes_a_tool_call_whose_token_expires_mid_stream() {
    let server = tokio::task::spawn_blocking(|| McpServer::start_with(&["--resumable"]))
        .await
        .unwrap();
    let idp = TestIdp::start().await;
    let routes = r#"
[[routes]]
name = "mcp"
path = "/mcp"
methods = ["POST", "GET", "DELETE"]
scopes = ["Tools.Call"]

[routes.mcp]
resource = "http://127.0.0.1/mcp"
scopes_supported = ["api://tickets/Tools.Call"]
"#;
    let upstream: std::net::SocketAddr = ([127, 0, 0, 1], server.port).into();
    let issuer = oidc_issuer(&idp, "clock_skew = \"0s\"");
    let mut gw = TestGateway::start(&config(upstream, &issuer, routes)).await;
    // Long enough for the client to start and connect; the call (30 steps
    // of 0.3 s) outlasts it.
    let short = idp.token().scp("Tools.Call").expires_in(8).sign();
    let fresh = idp.token().scp("Tools.Call").sign();
    let url = gw.url("/mcp");
    let out = tokio::task::spawn_blocking(move || {
        python::script("mcp_resume.py", &[&url, &short, &fresh, "30"])
    })
    .await
    .unwrap();
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["text"], "counted to 30", "{result:#}");
    let progress: Vec<u64> = result["progress"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap() as u64)
        .collect();
    assert_eq!(
        progress,
        (1..=30).collect::<Vec<_>>(),
        "none lost, none twice"
    );
    let resumed = result["sent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["method"] == "GET" && !s["last_event_id"].is_null())
        .unwrap_or_else(|| panic!("a reconnection with Last-Event-ID: {result:#}"));
    assert_eq!(resumed["token"], "fresh");

    let records = gw.stop().await;
    let ended = records
        .iter()
        .find(|r| r["end"] == "terminated" && r["method"] == "POST")
        .unwrap_or_else(|| panic!("the call's stream was ended: {records:#?}"));
    assert_eq!(ended["end_reason"], "token_expired");
    assert_eq!(ended["mcp"]["gen_ai.tool.name"], "slow_count");
    assert!(
        records
            .iter()
            .any(|r| r["method"] == "GET" && r["decision"] == "allow" && r["status"] == 200),
        "the resumed stream was allowed"
    );
}

/// The `websockets` client, when its token expires mid-session: a Close
/// frame 1008 with the reason, which it raises as `ConnectionClosedError`
/// with that code, within a second of the token's `exp`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websockets_client_is_closed_with_1008_when_its_token_expires() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let issuer = oidc_issuer(&idp, "clock_skew = \"0s\"");
    let gw = TestGateway::start(&config(upstream.addr, &issuer, DEFAULT_ROUTES)).await;
    // The client ready first: the token's lifetime is the session's.
    tokio::task::spawn_blocking(python::python).await.unwrap();
    let token = idp.token().expires_in(4);
    let exp = token.claims["exp"].as_f64().unwrap();
    let token = token.sign();
    let url = format!("ws://{}/ws", gw.addr);
    let out = tokio::task::spawn_blocking(move || python::script("ws_client.py", &[&url, &token]))
        .await
        .unwrap();
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["code"], 1008, "{seen}");
    assert_eq!(seen["reason"], "token_expired");
    assert_eq!(seen["raised"], "ConnectionClosedError");
    assert!(seen["echoes"].as_u64().unwrap() > 3, "{seen}");
    let at = seen["at"].as_f64().unwrap();
    assert!(
        at >= exp - 0.05 && at <= exp + 1.0,
        "closed {:.3} s after exp",
        at - exp
    );
}
