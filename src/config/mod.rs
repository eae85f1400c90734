//! Configuration: the TOML file in, a validated [`Config`] out.
//!
//! [`load`] and [`parse`] are the only ways in. They have no side effects (no
//! sockets, no key fetches) and report every error with its path, such as
//! `issuers[1].audiences: must not be empty`, so `portcullis check` and a
//! reload can refuse a bad file before anything changes.

mod file;
mod validate;

pub use validate::{entra_v1_issuer, entra_v2_issuer, is_guid};

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use ipnet::IpNet;
use jsonwebtoken::Algorithm;

/// A validated configuration. Every field is ready to use: durations are
/// durations, URLs are parsed, header names are valid, sets are non-empty
/// where they must be.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub issuers: Vec<IssuerConfig>,
    pub routes: Vec<RouteConfig>,
    pub token_cache: TokenCacheConfig,
    pub identity_headers: IdentityHeaders,
    pub logging: LoggingConfig,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The `realm` of every `WWW-Authenticate` challenge.
    pub realm: String,
    pub tls: Option<TlsConfig>,
    /// How long in-flight requests may run after SIGTERM before they are cut.
    pub drain_timeout: Duration,
    /// A client must send a complete request header within this time
    /// (slowloris protection).
    pub client_header_timeout: Duration,
    /// An HTTP/2 connection that answers no PING for this long is closed.
    pub idle_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is appended to rather than replaced.
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Scheme and authority only; the request's path and query are appended.
    pub url: Uri,
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers. Bodies (streams)
    /// have no total timeout.
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// HTTP/2 to the upstream: prior knowledge on `http`, ALPN on `https`.
    pub http2: bool,
    pub ca_file: Option<PathBuf>,
}

/// One `[[issuers]]` entry: where its keys come from and how its tokens are
/// validated.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    pub name: String,
    pub source: IssuerSource,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew: Duration,
    pub max_token_size: usize,
    pub accepted_typ: Vec<String>,
    pub keys: KeyFetchConfig,
}

#[derive(Debug, Clone)]
pub enum IssuerSource {
    /// Any OpenID provider: one exact `iss`, keys from discovery or a JWKS URL.
    Oidc { issuer: String, keys: KeyLocation },
    /// Microsoft Entra: one or more tenants (one = tenant mode, several =
    /// multi-tenant with an allowlist), each accepted in the v1 and/or v2
    /// issuer shape with its own key set.
    Entra {
        tenants: Vec<String>,
        authority: Uri,
        v1_issuer_host: String,
        accept_v1: bool,
        accept_v2: bool,
    },
}

#[derive(Debug, Clone)]
pub enum KeyLocation {
    Discovery(Uri),
    Jwks(Uri),
}

#[derive(Debug, Clone)]
pub struct KeyFetchConfig {
    pub refresh_interval: Duration,
    /// Minimum time between on-demand refreshes caused by an unknown `kid`.
    pub refresh_cooldown: Duration,
    /// Keys older than this are dropped and requests get 503.
    pub max_staleness: Duration,
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub matcher: RouteMatch,
    /// `None` means every method.
    pub methods: Option<Vec<Method>>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// Issuer names accepted on this route; `None` means every issuer.
    pub issuers: Option<Vec<String>>,
    pub public: bool,
    pub forward_authorization: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// A template with `{name}` parameters, matched exactly.
    Template(String),
    /// Everything at or below this path.
    Prefix(String),
}

#[derive(Debug, Clone)]
pub struct TokenCacheConfig {
    pub enabled: bool,
    pub capacity: u64,
    pub ttl: Duration,
}

/// Headers that carry the verified identity upstream. Inbound copies are
/// always removed first.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub subject: HeaderName,
    pub tenant: HeaderName,
    pub client_app: HeaderName,
    pub scopes: HeaderName,
    pub roles: HeaderName,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub level: String,
    pub json: bool,
}

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every error found in a config, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a config file. Relative paths inside it (TLS files,
/// CA files) are resolved against the file's directory.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        }])
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base)
}

/// Validates config text; `base` resolves relative file paths.
pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let file: file::FileConfig = toml::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: e.to_string().trim_end().to_owned(),
        }])
    })?;
    validate::validate(file, base)
}
