//! Watching files that operators replace: the config, the revocation list.
//! Watches each file's directory (inotify), not the file, so it keeps
//! working when the file is replaced by an editor's write-then-rename or by
//! the atomic `..data` symlink swap of a Kubernetes ConfigMap volume.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Events arrive in bursts (rename, chmod, the symlink swap's several
/// steps); this long after the last one, the burst is over.
const SETTLE: Duration = Duration::from_millis(100);

/// A watch on some files; dropping it stops the watch.
pub struct FileWatch {
    _watcher: Option<RecommendedWatcher>,
    events: mpsc::UnboundedReceiver<()>,
}

impl FileWatch {
    /// Watches `files`. If the OS refuses, logs why (`what` the files are,
    /// and what picks up their changes `otherwise`) and never fires.
    pub fn new(files: &[PathBuf], what: &str, otherwise: &str) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let names: Vec<OsString> = files
            .iter()
            .filter_map(|f| f.file_name().map(ToOwned::to_owned))
            .collect();
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            // Only our files, or a ConfigMap's `..data` swap.
            let ours = event.paths.iter().any(|p| {
                p.file_name().is_some_and(|n| {
                    names.iter().any(|m| m == n) || n.to_string_lossy().starts_with("..")
                })
            });
            if ours {
                let _ = tx.send(());
            }
        };
        let mut dirs: Vec<PathBuf> = files
            .iter()
            .map(|f| {
                f.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
            })
            .collect();
        dirs.sort();
        dirs.dedup();
        let watcher = notify::recommended_watcher(handler).and_then(|mut w| {
            for dir in &dirs {
                w.watch(dir, RecursiveMode::NonRecursive)?;
            }
            Ok(w)
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the {what}; changes need {otherwise}");
                None
            }
        };
        Self {
            _watcher: watcher,
            events,
        }
    }

    /// Waits for a change, then for the burst to settle. `None` once the
    /// watch has ended.
    pub async fn changed(&mut self) -> Option<()> {
        self.events.recv().await?;
        loop {
            match tokio::time::timeout(SETTLE, self.events.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return None,
                Err(_) => return Some(()),
            }
        }
    }
}
