//! HTTP(S) fetches of discovery documents and key sets: bounded in size and
//! time, redirects never followed, only configured hosts contacted.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::jwks::JwksError;

/// Largest discovery or JWKS document we read (Entra's is ~10 KiB).
pub const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum KeyFetchError {
    #[error("request failed: {0}")]
    Transport(String),
    #[error("HTTP status {0}")]
    Status(StatusCode),
    #[error("document larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("discovery document: {0}")]
    Discovery(String),
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// A small HTTP client for key material. Cloning shares its connection pool.
#[derive(Clone)]
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    timeout: Duration,
}

#[derive(Deserialize)]
struct DiscoveryDoc {
    issuer: String,
    jwks_uri: String,
}

impl Fetcher {
    /// A fetcher trusting the web PKI roots plus the certificates in
    /// `ca_file`, giving each document `timeout` from request to last byte.
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Self, crate::tls::TlsError> {
        let tls = crate::tls::client_config(ca_file)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self { client, timeout })
    }

    /// GETs `uri` and returns its body, refusing redirects, non-2xx answers,
    /// bodies over [`MAX_DOCUMENT_BYTES`] and anything slower than the
    /// fetcher's timeout.
    pub async fn get(&self, uri: &Uri) -> Result<Bytes, KeyFetchError> {
        let work = async {
            let req = Request::get(uri.clone())
                .header(header::ACCEPT, "application/json")
                .header(
                    header::USER_AGENT,
                    concat!("portcullis/", env!("CARGO_PKG_VERSION")),
                )
                .body(Empty::new())
                .map_err(|e| KeyFetchError::Transport(e.to_string()))?;
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| KeyFetchError::Transport(crate::telemetry::error_chain(&e)))?;
            if !resp.status().is_success() {
                // Why: a redirect is not followed; it could point anywhere.
                return Err(KeyFetchError::Status(resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_DOCUMENT_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        KeyFetchError::TooLarge
                    } else {
                        KeyFetchError::Transport(e.to_string())
                    }
                })?;
            Ok(body.to_bytes())
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| KeyFetchError::Timeout(self.timeout))?
    }

    /// Reads an OpenID discovery document and returns its `jwks_uri`, after
    /// checking that it names `expected_issuer` (OpenID Connect Discovery
    /// §4.3) and that the key URL stays on the discovery host.
    pub async fn discover(
        &self,
        discovery: &Uri,
        expected_issuer: &str,
    ) -> Result<Uri, KeyFetchError> {
        let body = self.get(discovery).await?;
        let doc: DiscoveryDoc = serde_json::from_slice(&body)
            .map_err(|e| KeyFetchError::Discovery(format!("invalid JSON: {e}")))?;
        if doc.issuer != expected_issuer {
            return Err(KeyFetchError::Discovery(format!(
                "issuer {:?} does not match the configured {expected_issuer:?}",
                doc.issuer
            )));
        }
        let jwks: Uri = doc
            .jwks_uri
            .parse()
            .map_err(|_| KeyFetchError::Discovery("jwks_uri is not a URL".into()))?;
        // Why: only configured hosts are fetched; a discovery document must not
        // send us to another host or downgrade to plain http.
        if jwks.authority() != discovery.authority() || jwks.scheme() != discovery.scheme() {
            return Err(KeyFetchError::Discovery(
                "jwks_uri points to another host or scheme".into(),
            ));
        }
        Ok(jwks)
    }
}
