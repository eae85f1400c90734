//! The request side of the audit trail: its state ([`AuditStatus`]), the
//! queue requests hand their records to ([`Auditor`]), and one request's
//! record in the making ([`Pending`]).
//!
//! Requests hand finished records to an unbounded channel and never
//! block on I/O. The bound is applied where a request can still be told
//! no: [`Auditor::admit`] waits (up to `block_timeout`) while the queue
//! holds `queue_capacity` records, then refuses; with `overflow = "drop"` a
//! record that finds the queue full is dropped and counted instead. Records
//! of admitted requests are always queued, so the queue can exceed its
//! capacity by at most the requests in flight.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::record::{End, Record};
use crate::config::{AuditFailure, AuditOverflow, AuditPolicy};
use crate::metrics::Metrics;

/// The audit trail's state, shared with `/readyz` and metrics.
pub struct AuditStatus {
    pub(super) queued: AtomicUsize,
    /// Changed by reloads; each check loads it once.
    policy: ArcSwap<AuditPolicy>,
    healthy: AtomicBool,
    room: Notify,
    pub(super) progress: watch::Sender<Progress>,
    pub(super) metrics: Arc<Metrics>,
}

/// What the writer has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub written: u64,
    /// Failed writes to the sink (each retry counts).
    pub failures: u64,
}

impl AuditStatus {
    /// A healthy trail with an empty queue.
    pub(super) fn new(policy: AuditPolicy, metrics: Arc<Metrics>) -> Self {
        let (progress, _) = watch::channel(Progress::default());
        let status = Self {
            queued: AtomicUsize::new(0),
            policy: ArcSwap::from_pointee(policy),
            healthy: AtomicBool::new(true),
            room: Notify::new(),
            progress,
            metrics,
        };
        status.set_healthy(true);
        status
    }

    /// Whether the last write to the sink succeeded.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// The sink is failing and `on_failure = "deny"`: requests get 503.
    pub fn refuses_requests(&self) -> bool {
        Self::refuses(&self.policy(), self.is_healthy())
    }

    fn refuses(policy: &AuditPolicy, healthy: bool) -> bool {
        policy.on_failure == AuditFailure::Deny && !healthy
    }

    /// The queue bound, overflow and failure policy in force.
    pub fn policy(&self) -> AuditPolicy {
        **self.policy.load()
    }

    /// Applies a reloaded policy. Waiting requests see a larger queue at
    /// once; records already queued stay.
    pub fn set_policy(&self, policy: AuditPolicy) {
        self.policy.store(Arc::new(policy));
        self.room.notify_waiters();
    }

    /// Records accepted and not yet written.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The writer's progress: tests await it instead of sleeping.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    pub(super) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
        self.metrics.audit_sink_healthy(healthy);
    }

    pub(super) fn dequeued(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
        self.room.notify_waiters();
    }
}

/// Hands records to the writer. Cloning shares the queue; the writer ends
/// when the last clone is gone.
#[derive(Clone)]
pub struct Auditor(Arc<Shared>);

struct Shared {
    tx: mpsc::Sender<Box<Record>>,
    status: Arc<AuditStatus>,
    /// Cancelled when shutdown cuts what the drain did not finish.
    cut: CancellationToken,
}

/// The audit trail cannot take this request's record: answer 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

impl Auditor {
    /// The queue's sending end: records go to the writer through `tx`.
    pub(super) fn new(
        tx: mpsc::Sender<Box<Record>>,
        status: Arc<AuditStatus>,
        cut: CancellationToken,
    ) -> Self {
        Self(Arc::new(Shared { tx, status, cut }))
    }

    pub fn status(&self) -> &Arc<AuditStatus> {
        &self.0.status
    }

    /// Waits until the queue has room for this request's record. Refuses
    /// at once while a failing sink denies requests, or after the block
    /// timeout.
    pub async fn admit(&self) -> Result<(), Refused> {
        let st = &*self.0.status;
        let policy = st.policy();
        if AuditStatus::refuses(&policy, st.is_healthy()) {
            return Err(Refused);
        }
        let AuditOverflow::Block(timeout) = policy.overflow else {
            return Ok(());
        };
        if st.queued() < policy.queue_capacity {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let room = st.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let policy = st.policy();
            if AuditStatus::refuses(&policy, st.is_healthy()) {
                return Err(Refused);
            }
            if st.queued() < policy.queue_capacity {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(Refused);
            }
        }
    }

    /// Starts the record of one request, which arrived at `started` (its
    /// duration counts from there); it is sent when the returned guard
    /// finishes or is dropped.
    pub fn begin(&self, record: Record, started: Instant) -> Pending {
        Pending {
            record: Some(Box::new(record)),
            auditor: self.clone(),
            started,
            bytes_in: None,
        }
    }

    fn submit(&self, record: Box<Record>) {
        let st = &*self.0.status;
        let policy = st.policy();
        if policy.overflow == AuditOverflow::Drop && st.queued() >= policy.queue_capacity {
            st.metrics.audit_dropped("queue_full");
            return;
        }
        st.queued.fetch_add(1, Ordering::Relaxed);
        if self.0.tx.send(record).is_err() {
            st.queued.fetch_sub(1, Ordering::Relaxed);
            st.metrics.audit_dropped("writer_gone");
            tracing::error!("audit writer is gone; a record was lost");
        }
    }

    fn is_cut(&self) -> bool {
        self.0.cut.is_cancelled()
    }
}

/// One request's record in the making. Exactly one record leaves it: on
/// [`Pending::finish`], or when it is dropped (the client went away, or
/// shutdown cut the request).
pub struct Pending {
    record: Option<Box<Record>>,
    auditor: Auditor,
    started: Instant,
    bytes_in: Option<Arc<AtomicU64>>,
}

impl Pending {
    /// The record, to fill in. `None` only after it was sent.
    pub fn record(&mut self) -> Option<&mut Record> {
        self.record.as_deref_mut()
    }

    /// A counter the request body adds its bytes to.
    pub fn count_bytes_in(&mut self) -> Arc<AtomicU64> {
        self.bytes_in
            .get_or_insert_with(|| Arc::new(AtomicU64::new(0)))
            .clone()
    }

    /// A second record for the same request (a tunnel's close), starting
    /// now, with the first one's facts.
    pub fn fork(&self, edit: impl FnOnce(&mut Record)) -> Option<Pending> {
        let mut record = self.record.as_deref()?.clone();
        edit(&mut record);
        Some(self.auditor.begin(record, Instant::now()))
    }

    pub fn finish(mut self, end: End) {
        self.send(end);
    }

    /// How a record not finished explicitly ended.
    pub fn dropped_end(&self) -> End {
        if self.auditor.is_cut() {
            End::Shutdown
        } else {
            End::ClientGone
        }
    }

    fn send(&mut self, end: End) {
        if let Some(mut record) = self.record.take() {
            record.end = end;
            record.duration = self.started.elapsed();
            if let Some(n) = &self.bytes_in {
                record.bytes_in = n.load(Ordering::Relaxed);
            }
            self.auditor.submit(record);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.record.is_some() {
            let end = self.dropped_end();
            self.send(end);
        }
    }
}
