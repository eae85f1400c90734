//! The serde mirror of the TOML file format. Nothing outside `config/` sees
//! these types: `validate` turns them into [`crate::config::Config`].
//!
//! Every struct denies unknown fields, so a typo is an error, not a default.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    pub upstream: Option<UpstreamFile>,
    #[serde(default)]
    pub issuers: Vec<IssuerFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    #[serde(default)]
    pub token_cache: TokenCacheFile,
    #[serde(default)]
    pub identity_headers: IdentityHeadersFile,
    #[serde(default)]
    pub logging: LoggingFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub realm: Option<String>,
    pub tls: Option<TlsFile>,
    pub drain_timeout: Option<String>,
    pub client_header_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub url: String,
    pub connect_timeout: Option<String>,
    pub response_timeout: Option<String>,
    pub pool_idle_timeout: Option<String>,
    pub http2: Option<bool>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerFile {
    pub name: String,
    pub kind: String,
    // kind = "oidc"
    pub issuer: Option<String>,
    pub discovery_url: Option<String>,
    pub jwks_uri: Option<String>,
    // kind = "entra"
    pub tenants: Option<Vec<String>>,
    pub authority: Option<String>,
    pub token_versions: Option<Vec<String>>,
    pub v1_issuer_host: Option<String>,
    // validation
    #[serde(default)]
    pub audiences: Vec<String>,
    pub algorithms: Option<Vec<String>>,
    pub clock_skew: Option<String>,
    pub max_token_size: Option<usize>,
    pub accepted_typ: Option<Vec<String>>,
    // keys
    pub refresh_interval: Option<String>,
    pub refresh_cooldown: Option<String>,
    pub max_key_staleness: Option<String>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: String,
    pub path: Option<String>,
    pub prefix: Option<String>,
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub issuers: Option<Vec<String>>,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub forward_authorization: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheFile {
    pub enabled: Option<bool>,
    pub capacity: Option<u64>,
    pub ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityHeadersFile {
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub client_app: Option<String>,
    pub scopes: Option<String>,
    pub roles: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingFile {
    pub level: Option<String>,
    pub format: Option<String>,
}
