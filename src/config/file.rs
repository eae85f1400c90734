//! The serde mirror of the TOML file format. Nothing outside `config/` sees
//! these types: `validate` turns them into [`crate::config::Config`].
//!
//! Every struct denies unknown fields, so a typo is an error, not a default.
//! Required strings default to empty here, so that `validate` reports them
//! missing with the other errors; [`read`] reports every unknown key and
//! every wrong type, not only the first.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::{ConfigError, ConfigErrors};

/// More structural errors than this in one file: stop listing them.
const MAX_STRUCTURAL_ERRORS: usize = 100;

/// Reads the file: its syntax (the first error stops here, with its line),
/// then its shape. Each unknown key or value of the wrong type is reported
/// with its path and left out, and the rest is read again, so that the
/// caller can go on to validate what is left and report everything at once.
pub fn read(text: &str) -> Result<(FileConfig, Vec<ConfigError>), ConfigErrors> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            message: e.to_string().trim_end().to_owned(),
        }])
    })?;
    let mut errors = Vec::new();
    loop {
        let value = toml::Value::Table(table.clone());
        let e = match serde_path_to_error::deserialize::<_, FileConfig>(value) {
            Ok(file) => return Ok((file, errors)),
            Err(e) => e,
        };
        let segments: Vec<&serde_path_to_error::Segment> = e.path().iter().collect();
        errors.push(ConfigError {
            path: e.path().to_string(),
            // TOML calls them keys.
            message: e
                .inner()
                .message()
                .replacen("unknown field", "unknown key", 1),
        });
        if errors.len() >= MAX_STRUCTURAL_ERRORS || !remove(&mut table, &segments) {
            return Err(ConfigErrors(errors));
        }
    }
}

/// Removes the key `path` names; for an element of an array, the whole
/// array (removing one element would renumber the others' paths).
fn remove(table: &mut toml::Table, path: &[&serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment::{Map, Seq};
    match path {
        [Map { key }] | [Map { key }, Seq { .. }] => table.remove(key).is_some(),
        [Map { key }, Seq { index }, rest @ ..] => match table.get_mut(key) {
            Some(toml::Value::Array(items)) => match items.get_mut(*index) {
                Some(toml::Value::Table(inner)) => remove(inner, rest),
                _ => false,
            },
            _ => false,
        },
        [Map { key }, rest @ ..] => match table.get_mut(key) {
            Some(toml::Value::Table(inner)) => remove(inner, rest),
            _ => false,
        },
        _ => false,
    }
}

/// A size in bytes: a whole number, or a string with a unit (`"64KiB"`,
/// `"1 MiB"`, `"10MB"`: binary and decimal units, case-insensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Size;
        impl Visitor<'_> for Size {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string like \"64KiB\" or \"1MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse::<bytesize::ByteSize>()
                    .map(|b| ByteSize(b.as_u64()))
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(Size)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    pub upstream: Option<UpstreamFile>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamFile>,
    #[serde(default)]
    pub credentials: Vec<CredentialFile>,
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
    #[serde(default)]
    pub mcp_rules: Vec<McpRuleFile>,
    #[serde(default)]
    pub budgets: Vec<BudgetFile>,
    #[serde(default)]
    pub metering: MeteringFile,
    pub budget_store: Option<BudgetStoreFile>,
    pub revocation: Option<RevocationSourceFile>,
    #[serde(default)]
    pub streams: StreamsFile,
    #[serde(default)]
    pub audit: AuditFile,
    #[serde(default)]
    pub limits: LimitsFile,
}

/// `[streams]`: how long an admitted exchange may stay open.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsFile {
    pub exp_grace: Option<String>,
    pub sse_retry: Option<String>,
    pub reevaluate_on_reload: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_header_bytes: Option<ByteSize>,
    pub max_headers: Option<usize>,
    pub max_uri_bytes: Option<ByteSize>,
    pub max_connections: Option<usize>,
    pub max_concurrent_streams: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    pub sink: Option<String>,
    pub file: Option<String>,
    pub max_file_bytes: Option<ByteSize>,
    pub keep_files: Option<usize>,
    pub queue_capacity: Option<usize>,
    pub overflow: Option<String>,
    pub block_timeout: Option<String>,
    pub on_failure: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationSourceFile {
    #[serde(default)]
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
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub ranges: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
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
    pub tools: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    #[serde(default)]
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
    #[serde(default)]
    pub models: Vec<String>,
    // grant
    #[serde(default)]
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
    #[serde(default)]
    pub cert: String,
    #[serde(default)]
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub name: Option<String>,
    #[serde(default)]
    pub url: String,
    pub host_header: Option<String>,
    pub credential: Option<String>,
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
    #[serde(default)]
    pub name: String,
    #[serde(default)]
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
    pub max_token_size: Option<ByteSize>,
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
    #[serde(default)]
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
    pub max_body_bytes: Option<ByteSize>,
    pub upgrades: Option<Vec<String>>,
    #[serde(default)]
    pub allow_matrix_params: bool,
    pub mcp: Option<McpRouteFile>,
    pub model: Option<ModelRouteFile>,
    pub upstream: Option<String>,
    pub max_stream_duration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialFile {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    pub scope: Option<String>,
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    pub token_file: Option<String>,
    pub authority: Option<String>,
    pub endpoint: Option<String>,
    pub refresh_before: Option<String>,
    pub client: Option<String>,
    pub certificate: Option<String>,
    pub key: Option<String>,
    pub secret_file: Option<String>,
    pub allow_client_secret: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRouteFile {
    pub models: Option<Vec<String>>,
    pub on_expiry: Option<String>,
    pub max_finish: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub key: Vec<String>,
    pub tokens_per_minute: Option<u64>,
    pub tokens: Option<u64>,
    pub period: Option<String>,
    pub count: Option<String>,
    pub weights: Option<WeightsFile>,
    pub routes: Option<Vec<String>>,
    pub models: Option<Vec<String>>,
    pub kinds: Option<Vec<String>>,
    pub mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightsFile {
    pub input: Option<f64>,
    pub cached_input: Option<f64>,
    pub output: Option<f64>,
    pub reasoning: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeteringFile {
    pub reserve: Option<String>,
    pub max_output_tokens: Option<u64>,
    pub inject_include_usage: Option<bool>,
    pub remaining_header: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetStoreFile {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub prefix: Option<String>,
    pub timeout: Option<String>,
    pub on_error: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpRouteFile {
    #[serde(default)]
    pub resource: String,
    pub scopes_supported: Option<Vec<String>>,
    pub authorization_servers: Option<Vec<String>>,
    pub allowed_origins: Option<Vec<String>>,
    pub hide_denied: Option<bool>,
    pub bind_sessions: Option<bool>,
    pub rules: Option<String>,
    pub session_idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpRuleFile {
    #[serde(default)]
    pub route: String,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub prompts: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub kinds: Option<Vec<String>>,
    pub agents: Option<Vec<String>>,
    pub calls_per_minute: Option<u32>,
    #[serde(default)]
    pub arguments: Vec<McpArgumentFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpArgumentFile {
    #[serde(default)]
    pub pointer: String,
    #[serde(default)]
    pub r#in: Vec<String>,
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
