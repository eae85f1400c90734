//! [`Snapshot`]: everything a reload may change, compiled from a [`Config`]
//! and immutable afterwards. A request loads one snapshot and finishes on it.
//!
//! Compiling has no side effects: key sources are created, not fetched, so
//! `portcullis check` runs exactly this.

use std::sync::Arc;

use http::uri::{Authority, Scheme};
use ipnet::IpNet;

use crate::budget::{Budgets, LocalCounters, RedisStore, Store};
use crate::config::{
    BudgetStoreConfig, Config, ConfigError, ConfigErrors, HostHeader, IdentityHeaders,
    IssuerConfig, KeyLocation, TokenCacheConfig, UpstreamConfig,
};
use crate::credentials::{Credential, CredentialObserver};
use crate::keys::{Fetcher, KeyEndpoint, KeyObserver, KeySource};
use crate::mcp::{CallLimiter, McpInspector, McpRules, ResourceMetadata, Sessions};
use crate::model::{ModelInspector, ModelObserver};
use crate::policy::{Policies, RouteTable};
use crate::rejection::Challenges;
use crate::stages::Stages;
use crate::token::{IssuerTrust, TokenCache, Verifier};
use crate::upstream::{InboundStrip, Upstream};

/// One immutable generation of the gateway's configuration.
pub struct Snapshot {
    pub verifier: Verifier,
    pub routes: RouteTable,
    /// Agents and conditional-access policies.
    pub policies: Arc<Policies>,
    /// Token budgets and where their counters are.
    pub budgets: Arc<Budgets>,
    pub challenges: Challenges,
    /// The protected-resource metadata of every MCP route.
    pub resource_metadata: ResourceMetadata,
    pub identity_headers: IdentityHeaders,
    pub trusted_proxies: Vec<IpNet>,
    /// `limits.max_uri_bytes`: the one limit that changes live.
    pub max_uri_bytes: usize,
    /// `[streams]`: how long admitted exchanges may stay open.
    pub streams: crate::config::StreamsConfig,
    /// Every key source the verifier uses (for readiness and metrics).
    pub key_sources: Vec<Arc<KeySource>>,
    /// The config's version (digest of its text), in records and metrics.
    pub version: Arc<str>,
    /// Where requests go, each with its client; a route names one
    /// by its index ([`crate::policy::Route::upstream`]).
    pub upstreams: Vec<Target>,
    /// The gateway's own credentials (their tokens kept across reloads).
    pub credentials: Vec<Arc<Credential>>,
    /// What inspects admitted requests and takes part in their answers: the MCP
    /// stage when a route is an MCP route.
    pub stages: Stages,
    /// Which principal opened each MCP session (kept across reloads).
    sessions: Arc<Sessions>,
    /// The MCP tools' call-rate buckets (kept across reloads).
    limiter: Arc<CallLimiter>,
    /// `[budget_store]` as configured: a reload that keeps it keeps the
    /// counters.
    budget_store_config: BudgetStoreConfig,
    /// What each issuer entry compiled to: the next reload keeps what did
    /// not change (trusts, key sources with their keys, cache entries).
    issuers: Vec<CompiledIssuer>,
    token_cache_config: TokenCacheConfig,
}

/// One upstream, ready to forward to.
pub struct Target {
    pub name: Arc<str>,
    /// The client: held connections and a pool (shared by a reload that keeps the upstream).
    pub client: Upstream,
    pub scheme: Scheme,
    pub authority: Authority,
    pub host_header: HostHeader,
    /// Inbound headers removed before forwarding.
    pub strip: InboundStrip,
    /// The gateway's own credential, presented in place of the caller's.
    pub credential: Option<Arc<Credential>>,
    config: UpstreamConfig,
}

#[derive(Clone)]
struct CompiledIssuer {
    config: IssuerConfig,
    trusts: Vec<Arc<IssuerTrust>>,
    sources: Vec<Arc<KeySource>>,
}

/// What compiled snapshots report to: key fetches, and what model answers
/// used.
#[derive(Clone)]
pub struct KeyEnv {
    pub observer: Arc<dyn Observer>,
}

/// Told of key fetches, model usage and credential exchanges (the
/// metrics).
pub trait Observer: KeyObserver + ModelObserver + CredentialObserver {}

impl<T: KeyObserver + ModelObserver + CredentialObserver> Observer for T {}

impl Snapshot {
    /// Compiles a validated config. Fails only on what validation cannot see
    /// alone: route conflicts, unreadable CA files.
    pub fn compile(config: &Config, env: &KeyEnv) -> Result<Self, ConfigErrors> {
        Self::compile_after(config, env, None)
    }

    /// Compiles a config that replaces `previous` (a reload): issuer entries
    /// that did not change keep their trusts and key sources (keys, refresh
    /// loop, verified-token cache entries), and an unchanged token cache and
    /// upstream client are kept.
    pub fn compile_after(
        config: &Config,
        env: &KeyEnv,
        previous: Option<&Snapshot>,
    ) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let routes = RouteTable::compile(&config.routes)
            .map_err(|e| errors.extend(e))
            .ok();
        let mut issuers = Vec::new();
        for (i, issuer) in config.issuers.iter().enumerate() {
            let kept = previous
                .and_then(|p| p.issuers.iter().find(|c| c.config == *issuer))
                .cloned();
            match kept.map_or_else(|| compile_issuer(issuer, env), Ok) {
                Ok(compiled) => issuers.push(compiled),
                Err(message) => errors.push(ConfigError {
                    path: format!("issuers[{i}].ca_file"),
                    message,
                }),
            }
        }
        // A credential that did not change keeps its token.
        let mut credentials: Vec<Arc<Credential>> = Vec::with_capacity(config.credentials.len());
        for (i, c) in config.credentials.iter().enumerate() {
            let kept = previous.and_then(|p| p.credentials.iter().find(|k| k.config() == c));
            match kept.cloned().map_or_else(
                || Credential::new(c, env.observer.clone()).map(Arc::new),
                Ok,
            ) {
                Ok(credential) => credentials.push(credential),
                Err(e) => errors.push(ConfigError {
                    path: format!("credentials[{i}]"),
                    message: e.to_string(),
                }),
            }
        }
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for (i, u) in config.upstreams.iter().enumerate() {
            let kept = previous.and_then(|p| p.upstreams.iter().find(|t| t.config == *u));
            let client = match kept {
                Some(t) => t.client.clone(),
                None => match Upstream::new(u) {
                    Ok(c) => c,
                    Err(e) => {
                        // `default` is `[upstream]`'s name only, and first.
                        let has_default = config.upstreams[0].name == "default";
                        let at = match (i, has_default) {
                            (0, true) => "upstream".to_owned(),
                            _ => format!("upstreams[{}]", i - usize::from(has_default)),
                        };
                        errors.push(ConfigError {
                            path: format!("{at}.ca_file"),
                            message: e.to_string(),
                        });
                        continue;
                    }
                },
            };
            upstreams.push(Target {
                name: Arc::from(u.name.as_str()),
                client,
                scheme: u.url.scheme().cloned().unwrap_or(Scheme::HTTP),
                authority: u
                    .url
                    .authority()
                    .cloned()
                    .unwrap_or_else(|| Authority::from_static("127.0.0.1")),
                host_header: u.host_header,
                strip: InboundStrip::new(&config.identity_headers, &u.strip_headers),
                credential: u.credential.and_then(|i| credentials.get(i).cloned()),
                config: u.clone(),
            });
        }
        let (Some(routes), true) = (routes, errors.is_empty()) else {
            return Err(ConfigErrors(errors));
        };
        let cache = match previous.filter(|p| p.token_cache_config == config.token_cache) {
            Some(p) => p.verifier.cache().cloned(),
            None => config
                .token_cache
                .enabled
                .then(|| TokenCache::new(config.token_cache.capacity, config.token_cache.ttl)),
        };
        let trusts = issuers
            .iter()
            .flat_map(|c| c.trusts.iter().cloned())
            .collect();
        let key_sources = issuers
            .iter()
            .flat_map(|c| c.sources.iter().cloned())
            .collect();
        let policies = Arc::new(Policies::compile(config));
        let store = match previous.filter(|p| p.budget_store_config == config.budget_store) {
            Some(p) => p.budgets.store().clone(),
            None => match &config.budget_store {
                BudgetStoreConfig::Local => Arc::new(Store::Local(LocalCounters::default())),
                BudgetStoreConfig::Redis(redis) => match RedisStore::new(redis) {
                    Ok(r) => Arc::new(Store::Redis(Box::new(r))),
                    Err(message) => {
                        return Err(ConfigErrors(vec![ConfigError {
                            path: "budget_store.url".into(),
                            message,
                        }]));
                    }
                },
            },
        };
        let budgets = Arc::new(Budgets::compile(&config.budgets, store.clone()));
        // Sessions and call budgets outlive a reload: they are the clients'.
        // (Bindings live where the store is: a new store, new bindings.)
        let sessions = match previous.filter(|p| p.sessions.uses(&store)) {
            Some(p) => p.sessions.clone(),
            None => Arc::new(Sessions::new(store.clone())),
        };
        let limiter: Arc<CallLimiter> = previous.map_or_else(Arc::default, |p| p.limiter.clone());
        let mut inspectors: Vec<Arc<dyn crate::stages::Inspect>> = Vec::new();
        if config.routes.iter().any(|r| r.mcp.is_some()) {
            let rules = McpRules::compile(&config.mcp_rules, &config.agents);
            let inspector = McpInspector::new(rules, sessions.clone(), limiter.clone());
            inspectors.push(Arc::new(inspector));
        }
        if config.routes.iter().any(|r| r.model.is_some()) {
            let observer: Arc<dyn ModelObserver> = env.observer.clone();
            inspectors.push(Arc::new(ModelInspector::new(
                policies.clone(),
                &config.agents,
                budgets.clone(),
                config.metering.clone(),
                observer,
            )));
        }
        let stages = Stages::new(inspectors);
        Ok(Self {
            verifier: Verifier::new(trusts, cache),
            challenges: Challenges::new(&config.server.realm, routes.routes(), &policies.policies),
            resource_metadata: ResourceMetadata::compile(routes.routes()),
            routes,
            policies,
            budgets,
            identity_headers: config.identity_headers.clone(),
            trusted_proxies: config.server.trusted_proxies.clone(),
            max_uri_bytes: config.limits.max_uri_bytes,
            streams: config.streams,
            key_sources,
            version: Arc::from(config.version.as_str()),
            upstreams,
            credentials,
            stages,
            sessions,
            limiter,
            budget_store_config: config.budget_store.clone(),
            issuers,
            token_cache_config: config.token_cache.clone(),
        })
    }

    /// Where a route's requests go.
    pub fn upstream_of(&self, route: &crate::policy::Route) -> &Target {
        // A route's index comes from the same config: always in range.
        &self.upstreams[route.upstream().min(self.upstreams.len() - 1)]
    }

    /// Whether every key source has a usable key set.
    pub fn is_ready(&self) -> bool {
        self.key_sources.iter().all(|k| k.is_usable())
    }
}

/// Expands one issuer entry into exact-`iss` trusts, each with its key
/// source: one for OIDC; for Entra, per tenant, one per token version.
fn compile_issuer(issuer: &IssuerConfig, env: &KeyEnv) -> Result<CompiledIssuer, String> {
    let fetcher = Fetcher::new(issuer.keys.ca_file.as_deref(), issuer.keys.fetch_timeout)
        .map_err(|e| e.to_string())?;
    let name: Arc<str> = Arc::from(issuer.name.as_str());
    let key_observer: Arc<dyn KeyObserver> = env.observer.clone();
    let source = |label: String, endpoint: KeyEndpoint| {
        Arc::new(KeySource::new(
            label,
            endpoint,
            issuer.keys.clone(),
            fetcher.clone(),
            key_observer.clone(),
        ))
    };
    let mut trusts = Vec::new();
    let mut sources = Vec::new();
    for anchor in &issuer.anchors {
        let endpoint = match &anchor.keys {
            KeyLocation::Discovery(url) => KeyEndpoint::Discovery {
                url: url.clone(),
                issuer: anchor.iss.clone(),
            },
            KeyLocation::Jwks(url) => KeyEndpoint::Jwks(url.clone()),
        };
        let keys = source(anchor.label.clone(), endpoint);
        trusts.push(Arc::new(IssuerTrust::new(
            name.clone(),
            anchor,
            keys.clone(),
            issuer,
        )));
        sources.push(keys);
    }
    Ok(CompiledIssuer {
        config: issuer.clone(),
        trusts,
        sources,
    })
}
