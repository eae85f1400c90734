//! Keeps the revocation list current: loads the file at start, watches its
//! directory (inotify; survives write-then-rename and Kubernetes ConfigMap
//! symlink swaps), and swaps in each valid new version. A broken file keeps
//! the previous list and says why in the log.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::ConfigErrors;
use crate::policy::RevocationList;

/// The current revocation list and a counter of applied changes.
pub struct Revocations {
    current: ArcSwap<RevocationList>,
    applied: watch::Sender<u64>,
}

impl Revocations {
    /// An empty list that never changes (no revocation file configured).
    pub fn none() -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(RevocationList::default()),
            applied: watch::Sender::new(0),
        })
    }

    /// The list to check a request against; a cheap guard, not held across
    /// `.await`.
    pub fn current(&self) -> arc_swap::Guard<Arc<RevocationList>> {
        self.current.load()
    }

    /// Changes applied so far; tests await it instead of sleeping.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }
}

/// Loads `path` and starts watching it. The returned task ends on shutdown.
pub fn start(
    path: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(Arc<Revocations>, tokio::task::JoinHandle<()>), ConfigErrors> {
    let initial = RevocationList::load(&path)?;
    let revocations = Arc::new(Revocations {
        current: ArcSwap::from_pointee(initial),
        applied: watch::Sender::new(0),
    });
    let mut watch =
        crate::watch::FileWatch::new(std::slice::from_ref(&path), "revocation file", "a restart");
    let shared = revocations.clone();
    let task = tokio::spawn(async move {
        let mut last = std::fs::read(&path).ok();
        loop {
            tokio::select! {
                event = watch.changed() => if event.is_none() { return },
                () = crate::shutdown::stopped(&mut shutdown) => return,
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if last.as_ref() == Some(&bytes) {
                continue;
            }
            match std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(|t| RevocationList::parse(t).map_err(|e| e.to_string()))
            {
                Ok(list) => {
                    tracing::info!(entries = list.len(), "revocation list applied");
                    shared.current.store(Arc::new(list));
                    shared.applied.send_modify(|n| *n += 1);
                    last = Some(bytes);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "revocation file rejected; the previous list stays")
                }
            }
        }
    });
    Ok((revocations, task))
}
