//! The audit writer thread, behind the queue of `queue`.
//!
//! One OS thread wakes every 10 ms, encodes, chains and writes what arrived
//! as one batch (one `write`, or one per file where the batch reaches the
//! file's rotation size), syncs the file at most once a second, and
//! exits when every sender is gone, after writing everything queued.

use std::io::Write;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::chain::{AuditFile, Chain};
use super::queue::{AuditStatus, Auditor};
use super::record::Record;
use crate::config::{AuditConfig, AuditFailure};
use crate::metrics::Metrics;

/// Records written per `write` at most.
const BATCH: usize = 4096;
/// Records wait at most this long for the writer.
const FLUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Written records reach the disk within this time.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// A failing sink is retried this often.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// The writer thread, to wait for at shutdown.
pub struct WriterHandle {
    done: oneshot::Receiver<()>,
}

impl WriterHandle {
    /// Waits until the writer has written every record and exited (every
    /// [`Auditor`] must be gone). False if `limit` passed first.
    pub async fn finished(self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.done).await.is_ok()
    }
}

/// Opens the sinks and starts the writer thread. Fails if the audit file
/// cannot be opened.
pub fn start(
    cfg: &AuditConfig,
    metrics: Arc<Metrics>,
    cut: CancellationToken,
) -> std::io::Result<(Auditor, WriterHandle)> {
    let (file, chain) = match &cfg.file {
        Some(f) => {
            let (file, chain) = AuditFile::open(&f.path, f.max_bytes, f.keep).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("cannot open audit file {}: {e}", f.path.display()),
                )
            })?;
            (Some(file), chain)
        }
        None => (None, Chain::default()),
    };
    let (tx, rx) = mpsc::channel();
    let status = Arc::new(AuditStatus::new(cfg.policy, metrics));
    let (done_tx, done) = oneshot::channel();
    let writer = Writer {
        rx,
        status: status.clone(),
        chain,
        file,
        stdout: cfg.stdout,
        backlog: Backlog::default(),
        lines: Vec::new(),
        dirty: false,
        last_sync: Instant::now(),
        retry_at: None,
    };
    std::thread::Builder::new()
        .name("portcullis-audit".into())
        .spawn(move || {
            writer.run();
            let _ = done_tx.send(());
        })?;
    Ok((Auditor::new(tx, status, cut), WriterHandle { done }))
}

struct Writer {
    rx: mpsc::Receiver<Box<Record>>,
    status: Arc<AuditStatus>,
    chain: Chain,
    file: Option<AuditFile>,
    stdout: bool,
    /// Encoded records not yet written.
    backlog: Backlog,
    lines: Vec<u8>,
    dirty: bool,
    last_sync: Instant,
    /// Set while the sink fails: when to try again.
    retry_at: Option<Instant>,
}

impl Writer {
    fn run(mut self) {
        loop {
            // Why: the writer wakes on a clock, never per record. A wake-up
            // per record costs every request a context switch, which on a
            // busy core costs more than writing the record.
            std::thread::sleep(FLUSH_INTERVAL);
            let mut open = true;
            loop {
                match self.rx.try_recv() {
                    Ok(record) => self.take(&record),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
                if self.backlog.len() >= BATCH && self.retry_at.is_none() {
                    self.write();
                }
            }
            if !self.backlog.is_empty() && self.retry_at.is_none_or(|at| Instant::now() >= at) {
                self.write();
            }
            if self.dirty && self.last_sync.elapsed() >= SYNC_INTERVAL {
                self.sync();
            }
            if !open {
                break;
            }
        }
        self.finish();
    }

    fn take(&mut self, record: &Record) {
        let start = self.backlog.bytes.len();
        match record.encode(&mut self.backlog.bytes) {
            Ok(()) => self.backlog.ends.push(self.backlog.bytes.len()),
            Err(e) => {
                self.backlog.bytes.truncate(start);
                // Unreachable for our own types; counted, not hidden.
                tracing::error!(error = %e, "audit record could not be encoded");
                self.status.metrics.audit_dropped("encode_error");
                self.status.dequeued(1);
            }
        }
    }

    /// Writes the backlog, to the file (the trail of record) and/or stdout:
    /// one `write` per file it goes into, split where the file reaches its
    /// size, so a file rotates at the same record however records batch.
    /// What was written leaves the backlog; on a failure the rest stays.
    fn write(&mut self) {
        let mut done = 0;
        let mut failed = None;
        while done < self.backlog.len() {
            let room = self.file.as_ref().map_or(usize::MAX, AuditFile::room);
            match self.write_some(done, room) {
                Ok(n) => done += n,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.backlog.skip(done);
        if let Some((primary, e)) = failed {
            self.failed(primary, &e);
        }
    }

    /// Writes the records from `from` on until `room` bytes are reached (at
    /// least one record). Returns how many were written; on an error the
    /// chain is as it was.
    fn write_some(
        &mut self,
        from: usize,
        room: usize,
    ) -> Result<usize, (&'static str, std::io::Error)> {
        let before = self.chain.clone();
        self.lines.clear();
        let mut n = 0;
        for object in self.backlog.iter_from(from) {
            if n > 0 && self.lines.len() >= room {
                break;
            }
            self.chain.link(object, &mut self.lines);
            n += 1;
        }
        let (primary, result) = match &mut self.file {
            Some(file) => ("file", file.append(&self.lines)),
            None => ("stdout", write_stdout(&self.lines)),
        };
        if let Err(e) = result {
            self.chain = before;
            return Err((primary, e));
        }
        if self.file.is_some()
            && self.stdout
            && let Err(e) = write_stdout(&self.lines)
        {
            // Why: the file holds the records; stdout is a copy, and
            // retrying it would duplicate them in the file.
            self.status.metrics.audit_sink_error("stdout");
            tracing::debug!(error = %e, "audit copy to stdout failed");
        }
        self.dirty = true;
        self.retry_at = None;
        if !self.status.is_healthy() {
            tracing::info!(sink = primary, "audit sink recovered");
            self.status.set_healthy(true);
        }
        self.status.metrics.audit_written(n as u64);
        self.status.progress.send_modify(|p| p.written += n as u64);
        self.status.dequeued(n);
        Ok(n)
    }

    /// The sink failed: counts it, and keeps the backlog for a retry or
    /// drops it, as the failure policy says.
    fn failed(&mut self, primary: &'static str, e: &std::io::Error) {
        self.status.metrics.audit_sink_error(primary);
        let policy = self.status.policy();
        if self.status.is_healthy() {
            tracing::error!(sink = primary, error = %e, on_failure = ?policy.on_failure, "audit sink failed");
            self.status.set_healthy(false);
        }
        match policy.on_failure {
            AuditFailure::Allow => self.drop_backlog(0),
            AuditFailure::Deny => {
                // Kept for the retry, up to the queue's capacity.
                self.drop_backlog(policy.queue_capacity);
                self.retry_at = Some(Instant::now() + RETRY_INTERVAL);
            }
        }
        self.status.progress.send_modify(|p| p.failures += 1);
    }

    /// Drops (and counts) the newest records beyond `keep`.
    fn drop_backlog(&mut self, keep: usize) {
        let excess = self.backlog.len().saturating_sub(keep);
        if excess > 0 {
            self.backlog.keep(keep);
            for _ in 0..excess {
                self.status.metrics.audit_dropped("sink_error");
            }
            self.status.dequeued(excess);
        }
    }

    fn sync(&mut self) {
        if let Some(file) = &mut self.file
            && let Err(e) = file.sync()
        {
            tracing::warn!(error = %e, "audit file sync failed");
        }
        self.dirty = false;
        self.last_sync = Instant::now();
    }

    /// Every sender is gone: write what is left, retrying a failing sink a
    /// few times; as a last resort put the records on stderr rather than
    /// lose them.
    fn finish(&mut self) {
        for _ in 0..3 {
            if self.backlog.is_empty() {
                break;
            }
            self.retry_at = None;
            self.write();
            if !self.backlog.is_empty() {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        if !self.backlog.is_empty() {
            tracing::error!(
                records = self.backlog.len(),
                "audit sink failed at shutdown; writing the remaining records to stderr"
            );
            let mut stderr = std::io::stderr().lock();
            for object in self.backlog.iter() {
                let _ = stderr.write_all(object);
                let _ = stderr.write_all(b"\n");
            }
        }
        self.sync();
    }
}

/// Encoded records, back to back in one buffer (no allocation per record).
#[derive(Default)]
struct Backlog {
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<usize>,
}

impl Backlog {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.iter_from(0)
    }

    /// The records from the `from`th on.
    fn iter_from(&self, from: usize) -> impl Iterator<Item = &[u8]> {
        let ends = self.ends.get(from..).unwrap_or_default();
        let starts = std::iter::once(self.start_of(from)).chain(ends.iter().copied());
        starts.zip(ends).map(|(s, e)| &self.bytes[s..*e])
    }

    /// Where the `i`th record starts in `bytes` (the end, past the last).
    fn start_of(&self, i: usize) -> usize {
        i.checked_sub(1)
            .and_then(|prev| self.ends.get(prev))
            .copied()
            .unwrap_or(0)
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Removes the oldest `n` records (written).
    fn skip(&mut self, n: usize) {
        if n >= self.len() {
            return self.clear();
        }
        let cut = self.start_of(n);
        self.bytes.drain(..cut);
        self.ends.drain(..n);
        for end in &mut self.ends {
            *end -= cut;
        }
    }

    /// Keeps the oldest `n` records.
    fn keep(&mut self, n: usize) {
        self.ends.truncate(n);
        self.bytes.truncate(self.ends.last().copied().unwrap_or(0));
    }
}

fn write_stdout(lines: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(lines)?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::audit::chain::verify;

    fn writer(file: AuditFile, chain: Chain) -> Writer {
        let (_tx, rx) = mpsc::channel();
        let policy = crate::config::AuditPolicy {
            queue_capacity: 100,
            overflow: crate::config::AuditOverflow::Drop,
            on_failure: AuditFailure::Deny,
        };
        let status = Arc::new(AuditStatus::new(policy, Arc::new(Metrics::new().unwrap())));
        Writer {
            rx,
            status,
            chain,
            file: Some(file),
            stdout: false,
            backlog: Backlog::default(),
            lines: Vec::new(),
            dirty: false,
            last_sync: Instant::now(),
            retry_at: None,
        }
    }

    fn fill(w: &mut Writer, numbers: std::ops::Range<usize>) {
        for n in numbers {
            let object = format!("{{\"n\":{n}}}");
            w.backlog.bytes.extend_from_slice(object.as_bytes());
            w.backlog.ends.push(w.backlog.bytes.len());
            w.status
                .queued
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// However many records arrive together, a file rotates at the record
    /// that reaches its size: the files are the same as if every record had
    /// been written alone.
    #[test]
    fn a_batch_rotates_at_the_record_that_fills_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.log");
        let (file, chain) = AuditFile::open(&log, 1000, 50).unwrap();
        let mut w = writer(file, chain);
        fill(&mut w, 0..40);
        w.write();
        assert!(w.backlog.is_empty());
        assert_eq!(w.status.progress.borrow().written, 40);

        let mut files: Vec<PathBuf> = (1..=50)
            .rev()
            .map(|n| dir.path().join(format!("audit.log.{n}")))
            .filter(|p| p.exists())
            .collect();
        assert!(files.len() >= 3, "{files:?}");
        for rotated in &files {
            let text = std::fs::read_to_string(rotated).unwrap();
            let last = text.trim_end().rsplit('\n').next().unwrap();
            assert!(text.len() >= 1000, "{rotated:?} rotated early");
            assert!(
                text.len() - last.len() - 1 < 1000,
                "{rotated:?} took a record after it was full"
            );
        }
        files.push(log);
        let verified = verify(&files).unwrap();
        assert_eq!((verified.first_seq, verified.last_seq), (Some(1), Some(40)));
    }

    /// A batch that fails part way (here the rotation) counts what reached
    /// the file as written and keeps the rest, chained from the last record
    /// written, for the retry: nothing lost, nothing written twice.
    #[test]
    fn a_write_that_fails_part_way_keeps_only_the_unwritten_records() {
        let dir = tempfile::tempdir().unwrap();
        // Why: a non-empty directory where the rotated file goes makes the
        // rotation fail.
        let blocker = dir.path().join("audit.log.1");
        std::fs::create_dir_all(blocker.join("x")).unwrap();
        let log = dir.path().join("audit.log");
        let (file, chain) = AuditFile::open(&log, 1000, 1).unwrap();
        let mut w = writer(file, chain);
        fill(&mut w, 0..40);
        w.write();
        let (written, failures) = {
            let p = w.status.progress.borrow();
            (p.written, p.failures)
        };
        assert_eq!(failures, 1);
        assert!(written > 0 && written < 40, "{written}");
        assert_eq!(w.backlog.len() as u64, 40 - written);
        assert!(!w.status.is_healthy());

        std::fs::remove_dir_all(&blocker).unwrap();
        w.write();
        assert!(w.backlog.is_empty() && w.status.is_healthy());
        assert_eq!(w.status.progress.borrow().written, 40);
        let verified = verify(&[blocker, log]).unwrap();
        assert_eq!(verified.last_seq, Some(40));
    }

    #[test]
    fn skipping_written_records_keeps_the_rest_intact() {
        let mut backlog = Backlog::default();
        for object in ["{\"a\":1}", "{\"b\":22}", "{\"c\":333}"] {
            backlog.bytes.extend_from_slice(object.as_bytes());
            backlog.ends.push(backlog.bytes.len());
        }
        let from_second: Vec<&[u8]> = backlog.iter_from(1).collect();
        assert_eq!(from_second, [&b"{\"b\":22}"[..], b"{\"c\":333}"]);
        assert_eq!(backlog.iter_from(3).count(), 0);
        backlog.skip(0);
        assert_eq!(backlog.len(), 3);
        backlog.skip(1);
        let rest: Vec<&[u8]> = backlog.iter().collect();
        assert_eq!(rest, [&b"{\"b\":22}"[..], b"{\"c\":333}"]);
        backlog.skip(5);
        assert!(backlog.is_empty() && backlog.bytes.is_empty());
    }
}
