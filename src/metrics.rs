//! Prometheus metrics: an owned registry (no global), typed families,
//! methods named for events. Labels are bounded: route names from config,
//! reasons and decisions from enums, key sources from configured tenants.
//! Subjects, paths, tokens and client addresses never become labels.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::keys::{KeyFetchError, KeyObserver, KeyStatus, RefreshChange};

/// Latency buckets from 100 µs (a cached allow) to 10 min (a long stream's
/// first byte from a reasoning model).
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

pub struct Metrics {
    registry: Registry,
    /// Key fetches finished, whatever their result: tests await it.
    key_fetches_done: tokio::sync::watch::Sender<u64>,
    /// Every family's name, for the docs and the dashboards' drift test.
    names: Vec<String>,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    upstream_responses: IntCounterVec,
    in_flight: IntGauge,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    cache_entries: IntGauge,
    key_refreshes: IntCounterVec,
    key_refresh_suppressed: IntCounterVec,
    key_set_age: GaugeVec,
    key_count: IntGaugeVec,
    key_last_success: GaugeVec,
    key_failures: IntGaugeVec,
    ready: Gauge,
    policy_results: IntCounterVec,
    connections: IntGaugeVec,
    config_info: IntGaugeVec,
    config_reloads: IntCounterVec,
    audit_records: IntCounter,
    audit_queue_depth: IntGauge,
    audit_dropped: IntCounterVec,
    audit_sink_errors: IntCounterVec,
    audit_sink_healthy: IntGauge,
}

/// How a request ended, for the metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionLabel {
    Allow,
    Deny,
    Error,
}

impl DecisionLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::Error => "error",
        }
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "Requests by route, decision, reason and identity kind.",
            ),
            &["route", "decision", "reason", "kind"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time from request to response headers.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "decision"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_upstream_duration_seconds",
                "Time from forwarding to upstream response headers.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_responses = IntCounterVec::new(
            Opts::new(
                "gateway_upstream_responses_total",
                "Forwarded requests by route and the upstream's status class (2xx, 5xx, ...; none: no answer, the gateway sent 502/504).",
            ),
            &["route", "status_class"],
        )?;
        let in_flight = IntGauge::new("gateway_requests_in_flight", "Requests being handled.")?;
        let cache = IntCounterVec::new(
            Opts::new(
                "gateway_token_cache_requests_total",
                "Verified-token cache lookups by result.",
            ),
            &["result"],
        )?;
        let cache_entries = IntGauge::new(
            "gateway_token_cache_entries",
            "Entries in the verified-token cache.",
        )?;
        let key_refreshes = IntCounterVec::new(
            Opts::new(
                "gateway_key_refreshes_total",
                "Key set fetches by issuer (key source) and result.",
            ),
            &["issuer", "result"],
        )?;
        let key_refresh_suppressed = IntCounterVec::new(
            Opts::new(
                "gateway_key_refresh_suppressed_total",
                "Unknown-kid refreshes skipped because of the cooldown.",
            ),
            &["issuer"],
        )?;
        let key_set_age = GaugeVec::new(
            Opts::new("gateway_key_set_age_seconds", "Age of the current key set."),
            &["issuer"],
        )?;
        let key_count = IntGaugeVec::new(
            Opts::new("gateway_key_set_keys", "Keys in the current key set."),
            &["issuer"],
        )?;
        let key_last_success = GaugeVec::new(
            Opts::new(
                "gateway_key_refresh_last_success_timestamp_seconds",
                "Time of the last successful key fetch.",
            ),
            &["issuer"],
        )?;
        let key_failures = IntGaugeVec::new(
            Opts::new(
                "gateway_key_refresh_consecutive_failures",
                "Key fetches failed in a row.",
            ),
            &["issuer"],
        )?;
        let ready = Gauge::new(
            "gateway_ready",
            "1 when every key source has a usable key set.",
        )?;
        let policy_results = IntCounterVec::new(
            Opts::new(
                "gateway_policy_results_total",
                "Conditional-access policy results, report-only included.",
            ),
            &["policy", "result"],
        )?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "gateway_open_connections",
                "Open client connections by protocol (http1, http2, websocket).",
            ),
            &["protocol"],
        )?;
        let config_info = IntGaugeVec::new(
            Opts::new(
                "gateway_config_info",
                "The active configuration: its version (digest of the file).",
            ),
            &["version"],
        )?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "gateway_config_reloads_total",
                "Config reloads by result (applied, unchanged, failed).",
            ),
            &["result"],
        )?;
        for result in ["applied", "unchanged", "failed"] {
            config_reloads.with_label_values(&[result]);
        }
        let audit_records = IntCounter::new(
            "gateway_audit_records_total",
            "Audit records written to the sink.",
        )?;
        let audit_queue_depth = IntGauge::new(
            "gateway_audit_queue_depth",
            "Audit records accepted and not yet written.",
        )?;
        let audit_dropped = IntCounterVec::new(
            Opts::new(
                "gateway_audit_records_dropped_total",
                "Audit records not written, by reason (queue_full, sink_error).",
            ),
            &["reason"],
        )?;
        let audit_sink_errors = IntCounterVec::new(
            Opts::new(
                "gateway_audit_sink_errors_total",
                "Failed writes to an audit sink.",
            ),
            &["sink"],
        )?;
        let audit_sink_healthy = IntGauge::new(
            "gateway_audit_sink_healthy",
            "1 while the last audit write succeeded (or audit is off).",
        )?;
        audit_sink_healthy.set(1);
        let build = IntGaugeVec::new(
            Opts::new("gateway_build_info", "Build information."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let mut names = Vec::new();
        for protocol in ["http1", "http2", "websocket"] {
            connections.with_label_values(&[protocol]);
        }
        for reason in ["queue_full", "sink_error"] {
            audit_dropped.with_label_values(&[reason]);
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_responses.clone()),
            Box::new(in_flight.clone()),
            Box::new(cache.clone()),
            Box::new(cache_entries.clone()),
            Box::new(key_refreshes.clone()),
            Box::new(key_refresh_suppressed.clone()),
            Box::new(key_set_age.clone()),
            Box::new(key_count.clone()),
            Box::new(key_last_success.clone()),
            Box::new(key_failures.clone()),
            Box::new(ready.clone()),
            Box::new(policy_results.clone()),
            Box::new(connections.clone()),
            Box::new(config_info.clone()),
            Box::new(config_reloads.clone()),
            Box::new(audit_records.clone()),
            Box::new(audit_queue_depth.clone()),
            Box::new(audit_dropped.clone()),
            Box::new(audit_sink_errors.clone()),
            Box::new(audit_sink_healthy.clone()),
            Box::new(build),
        ] {
            names.extend(c.desc().iter().map(|d| d.fq_name.clone()));
            registry.register(c)?;
        }
        Ok(Self {
            key_fetches_done: tokio::sync::watch::Sender::new(0),
            registry,
            names,
            cache_hits: cache.with_label_values(&["hit"]),
            cache_misses: cache.with_label_values(&["miss"]),
            requests,
            request_duration,
            upstream_duration,
            upstream_responses,
            in_flight,
            cache_entries,
            key_refreshes,
            key_refresh_suppressed,
            key_set_age,
            key_count,
            key_last_success,
            key_failures,
            ready,
            policy_results,
            connections,
            config_info,
            config_reloads,
            audit_records,
            audit_queue_depth,
            audit_dropped,
            audit_sink_errors,
            audit_sink_healthy,
        })
    }

    /// One finished request (response headers sent or refused). `kind` is
    /// the identity kind, or `none` without a verified token.
    pub fn request(
        &self,
        route: &str,
        decision: DecisionLabel,
        reason: &str,
        kind: &str,
        elapsed: Duration,
    ) {
        self.requests
            .with_label_values(&[route, decision.as_str(), reason, kind])
            .inc();
        self.request_duration
            .with_label_values(&[route, decision.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    pub fn upstream_answered(&self, route: &str, status: http::StatusCode, elapsed: Duration) {
        self.upstream_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        let class = match status.as_u16() {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        self.upstream_responses
            .with_label_values(&[route, class])
            .inc();
    }

    /// The upstream did not answer (connect error, timeout, protocol error).
    pub fn upstream_failed(&self, route: &str) {
        self.upstream_responses
            .with_label_values(&[route, "none"])
            .inc();
    }

    /// One policy's result on one request (`policy` is a configured name).
    pub fn policy_result(&self, policy: &str, result: &str) {
        self.policy_results
            .with_label_values(&[policy, result])
            .inc();
    }

    /// An open connection of `protocol`; the gauge goes down when the
    /// returned guard drops.
    pub fn connection(&self, protocol: &'static str) -> OpenConnection {
        let gauge = self.connections.with_label_values(&[protocol]);
        gauge.inc();
        OpenConnection(gauge)
    }

    pub fn set_config_version(&self, version: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[version]).set(1);
    }

    pub fn config_reload(&self, result: &str) {
        self.config_reloads.with_label_values(&[result]).inc();
    }

    pub fn audit_written(&self, n: u64) {
        self.audit_records.inc_by(n);
    }

    pub fn audit_dropped(&self, reason: &str) {
        self.audit_dropped.with_label_values(&[reason]).inc();
    }

    pub fn audit_sink_error(&self, sink: &str) {
        self.audit_sink_errors.with_label_values(&[sink]).inc();
    }

    pub fn audit_sink_healthy(&self, healthy: bool) {
        self.audit_sink_healthy.set(i64::from(healthy));
    }

    pub fn in_flight(&self) -> &IntGauge {
        &self.in_flight
    }

    pub fn token_cache(&self, hit: bool) {
        if hit {
            self.cache_hits.inc()
        } else {
            self.cache_misses.inc()
        }
    }

    /// Called at scrape time with point-in-time state.
    pub fn observe_state(
        &self,
        keys: &[KeyStatus],
        cache_entries: u64,
        is_ready: bool,
        audit_queued: usize,
    ) {
        self.audit_queue_depth.set(audit_queued as i64);
        for k in keys {
            let l = [k.label.as_str()];
            self.key_count.with_label_values(&l).set(k.key_count as i64);
            if let Some(age) = k.age {
                self.key_set_age
                    .with_label_values(&l)
                    .set(age.as_secs_f64());
            }
            if let Some(t) = k
                .last_success
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            {
                self.key_last_success
                    .with_label_values(&l)
                    .set(t.as_secs_f64());
            }
            self.key_failures
                .with_label_values(&l)
                .set(i64::from(k.consecutive_failures));
        }
        self.cache_entries.set(cache_entries as i64);
        self.ready.set(if is_ready { 1.0 } else { 0.0 });
    }

    /// The name of every metric family.
    pub fn family_names(&self) -> &[String] {
        &self.names
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl Metrics {
    /// Counts finished key fetches (after `/readyz` shows their result):
    /// tests await it instead of polling.
    pub fn key_fetches_done(&self) -> tokio::sync::watch::Receiver<u64> {
        self.key_fetches_done.subscribe()
    }
}

impl KeyObserver for Metrics {
    fn refreshed(&self, source: &str, result: Result<RefreshChange, &KeyFetchError>) {
        let label = match result {
            Ok(RefreshChange::Replaced) => "updated",
            Ok(RefreshChange::Unchanged) => "unchanged",
            Err(_) => "error",
        };
        self.key_refreshes.with_label_values(&[source, label]).inc();
        self.key_fetches_done.send_modify(|n| *n += 1);
        if result.is_ok() {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.key_last_success.with_label_values(&[source]).set(now);
        }
    }

    fn refresh_suppressed(&self, source: &str) {
        self.key_refresh_suppressed
            .with_label_values(&[source])
            .inc();
    }
}

/// Keeps one connection counted in `gateway_open_connections`.
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `gateway_*` name in `text`, histogram suffixes folded into
    /// their family.
    fn referenced(text: &str, families: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        for (at, _) in text.match_indices("gateway_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| families.iter().any(|n| n == f))
                })
                .map_or(name.clone(), str::to_owned);
            out.push(family);
        }
        out
    }

    #[test]
    fn docs_dashboards_and_alerts_name_only_metrics_that_exist() {
        let m = Metrics::new().unwrap();
        let families = m.family_names();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let reference = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
        for file in [
            "README.md",
            "docs/operations.md",
            "docs/forwarding.md",
            "docs/audit.md",
            "docs/entra.md",
            "docs/policy.md",
            "deploy/prometheus/alerts.yml",
            "deploy/grafana/portcullis.json",
        ] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            for name in referenced(&text, families) {
                assert!(
                    families.contains(&name),
                    "{file} names {name}, which the gateway does not export"
                );
            }
        }
        for name in families {
            assert!(
                reference.contains(&format!("`{name}`")),
                "docs/operations.md does not document {name}"
            );
        }
    }
}
