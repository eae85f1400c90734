//! Hot-path benchmarks: token verification with a cache hit and a miss
//! (RS256, ES256) against a bare `jsonwebtoken::decode` on the same key, and
//! rejection building. Keys are served by a real JWKS endpoint on loopback
//! and loaded through the gateway's own fetch path.
//!
//! Run: `cargo bench --bench verify`. Besides criterion's timings it prints
//! heap allocations per operation, counted by the allocator below.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: benchmark setup

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use portcullis::dev::{DevIssuer, SigningKey};
use portcullis::rejection::Rejection;
use portcullis::snapshot::{KeyEnv, Snapshot};
use portcullis::token::TokenError;
use serde_json::json;

struct Fixture {
    _issuer: DevIssuer,
    cached: Snapshot,
    uncached: Snapshot,
    rsa: SigningKey,
    ec: SigningKey,
    rs_token: String,
    es_token: String,
}

async fn fixture() -> Fixture {
    let rsa = SigningKey::rsa("rsa-1").expect("rsa key");
    let ec = SigningKey::ec_p256("ec-1").expect("ec key");
    let issuer = DevIssuer::start(vec![rsa.clone(), ec.clone()])
        .await
        .expect("issuer");
    let text = |cache: bool| {
        format!(
            "[upstream]\nurl = \"http://127.0.0.1:1\"\n[token_cache]\nenabled = {cache}\n[[issuers]]\nname = \"bench\"\nkind = \"oidc\"\nissuer = \"{}\"\naudiences = [\"api://bench\"]\nalgorithms = [\"RS256\", \"ES256\"]\n",
            issuer.url()
        )
    };
    let env = KeyEnv {
        observer: Arc::new(common::Quiet),
    };
    let build = |cache| {
        let config = portcullis::config::parse(&text(cache), Path::new(".")).expect("config");
        Snapshot::compile(&config, &env).expect("snapshot")
    };
    let (cached, uncached) = (build(true), build(false));
    for s in [&cached, &uncached] {
        for source in &s.key_sources {
            source.refresh().await.expect("keys");
        }
    }
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({
        "iss": issuer.url(), "aud": "api://bench", "iat": now, "nbf": now, "exp": now + 3600,
        "tid": "aaaabbbb-0000-cccc-1111-dddd2222eeee", "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474",
        "azp": "00001111-aaaa-2222-bbbb-3333cccc4444", "scp": "Models.Invoke Search.Read", "idtyp": "user",
        "uti": "fqiBqXLPj0eQa82S-IYFAA", "ver": "2.0", "name": "Ada Park", "preferred_username": "ada@contoso.example",
    });
    Fixture {
        rs_token: rsa.sign(&claims),
        es_token: ec.sign(&claims),
        _issuer: issuer,
        cached,
        uncached,
        rsa,
        ec,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let f = rt.block_on(fixture());
    let verify = |s: &Snapshot, t: &str, rt: &tokio::runtime::Runtime| {
        let result = rt.block_on(s.verifier.verify(t)).result;
        assert!(result.is_ok());
    };

    let mut g = c.benchmark_group("verify");
    g.bench_function("rs256_cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(f.cached.verifier.verify(black_box(&f.rs_token)).await) })
    });
    g.bench_function("rs256_uncached", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(f.uncached.verifier.verify(black_box(&f.rs_token)).await) })
    });
    g.bench_function("es256_cache_hit", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(f.cached.verifier.verify(black_box(&f.es_token)).await) })
    });
    g.bench_function("es256_uncached", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(f.uncached.verifier.verify(black_box(&f.es_token)).await) })
    });

    // The baseline: a bare decode with the same key, validation and claims type
    // size (a serde_json::Value), nothing else.
    let rsa_key = DecodingKey::from_rsa_components(
        f.rsa.jwk()["n"].as_str().expect("n"),
        f.rsa.jwk()["e"].as_str().expect("e"),
    )
    .expect("rsa");
    let ec_key = DecodingKey::from_ec_components(
        f.ec.jwk()["x"].as_str().expect("x"),
        f.ec.jwk()["y"].as_str().expect("y"),
    )
    .expect("ec");
    let validation = |alg| {
        let mut v = Validation::new(alg);
        v.set_audience(&["api://bench"]);
        v
    };
    let (rs_validation, es_validation) =
        (validation(Algorithm::RS256), validation(Algorithm::ES256));
    g.bench_function("rs256_bare_jsonwebtoken", |b| {
        b.iter(|| {
            black_box(jsonwebtoken::decode::<serde_json::Value>(
                black_box(&f.rs_token),
                &rsa_key,
                &rs_validation,
            ))
        })
    });
    g.bench_function("es256_bare_jsonwebtoken", |b| {
        b.iter(|| {
            black_box(jsonwebtoken::decode::<serde_json::Value>(
                black_box(&f.es_token),
                &ec_key,
                &es_validation,
            ))
        })
    });
    g.finish();

    let challenges = &f.cached.challenges;
    c.bench_function("rejection/invalid_token", |b| {
        b.iter(|| {
            black_box(challenges.respond(
                black_box(&Rejection::InvalidToken(TokenError::Expired)),
                None,
            ))
        })
    });

    common::print_allocations("rejection_invalid_token", || {
        black_box(challenges.respond(&Rejection::InvalidToken(TokenError::Expired), None));
    });
    common::print_allocations("rs256_cache_hit", || verify(&f.cached, &f.rs_token, &rt));
    common::print_allocations("rs256_uncached", || verify(&f.uncached, &f.rs_token, &rt));
    common::print_allocations("rs256_bare_jsonwebtoken", || {
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(&f.rs_token, &rsa_key, &rs_validation)
                .is_ok()
        );
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
