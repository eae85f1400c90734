//! Watching files that operators replace: the config, the revocation list.
//! Watches each file's directory (inotify), not the file, so it keeps
//! working when the file is replaced by an editor's write-then-rename or by
//! the atomic `..data` symlink swap of a Kubernetes ConfigMap volume.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Events arrive in bursts (rename, chmod, the symlink swap's several
/// steps); this long after the last one, the burst is over.
const SETTLE: Duration = Duration::from_millis(100);

/// A watch on some files; dropping it stops the watch.
pub struct FileWatch {
    _watcher: Option<RecommendedWatcher>,
    /// The name of each file an event changed.
    events: mpsc::UnboundedReceiver<OsString>,
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
            if !is_content_change(&event.kind) {
                return;
            }
            // Only our files, or a ConfigMap's `..data` swap.
            for name in event.paths.iter().filter_map(|p| p.file_name()) {
                if names.iter().any(|m| m == name) || name.to_string_lossy().starts_with("..") {
                    let _ = tx.send(name.to_owned());
                }
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

    /// Waits for a change, then for the burst to settle, and returns the
    /// names that changed (each once). `None` once the watch has ended.
    pub async fn changed(&mut self) -> Option<Vec<OsString>> {
        let mut changed = vec![self.events.recv().await?];
        loop {
            match tokio::time::timeout(SETTLE, self.events.recv()).await {
                Ok(Some(name)) => {
                    if !changed.contains(&name) {
                        changed.push(name);
                    }
                }
                Ok(None) => return None,
                Err(_) => return Some(changed),
            }
        }
    }
}

/// Whether an event can have changed what a file says.
///
/// Why: the watch sees every open and close of the file; counting those
/// made each reload (which reads the file) start the next one, forever
/// (`reading_the_file_is_not_a_change`).
fn is_content_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Name(_)) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        // Data written and not yet closed: the close that follows counts.
        // Metadata (permissions, times) says nothing new.
        EventKind::Modify(_) | EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replaces `name` in `dir` the way editors do: write, then rename.
    fn replace(dir: &Path, name: &str, text: &str) {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }

    #[tokio::test]
    async fn reading_the_file_is_not_a_change() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let config = dir.join("gateway.toml");
        let marker = dir.join("marker");
        std::fs::write(&config, "a").unwrap();
        std::fs::write(&marker, "a").unwrap();
        let mut watch = FileWatch::new(&[config.clone(), marker], "test files", "nothing");

        // Opened and read (as `cat`, `check` and the reload itself do),
        // then a change to the other file: only that one is reported.
        // inotify keeps one directory's events in order, so a read that
        // counted would be reported first or together with it.
        for _ in 0..3 {
            assert_eq!(std::fs::read_to_string(&config).unwrap(), "a");
        }
        replace(dir, "marker", "b");
        assert_eq!(watch.changed().await, Some(vec![OsString::from("marker")]));

        // A rename over the file: reported once.
        replace(dir, "gateway.toml", "b");
        assert_eq!(
            watch.changed().await,
            Some(vec![OsString::from("gateway.toml")])
        );
        // Written in place: reported at the close.
        std::fs::write(&config, "c").unwrap();
        assert_eq!(
            watch.changed().await,
            Some(vec![OsString::from("gateway.toml")])
        );
    }

    #[test]
    fn only_events_that_can_change_content_count() {
        use notify::event::{AccessKind, CreateKind, DataChange, MetadataKind, RenameMode};
        let counts = [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Remove(notify::event::RemoveKind::File),
        ];
        let ignored = [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
        ];
        for k in counts {
            assert!(is_content_change(&k), "{k:?}");
        }
        for k in ignored {
            assert!(!is_content_change(&k), "{k:?}");
        }
    }
}
