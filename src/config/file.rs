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
    #[serde(default)]
    pub identity: IdentityFile,
    #[serde(default)]
    pub locations: Vec<LocationFile>,
    #[serde(default)]
    pub agents: Vec<AgentFile>,
    #[serde(default)]
    pub policies: Vec<PolicyFile>,
    pub revocation: Option<RevocationSourceFile>,
    #[serde(default)]
    pub audit: AuditFile,
    #[serde(default)]
    pub limits: LimitsFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_uri_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    pub sink: Option<String>,
    pub file: Option<String>,
    pub max_file_bytes: Option<u64>,
    pub keep_files: Option<usize>,
    pub queue_capacity: Option<usize>,
    pub overflow: Option<String>,
    pub block_timeout: Option<String>,
    pub on_failure: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationSourceFile {
    pub file: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFile {
    pub unregistered_agents: Option<String>,
    pub groups_overage: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocationFile {
    pub name: String,
    pub ranges: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub id: String,
    pub name: String,
    pub owner: Option<String>,
    pub sponsor: Option<String>,
    pub tenant: Option<String>,
    pub expires: Option<String>,
    pub enabled: Option<bool>,
    pub routes: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub permissions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub name: String,
    pub state: Option<String>,
    // assignments
    #[serde(default)]
    pub include_kinds: Vec<String>,
    #[serde(default)]
    pub exclude_kinds: Vec<String>,
    #[serde(default)]
    pub include_agents: Vec<String>,
    #[serde(default)]
    pub exclude_agents: Vec<String>,
    #[serde(default)]
    pub include_client_apps: Vec<String>,
    #[serde(default)]
    pub exclude_client_apps: Vec<String>,
    #[serde(default)]
    pub include_tenants: Vec<String>,
    #[serde(default)]
    pub exclude_tenants: Vec<String>,
    #[serde(default)]
    pub include_groups: Vec<String>,
    #[serde(default)]
    pub exclude_groups: Vec<String>,
    #[serde(default)]
    pub include_roles: Vec<String>,
    #[serde(default)]
    pub exclude_roles: Vec<String>,
    #[serde(default)]
    pub include_wids: Vec<String>,
    #[serde(default)]
    pub exclude_wids: Vec<String>,
    #[serde(default)]
    pub include_routes: Vec<String>,
    #[serde(default)]
    pub exclude_routes: Vec<String>,
    // conditions
    #[serde(default)]
    pub locations: Vec<String>,
    #[serde(default)]
    pub exclude_locations: Vec<String>,
    #[serde(default)]
    pub days: Vec<String>,
    pub hours: Option<String>,
    pub utc_offset: Option<String>,
    pub timezone: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, Vec<String>>,
    pub token_older_than: Option<String>,
    #[serde(default)]
    pub client_capabilities: Vec<String>,
    // grant
    pub grant: String,
    #[serde(default)]
    pub require_scopes: Vec<String>,
    #[serde(default)]
    pub require_roles: Vec<String>,
    #[serde(default)]
    pub require_mfa: bool,
    pub require_auth_context: Option<String>,
    #[serde(default)]
    pub require_acr: Vec<String>,
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
    pub worker_threads: Option<usize>,
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
    #[serde(default)]
    pub strip_headers: Vec<String>,
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
    pub scope_claims: Option<Vec<String>>,
    pub role_claims: Option<Vec<String>>,
    // keys
    pub refresh_interval: Option<String>,
    pub refresh_cooldown: Option<String>,
    pub fetch_timeout: Option<String>,
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
    pub host: Option<String>,
    pub kinds: Option<Vec<String>>,
    pub require: Option<String>,
    #[serde(default)]
    pub allow_without_permissions: bool,
    pub max_body_bytes: Option<u64>,
    pub upgrades: Option<Vec<String>>,
    #[serde(default)]
    pub allow_matrix_params: bool,
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
