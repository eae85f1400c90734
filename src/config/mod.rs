//! Configuration: the TOML file in, a validated [`Config`] out.
//!
//! [`load`] and [`parse`] are the only ways in. They have no side effects (no
//! sockets, no key fetches) and report every error with its path, such as
//! `issuers[1].audiences: must not be empty`, so `portcullis check` and a
//! reload can refuse a bad file before anything changes.

mod claim_path;
mod file;
mod header_name;
mod validate;

pub use claim_path::{ClaimPath, ClaimSources, IssuerKind};
pub use header_name::{HeaderPattern, is_spelled_as, normalize_header_name};

pub use validate::is_guid;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// Where requests go: `[upstream]` (named `default`) and every
    /// `[[upstreams]]` entry, in file order; never empty.
    pub upstreams: Vec<UpstreamConfig>,
    /// The gateway's own Entra credentials, for upstreams.
    pub credentials: Vec<CredentialConfig>,
    pub issuers: Vec<IssuerConfig>,
    pub routes: Vec<RouteConfig>,
    pub token_cache: TokenCacheConfig,
    pub identity_headers: IdentityHeaders,
    pub logging: LoggingConfig,
    pub identity: IdentitySettings,
    pub locations: Vec<Location>,
    /// Shared with the snapshot's registry as they are.
    pub agents: Vec<Arc<AgentConfig>>,
    pub policies: Vec<PolicyConfig>,
    /// Which tools, prompts and resources of MCP routes a call may reach.
    pub mcp_rules: Vec<McpRule>,
    /// Token budgets on model routes.
    pub budgets: Vec<BudgetConfig>,
    /// How model requests are reserved for and their usage read.
    pub metering: MeteringConfig,
    /// Where budget counters live (and MCP session bindings, with Redis).
    pub budget_store: BudgetStoreConfig,
    /// The revocation list, watched and applied on change.
    pub revocation_file: Option<PathBuf>,
    /// How long admitted exchanges may stay open, and what ends them.
    pub streams: StreamsConfig,
    pub audit: AuditConfig,
    pub limits: Limits,
    /// Digest of the file's text: names this generation in `/readyz`,
    /// metrics and every audit record.
    pub version: String,
    /// The file it was loaded from (`None` when parsed from text): what a
    /// reload reads again.
    pub source: Option<PathBuf>,
    /// Problems that do not stop the gateway (orphaned agents); `check`
    /// prints them.
    pub warnings: Vec<ConfigError>,
}

/// Identity kinds as named in the config (`kinds`, `include_kinds`).
pub const IDENTITY_KINDS: [&str; 4] = ["user", "app", "agent", "agent_user"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentitySettings {
    /// Agents not in `[[agents]]`: refused unless this is true.
    pub allow_unregistered_agents: bool,
    /// Groups overage (membership unknown): deny group-gated requests, or
    /// treat group conditions as not matching.
    pub deny_on_groups_overage: bool,
}

/// A named set of client address ranges, used by policy conditions.
#[derive(Debug, Clone)]
pub struct Location {
    pub name: String,
    pub ranges: Vec<IpNet>,
}

/// One governed agent identity.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The agent identity's app id (`azp`/`appid`), lower case.
    pub id: String,
    pub name: String,
    pub owner: Option<String>,
    pub sponsor: Option<String>,
    /// Tenant the agent lives in; when set, `tid` must match.
    pub tenant: Option<String>,
    pub expires: Option<std::time::SystemTime>,
    pub enabled: bool,
    /// Route names it may reach; `None` means every route.
    pub routes: Option<Vec<String>>,
    pub methods: Option<Vec<Method>>,
    /// Route parameter allowlists, e.g. `deployment = ["gpt-4o-mini"]`.
    pub params: Vec<(String, Vec<String>)>,
    /// Scopes or roles the token must hold, all of them, on top of the route's.
    pub permissions: Vec<String>,
    /// MCP tools (patterns) it may call, on top of the MCP rules; `None`
    /// for whatever the rules allow.
    pub tools: Option<Vec<String>>,
    /// Models (patterns) it may call on model routes; `None` for any.
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyState {
    On,
    ReportOnly,
    Off,
}

/// A conditional-access policy: who and what it applies to, and its grant.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    pub name: String,
    pub state: PolicyState,
    pub assignments: Assignments,
    pub conditions: Conditions,
    pub grant: PolicyGrant,
}

/// Include/exclude lists; an empty include list means "all".
#[derive(Debug, Clone, Default)]
pub struct Assignments {
    pub include_kinds: Vec<String>,
    pub exclude_kinds: Vec<String>,
    pub include_agents: Vec<String>,
    pub exclude_agents: Vec<String>,
    pub include_client_apps: Vec<String>,
    pub exclude_client_apps: Vec<String>,
    pub include_tenants: Vec<String>,
    pub exclude_tenants: Vec<String>,
    pub include_groups: Vec<String>,
    pub exclude_groups: Vec<String>,
    pub include_roles: Vec<String>,
    pub exclude_roles: Vec<String>,
    pub include_wids: Vec<String>,
    pub exclude_wids: Vec<String>,
    pub include_routes: Vec<String>,
    pub exclude_routes: Vec<String>,
}

/// Conditions narrow where a policy applies; every one given must hold.
#[derive(Debug, Clone)]
pub struct Conditions {
    pub locations: Vec<String>,
    pub exclude_locations: Vec<String>,
    /// Days of the week, 0 = Monday.
    pub days: Vec<u8>,
    /// Minutes after midnight, [start, end); end < start wraps midnight.
    pub hours: Option<(u16, u16)>,
    /// The zone `days` and `hours` are read in (UTC unless configured).
    pub timezone: jiff::tz::TimeZone,
    pub methods: Vec<Method>,
    pub params: Vec<(String, Vec<String>)>,
    pub token_older_than: Option<Duration>,
    pub client_capabilities: Vec<String>,
    /// Effective models (patterns) on model routes: a policy with this
    /// condition is decided once the request's model is read.
    pub models: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyGrant {
    Block,
    /// Allow only if the token meets every requirement.
    Require {
        scopes: Vec<String>,
        roles: Vec<String>,
        mfa: bool,
        auth_context: Option<String>,
        /// Accepted `acr` values (v1 tokens; "1" = ISO/IEC 29115 level met).
        acr: Vec<String>,
    },
}

/// Where audit records go and what happens when they cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub stdout: bool,
    pub file: Option<AuditFileConfig>,
    /// What a reload changes live (the sinks need a restart).
    pub policy: AuditPolicy,
}

/// How the audit trail treats a full queue or a failing sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditPolicy {
    /// Records waiting for the writer before new requests wait (or records
    /// are dropped, with `overflow = "drop"`).
    pub queue_capacity: usize,
    pub overflow: AuditOverflow,
    pub on_failure: AuditFailure,
}

impl AuditConfig {
    pub fn is_enabled(&self) -> bool {
        self.stdout || self.file.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFileConfig {
    pub path: PathBuf,
    /// Rotate when the file reaches this size; 0 never rotates.
    pub max_bytes: u64,
    /// Rotated files kept (`audit.log.1` … `audit.log.N`).
    pub keep: usize,
}

/// A full queue: wait for room (bounded, then 503), or drop and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditOverflow {
    Block(Duration),
    Drop,
}

/// A sink that cannot be written: refuse requests (503) or carry on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFailure {
    Deny,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Runtime worker threads; `None`: one per CPU the process may use
    /// (its affinity and cgroup CPU quota).
    pub worker_threads: Option<usize>,
}

/// `[limits]`: what one client may send and hold open. Beyond a limit the
/// request gets its status (431, 414, 413) and never reaches the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The request line and headers together (HTTP/2: the decoded header
    /// list); 431 beyond it.
    pub max_header_bytes: usize,
    /// Header fields in one HTTP/1.1 request; 431 beyond it.
    pub max_headers: usize,
    /// The path and query; 414 beyond it. Changes live.
    pub max_uri_bytes: usize,
    /// Open client connections; further ones wait in the listen backlog
    /// until one closes.
    pub max_connections: usize,
    /// Concurrent streams on one HTTP/2 connection.
    pub max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_connections: 4096,
            max_concurrent_streams: 256,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    /// `default` for `[upstream]`; routes name the others.
    pub name: String,
    /// Scheme and authority only; the request's path and query are appended.
    pub url: Uri,
    /// The `Host` the upstream gets: the client's (a sidecar's local
    /// server), or the upstream's own (a service on its own name, such as
    /// an Azure OpenAI resource).
    pub host_header: HostHeader,
    /// Removed from every request to this upstream before it is forwarded.
    pub strip_headers: Vec<HeaderPattern>,
    /// The gateway's own credential for it: an index into
    /// [`Config::credentials`]; the caller's `Authorization` and `api-key`
    /// never reach it.
    pub credential: Option<usize>,
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers. Bodies (streams)
    /// have no total timeout.
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    /// HTTP/2 to the upstream: prior knowledge on `http`, ALPN on `https`.
    pub http2: bool,
    pub ca_file: Option<PathBuf>,
}

/// One `[[credentials]]` entry: how the gateway gets a token of its own
/// for `scope`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialConfig {
    pub name: String,
    pub source: CredentialSource,
    /// `<resource>/.default`: what the token is for.
    pub scope: String,
    /// A token with less than this left is not used (and is refreshed
    /// before then).
    pub refresh_before: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// The client credentials grant at `token_url`, the gateway's app
    /// authenticated by `auth` (workload identity, a certificate, a secret).
    ClientCredentials {
        token_url: Uri,
        client_id: String,
        auth: ClientAuth,
    },
    /// A managed identity: the instance metadata endpoint (or the App
    /// Service / Container Apps identity endpoint), asked for `resource`.
    ManagedIdentity {
        endpoint: Uri,
        /// A user-assigned identity; `None` for the system-assigned one.
        client_id: Option<String>,
        /// `X-IDENTITY-HEADER` (App Service, Container Apps), read from
        /// `IDENTITY_HEADER` at start; `None` for IMDS (`Metadata: true`).
        identity_header: Option<String>,
    },
    /// On-behalf-of: the caller's (delegated, user) token exchanged for
    /// one to `scope`, the gateway authenticating as the `client`
    /// credential's app.
    OnBehalfOf {
        token_url: Uri,
        client_id: String,
        auth: ClientAuth,
    },
}

/// How the gateway's app proves itself at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// Kubernetes workload identity: the projected service-account token
    /// as client assertion, re-read for every exchange.
    FederatedToken(PathBuf),
    /// A client assertion the gateway signs with a certificate's key
    /// (both read for every exchange: they are rotated in place).
    Certificate { certificate: PathBuf, key: PathBuf },
    /// A client secret, read from a file for every exchange (allowed only
    /// with `allow_client_secret`).
    Secret(PathBuf),
}

impl CredentialSource {
    pub fn is_on_behalf_of(&self) -> bool {
        matches!(self, Self::OnBehalfOf { .. })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostHeader {
    Client,
    Upstream,
}

/// One `[[issuers]]` entry: where its keys come from and how its tokens are
/// validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerConfig {
    pub name: String,
    /// Every exact `iss` this entry accepts, with where its keys are: one
    /// for OIDC; for Entra, per tenant, one per accepted token version.
    pub anchors: Vec<IssuerAnchor>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub clock_skew: Duration,
    pub max_token_size: usize,
    pub accepted_typ: Vec<String>,
    pub keys: KeyFetchConfig,
    /// Entra's rules (tenant, token version, agent facets) or plain OIDC.
    pub kind: IssuerKind,
    /// Where this issuer's tokens carry scopes and roles.
    pub claims: ClaimSources,
}

/// One exact `iss` value, its key endpoint and the key `issuer` values
/// that may sign for it. Computed once when the config is validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerAnchor {
    pub iss: String,
    /// Names the key source in logs and metrics: `name`, or
    /// `name/tenant/v1|v2` for Entra.
    pub label: String,
    /// Entra tenant the `tid` claim must equal.
    pub tenant: Option<String>,
    /// Expected `ver` claim (Entra: "1.0" or "2.0").
    pub version: Option<&'static str>,
    pub keys: KeyLocation,
    /// What a key's own `issuer` may say (after `{tenantid}` substitution).
    pub key_issuers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    Discovery(Uri),
    Jwks(Uri),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFetchConfig {
    pub refresh_interval: Duration,
    /// Minimum time between on-demand refreshes caused by an unknown `kid`.
    pub refresh_cooldown: Duration,
    /// Keys older than this are dropped and requests get 503.
    pub max_staleness: Duration,
    /// One discovery or JWKS request, from sending it to its last byte.
    pub fetch_timeout: Duration,
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
    /// Exact `Host` (without port) this route answers; `None` for any.
    pub host: Option<String>,
    /// Identity kinds allowed; `None` for all.
    pub kinds: Option<Vec<String>>,
    /// Scopes and roles: all of them (true) or any one (false).
    pub require_all: bool,
    /// Accept a token with neither `scp` nor `roles`.
    pub allow_without_permissions: bool,
    /// The request body's size limit; 413 beyond it. `None`: no limit
    /// (streams and uploads of any size).
    pub max_body_bytes: Option<u64>,
    /// Protocols a client may switch to through this route (the `Upgrade`
    /// header's names, lower-cased).
    pub upgrades: Vec<String>,
    /// Path segments may carry `;` parameters (never on `.` or `..`).
    pub allow_matrix_params: bool,
    /// The route is an MCP server's endpoint, and the gateway its resource
    /// server.
    pub mcp: Option<McpRoute>,
    /// The route is a model API: each request's model is read, its usage
    /// metered and its budgets enforced.
    pub model: Option<ModelRoute>,
    /// Where its requests go: an index into [`Config::upstreams`].
    pub upstream: usize,
    /// The longest an exchange through it may stay open (a stream, a
    /// WebSocket); `None`: as long as its access lasts.
    pub max_stream_duration: Option<Duration>,
}

/// A model API route's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRoute {
    /// Models (patterns, `*` for any run of characters) the route serves;
    /// `None` for any.
    pub models: Option<Vec<String>>,
    /// What a streamed answer does when its access runs out.
    pub on_expiry: OnExpiry,
}

/// What a model answer still streaming at its deadline does: finish (up
/// to a bound: a paid answer cut half-way helps no one) or end at once.
/// A revocation always ends it at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExpiry {
    Finish(Duration),
    Cut,
}

impl Default for OnExpiry {
    fn default() -> Self {
        Self::Finish(Duration::from_secs(300))
    }
}

/// `[streams]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamsConfig {
    /// How long past its token's `exp` (and the issuer's clock skew) an
    /// open exchange may run.
    pub exp_grace: Duration,
    /// The reconnection delay an ended, resumable SSE stream tells its
    /// client (`retry:`).
    pub sse_retry: Duration,
    /// A reload decides every open exchange again, whole (routes,
    /// scopes, policies); without it, a reload checks agents only.
    pub reevaluate_on_reload: bool,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            exp_grace: Duration::ZERO,
            sse_retry: Duration::from_secs(1),
            reevaluate_on_reload: false,
        }
    }
}

/// One `[[budgets]]` entry: how many tokens each key may use per period.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    pub name: String,
    /// What one counter is kept for: parts of the verified identity and
    /// the request, never a header or an address.
    pub key: Vec<BudgetKey>,
    pub tokens: u64,
    pub period: BudgetPeriod,
    pub count: TokenCount,
    /// Route names; `None` for every model route.
    pub routes: Option<Vec<String>>,
    /// Model patterns; `None` for every model.
    pub models: Option<Vec<String>>,
    /// Identity kinds; `None` for every kind.
    pub kinds: Option<Vec<String>>,
    /// Counted and recorded, never refused.
    pub report_only: bool,
}

/// A part of a budget's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetKey {
    /// `tid`
    Tenant,
    /// `oid` (else `sub`): the principal.
    Principal,
    /// `azp`/`appid`: the client application.
    ClientApp,
    /// The agent identity.
    Agent,
    /// The agent's blueprint.
    Blueprint,
    /// The identity kind.
    Kind,
    Route,
    Model,
}

impl BudgetKey {
    /// As the config names them.
    pub const NAMES: [(&'static str, Self); 8] = [
        ("tid", Self::Tenant),
        ("oid", Self::Principal),
        ("azp", Self::ClientApp),
        ("agent", Self::Agent),
        ("blueprint", Self::Blueprint),
        ("kind", Self::Kind),
        ("route", Self::Route),
        ("model", Self::Model),
    ];

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, k)| *k == self)
            .map_or("", |(n, _)| n)
    }
}

/// A budget's window: fixed, in UTC. A minute's is a rate (429 when
/// spent); longer ones are quotas (403 until the next window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetPeriod {
    Minute,
    Hour,
    Day,
    Week,
    Month,
}

/// Which tokens a budget counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenCount {
    Input,
    Output,
    Total,
    /// Each kind of token times its weight, rounded up.
    Weighted(TokenWeights),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenWeights {
    /// Input tokens not served from the cache.
    pub input: f64,
    pub cached_input: f64,
    /// Output tokens not spent on reasoning.
    pub output: f64,
    pub reasoning: f64,
}

/// `[metering]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteringConfig {
    /// Reserve an estimate at admission (prompt size plus the output cap)
    /// and settle from the answer's usage; `false`: charge after the
    /// answer only.
    pub reserve: bool,
    /// The output cap reserved for a request that sets none.
    pub max_output_tokens: u64,
    /// Ask a streamed chat or text completion for its usage when the
    /// client did not, and keep that usage-only chunk from the client.
    pub inject_include_usage: bool,
    /// The response header that tells the tokens left in the tightest
    /// budget; `None` for none.
    pub remaining_header: Option<HeaderName>,
}

impl Default for MeteringConfig {
    fn default() -> Self {
        Self {
            reserve: true,
            max_output_tokens: 4096,
            inject_include_usage: true,
            remaining_header: None,
        }
    }
}

/// `[budget_store]`: where counters live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BudgetStoreConfig {
    /// In this process: one replica, nothing to run.
    #[default]
    Local,
    Redis(RedisStoreConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStoreConfig {
    /// `redis://[user:password@]host[:port][/db]`
    pub url: String,
    /// Prefix of every key the gateway writes.
    pub prefix: String,
    /// One command's deadline; past it the store counts as unreachable.
    pub timeout: Duration,
    pub on_error: StoreFailure,
}

/// What a request meets when the shared store cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// Refused (503): no budget is overspent.
    Deny,
    /// Let through uncounted.
    Allow,
    /// Counted in this replica until the store is back.
    Local,
}

/// Where RFC 9728 §3 puts a resource's metadata: this, then the
/// resource's path.
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// An MCP route's resource-server settings: what its protected-resource
/// metadata (RFC 9728) says, and where it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpRoute {
    /// The resource identifier: the MCP endpoint's public URL, exactly.
    pub resource: String,
    /// Where the metadata is served: `/.well-known/oauth-protected-resource`
    /// followed by the resource's path.
    pub metadata_path: String,
    /// The metadata's full URL, for `resource_metadata` in challenges.
    pub metadata_url: String,
    /// Scopes in the form clients request them (Entra: the application ID
    /// URI, a slash, the scope name).
    pub scopes_supported: Vec<String>,
    /// Issuer URLs clients get tokens from.
    pub authorization_servers: Vec<String>,
    /// Origins (`scheme://host[:port]`, lower-cased) whose pages may call
    /// the route; a request without `Origin` (not from a browser) is not
    /// asked.
    pub allowed_origins: Vec<String>,
    /// A call the rules deny looks like one to a tool, prompt or resource
    /// that does not exist.
    pub hide_denied: bool,
    /// `rules = "report"`: the MCP rules are evaluated and recorded as a
    /// report-only policy, not enforced (lists unfiltered, no rate limit).
    pub report_only: bool,
    /// Sessions are bound to the principal that opened them, and forgotten
    /// after `session_idle_timeout` unused; `None`: not bound.
    pub session_idle_timeout: Option<Duration>,
}

/// One MCP rule: calls on `route` to these tools, prompts or resources
/// (patterns, `*` for any run of characters) are allowed to callers that
/// meet its conditions. A call on a route with rules needs one that
/// allows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpRule {
    pub route: String,
    pub tools: Vec<String>,
    pub prompts: Vec<String>,
    pub resources: Vec<String>,
    /// Any one of these scopes or roles (none: no permission asked).
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// Identity kinds; `None` for every kind.
    pub kinds: Option<Vec<String>>,
    /// Agent ids (lower case); `None` for any caller.
    pub agents: Option<Vec<String>>,
    /// Tool calls this rule allows one caller per tool per minute.
    pub calls_per_minute: Option<u32>,
    /// Conditions on a tool call's arguments, all of them.
    pub arguments: Vec<McpArgument>,
}

/// The value a JSON pointer names in a tool call's arguments must be one of
/// `allowed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpArgument {
    /// The pointer's segments, unescaped (`~1` is `/`, `~0` is `~`).
    pub path: Vec<String>,
    pub allowed: Vec<String>,
}

/// The segments of an RFC 6901 JSON pointer into objects (`/project`,
/// `/filter/team`), unescaped; `None` if it is not one.
pub fn json_pointer(pointer: &str) -> Option<Vec<String>> {
    let rest = pointer.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// A template with `{name}` parameters, matched exactly.
    Template(String),
    /// Everything at or below this path.
    Prefix(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
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

#[derive(Debug, Clone, PartialEq, Eq)]
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
    let mut config = parse(&text, base)?;
    config.source = Some(path.to_path_buf());
    Ok(config)
}

/// Validates config text; `base` resolves relative file paths. Reports
/// every problem: unknown keys and wrong types with the errors of what
/// could be read.
pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigErrors> {
    let (file, mut errors) = file::read(text)?;
    let semantic = match validate::validate(file, base) {
        Ok(mut config) if errors.is_empty() => {
            config.version = version(text);
            return Ok(config);
        }
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    };
    // A key left out for its type is not reported again as missing.
    let reported: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
    errors.extend(
        semantic
            .into_iter()
            .filter(|e| !reported.iter().any(|r| is_within(&e.path, r))),
    );
    Err(ConfigErrors(errors))
}

/// Whether `path` is `outer` or lies inside it (`routes[0].name` is within
/// `routes[0]` and `routes`, not within `routes[0].n`).
fn is_within(path: &str, outer: &str) -> bool {
    path.strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

/// The first 12 hex digits of the SHA-256 of the config text.
pub fn version(text: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    d.as_ref()[..6].iter().map(|b| format!("{b:02x}")).collect()
}
