//! In-process HTTP servers for dev mode and tests: a development issuer
//! (OIDC discovery + JWKS, Entra-shaped per-tenant key endpoints, and the
//! token endpoints the gateway's own credentials use: Entra's client
//! credentials grant with a client assertion, and a managed identity
//! endpoint) and an echo upstream (JSON, or an event stream like a
//! model's). Both bind `127.0.0.1:0` and stop when dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::{SigningKey, TokenRequest};

/// What the issuer's key endpoints answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksMode {
    Serving,
    /// 503 on every key and discovery request.
    Down,
    /// A valid document with no keys.
    Empty,
}

struct IssuerState {
    keys: Vec<SigningKey>,
    mode: JwksMode,
    fetches: u64,
    tokens: TokenEndpoint,
}

/// How the issuer's token endpoints answer the gateway's own credentials.
#[derive(Debug, Clone, Default)]
struct TokenEndpoint {
    /// The client assertion the client credentials grant accepts: this
    /// file's contents (the projected token, which tests rotate); `None`:
    /// any.
    assertion_file: Option<std::path::PathBuf>,
    /// Lifetime of the tokens issued (default one hour).
    lifetime_secs: u64,
    /// `refresh_in` in the answers, when set.
    refresh_in: Option<u64>,
    /// How long each answer takes.
    delay: Duration,
    failing: bool,
    /// On-behalf-of answers `interaction_required` with these claims (JSON
    /// text), as Entra does when Conditional Access wants more of the user.
    interaction_required: Option<String>,
    /// A signed client assertion (a certificate credential's) must verify
    /// with this public key (PEM).
    assertion_key: Option<String>,
    /// A client secret must be this.
    client_secret: Option<String>,
    /// Every token request is redirected here (302).
    redirect: Option<String>,
    /// Requests answered (or refused) so far.
    requests: u64,
}

/// A development identity provider on loopback.
pub struct DevIssuer {
    addr: SocketAddr,
    state: Arc<Mutex<IssuerState>>,
    /// The token endpoints' request count, as it changes.
    token_requests: tokio::sync::watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl DevIssuer {
    /// Starts serving `keys` on `127.0.0.1:0`.
    pub async fn start(keys: Vec<SigningKey>) -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), keys).await
    }

    /// Starts serving `keys` on `addr`.
    pub async fn start_on(addr: SocketAddr, keys: Vec<SigningKey>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(IssuerState {
            keys,
            mode: JwksMode::Serving,
            fetches: 0,
            tokens: TokenEndpoint {
                lifetime_secs: 3600,
                ..TokenEndpoint::default()
            },
        }));
        let base: Arc<str> = Arc::from(format!("http://{addr}"));
        let shared = state.clone();
        let (counted, token_requests) = tokio::sync::watch::channel(0);
        let counted = Arc::new(counted);
        let task = tokio::spawn(serve_http(listener, move |req: Request<Incoming>| {
            let (base, shared, counted) = (base.clone(), shared.clone(), counted.clone());
            async move {
                if req.method() == Method::POST && req.uri().path() == "/dev/token" {
                    return mint(&base, &shared, req).await;
                }
                let path = req.uri().path();
                if path.ends_with("/oauth2/v2.0/token") || path == "/metadata/identity/oauth2/token"
                {
                    let answer = own_token(&base, &shared, req).await;
                    counted.send_replace(lock(&shared).tokens.requests);
                    return answer;
                }
                issuer_response(&base, &shared, req.uri().path())
            }
        }));
        Ok(Self {
            addr,
            state,
            token_requests,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`: the OIDC issuer and the Entra authority.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_keys(&self, keys: Vec<SigningKey>) {
        lock(&self.state).keys = keys;
    }

    pub fn set_mode(&self, mode: JwksMode) {
        lock(&self.state).mode = mode;
    }

    /// Key set requests served so far (discovery not counted).
    pub fn fetch_count(&self) -> u64 {
        lock(&self.state).fetches
    }

    /// The client credentials grant accepts only the contents of `file`
    /// as its client assertion (read at each request).
    pub fn expect_assertion_from(&self, file: &std::path::Path) {
        lock(&self.state).tokens.assertion_file = Some(file.to_path_buf());
    }

    /// The lifetime of the tokens the token endpoints issue.
    pub fn set_token_lifetime(&self, secs: u64) {
        lock(&self.state).tokens.lifetime_secs = secs;
    }

    /// Whether the token endpoints answer 500.
    pub fn set_token_endpoint_failing(&self, failing: bool) {
        lock(&self.state).tokens.failing = failing;
    }

    /// Requests the token endpoints have had.
    pub fn token_requests(&self) -> u64 {
        lock(&self.state).tokens.requests
    }

    /// Waits until the token endpoints have answered `n` requests.
    pub async fn token_requests_reach(&self, n: u64) {
        let mut seen = self.token_requests.clone();
        let _ = seen.wait_for(|c| *c >= n).await;
    }

    /// `refresh_in` in the token answers (`None`: none).
    pub fn set_token_refresh_in(&self, secs: Option<u64>) {
        lock(&self.state).tokens.refresh_in = secs;
    }

    /// How long each token answer takes.
    pub fn set_token_delay(&self, delay: Duration) {
        lock(&self.state).tokens.delay = delay;
    }

    /// Signed client assertions (certificate credentials) must verify with
    /// this RSA public key (PEM).
    pub fn expect_assertion_key(&self, public_pem: &str) {
        lock(&self.state).tokens.assertion_key = Some(public_pem.to_owned());
    }

    /// Every token request is answered with a redirect to `url`.
    pub fn redirect_tokens_to(&self, url: Option<&str>) {
        lock(&self.state).tokens.redirect = url.map(str::to_owned);
    }

    /// Client secrets must be this one.
    pub fn expect_client_secret(&self, secret: &str) {
        lock(&self.state).tokens.client_secret = Some(secret.to_owned());
    }

    /// On-behalf-of exchanges are answered `interaction_required` with
    /// these claims (`None`: exchanged).
    pub fn require_interaction(&self, claims: Option<&str>) {
        lock(&self.state).tokens.interaction_required = claims.map(str::to_owned);
    }
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<IssuerState>) -> MutexGuard<'_, IssuerState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `POST /dev/token`: a token minted to the [`TokenRequest`] in the body
/// (JSON), in the shape of an OAuth 2.0 token response, with its claims.
async fn mint(
    base: &str,
    state: &Mutex<IssuerState>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let bad = |message: String| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_request", "error_description": message}),
        )
    };
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad(e.to_string()),
    };
    let request: TokenRequest = if body.is_empty() {
        TokenRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return bad(e.to_string()),
        }
    };
    let alg = if request.es256 {
        Algorithm::ES256
    } else {
        Algorithm::RS256
    };
    let key = lock(state).keys.iter().find(|k| k.alg() == alg).cloned();
    let Some(key) = key else {
        return bad(format!("the issuer has no {alg:?} key"));
    };
    let claims = request.claims(base);
    let token = key.sign(&claims);
    json_response(
        StatusCode::OK,
        &json!({"access_token": token, "token_type": "Bearer", "expires_in": request.lifetime_secs, "claims": claims}),
    )
}

/// A token for the gateway itself: `POST /{tenant}/oauth2/v2.0/token`
/// (the client credentials grant with a client assertion, as Entra takes
/// it from workload identity), or `GET /metadata/identity/oauth2/token`
/// (the instance metadata service's managed identity endpoint: the
/// `Metadata: true` header required, numbers written as strings).
async fn own_token(
    base: &str,
    state: &Mutex<IssuerState>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let refuse = |status: StatusCode, error: &str, code: u64, description: &str| {
        json_response(
            status,
            &json!({"error": error, "error_description": format!("AADSTS{code}: {description}"), "error_codes": [code]}),
        )
    };
    let tokens = {
        let mut s = lock(state);
        s.tokens.requests += 1;
        s.tokens.clone()
    };
    tokio::time::sleep(tokens.delay).await;
    if let Some(url) = &tokens.redirect {
        let mut resp = json_response(StatusCode::FOUND, &json!({}));
        if let Ok(location) = header::HeaderValue::from_str(url) {
            resp.headers_mut().insert(header::LOCATION, location);
        }
        return resp;
    }
    if tokens.failing {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "temporarily_unavailable",
            50089,
            "The service is temporarily unavailable.",
        );
    }
    let managed = req.method() == Method::GET;
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let metadata = req.headers().get("metadata").is_some_and(|v| v == "true");
    let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                "The request body is too large.",
            );
        }
    };
    let field = |text: &[u8], name: &str| {
        form_urlencoded::parse(text)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let mut caller_expires = None;
    let (audience, subject) = if managed {
        if !metadata {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                0,
                "Required metadata header not specified",
            );
        }
        let Some(resource) = field(query.as_bytes(), "resource") else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                0,
                "Required query variable 'resource' is missing",
            );
        };
        let client =
            field(query.as_bytes(), "client_id").unwrap_or_else(|| "system-assigned".into());
        (resource, client)
    } else {
        let grant = field(&body, "grant_type").unwrap_or_default();
        let on_behalf_of = grant == "urn:ietf:params:oauth:grant-type:jwt-bearer"
            && field(&body, "requested_token_use").as_deref() == Some("on_behalf_of");
        if grant != "client_credentials" && !on_behalf_of {
            return refuse(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                "The grant type is not supported.",
            );
        }
        let assertion = field(&body, "client_assertion").unwrap_or_default();
        let client_id = field(&body, "client_id").unwrap_or_default();
        if let Some(secret) = field(&body, "client_secret") {
            if tokens.client_secret.as_deref() != Some(secret.as_str()) {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided.",
                );
            }
        } else if let Some(public) = &tokens.assertion_key {
            // A certificate's assertion: signed by its key, for this
            // endpoint, from the app.
            let key = jsonwebtoken::DecodingKey::from_rsa_pem(public.as_bytes());
            let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
            validation.set_audience(&[format!("{base}{path}")]);
            validation.set_issuer(&[client_id.as_str()]);
            let verified = key
                .ok()
                .and_then(|key| jsonwebtoken::decode::<Value>(&assertion, &key, &validation).ok());
            if verified.is_none_or(|v| v.header.x5t_s256.is_none()) {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    700027,
                    "Client assertion failed signature validation.",
                );
            }
        } else if let Some(file) = &tokens.assertion_file {
            let expected = std::fs::read_to_string(file).unwrap_or_default();
            if assertion != expected.trim() {
                return refuse(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    700024,
                    "Client assertion is not within its valid time range.",
                );
            }
        }
        let scope = field(&body, "scope").unwrap_or_default();
        let Some(resource) = scope.strip_suffix("/.default") else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                70011,
                "The provided value for scope is not valid.",
            );
        };
        if !on_behalf_of {
            (resource.to_owned(), client_id)
        } else {
            if let Some(claims) = &tokens.interaction_required {
                return json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": "interaction_required",
                        "error_description": "AADSTS50076: Due to a configuration change made by your administrator, you must use multi-factor authentication.",
                        "error_codes": [50076], "claims": claims}),
                );
            }
            // The user's token (verified by whoever sent it; read here).
            let user_token = field(&body, "assertion").unwrap_or_default();
            let payload = user_token
                .split('.')
                .nth(1)
                .and_then(|p| {
                    base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, p)
                        .ok()
                })
                .and_then(|p| serde_json::from_slice::<Value>(&p).ok());
            let Some(user) = payload.filter(|p| p["idtyp"] == "user" || p.get("scp").is_some())
            else {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    7000114,
                    "Application is not allowed to make application on-behalf-of calls.",
                );
            };
            caller_expires = user["exp"].as_u64();
            let subject = user["oid"]
                .as_str()
                .or(user["sub"].as_str())
                .unwrap_or_default();
            (resource.to_owned(), subject.to_owned())
        }
    };
    let key = lock(state).keys.first().cloned();
    let Some(key) = key else {
        return refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            0,
            "The issuer has no key.",
        );
    };
    let now = jsonwebtoken::get_current_timestamp();
    // A derived token never outlives the one it was derived from.
    let lifetime = caller_expires.map_or(tokens.lifetime_secs, |exp| {
        tokens.lifetime_secs.min(exp.saturating_sub(now))
    });
    let token = key.sign(&json!({
        "iss": base, "aud": audience, "sub": subject, "oid": subject, "azp": subject,
        "idtyp": "app", "iat": now, "nbf": now, "exp": now + lifetime,
        "uti": format!("own-{}", tokens.requests),
    }));
    let mut answer = if managed {
        json!({"access_token": token, "expires_in": lifetime.to_string(), "expires_on": (now + lifetime).to_string(),
            "resource": audience, "token_type": "Bearer"})
    } else {
        json!({"token_type": "Bearer", "expires_in": lifetime, "access_token": token})
    };
    if let Some(secs) = tokens.refresh_in {
        answer["refresh_in"] = secs.into();
    }
    json_response(StatusCode::OK, &answer)
}

fn issuer_response(base: &str, state: &Mutex<IssuerState>, path: &str) -> Response<Full<Bytes>> {
    let mut s = lock(state);
    if s.mode == JwksMode::Down {
        return json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"error": "down"}));
    }
    if path == "/.well-known/openid-configuration" {
        let doc = json!({"issuer": base, "jwks_uri": format!("{base}/keys"), "id_token_signing_alg_values_supported": ["RS256"]});
        return json_response(StatusCode::OK, &doc);
    }
    // `/keys` (OIDC), `/{tenant}/discovery/keys` (Entra v1) and
    // `/{tenant}/discovery/v2.0/keys` (Entra v2, keys carry an issuer).
    let per_key_issuer = path
        .ends_with("/discovery/v2.0/keys")
        .then(|| format!("{base}/{{tenantid}}/v2.0"));
    if path == "/keys" || path.ends_with("/discovery/keys") || per_key_issuer.is_some() {
        s.fetches += 1;
        let keys: Vec<Value> = match s.mode {
            JwksMode::Empty => Vec::new(),
            _ => s
                .keys
                .iter()
                .map(|k| {
                    let mut jwk = k.jwk().clone();
                    if let Some(iss) = &per_key_issuer {
                        jwk["issuer"] = Value::String(iss.clone());
                    }
                    jwk
                })
                .collect(),
        };
        return json_response(StatusCode::OK, &json!({ "keys": keys }));
    }
    json_response(StatusCode::NOT_FOUND, &json!({"error": "not found"}))
}

/// An upstream that answers every request with a JSON description of what
/// it received: method, path, query, version, headers and body (read to
/// its end: its length, SHA-256 and, when it is JSON of at most 1 MiB, the
/// JSON itself); or, asked for
/// `Accept: text/event-stream`, with server-sent events: the first at once,
/// then one every `interval_ms` (query, default 100) up to `events`
/// (default 5), each naming its number and the milliseconds since the
/// request, then `data: [DONE]` (with `chunks=N` in the query instead: N
/// chat completion chunks at once, then one with the usage and no choices,
/// as OpenAI and Azure OpenAI stream a completion that asked for its usage);
/// or, asked with `bytes=N` in the query (up to 1 MiB), with a fixed body
/// of N bytes, whatever the request's headers (load benchmarks, whose
/// scenarios must get the same answer).
pub struct EchoUpstream {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EchoUpstream {
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(serve_http(listener, |req: Request<Incoming>| async move {
            let wants_events = req
                .headers()
                .get(header::ACCEPT)
                .is_some_and(|a| a.as_bytes().starts_with(b"text/event-stream"));
            let query = req.uri().query().unwrap_or("");
            if wants_events {
                events(query)
            } else {
                let plain = match query_param(query, "bytes").filter(|n| *n <= MAX_FIXED_BODY) {
                    Some(n) => fixed(n),
                    None => echo_with_body(req).await,
                };
                plain.map(|body| body.map_err(|never| match never {}).boxed())
            }
        }));
        Ok(Self { addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for EchoUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Describes a request as JSON, without its body. Public so tests can
/// reuse the shape.
pub fn echo<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &describe(req))
}

/// [`echo`] with the body read to its end (`body`: `bytes`, `sha256`,
/// `json` when it is JSON of at most 1 MiB, `error` if it broke off).
pub async fn echo_with_body(req: Request<Incoming>) -> Response<Full<Bytes>> {
    const KEEP: usize = 1 << 20;
    let (parts, mut body) = req.into_parts();
    let mut doc = describe(&Request::from_parts(parts, ()));
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let (mut len, mut kept, mut error) = (0u64, Some(Vec::new()), None);
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    hash.update(&data);
                    len += data.len() as u64;
                    kept = kept.filter(|k| k.len() + data.len() <= KEEP).map(|mut k| {
                        k.extend_from_slice(&data);
                        k
                    });
                }
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let sha256: String = hash
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let json = kept
        .filter(|k| !k.is_empty())
        .and_then(|k| serde_json::from_slice::<Value>(&k).ok());
    doc["body"] = json!({"bytes": len, "sha256": sha256, "json": json, "error": error});
    json_response(StatusCode::OK, &doc)
}

fn describe<B>(req: &Request<B>) -> Value {
    let headers: serde_json::Map<String, Value> = req
        .headers()
        .keys()
        .map(|name| {
            let values: Vec<Value> = req
                .headers()
                .get_all(name)
                .iter()
                .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            (name.as_str().to_owned(), Value::Array(values))
        })
        .collect();
    json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    })
}

type EventBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// The largest body `bytes=N` asks for.
const MAX_FIXED_BODY: u64 = 1 << 20;

/// A number in a query string (`name=N`), if it has one.
fn query_param(query: &str, name: &str) -> Option<u64> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
}

/// `n` bytes of a JSON string, the same for every request.
fn fixed(n: u64) -> Response<Full<Bytes>> {
    let n = usize::try_from(n).unwrap_or(0);
    let mut body = vec![b'x'; n];
    if n >= 2 {
        body[0] = b'"';
        body[n - 1] = b'"';
    }
    json_bytes(StatusCode::OK, Bytes::from(body))
}

/// The event stream [`EchoUpstream`] answers with.
fn events(query: &str) -> Response<EventBody> {
    let param = |name: &str, default: u64| query_param(query, name).unwrap_or(default);
    let (count, interval) = (param("events", 5), param("interval_ms", 100));
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Infallible>::new(1);
    if let Some(chunks) = query_param(query, "chunks") {
        tokio::spawn(async move {
            for event in completion_chunks(chunks) {
                if tx.send_data(event).await.is_err() {
                    return;
                }
            }
        });
        return event_stream(body.boxed());
    }
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        for n in 0..count {
            if n > 0 {
                tokio::time::sleep(Duration::from_millis(interval)).await;
            }
            let ms = started.elapsed().as_millis();
            let event = format!("data: {{\"n\":{n},\"ms\":{ms}}}\n\n");
            if tx.send_data(Bytes::from(event)).await.is_err() {
                return;
            }
        }
        let _ = tx.send_data(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    event_stream(body.boxed())
}

/// A streamed chat completion of `n` one-token chunks: each chunk, the
/// usage chunk (`choices: []`), `data: [DONE]`.
fn completion_chunks(n: u64) -> impl Iterator<Item = Bytes> {
    let chunk = |choices: Value, usage: Value| {
        let c = json!({"id": "chatcmpl-dev", "object": "chat.completion.chunk", "created": 0,
            "model": "gpt-4o-mini", "choices": choices, "usage": usage});
        Bytes::from(format!("data: {c}\n\n"))
    };
    let token = chunk(
        json!([{"index": 0, "delta": {"content": "tok"}, "finish_reason": null}]),
        Value::Null,
    );
    let usage = json!({"prompt_tokens": 11, "completion_tokens": n, "total_tokens": 11 + n});
    std::iter::repeat_n(token, usize::try_from(n).unwrap_or(0)).chain([
        chunk(json!([]), usage),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ])
}

fn event_stream(body: EventBody) -> Response<EventBody> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    json_bytes(status, Bytes::from(value.to_string()))
}

fn json_bytes(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serves HTTP/1.1 and HTTP/2 on `listener` with `handler` until aborted.
pub async fn serve_http<H, F, B>(listener: TcpListener, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Why: a streaming upstream must not hold a small event back for
        // the ACK of the previous write (Nagle against delayed ACK: 40 ms).
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::client::legacy::Client;

    #[tokio::test]
    async fn a_fixed_body_does_not_depend_on_the_request() {
        let upstream = EchoUpstream::start().await.unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let get = |query: &'static str, extra: Option<&'static str>| {
            let mut req = Request::get(format!("http://{}/x?{query}", upstream.addr()));
            if let Some(value) = extra {
                req = req.header("x-portcullis-subject", value);
            }
            let fut = client.request(req.body(Full::default()).unwrap());
            async move {
                fut.await
                    .unwrap()
                    .into_body()
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes()
            }
        };
        let plain = get("bytes=600", None).await;
        assert_eq!(plain.len(), 600);
        assert_eq!(plain, get("bytes=600", Some("a-longer-header")).await);
        assert!(serde_json::from_slice::<Value>(&plain).is_ok());
        // Beyond the limit, or not a number: the usual echo.
        for query in ["bytes=1048577", "bytes=many"] {
            let echoed: Value = serde_json::from_slice(&get(query, None).await).unwrap();
            assert_eq!(echoed["query"], query);
        }
    }

    #[test]
    fn a_streamed_completion_ends_with_its_usage_then_done() {
        let events: Vec<Bytes> = completion_chunks(3).collect();
        assert_eq!(events.len(), 5);
        let data = |e: &Bytes| -> Value {
            let text = std::str::from_utf8(e).unwrap();
            serde_json::from_str(text.strip_prefix("data: ").unwrap().trim_end()).unwrap()
        };
        assert_eq!(data(&events[0])["choices"][0]["delta"]["content"], "tok");
        let usage = data(&events[3]);
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["completion_tokens"], 3);
        assert_eq!(events[4], Bytes::from_static(b"data: [DONE]\n\n"));
    }
}
