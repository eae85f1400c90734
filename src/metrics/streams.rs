//! Open exchanges under watch (streams, tunnels, bodies in flight) and
//! those the gateway ended because their access ended.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge};

use super::{Metrics, Register};

pub(super) struct Families {
    open: IntGauge,
    ended: IntCounterVec,
    sweeps: HistogramVec,
}

impl Families {
    pub(super) fn new(r: &mut Register) -> Result<Self, prometheus::Error> {
        let opts = HistogramOpts::new(
            "gateway_stream_sweep_seconds",
            "Time to decide every open exchange again after a change, by trigger (revocation, reload).",
        )
        .buckets(vec![0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0]);
        Ok(Self {
            open: r.gauge(
                "gateway_streams_open",
                "Forwarded exchanges open now, each watched for the end of its access.",
            )?,
            ended: r.counters(
                "gateway_streams_terminated_total",
                "Exchanges the gateway ended because their access ended, by route and reason (token_expired, agent_expired, max_duration, or the refusal a new request would get: revoked, agent_disabled, ...).",
                &["route", "reason"],
            )?,
            sweeps: r.add(HistogramVec::new(opts, &["trigger"])?)?,
        })
    }
}

impl Metrics {
    pub fn streams_open(&self) -> &IntGauge {
        &self.streams.open
    }

    pub fn stream_terminated(&self, route: &str, reason: &str) {
        self.streams.ended.with_label_values(&[route, reason]).inc();
    }

    pub fn stream_sweep(&self, trigger: &str, seconds: f64) {
        self.streams
            .sweeps
            .with_label_values(&[trigger])
            .observe(seconds);
    }
}
