//! Shared by the criterion benches: a counting global allocator (so that
//! each bench can report heap allocations per operation next to its time)
//! and a key observer that observes nothing.
#![allow(unsafe_code)] // reason: a counting global allocator must implement GlobalAlloc
#![allow(dead_code)] // reason: each bench uses a different part

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use portcullis::keys::{KeyFetchError, KeyObserver, RefreshChange};

pub struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `op` 1,000 times (after one warm-up) and prints its heap
/// allocations per call.
pub fn print_allocations(label: &str, mut op: impl FnMut()) {
    const N: u64 = 1000;
    op();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        op();
    }
    let per_op = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64;
    println!("allocations/op {label}: {per_op:.1}");
}

pub struct Quiet;

impl KeyObserver for Quiet {
    fn refreshed(&self, _: &str, _: Result<RefreshChange, &KeyFetchError>) {}
    fn refresh_suppressed(&self, _: &str) {}
}

impl portcullis::model::ModelObserver for Quiet {}

impl portcullis::credentials::CredentialObserver for Quiet {}

/// A gateway's snapshot for `routes` (config text after the issuer), its
/// issuer on loopback with keys loaded, and the claims of one token it
/// signed (`iss`, `aud`, `iat` and `exp` added to `claims`), verified
/// through the gateway's own path.
pub struct SignedIn {
    pub issuer: portcullis::dev::DevIssuer,
    pub config: portcullis::config::Config,
    pub snapshot: portcullis::snapshot::Snapshot,
    pub claims: std::sync::Arc<portcullis::token::VerifiedClaims>,
}

pub async fn signed_in(routes: &str, claims: serde_json::Value) -> SignedIn {
    use portcullis::snapshot::{KeyEnv, Snapshot};
    let key = portcullis::dev::SigningKey::rsa("rsa-1").expect("rsa key");
    let issuer = portcullis::dev::DevIssuer::start(vec![key.clone()])
        .await
        .expect("issuer");
    let text = format!(
        "[upstream]\nurl = \"http://127.0.0.1:1\"\n[[issuers]]\nname = \"bench\"\nkind = \"oidc\"\nissuer = \"{}\"\naudiences = [\"api://bench\"]\n{routes}",
        issuer.url()
    );
    let config = portcullis::config::parse(&text, std::path::Path::new(".")).expect("config");
    let env = KeyEnv {
        observer: std::sync::Arc::new(Quiet),
    };
    let snapshot = Snapshot::compile(&config, &env).expect("snapshot");
    for source in &snapshot.key_sources {
        source.refresh().await.expect("keys");
    }
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = claims;
    claims["iss"] = issuer.url().into();
    claims["aud"] = "api://bench".into();
    claims["iat"] = now.into();
    claims["exp"] = (now + 3600).into();
    let token = key.sign(&claims);
    let claims = snapshot
        .verifier
        .verify(&token)
        .await
        .result
        .expect("verified");
    SignedIn {
        issuer,
        config,
        snapshot,
        claims,
    }
}
