//! Signing keys: one [`KeySource`] per key endpoint (an OIDC issuer, or one
//! Entra tenant in one token version). It owns the current [`KeySet`], the
//! periodic refresh, and the on-demand refresh for an unknown `kid`, which is
//! single-flight and rate-limited, then negatively cached, so a flood of
//! random `kid`s causes at most one fetch per cooldown.
//!
//! A failed fetch keeps the last good set; a set older than the staleness
//! bound is dropped and lookups answer [`KeyLookup::Unavailable`] (503),
//! never "accept anything". Token verification lives in `token/`.

mod fetch;
pub mod jwks;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use http::Uri;
use tokio::sync::watch;

pub use fetch::{Fetcher, KeyFetchError, MAX_DOCUMENT_BYTES};
pub use jwks::{KeySet, VerifyKey};

use crate::config::KeyFetchConfig;

/// Most unknown `kid`s remembered between refreshes; past it, the cooldown
/// alone still bounds fetches.
const NEGATIVE_CACHE_LIMIT: usize = 4096;
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Where a source's keys come from.
#[derive(Debug, Clone)]
pub enum KeyEndpoint {
    /// A discovery document that must name `issuer`; its `jwks_uri` is used.
    Discovery {
        url: Uri,
        issuer: String,
    },
    Jwks(Uri),
}

/// The outcome of looking up a `kid`.
pub enum KeyLookup {
    Found(Arc<VerifyKey>),
    /// Not in the current set, even after the refresh we were allowed.
    Unknown,
    /// No key set, or only one older than the staleness bound.
    Unavailable,
}

/// Told about every fetch and every refresh skipped by the cooldown, so
/// metrics can count them without this module knowing about metrics.
pub trait KeyObserver: Send + Sync {
    fn refreshed(&self, source: &str, result: Result<RefreshChange, &KeyFetchError>);
    fn refresh_suppressed(&self, source: &str);
}

/// What a successful refresh did to the key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshChange {
    /// First set, or a set with other keys than before.
    Replaced,
    /// Same keys as before; only freshness was renewed.
    Unchanged,
}

/// A point-in-time view for `/readyz` and the metrics scrape.
#[derive(Debug, Clone)]
pub struct KeyStatus {
    pub label: String,
    pub key_count: usize,
    pub age: Option<Duration>,
    pub last_success: Option<SystemTime>,
    pub consecutive_failures: u32,
    /// Why the last refresh failed, until one succeeds.
    pub last_error: Option<String>,
    pub is_usable: bool,
}

#[derive(Default)]
struct RefreshState {
    last_on_demand: Option<Instant>,
    /// The last fetch a request asked for while no usable set was loaded.
    last_while_missing: Option<Instant>,
    negative: HashSet<String>,
    consecutive_failures: u32,
    last_success: Option<SystemTime>,
    last_error: Option<String>,
}

/// The keys of one endpoint, refreshed in the background and on demand.
pub struct KeySource {
    label: String,
    endpoint: KeyEndpoint,
    settings: KeyFetchConfig,
    fetcher: Fetcher,
    current: ArcSwapOption<KeySet>,
    /// Serializes fetches: concurrent misses share one.
    fetch_lock: tokio::sync::Mutex<()>,
    /// Tiny critical sections only (never held across `.await`).
    state: Mutex<RefreshState>,
    /// Bumped whenever this source's keys change, so verified-token cache
    /// entries made with an older set are ignored.
    generation: AtomicU64,
    observer: Arc<dyn KeyObserver>,
    loaded: watch::Sender<bool>,
    /// Cancelled when a reload drops this source: its refresh loop ends.
    retired: tokio_util::sync::CancellationToken,
}

impl KeySource {
    pub fn new(
        label: String,
        endpoint: KeyEndpoint,
        settings: KeyFetchConfig,
        fetcher: Fetcher,
        observer: Arc<dyn KeyObserver>,
    ) -> Self {
        Self {
            label,
            endpoint,
            settings,
            fetcher,
            generation: AtomicU64::new(0),
            current: ArcSwapOption::empty(),
            fetch_lock: tokio::sync::Mutex::new(()),
            state: Mutex::new(RefreshState::default()),
            observer,
            loaded: watch::Sender::new(false),
            retired: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Ends the refresh loop of a source no config uses any more.
    pub fn retire(&self) {
        self.retired.cancel();
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Changes with every change of this source's keys.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a usable (present and fresh) key set is loaded.
    pub fn is_usable(&self) -> bool {
        self.fresh_set().is_some()
    }

    /// Resolves once the first key set has been loaded.
    pub async fn wait_loaded(&self) {
        let mut rx = self.loaded.subscribe();
        let _ = rx.wait_for(|loaded| *loaded).await;
    }

    /// Finds the key for `kid`, refreshing once if it is unknown and the
    /// cooldown allows it.
    pub async fn key(&self, kid: &str) -> KeyLookup {
        let Some(set) = self.fresh_set() else {
            return Box::pin(self.fetch_while_missing(kid)).await;
        };
        if let Some(key) = set.get(kid) {
            return KeyLookup::Found(key.clone());
        }
        if self.lock_state().negative.contains(kid) {
            return KeyLookup::Unknown;
        }
        // Why boxed: the refresh (an HTTP fetch) is rare, and inline its
        // state would make every request's future kilobytes larger, copied
        // as the request moves through the server.
        Box::pin(self.refresh_for_unknown(kid, &set)).await
    }

    async fn refresh_for_unknown(&self, kid: &str, seen: &Arc<KeySet>) -> KeyLookup {
        let _flight = self.fetch_lock.lock().await;
        let Some(set) = self.fresh_set() else {
            return KeyLookup::Unavailable;
        };
        if !Arc::ptr_eq(&set, seen) {
            // Someone refreshed while we waited: their answer is ours.
            return self.found_or_negative(&set, kid);
        }
        let cooling = {
            let state = self.lock_state();
            state
                .last_on_demand
                .is_some_and(|t| t.elapsed() < self.settings.refresh_cooldown)
        };
        if cooling {
            self.observer.refresh_suppressed(&self.label);
            return self.found_or_negative(&set, kid);
        }
        self.lock_state().last_on_demand = Some(Instant::now());
        // A failure is recorded by `fetch_and_install`; the old set stays.
        let _ = self.fetch_and_install().await;
        match self.fresh_set() {
            Some(set) => self.found_or_negative(&set, kid),
            None => KeyLookup::Unavailable,
        }
    }

    /// No usable set: a token has arrived, so fetch now rather than when
    /// the background schedule's backoff says (an issuer that came up after
    /// the gateway would otherwise cost seconds of 503s). One fetch at a
    /// time, and at most one a second for requests: a flood of tokens
    /// while the issuer is down does not become a flood of fetches.
    async fn fetch_while_missing(&self, kid: &str) -> KeyLookup {
        let _flight = self.fetch_lock.lock().await;
        if let Some(set) = self.fresh_set() {
            // Someone fetched while we waited.
            return self.found_or_negative(&set, kid);
        }
        {
            let mut state = self.lock_state();
            if state
                .last_while_missing
                .is_some_and(|t| t.elapsed() < FIRST_RETRY)
            {
                return KeyLookup::Unavailable;
            }
            state.last_while_missing = Some(Instant::now());
        }
        let _ = self.fetch_and_install().await;
        match self.fresh_set() {
            Some(set) => self.found_or_negative(&set, kid),
            None => KeyLookup::Unavailable,
        }
    }

    fn found_or_negative(&self, set: &KeySet, kid: &str) -> KeyLookup {
        if let Some(key) = set.get(kid) {
            return KeyLookup::Found(key.clone());
        }
        let mut state = self.lock_state();
        if state.negative.len() < NEGATIVE_CACHE_LIMIT {
            state.negative.insert(kid.to_owned());
        }
        KeyLookup::Unknown
    }

    /// Fetches now (waiting for any fetch in flight), installing the result
    /// on success. Used by the background schedule.
    pub async fn refresh(&self) -> Result<RefreshChange, KeyFetchError> {
        let _flight = self.fetch_lock.lock().await;
        self.fetch_and_install().await
    }

    async fn fetch_and_install(&self) -> Result<RefreshChange, KeyFetchError> {
        let result = self.fetch().await;
        let outcome = match result {
            Ok((set, skipped)) => {
                for why in &skipped {
                    tracing::warn!(source = %self.label, %why, "skipped a key in the JWKS");
                }
                Ok(self.install(set))
            }
            Err(e) => {
                let failures = {
                    let mut state = self.lock_state();
                    state.consecutive_failures += 1;
                    state.last_error = Some(e.to_string());
                    state.consecutive_failures
                };
                tracing::warn!(source = %self.label, error = %e, failures, "key refresh failed; keeping the last good key set");
                Err(e)
            }
        };
        self.observer
            .refreshed(&self.label, outcome.as_ref().copied());
        outcome
    }

    async fn fetch(&self) -> Result<(KeySet, Vec<String>), KeyFetchError> {
        let jwks_uri = match &self.endpoint {
            KeyEndpoint::Jwks(uri) => uri.clone(),
            KeyEndpoint::Discovery { url, issuer } => self.fetcher.discover(url, issuer).await?,
        };
        let body = self.fetcher.get(&jwks_uri).await?;
        Ok(jwks::parse(&body, Instant::now())?)
    }

    fn install(&self, set: KeySet) -> RefreshChange {
        let change = match self.current.load().as_deref() {
            Some(old) if old.fingerprint == set.fingerprint => RefreshChange::Unchanged,
            _ => RefreshChange::Replaced,
        };
        let count = set.len();
        self.current.store(Some(Arc::new(set)));
        {
            let mut state = self.lock_state();
            state.negative.clear();
            state.consecutive_failures = 0;
            state.last_success = Some(SystemTime::now());
            state.last_error = None;
        }
        if change == RefreshChange::Replaced {
            self.generation.fetch_add(1, Ordering::AcqRel);
            tracing::info!(source = %self.label, keys = count, "key set loaded");
        }
        self.loaded.send_replace(true);
        change
    }

    /// The current set, unless it is older than the staleness bound.
    fn fresh_set(&self) -> Option<Arc<KeySet>> {
        self.current.load_full().filter(|set| self.is_fresh(set))
    }

    /// Whether `set` is within the staleness bound.
    fn is_fresh(&self, set: &KeySet) -> bool {
        set.fetched_at.elapsed() <= self.settings.max_staleness
    }

    /// Refreshes forever: at once, then about every `refresh_interval` (±10 %
    /// jitter so sidecars do not fetch in step), retrying failures after 1 s,
    /// doubling up to the cooldown. Ends when `shutdown` fires.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut retry = FIRST_RETRY;
        loop {
            let delay = match self.refresh().await {
                Ok(_) => {
                    retry = FIRST_RETRY;
                    jittered(self.settings.refresh_interval)
                }
                Err(_) => {
                    let delay = retry;
                    retry = (retry * 2).min(self.settings.refresh_cooldown.max(FIRST_RETRY));
                    tracing::info!(source = %self.label, retry_in = ?delay, "will retry the key fetch");
                    delay
                }
            };
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
                () = self.retired.cancelled() => return,
            }
        }
    }

    pub fn status(&self) -> KeyStatus {
        let set = self.current.load_full();
        let state = self.lock_state();
        KeyStatus {
            label: self.label.clone(),
            key_count: set.as_ref().map_or(0, |s| s.len()),
            age: set.as_ref().map(|s| s.fetched_at.elapsed()),
            last_success: state.last_success,
            consecutive_failures: state.consecutive_failures,
            last_error: state.last_error.clone(),
            is_usable: set.is_some_and(|s| self.is_fresh(&s)),
        }
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, RefreshState> {
        // A poisoned lock only means a panic elsewhere; the state is plain data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn install_for_test(&self, set: KeySet) {
        self.install(set);
    }
}

fn jittered(interval: Duration) -> Duration {
    let tenth = interval.as_millis() as u64 / 10;
    let offset = fastrand::u64(0..=2 * tenth);
    (interval + Duration::from_millis(offset)).saturating_sub(Duration::from_millis(tenth))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl KeyObserver for Quiet {
        fn refreshed(&self, _: &str, _: Result<RefreshChange, &KeyFetchError>) {}
        fn refresh_suppressed(&self, _: &str) {}
    }

    fn source(max_staleness: Duration) -> KeySource {
        let settings = KeyFetchConfig {
            refresh_interval: Duration::from_secs(60),
            refresh_cooldown: Duration::from_secs(300),
            max_staleness,
            fetch_timeout: Duration::from_secs(10),
            ca_file: None,
        };
        KeySource::new(
            "test".into(),
            KeyEndpoint::Jwks(Uri::from_static("http://127.0.0.1:1/keys")),
            settings,
            Fetcher::new(None, Duration::from_secs(10)).unwrap(),
            Arc::new(Quiet),
        )
    }

    fn set_fetched(ago: Duration) -> KeySet {
        let n = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            [0xc5u8; 256],
        );
        let doc = serde_json::json!({"keys":[{"kty":"RSA","kid":"k1","n":n,"e":"AQAB"}]});
        let at = Instant::now().checked_sub(ago).unwrap();
        jwks::parse(&serde_json::to_vec(&doc).unwrap(), at)
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn no_key_set_means_unavailable_not_accept() {
        let src = source(Duration::from_secs(3600));
        assert!(matches!(src.key("k1").await, KeyLookup::Unavailable));
        assert!(!src.is_usable());
    }

    #[tokio::test]
    async fn stale_keys_are_dropped_after_the_bound() {
        // Why: last-known-good keys are kept only for max_key_staleness,
        // then the gateway fails closed with 503.
        let src = source(Duration::from_secs(3600));
        src.install_for_test(set_fetched(Duration::from_secs(10)));
        assert!(matches!(src.key("k1").await, KeyLookup::Found(_)));
        src.install_for_test(set_fetched(Duration::from_secs(7200)));
        assert!(matches!(src.key("k1").await, KeyLookup::Unavailable));
        assert!(!src.status().is_usable);
    }

    #[tokio::test]
    async fn same_keys_do_not_bump_the_generation() {
        let src = source(Duration::from_secs(3600));
        src.install_for_test(set_fetched(Duration::ZERO));
        let g = src.generation.load(Ordering::Acquire);
        src.install_for_test(set_fetched(Duration::ZERO));
        assert_eq!(src.generation.load(Ordering::Acquire), g);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(100));
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
    }
}
