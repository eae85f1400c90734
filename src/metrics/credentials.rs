//! The gateway's own credentials: exchanges with the identity endpoints
//! by how they ended, and how long each cached token has left.

use prometheus::{IntCounterVec, IntGaugeVec};

use super::{Metrics, Register};
use crate::credentials::CredentialObserver;

pub(super) struct Families {
    exchanges: IntCounterVec,
    expires_in: IntGaugeVec,
}

impl Families {
    pub(super) fn new(r: &mut Register) -> Result<Self, prometheus::Error> {
        Ok(Self {
            exchanges: r.counters(
                "gateway_credential_exchanges_total",
                "Token requests to identity endpoints by credential and result: ok, the Entra error code (AADSTS700024), status_<code>, unreachable, timeout, invalid_answer or token_file.",
                &["credential", "result"],
            )?,
            expires_in: r.gauges(
                "gateway_credential_token_expires_in_seconds",
                "Seconds until each credential's cached token expires (absent before the first token).",
                &["credential"],
            )?,
        })
    }
}

impl CredentialObserver for Metrics {
    fn exchanged(&self, credential: &str, result: &str) {
        self.credentials
            .exchanges
            .with_label_values(&[credential, result])
            .inc();
    }
}

impl Metrics {
    /// A credential's token lifetime left, at scrape time.
    pub fn observe_credential(&self, credential: &str, expires_in: Option<u64>) {
        let gauge = &self.credentials.expires_in;
        match expires_in {
            Some(secs) => gauge
                .with_label_values(&[credential])
                .set(i64::try_from(secs).unwrap_or(i64::MAX)),
            None => {
                let _ = gauge.remove_label_values(&[credential]);
            }
        }
    }
}
