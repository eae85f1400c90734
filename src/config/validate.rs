//! File types → [`Config`], collecting every error with its path.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method, Uri};
use ipnet::IpNet;
use jsonwebtoken::Algorithm;

use super::file::{
    AgentFile, AuditFile, ByteSize, FileConfig, IdentityFile, IdentityHeadersFile, IssuerFile,
    LimitsFile, LocationFile, LoggingFile, PolicyFile, RouteFile, ServerFile, TokenCacheFile,
    UpstreamFile,
};
use super::{
    AgentConfig, Assignments, AuditConfig, AuditFailure, AuditFileConfig, AuditOverflow,
    AuditPolicy, ClaimPath, ClaimSources, Conditions, Config, ConfigError, ConfigErrors,
    HeaderPattern, IDENTITY_KINDS, IdentityHeaders, IdentitySettings, IssuerAnchor, IssuerConfig,
    IssuerKind, KeyFetchConfig, KeyLocation, Limits, Location, LoggingConfig, PolicyConfig,
    PolicyGrant, PolicyState, RouteConfig, RouteMatch, ServerConfig, TlsConfig, TokenCacheConfig,
    UpstreamConfig, normalize_header_name,
};

/// The public Entra authority.
pub const ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";
/// Host of Entra v1 issuers (`https://sts.windows.net/{tid}/`).
pub const ENTRA_V1_ISSUER_HOST: &str = "https://sts.windows.net";
/// Microsoft.IdentityModel accepts tokens up to this size; nothing larger is sane.
const MAX_TOKEN_SIZE_LIMIT: usize = 256_000;
/// More workers than this is a typo, not a sidecar.
const MAX_WORKER_THREADS: usize = 256;

struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.push(
                    path,
                    format!("invalid duration {text:?}: {e} (use e.g. \"30s\", \"5m\")"),
                );
                default
            }
        }
    }

    /// One of a fixed set of words, or the default when absent.
    fn choice<T: Copy>(
        &mut self,
        path: &str,
        value: Option<&str>,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(text) = value else { return default };
        match options.iter().find(|(name, _)| *name == text) {
            Some((_, v)) => *v,
            None => {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
                self.push(path, format!("{text:?} is not one of {}", names.join(", ")));
                default
            }
        }
    }

    fn addr(&mut self, path: &str, value: Option<&str>, default: &str) -> SocketAddr {
        let text = value.unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            self.push(
                path,
                format!("invalid socket address {text:?} (use e.g. \"0.0.0.0:8080\")"),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    /// A URL we fetch keys from: https, or plain http on a loopback host.
    fn fetch_url(&mut self, path: &str, text: &str) -> Option<Uri> {
        let uri = match text.parse::<Uri>() {
            Ok(u) if u.host().is_some() => u,
            _ => {
                self.push(path, format!("invalid URL {text:?}"));
                return None;
            }
        };
        match uri.scheme_str() {
            Some("https") => Some(uri),
            Some("http") if uri.host().is_some_and(is_loopback_host) => Some(uri),
            Some("http") => {
                // Why: keys fetched in clear text can be replaced in transit,
                // which hands an attacker the power to mint tokens.
                self.push(
                    path,
                    "plain http is allowed only for loopback hosts; use https",
                );
                None
            }
            _ => {
                self.push(path, format!("unsupported URL scheme in {text:?}"));
                None
            }
        }
    }
}

pub(super) fn validate(file: FileConfig, base: &Path) -> Result<Config, ConfigErrors> {
    let mut errs = Errors(Vec::new());
    let server = server(&mut errs, file.server, base);
    let (upstream, strip_headers) = match file.upstream {
        Some(mut u) => {
            let strip = strip_headers(&mut errs, std::mem::take(&mut u.strip_headers));
            (Some(upstream(&mut errs, u, base)), strip)
        }
        None => {
            errs.push("upstream", "missing table [upstream]");
            (None, Vec::new())
        }
    };
    let issuers_in_file = file.issuers.len();
    let issuers: Vec<_> = file
        .issuers
        .into_iter()
        .enumerate()
        .filter_map(|(i, f)| issuer(&mut errs, &format!("issuers[{i}]"), f, base))
        .collect();
    check_issuer_uniqueness(&mut errs, &issuers);
    let routes_in_file = file.routes.len();
    let routes: Vec<_> = file
        .routes
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| route(&mut errs, &format!("routes[{i}]"), r, &issuers))
        .collect();
    let mut names = HashSet::new();
    for (i, r) in routes.iter().enumerate() {
        if !names.insert(r.name.as_str()) {
            errs.push(
                format!("routes[{i}].name"),
                format!("duplicate route name {:?}", r.name),
            );
        }
    }
    if issuers_in_file == 0 && routes.iter().any(|r| !r.public) {
        errs.push(
            "issuers",
            "at least one issuer is needed: some routes require a token",
        );
    }
    let token_cache = token_cache(&mut errs, file.token_cache);
    let identity_headers = identity_headers(&mut errs, file.identity_headers);
    let logging = logging(&mut errs, file.logging);
    let identity = identity(&mut errs, file.identity);
    let locations = locations(&mut errs, file.locations);
    let route_names: HashSet<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    let mut warnings = Vec::new();
    if routes_in_file == 0 {
        warnings.push(ConfigError {
            path: "routes".into(),
            message: "none configured: every request is refused (no_route)".into(),
        });
    }
    let agents = agents(&mut errs, &mut warnings, file.agents, &route_names);
    let location_names: Vec<&str> = locations.iter().map(|l| l.name.as_str()).collect();
    let policies = policies(&mut errs, file.policies, &route_names, &location_names);
    let revocation_file = file
        .revocation
        .map(|r| existing_file(&mut errs, "revocation.file", &r.file, base));
    let audit = audit(&mut errs, file.audit, base);
    let limits = limits(&mut errs, file.limits);
    match (errs.0.is_empty(), upstream) {
        (true, Some(upstream)) => Ok(Config {
            server,
            upstream,
            issuers,
            routes,
            token_cache,
            identity_headers,
            strip_headers,
            logging,
            identity,
            locations,
            agents,
            policies,
            revocation_file,
            audit,
            limits,
            version: String::new(),
            source: None,
            warnings,
        }),
        _ => Err(ConfigErrors(errs.0)),
    }
}

fn server(errs: &mut Errors, f: ServerFile, base: &Path) -> ServerConfig {
    let realm = f.realm.unwrap_or_else(|| "portcullis".to_owned());
    if !is_quoted_string_safe(&realm) {
        errs.push(
            "server.realm",
            "must be printable ASCII without '\"' or '\\'",
        );
    }
    let tls = f.tls.map(|t| TlsConfig {
        cert: existing_file(errs, "server.tls.cert", &t.cert, base),
        key: existing_file(errs, "server.tls.key", &t.key, base),
    });
    let trusted_proxies = f
        .trusted_proxies
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let parsed = IpNet::from_str(t)
                .ok()
                .or_else(|| IpAddr::from_str(t).ok().map(IpNet::from));
            if parsed.is_none() {
                errs.push(
                    format!("server.trusted_proxies[{i}]"),
                    format!("invalid address or CIDR range {t:?}"),
                );
            }
            parsed
        })
        .collect();
    ServerConfig {
        listen: errs.addr("server.listen", f.listen.as_deref(), "0.0.0.0:8080"),
        admin_listen: errs.addr(
            "server.admin_listen",
            f.admin_listen.as_deref(),
            "127.0.0.1:9090",
        ),
        realm,
        tls,
        drain_timeout: errs.duration("server.drain_timeout", f.drain_timeout.as_deref(), secs(30)),
        client_header_timeout: errs.duration(
            "server.client_header_timeout",
            f.client_header_timeout.as_deref(),
            secs(10),
        ),
        idle_timeout: errs.duration("server.idle_timeout", f.idle_timeout.as_deref(), secs(300)),
        trusted_proxies,
        worker_threads: f.worker_threads.filter(|n| {
            let ok = (1..=MAX_WORKER_THREADS).contains(n);
            if !ok {
                errs.push(
                    "server.worker_threads",
                    format!("{n} is outside 1..={MAX_WORKER_THREADS}"),
                );
            }
            ok
        }),
    }
}

fn upstream(errs: &mut Errors, f: UpstreamFile, base: &Path) -> UpstreamConfig {
    let url = match f.url.parse::<Uri>() {
        Ok(u)
            if matches!(u.scheme_str(), Some("http" | "https"))
                && u.authority().is_some()
                && u.path_and_query().is_none_or(|p| p.as_str() == "/") =>
        {
            u
        }
        _ => {
            let message = if f.url.is_empty() {
                "required: the upstream's http(s)://host[:port]".to_owned()
            } else {
                format!(
                    "must be http(s)://host[:port] without a path, got {:?}",
                    f.url
                )
            };
            errs.push("upstream.url", message);
            Uri::from_static("http://127.0.0.1")
        }
    };
    UpstreamConfig {
        url,
        connect_timeout: errs.duration(
            "upstream.connect_timeout",
            f.connect_timeout.as_deref(),
            secs(5),
        ),
        // Why 600 s: the OpenAI SDKs' own total timeout; reasoning models can
        // think for minutes before the first header.
        response_timeout: errs.duration(
            "upstream.response_timeout",
            f.response_timeout.as_deref(),
            secs(600),
        ),
        pool_idle_timeout: errs.duration(
            "upstream.pool_idle_timeout",
            f.pool_idle_timeout.as_deref(),
            secs(90),
        ),
        http2: f.http2.unwrap_or(false),
        ca_file: f
            .ca_file
            .map(|p| existing_file(errs, "upstream.ca_file", &p, base)),
    }
}

fn issuer(errs: &mut Errors, at: &str, f: IssuerFile, base: &Path) -> Option<IssuerConfig> {
    let before = errs.0.len();
    if f.name.is_empty() {
        errs.push(format!("{at}.name"), "must not be empty");
    }
    let (kind, source) = match f.kind.as_str() {
        "oidc" => (IssuerKind::Oidc, oidc_source(errs, at, &f)),
        "entra" => (IssuerKind::Entra, entra_source(errs, at, &f)),
        "" => {
            errs.push(format!("{at}.kind"), "required: \"oidc\" or \"entra\"");
            (IssuerKind::Oidc, None)
        }
        other => {
            errs.push(
                format!("{at}.kind"),
                format!("unknown kind {other:?} (expected \"oidc\" or \"entra\")"),
            );
            (IssuerKind::Oidc, None)
        }
    };
    let defaults = match kind {
        IssuerKind::Entra => ClaimSources::entra(),
        IssuerKind::Oidc => ClaimSources::oidc(),
    };
    let claims = ClaimSources {
        scopes: claim_paths(
            errs,
            &format!("{at}.scope_claims"),
            f.scope_claims.as_deref(),
        )
        .unwrap_or(defaults.scopes),
        roles: claim_paths(errs, &format!("{at}.role_claims"), f.role_claims.as_deref())
            .unwrap_or(defaults.roles),
    };
    if f.audiences.is_empty() {
        // Why: an issuer without audiences would accept tokens minted for any
        // other API of the tenant (confused deputy); Envoy silently skips the
        // check in that case, we refuse the config.
        errs.push(format!("{at}.audiences"), "must not be empty");
    }
    for (i, a) in f.audiences.iter().enumerate() {
        if a.is_empty() {
            errs.push(format!("{at}.audiences[{i}]"), "must not be empty");
        }
    }
    let algorithms = algorithms(errs, at, f.algorithms.as_deref());
    let max_token_size = f.max_token_size.map_or(16 * 1024, ByteSize::usize);
    if max_token_size == 0 || max_token_size > MAX_TOKEN_SIZE_LIMIT {
        errs.push(
            format!("{at}.max_token_size"),
            format!("must be between 1 and {MAX_TOKEN_SIZE_LIMIT} bytes"),
        );
    }
    let accepted_typ = f
        .accepted_typ
        .clone()
        .unwrap_or_else(|| vec!["JWT".into(), "at+jwt".into()]);
    if accepted_typ.is_empty() {
        errs.push(format!("{at}.accepted_typ"), "must not be empty");
    }
    let keys = KeyFetchConfig {
        refresh_interval: errs.duration(
            &format!("{at}.refresh_interval"),
            f.refresh_interval.as_deref(),
            secs(3600),
        ),
        refresh_cooldown: errs.duration(
            &format!("{at}.refresh_cooldown"),
            f.refresh_cooldown.as_deref(),
            secs(300),
        ),
        max_staleness: errs.duration(
            &format!("{at}.max_key_staleness"),
            f.max_key_staleness.as_deref(),
            secs(86_400),
        ),
        fetch_timeout: errs.duration(
            &format!("{at}.fetch_timeout"),
            f.fetch_timeout.as_deref(),
            secs(10),
        ),
        ca_file: f
            .ca_file
            .as_ref()
            .map(|p| existing_file(errs, &format!("{at}.ca_file"), p, base)),
    };
    if keys.refresh_interval < secs(1) || keys.refresh_cooldown < secs(1) {
        errs.push(
            format!("{at}.refresh_interval"),
            "refresh_interval and refresh_cooldown must be at least 1s",
        );
    }
    if !(Duration::from_millis(100)..=secs(60)).contains(&keys.fetch_timeout) {
        errs.push(
            format!("{at}.fetch_timeout"),
            "must be between 100ms and 60s",
        );
    }
    if keys.max_staleness <= keys.refresh_interval {
        errs.push(
            format!("{at}.max_key_staleness"),
            "must be longer than refresh_interval",
        );
    }
    let clock_skew = errs.duration(
        &format!("{at}.clock_skew"),
        f.clock_skew.as_deref(),
        secs(60),
    );
    if clock_skew > secs(600) {
        errs.push(format!("{at}.clock_skew"), "must be at most 10m");
    }
    let source = source.filter(|_| errs.0.len() == before)?;
    let anchors = anchors(errs, at, &f.name, source)?;
    Some(IssuerConfig {
        name: f.name,
        anchors,
        audiences: f.audiences,
        algorithms,
        clock_skew,
        max_token_size,
        accepted_typ,
        keys,
        kind,
        claims,
    })
}

/// `scope_claims`/`role_claims`: `None` when absent (the defaults apply).
fn claim_paths(errs: &mut Errors, at: &str, texts: Option<&[String]>) -> Option<Vec<ClaimPath>> {
    let texts = texts?;
    if texts.is_empty() {
        errs.push(at, "must not be empty (omit it for the default)");
    }
    let paths = texts
        .iter()
        .enumerate()
        .filter_map(|(i, text)| {
            let path = ClaimPath::parse(text);
            if path.is_none() {
                errs.push(
                    format!("{at}[{i}]"),
                    format!(
                        "{text:?} is not a claim name or a dotted path (e.g. \"scope\", \"realm_access.roles\", '\"https://example.com/roles\"')"
                    ),
                );
            }
            path
        })
        .collect();
    Some(paths)
}

fn oidc_source(errs: &mut Errors, at: &str, f: &IssuerFile) -> Option<IssuerSource> {
    for (field, set) in [
        ("tenants", f.tenants.is_some()),
        ("authority", f.authority.is_some()),
        ("token_versions", f.token_versions.is_some()),
        ("v1_issuer_host", f.v1_issuer_host.is_some()),
    ] {
        if set {
            errs.push(format!("{at}.{field}"), "only valid with kind = \"entra\"");
        }
    }
    let Some(issuer) = f.issuer.clone().filter(|i| !i.is_empty()) else {
        errs.push(format!("{at}.issuer"), "required with kind = \"oidc\"");
        return None;
    };
    let keys = match (&f.discovery_url, &f.jwks_uri) {
        (Some(_), Some(_)) => {
            errs.push(
                format!("{at}.jwks_uri"),
                "set either discovery_url or jwks_uri, not both",
            );
            return None;
        }
        (Some(d), None) => {
            KeyLocation::Discovery(errs.fetch_url(&format!("{at}.discovery_url"), d)?)
        }
        (None, Some(j)) => KeyLocation::Jwks(errs.fetch_url(&format!("{at}.jwks_uri"), j)?),
        (None, None) => {
            let d = format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            );
            KeyLocation::Discovery(errs.fetch_url(&format!("{at}.issuer"), &d)?)
        }
    };
    Some(IssuerSource::Oidc { issuer, keys })
}

fn entra_source(errs: &mut Errors, at: &str, f: &IssuerFile) -> Option<IssuerSource> {
    for (field, set) in [
        ("issuer", f.issuer.is_some()),
        ("discovery_url", f.discovery_url.is_some()),
        ("jwks_uri", f.jwks_uri.is_some()),
    ] {
        if set {
            errs.push(format!("{at}.{field}"), "only valid with kind = \"oidc\"");
        }
    }
    let tenants: Vec<String> = f.tenants.clone().unwrap_or_default();
    if tenants.is_empty() {
        // Why: an empty allowlist must never mean "any tenant".
        errs.push(
            format!("{at}.tenants"),
            "must not be empty (list the tenant ids to accept)",
        );
    }
    for (i, t) in tenants.iter().enumerate() {
        if !is_guid(t) {
            errs.push(
                format!("{at}.tenants[{i}]"),
                format!("{t:?} is not a tenant id (GUID)"),
            );
        }
    }
    let authority_text = f
        .authority
        .as_deref()
        .unwrap_or(ENTRA_AUTHORITY)
        .trim_end_matches('/');
    let authority = errs.fetch_url(&format!("{at}.authority"), authority_text);
    let versions = f
        .token_versions
        .clone()
        .unwrap_or_else(|| vec!["1.0".into(), "2.0".into()]);
    let (mut accept_v1, mut accept_v2) = (false, false);
    for (i, v) in versions.iter().enumerate() {
        match v.as_str() {
            "1.0" => accept_v1 = true,
            "2.0" => accept_v2 = true,
            _ => errs.push(
                format!("{at}.token_versions[{i}]"),
                format!("{v:?} is not \"1.0\" or \"2.0\""),
            ),
        }
    }
    if !accept_v1 && !accept_v2 {
        errs.push(format!("{at}.token_versions"), "must not be empty");
    }
    Some(IssuerSource::Entra {
        tenants: tenants.iter().map(|t| t.to_ascii_lowercase()).collect(),
        authority: authority?,
        v1_issuer_host: f
            .v1_issuer_host
            .as_deref()
            .unwrap_or(ENTRA_V1_ISSUER_HOST)
            .trim_end_matches('/')
            .to_owned(),
        accept_v1,
        accept_v2,
    })
}

fn algorithms(errs: &mut Errors, at: &str, names: Option<&[String]>) -> Vec<Algorithm> {
    let Some(names) = names else {
        return vec![Algorithm::RS256];
    };
    if names.is_empty() {
        errs.push(format!("{at}.algorithms"), "must not be empty");
    }
    names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let path = format!("{at}.algorithms[{i}]");
            match n.as_str() {
                "RS256" => Some(Algorithm::RS256),
                "RS384" => Some(Algorithm::RS384),
                "RS512" => Some(Algorithm::RS512),
                "PS256" => Some(Algorithm::PS256),
                "PS384" => Some(Algorithm::PS384),
                "PS512" => Some(Algorithm::PS512),
                "ES256" => Some(Algorithm::ES256),
                "ES384" => Some(Algorithm::ES384),
                n if n.eq_ignore_ascii_case("none") || n.to_ascii_uppercase().starts_with("HS") => {
                    // Why (RFC 8725 §3.1): `none` and shared-secret algorithms
                    // would let anyone holding the public key forge tokens.
                    errs.push(
                        path,
                        format!("{n:?} is refused: only asymmetric signatures are accepted"),
                    );
                    None
                }
                n => {
                    errs.push(
                        path,
                        format!("unknown algorithm {n:?} (RS256, PS256, ES256, …)"),
                    );
                    None
                }
            }
        })
        .collect()
}

/// The `iss` values each issuer accepts must not overlap: dispatch by `iss`
/// has to name exactly one issuer.
fn check_issuer_uniqueness(errs: &mut Errors, issuers: &[IssuerConfig]) {
    let mut names = HashSet::new();
    let mut seen = HashSet::new();
    for (i, issuer) in issuers.iter().enumerate() {
        if !names.insert(issuer.name.as_str()) {
            errs.push(
                format!("issuers[{i}].name"),
                format!("duplicate issuer name {:?}", issuer.name),
            );
        }
        for iss in issuer.anchors.iter().map(|a| &a.iss) {
            if !seen.insert(iss.clone()) {
                errs.push(
                    format!("issuers[{i}]"),
                    format!("issuer {iss:?} is already accepted by another entry"),
                );
            }
        }
    }
}

fn route(
    errs: &mut Errors,
    at: &str,
    f: RouteFile,
    issuers: &[IssuerConfig],
) -> Option<RouteConfig> {
    let before = errs.0.len();
    if f.name.is_empty()
        || !f
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    {
        errs.push(
            format!("{at}.name"),
            "must be non-empty letters, digits, '_', '-' or '.'",
        );
    }
    let matcher = match (f.path, f.prefix) {
        (Some(p), None) => Some(RouteMatch::Template(p)),
        (None, Some(p)) => Some(RouteMatch::Prefix(p)),
        _ => {
            errs.push(at, "set exactly one of path or prefix");
            None
        }
    };
    if let Some(RouteMatch::Template(p) | RouteMatch::Prefix(p)) = &matcher
        && !p.starts_with('/')
    {
        errs.push(format!("{at}.path"), "must start with '/'");
    }
    let methods = f.methods.map(|ms| {
        if ms.is_empty() {
            errs.push(
                format!("{at}.methods"),
                "must not be empty (omit it to allow every method)",
            );
        }
        parse_methods(errs, || format!("{at}.methods"), &ms)
    });
    if let Some(names) = &f.issuers {
        for (i, n) in names.iter().enumerate() {
            if !issuers.iter().any(|is| &is.name == n) {
                errs.push(
                    format!("{at}.issuers[{i}]"),
                    format!("no issuer named {n:?}"),
                );
            }
        }
    }
    check_names(errs, || format!("{at}.scopes"), &f.scopes);
    check_names(errs, || format!("{at}.roles"), &f.roles);
    if f.public && (!f.scopes.is_empty() || !f.roles.is_empty() || f.issuers.is_some()) {
        errs.push(
            format!("{at}.public"),
            "a public route cannot require scopes, roles or issuers",
        );
    }
    let require_all = match f.require.as_deref() {
        None | Some("any") => false,
        Some("all") => true,
        Some(other) => {
            errs.push(
                format!("{at}.require"),
                format!("{other:?} is not \"any\" or \"all\""),
            );
            false
        }
    };
    if let Some(kinds) = &f.kinds {
        check_kinds(errs, &format!("{at}.kinds"), kinds);
        if kinds.is_empty() {
            errs.push(
                format!("{at}.kinds"),
                "must not be empty (omit it to allow every kind)",
            );
        }
    }
    if f.host
        .as_deref()
        .is_some_and(|h| h.is_empty() || h.contains(['/', ' ']))
    {
        errs.push(format!("{at}.host"), "must be a host name");
    }
    if f.public && (f.kinds.is_some() || f.allow_without_permissions) {
        errs.push(
            format!("{at}.public"),
            "a public route cannot restrict identities",
        );
    }
    if f.public && f.forward_authorization {
        errs.push(
            format!("{at}.forward_authorization"),
            "a public route verifies no token to forward",
        );
    }
    if f.max_body_bytes == Some(ByteSize(0)) {
        errs.push(
            format!("{at}.max_body_bytes"),
            "must be at least 1 (omit it for no limit)",
        );
    }
    let upgrades: Vec<String> = match f.upgrades {
        None => vec!["websocket".to_owned()],
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, u)| {
                let name = u.to_ascii_lowercase();
                if name == "h2c" {
                    // Why: an h2c upgrade turns the connection into one the
                    // gateway can no longer read, so later requests on it
                    // would pass unchecked; RFC 9113 §3.1 deprecates it.
                    errs.push(
                        format!("{at}.upgrades[{i}]"),
                        "h2c is never forwarded: clients that want HTTP/2 can speak it to the gateway directly",
                    );
                } else if name.is_empty() || HeaderName::from_str(&name).is_err() {
                    errs.push(
                        format!("{at}.upgrades[{i}]"),
                        format!("{u:?} is not a protocol name"),
                    );
                }
                name
            })
            .collect(),
    };
    let matcher = matcher.filter(|_| errs.0.len() == before)?;
    Some(RouteConfig {
        name: f.name,
        matcher,
        methods,
        scopes: f.scopes,
        roles: f.roles,
        issuers: f.issuers,
        public: f.public,
        forward_authorization: f.forward_authorization,
        host: f.host.map(|h| h.to_ascii_lowercase()),
        kinds: f.kinds,
        require_all,
        allow_without_permissions: f.allow_without_permissions,
        max_body_bytes: f.max_body_bytes.map(|b| b.0),
        upgrades,
        allow_matrix_params: f.allow_matrix_params,
    })
}

/// Headers the gateway must keep to frame and route a request: a strip
/// pattern may not match them.
const FRAMING_HEADERS: [&str; 4] = [
    "host",
    "content-length",
    "transfer-encoding",
    "content-type",
];

/// `upstream.strip_headers`: exact names, or prefixes ending in `*`.
fn strip_headers(errs: &mut Errors, entries: Vec<String>) -> Vec<HeaderPattern> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            let path = format!("upstream.strip_headers[{i}]");
            let (name, is_prefix) = match entry.strip_suffix('*') {
                Some(prefix) => (prefix, true),
                None => (entry.as_str(), false),
            };
            if name.is_empty() || name.contains('*') || HeaderName::from_str(name).is_err() {
                errs.push(
                    path,
                    format!("{entry:?} is not a header name, or a prefix ending in '*'"),
                );
                return None;
            }
            let name = normalize_header_name(name);
            let pattern = if is_prefix {
                HeaderPattern::Prefix(name)
            } else {
                HeaderPattern::Exact(name)
            };
            if let Some(kept) = FRAMING_HEADERS.iter().find(|h| pattern.matches(h)) {
                errs.push(
                    path,
                    format!("{entry:?} would strip {kept}, which the request needs"),
                );
                return None;
            }
            Some(pattern)
        })
        .collect()
}

fn limits(errs: &mut Errors, f: LimitsFile) -> Limits {
    let d = Limits::default();
    let mut within = |path: &str,
                      value: Option<usize>,
                      default: usize,
                      range: RangeInclusive<usize>,
                      why: &str| {
        let v = value.unwrap_or(default);
        if !range.contains(&v) {
            errs.push(
                format!("limits.{path}"),
                format!("{v} is outside {}..={}{why}", range.start(), range.end()),
            );
        }
        v
    };
    Limits {
        // Why 8 KiB: hyper's read buffer cannot be smaller.
        max_header_bytes: within(
            "max_header_bytes",
            f.max_header_bytes.map(ByteSize::usize),
            d.max_header_bytes,
            8192..=1 << 20,
            " (bytes)",
        ),
        max_headers: within("max_headers", f.max_headers, d.max_headers, 8..=1000, ""),
        // Why 65,534: HTTP/1.1 parsing refuses longer URIs with 414 itself.
        max_uri_bytes: within(
            "max_uri_bytes",
            f.max_uri_bytes.map(ByteSize::usize),
            d.max_uri_bytes,
            256..=65_534,
            " (bytes)",
        ),
        max_connections: within(
            "max_connections",
            f.max_connections,
            d.max_connections,
            1..=1_000_000,
            "",
        ),
        max_concurrent_streams: within(
            "max_concurrent_streams",
            f.max_concurrent_streams.map(|n| n as usize),
            d.max_concurrent_streams as usize,
            1..=10_000,
            "",
        ) as u32,
    }
}

fn token_cache(errs: &mut Errors, f: TokenCacheFile) -> TokenCacheConfig {
    let capacity = f.capacity.unwrap_or(100_000);
    if capacity == 0 {
        errs.push(
            "token_cache.capacity",
            "must be at least 1 (set enabled = false to turn the cache off)",
        );
    }
    TokenCacheConfig {
        enabled: f.enabled.unwrap_or(true),
        capacity,
        ttl: errs.duration("token_cache.ttl", f.ttl.as_deref(), secs(300)),
    }
}

fn identity_headers(errs: &mut Errors, f: IdentityHeadersFile) -> IdentityHeaders {
    let mut seen = HashSet::new();
    let mut header = |field: &str, value: Option<String>, default: &'static str| {
        let path = format!("identity_headers.{field}");
        let name = match value.as_deref().map(HeaderName::from_str) {
            None => HeaderName::from_static(default),
            Some(Ok(n)) => n,
            Some(Err(_)) => {
                errs.push(&path, "invalid header name");
                HeaderName::from_static(default)
            }
        };
        if is_reserved_header(&name) {
            errs.push(
                &path,
                format!("{name} is set by the protocol or the gateway and cannot carry identity"),
            );
        }
        if !seen.insert(normalize_header_name(name.as_str())) {
            errs.push(&path, format!("{name} is used for two identity fields"));
        }
        name
    };
    IdentityHeaders {
        subject: header("subject", f.subject, "x-portcullis-subject"),
        tenant: header("tenant", f.tenant, "x-portcullis-tenant"),
        client_app: header("client_app", f.client_app, "x-portcullis-client-app"),
        scopes: header("scopes", f.scopes, "x-portcullis-scopes"),
        roles: header("roles", f.roles, "x-portcullis-roles"),
    }
}

fn logging(errs: &mut Errors, f: LoggingFile) -> LoggingConfig {
    let json = errs.choice(
        "logging.format",
        f.format.as_deref(),
        &[("text", false), ("json", true)],
        false,
    );
    let level = f.level.unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        errs.push(
            "logging.level",
            format!("invalid filter {level:?} (use e.g. \"info\" or \"portcullis=debug\")"),
        );
    }
    LoggingConfig { level, json }
}

fn identity(errs: &mut Errors, f: IdentityFile) -> IdentitySettings {
    let allow_unregistered_agents = errs.choice(
        "identity.unregistered_agents",
        f.unregistered_agents.as_deref(),
        &[("deny", false), ("allow", true)],
        false,
    );
    let deny_on_groups_overage = errs.choice(
        "identity.groups_overage",
        f.groups_overage.as_deref(),
        &[("deny", true), ("ignore", false)],
        true,
    );
    IdentitySettings {
        allow_unregistered_agents,
        deny_on_groups_overage,
    }
}

fn locations(errs: &mut Errors, files: Vec<LocationFile>) -> Vec<Location> {
    let mut names = HashSet::new();
    files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            if f.name.is_empty() || !names.insert(f.name.clone()) {
                errs.push(
                    format!("locations[{i}].name"),
                    "must be a unique, non-empty name",
                );
            }
            if f.ranges.is_empty() {
                errs.push(format!("locations[{i}].ranges"), "must not be empty");
            }
            let ranges = f
                .ranges
                .iter()
                .enumerate()
                .filter_map(|(j, r)| {
                    let parsed = IpNet::from_str(r)
                        .ok()
                        .or_else(|| IpAddr::from_str(r).ok().map(IpNet::from));
                    if parsed.is_none() {
                        errs.push(
                            format!("locations[{i}].ranges[{j}]"),
                            format!("invalid address or CIDR range {r:?}"),
                        );
                    }
                    parsed
                })
                .collect();
            Location {
                name: f.name,
                ranges,
            }
        })
        .collect()
}

fn agents(
    errs: &mut Errors,
    warnings: &mut Vec<ConfigError>,
    files: Vec<AgentFile>,
    routes: &HashSet<&str>,
) -> Vec<Arc<AgentConfig>> {
    let mut ids = HashSet::with_capacity(files.len());
    files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let at = |field: &str| format!("agents[{i}].{field}");
            let mut id = f.id;
            id.make_ascii_lowercase();
            if id.is_empty() || !ids.insert(id.clone()) {
                errs.push(at("id"), "must be a unique, non-empty agent id");
            }
            if f.name.is_empty() {
                errs.push(at("name"), "must not be empty");
            }
            if f.owner.as_deref().is_none_or(str::is_empty) {
                warnings.push(ConfigError {
                    path: at("owner"),
                    message: format!("agent {:?} has no owner (orphaned agent)", f.name),
                });
            }
            let expires =
                f.expires
                    .as_deref()
                    .and_then(|e| match humantime::parse_rfc3339_weak(e) {
                        Ok(t) => Some(t),
                        Err(_) => {
                            errs.push(
                            at("expires"),
                            format!(
                                "{e:?} is not an RFC 3339 date-time (e.g. \"2027-01-31T00:00:00Z\")"
                            ),
                        );
                            None
                        }
                    });
            if let Some(rs) = &f.routes {
                check_route_names(errs, || at("routes"), rs, routes);
            }
            let methods = f
                .methods
                .as_ref()
                .map(|ms| parse_methods(errs, || at("methods"), ms));
            check_names(errs, || at("permissions"), &f.permissions);
            Arc::new(AgentConfig {
                id,
                name: f.name,
                owner: f.owner.filter(|o| !o.is_empty()),
                sponsor: f.sponsor,
                tenant: f.tenant.map(|mut t| {
                    t.make_ascii_lowercase();
                    t
                }),
                expires,
                enabled: f.enabled.unwrap_or(true),
                routes: f.routes,
                methods,
                params: f.params.into_iter().collect(),
                permissions: f.permissions,
            })
        })
        .collect()
}

fn policies(
    errs: &mut Errors,
    files: Vec<PolicyFile>,
    routes: &HashSet<&str>,
    locations: &[&str],
) -> Vec<PolicyConfig> {
    let mut names = HashSet::new();
    files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let at = format!("policies[{i}]");
            if f.name.is_empty() || !f.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
                errs.push(format!("{at}.name"), "must be non-empty letters, digits, '_', '-' or '.'");
            }
            if !names.insert(f.name.clone()) {
                errs.push(format!("{at}.name"), format!("duplicate policy name {:?}", f.name));
            }
            let state = match f.state.as_deref() {
                None | Some("on") => PolicyState::On,
                Some("report_only") => PolicyState::ReportOnly,
                Some("off") => PolicyState::Off,
                Some(other) => {
                    errs.push(format!("{at}.state"), format!("{other:?} is not \"on\", \"report_only\" or \"off\""));
                    PolicyState::Off
                }
            };
            check_kinds(errs, &format!("{at}.include_kinds"), &f.include_kinds);
            check_kinds(errs, &format!("{at}.exclude_kinds"), &f.exclude_kinds);
            check_route_names(errs, || format!("{at}.include_routes"), &f.include_routes, routes);
            check_route_names(errs, || format!("{at}.exclude_routes"), &f.exclude_routes, routes);
            for (field, list) in [("locations", &f.locations), ("exclude_locations", &f.exclude_locations)] {
                for (j, l) in list.iter().enumerate() {
                    if !locations.contains(&l.as_str()) {
                        errs.push(format!("{at}.{field}[{j}]"), format!("no location named {l:?}"));
                    }
                }
            }
            let days = f
                .days
                .iter()
                .enumerate()
                .filter_map(|(j, d)| {
                    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                        .iter()
                        .position(|n| d.len() >= 3 && n.eq_ignore_ascii_case(&d[..3]));
                    if day.is_none() {
                        errs.push(format!("{at}.days[{j}]"), format!("{d:?} is not a day (mon … sun)"));
                    }
                    day.map(|p| p as u8)
                })
                .collect();
            let hours = f.hours.as_deref().and_then(|h| {
                let parsed = parse_hours(h);
                if parsed.is_none() {
                    errs.push(format!("{at}.hours"), format!("{h:?} is not \"HH:MM-HH:MM\""));
                }
                parsed
            });
            let timezone = match (f.timezone.as_deref(), f.utc_offset.as_deref()) {
                (Some(_), Some(_)) => {
                    errs.push(format!("{at}.timezone"), "set timezone or utc_offset, not both");
                    jiff::tz::TimeZone::UTC
                }
                (Some(name), None) => jiff::tz::TimeZone::get(name).unwrap_or_else(|_| {
                    errs.push(format!("{at}.timezone"), format!("unknown time zone {name:?} (use an IANA name such as \"Europe/Paris\")"));
                    jiff::tz::TimeZone::UTC
                }),
                (None, Some(o)) => parse_utc_offset(o)
                    .and_then(|minutes| jiff::tz::Offset::from_seconds(minutes * 60).ok())
                    .map(jiff::tz::TimeZone::fixed)
                    .unwrap_or_else(|| {
                        errs.push(format!("{at}.utc_offset"), format!("{o:?} is not \"UTC\" or \"+HH:MM\" / \"-HH:MM\""));
                        jiff::tz::TimeZone::UTC
                    }),
                (None, None) => jiff::tz::TimeZone::UTC,
            };
            let token_older_than = f
                .token_older_than
                .as_deref()
                .map(|d| errs.duration(&format!("{at}.token_older_than"), Some(d), Duration::ZERO));
            let grant = match f.grant.as_str() {
                "block" => {
                    if !f.require_scopes.is_empty()
                        || !f.require_roles.is_empty()
                        || f.require_mfa
                        || f.require_auth_context.is_some()
                        || !f.require_acr.is_empty() {
                        errs.push(format!("{at}.grant"), "a block grant takes no require_* settings");
                    }
                    PolicyGrant::Block
                }
                "require" => {
                    if f.require_scopes.is_empty()
                        && f.require_roles.is_empty()
                        && !f.require_mfa
                        && f.require_auth_context.is_none()
                        && f.require_acr.is_empty() {
                        errs.push(format!("{at}.grant"), "\"require\" needs require_scopes, require_roles, require_mfa, require_auth_context or require_acr");
                    }
                    check_names(errs, || format!("{at}.require_scopes"), &f.require_scopes);
                    check_names(errs, || format!("{at}.require_roles"), &f.require_roles);
                    if let Some(c) = &f.require_auth_context
                        && (c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric()))
                    {
                        errs.push(format!("{at}.require_auth_context"), "must be an authentication context id such as \"c1\"");
                    }
                    PolicyGrant::Require {
                        scopes: f.require_scopes,
                        roles: f.require_roles,
                        mfa: f.require_mfa,
                        auth_context: f.require_auth_context,
                        acr: f.require_acr,
                    }
                }
                "" => {
                    errs.push(format!("{at}.grant"), "required: \"block\" or \"require\"");
                    PolicyGrant::Block
                }
                other => {
                    errs.push(format!("{at}.grant"), format!("{other:?} is not \"block\" or \"require\""));
                    PolicyGrant::Block
                }
            };
            let lower = |v: Vec<String>| v.into_iter().map(|x| x.to_ascii_lowercase()).collect::<Vec<_>>();
            PolicyConfig {
                name: f.name,
                state,
                assignments: Assignments {
                    include_kinds: f.include_kinds,
                    exclude_kinds: f.exclude_kinds,
                    include_agents: lower(f.include_agents),
                    exclude_agents: lower(f.exclude_agents),
                    include_client_apps: lower(f.include_client_apps),
                    exclude_client_apps: lower(f.exclude_client_apps),
                    include_tenants: lower(f.include_tenants),
                    exclude_tenants: lower(f.exclude_tenants),
                    include_groups: lower(f.include_groups),
                    exclude_groups: lower(f.exclude_groups),
                    include_roles: f.include_roles,
                    exclude_roles: f.exclude_roles,
                    include_wids: lower(f.include_wids),
                    exclude_wids: lower(f.exclude_wids),
                    include_routes: f.include_routes,
                    exclude_routes: f.exclude_routes,
                },
                conditions: Conditions {
                    locations: f.locations,
                    exclude_locations: f.exclude_locations,
                    days,
                    hours,
                    timezone,
                    methods: parse_methods(errs, || format!("{at}.methods"), &f.methods),
                    params: f.params.into_iter().collect(),
                    token_older_than,
                    client_capabilities: f.client_capabilities,
                },
                grant,
            }
        })
        .collect()
}

fn check_kinds(errs: &mut Errors, at: &str, kinds: &[String]) {
    for (i, k) in kinds.iter().enumerate() {
        if !IDENTITY_KINDS.contains(&k.as_str()) {
            errs.push(
                format!("{at}[{i}]"),
                format!("{k:?} is not one of {}", IDENTITY_KINDS.join(", ")),
            );
        }
    }
}

// The helpers below take the path as a closure: it is formatted only when an
// error names it (a 10,000-agent file would otherwise format 50,000 paths).

fn check_route_names(
    errs: &mut Errors,
    at: impl Fn() -> String,
    names: &[String],
    routes: &HashSet<&str>,
) {
    for (i, n) in names.iter().enumerate() {
        if !routes.contains(&n.as_str()) {
            errs.push(format!("{}[{i}]", at()), format!("no route named {n:?}"));
        }
    }
}

/// Scope and role names: printable ASCII without spaces or quotes, so they
/// can appear in a challenge's `scope="…"`.
fn check_names(errs: &mut Errors, at: impl Fn() -> String, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            errs.push(
                format!("{}[{i}]", at()),
                "must be printable ASCII without spaces, '\"' or '\\'",
            );
        }
    }
}

fn parse_methods(errs: &mut Errors, at: impl Fn() -> String, methods: &[String]) -> Vec<Method> {
    methods
        .iter()
        .enumerate()
        .filter_map(
            |(i, m)| match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => Some(m),
                Err(_) => {
                    errs.push(format!("{}[{i}]", at()), format!("invalid method {m:?}"));
                    None
                }
            },
        )
        .collect()
}

/// `"08:00-18:00"` → minutes after midnight.
fn parse_hours(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.split_once('-')?;
    let minutes = |t: &str| {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
    };
    Some((minutes(a)?, minutes(b)?))
}

/// `"UTC"`, `"+02:00"`, `"-05:30"` → minutes east of UTC.
fn parse_utc_offset(text: &str) -> Option<i32> {
    if text.eq_ignore_ascii_case("utc") || text == "Z" {
        return Some(0);
    }
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = text[1..].split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

/// Where an issuer entry's tokens come from, as the file says it; expanded
/// into [`IssuerAnchor`]s before anything else sees it.
enum IssuerSource {
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

/// Every exact `iss` an entry accepts, each with its key endpoint. Entra:
/// `https://sts.windows.net/{tid}/` with keys from `/{tid}/discovery/keys`
/// (a key may also name the v2 issuer), and
/// `{authority}/{tid}/v2.0` with keys from `/{tid}/discovery/v2.0/keys`.
fn anchors(
    errs: &mut Errors,
    at: &str,
    name: &str,
    source: IssuerSource,
) -> Option<Vec<IssuerAnchor>> {
    let (tenants, authority, v1_issuer_host, accept_v1, accept_v2) = match source {
        IssuerSource::Oidc { issuer, keys } => {
            return Some(vec![IssuerAnchor {
                key_issuers: vec![issuer.clone()],
                iss: issuer,
                label: name.to_owned(),
                tenant: None,
                version: None,
                keys,
            }]);
        }
        IssuerSource::Entra {
            tenants,
            authority,
            v1_issuer_host,
            accept_v1,
            accept_v2,
        } => (tenants, authority, v1_issuer_host, accept_v1, accept_v2),
    };
    let base = authority.to_string().trim_end_matches('/').to_owned();
    let mut out = Vec::new();
    for tenant in tenants {
        let v1 = format!("{v1_issuer_host}/{tenant}/");
        let v2 = format!("{base}/{tenant}/v2.0");
        let versions = [
            (
                accept_v1,
                "v1",
                "1.0",
                &v1,
                "discovery/keys",
                vec![v1.clone(), v2.clone()],
            ),
            (
                accept_v2,
                "v2",
                "2.0",
                &v2,
                "discovery/v2.0/keys",
                vec![v2.clone()],
            ),
        ];
        for (enabled, label, version, iss, keys_path, key_issuers) in versions {
            if !enabled {
                continue;
            }
            let jwks = errs.fetch_url(
                &format!("{at}.authority"),
                &format!("{base}/{tenant}/{keys_path}"),
            )?;
            out.push(IssuerAnchor {
                iss: iss.clone(),
                label: format!("{name}/{tenant}/{label}"),
                tenant: Some(tenant.clone()),
                version: Some(version),
                keys: KeyLocation::Jwks(jwks),
                key_issuers,
            });
        }
    }
    Some(out)
}

#[derive(Clone, Copy, PartialEq)]
enum Sink {
    Off,
    Stdout,
    File,
    Both,
}

fn audit(errs: &mut Errors, f: AuditFile, base: &Path) -> AuditConfig {
    let sink = errs.choice(
        "audit.sink",
        f.sink.as_deref(),
        &[
            ("stdout", Sink::Stdout),
            ("file", Sink::File),
            ("both", Sink::Both),
            ("off", Sink::Off),
        ],
        Sink::Stdout,
    );
    let wants_file = matches!(sink, Sink::File | Sink::Both);
    let file = match (wants_file, f.file) {
        (true, Some(path)) => {
            let path = base.join(path);
            match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => errs.push(
                    "audit.file",
                    format!("directory {} does not exist", dir.display()),
                ),
                _ => {}
            }
            Some(AuditFileConfig {
                path,
                max_bytes: f.max_file_bytes.map_or(100 * 1024 * 1024, |b| b.0),
                keep: f.keep_files.unwrap_or(10),
            })
        }
        (true, None) => {
            errs.push("audit.file", "required when sink is \"file\" or \"both\"");
            None
        }
        (false, Some(_)) => {
            errs.push(
                "audit.file",
                "set sink = \"file\" or \"both\" to write records to a file",
            );
            None
        }
        (false, None) => None,
    };
    if !wants_file && (f.max_file_bytes.is_some() || f.keep_files.is_some()) {
        errs.push(
            "audit",
            "max_file_bytes and keep_files apply to a file sink only",
        );
    }
    let queue_capacity = f.queue_capacity.unwrap_or(8192);
    if !(1..=1_000_000).contains(&queue_capacity) {
        errs.push("audit.queue_capacity", "must be between 1 and 1000000");
    }
    let block = errs.choice(
        "audit.overflow",
        f.overflow.as_deref(),
        &[("block", true), ("drop", false)],
        true,
    );
    let overflow = if block {
        AuditOverflow::Block(errs.duration(
            "audit.block_timeout",
            f.block_timeout.as_deref(),
            secs(1),
        ))
    } else {
        if f.block_timeout.is_some() {
            errs.push(
                "audit.block_timeout",
                "applies to overflow = \"block\" only",
            );
        }
        AuditOverflow::Drop
    };
    let on_failure = errs.choice(
        "audit.on_failure",
        f.on_failure.as_deref(),
        &[("deny", AuditFailure::Deny), ("allow", AuditFailure::Allow)],
        AuditFailure::Deny,
    );
    AuditConfig {
        stdout: matches!(sink, Sink::Stdout | Sink::Both),
        file,
        policy: AuditPolicy {
            queue_capacity,
            overflow,
            on_failure,
        },
    }
}

fn existing_file(errs: &mut Errors, path: &str, value: &str, base: &Path) -> std::path::PathBuf {
    let p = base.join(value);
    if !p.is_file() {
        errs.push(path, format!("no such file: {}", p.display()));
    }
    p
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// 8-4-4-4-12 hexadecimal digits.
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn is_quoted_string_safe(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// Whether a name (as the gateway compares names, `_` as `-`) is one the
/// protocol or the gateway itself sets.
fn is_reserved_header(name: &HeaderName) -> bool {
    matches!(
        normalize_header_name(name.as_str()).as_str(),
        "authorization"
            | "host"
            | "connection"
            | "keep-alive"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-connection"
            | "content-length"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-forwarded-host"
            | "forwarded"
            | "x-request-id"
            | "traceparent"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigErrors> {
        crate::config::parse(text, Path::new("."))
    }

    fn errors(text: &str) -> Vec<String> {
        parse(text)
            .err()
            .map(|e| e.0.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    const UPSTREAM: &str = "[upstream]\nurl = \"http://127.0.0.1:8000\"\n";

    #[test]
    fn limits_have_safe_defaults_and_refuse_values_out_of_range() {
        assert_eq!(parse(UPSTREAM).unwrap().limits, Limits::default());
        assert_eq!(
            errors(&format!(
                "{UPSTREAM}[limits]\nmax_header_bytes = 1024\nmax_headers = 0\nmax_uri_bytes = 100000\nmax_connections = 0\nmax_concurrent_streams = 0\n"
            )),
            [
                "limits.max_header_bytes: 1024 is outside 8192..=1048576 (bytes)",
                "limits.max_headers: 0 is outside 8..=1000",
                "limits.max_uri_bytes: 100000 is outside 256..=65534 (bytes)",
                "limits.max_connections: 0 is outside 1..=1000000",
                "limits.max_concurrent_streams: 0 is outside 1..=10000",
            ]
        );
        assert_eq!(
            errors(&format!(
                "{UPSTREAM}[[routes]]\nname = \"r\"\nprefix = \"/\"\npublic = true\nmax_body_bytes = 0\n"
            )),
            ["routes[0].max_body_bytes: must be at least 1 (omit it for no limit)"]
        );
    }

    #[test]
    fn worker_threads_default_to_the_cpus_and_refuse_zero() {
        assert_eq!(parse(UPSTREAM).unwrap().server.worker_threads, None);
        let server = |n: &str| format!("[server]\nworker_threads = {n}\n{UPSTREAM}");
        assert_eq!(parse(&server("2")).unwrap().server.worker_threads, Some(2));
        assert_eq!(
            errors(&server("0")),
            ["server.worker_threads: 0 is outside 1..=256"]
        );
    }

    #[test]
    fn audit_settings_are_checked_together() {
        let audit = |body: &str| errors(&format!("{UPSTREAM}[audit]\n{body}"));
        assert_eq!(
            audit("sink = \"file\""),
            ["audit.file: required when sink is \"file\" or \"both\""]
        );
        assert_eq!(
            audit("file = \"/tmp/a.jsonl\""),
            ["audit.file: set sink = \"file\" or \"both\" to write records to a file"]
        );
        assert_eq!(
            audit("sink = \"file\"\nfile = \"/nonexistent-dir/a.jsonl\""),
            ["audit.file: directory /nonexistent-dir does not exist"]
        );
        assert_eq!(
            audit(
                "sink = \"syslog\"\nqueue_capacity = 0\noverflow = \"drop\"\nblock_timeout = \"1s\"\nkeep_files = 3"
            ),
            [
                "audit.sink: \"syslog\" is not one of \"stdout\", \"file\", \"both\", \"off\"",
                "audit: max_file_bytes and keep_files apply to a file sink only",
                "audit.queue_capacity: must be between 1 and 1000000",
                "audit.block_timeout: applies to overflow = \"block\" only",
            ]
        );
        let c = parse(&format!(
            "{UPSTREAM}[audit]\nsink = \"both\"\nfile = \"a.jsonl\"\noverflow = \"drop\"\non_failure = \"allow\"\n"
        ))
        .unwrap();
        assert!(c.audit.stdout && c.audit.is_enabled());
        assert_eq!(c.audit.file.unwrap().path, Path::new("./a.jsonl"));
        assert!(
            !parse(&format!("{UPSTREAM}[audit]\nsink = \"off\"\n"))
                .unwrap()
                .audit
                .is_enabled()
        );
    }

    #[test]
    fn defaults_are_applied() {
        let text = format!(
            "{UPSTREAM}[[issuers]]\nname = \"e\"\nkind = \"entra\"\ntenants = [\"AAAABBBB-0000-CCCC-1111-DDDD2222EEEE\"]\naudiences = [\"api://x\"]\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.upstream.response_timeout, secs(600));
        let i = &c.issuers[0];
        assert_eq!(i.algorithms, vec![Algorithm::RS256]);
        assert_eq!(i.clock_skew, secs(60));
        assert_eq!(i.max_token_size, 16 * 1024);
        assert_eq!(i.accepted_typ, vec!["JWT", "at+jwt"]);
        assert_eq!(i.keys.refresh_cooldown, secs(300));
        assert_eq!(i.keys.max_staleness, secs(86_400));
        assert!(c.token_cache.enabled);
        assert_eq!(
            c.audit,
            AuditConfig {
                stdout: true,
                file: None,
                policy: AuditPolicy {
                    queue_capacity: 8192,
                    overflow: AuditOverflow::Block(secs(1)),
                    on_failure: AuditFailure::Deny,
                },
            },
            "audit to stdout, fail closed"
        );
        assert_eq!(
            i.anchors.iter().map(|a| a.iss.clone()).collect::<Vec<_>>(),
            vec![
                "https://sts.windows.net/aaaabbbb-0000-cccc-1111-dddd2222eeee/".to_owned(),
                "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0"
                    .to_owned(),
            ],
            "tenant ids are compared in lower case"
        );
    }

    #[test]
    fn symmetric_and_unsigned_algorithms_are_refused_at_load() {
        for alg in ["none", "HS256", "hs512", "None"] {
            let text = format!(
                "{UPSTREAM}[[issuers]]\nname = \"o\"\nkind = \"oidc\"\nissuer = \"https://i\"\naudiences = [\"a\"]\nalgorithms = [\"{alg}\"]\n"
            );
            let errs = errors(&text);
            assert!(
                errs.iter()
                    .any(|e| e.starts_with("issuers[0].algorithms[0]") && e.contains("refused")),
                "{alg}: {errs:?}"
            );
        }
    }

    #[test]
    fn plain_http_key_urls_only_on_loopback() {
        let mk = |url: &str| {
            format!(
                "{UPSTREAM}[[issuers]]\nname = \"o\"\nkind = \"oidc\"\nissuer = \"i\"\naudiences = [\"a\"]\njwks_uri = \"{url}\"\n"
            )
        };
        assert!(parse(&mk("http://127.0.0.1:1/keys")).is_ok());
        assert!(parse(&mk("http://localhost/keys")).is_ok());
        assert!(parse(&mk("http://[::1]:8/keys")).is_ok());
        assert!(parse(&mk("https://idp.example/keys")).is_ok());
        assert!(errors(&mk("http://idp.example/keys"))[0].contains("loopback"));
    }

    #[test]
    fn byte_sizes_are_whole_numbers_or_strings_with_a_unit() {
        let route = |size: &str| {
            format!(
                "{UPSTREAM}[[routes]]\nname = \"r\"\nprefix = \"/\"\npublic = true\nmax_body_bytes = {size}\n"
            )
        };
        for (size, bytes) in [
            ("1024", 1024),
            ("\"1MiB\"", 1 << 20),
            ("\"1 MiB\"", 1 << 20),
            ("\"10MB\"", 10_000_000),
            ("\"64kib\"", 64 << 10),
        ] {
            let config = parse(&route(size)).unwrap();
            assert_eq!(config.routes[0].max_body_bytes, Some(bytes), "{size}");
        }
        for size in ["-1", "\"-1KiB\"", "\"1 MiB x\"", "1.5", "true"] {
            let e = errors(&route(size));
            assert_eq!(e.len(), 1, "{size}: {e:?}");
            assert!(
                e[0].starts_with("routes[0].max_body_bytes: invalid"),
                "{e:?}"
            );
        }
    }

    #[test]
    fn claim_paths_are_toml_dotted_keys_and_nothing_else() {
        let segments = |text: &str| ClaimPath::parse(text).map(|p| p.segments().to_vec());
        assert_eq!(segments("scp"), Some(vec!["scp".into()]));
        assert_eq!(
            segments("resource_access.\"my.client\".roles"),
            Some(vec![
                "resource_access".into(),
                "my.client".into(),
                "roles".into()
            ])
        );
        assert_eq!(
            segments("'https://x.example/roles'"),
            Some(vec!["https://x.example/roles".into()])
        );
        assert_eq!(segments("a.\"b c\""), Some(vec!["a".into(), "b c".into()]));
        // No value, comment, table or second key can ride along.
        for bad in [
            "",
            "a.",
            ".a",
            "a b",
            "a = true #",
            "a = 1",
            "a # x",
            "a\nb",
            "[a]",
            "a]\n[b",
            "\"unterminated",
        ] {
            assert_eq!(ClaimPath::parse(bad), None, "{bad:?}");
        }
        let issuer = |extra: &str| {
            format!(
                "{UPSTREAM}[[issuers]]\nname = \"o\"\nkind = \"oidc\"\nissuer = \"https://i\"\naudiences = [\"a\"]\n{extra}\n"
            )
        };
        assert_eq!(
            errors(&issuer("scope_claims = []\nrole_claims = [\"a = 1\"]")),
            [
                "issuers[0].scope_claims: must not be empty (omit it for the default)",
                "issuers[0].role_claims[0]: \"a = 1\" is not a claim name or a dotted path (e.g. \"scope\", \"realm_access.roles\", '\"https://example.com/roles\"')",
            ]
        );
        let config = parse(&issuer("")).unwrap();
        assert_eq!(config.issuers[0].claims, ClaimSources::oidc());
        assert_eq!(config.issuers[0].kind, IssuerKind::Oidc);
    }

    #[test]
    fn issuers_may_not_overlap() {
        let text = format!(
            "{UPSTREAM}[[issuers]]\nname = \"a\"\nkind = \"oidc\"\nissuer = \"https://i\"\naudiences = [\"a\"]\n[[issuers]]\nname = \"b\"\nkind = \"oidc\"\nissuer = \"https://i\"\naudiences = [\"a\"]\n"
        );
        assert!(errors(&text).iter().any(|e| e.contains("already accepted")));
    }

    #[test]
    fn h2c_is_never_an_allowed_upgrade_and_strip_entries_are_checked() {
        let route = "[[routes]]\nname = \"r\"\nprefix = \"/\"\npublic = true\n";
        assert_eq!(
            errors(&format!(
                "{UPSTREAM}{route}upgrades = [\"H2C\", \"web socket\"]\n"
            )),
            [
                "routes[0].upgrades[0]: h2c is never forwarded: clients that want HTTP/2 can speak it to the gateway directly",
                "routes[0].upgrades[1]: \"web socket\" is not a protocol name",
            ]
        );
        let ok = parse(&format!("{UPSTREAM}{route}upgrades = []\n")).unwrap();
        assert!(ok.routes[0].upgrades.is_empty());
        let default = parse(&format!("{UPSTREAM}{route}")).unwrap();
        assert_eq!(default.routes[0].upgrades, ["websocket"]);

        let text = "[upstream]\nurl = \"http://127.0.0.1:8000\"\nstrip_headers = [\"X_MS_Client_Principal\", \"x-auth-request-*\", \"*\", \"a*b\", \"content-*\", \"Host\"]\n";
        assert_eq!(
            errors(text),
            [
                "upstream.strip_headers[2]: \"*\" is not a header name, or a prefix ending in '*'",
                "upstream.strip_headers[3]: \"a*b\" is not a header name, or a prefix ending in '*'",
                "upstream.strip_headers[4]: \"content-*\" would strip content-length, which the request needs",
                "upstream.strip_headers[5]: \"Host\" would strip host, which the request needs",
            ]
        );
        let ok = parse(&text.replace(", \"*\", \"a*b\", \"content-*\", \"Host\"", "")).unwrap();
        assert_eq!(
            ok.strip_headers,
            [
                HeaderPattern::Exact("x-ms-client-principal".into()),
                HeaderPattern::Prefix("x-auth-request-".into())
            ]
        );
    }

    #[test]
    fn identity_headers_cannot_reuse_protocol_headers() {
        // Reserved names, and other spellings of them (`_` for `-`).
        for (subject, client_app) in [("authorization", "x-a"), ("x_forwarded_for", "x_a")] {
            let errs = errors(&format!(
                "{UPSTREAM}[identity_headers]\nsubject = \"{subject}\"\ntenant = \"x-a\"\nclient_app = \"{client_app}\"\n"
            ));
            assert!(
                errs.iter()
                    .any(|e| e.starts_with("identity_headers.subject")),
                "{errs:?}"
            );
            assert!(
                errs.iter()
                    .any(|e| e.starts_with("identity_headers.client_app") && e.contains("two")),
                "{errs:?}"
            );
        }
    }

    #[test]
    fn route_rules() {
        let errs = errors(&format!(
            "{UPSTREAM}[[routes]]\nname = \"a b\"\nprefix = \"x\"\n[[routes]]\nname = \"p\"\nprefix = \"/p\"\npublic = true\nscopes = [\"s\"]\n[[routes]]\nname = \"q\"\npath = \"/q\"\nprefix = \"/q\"\npublic = true\n"
        ));
        for want in [
            "routes[0].name",
            "routes[0].path: must start with '/'",
            "routes[1].public",
            "routes[2]: set exactly one of path or prefix",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "missing {want}: {errs:?}"
            );
        }
    }

    #[test]
    fn a_protected_route_needs_an_issuer() {
        let errs = errors(&format!(
            "{UPSTREAM}[[routes]]\nname = \"r\"\nprefix = \"/\"\n"
        ));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("issuers: at least one issuer")),
            "{errs:?}"
        );
    }

    #[test]
    fn time_zones() {
        let policy = |extra: &str| {
            format!(
                "{UPSTREAM}[[policies]]\nname = \"p\"\ngrant = \"block\"\nhours = \"08:00-18:00\"\n{extra}\n"
            )
        };
        assert!(parse(&policy("timezone = \"Europe/Paris\"")).is_ok());
        assert!(parse(&policy("utc_offset = \"-05:30\"")).is_ok());
        let errs = errors(&policy("timezone = \"Mars/Olympus\""));
        assert!(
            errs[0].starts_with("policies[0].timezone: unknown time zone"),
            "{errs:?}"
        );
        let errs = errors(&policy("timezone = \"UTC\"\nutc_offset = \"+01:00\""));
        assert!(errs[0].contains("not both"), "{errs:?}");
        assert_eq!(parse_hours("08:00-18:00"), Some((480, 1080)));
        assert_eq!(parse_hours("22:00-06:00"), Some((1320, 360)));
        assert_eq!(parse_hours("25:00-26:00"), None);
        assert_eq!(parse_hours("8-18"), None);
        assert_eq!(parse_utc_offset("-05:30"), Some(-330));
        assert_eq!(parse_utc_offset("+15:00"), None);
    }

    #[test]
    fn guids() {
        assert!(is_guid("aaaabbbb-0000-cccc-1111-dddd2222eeee"));
        assert!(!is_guid("aaaabbbb-0000-cccc-1111-dddd2222eee"));
        assert!(!is_guid("aaaabbbb00000-cccc-1111-dddd2222eeee"));
        assert!(!is_guid("common"));
    }
}
