//! Model answers and token budgets: tokens used by route, model, agent and
//! client app; what each budget was charged, and past its limit; whether
//! the shared budget store answers.

use prometheus::{IntCounter, IntCounterVec, IntGauge};

use super::{Metrics, Register};
use crate::budget::Settled;
use crate::call::Usage;
use crate::model::{ModelObserver, UsageLabels};

pub(super) struct Families {
    tokens: IntCounterVec,
    budget_tokens: IntCounterVec,
    overshoot: IntCounterVec,
    store_up: IntGauge,
    store_errors: IntCounter,
}

impl Families {
    pub(super) fn new(r: &mut Register) -> Result<Self, prometheus::Error> {
        Ok(Self {
            tokens: r.counters(
                "gateway_model_tokens_total",
                "Tokens model answers used (gen_ai.usage.*), by route, model (gen_ai.request.model), registered agent, client app, type (input, output, cached_input, reasoning) and source (reported by the answer, or reserved when it never said).",
                &["route", "model", "agent", "app", "type", "source"],
            )?,
            budget_tokens: r.counters(
                "gateway_budget_tokens_total",
                "Tokens charged to each budget, in its unit (input, output, total or weighted), when answers settle.",
                &["budget"],
            )?,
            overshoot: r.counters(
                "gateway_budget_overshoot_tokens_total",
                "Tokens answers took budgets past their limit beyond what was reserved for them: the overshoot reservation did not prevent.",
                &["budget"],
            )?,
            store_up: r.gauge(
                "gateway_budget_store_up",
                "1 while the budget store answers (always, for the local one), 0 while its commands fail.",
            )?,
            store_errors: r.counter(
                "gateway_budget_store_errors_total",
                "Budget store commands that failed or missed their deadline.",
            )?,
        })
    }
}

impl ModelObserver for Metrics {
    fn tokens(&self, l: &UsageLabels<'_>, usage: &Usage) {
        let source = usage.source.as_str();
        for (kind, n) in [
            ("input", usage.input),
            ("output", usage.output),
            ("cached_input", usage.cached_input),
            ("reasoning", usage.reasoning),
        ] {
            if n > 0 {
                self.model
                    .tokens
                    .with_label_values(&[l.route, l.model, l.agent, l.app, kind, source])
                    .inc_by(n);
            }
        }
    }

    fn settled(&self, s: &Settled) {
        self.model
            .budget_tokens
            .with_label_values(&[&s.budget])
            .inc_by(s.charged);
        if s.overshoot > 0 {
            self.model
                .overshoot
                .with_label_values(&[&s.budget])
                .inc_by(s.overshoot);
        }
    }
}

impl Metrics {
    /// The budget store's state, at scrape time.
    pub fn observe_budget_store(&self, up: bool, errors: u64) {
        self.model.store_up.set(i64::from(up));
        let seen = self.model.store_errors.get();
        self.model.store_errors.inc_by(errors.saturating_sub(seen));
    }
}
