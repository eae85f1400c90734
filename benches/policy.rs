//! Policy evaluation cost: route match + route rules + agent registry +
//! conditional access, for one agent request. Small: 10 agents, 10 routes,
//! 5 policies. Large: 10,000 agents, 1,000 routes, 200 policies, of which
//! the same 5 can apply to the request and 195 cannot (other routes, other
//! agents, other identity kinds). The index should make both cost the same.
//!
//! Run: `cargo bench --bench policy`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: benchmark setup

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// Requests are evaluated at a fixed time (Thursday 2026-11-26 10:00 UTC),
/// so time conditions do the same work on every run.
const AT: u64 = 1_795_687_200;

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use portcullis::dev::{DevIssuer, SigningKey};
use portcullis::policy::{self, RequestFacts};
use portcullis::snapshot::{KeyEnv, Snapshot};
use portcullis::token::VerifiedClaims;
use serde_json::json;

const TENANT: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";

fn agent_id(i: usize) -> String {
    format!("{i:08x}-0000-4000-8000-000000000001")
}

/// The 5 policies that apply to an agent calling route 0.
const APPLICABLE: &str = r#"
[[policies]]
name = "agents-from-corp"
include_kinds = ["agent"]
exclude_locations = ["corp"]
grant = "block"

[[policies]]
name = "agents-working-hours"
include_kinds = ["agent"]
hours = "22:00-06:00"
grant = "block"

[[policies]]
name = "deployment-needs-role"
include_routes = ["r0"]
params = { deployment = ["d0"] }
grant = "require"
require_roles = ["Models.Invoke"]

[[policies]]
name = "agent0-watch"
state = "report_only"
include_agents = ["00000000-0000-4000-8000-000000000001"]
grant = "block"

[[policies]]
name = "old-tokens"
token_older_than = "24h"
grant = "block"
"#;

fn config_text(issuer: &str, agents: usize, routes: usize, policies: usize) -> String {
    let mut t = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[issuers]]\nname = \"idp\"\nkind = \"oidc\"\nissuer = \"{issuer}\"\naudiences = [\"api\"]\n[[locations]]\nname = \"corp\"\nranges = [\"10.0.0.0/8\"]\n"
    );
    for r in 0..routes {
        let _ = write!(
            t,
            "[[routes]]\nname = \"r{r}\"\npath = \"/svc{r}/deployments/{{deployment}}/chat/completions\"\nmethods = [\"POST\"]\nroles = [\"Models.Invoke\"]\n"
        );
    }
    for a in 0..agents {
        let _ = write!(
            t,
            "[[agents]]\nid = \"{}\"\nname = \"agent {a}\"\nowner = \"owner-{a}\"\nroutes = [\"r{}\", \"r0\"]\nparams = {{ deployment = [\"d0\", \"d{a}\"] }}\n",
            agent_id(a),
            a % routes
        );
    }
    t.push_str(APPLICABLE);
    // The rest cannot apply to agent 0 on route 0.
    for p in 5..policies {
        let body = match p % 3 {
            0 => format!("include_routes = [\"r{}\"]", 1 + p % (routes - 1).max(1)),
            1 => format!(
                "include_agents = [\"{}\"]",
                agent_id(1 + p % (agents - 1).max(1))
            ),
            _ => "include_kinds = [\"user\", \"app\"]".to_owned(),
        };
        let _ = write!(
            t,
            "[[policies]]\nname = \"p{p}\"\n{body}\ngrant = \"block\"\n"
        );
    }
    t
}

struct Fixture {
    snapshot: Snapshot,
    claims: Arc<VerifiedClaims>,
}

async fn fixture(
    issuer: &DevIssuer,
    key: &SigningKey,
    agents: usize,
    routes: usize,
    policies: usize,
) -> Fixture {
    let config = portcullis::config::parse(
        &config_text(&issuer.url(), agents, routes, policies),
        Path::new("."),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let env = KeyEnv {
        observer: Arc::new(common::Quiet),
    };
    let snapshot = Snapshot::compile(&config, &env).unwrap_or_else(|e| panic!("{e}"));
    for s in &snapshot.key_sources {
        s.refresh().await.unwrap();
    }
    let now = jsonwebtoken::get_current_timestamp();
    let agent = agent_id(0);
    let token = key.sign(&json!({
        "iss": issuer.url(), "aud": "api", "iat": AT - 60, "nbf": now, "exp": now + 3600, "tid": TENANT,
        "oid": agent, "appid": agent, "idtyp": "app", "roles": ["Models.Invoke"],
        "xms_act_fct": "3 9 11", "xms_sub_fct": "9 3 11", "xms_par_app_azp": "b1e9c1a7-0000-4b00-8000-0000000000bb",
    }));
    let claims = snapshot.verifier.verify(&token).await.result.unwrap();
    Fixture { snapshot, claims }
}

fn decide(f: &Fixture) -> bool {
    let method = Method::POST;
    let m = f
        .snapshot
        .routes
        .find(&method, None, "/svc0/deployments/d0/chat/completions")
        .unwrap();
    let facts = RequestFacts {
        method: &method,
        params: &m.params,
        client_ip: "10.1.2.3".parse().unwrap(),
        now: UNIX_EPOCH + Duration::from_secs(AT),
    };
    let (result, outcomes) =
        policy::authorize(&f.snapshot.policies, m.route, f.claims.clone(), &facts);
    black_box(outcomes);
    result.is_ok()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let key = SigningKey::rsa("k").unwrap();
    let issuer = rt.block_on(DevIssuer::start(vec![key.clone()])).unwrap();
    let small = rt.block_on(fixture(&issuer, &key, 10, 10, 5));
    let large = rt.block_on(fixture(&issuer, &key, 10_000, 1_000, 200));
    assert!(
        decide(&small) && decide(&large),
        "the request must be allowed in both"
    );
    let mut g = c.benchmark_group("policy");
    g.bench_function("10_agents_10_routes_5_policies", |b| {
        b.iter(|| decide(black_box(&small)))
    });
    g.bench_function("10k_agents_1k_routes_200_policies", |b| {
        b.iter(|| decide(black_box(&large)))
    });
    g.finish();
    common::print_allocations("policy_10_agents_10_routes_5_policies", || {
        assert!(decide(&small));
    });
    common::print_allocations("policy_10k_agents_1k_routes_200_policies", || {
        assert!(decide(&large));
    });
    reload(c, &rt, &issuer);
}

/// A whole reload of the large config (read, parse, validate, compile,
/// swap), alternating between two versions so that each one applies.
fn reload(c: &mut Criterion, rt: &tokio::runtime::Runtime, issuer: &DevIssuer) {
    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    let base = config_text(&issuer.url(), 10_000, 1_000, 200);
    let texts = [
        base.clone(),
        base.replace("name = \"agent 7\"", "name = \"agent seven\""),
    ];
    std::fs::write(&path, &texts[0]).unwrap();
    let config = portcullis::config::load(&path).unwrap();
    let env = KeyEnv {
        observer: Arc::new(common::Quiet),
    };
    let snapshot = Arc::new(arc_swap::ArcSwap::from_pointee(
        Snapshot::compile(&config, &env).unwrap(),
    ));
    let (_stop_tx, stop) = tokio::sync::watch::channel(false);
    let reloader = Arc::new(portcullis::reload::Reloader {
        path: path.clone(),
        snapshot,
        env,
        metrics: Arc::new(portcullis::metrics::Metrics::new().unwrap()),
        restart_only: portcullis::reload::RestartOnly::of(&config),
        key_loops: tokio_util::task::TaskTracker::new(),
        stop,
        done: tokio::sync::watch::Sender::new(0),
        server_cert: None,
        audit: None,
        background: portcullis::reload::ReloadThread::start().unwrap(),
    });
    let mut n = 0;
    let mut g = c.benchmark_group("reload");
    g.sample_size(10);
    g.bench_function("10k_agents_1k_routes_200_policies", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                std::fs::write(&path, &texts[n % 2]).unwrap();
                let started = std::time::Instant::now();
                let outcome = rt.block_on(reloader.reload());
                total += started.elapsed();
                assert_eq!(outcome.label(), "applied");
                // The previous generation is freed in the background: let
                // it finish, as it does between real reloads.
                std::thread::sleep(Duration::from_millis(150));
            }
            total
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);
