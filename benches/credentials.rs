//! Upstream credentials: what presenting the gateway's own cached token
//! costs a request (the cache hit on the forwarding path), against the
//! dev issuer's managed identity endpoint on loopback for the first token.
//!
//! Run: `cargo bench --bench credentials`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: benchmark setup

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis::config::{CredentialConfig, CredentialSource};
use portcullis::credentials::Credential;
use portcullis::dev::{DevIssuer, SigningKey};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuer = rt
        .block_on(DevIssuer::start(vec![SigningKey::rsa("rsa-1").unwrap()]))
        .unwrap();
    let config = CredentialConfig {
        name: "bench".into(),
        source: CredentialSource::ManagedIdentity {
            endpoint: format!("{}/metadata/identity/oauth2/token", issuer.url())
                .parse()
                .unwrap(),
            client_id: None,
            identity_header: None,
        },
        scope: "https://cognitiveservices.azure.com/.default".into(),
        refresh_before: Duration::from_secs(300),
    };
    let credential = Arc::new(Credential::new(&config, Arc::new(common::Quiet)).unwrap());
    rt.block_on(credential.authorization())
        .expect("a first token");

    let cached = || {
        let presented = rt.block_on(credential.authorization()).unwrap();
        black_box(presented.header.len())
    };
    c.bench_function("credentials/cached_token", |b| b.iter(cached));
    common::print_allocations("credentials/cached_token", || {
        black_box(cached());
    });
    assert_eq!(
        issuer.token_requests(),
        1,
        "every call after the first was a cache hit"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
