//! Model stage benchmarks: admitting a 2 KB chat completion on a model
//! route (the strict read, the model decision, the reservation in two
//! budgets in the local store, and giving it back), the budgets' admission
//! alone, and metering a 200-chunk SSE answer (each event read for its
//! usage as it passes, the usage-only chunk dropped). The caller's claims
//! come from a real token verified through the gateway's own path against
//! a JWKS served on loopback.
//!
//! Run: `cargo bench --bench model`. Besides criterion's timings it prints
//! heap allocations per operation, counted by the allocator below.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: benchmark setup

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::SystemTime;

mod common;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use portcullis::budget::{Asking, Estimate};
use portcullis::policy::{Grant, RequestFacts, authorize};
use serde_json::json;

const ROUTES: &str = r#"
[[routes]]
name = "v1"
prefix = "/openai/v1/"
roles = ["Models.Invoke"]
[routes.model]
models = ["gpt-4o*"]

[[budgets]]
name = "per-app-tpm"
key = ["tid", "azp"]
tokens_per_minute = 1000000000000

[[budgets]]
name = "per-app-monthly"
key = ["azp", "model"]
tokens = 1000000000000
period = "month"
count = "weighted"
weights = { cached_input = 0.1, output = 4.0 }
"#;

struct Fixture {
    signed_in: common::SignedIn,
    grant: Grant,
}

async fn fixture() -> Fixture {
    let signed_in = common::signed_in(
        ROUTES,
        json!({"tid": "aaaabbbb-0000-cccc-1111-dddd2222eeee", "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
            "azp": "00001111-aaaa-2222-bbbb-3333cccc4444", "roles": ["Models.Invoke"], "idtyp": "app"}),
    )
    .await;
    let snapshot = &signed_in.snapshot;
    let matched = snapshot
        .routes
        .find(&Method::POST, None, "/openai/v1/chat/completions")
        .expect("route");
    let facts = RequestFacts {
        method: &Method::POST,
        params: &[],
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        now: SystemTime::now(),
    };
    let claims = signed_in.claims.clone();
    let (grant, _) = authorize(&snapshot.policies, matched.route, claims, &facts);
    Fixture {
        grant: grant.expect("granted"),
        signed_in,
    }
}

/// A streamed chat completion of about 2 KB.
fn chat() -> Bytes {
    let text = "lorem ipsum dolor sit amet ".repeat(68);
    let body = json!({
        "model": "gpt-4o-mini", "stream": true, "max_completion_tokens": 512,
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}],
    })
    .to_string();
    assert!((1900..2200).contains(&body.len()), "{}", body.len());
    Bytes::from(body)
}

/// A chat stream of 200 content chunks, then the usage chunk and `[DONE]`,
/// each event in a frame of its own, as upstreams flush them.
fn stream() -> Vec<Bytes> {
    let mut frames: Vec<Bytes> = (0..200)
        .map(|i| {
            let chunk = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": {"content": format!("token{i} ")}, "finish_reason": null}], "usage": null});
            Bytes::from(format!("data: {chunk}\n\n"))
        })
        .collect();
    let usage = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
        "choices": [], "usage": {"prompt_tokens": 512, "completion_tokens": 200, "total_tokens": 712}});
    frames.push(Bytes::from(format!("data: {usage}\n\n")));
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    frames
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(fixture());
    let body = chat();
    let request = || {
        Request::post("/openai/v1/chat/completions")
            .header("content-type", "application/json")
            .body(portcullis::body::full(body.clone()))
            .unwrap()
    };

    // Read, decide, reserve in two budgets; the answer never comes, so the
    // reservation is given back when the responders are dropped.
    let admit = || {
        let staged = rt.block_on(f.signed_in.snapshot.stages.inspect(&f.grant, request()));
        black_box(staged.result.is_ok())
    };
    assert!(admit());
    c.bench_function("model/admit_2KB_chat_two_budgets_local", |b| b.iter(admit));
    common::print_allocations("model/admit_2KB_chat_two_budgets_local", || {
        black_box(admit());
    });

    let claims = f.grant.claims().unwrap().clone();
    let asking = Asking {
        claims: Some(&claims),
        route: "v1",
        model: Some("gpt-4o-mini"),
    };
    let estimate = Estimate {
        input: 700,
        output: 512,
    };
    let budgets = || {
        let admitted = rt
            .block_on(
                f.signed_in
                    .snapshot
                    .budgets
                    .admit(&asking, estimate, SystemTime::now()),
            )
            .ok()
            .unwrap();
        black_box(admitted.remaining)
    };
    c.bench_function("model/budgets_admit_two_local", |b| b.iter(budgets));
    common::print_allocations("model/budgets_admit_two_local", || {
        black_box(budgets());
    });

    // The answer to a stream the gateway asked for its usage: metered, the
    // usage-only chunk dropped.
    let frames = stream();
    let meter = || {
        let staged = rt.block_on(f.signed_in.snapshot.stages.inspect(&f.grant, request()));
        let (_, responders) = staged.result.ok().unwrap();
        let chunks = futures_util::stream::iter(
            frames
                .clone()
                .into_iter()
                .map(|b| Ok::<_, portcullis::body::BoxError>(http_body::Frame::data(b))),
        );
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(http_body_util::StreamBody::new(chunks).boxed())
            .unwrap();
        let answer = responders.answer(response);
        let out = rt
            .block_on(answer.into_body().collect())
            .unwrap()
            .to_bytes();
        black_box(out.len())
    };
    let passed = meter();
    let all: usize = frames.iter().map(Bytes::len).sum();
    assert_eq!(
        passed,
        all - frames[200].len(),
        "the usage chunk is dropped"
    );
    c.bench_function("model/meter_200_chunk_stream", |b| b.iter(meter));
    common::print_allocations("model/meter_200_chunk_stream (admission included)", || {
        black_box(meter());
    });
    // Ten times the chunks: the allocations per chunk stay what they were
    // (each chunk's are freed as it passes; nothing accumulates).
    let long: Vec<Bytes> = (0..10).flat_map(|_| frames[..200].to_vec()).collect();
    let meter_long = || {
        let staged = rt.block_on(f.signed_in.snapshot.stages.inspect(&f.grant, request()));
        let (_, responders) = staged.result.ok().unwrap();
        let chunks = futures_util::stream::iter(
            long.clone()
                .into_iter()
                .map(|b| Ok::<_, portcullis::body::BoxError>(http_body::Frame::data(b))),
        );
        let response = Response::builder()
            .header("content-type", "text/event-stream")
            .body(http_body_util::StreamBody::new(chunks).boxed())
            .unwrap();
        let out = rt.block_on(responders.answer(response).into_body().collect());
        black_box(out.unwrap().to_bytes().len())
    };
    common::print_allocations("model/meter_2000_chunk_stream (admission included)", || {
        black_box(meter_long());
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
