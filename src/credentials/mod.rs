//! The gateway's own Entra credentials: tokens it presents to upstreams in
//! place of the caller's.
//!
//! A token is obtained from the platform (a managed identity endpoint, or
//! a client-credentials grant whose client assertion is the projected
//! workload identity token, re-read for every exchange: a cached copy
//! expires within the hour, AADSTS700024), cached, and refreshed ahead of
//! its expiry by one request while the others keep using it (MSAL's rules:
//! at `refresh_in` when the answer gives one, at half-life for tokens of
//! two hours or more, else `refresh_before` ahead). A refresh that fails
//! leaves the cached token in use until it nearly expires, and is retried
//! with backoff; with no usable token, requests fail at once (503) until
//! the backoff ends, rather than each asking the endpoint. Tokens are never
//! logged; redirects are never followed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::config::{ClientAuth, CredentialConfig, CredentialSource};

/// One exchange, from request to the answer's last byte.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an identity endpoint's answer read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// A token this close to its expiry is no longer presented.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// The longest an endpoint's `Retry-After` holds the next attempt back.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Waits between failed attempts (the instance metadata service's advice).
const BACKOFF: [Duration; 5] = [
    Duration::from_secs(2),
    Duration::from_secs(6),
    Duration::from_secs(14),
    Duration::from_secs(30),
    Duration::from_secs(60),
];

/// Why an on-behalf-of exchange gave no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OboError {
    #[error(transparent)]
    Failed(#[from] CredentialError),
    /// Entra asks the user for more first (Conditional Access,
    /// `interaction_required`): its `claims`, as JSON text.
    #[error("credential {credential}: the user must answer a claims challenge")]
    ClaimsChallenge {
        credential: Arc<str>,
        claims: String,
    },
}

/// Why no token could be had, as the record and the metrics name it: the
/// Entra error (`AADSTS700024`, `invalid_client`) or what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credential {credential}: {reason}")]
pub struct CredentialError {
    pub credential: Arc<str>,
    pub reason: String,
}

/// Told of every exchange with an identity endpoint (the metrics).
pub trait CredentialObserver: Send + Sync {
    /// `result`: `ok`, or what failed (`AADSTS700024`, `status_500`,
    /// `unreachable`, `timeout`, `invalid_answer`, `token_file`).
    fn exchanged(&self, _credential: &str, _result: &str) {}
}

/// The token presented to the upstream: its `Authorization` value and a
/// digest that names it in the audit record.
#[derive(Clone)]
pub struct Presented {
    pub header: HeaderValue,
    /// `sha256:` and 16 hex digits of the token: follows it through the
    /// records, cannot be replayed.
    pub digest: Arc<str>,
}

/// A token, ready to present.
struct Token {
    presented: Presented,
    expires: Instant,
    refresh_at: Instant,
}

struct Failure {
    reason: String,
    attempts: usize,
    /// No new attempt before this.
    until: Instant,
}

/// One configured credential and its cached token.
pub struct Credential {
    pub name: Arc<str>,
    config: CredentialConfig,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    token: Mutex<Option<Arc<Token>>>,
    failure: Mutex<Option<Failure>>,
    /// A refresh ahead of expiry is under way (one at a time).
    refreshing: AtomicBool,
    /// Requests without a usable token wait here for one exchange.
    exchange: tokio::sync::Mutex<()>,
    observer: Arc<dyn CredentialObserver>,
    /// On-behalf-of: the derived tokens, by the digest of the caller's.
    derived: quick_cache::sync::Cache<[u8; 32], Arc<Token>>,
}

/// Derived tokens kept by one on-behalf-of credential.
const DERIVED_CAPACITY: usize = 10_000;

#[derive(Deserialize)]
struct Answer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<Number>,
    /// Managed identity endpoints: seconds since the epoch.
    #[serde(default)]
    expires_on: Option<Number>,
    #[serde(default)]
    refresh_in: Option<Number>,
}

/// The identity endpoints write numbers as numbers or as strings.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(u64),
    Text(String),
}

impl Number {
    fn get(&self) -> Option<u64> {
        match self {
            Self::Int(n) => Some(*n),
            Self::Text(t) => t.trim().parse().ok(),
        }
    }
}

/// Why an exchange gave no token: a bounded label for the metrics, and
/// the reason in words for the record.
struct Refused {
    label: String,
    reason: String,
    /// An `interaction_required` answer's claims challenge.
    claims: Option<String>,
    /// How long the endpoint asked the gateway to wait (`Retry-After`).
    retry_after: Option<Duration>,
}

impl Refused {
    fn new(label: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            reason: reason.into(),
            claims: None,
            retry_after: None,
        }
    }
}

/// How the gateway's app proves itself: its client assertion (the
/// projected token, or one it signs with its certificate) or its secret,
/// each read from its files for this exchange.
async fn client_authentication(
    auth: &ClientAuth,
    client_id: &str,
    token_url: &Uri,
) -> Result<Vec<(&'static str, String)>, Refused> {
    let read = |path: &std::path::Path| {
        let path = path.to_path_buf();
        async move {
            tokio::fs::read_to_string(&path)
                .await
                .map_err(|e| Refused::new("token_file", format!("{}: {e}", path.display())))
        }
    };
    let assertion = match auth {
        ClientAuth::Secret(file) => {
            return Ok(vec![("client_secret", read(file).await?.trim().to_owned())]);
        }
        ClientAuth::FederatedToken(file) => read(file).await?.trim().to_owned(),
        ClientAuth::Certificate { certificate, key } => {
            let certificate = read(certificate).await?;
            let key = read(key).await?;
            signed_assertion(&certificate, &key, client_id, token_url)?
        }
    };
    Ok(vec![
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
        ),
        ("client_assertion", assertion),
    ])
}

/// A client assertion for a certificate credential, as Entra takes it: a
/// JWT for the token endpoint (`aud`), from and about the app (`iss`,
/// `sub`), valid ten minutes, signed with the certificate's RSA key and
/// naming the certificate by its SHA-256 thumbprint (`x5t#S256`).
fn signed_assertion(
    certificate: &str,
    key: &str,
    client_id: &str,
    token_url: &Uri,
) -> Result<String, Refused> {
    let bad = |what: String| Refused::new("certificate", what);
    let der = pem::parse(certificate.as_bytes())
        .map_err(|e| bad(format!("certificate: {e}")))?
        .into_contents();
    let thumbprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.as_bytes())
        .map_err(|e| bad(format!("key: {e}")))?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5t_s256 = Some(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        thumbprint.as_ref(),
    ));
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "aud": token_url.to_string(), "iss": client_id, "sub": client_id,
        "jti": format!("{:032x}", fastrand::u128(..)),
        "iat": now, "nbf": now, "exp": now + 600,
    });
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| bad(format!("signing: {e}")))
}

#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    claims: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_codes: Vec<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Credential {
    pub fn new(
        config: &CredentialConfig,
        observer: Arc<dyn CredentialObserver>,
    ) -> Result<Self, crate::tls::TlsError> {
        let tls = crate::tls::client_config(None)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            name: Arc::from(config.name.as_str()),
            config: config.clone(),
            client: Client::builder(TokioExecutor::new()).build(connector),
            token: Mutex::new(None),
            failure: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            exchange: tokio::sync::Mutex::new(()),
            observer,
            derived: quick_cache::sync::Cache::new(DERIVED_CAPACITY),
        })
    }

    pub fn config(&self) -> &CredentialConfig {
        &self.config
    }

    fn usable(&self, now: Instant) -> Option<Arc<Token>> {
        lock(&self.token)
            .clone()
            .filter(|t| now + EXPIRY_MARGIN < t.expires)
    }

    /// The `Authorization` value to present: the cached token (starting a
    /// refresh when one is due), or one obtained now.
    pub async fn authorization(self: &Arc<Self>) -> Result<Presented, CredentialError> {
        let now = Instant::now();
        if let Some(token) = self.usable(now) {
            if now >= token.refresh_at && !self.refreshing.swap(true, Ordering::AcqRel) {
                let this = self.clone();
                tokio::spawn(async move {
                    let _ = this.exchange_now().await;
                    this.refreshing.store(false, Ordering::Release);
                });
            }
            return Ok(token.presented.clone());
        }
        let _one = self.exchange.lock().await;
        if let Some(token) = self.usable(Instant::now()) {
            return Ok(token.presented.clone());
        }
        if let Some(f) = lock(&self.failure)
            .as_ref()
            .filter(|f| Instant::now() < f.until)
        {
            return Err(self.error(f.reason.clone()));
        }
        self.exchange_now().await
    }

    /// Asks the identity endpoint, and keeps what it answers (or the
    /// failure, with its backoff).
    async fn exchange_now(&self) -> Result<Presented, CredentialError> {
        let asked = Instant::now();
        let answer = match tokio::time::timeout(EXCHANGE_TIMEOUT, self.ask(None)).await {
            Ok(answer) => answer,
            Err(_) => Err(Refused::new(
                "timeout",
                format!("no answer within {EXCHANGE_TIMEOUT:?}"),
            )),
        };
        let token = answer.and_then(|a| self.token_of(a, asked));
        match token {
            Ok(token) => {
                self.observer.exchanged(&self.name, "ok");
                let presented = token.presented.clone();
                *lock(&self.token) = Some(Arc::new(token));
                *lock(&self.failure) = None;
                Ok(presented)
            }
            Err(refused) => {
                self.observer.exchanged(&self.name, &refused.label);
                Err(self.failed(refused.reason, refused.retry_after))
            }
        }
    }

    /// Notes a failed exchange: no new attempt before the backoff ends, or
    /// later if the endpoint asked (`Retry-After`, up to five minutes).
    fn failed(&self, reason: String, retry_after: Option<Duration>) -> CredentialError {
        let mut failure = lock(&self.failure);
        let attempts = failure.as_ref().map_or(0, |f| f.attempts) + 1;
        let wait = BACKOFF[(attempts - 1).min(BACKOFF.len() - 1)]
            .max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
        tracing::warn!(credential = %self.name, reason, retry_in = ?wait, "upstream credential refused");
        *failure = Some(Failure {
            reason: reason.clone(),
            attempts,
            until: Instant::now() + wait,
        });
        self.error(reason)
    }

    fn error(&self, reason: String) -> CredentialError {
        CredentialError {
            credential: self.name.clone(),
            reason,
        }
    }

    fn token_of(&self, answer: Answer, asked: Instant) -> Result<Token, Refused> {
        let lifetime = match (
            answer.expires_in.as_ref().and_then(Number::get),
            answer.expires_on.as_ref().and_then(Number::get),
        ) {
            (Some(secs), _) => Duration::from_secs(secs),
            (None, Some(epoch)) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Duration::from_secs(epoch.saturating_sub(now.as_secs()))
            }
            (None, None) => {
                return Err(Refused::new(
                    "invalid_answer",
                    "the answer gives no lifetime",
                ));
            }
        };
        let mut header = HeaderValue::from_str(&format!("Bearer {}", answer.access_token))
            .map_err(|_| {
                Refused::new("invalid_answer", "the answer's token is not a header value")
            })?;
        header.set_sensitive(true);
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, answer.access_token.as_bytes());
        let mut named = b"sha256:".to_vec();
        crate::text::write_hex(&mut named, &digest.as_ref()[..8]);
        let expires = asked + lifetime;
        let before = expires
            .checked_sub(self.config.refresh_before)
            .unwrap_or(asked);
        let refresh_at = match answer.refresh_in.as_ref().and_then(Number::get) {
            // As the identity platform asks.
            Some(secs) => (asked + Duration::from_secs(secs)).min(before),
            None if lifetime >= Duration::from_secs(2 * 3600) => asked + lifetime / 2,
            // A token shorter than refresh_before: at half-life.
            None if before <= asked => asked + lifetime / 2,
            None => before,
        };
        Ok(Token {
            presented: Presented {
                header,
                digest: Arc::from(String::from_utf8_lossy(&named).as_ref()),
            },
            expires,
            refresh_at,
        })
    }

    /// The caller's (user) token exchanged for one to this credential's
    /// scope, cached by the caller's token and never kept past it.
    pub async fn on_behalf_of(
        &self,
        caller: &str,
        caller_expires: std::time::SystemTime,
    ) -> Result<Presented, OboError> {
        let key: [u8; 32] =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, caller.as_bytes())
                .as_ref()
                .try_into()
                .unwrap_or([0; 32]);
        let now = Instant::now();
        if let Some(token) = self
            .derived
            .get(&key)
            .filter(|t| now + EXPIRY_MARGIN < t.expires)
        {
            return Ok(token.presented.clone());
        }
        let answer = match tokio::time::timeout(EXCHANGE_TIMEOUT, self.ask(Some(caller))).await {
            Ok(answer) => answer,
            Err(_) => Err(Refused::new(
                "timeout",
                format!("no answer within {EXCHANGE_TIMEOUT:?}"),
            )),
        };
        let token = answer.and_then(|a| self.token_of(a, now));
        match token {
            Ok(mut token) => {
                self.observer.exchanged(&self.name, "ok");
                // The derived token never outlives the caller's.
                let left = caller_expires
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                token.expires = token.expires.min(now + left);
                let presented = token.presented.clone();
                self.derived.insert(key, Arc::new(token));
                Ok(presented)
            }
            Err(refused) => {
                self.observer.exchanged(&self.name, &refused.label);
                match refused.claims {
                    Some(claims) => Err(OboError::ClaimsChallenge {
                        credential: self.name.clone(),
                        claims,
                    }),
                    None => Err(OboError::Failed(self.error(refused.reason))),
                }
            }
        }
    }

    /// One request to the identity endpoint: its token answer, or why not.
    /// `caller`: the token an on-behalf-of exchange is for.
    async fn ask(&self, caller: Option<&str>) -> Result<Answer, Refused> {
        let request = match &self.config.source {
            CredentialSource::OnBehalfOf {
                token_url,
                client_id,
                auth,
            } => {
                let Some(caller) = caller else {
                    return Err(Refused::new(
                        "invalid_request",
                        "on-behalf-of needs a caller's token",
                    ));
                };
                let proof = client_authentication(auth, client_id, token_url).await?;
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair("client_id", client_id)
                    .append_pair("scope", &self.config.scope)
                    .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
                    .append_pair("requested_token_use", "on_behalf_of")
                    .append_pair("assertion", caller)
                    .extend_pairs(proof);
                Request::post(token_url.clone())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form.finish())))
            }
            CredentialSource::ClientCredentials {
                token_url,
                client_id,
                auth,
            } => {
                let proof = client_authentication(auth, client_id, token_url).await?;
                let mut form = form_urlencoded::Serializer::new(String::new());
                form.append_pair("client_id", client_id)
                    .append_pair("scope", &self.config.scope)
                    .append_pair("grant_type", "client_credentials")
                    .extend_pairs(proof);
                Request::post(token_url.clone())
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(form.finish())))
            }
            CredentialSource::ManagedIdentity {
                endpoint,
                client_id,
                identity_header,
            } => {
                let resource = self.config.scope.trim_end_matches("/.default");
                let version = match identity_header {
                    Some(_) => "2019-08-01",
                    None => "2018-02-01",
                };
                let mut query = form_urlencoded::Serializer::new(String::new());
                query
                    .append_pair("api-version", version)
                    .append_pair("resource", resource);
                if let Some(id) = client_id {
                    query.append_pair("client_id", id);
                }
                let separator = if endpoint.query().is_some() { '&' } else { '?' };
                let uri: Uri = format!("{endpoint}{separator}{}", query.finish())
                    .parse()
                    .map_err(|e| {
                        Refused::new("invalid_request", format!("identity endpoint: {e}"))
                    })?;
                let builder = Request::get(uri);
                let builder = match identity_header {
                    Some(secret) => builder.header("x-identity-header", secret.as_str()),
                    None => builder.header("metadata", "true"),
                };
                builder.body(Full::new(Bytes::new()))
            }
        }
        .map_err(|e| Refused::new("invalid_request", e.to_string()))?;
        let response = self.client.request(request).await.map_err(|e| {
            let chain = crate::telemetry::error_chain(&e);
            Refused::new(
                "unreachable",
                format!("identity endpoint unreachable: {chain}"),
            )
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                Refused::new("invalid_answer", format!("identity endpoint's answer: {e}"))
            })?
            .to_bytes();
        if !status.is_success() {
            // Why (no redirect followed): a redirect could point anywhere.
            let refusal: Option<Refusal> = serde_json::from_slice(&body).ok();
            let code = refusal
                .as_ref()
                .and_then(|r| r.error_codes.first())
                .map(|c| format!("AADSTS{c}"));
            let claims = refusal
                .as_ref()
                .filter(|r| r.error.as_deref() == Some("interaction_required"))
                .and_then(|r| r.claims.clone());
            let error = refusal.and_then(|r| r.error).unwrap_or_default();
            let named = format!("{} {error}", code.as_deref().unwrap_or(""));
            let label = code.unwrap_or_else(|| format!("status_{}", status.as_u16()));
            let reason = match named.trim() {
                "" => status.to_string(),
                named => format!("{status}: {named}"),
            };
            return Err(Refused {
                claims,
                retry_after,
                ..Refused::new(label, reason)
            });
        }
        serde_json::from_slice(&body)
            .map_err(|_| Refused::new("invalid_answer", "the answer is not a token response"))
    }

    /// Whether a token is at hand (for readiness), and the last failure.
    pub fn status(&self) -> (bool, Option<String>) {
        let ready = self.usable(Instant::now()).is_some();
        let failure = lock(&self.failure).as_ref().map(|f| f.reason.clone());
        (ready, failure)
    }

    /// Seconds until the cached token expires, if there is one.
    pub fn expires_in(&self) -> Option<u64> {
        let token = lock(&self.token).clone()?;
        Some(
            token
                .expires
                .saturating_duration_since(Instant::now())
                .as_secs(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl CredentialObserver for Quiet {}

    fn credential() -> Credential {
        let config = CredentialConfig {
            name: "c".into(),
            source: CredentialSource::ManagedIdentity {
                endpoint: Uri::from_static("http://127.0.0.1:1/token"),
                client_id: None,
                identity_header: None,
            },
            scope: "https://search.azure.com/.default".into(),
            refresh_before: Duration::from_secs(300),
        };
        Credential::new(&config, Arc::new(Quiet)).unwrap()
    }

    /// When a token answer is refreshed, and when it expires, after `asked`.
    fn timing(answer: &str) -> (Duration, Duration) {
        let asked = Instant::now();
        let token = credential()
            .token_of(serde_json::from_str(answer).unwrap(), asked)
            .ok()
            .unwrap();
        (token.refresh_at - asked, token.expires - asked)
    }

    #[test]
    fn tokens_are_refreshed_by_msals_rules_whatever_the_endpoint_writes() {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        // An hour: five minutes before it expires.
        assert_eq!(
            timing(r#"{"access_token":"t","expires_in":3600}"#),
            (minutes(55), minutes(60))
        );
        // Numbers written as strings (managed identity endpoints).
        assert_eq!(
            timing(r#"{"access_token":"t","expires_in":"3600"}"#).0,
            minutes(55)
        );
        // A day (workload identity tokens): at half-life.
        assert_eq!(
            timing(r#"{"access_token":"t","expires_in":86400}"#).0,
            minutes(720)
        );
        // As the platform asks, never later than refresh_before.
        assert_eq!(
            timing(r#"{"access_token":"t","expires_in":86400,"refresh_in":600}"#).0,
            minutes(10)
        );
        assert_eq!(
            timing(r#"{"access_token":"t","expires_in":3600,"refresh_in":3590}"#).0,
            minutes(55)
        );
        // Shorter than refresh_before: at half-life.
        assert_eq!(
            timing(r#"{"access_token":"t","expires_in":120}"#).0,
            minutes(1)
        );
        // Only expires_on (seconds since the epoch, as a string).
        let on = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600;
        let (_, expires) = timing(&format!(r#"{{"access_token":"t","expires_on":"{on}"}}"#));
        assert!(
            expires <= minutes(60) && expires >= minutes(59),
            "{expires:?}"
        );
    }

    #[test]
    fn a_token_is_presented_until_thirty_seconds_before_it_expires() {
        let c = credential();
        let asked = Instant::now();
        let answer = serde_json::from_str(r#"{"access_token":"t","expires_in":40}"#).unwrap();
        let token = c.token_of(answer, asked).ok().unwrap();
        *lock(&c.token) = Some(Arc::new(token));
        assert!(c.usable(asked + Duration::from_secs(9)).is_some());
        assert!(c.usable(asked + Duration::from_secs(10)).is_none());
    }

    #[test]
    fn an_answer_without_a_lifetime_or_a_header_safe_token_is_refused() {
        let c = credential();
        for answer in [
            r#"{"access_token":"t"}"#,
            r#"{"access_token":"a\nb","expires_in":60}"#,
        ] {
            let refused = c.token_of(serde_json::from_str(answer).unwrap(), Instant::now());
            assert_eq!(
                refused.err().map(|r| r.label),
                Some("invalid_answer".to_owned()),
                "{answer}"
            );
        }
    }
}
