//! The admin listener (default loopback): `/healthz` (live), `/readyz`
//! (every issuer has a usable key set), `/metrics` (Prometheus text).

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::audit::AuditStatus;
use crate::body::{Body, full};
use crate::metrics::Metrics;
use crate::reload::{ReloadHandle, ReloadOutcome};
use crate::snapshot::Snapshot;
use crate::upstream::ClientConn;

pub struct Admin {
    snapshot: Arc<ArcSwap<Snapshot>>,
    metrics: Arc<Metrics>,
    audit: Option<Arc<AuditStatus>>,
    reload: Option<ReloadHandle>,
}

impl Admin {
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        metrics: Arc<Metrics>,
        audit: Option<Arc<AuditStatus>>,
        reload: Option<ReloadHandle>,
    ) -> Self {
        Self {
            snapshot,
            metrics,
            audit,
            reload,
        }
    }

    pub async fn handle(&self, req: Request<Incoming>, conn: ClientConn) -> Response<Body> {
        if req.uri().path() == "/reload" {
            return self.reload(&req, conn).await;
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => self.ready().await,
            "/metrics" => self.metrics(),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// `POST /reload`: reloads the config file now and answers with the
    /// outcome (200 applied/unchanged, 422 with every error). Loopback only.
    async fn reload(&self, req: &Request<Incoming>, conn: ClientConn) -> Response<Body> {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        }
        // Why: whoever can reload can make the gateway re-read its file at
        // will; only processes on this host may (an IPv4 peer on a dual-stack
        // socket shows as `::ffff:127.0.0.1`).
        if !conn.peer.ip().to_canonical().is_loopback() {
            return text(
                StatusCode::FORBIDDEN,
                "reload is allowed from loopback only\n",
            );
        }
        let Some(handle) = &self.reload else {
            return text(
                StatusCode::CONFLICT,
                "this gateway was not started from a config file\n",
            );
        };
        let outcome = handle.reload().await;
        let status = match outcome {
            ReloadOutcome::Failed { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::OK,
        };
        json(status, format!("{}\n", outcome.to_json()))
    }

    /// Ready when every key source has usable keys, the audit trail takes
    /// records (a failing sink with `on_failure = "allow"` is shown but
    /// does not make the gateway unready), and a shared budget store that
    /// requests would be refused without answers (one with `on_error =
    /// "allow"` or `"local"` is shown, likewise).
    async fn ready(&self) -> Response<Body> {
        let snapshot = self.snapshot.load_full();
        let store = snapshot.budgets.store();
        let budget_store = match store.ping().await {
            None => "local",
            Some(true) => "ok",
            Some(false) => "failing",
        };
        let waiting: Vec<&str> = snapshot
            .key_sources
            .iter()
            .filter(|k| !k.is_usable())
            .map(|k| k.label())
            .collect();
        let audit = match &self.audit {
            None => "off",
            Some(a) if a.is_healthy() => "ok",
            Some(_) => "failing",
        };
        // Why: an operator whose pod is not ready needs the cause (a
        // redirect, a weak key, a timeout), not only the issuer's name.
        let key_errors: serde_json::Map<String, serde_json::Value> = snapshot
            .key_sources
            .iter()
            .filter_map(|k| {
                let error = k.status().last_error?;
                Some((k.label().to_owned(), error.into()))
            })
            .collect();
        let refuses = self.audit.as_ref().is_some_and(|a| a.refuses_requests());
        let store_refuses = budget_store == "failing" && store.denies_when_down();
        // A credential that has failed and holds no token cannot serve its
        // upstream's routes; one not asked yet is asked on first use.
        let mut credentials = serde_json::Map::new();
        let mut credential_missing = false;
        for c in &snapshot.credentials {
            if c.config().source.is_on_behalf_of() {
                credentials.insert(c.name.to_string(), "per caller".into());
                continue;
            }
            let state = match c.status() {
                (true, _) => "ok".to_owned(),
                (false, None) => "not yet asked".to_owned(),
                (false, Some(reason)) => {
                    credential_missing = true;
                    format!("failing: {reason}")
                }
            };
            credentials.insert(c.name.to_string(), state.into());
        }
        let ready = waiting.is_empty() && !refuses && !store_refuses && !credential_missing;
        let body = serde_json::json!({
            "ready": ready,
            "config_version": &*snapshot.version,
            "audit": audit,
            "budget_store": budget_store,
            "credentials": credentials,
            "waiting_for_keys": waiting,
            "key_errors": key_errors,
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json(status, format!("{body}\n"))
    }

    fn metrics(&self) -> Response<Body> {
        let snapshot = self.snapshot.load();
        let keys: Vec<_> = snapshot.key_sources.iter().map(|k| k.status()).collect();
        let entries = snapshot.verifier.cache().map_or(0, |c| c.entry_count());
        let queued = self.audit.as_ref().map_or(0, |a| a.queued());
        self.metrics
            .observe_state(&keys, entries, snapshot.is_ready(), queued);
        let store = snapshot.budgets.store();
        self.metrics
            .observe_budget_store(store.is_up(), store.errors());
        for c in &snapshot.credentials {
            self.metrics.observe_credential(&c.name, c.expires_in());
        }
        let mut resp = Response::new(full(self.metrics.encode()));
        resp.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
