//! File types → [`Config`], collecting every error with its path: the
//! whole file here, each section in its own file.

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
    LimitsFile, LocationFile, LoggingFile, PolicyFile, RouteFile, ServerFile, StreamsFile,
    TokenCacheFile, UpstreamFile,
};
use super::{
    AgentConfig, Assignments, AuditConfig, AuditFailure, AuditFileConfig, AuditOverflow,
    AuditPolicy, ClaimPath, ClaimSources, Conditions, Config, ConfigError, ConfigErrors,
    HeaderPattern, HostHeader, IDENTITY_KINDS, IdentityHeaders, IdentitySettings, IssuerAnchor,
    IssuerConfig, IssuerKind, KeyFetchConfig, KeyLocation, Limits, Location, LoggingConfig,
    PolicyConfig, PolicyGrant, PolicyState, RouteConfig, RouteMatch, ServerConfig, StreamsConfig,
    TlsConfig, TokenCacheConfig, UpstreamConfig, normalize_header_name,
};

mod access;
mod audit;
mod credentials;
mod issuers;
mod mcp;
mod models;
mod routes;
mod server;

use access::{agents, identity, locations, policies};
use audit::audit;
use issuers::{check_issuer_uniqueness, issuer};
use routes::route;
use server::{identity_headers, limits, logging, server, streams, token_cache, upstream};

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

    /// A name the config refers to (a route, an upstream, a budget…):
    /// letters, digits, `_`, `-` and `.`. Whether it is one.
    fn check_name(&mut self, path: impl Into<String>, name: &str) -> bool {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !ok {
            self.push(path, "must be non-empty letters, digits, '_', '-' or '.'");
        }
        ok
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
    let credentials = credentials::credentials(&mut errs, file.credentials, base);
    let upstreams = upstreams(&mut errs, file.upstream, file.upstreams, base, &credentials);
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
        .filter_map(|(i, r)| {
            route(
                &mut errs,
                &format!("routes[{i}]"),
                r,
                &issuers,
                &upstreams,
                &credentials,
            )
        })
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
    mcp::doctor(&mut warnings, &routes, &issuers);
    let agents = agents(&mut errs, &mut warnings, file.agents, &route_names);
    let location_names: Vec<&str> = locations.iter().map(|l| l.name.as_str()).collect();
    let policies = policies(&mut errs, file.policies, &route_names, &location_names);
    let mcp_rules = mcp::mcp_rules(&mut errs, file.mcp_rules, &routes);
    let budgets = models::budgets(&mut errs, file.budgets, &routes);
    models::doctor(&mut warnings, &routes, &agents, &policies);
    let metering = models::metering(&mut errs, file.metering, &identity_headers);
    let budget_store = models::budget_store(&mut errs, file.budget_store);
    let revocation_file = file
        .revocation
        .map(|r| existing_file(&mut errs, "revocation.file", &r.file, base));
    let streams = streams(&mut errs, file.streams);
    let audit = audit(&mut errs, file.audit, base);
    let limits = limits(&mut errs, file.limits);
    match errs.0.is_empty() {
        true => Ok(Config {
            server,
            upstreams,
            credentials,
            issuers,
            routes,
            token_cache,
            identity_headers,
            logging,
            identity,
            locations,
            agents,
            policies,
            mcp_rules,
            budgets,
            metering,
            budget_store,
            revocation_file,
            streams,
            audit,
            limits,
            version: String::new(),
            source: None,
            warnings,
        }),
        false => Err(ConfigErrors(errs.0)),
    }
}

/// `[upstream]` (named `default`) and `[[upstreams]]`: at least one, each
/// name once.
fn upstreams(
    errs: &mut Errors,
    single: Option<super::file::UpstreamFile>,
    named: Vec<super::file::UpstreamFile>,
    base: &Path,
    credentials: &[super::CredentialConfig],
) -> Vec<UpstreamConfig> {
    let mut out = Vec::with_capacity(named.len() + 1);
    if let Some(mut u) = single {
        if u.name.take().is_some() {
            errs.push(
                "upstream.name",
                "[upstream] is the upstream named \"default\"; name [[upstreams]] entries instead",
            );
        }
        out.push(upstream(
            errs,
            "upstream",
            "default".into(),
            u,
            base,
            credentials,
        ));
    }
    for (i, mut u) in named.into_iter().enumerate() {
        let at = format!("upstreams[{i}]");
        let name = u.name.take().unwrap_or_default();
        let problem = match name.as_str() {
            _ if !errs.check_name(format!("{at}.name"), &name) => None,
            "default" => Some("\"default\" is the name of [upstream]; choose another".to_owned()),
            _ if out.iter().any(|o: &UpstreamConfig| o.name == name) => {
                Some(format!("duplicate upstream name {name:?}"))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            errs.push(format!("{at}.name"), problem);
        }
        out.push(upstream(errs, &at, name, u, base, credentials));
    }
    if out.is_empty() {
        errs.push("upstream", "missing table [upstream] (or [[upstreams]])");
    }
    out
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
mod testing {
    use super::*;

    pub(super) fn parse(text: &str) -> Result<Config, ConfigErrors> {
        crate::config::parse(text, Path::new("."))
    }

    /// Every error of `text`, as `check` prints them.
    pub(super) fn errors(text: &str) -> Vec<String> {
        parse(text)
            .err()
            .map(|e| e.0.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    /// The one table every config needs.
    pub(super) const UPSTREAM: &str = "[upstream]\nurl = \"http://127.0.0.1:8000\"\n";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::testing::{UPSTREAM, errors, parse};

    #[test]
    fn defaults_are_applied() {
        let text = format!(
            "{UPSTREAM}[[issuers]]\nname = \"e\"\nkind = \"entra\"\ntenants = [\"AAAABBBB-0000-CCCC-1111-DDDD2222EEEE\"]\naudiences = [\"api://x\"]\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.upstreams[0].response_timeout, secs(600));
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
    fn guids() {
        assert!(is_guid("aaaabbbb-0000-cccc-1111-dddd2222eeee"));
        assert!(!is_guid("aaaabbbb-0000-cccc-1111-dddd2222eee"));
        assert!(!is_guid("aaaabbbb00000-cccc-1111-dddd2222eeee"));
        assert!(!is_guid("common"));
    }
}
