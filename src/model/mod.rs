//! Model APIs (Azure OpenAI deployments, the OpenAI v1 API): the one
//! effective model of each request, decided on and budgeted; the usage its
//! answer reports, metered as it streams.

mod inspect;
mod meter;
pub mod request;
pub mod usage;

pub use inspect::ModelInspector;

use crate::budget::Settled;
use crate::call::Usage;

/// Who is told what model answers used (the metrics).
pub trait ModelObserver: Send + Sync {
    /// An answer ended, having used `usage`.
    fn tokens(&self, _labels: &UsageLabels<'_>, _usage: &Usage) {}
    /// A reservation was settled.
    fn settled(&self, _settled: &Settled) {}
}

/// What an answer's tokens are counted by.
pub struct UsageLabels<'a> {
    pub route: &'a str,
    pub model: &'a str,
    /// The registered agent's name, or `none`.
    pub agent: &'a str,
    /// The client application (`azp`), or `none`.
    pub app: &'a str,
}
