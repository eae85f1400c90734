//! Logging: a `tracing` subscriber in text or JSON, its level from the
//! config unless `PORTCULLIS_LOG` overrides it.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LoggingConfig;

/// Installs the global subscriber once; later calls are no-ops (tests).
pub fn init(cfg: &LoggingConfig) {
    let filter = std::env::var("PORTCULLIS_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_new(&cfg.level).unwrap_or_else(|_| EnvFilter::new("info"))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if cfg.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// An error with its whole `source()` chain, for log lines.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Whether `T` is anywhere in `e`'s chain of sources.
pub fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    any_cause(e, |err| err.is::<T>())
}

/// Whether `e` or any error in its chain of sources is what `matches` asks.
pub fn any_cause(
    e: &(dyn std::error::Error + 'static),
    matches: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if matches(err) {
            return true;
        }
        cur = err.source();
    }
    false
}
