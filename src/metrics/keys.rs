//! Key sources: fetches and their results, the state of each key set, and
//! readiness (which follows from the key sets).

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, GaugeVec, IntCounterVec, IntGaugeVec, Opts};

use super::{Metrics, Register};
use crate::keys::{KeyFetchError, KeyObserver, KeyStatus, RefreshChange};

pub(super) struct Families {
    refreshes: IntCounterVec,
    refresh_suppressed: IntCounterVec,
    set_age: GaugeVec,
    count: IntGaugeVec,
    last_success: GaugeVec,
    failures: IntGaugeVec,
    ready: Gauge,
    /// Key fetches finished, whatever their result: tests await it.
    fetches_done: tokio::sync::watch::Sender<u64>,
}

impl Families {
    pub(super) fn new(r: &mut Register) -> Result<Self, prometheus::Error> {
        let seconds = |r: &mut Register, name: &str, help: &str| {
            r.add(GaugeVec::new(Opts::new(name, help), &["issuer"])?)
        };
        Ok(Self {
            refreshes: r.counters(
                "gateway_key_refreshes_total",
                "Key set fetches by issuer (key source) and result.",
                &["issuer", "result"],
            )?,
            refresh_suppressed: r.counters(
                "gateway_key_refresh_suppressed_total",
                "Unknown-kid refreshes skipped because of the cooldown.",
                &["issuer"],
            )?,
            set_age: seconds(
                r,
                "gateway_key_set_age_seconds",
                "Age of the current key set.",
            )?,
            count: r.gauges(
                "gateway_key_set_keys",
                "Keys in the current key set.",
                &["issuer"],
            )?,
            last_success: seconds(
                r,
                "gateway_key_refresh_last_success_timestamp_seconds",
                "Time of the last successful key fetch.",
            )?,
            failures: r.gauges(
                "gateway_key_refresh_consecutive_failures",
                "Key fetches failed in a row.",
                &["issuer"],
            )?,
            ready: r.add(Gauge::new(
                "gateway_ready",
                "1 when every key source has a usable key set.",
            )?)?,
            fetches_done: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Point-in-time state, at scrape time.
    pub(super) fn observe(&self, keys: &[KeyStatus], is_ready: bool) {
        for k in keys {
            let l = [k.label.as_str()];
            self.count.with_label_values(&l).set(k.key_count as i64);
            if let Some(age) = k.age {
                self.set_age.with_label_values(&l).set(age.as_secs_f64());
            }
            if let Some(t) = k
                .last_success
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            {
                self.last_success.with_label_values(&l).set(t.as_secs_f64());
            }
            self.failures
                .with_label_values(&l)
                .set(i64::from(k.consecutive_failures));
        }
        self.ready.set(if is_ready { 1.0 } else { 0.0 });
    }
}

impl Metrics {
    /// Counts finished key fetches (after `/readyz` shows their result):
    /// tests await it instead of polling.
    pub fn key_fetches_done(&self) -> tokio::sync::watch::Receiver<u64> {
        self.keys.fetches_done.subscribe()
    }
}

impl KeyObserver for Metrics {
    fn refreshed(&self, source: &str, result: Result<RefreshChange, &KeyFetchError>) {
        let label = match result {
            Ok(RefreshChange::Replaced) => "updated",
            Ok(RefreshChange::Unchanged) => "unchanged",
            Err(_) => "error",
        };
        self.keys
            .refreshes
            .with_label_values(&[source, label])
            .inc();
        self.keys.fetches_done.send_modify(|n| *n += 1);
        if result.is_ok() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.keys.last_success.with_label_values(&[source]).set(now);
        }
    }

    fn refresh_suppressed(&self, source: &str) {
        self.keys
            .refresh_suppressed
            .with_label_values(&[source])
            .inc();
    }
}
