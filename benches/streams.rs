//! Continuous access: what 10,000 open exchanges cost while nothing
//! happens (each holds a deadline timer and waits on its body), how long a
//! sweep takes to decide them all again after a revocation or a reload,
//! and what watching one more exchange costs a request.
//!
//! Run: `cargo bench --bench streams`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: benchmark setup

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod common;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http_body::Body as _;
use http_body_util::BodyExt;
use portcullis::metrics::Metrics;
use portcullis::policy::RevocationList;
use portcullis::snapshot::{KeyEnv, Snapshot};
use portcullis::streams::{Admitted, Facts, Guarded, Lifetime, Streams, Style};
use portcullis::token::VerifiedClaims;

const OPEN: usize = 10_000;

fn snapshot() -> Snapshot {
    let text = "[upstream]\nurl = \"http://127.0.0.1:1\"\n\
        [[issuers]]\nname = \"idp\"\nkind = \"oidc\"\nissuer = \"https://idp.example\"\n\
        audiences = [\"api://x\"]\n\
        [[routes]]\nname = \"events\"\nprefix = \"/\"\nscopes = [\"Read\"]\n";
    let config = portcullis::config::parse(text, Path::new(".")).unwrap();
    let env = KeyEnv {
        observer: Arc::new(common::Quiet),
    };
    Snapshot::compile(&config, &env).unwrap()
}

/// A user's claims, each with its own token id, valid for an hour.
fn claims(snapshot: &Snapshot, n: usize) -> Arc<VerifiedClaims> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let c = serde_json::json!({
        "iss": "https://idp.example", "aud": "api://x", "exp": exp, "tid": "t1",
        "oid": format!("user-{n}"), "azp": "app1", "idtyp": "user", "scp": "Read",
        "uti": format!("token-{n}"),
    });
    Arc::new(snapshot.verifier.claims_taken_on_trust(c).unwrap())
}

fn open(streams: &Arc<Streams>, snapshot: &Snapshot, claims: Arc<VerifiedClaims>) -> Lifetime {
    streams.open(Admitted {
        snapshot,
        facts: Facts {
            claims: Some(claims),
            route: snapshot.routes.routes()[0].clone(),
            method: http::Method::GET,
            host: None,
            path: Box::from("/events"),
            client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
            model: OnceLock::new(),
        },
        agent_expires: None,
        now: SystemTime::now(),
    })
}

/// The process's CPU time so far (user + system), from /proc: in clock
/// ticks of 10 ms.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// 10,000 answers waiting on bodies that never send, each under its
/// lifetime (a registered deadline timer), on a two-thread runtime: the
/// CPU the process spends over five idle seconds, against the same
/// waiting bodies without lifetimes; then the time from a revocation of
/// them all to the last one ended (each task woken, its body cut).
fn idle(snapshot: &Snapshot) {
    for watched in [false, true] {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let streams = Streams::new(Arc::new(Metrics::new().unwrap()));
        let (ready_tx, mut ready) = tokio::sync::mpsc::channel::<()>(OPEN);
        let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<()>();
        for n in 0..OPEN {
            let body = http_body_util::StreamBody::new(futures_util::stream::pending::<
                Result<http_body::Frame<bytes::Bytes>, portcullis::body::BoxError>,
            >())
            .boxed();
            let body = match watched {
                true => {
                    let lifetime = open(&streams, snapshot, claims(snapshot, n));
                    Guarded::new(body, lifetime, Style::Cut).boxed()
                }
                false => body,
            };
            let ready = ready_tx.clone();
            let done = done_tx.clone();
            rt.spawn(async move {
                let mut body = body;
                // Polled once (its timer registered), then waiting.
                std::future::poll_fn(|cx| {
                    let _ = std::pin::Pin::new(&mut body).poll_frame(cx);
                    std::task::Poll::Ready(())
                })
                .await;
                ready.send(()).await.unwrap();
                let _ = body.frame().await;
                let _ = done.send(());
            });
        }
        rt.block_on(async {
            for _ in 0..OPEN {
                ready.recv().await.unwrap();
            }
        });
        let before = cpu_time();
        std::thread::sleep(Duration::from_secs(5));
        let spent = cpu_time() - before;
        println!(
            "streams/idle: {OPEN} waiting answers{} for 5 s: {} ms of CPU (resolution 10 ms)",
            if watched { " under lifetimes" } else { "" },
            spent.as_millis()
        );
        if watched {
            let all: String = (0..OPEN).map(|n| format!("\"token-{n}\",")).collect();
            let all = RevocationList::parse(&format!("token_ids = [{all}]\n")).unwrap();
            let started = Instant::now();
            assert_eq!(streams.sweep(snapshot, &all, false), OPEN);
            rt.block_on(async {
                for _ in 0..OPEN {
                    done.recv().await.unwrap();
                }
            });
            println!(
                "streams/revoked: all {OPEN} ended {:?} after the sweep began",
                started.elapsed()
            );
        }
        rt.shutdown_background();
    }
}

fn bench(c: &mut Criterion) {
    let snapshot = snapshot();
    idle(&snapshot);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = rt.enter();
    let streams = Streams::new(Arc::new(Metrics::new().unwrap()));
    let claims: Vec<_> = (0..OPEN).map(|n| claims(&snapshot, n)).collect();

    // What a request pays to be watched: registered and unregistered.
    c.bench_function("streams/open_and_close", |b| {
        b.iter(|| black_box(open(&streams, &snapshot, claims[0].clone())))
    });

    let lifetimes: Vec<Lifetime> = claims
        .iter()
        .map(|c| open(&streams, &snapshot, c.clone()))
        .collect();
    let none = RevocationList::default();
    let one = RevocationList::parse("token_ids = [\"token-17\"]\n").unwrap();
    // A revocation that ends one of 10,000: every one decided again.
    c.bench_function("streams/sweep_10k_revocation", |b| {
        b.iter(|| black_box(streams.sweep(&snapshot, &none, false)))
    });
    // A reload with reevaluate_on_reload: each one's whole decision again.
    c.bench_function("streams/sweep_10k_whole", |b| {
        b.iter(|| black_box(streams.sweep(&snapshot, &none, true)))
    });
    drop(lifetimes);
    // Ending them all: each marked and woken.
    let all: String = (0..OPEN).map(|n| format!("\"token-{n}\",")).collect();
    let all = RevocationList::parse(&format!("token_ids = [{all}]\n")).unwrap();
    c.bench_function("streams/sweep_10k_all_revoked", |b| {
        b.iter_batched(
            || {
                claims
                    .iter()
                    .map(|c| open(&streams, &snapshot, c.clone()))
                    .collect::<Vec<_>>()
            },
            |open| {
                assert_eq!(streams.sweep(&snapshot, &all, false), OPEN);
                open
            },
            BatchSize::LargeInput,
        )
    });
    let started = Instant::now();
    let kept: Vec<Lifetime> = claims
        .iter()
        .map(|c| open(&streams, &snapshot, c.clone()))
        .collect();
    let ended = streams.sweep(&snapshot, &one, false);
    println!(
        "streams/sweep: one revoked of {OPEN}: {ended} ended, opening and sweeping took {:?}",
        started.elapsed()
    );
    drop(kept);
    common::print_allocations("streams/open_and_close", || {
        black_box(open(&streams, &snapshot, claims[0].clone()));
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
