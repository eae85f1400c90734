//! Wiring: builds every component from a [`Config`], binds the listeners,
//! spawns the key refresh tasks, and drains on shutdown. The only module
//! that names all the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::Admin;
use crate::audit::{AuditStatus, WriterHandle};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proxy::Gateway;
use crate::reload::ReloadHandle;
use crate::serve::{self, ServeSettings};
use crate::snapshot::{KeyEnv, Snapshot};

/// How long shutdown waits for the audit writer after the drain.
const AUDIT_FLUSH_LIMIT: Duration = Duration::from_secs(10);

/// A started gateway: its bound addresses and the handles to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    snapshot: Arc<ArcSwap<Snapshot>>,
    revocations: Arc<crate::revocation_file::Revocations>,
    audit: Option<Arc<AuditStatus>>,
    shutdown: watch::Sender<bool>,
    drain_timeout: Duration,
    /// Listeners: they stop accepting on shutdown and end when drained.
    listeners: JoinSet<()>,
    tunnels: TaskTracker,
    cut: CancellationToken,
    /// Key refreshes and file watchers: they end on shutdown.
    tasks: Vec<JoinHandle<()>>,
    /// Refresh loops of key sources added by reloads.
    key_loops: TaskTracker,
    writer: Option<WriterHandle>,
    reload: Option<ReloadHandle>,
    reloads: watch::Sender<u64>,
    metrics: Arc<Metrics>,
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

    /// Reloads the config file (`None` when started from text).
    pub fn reload_handle(&self) -> Option<&ReloadHandle> {
        self.reload.as_ref()
    }

    /// Counts finished key fetches of every source, whatever their result:
    /// tests await it.
    pub fn key_fetches_done(&self) -> watch::Receiver<u64> {
        self.metrics.key_fetches_done()
    }

    /// Counts finished reloads, whatever their outcome: tests await it.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// The running snapshot's config version.
    pub fn config_version(&self) -> String {
        self.snapshot.load().version.to_string()
    }

    /// The audit trail's state; `None` when audit is off.
    pub fn audit(&self) -> Option<&Arc<AuditStatus>> {
        self.audit.as_ref()
    }

    /// Stops accepting and starts draining; [`Running::join`] waits for it.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits for open requests and tunnels to finish, up to the drain
    /// timeout, then cuts the rest (their records say `shutdown`), and
    /// waits for the audit writer to write every record.
    pub async fn join(mut self) {
        self.tunnels.close();
        let drained = async {
            while self.listeners.join_next().await.is_some() {}
            self.tunnels.wait().await;
        };
        if tokio::time::timeout(self.drain_timeout, drained)
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?self.drain_timeout, "drain timeout reached; cutting the remaining requests");
        }
        self.cut.cancel();
        while self.listeners.join_next().await.is_some() {}
        self.tunnels.wait().await;
        for task in self.tasks {
            let _ = task.await;
        }
        self.key_loops.close();
        self.key_loops.wait().await;
        if let Some(writer) = self.writer
            && !writer.finished(AUDIT_FLUSH_LIMIT).await
        {
            tracing::error!(limit = ?AUDIT_FLUSH_LIMIT, "audit writer did not finish; records may be missing");
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
    metrics.set_config_version(&config.version);
    let env = KeyEnv {
        observer: metrics.clone(),
    };
    let snapshot = Snapshot::compile(&config, &env).map_err(|e| anyhow::anyhow!("{e}"))?;
    let snapshot = Arc::new(ArcSwap::from_pointee(snapshot));
    let server_cert = match &config.server.tls {
        Some(t) => Some(crate::tls::ServerCert::load(&t.cert, &t.key)?),
        None => None,
    };
    let tls = match &server_cert {
        Some(cert) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
            cert.clone(),
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

    let cut = CancellationToken::new();
    let tunnels = TaskTracker::new();
    let (auditor, writer) = if config.audit.is_enabled() {
        let (auditor, writer) = crate::audit::start(&config.audit, metrics.clone(), cut.clone())?;
        (Some(auditor), Some(writer))
    } else {
        (None, None)
    };
    let audit = auditor.as_ref().map(|a| a.status().clone());
    let settings = ServeSettings {
        client_header_timeout: config.server.client_header_timeout,
        idle_timeout: config.server.idle_timeout,
        limits: config.limits,
        is_main: true,
        metrics: Some(metrics.clone()),
    };
    let revocations = match &config.revocation_file {
        Some(path) => {
            let (revocations, task) = crate::revocation_file::start(path.clone(), stop.clone())
                .map_err(|e| anyhow::anyhow!("revocation file: {e}"))?;
            tasks.push(task);
            revocations
        }
        None => crate::revocation_file::Revocations::none(),
    };
    let streams = crate::streams::Streams::new(metrics.clone());
    let reloads = watch::Sender::new(0);
    tasks.push(tokio::spawn(crate::streams::watch(
        streams.clone(),
        snapshot.clone(),
        revocations.clone(),
        reloads.subscribe(),
        stop.clone(),
    )));
    let gateway = Arc::new(Gateway::new(
        snapshot.clone(),
        metrics.clone(),
        revocations.clone(),
        auditor,
        streams,
        tunnels.clone(),
        cut.clone(),
    ));
    let handler = move |req, conn| gateway.clone().handle(req, conn);
    let mut listeners = JoinSet::new();
    listeners.spawn(serve::serve(
        listener,
        tls,
        handler,
        settings.clone(),
        stop.clone(),
        cut.clone(),
    ));

    let key_loops = TaskTracker::new();
    let reload = match &config.source {
        Some(path) => {
            let reloader = crate::reload::Reloader {
                path: path.clone(),
                snapshot: snapshot.clone(),
                env: env.clone(),
                metrics: metrics.clone(),
                restart_only: crate::reload::RestartOnly::of(&config),
                key_loops: key_loops.clone(),
                stop: stop.clone(),
                done: reloads.clone(),
                server_cert: server_cert.clone(),
                audit: audit.clone(),
                background: crate::reload::ReloadThread::start().context("reload thread")?,
            };
            let (handle, task) = reloader.start();
            tasks.push(task);
            let mut watched = vec![path.clone()];
            if let Some(t) = &config.server.tls {
                watched.extend([t.cert.clone(), t.key.clone()]);
            }
            tasks.push(tokio::spawn(watch_config(
                watched,
                handle.clone(),
                stop.clone(),
            )));
            Some(handle)
        }
        None => None,
    };
    let admin = Arc::new(Admin::new(
        snapshot.clone(),
        metrics.clone(),
        audit.clone(),
        reload.clone(),
    ));
    let admin_handler = move |req, conn| {
        let admin = admin.clone();
        async move { Ok(admin.handle(req, conn).await) }
    };
    let admin_settings = ServeSettings {
        is_main: false,
        metrics: None,
        ..settings
    };
    listeners.spawn(serve::serve(
        admin_listener,
        None,
        admin_handler,
        admin_settings,
        stop,
        cut.clone(),
    ));

    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(%addr, %admin_addr, tls = config.server.tls.is_some(), config_version = %config.version, audit = config.audit.is_enabled(), workers, "portcullis listening");
    Ok(Running {
        revocations,
        addr,
        admin_addr,
        snapshot,
        audit,
        shutdown,
        drain_timeout: config.server.drain_timeout,
        listeners,
        tunnels,
        cut,
        tasks,
        key_loops,
        writer,
        reload,
        reloads,
        metrics,
    })
}

/// Reloads when the config file or the TLS files change (also when they
/// are replaced).
async fn watch_config(
    files: Vec<std::path::PathBuf>,
    reload: ReloadHandle,
    mut stop: watch::Receiver<bool>,
) {
    let mut watch = crate::watch::FileWatch::new(
        &files,
        "config and TLS files",
        "SIGHUP, POST /reload or a restart",
    );
    loop {
        tokio::select! {
            changed = watch.changed() => match changed {
                Some(names) => {
                    tracing::info!(files = ?names, "configuration files changed: reloading");
                    reload.trigger();
                }
                None => return,
            },
            () = crate::shutdown::stopped(&mut stop) => return,
        }
    }
}

/// Runs until SIGTERM or SIGINT, then drains and returns. SIGHUP reloads
/// the config file.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let running = start(config).await?;
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Some(handle), Ok(mut hup)) = (
            running.reload_handle().cloned(),
            signal(SignalKind::hangup()),
        ) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: reloading the configuration");
                    handle.trigger();
                }
            });
        }
    }
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
