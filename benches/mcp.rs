//! MCP stage benchmarks: reading and deciding a 2 KB `tools/call` (the
//! strict parse, then the rules), and filtering a 200-tool `tools/list`
//! answer (the caller, an app, may call half of them). The caller's claims
//! come from a real token verified through the gateway's own path against
//! a JWKS served on loopback.
//!
//! Run: `cargo bench --bench mcp`. Besides criterion's timings it prints
//! heap allocations per operation, counted by the allocator below.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: benchmark setup

use std::hint::black_box;
use std::sync::Arc;

mod common;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method, Response};
use http_body_util::BodyExt;
use portcullis::call::McpTarget;
use portcullis::mcp::{Args, ListFilter, ListKind, McpRules, read_message};
use portcullis::stages::Respond;
use serde_json::json;

const RULES: &str = r#"
[[routes]]
name = "mcp"
path = "/mcp"
scopes = ["Tools.Read", "Tools.Write"]
[routes.mcp]
resource = "https://mcp.contoso.com/mcp"

[[mcp_rules]]
route = "mcp"
tools = ["search_*", "get_*", "list_*"]
scopes = ["Tools.Read"]
roles = ["Tools.Read"]

[[mcp_rules]]
route = "mcp"
tools = ["close_*", "delete_*", "update_*"]
scopes = ["Tools.Write"]
kinds = ["user"]

[[mcp_rules]]
route = "mcp"
prompts = ["*"]
resources = ["ticket://*"]
scopes = ["Tools.Read"]
"#;

struct Fixture {
    signed_in: common::SignedIn,
    rules: Arc<McpRules>,
}

async fn fixture() -> Fixture {
    let signed_in = common::signed_in(
        RULES,
        json!({"oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474", "azp": "00001111-aaaa-2222-bbbb-3333cccc4444",
            "roles": ["Tools.Read"], "idtyp": "app"}),
    )
    .await;
    let config = &signed_in.config;
    let rules = Arc::new(McpRules::compile(&config.mcp_rules, &config.agents));
    Fixture { signed_in, rules }
}

/// A `tools/call` of about 2 KB: a tool name and arguments with text.
fn tools_call() -> Bytes {
    let text = "lorem ipsum dolor sit amet ".repeat(70);
    let body = json!({
        "jsonrpc": "2.0", "id": 42, "method": "tools/call",
        "params": {"name": "search_tickets", "arguments": {"query": text, "limit": 20},
                   "_meta": {"progressToken": "p-42"}},
    })
    .to_string();
    assert!((1900..2200).contains(&body.len()), "{}", body.len());
    Bytes::from(body)
}

/// A `tools/list` answer with 200 tools (half of them writers), each with
/// a description and an input schema, as servers send them.
fn tools_list() -> Bytes {
    let tools: Vec<_> = (0..200)
        .map(|i| {
            let verb = ["search", "close", "get", "delete"][i % 4];
            json!({
                "name": format!("{verb}_thing_{i}"),
                "description": "Does one thing to the tickets of a project, with care and a log line.",
                "inputSchema": {"type": "object", "properties": {
                    "project": {"type": "string"}, "id": {"type": "integer"}}, "required": ["project"]},
            })
        })
        .collect();
    Bytes::from(json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": tools}}).to_string())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(fixture());
    let route = f
        .signed_in
        .snapshot
        .routes
        .find(&Method::POST, None, "/mcp")
        .expect("route")
        .route
        .clone();
    let body = tools_call();
    let headers = HeaderMap::new();

    let read_and_decide = || {
        let read = read_message(&headers, black_box(&body)).expect("a call");
        let call = &read.call;
        f.rules.decide(
            &route,
            &f.signed_in.claims,
            call.method.as_deref(),
            call.target.as_ref(),
            Args::Given(read.arguments),
        )
    };
    c.bench_function("mcp/read_and_decide_2KB_tools_call", |b| {
        b.iter(read_and_decide)
    });
    common::print_allocations("mcp/read_and_decide_2KB_tools_call", || {
        black_box(read_and_decide());
    });

    let list = tools_list();
    let filter = || {
        let (rules, route, claims) = (f.rules.clone(), route.clone(), f.signed_in.claims.clone());
        let callable = move |t: &McpTarget| {
            rules.decide(&route, &claims, Some("tools/call"), Some(t), Args::Unknown)
                != portcullis::mcp::Verdict::NotAllowed
        };
        let response = Response::builder()
            .header("content-type", "application/json")
            .body(portcullis::body::full(list.clone()))
            .unwrap();
        let filtered =
            Box::new(ListFilter::new(ListKind::Tools, "7", Arc::new(callable))).respond(response);
        rt.block_on(filtered.into_body().collect())
            .unwrap()
            .to_bytes()
    };
    let kept = filter();
    assert!(kept.len() < list.len() && kept.len() > list.len() / 3);
    c.bench_function("mcp/filter_200_tool_list", |b| b.iter(filter));
    common::print_allocations("mcp/filter_200_tool_list", || {
        black_box(filter());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
