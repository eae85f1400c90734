//! Config file text → a validated config (every error with its path) and a
//! compiled snapshot; never a panic.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use portcullis::keys::{KeyFetchError, KeyObserver, RefreshChange};
use portcullis::snapshot::{KeyEnv, Snapshot};

struct Quiet;

impl KeyObserver for Quiet {
    fn refreshed(&self, _: &str, _: Result<RefreshChange, &KeyFetchError>) {}
    fn refresh_suppressed(&self, _: &str) {}
}

impl portcullis::model::ModelObserver for Quiet {}

impl portcullis::credentials::CredentialObserver for Quiet {}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match portcullis::config::parse(text, Path::new("/nonexistent")) {
        Ok(config) => {
            let env = KeyEnv {
                observer: Arc::new(Quiet),
            };
            let _ = Snapshot::compile(&config, &env);
        }
        Err(errors) => assert!(!errors.0.is_empty()),
    }
});
