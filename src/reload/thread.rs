//! The reload thread: a reload's heavy lifting, off the request path.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::snapshot::Snapshot;

/// Work for the reload thread.
enum Job {
    Run(Box<dyn FnOnce() + Send>),
    /// A replaced generation, freed once no request holds it any more.
    Retire(Arc<Snapshot>),
}

/// How often the reload thread looks whether requests still hold a
/// replaced generation.
const RETIRE_POLL: Duration = Duration::from_millis(100);

/// One OS thread at the lowest CPU priority for a reload's heavy lifting:
/// parsing and compiling the file, and freeing the generation it replaced.
/// On a busy core the requests come first; on an idle one the reload takes
/// what is left. The thread ends with the last handle.
#[derive(Clone)]
pub struct ReloadThread {
    jobs: std::sync::mpsc::Sender<Job>,
}

impl ReloadThread {
    pub fn start() -> std::io::Result<Self> {
        let (jobs, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("portcullis-reload".into())
            .spawn(move || {
                // Why: a reload of a large file (thousands of agents) is a
                // burst of CPU; at the default priority it would take a core
                // that is serving requests. Nice 19, not SCHED_IDLE: under a load
                // that saturates the cores, SCHED_IDLE all but starved
                // reloads.
                if let Err(e) = thread_priority::set_current_thread_priority(
                    thread_priority::ThreadPriority::Min,
                ) {
                    tracing::debug!(error = ?e, "reload thread keeps the default priority");
                }
                Self::serve(&rx);
            })?;
        Ok(Self { jobs })
    }

    fn serve(rx: &std::sync::mpsc::Receiver<Job>) {
        use std::sync::mpsc::RecvTimeoutError;
        let mut retiring: Vec<Arc<Snapshot>> = Vec::new();
        loop {
            let job = if retiring.is_empty() {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(RETIRE_POLL)
            };
            match job {
                Ok(Job::Run(f)) => f(),
                Ok(Job::Retire(snapshot)) => retiring.push(snapshot),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            // Why: the last holder frees a generation (some 100,000
            // allocations for 10,000 agents, tens of milliseconds). Left to
            // the last request that used it, that would stall a runtime
            // worker; here the generation is dropped once this thread holds
            // the only reference (a replaced snapshot cannot be loaded
            // again, so the count only falls).
            retiring.retain(|s| Arc::strong_count(s) > 1);
        }
    }

    /// Runs `f` on the thread; `None` if the thread is gone.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Run(Box::new(move || {
                let _ = tx.send(f());
            })))
            .ok()?;
        rx.await.ok()
    }

    /// Frees `garbage` on the thread (or here, with the refused job, if
    /// the thread is gone).
    pub(super) fn free<T: Send + 'static>(&self, garbage: T) {
        let _ = self.jobs.send(Job::Run(Box::new(move || drop(garbage))));
    }

    /// Frees a replaced generation on the thread once requests are done
    /// with it.
    pub(super) fn retire(&self, snapshot: Arc<Snapshot>) {
        let _ = self.jobs.send(Job::Retire(snapshot));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // reason: tests; a panic is a failure
    use std::path::Path;

    use super::*;
    use crate::metrics::Metrics;
    use crate::snapshot::KeyEnv;

    fn snapshot() -> Arc<Snapshot> {
        let config = crate::config::parse(
            "[upstream]\nurl = \"http://127.0.0.1:8000\"\n",
            Path::new("."),
        )
        .unwrap();
        let env = KeyEnv {
            observer: Arc::new(Metrics::new().unwrap()),
        };
        Arc::new(Snapshot::compile(&config, &env).unwrap())
    }

    /// Waits until the reload thread has handled everything sent so far,
    /// the retire pass after it included (it runs before the next job).
    fn settle(background: &ReloadThread) {
        for _ in 0..2 {
            let (tx, rx) = std::sync::mpsc::channel();
            background
                .jobs
                .send(Job::Run(Box::new(move || tx.send(()).unwrap())))
                .unwrap();
            rx.recv().unwrap();
        }
    }

    #[test]
    fn a_replaced_generation_is_freed_by_the_reload_thread_after_its_last_request() {
        let background = ReloadThread::start().unwrap();
        let in_flight = snapshot();
        let generation = Arc::downgrade(&in_flight);
        background.retire(in_flight.clone());
        settle(&background);
        assert_eq!(
            generation.strong_count(),
            2,
            "kept while a request holds it: the request's and the thread's"
        );
        // The request ends; the thread holds the last reference.
        drop(in_flight);
        settle(&background);
        assert_eq!(generation.strong_count(), 0, "freed by the reload thread");
    }
}
