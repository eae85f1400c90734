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

use crate::audit::AuditStatus;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::snapshot::{KeyEnv, Snapshot};

mod restart_only;
mod thread;

pub use restart_only::RestartOnly;
pub use thread::ReloadThread;

/// How long a new issuer's first key fetch may take before the reload
/// gives up (and keeps the old config).
const KEY_FETCH_LIMIT: Duration = Duration::from_secs(10);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
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

impl ReloadOutcome {
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

type Waiter = Option<oneshot::Sender<ReloadOutcome>>;

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
    pub async fn reload(&self) -> ReloadOutcome {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Some(tx)).is_err() {
            return ReloadOutcome::Failed {
                errors: vec!["the gateway is shutting down".into()],
            };
        }
        rx.await.unwrap_or_else(|_| ReloadOutcome::Failed {
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
    /// What the process started with that only a restart changes.
    pub restart_only: RestartOnly,
    /// Refresh loops of key sources that reloads add.
    pub key_loops: TaskTracker,
    pub stop: watch::Receiver<bool>,
    /// Counts finished reloads (any outcome): tests await it.
    pub done: watch::Sender<u64>,
    /// Re-read on every reload: a rotated certificate is served to the
    /// next handshake.
    pub server_cert: Option<Arc<crate::tls::ServerCert>>,
    /// The running audit trail: its queue and failure policy change live.
    pub audit: Option<Arc<AuditStatus>>,
    /// Where the heavy lifting runs.
    pub background: ReloadThread,
}

impl Reloader {
    /// Starts the reload task; it ends on shutdown.
    pub fn start(self) -> (ReloadHandle, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ReloadHandle { tx }, tokio::spawn(Arc::new(self).run(rx)))
    }

    async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Waiter>) {
        let mut stop = self.stop.clone();
        loop {
            let first = tokio::select! {
                w = rx.recv() => match w { Some(w) => w, None => return },
                () = crate::shutdown::stopped(&mut stop) => return,
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
    pub async fn reload(self: &Arc<Self>) -> ReloadOutcome {
        let mut outcome = self.try_reload().await;
        if let (Some(cert), false) = (
            &self.server_cert,
            matches!(outcome, ReloadOutcome::Failed { .. }),
        ) {
            match cert.reload() {
                Ok(true) => {
                    tracing::info!("TLS certificate reloaded");
                    if let ReloadOutcome::Unchanged { version } = outcome {
                        outcome = ReloadOutcome::Applied { version };
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    outcome = ReloadOutcome::Failed {
                        errors: vec![format!("server.tls: {e}")],
                    };
                }
            }
        }
        self.metrics.config_reload(outcome.label());
        match &outcome {
            ReloadOutcome::Applied { version } => {
                self.metrics.set_config_version(version);
                tracing::info!(%version, "configuration reloaded");
            }
            ReloadOutcome::Unchanged { version } => {
                tracing::debug!(%version, "configuration unchanged");
            }
            ReloadOutcome::Failed { errors } => {
                tracing::warn!(
                    file = %self.path.display(),
                    errors = %errors.join("; "),
                    "configuration reload refused; the running configuration stays"
                );
            }
        }
        outcome
    }

    async fn try_reload(self: &Arc<Self>) -> ReloadOutcome {
        let failed = |errors: Vec<String>| ReloadOutcome::Failed { errors };
        let previous = self.snapshot.load_full();
        // Why: parsing and compiling a large config takes a core for a
        // while; on a runtime worker it would stall the requests queued there.
        let this = self.clone();
        let prev = previous.clone();
        let built = match self.background.run(move || this.build(&prev)).await {
            Some(Ok(built)) => built,
            Some(Err(outcome)) => return outcome,
            None => return failed(vec!["the reload thread is gone".into()]),
        };
        let Built {
            snapshot: next,
            config,
        } = built;
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
        let version = next.version.to_string();
        let next = Arc::new(next);
        if let Some(status) = &self.audit {
            status.set_policy(config.audit.policy);
        }
        self.snapshot.store(next.clone());
        for old in &previous.key_sources {
            if !next.key_sources.iter().any(|s| Arc::ptr_eq(s, old)) {
                old.retire();
            }
        }
        for source in added {
            self.key_loops.spawn(source.run(self.stop.clone()));
        }
        // Why: freeing a large generation takes tens of milliseconds; the
        // new one already serves, so that is not the reload's time, and
        // not a request's either.
        drop(next);
        self.background.free(config);
        self.background.retire(previous);
        ReloadOutcome::Applied { version }
    }

    /// Reads, parses, validates and compiles the file: everything a reload
    /// does off the runtime. `Err` is the outcome to report (failed or
    /// unchanged).
    fn build(&self, previous: &Snapshot) -> Result<Built, ReloadOutcome> {
        let failed = |errors: Vec<String>| ReloadOutcome::Failed { errors };
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| failed(vec![format!("cannot read {}: {e}", self.path.display())]))?;
        let version = crate::config::version(&text);
        if *previous.version == *version {
            return Err(ReloadOutcome::Unchanged { version });
        }
        let base = self.path.parent().unwrap_or(Path::new("."));
        let config = crate::config::parse(&text, base)
            .map_err(|e| failed(e.0.iter().map(ToString::to_string).collect()))?;
        let fixed = self.restart_only.changes(&RestartOnly::of(&config));
        if !fixed.is_empty() {
            return Err(failed(fixed.iter().map(ToString::to_string).collect()));
        }
        let snapshot = Snapshot::compile_after(&config, &self.env, Some(previous))
            .map_err(|e| failed(e.0.iter().map(ToString::to_string).collect()))?;
        Ok(Built { snapshot, config })
    }
}

/// A compiled config, ready to swap in.
struct Built {
    snapshot: Snapshot,
    /// What it was compiled from: the audit policy is applied from it, and
    /// the rest is freed off the reload's time.
    config: Config,
}
