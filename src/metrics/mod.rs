//! Prometheus metrics: an owned registry (no global), typed families,
//! methods named for events. Labels are bounded: route names from config,
//! reasons and decisions from enums, key sources from configured tenants.
//! Subjects, paths, tokens and client addresses never become labels.
//!
//! Each file holds one area's families and the events that move them:
//! requests and the upstream here, key sources in `keys.rs`, the audit
//! trail in `audit.rs`, MCP messages in `mcp.rs`.

mod audit;
mod credentials;
mod keys;
mod mcp;
mod model;
mod streams;

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::keys::KeyStatus;

/// Latency buckets from 100 µs (a cached allow) to 10 min (a long stream's
/// first byte from a reasoning model).
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

pub struct Metrics {
    registry: Registry,
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
    policy_results: IntCounterVec,
    connections: IntGaugeVec,
    config_info: IntGaugeVec,
    config_reloads: IntCounterVec,
    keys: keys::Families,
    audit: audit::Families,
    mcp: mcp::Families,
    model: model::Families,
    credentials: credentials::Families,
    streams: streams::Families,
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

/// Registers families as they are made, so a family is named once.
struct Register {
    registry: Registry,
    names: Vec<String>,
}

impl Register {
    fn add<C: Collector + Clone + 'static>(&mut self, family: C) -> Result<C, prometheus::Error> {
        self.names
            .extend(family.desc().iter().map(|d| d.fq_name.clone()));
        self.registry.register(Box::new(family.clone()))?;
        Ok(family)
    }

    fn counter(&mut self, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
        self.add(IntCounter::new(name, help)?)
    }

    fn counters(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    fn gauge(&mut self, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
        self.add(IntGauge::new(name, help)?)
    }

    fn gauges(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn durations(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<HistogramVec, prometheus::Error> {
        let opts = HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec());
        self.add(HistogramVec::new(opts, labels)?)
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let mut r = Register {
            registry: Registry::new(),
            names: Vec::new(),
        };
        let requests = r.counters(
            "gateway_requests_total",
            "Requests by route, decision, reason and identity kind.",
            &["route", "decision", "reason", "kind"],
        )?;
        let request_duration = r.durations(
            "gateway_request_duration_seconds",
            "Time from request to response headers.",
            &["route", "decision"],
        )?;
        let upstream_duration = r.durations(
            "gateway_upstream_duration_seconds",
            "Time from forwarding to upstream response headers.",
            &["route"],
        )?;
        let upstream_responses = r.counters(
            "gateway_upstream_responses_total",
            "Forwarded requests by route and the upstream's status class (2xx, 5xx, ...; none: no answer, the gateway sent 502/504).",
            &["route", "status_class"],
        )?;
        let in_flight = r.gauge("gateway_requests_in_flight", "Requests being handled.")?;
        let cache = r.counters(
            "gateway_token_cache_requests_total",
            "Verified-token cache lookups by result.",
            &["result"],
        )?;
        let cache_entries = r.gauge(
            "gateway_token_cache_entries",
            "Entries in the verified-token cache.",
        )?;
        let policy_results = r.counters(
            "gateway_policy_results_total",
            "Conditional-access policy results, report-only included.",
            &["policy", "result"],
        )?;
        let connections = r.gauges(
            "gateway_open_connections",
            "Open client connections by protocol (http1, http2, websocket).",
            &["protocol"],
        )?;
        for protocol in ["http1", "http2", "websocket"] {
            connections.with_label_values(&[protocol]);
        }
        let config_info = r.gauges(
            "gateway_config_info",
            "The active configuration: its version (digest of the file).",
            &["version"],
        )?;
        let config_reloads = r.counters(
            "gateway_config_reloads_total",
            "Config reloads by result (applied, unchanged, failed).",
            &["result"],
        )?;
        for result in ["applied", "unchanged", "failed"] {
            config_reloads.with_label_values(&[result]);
        }
        r.gauges("gateway_build_info", "Build information.", &["version"])?
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let keys = keys::Families::new(&mut r)?;
        let audit = audit::Families::new(&mut r)?;
        let mcp = mcp::Families::new(&mut r)?;
        let model = model::Families::new(&mut r)?;
        let credentials = credentials::Families::new(&mut r)?;
        let streams = streams::Families::new(&mut r)?;
        Ok(Self {
            registry: r.registry,
            names: r.names,
            cache_hits: cache.with_label_values(&["hit"]),
            cache_misses: cache.with_label_values(&["miss"]),
            requests,
            request_duration,
            upstream_duration,
            upstream_responses,
            in_flight,
            cache_entries,
            policy_results,
            connections,
            config_info,
            config_reloads,
            keys,
            audit,
            mcp,
            model,
            credentials,
            streams,
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
        self.audit.queue_depth.set(audit_queued as i64);
        self.keys.observe(keys, is_ready);
        self.cache_entries.set(cache_entries as i64);
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
