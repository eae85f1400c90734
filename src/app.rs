//! Wiring: builds every component from a [`Config`], binds the listeners,
//! spawns the key refresh tasks, and drains on shutdown. The only module
//! that names all the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::Admin;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::{Gateway, Upstream};
use crate::serve::{self, ServeSettings};
use crate::snapshot::{KeyEnv, Snapshot};

/// A started gateway: its bound addresses and the handles to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    snapshot: Arc<ArcSwap<Snapshot>>,
    revocations: Arc<crate::revocation::Revocations>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Resolves once every key source has loaded its first key set.
    pub async fn wait_ready(&self) {
        let snapshot = self.snapshot.load_full();
        for source in &snapshot.key_sources {
            source.wait_loaded().await;
        }
    }

    /// Counts revocation file changes applied: tests await it, never sleep.
    pub fn revocation_changes(&self) -> watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// Stops accepting and starts draining; [`Running::join`] waits for it.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits for the listeners to drain and the background tasks to end.
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Builds and starts everything: listeners bound, key fetches begun. Returns
/// before the keys are loaded (`/readyz` says when).
pub async fn start(config: Config) -> anyhow::Result<Running> {
    for warning in &config.warnings {
        tracing::warn!(%warning, "configuration warning");
    }
    let metrics = Arc::new(Metrics::new().context("metrics registry")?);
    let env = KeyEnv {
        generation: Arc::new(AtomicU64::new(0)),
        observer: metrics.clone(),
    };
    let snapshot = Snapshot::compile(&config, &env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    let upstream = Upstream::new(&config.upstream).context("upstream TLS configuration")?;
    let tls = match &config.server.tls {
        Some(t) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            &t.cert, &t.key,
        )?)),
        None => None,
    };
    let listener = serve::bind(config.server.listen).await?;
    let admin_listener = serve::bind(config.server.admin_listen).await?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let (shutdown, stop) = watch::channel(false);
    let mut tasks = Vec::new();

    for source in snapshot.load().key_sources.iter().cloned() {
        tasks.push(tokio::spawn(source.run(stop.clone())));
    }

    let settings = ServeSettings {
        client_header_timeout: config.server.client_header_timeout,
        idle_timeout: config.server.idle_timeout,
        drain_timeout: config.server.drain_timeout,
        is_main: true,
    };
    let revocations = match &config.revocation_file {
        Some(path) => {
            let (revocations, task) = crate::revocation::start(path.clone(), stop.clone())
                .map_err(|e| anyhow::anyhow!("revocation file: {e}"))?;
            tasks.push(task);
            revocations
        }
        None => crate::revocation::Revocations::none(),
    };
    let gateway = Arc::new(Gateway::new(
        snapshot.clone(),
        metrics.clone(),
        upstream,
        revocations.clone(),
    ));
    let handler = move |req, conn| {
        let gateway = gateway.clone();
        async move { gateway.handle(req, conn).await }
    };
    tasks.push(tokio::spawn(serve::serve(
        listener,
        tls,
        handler,
        settings.clone(),
        stop.clone(),
    )));

    let admin = Arc::new(Admin::new(snapshot.clone(), metrics));
    let admin_handler = move |req, _conn| {
        let admin = admin.clone();
        async move { admin.handle(&req) }
    };
    let admin_settings = ServeSettings {
        is_main: false,
        ..settings
    };
    tasks.push(tokio::spawn(serve::serve(
        admin_listener,
        None,
        admin_handler,
        admin_settings,
        stop,
    )));

    tracing::info!(%addr, %admin_addr, tls = config.server.tls.is_some(), "portcullis listening");
    Ok(Running {
        revocations,
        addr,
        admin_addr,
        snapshot,
        shutdown,
        tasks,
    })
}

/// Runs until SIGTERM or SIGINT, then drains and returns.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown();
    running.join().await;
    Ok(())
}

pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
