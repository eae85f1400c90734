//! Hot reload: read the config file again, validate and compile it off the
//! request path, fetch keys for new issuers, and only then swap the whole
//! snapshot. Anything wrong keeps the old snapshot serving.
//!
//! Every trigger (the file watcher, SIGHUP, `POST /reload`) asks one reload
//! task; triggers that arrive while a reload runs are answered by the next
//! one, so a burst costs at most two reloads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::snapshot::{KeyEnv, Snapshot};

/// How long a new issuer's first key fetch may take before the reload
/// gives up (and keeps the old config).
const KEY_FETCH_LIMIT: Duration = Duration::from_secs(10);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied {
        version: String,
    },
    /// The file's contents are those already running.
    Unchanged {
        version: String,
    },
    /// Nothing changed; every problem with its path.
    Failed {
        errors: Vec<String>,
    },
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::Unchanged { .. } => "unchanged",
            Self::Failed { .. } => "failed",
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Applied { version } | Self::Unchanged { version } => {
                json!({"result": self.label(), "version": version})
            }
            Self::Failed { errors } => json!({"result": "failed", "errors": errors}),
        }
    }
}

type Waiter = Option<oneshot::Sender<Outcome>>;

/// Asks the reload task for a reload. Cloning shares the task.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::UnboundedSender<Waiter>,
}

impl ReloadHandle {
    /// Asks for a reload without waiting for it.
    pub fn trigger(&self) {
        let _ = self.tx.send(None);
    }

    /// Asks for a reload and waits for its outcome.
    pub async fn reload(&self) -> Outcome {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Some(tx)).is_err() {
            return Outcome::Failed {
                errors: vec!["the gateway is shutting down".into()],
            };
        }
        rx.await.unwrap_or_else(|_| Outcome::Failed {
            errors: vec!["the gateway is shutting down".into()],
        })
    }
}

/// Everything a reload needs.
pub struct Reloader {
    pub path: PathBuf,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub env: KeyEnv,
    pub metrics: Arc<Metrics>,
    /// The config the process started with: fields only a restart changes
    /// are compared against it.
    pub startup: Config,
    /// Refresh loops of key sources that reloads add.
    pub key_loops: TaskTracker,
    pub stop: watch::Receiver<bool>,
    /// Counts finished reloads (any outcome): tests await it.
    pub done: watch::Sender<u64>,
    /// Re-read on every reload: a rotated certificate is served to the
    /// next handshake.
    pub server_cert: Option<Arc<crate::tls::ServerCert>>,
}

impl Reloader {
    /// Starts the reload task; it ends on shutdown.
    pub fn start(self) -> (ReloadHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ReloadHandle { tx }, tokio::spawn(self.run(rx)))
    }

    async fn run(self, mut rx: mpsc::UnboundedReceiver<Waiter>) {
        let mut stop = self.stop.clone();
        loop {
            let first = tokio::select! {
                w = rx.recv() => match w { Some(w) => w, None => return },
                () = crate::serve::stopped(&mut stop) => return,
            };
            let mut waiters = vec![first];
            while let Ok(w) = rx.try_recv() {
                waiters.push(w);
            }
            let outcome = self.reload().await;
            self.done.send_modify(|n| *n += 1);
            for w in waiters.into_iter().flatten() {
                let _ = w.send(outcome.clone());
            }
        }
    }

    /// One reload, start to finish.
    pub async fn reload(&self) -> Outcome {
        let mut outcome = self.try_reload().await;
        if let (Some(cert), false) = (&self.server_cert, matches!(outcome, Outcome::Failed { .. }))
        {
            match cert.reload() {
                Ok(true) => {
                    tracing::info!("TLS certificate reloaded");
                    if let Outcome::Unchanged { version } = outcome {
                        outcome = Outcome::Applied { version };
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    outcome = Outcome::Failed {
                        errors: vec![format!("server.tls: {e}")],
                    };
                }
            }
        }
        self.metrics.config_reload(outcome.label());
        match &outcome {
            Outcome::Applied { version } => {
                self.metrics.set_config_version(version);
                tracing::info!(%version, "configuration reloaded");
            }
            Outcome::Unchanged { version } => {
                tracing::debug!(%version, "configuration unchanged");
            }
            Outcome::Failed { errors } => {
                tracing::warn!(
                    file = %self.path.display(),
                    errors = %errors.join("; "),
                    "configuration reload refused; the running configuration stays"
                );
            }
        }
        outcome
    }

    async fn try_reload(&self) -> Outcome {
        let failed = |errors: Vec<String>| Outcome::Failed { errors };
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => return failed(vec![format!("cannot read {}: {e}", self.path.display())]),
        };
        let previous = self.snapshot.load_full();
        let version = crate::config::version(&text);
        if *previous.version == *version {
            return Outcome::Unchanged { version };
        }
        let base = self.path.parent().unwrap_or(Path::new("."));
        let config = match crate::config::parse(&text, base) {
            Ok(c) => c,
            Err(e) => return failed(e.0.iter().map(ToString::to_string).collect()),
        };
        let fixed = startup_only_changes(&self.startup, &config);
        if !fixed.is_empty() {
            return failed(fixed.iter().map(ToString::to_string).collect());
        }
        let next = match Snapshot::compile_after(&config, &self.env, Some(&previous)) {
            Ok(s) => s,
            Err(e) => return failed(e.0.iter().map(ToString::to_string).collect()),
        };
        let is_new = |s: &Arc<crate::keys::KeySource>| {
            !previous.key_sources.iter().any(|p| Arc::ptr_eq(p, s))
        };
        // Why: a new issuer's keys are fetched before the swap, so the new
        // config never serves a moment without them.
        for source in next.key_sources.iter().filter(|s| is_new(s)) {
            match tokio::time::timeout(KEY_FETCH_LIMIT, source.refresh()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return failed(vec![format!(
                        "keys for {} could not be fetched: {e}",
                        source.label()
                    )]);
                }
                Err(_) => {
                    return failed(vec![format!(
                        "keys for {} could not be fetched within {KEY_FETCH_LIMIT:?}",
                        source.label()
                    )]);
                }
            }
        }
        let added: Vec<_> = next
            .key_sources
            .iter()
            .filter(|s| is_new(s))
            .cloned()
            .collect();
        let next = Arc::new(next);
        self.snapshot.store(next.clone());
        for old in &previous.key_sources {
            if !next.key_sources.iter().any(|s| Arc::ptr_eq(s, old)) {
                old.retire();
            }
        }
        for source in added {
            self.key_loops.spawn(source.run(self.stop.clone()));
        }
        Outcome::Applied { version }
    }
}

/// Fields a running process cannot change: each difference, by path.
pub fn startup_only_changes(running: &Config, next: &Config) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let mut check = |path: &str, same: bool, running: String| {
        if !same {
            out.push(ConfigError {
                path: path.into(),
                message: format!("cannot change without a restart (running: {running})"),
            });
        }
    };
    let (a, b) = (&running.server, &next.server);
    check("server.listen", a.listen == b.listen, a.listen.to_string());
    check(
        "server.admin_listen",
        a.admin_listen == b.admin_listen,
        a.admin_listen.to_string(),
    );
    check(
        "server.tls",
        a.tls == b.tls,
        a.tls.as_ref().map_or("off".into(), |t| {
            format!("cert {}, key {}", t.cert.display(), t.key.display())
        }),
    );
    check(
        "server.client_header_timeout",
        a.client_header_timeout == b.client_header_timeout,
        format!("{:?}", a.client_header_timeout),
    );
    check(
        "server.idle_timeout",
        a.idle_timeout == b.idle_timeout,
        format!("{:?}", a.idle_timeout),
    );
    check(
        "server.drain_timeout",
        a.drain_timeout == b.drain_timeout,
        format!("{:?}", a.drain_timeout),
    );
    check(
        "logging",
        running.logging == next.logging,
        format!("level {:?}", running.logging.level),
    );
    check(
        "audit",
        running.audit == next.audit,
        "see the file it started with".into(),
    );
    check(
        "revocation.file",
        running.revocation_file == next.revocation_file,
        running
            .revocation_file
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
    );
    out
}
