//! Token budgets: which budgets a model request meets, reserving its
//! estimate in each at admission, and settling them from the usage its
//! answer reports.
//!
//! A budget keeps one counter per key (parts of the verified identity and
//! the request, never a header or an address) and window (fixed, UTC).
//! Admission reserves the request's estimate in every budget that applies,
//! all or none, so concurrent requests cannot together pass a limit; the
//! answer settles each reservation to what was used. What a budget can
//! still be overspent by is what answers use beyond their reservation:
//! with output capped by the request, only a prompt that tokenizes to more
//! than its estimate. Limits act at admission only: an admitted answer is
//! never cut.

mod local;
mod redis;
mod window;

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::Arc;
use std::time::SystemTime;

use wildmatch::WildMatch;

use crate::call::Usage;
use crate::config::{BudgetConfig, BudgetKey, BudgetPeriod, TokenCount};
use crate::policy::{PolicyOutcome, PolicyResult};
use crate::rejection::Rejection;
use crate::token::VerifiedClaims;

pub use local::LocalCounters;
pub use redis::RedisStore;
pub use window::Window;

/// The budgets of one config generation, and where their counters are.
pub struct Budgets {
    budgets: Vec<Budget>,
    /// What a reservation needs of each budget to settle, shared by all.
    views: Arc<[BudgetView]>,
    store: Arc<Store>,
}

struct Budget {
    name: Arc<str>,
    /// `budget:<name>`, as its outcome is recorded.
    outcome: Arc<str>,
    key: Vec<BudgetKey>,
    tokens: u64,
    period: BudgetPeriod,
    count: TokenCount,
    routes: Option<Vec<String>>,
    models: Option<Vec<WildMatch>>,
    kinds: Option<Vec<String>>,
    report_only: bool,
}

/// Where the counters live: this process, or Redis for a fleet.
pub enum Store {
    Local(LocalCounters),
    Redis(Box<RedisStore>),
}

/// One counter a request reserves in.
#[derive(Debug, Clone)]
pub struct Counter {
    /// Budget, key and window, e.g. `agent-tpm:<tid>:<agent>:29412345`.
    pub key: String,
    /// Where the window's id starts in `key`.
    base_len: usize,
    pub period: BudgetPeriod,
    pub window: Window,
    pub limit: u64,
    /// What the request reserves in it.
    pub reserve: u64,
    /// Refused when it has no room; report-only budgets always count.
    pub enforce: bool,
}

impl Counter {
    /// Where a settlement of `delta` goes at `now`: this counter while its
    /// window lasts; once it has ended, an excess goes to the current
    /// window (what was used is charged), and a refund nowhere.
    pub fn settle_into(&self, delta: i64, now: SystemTime) -> Option<(Cow<'_, str>, Window)> {
        let current = Window::of(self.period, now);
        if current == self.window {
            return Some((Cow::Borrowed(&self.key), self.window));
        }
        (delta > 0).then(|| {
            let key = format!("{}:{}", &self.key[..self.base_len], current.id);
            (Cow::Owned(key), current)
        })
    }
}

/// What the store answered a reservation.
#[derive(Debug, PartialEq, Eq)]
pub enum Reserved {
    /// Reserved in every counter: each one's total afterwards.
    Taken(Vec<u64>),
    /// The counter at this index had no room (it holds `used`): nothing
    /// was reserved anywhere.
    Full { index: usize, used: u64 },
}

/// The store could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("budget store unreachable: {0}")]
pub struct StoreError(pub String);

/// What a request reserves for: its prompt's estimate and its output cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    pub input: u64,
    pub output: u64,
}

/// Who asks, for what: what budgets apply and key on.
pub struct Asking<'a> {
    pub claims: Option<&'a VerifiedClaims>,
    pub route: &'a str,
    pub model: Option<&'a str>,
}

/// A request's reservations: settled by its answer, or given back if the
/// request is never answered.
pub struct Reservation {
    store: Arc<Store>,
    /// Budget index, counter, and what was reserved in it.
    held: Vec<(usize, Counter)>,
    budgets: Arc<[BudgetView]>,
    /// Reserved in this replica's counters while the shared store was down.
    fallback: bool,
    settled: bool,
}

/// What a settled counter needs of its budget.
#[derive(Debug)]
struct BudgetView {
    name: Arc<str>,
    count: TokenCount,
    limit: u64,
}

/// An admitted request's budgets: the reservation to settle, what is left
/// in the tightest enforced one, and the report-only results.
pub struct Admitted {
    pub reservation: Option<Reservation>,
    pub remaining: Option<u64>,
    pub outcomes: Vec<PolicyOutcome>,
}

impl Budgets {
    pub fn compile(budgets: &[BudgetConfig], store: Arc<Store>) -> Self {
        let views = budgets
            .iter()
            .map(|b| BudgetView {
                name: Arc::from(b.name.as_str()),
                count: b.count,
                limit: b.tokens,
            })
            .collect();
        let budgets = budgets
            .iter()
            .map(|b| Budget {
                name: Arc::from(b.name.as_str()),
                outcome: Arc::from(format!("budget:{}", b.name)),
                key: b.key.clone(),
                tokens: b.tokens,
                period: b.period,
                count: b.count,
                routes: b.routes.clone(),
                models: b.models.as_ref().map(|ms| {
                    ms.iter()
                        .map(|m| WildMatch::new(&m.to_ascii_lowercase()))
                        .collect()
                }),
                kinds: b.kinds.clone(),
                report_only: b.report_only,
            })
            .collect();
        Self {
            budgets,
            views,
            store,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The counters `asking` reserves `estimate` in, now; with the index
    /// of each one's budget.
    pub fn counters(
        &self,
        asking: &Asking<'_>,
        estimate: Estimate,
        now: SystemTime,
    ) -> Vec<(usize, Counter)> {
        self.budgets
            .iter()
            .enumerate()
            .filter(|(_, b)| b.applies(asking))
            .filter_map(|(i, b)| {
                let mut key = b.counter_key(asking)?;
                let window = Window::of(b.period, now);
                let base_len = key.len();
                let _ = write!(key, ":{}", window.id);
                Some((
                    i,
                    Counter {
                        key,
                        base_len,
                        period: b.period,
                        window,
                        limit: b.tokens,
                        reserve: reserve_units(b.count, estimate),
                        enforce: !b.report_only,
                    },
                ))
            })
            .collect()
    }

    /// Reserves `estimate` in every budget that applies: refused when an
    /// enforced one has no room (nothing is reserved then).
    pub async fn admit(
        &self,
        asking: &Asking<'_>,
        estimate: Estimate,
        now: SystemTime,
    ) -> Result<Admitted, (Rejection, Vec<PolicyOutcome>)> {
        let held = self.counters(asking, estimate, now);
        if held.is_empty() {
            return Ok(Admitted {
                reservation: None,
                remaining: None,
                outcomes: Vec::new(),
            });
        }
        let counters: Vec<Counter> = held.iter().map(|(_, c)| c.clone()).collect();
        let (reserved, fallback) = match self.store.reserve(&counters, now).await {
            Ok(r) => r,
            Err(Unavailable::Deny) => return Err((Rejection::StoreUnavailable, Vec::new())),
            Err(Unavailable::Allow) => {
                return Ok(Admitted {
                    reservation: None,
                    remaining: None,
                    outcomes: Vec::new(),
                });
            }
        };
        let outcome = |i: usize, ok: bool| {
            let b = &self.budgets[i];
            PolicyOutcome {
                policy: b.outcome.clone(),
                result: match (b.report_only, ok) {
                    (false, true) => PolicyResult::Success,
                    (false, false) => PolicyResult::Failure,
                    (true, true) => PolicyResult::ReportOnlySuccess,
                    (true, false) => PolicyResult::ReportOnlyFailure,
                },
            }
        };
        match reserved {
            Reserved::Full { index, .. } => {
                let (budget, counter) = &held[index];
                let b = &self.budgets[*budget];
                let outcomes = held
                    .iter()
                    .enumerate()
                    .map(|(j, (i, _))| outcome(*i, j != index))
                    .collect();
                let rejection = Rejection::BudgetExceeded {
                    budget: b.name.clone(),
                    quota: b.period != BudgetPeriod::Minute,
                    retry_after_secs: counter.window.seconds_left(now),
                };
                Err((rejection, outcomes))
            }
            Reserved::Taken(totals) => {
                let outcomes = held
                    .iter()
                    .zip(&totals)
                    .map(|((i, c), total)| outcome(*i, *total <= c.limit))
                    .collect();
                let remaining = held
                    .iter()
                    .zip(&totals)
                    .filter(|((_, c), _)| c.enforce)
                    .map(|((_, c), total)| c.limit.saturating_sub(*total))
                    .min();
                Ok(Admitted {
                    reservation: Some(Reservation {
                        store: self.store.clone(),
                        held,
                        budgets: self.views.clone(),
                        fallback,
                        settled: false,
                    }),
                    remaining,
                    outcomes,
                })
            }
        }
    }

    /// The budgets that apply to `asking`, by name, with their counters'
    /// state (for `explain`).
    pub async fn state(
        &self,
        asking: &Asking<'_>,
        now: SystemTime,
    ) -> Vec<(Arc<str>, Counter, Option<u64>)> {
        let none = Estimate {
            input: 0,
            output: 0,
        };
        let mut out = Vec::new();
        for (i, c) in self.counters(asking, none, now) {
            let used = self.store.used(&c.key).await;
            out.push((self.budgets[i].name.clone(), c, used));
        }
        out
    }
}

impl Budget {
    fn applies(&self, a: &Asking<'_>) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|rs| rs.iter().any(|r| r == a.route))
            && self
                .models
                .as_ref()
                .is_none_or(|ms| a.model.is_some_and(|m| ms.iter().any(|w| w.matches(m))))
            && self.kinds.as_ref().is_none_or(|ks| {
                a.claims
                    .is_some_and(|c| ks.iter().any(|k| k == c.kind().as_str()))
            })
    }

    /// The counter's key without its window: `None` when the caller lacks
    /// a part of it (a budget per agent does not count users).
    fn counter_key(&self, a: &Asking<'_>) -> Option<String> {
        let mut key = String::with_capacity(64);
        escape_into(&mut key, &self.name);
        for part in &self.key {
            let value = match part {
                BudgetKey::Tenant => a.claims?.tid()?,
                BudgetKey::Principal => a.claims?.principal()?,
                BudgetKey::ClientApp => a.claims?.client_app()?,
                BudgetKey::Agent => a.claims?.agent_id()?,
                BudgetKey::Blueprint => a.claims?.blueprint()?,
                BudgetKey::Kind => a.claims?.kind().as_str(),
                BudgetKey::Route => a.route,
                BudgetKey::Model => a.model?,
            };
            key.push(':');
            escape_into(&mut key, value);
        }
        Some(key)
    }
}

/// `value` with `%` and `:` escaped, so that a key's parts cannot run into
/// each other (`a:b` + `c` is not `a` + `b:c`).
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '%' => out.push_str("%25"),
            ':' => out.push_str("%3A"),
            c => out.push(c),
        }
    }
}

/// Tokens in a budget's unit.
fn units(count: TokenCount, input: u64, output: u64, cached: u64, reasoning: u64) -> u64 {
    match count {
        TokenCount::Input => input,
        TokenCount::Output => output,
        TokenCount::Total => input.saturating_add(output),
        TokenCount::Weighted(w) => {
            let cached = cached.min(input);
            let reasoning = reasoning.min(output);
            let weighted = (input - cached) as f64 * w.input
                + cached as f64 * w.cached_input
                + (output - reasoning) as f64 * w.output
                + reasoning as f64 * w.reasoning;
            weighted.ceil() as u64
        }
    }
}

/// The most a reservation can be in a weighted budget: every input token
/// at the dearer input weight, every output token at the dearer output one.
fn reserve_units(count: TokenCount, estimate: Estimate) -> u64 {
    match count {
        TokenCount::Weighted(w) => {
            let input = w.input.max(w.cached_input);
            let output = w.output.max(w.reasoning);
            (estimate.input as f64 * input + estimate.output as f64 * output).ceil() as u64
        }
        other => units(other, estimate.input, estimate.output, 0, 0),
    }
}

/// How a store failure was met, when it was not met with local counters.
pub enum Unavailable {
    Deny,
    Allow,
}

impl Store {
    /// Reserves in every counter or none; `true` with it when a shared
    /// store was down and this replica counted instead.
    async fn reserve(
        &self,
        counters: &[Counter],
        now: SystemTime,
    ) -> Result<(Reserved, bool), Unavailable> {
        match self {
            Self::Local(l) => Ok((l.reserve(counters, now), false)),
            Self::Redis(r) => r.reserve(counters, now).await,
        }
    }

    async fn settle(
        &self,
        counter: &Counter,
        delta: i64,
        now: SystemTime,
        fallback: bool,
    ) -> Option<u64> {
        match self {
            Self::Local(l) => l.settle(counter, delta, now),
            Self::Redis(r) => r.settle(counter, delta, now, fallback).await,
        }
    }

    /// What a shared store holds for `key`; `None` for the local store
    /// (another process's counters) or a store that did not answer.
    async fn used(&self, key: &str) -> Option<u64> {
        match self {
            Self::Local(_) => None,
            Self::Redis(r) => r.used(key).await,
        }
    }

    /// Whether the store answers (the local one always does).
    pub fn is_up(&self) -> bool {
        match self {
            Self::Local(_) => true,
            Self::Redis(r) => r.is_up(),
        }
    }

    /// Whether a shared store answers now; `None` for the local one.
    pub async fn ping(&self) -> Option<bool> {
        match self {
            Self::Local(_) => None,
            Self::Redis(r) => Some(r.ping().await),
        }
    }

    /// Commands that failed (none, for the local store).
    pub fn errors(&self) -> u64 {
        match self {
            Self::Local(_) => 0,
            Self::Redis(r) => r.errors(),
        }
    }

    /// Whether requests are refused while it is down.
    pub fn denies_when_down(&self) -> bool {
        match self {
            Self::Local(_) => false,
            Self::Redis(r) => r.denies_when_down(),
        }
    }
}

/// What settling one reservation did to one budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub budget: Arc<str>,
    /// Tokens charged, in the budget's unit.
    pub charged: u64,
    /// How far this answer took the counter past its limit (beyond where
    /// it already was): the overshoot the reservation did not prevent.
    pub overshoot: u64,
}

impl Reservation {
    /// Settles every counter to what `usage` says was used, then tells
    /// `done` what each budget was charged: at once for counters in this
    /// process, from a task for a shared store (the answer has gone out;
    /// a store failure is logged, not returned).
    pub fn settle<F>(mut self, usage: &Usage, now: SystemTime, done: F)
    where
        F: FnOnce(Vec<Settled>) + Send + 'static,
    {
        self.settled = true;
        let budgets = self.budgets.clone();
        let charges: Vec<(usize, Counter, u64)> = std::mem::take(&mut self.held)
            .into_iter()
            .map(|(i, counter)| {
                let b = &budgets[i];
                let charged = units(
                    b.count,
                    usage.input,
                    usage.output,
                    usage.cached_input,
                    usage.reasoning,
                );
                (i, counter, charged)
            })
            .collect();
        let settled = move |i: usize, counter: &Counter, charged: u64, total: Option<u64>| {
            let b = &budgets[i];
            let delta = charged.saturating_sub(counter.reserve);
            Settled {
                budget: b.name.clone(),
                charged,
                overshoot: match total {
                    Some(total) if delta > 0 && total > b.limit => (total - b.limit).min(delta),
                    _ => 0,
                },
            }
        };
        let delta = |counter: &Counter, charged: u64| charged as i64 - counter.reserve as i64;
        match &*self.store {
            Store::Local(l) => {
                let out = charges
                    .iter()
                    .map(|(i, c, charged)| {
                        let total = l.settle(c, delta(c, *charged), now);
                        settled(*i, c, *charged, total)
                    })
                    .collect();
                done(out);
            }
            Store::Redis(_) => {
                let (store, fallback) = (self.store.clone(), self.fallback);
                let Ok(handle) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                handle.spawn(async move {
                    let mut out = Vec::with_capacity(charges.len());
                    for (i, c, charged) in &charges {
                        let d = delta(c, *charged);
                        let total = match d {
                            0 => None,
                            d => store.settle(c, d, now, fallback).await,
                        };
                        out.push(settled(*i, c, *charged, total));
                    }
                    done(out);
                });
            }
        }
    }
}

impl Estimate {
    /// As usage: the charge of an answer that never said what it used.
    pub fn as_usage(self) -> Usage {
        Usage {
            input: self.input,
            output: self.output,
            source: crate::call::UsageSource::Reserved,
            ..Usage::default()
        }
    }
}

impl Drop for Reservation {
    /// A request refused after it reserved, or whose answer never came,
    /// gives its reservation back.
    fn drop(&mut self) {
        if self.settled || self.held.is_empty() {
            return;
        }
        let now = SystemTime::now();
        let held = std::mem::take(&mut self.held);
        let fallback = self.fallback;
        let give_back = |counter: &Counter| -(counter.reserve as i64);
        match &*self.store {
            Store::Local(l) => {
                for (_, counter) in &held {
                    l.settle(counter, give_back(counter), now);
                }
            }
            Store::Redis(_) => {
                let store = self.store.clone();
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move {
                        for (_, counter) in &held {
                            store
                                .settle(counter, give_back(counter), now, fallback)
                                .await;
                        }
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
