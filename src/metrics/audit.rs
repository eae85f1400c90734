//! The audit trail: records written, queued, dropped, and the sink's health.

use prometheus::{IntCounter, IntCounterVec, IntGauge};

use super::{Metrics, Register};

pub(super) struct Families {
    records: IntCounter,
    pub(super) queue_depth: IntGauge,
    dropped: IntCounterVec,
    sink_errors: IntCounterVec,
    sink_healthy: IntGauge,
}

impl Families {
    pub(super) fn new(r: &mut Register) -> Result<Self, prometheus::Error> {
        let dropped = r.counters(
            "gateway_audit_records_dropped_total",
            "Audit records not written, by reason (queue_full, sink_error).",
            &["reason"],
        )?;
        for reason in ["queue_full", "sink_error"] {
            dropped.with_label_values(&[reason]);
        }
        let sink_healthy = r.gauge(
            "gateway_audit_sink_healthy",
            "1 while the last audit write succeeded (or audit is off).",
        )?;
        sink_healthy.set(1);
        Ok(Self {
            records: r.counter(
                "gateway_audit_records_total",
                "Audit records written to the sink.",
            )?,
            queue_depth: r.gauge(
                "gateway_audit_queue_depth",
                "Audit records accepted and not yet written.",
            )?,
            dropped,
            sink_errors: r.counters(
                "gateway_audit_sink_errors_total",
                "Failed writes to an audit sink.",
                &["sink"],
            )?,
            sink_healthy,
        })
    }
}

impl Metrics {
    pub fn audit_written(&self, n: u64) {
        self.audit.records.inc_by(n);
    }

    pub fn audit_dropped(&self, reason: &str) {
        self.audit.dropped.with_label_values(&[reason]).inc();
    }

    pub fn audit_sink_error(&self, sink: &str) {
        self.audit.sink_errors.with_label_values(&[sink]).inc();
    }

    pub fn audit_sink_healthy(&self, healthy: bool) {
        self.audit.sink_healthy.set(i64::from(healthy));
    }
}
