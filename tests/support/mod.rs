//! Shared fakes for the integration tests: a real JWKS server with fluent
//! token minting (`TestIdp`), a real upstream (`TestUpstream`), the real
//! gateway on loopback (`TestGateway`), and small HTTP clients.
#![allow(dead_code)] // reason: each test binary uses a different part of this module
#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: fixtures; a failure here is a test failure

pub mod python;
pub mod redis;
pub mod secrets;
pub mod upstream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::Header;
use portcullis::app::Running;
use portcullis::dev::{DevIssuer, JwksMode, SigningKey};
use serde_json::{Value, json};

pub use upstream::TestUpstream;

pub const TENANT: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
pub const OTHER_TENANT: &str = "99998888-7777-6666-5555-444433332222";
pub const AUDIENCE: &str = "api://portcullis";
pub const AUDIENCE_GUID: &str = "11112222-bbbb-3333-cccc-4444dddd5555";

/// A real identity provider on loopback with keys made at test time.
pub struct TestIdp {
    pub server: DevIssuer,
    pub key: SigningKey,
}

impl TestIdp {
    pub async fn start() -> Self {
        let key = SigningKey::rsa("key-1").unwrap();
        let server = DevIssuer::start(vec![key.clone()]).await.unwrap();
        Self { server, key }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The OIDC issuer (same as the URL).
    pub fn issuer(&self) -> String {
        self.server.url()
    }

    /// A token from this IdP's OIDC issuer, valid for 10 minutes.
    pub fn token(&self) -> TokenBuilder {
        TokenBuilder::new(self.key.clone(), self.issuer())
    }

    /// Entra v2 token for `tenant` (issuer `{authority}/{tid}/v2.0`).
    /// An autonomous agent's token, in the shape Entra Agent ID issues:
    /// app-only, the agent its own principal, its blueprint named, with
    /// the app role `Models.Invoke`.
    pub fn agent(&self, agent: &str, blueprint: &str) -> TokenBuilder {
        self.token()
            .without("scp")
            .without("azp")
            .claim("idtyp", "app")
            .claim("appid", agent)
            .claim("oid", agent)
            .claim("roles", json!(["Models.Invoke"]))
            .claim("xms_act_fct", "3 9 11")
            .claim("xms_sub_fct", "9 3 11")
            .claim("xms_par_app_azp", blueprint)
    }

    pub fn entra_v2(&self, tenant: &str) -> TokenBuilder {
        let mut b = TokenBuilder::new(self.key.clone(), format!("{}/{tenant}/v2.0", self.url()));
        b.claims["tid"] = tenant.into();
        b.claims["ver"] = "2.0".into();
        b.claims["aud"] = AUDIENCE_GUID.into();
        b
    }

    /// Entra v1 token for `tenant` (issuer `https://sts.windows.net/{tid}/`).
    pub fn entra_v1(&self, tenant: &str) -> TokenBuilder {
        let mut b = TokenBuilder::new(
            self.key.clone(),
            format!("https://sts.windows.net/{tenant}/"),
        );
        b.claims["tid"] = tenant.into();
        b.claims["ver"] = "1.0".into();
        b.claims["appid"] = b.claims["azp"].take();
        b
    }

    pub fn set_keys(&self, keys: Vec<SigningKey>) {
        self.server.set_keys(keys);
    }

    pub fn set_mode(&self, mode: JwksMode) {
        self.server.set_mode(mode);
    }

    pub fn fetch_count(&self) -> u64 {
        self.server.fetch_count()
    }
}

/// Fluent token minting: `idp.token().scp("x").expires_in(60).sign()`.
#[derive(Clone)]
pub struct TokenBuilder {
    key: SigningKey,
    pub header: Header,
    pub claims: Value,
}

impl TokenBuilder {
    fn new(key: SigningKey, iss: String) -> Self {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        let claims = json!({
            "iss": iss, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 600,
            "tid": TENANT, "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474", "sub": "subject-1",
            "azp": "00001111-aaaa-2222-bbbb-3333cccc4444", "idtyp": "user", "scp": "Models.Invoke",
            "uti": "fqiBqXLPj0eQa82S-IYFAA",
        });
        let header = key.header();
        Self {
            key,
            header,
            claims,
        }
    }

    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims[name] = value.into();
        self
    }
    pub fn without(mut self, name: &str) -> Self {
        if let Some(m) = self.claims.as_object_mut() {
            m.remove(name);
        }
        self
    }
    pub fn aud(self, aud: &str) -> Self {
        self.claim("aud", aud)
    }
    pub fn scp(self, scp: &str) -> Self {
        self.claim("scp", scp)
    }
    pub fn roles(self, roles: &[&str]) -> Self {
        self.without("scp")
            .claim("roles", json!(roles))
            .claim("idtyp", "app")
    }
    pub fn expires_in(self, secs: i64) -> Self {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        self.claim("exp", now + secs)
    }
    pub fn not_before_in(self, secs: i64) -> Self {
        let now = jsonwebtoken::get_current_timestamp() as i64;
        self.claim("nbf", now + secs)
    }
    pub fn key(mut self, key: &SigningKey) -> Self {
        self.header = key.header();
        self.key = key.clone();
        self
    }
    pub fn header(mut self, edit: impl FnOnce(&mut Header)) -> Self {
        edit(&mut self.header);
        self
    }
    pub fn sign(&self) -> String {
        let token = self.key.sign_with(&self.header, &self.claims);
        secrets::remember(&token);
        token
    }
}

/// The real gateway, started in-process from config text. Unless the
/// config says otherwise, it audits to `audit.jsonl` in its directory; on
/// drop, that file and every log line so far are scanned for any token or
/// Authorization value a test sent.
pub struct TestGateway {
    /// `None` once [`TestGateway::stop`] took it.
    running: Option<Running>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let audit = std::fs::read_to_string(self.audit_path()).unwrap_or_default();
        secrets::assert_absent("audit records", &audit);
        secrets::assert_logs_clean();
    }
}

impl TestGateway {
    /// Starts the gateway and waits until every issuer's keys are loaded.
    pub async fn start(config: &str) -> Self {
        let gw = Self::start_unready(config).await;
        tokio::time::timeout(Duration::from_secs(10), gw.running().wait_ready())
            .await
            .expect("keys loaded");
        gw
    }

    /// Starts the gateway without waiting for keys.
    pub async fn start_unready(config: &str) -> Self {
        secrets::capture_logs();
        let dir = temp_dir();
        let config = portcullis::config::parse(&with_audit(config), dir.path())
            .unwrap_or_else(|e| panic!("config: {e}"));
        Self::run(config, dir).await
    }

    /// Starts the gateway from `gateway.toml` in a fresh directory (so that
    /// it can reload), and waits for its keys.
    pub async fn start_file(config: &str) -> Self {
        secrets::capture_logs();
        let dir = temp_dir();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, with_audit(config)).unwrap();
        let config = portcullis::config::load(&path).unwrap_or_else(|e| panic!("config: {e}"));
        let gw = Self::run(config, dir).await;
        tokio::time::timeout(Duration::from_secs(10), gw.running().wait_ready())
            .await
            .expect("keys loaded");
        gw
    }

    /// Replaces `gateway.toml` the way editors do (write, then rename).
    pub fn rewrite(&self, config: &str) {
        let tmp = self.dir.path().join(".gateway.toml.tmp");
        std::fs::write(&tmp, with_audit(config)).unwrap();
        std::fs::rename(&tmp, self.dir.path().join("gateway.toml")).unwrap();
    }

    /// The value of one series in a scrape of `/metrics`, e.g.
    /// `gateway_config_reloads_total{result="failed"}`.
    pub async fn metric(&self, series: &str) -> u64 {
        let (_, metrics) = self.admin_get("/metrics").await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{metrics}"))
            .parse()
            .unwrap()
    }

    /// `POST /reload` on the admin port: status and JSON answer.
    pub async fn post_reload(&self) -> (StatusCode, Value) {
        let resp = send(
            Request::post(format!("http://{}/reload", self.admin))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        let status = resp.status();
        (status, serde_json::from_str(&text(resp).await).unwrap())
    }

    /// `POST /reload`, expected to be refused (422): its errors, as text.
    pub async fn refused_reload(&self) -> String {
        let (status, answer) = self.post_reload().await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        answer["errors"].to_string()
    }

    async fn run(config: portcullis::config::Config, dir: tempfile::TempDir) -> Self {
        let running = portcullis::app::start(config).await.unwrap();
        Self {
            addr: running.addr,
            admin: running.admin_addr,
            running: Some(running),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Shuts down as SIGTERM does (drain, cut, flush the audit trail) and
    /// returns every audit record.
    pub async fn stop(&mut self) -> Vec<Value> {
        let running = self.running.take().expect("running");
        running.shutdown();
        tokio::time::timeout(Duration::from_secs(30), running.join())
            .await
            .expect("stopped in time");
        read_records(&self.audit_path())
    }

    /// The default audit file (see [`TestGateway`]).
    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// Waits until at least `n` records are written, then returns every
    /// record in the audit file.
    pub async fn audit_records(&self, n: u64) -> Vec<Value> {
        let mut progress = self.running().audit().expect("audit is on").progress();
        tokio::time::timeout(
            Duration::from_secs(10),
            progress.wait_for(|p| p.written >= n),
        )
        .await
        .unwrap_or_else(|_| panic!("{n} audit records in time"))
        .unwrap();
        read_records(&self.audit_path())
    }

    /// `GET` on the admin port, body as text.
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let resp = send(
            Request::get(format!("http://{}{path}", self.admin))
                .body(Full::default())
                .unwrap(),
        )
        .await;
        let status = resp.status();
        (status, text(resp).await)
    }
}

/// `config` with the default audit section (a file in the gateway's
/// directory) unless it has its own.
fn with_audit(config: &str) -> String {
    if config.contains("[audit]") {
        config.to_owned()
    } else {
        format!("{config}\n[audit]\nsink = \"file\"\nfile = \"audit.jsonl\"\n")
    }
}

/// An audit sink that fails every write with ENOSPC: a full disk, for real.
pub const FULL_DISK_AUDIT: &str = "[audit]\nsink = \"file\"\nfile = \"/dev/full\"\n";

/// Sends a first request to a gateway auditing to [`FULL_DISK_AUDIT`] and
/// waits for its record to fail: admitted while the sink looked healthy,
/// it leaves the sink known to be failing.
pub async fn fail_the_audit_sink(gw: &TestGateway, token: &str) {
    assert_eq!(
        get(&gw.url("/x"), Some(token)).await.status(),
        StatusCode::OK
    );
    let mut progress = gw.running().audit().unwrap().progress();
    progress.wait_for(|p| p.failures >= 1).await.unwrap();
}

/// The gateway with the default OIDC issuer of `idp` and [`DEFAULT_ROUTES`].
pub async fn default_gateway(idp: &TestIdp, upstream: &TestUpstream) -> TestGateway {
    TestGateway::start(&config(
        upstream.addr,
        &oidc_issuer(idp, ""),
        DEFAULT_ROUTES,
    ))
    .await
}

/// A test IdP, a test upstream and the default gateway in front of it.
pub async fn default_stack() -> (TestIdp, TestUpstream, TestGateway) {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let gw = default_gateway(&idp, &upstream).await;
    (idp, upstream, gw)
}

/// Gateway config lines for the common case: loopback listeners on free
/// ports, the plain-HTTP upstream at `upstream`, then `issuers` and `routes`.
pub fn config(upstream: SocketAddr, issuers: &str, routes: &str) -> String {
    config_to(
        &format!("url = \"http://{upstream}\"\nresponse_timeout = \"2s\""),
        issuers,
        routes,
    )
}

/// [`config`] with the lines of its own `[upstream]` table.
pub fn config_to(upstream: &str, issuers: &str, routes: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
realm = "test"
drain_timeout = "5s"

[upstream]
{upstream}

{issuers}

{routes}
"#
    )
}

/// An OIDC issuer entry for `idp`.
pub fn oidc_issuer(idp: &TestIdp, extra: &str) -> String {
    format!(
        r#"
[[issuers]]
name = "idp"
kind = "oidc"
issuer = "{}"
audiences = ["{AUDIENCE}"]
refresh_cooldown = "1h"
{extra}
"#,
        idp.issuer()
    )
}

/// A catch-all route requiring scope or role `Models.Invoke`, plus a public `/health`.
pub const DEFAULT_ROUTES: &str = r#"
[[routes]]
name = "health"
prefix = "/health"
public = true

[[routes]]
name = "api"
prefix = "/"
scopes = ["Models.Invoke"]
roles = ["Models.Invoke"]
"#;

/// One HTTP/1 connection to `addr`, driven in the background: every
/// request sent on it uses that connection.
pub async fn http1_connection(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Every record of a JSON Lines file.
pub fn read_records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

pub async fn send(req: Request<Full<Bytes>>) -> Response<hyper::body::Incoming> {
    for v in req.headers().get_all("authorization") {
        secrets::remember(&String::from_utf8_lossy(v.as_bytes()));
    }
    tokio::time::timeout(Duration::from_secs(20), client().request(req))
        .await
        .expect("response in time")
        .expect("request sent")
}

/// `GET url` with an optional bearer token.
pub async fn get(url: &str, token: Option<&str>) -> Response<hyper::body::Incoming> {
    let mut req = Request::get(url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    send(req.body(Full::default()).unwrap()).await
}

pub async fn text(resp: Response<hyper::body::Incoming>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The upstream's echo of what it received.
pub async fn echoed(resp: Response<hyper::body::Incoming>) -> Value {
    assert_eq!(resp.status(), StatusCode::OK);
    serde_json::from_str(&text(resp).await).unwrap()
}

pub fn challenge(headers: &HeaderMap) -> Option<String> {
    headers
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A fresh directory for files a test writes, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("portcullis-test-")
        .tempdir()
        .unwrap()
}

/// A revocation file in a directory of its own, nothing revoked at first,
/// replaced the way editors and ConfigMaps replace files: write, then
/// rename.
pub struct RevocationFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl RevocationFile {
    pub fn new() -> Self {
        let dir = temp_dir();
        let path = dir.path().join("revoked.toml");
        std::fs::write(&path, "# nothing revoked yet\n").unwrap();
        Self { _dir: dir, path }
    }

    /// The config lines that name it.
    pub fn config(&self) -> String {
        format!("\n[revocation]\nfile = \"{}\"\n", self.path.display())
    }

    /// Replaces its text: write beside it, then rename over it.
    pub fn replace(&self, text: &str) {
        let staged = self.path.with_extension("toml.tmp");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, &self.path).unwrap();
    }
}
