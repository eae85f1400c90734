//! Audit record cost: encoding a realistic record (an agent calling a chat
//! deployment, every identity field set, one policy result) to JSON, and
//! linking it into the hash chain (SHA-256 of the line). Both run on the
//! writer thread, off the request path; the load benchmark
//! (`benches/load/run.sh`) measures what they cost end to end.
//!
//! Run: `cargo bench --bench audit`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: benchmark setup

mod common;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Method, Version};
use portcullis::audit::{Chain, End, Field, Record, RequestInfo, UpstreamInfo};
use portcullis::dev::{DevIssuer, SigningKey};
use portcullis::metrics::DecisionLabel;
use portcullis::snapshot::{KeyEnv, Snapshot};
use serde_json::json;

const AGENT: &str = "a9e1c0de-0000-4a11-8a9e-000000000011";
const TENANT: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";

async fn record() -> (Record, DevIssuer) {
    let key = SigningKey::rsa("bench").unwrap();
    let issuer = DevIssuer::start(vec![key.clone()]).await.unwrap();
    let text = format!(
        r#"
[upstream]
url = "http://127.0.0.1:9"
[[issuers]]
name = "entra"
kind = "oidc"
issuer = "{iss}"
audiences = ["api"]
[[routes]]
name = "chat"
path = "/openai/deployments/{{deployment}}/chat/completions"
roles = ["Models.Invoke"]
[[agents]]
id = "{AGENT}"
name = "Research agent"
owner = "ada@contoso.example"
[[policies]]
name = "weekend-watch"
state = "report_only"
grant = "block"
"#,
        iss = issuer.url()
    );
    let config = portcullis::config::parse(&text, Path::new(".")).unwrap();
    let env = KeyEnv {
        observer: Arc::new(common::Quiet),
    };
    let snapshot = Snapshot::compile(&config, &env).unwrap();
    for s in &snapshot.key_sources {
        s.refresh().await.unwrap();
    }
    let now = jsonwebtoken::get_current_timestamp();
    let token = key.sign(&json!({
        "iss": issuer.url(), "aud": "api", "iat": now, "nbf": now, "exp": now + 3600, "tid": TENANT,
        "oid": AGENT, "appid": AGENT, "appidacr": "2", "idtyp": "app", "roles": ["Models.Invoke"],
        "xms_act_fct": "3 9 11", "xms_sub_fct": "9 3 11", "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "xms_par_app_azp": "b1e9c1a7-0000-4b00-8000-0000000000bb",
    }));
    let path = "/openai/deployments/gpt-4o-mini/chat/completions";
    let parts = http::Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let circumstances = portcullis::proxy::pipeline::Circumstances {
        client_ip: "10.1.2.3".parse().unwrap(),
        now: SystemTime::now(),
        revoked: &portcullis::policy::RevocationList::default(),
    };
    let portcullis::proxy::pipeline::Admission { decision, admitted } =
        portcullis::proxy::pipeline::admit(&snapshot, &parts, circumstances).await;
    assert!(admitted.is_ok() && decision.agent.is_some());

    let mut request = RequestInfo::new(
        SystemTime::now(),
        Method::POST,
        Version::HTTP_11,
        "10.1.2.3".parse().unwrap(),
    );
    request.set(Field::RequestId, b"1adc63cb35d036578b9cff5b9f55b7bd");
    request.set(Field::Path, path.as_bytes());
    request.set(Field::Host, b"aoai.internal");
    request.set(Field::UserAgent, b"AsyncAzureOpenAI/Python 1.54.0");
    request.set(Field::TraceId, b"4bf92f3577b34da6a3ce929d0e0e4736");
    let mut record = Record::new(request, Arc::from("fc4f33ccf228"));
    record.label = DecisionLabel::Allow;
    record.reason = "allowed";
    record.status = Some(200);
    record.upstream = Some(UpstreamInfo {
        name: Arc::from("default"),
        credential: None,
        status: Some(200),
        duration: Some(Duration::from_micros(412_653)),
        error: None,
    });
    record.stream = true;
    record.duration = Duration::from_micros(5_321_117);
    record.bytes_in = 812;
    record.bytes_out = 48_210;
    record.end = End::Complete;
    record.decision = Some(decision);
    (record, issuer)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (record, _issuer) = rt.block_on(record());
    let mut object = Vec::new();
    record.encode(&mut object).unwrap();
    println!("record: {} bytes of JSON", object.len());

    let mut g = c.benchmark_group("audit");
    let mut out = Vec::with_capacity(4096);
    g.bench_function("encode", |b| {
        b.iter(|| {
            out.clear();
            black_box(&record).encode(&mut out).unwrap();
        })
    });
    let mut chain = Chain::default();
    g.bench_function("chain_link_sha256", |b| {
        b.iter(|| {
            out.clear();
            chain.link(black_box(&object), &mut out);
        })
    });
    g.finish();

    common::print_allocations("encode", || {
        out.clear();
        record.encode(&mut out).unwrap();
    });
    common::print_allocations("chain_link", || {
        out.clear();
        chain.link(&object, &mut out);
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
