//! `[server]`, `[upstream]`, `[limits]`, `[streams]`, `[token_cache]`, `[identity_headers]`, `[logging]`.

use super::*;

pub(super) fn server(errs: &mut Errors, f: ServerFile, base: &Path) -> ServerConfig {
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

/// One upstream at `at` (`upstream` or `upstreams[i]`), named `name`.
pub(super) fn upstream(
    errs: &mut Errors,
    at: &str,
    name: String,
    mut f: UpstreamFile,
    base: &Path,
    credentials: &[super::super::CredentialConfig],
) -> UpstreamConfig {
    let credential = f.credential.take().and_then(|c| {
        let found = credentials.iter().position(|k| k.name == c);
        if found.is_none() {
            errs.push(
                format!("{at}.credential"),
                format!("no credential named {c:?}"),
            );
        }
        found
    });
    let strip = strip_headers(errs, at, std::mem::take(&mut f.strip_headers));
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
            errs.push(format!("{at}.url"), message);
            Uri::from_static("http://127.0.0.1")
        }
    };
    let host_header = errs.choice(
        &format!("{at}.host_header"),
        f.host_header.as_deref(),
        &[
            ("client", HostHeader::Client),
            ("upstream", HostHeader::Upstream),
        ],
        HostHeader::Client,
    );
    UpstreamConfig {
        name,
        url,
        credential,
        host_header,
        strip_headers: strip,
        connect_timeout: errs.duration(
            &format!("{at}.connect_timeout"),
            f.connect_timeout.as_deref(),
            secs(5),
        ),
        // Why 600 s: the OpenAI SDKs' own total timeout; reasoning models can
        // think for minutes before the first header.
        response_timeout: errs.duration(
            &format!("{at}.response_timeout"),
            f.response_timeout.as_deref(),
            secs(600),
        ),
        pool_idle_timeout: errs.duration(
            &format!("{at}.pool_idle_timeout"),
            f.pool_idle_timeout.as_deref(),
            secs(90),
        ),
        http2: f.http2.unwrap_or(false),
        ca_file: f
            .ca_file
            .map(|p| existing_file(errs, &format!("{at}.ca_file"), &p, base)),
    }
}

/// Headers the gateway must keep to frame and route a request: a strip
/// pattern may not match them.
pub(super) const FRAMING_HEADERS: [&str; 4] = [
    "host",
    "content-length",
    "transfer-encoding",
    "content-type",
];

/// `strip_headers`: exact names, or prefixes ending in `*`.
fn strip_headers(errs: &mut Errors, at: &str, entries: Vec<String>) -> Vec<HeaderPattern> {
    entries
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| {
            let path = format!("{at}.strip_headers[{i}]");
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

pub(super) fn limits(errs: &mut Errors, f: LimitsFile) -> Limits {
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

pub(super) fn streams(errs: &mut Errors, f: StreamsFile) -> StreamsConfig {
    let d = StreamsConfig::default();
    let sse_retry = errs.duration("streams.sse_retry", f.sse_retry.as_deref(), d.sse_retry);
    // Why: a client waits this long before it reconnects; a minute is
    // already long for a stream an agent reads.
    if !(Duration::from_millis(1)..=Duration::from_secs(60)).contains(&sse_retry) {
        errs.push("streams.sse_retry", "must be between 1ms and 60s");
    }
    StreamsConfig {
        exp_grace: errs.duration("streams.exp_grace", f.exp_grace.as_deref(), d.exp_grace),
        sse_retry,
        reevaluate_on_reload: f.reevaluate_on_reload.unwrap_or(d.reevaluate_on_reload),
    }
}

pub(super) fn token_cache(errs: &mut Errors, f: TokenCacheFile) -> TokenCacheConfig {
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

pub(super) fn identity_headers(errs: &mut Errors, f: IdentityHeadersFile) -> IdentityHeaders {
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

pub(super) fn logging(errs: &mut Errors, f: LoggingFile) -> LoggingConfig {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::testing::{UPSTREAM, errors, parse};

    #[test]
    fn stream_lifetimes_are_read_and_refused_with_their_paths() {
        let c = parse(&format!(
            "{UPSTREAM}[streams]\nexp_grace = \"30s\"\nsse_retry = \"250ms\"\nreevaluate_on_reload = true\n[[routes]]\nname = \"r\"\nprefix = \"/\"\npublic = true\nmax_stream_duration = \"1h\"\n[routes.model]\non_expiry = \"finish\"\nmax_finish = \"2m\"\n"
        ))
        .unwrap();
        assert_eq!(
            c.streams,
            StreamsConfig {
                exp_grace: Duration::from_secs(30),
                sse_retry: Duration::from_millis(250),
                reevaluate_on_reload: true,
            }
        );
        assert_eq!(
            c.routes[0].max_stream_duration,
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            c.routes[0].model.as_ref().unwrap().on_expiry,
            crate::config::OnExpiry::Finish(Duration::from_secs(120))
        );
        assert_eq!(parse(UPSTREAM).unwrap().streams, StreamsConfig::default());
        assert_eq!(
            errors(&format!(
                "{UPSTREAM}[streams]\nexp_grace = \"soon\"\nsse_retry = \"0s\"\n[[routes]]\nname = \"r\"\nprefix = \"/\"\npublic = true\nmax_stream_duration = \"0s\"\n[routes.model]\non_expiry = \"cut\"\nmax_finish = \"1m\"\n"
            )),
            [
                "routes[0].model.max_finish: applies to on_expiry = \"finish\" only",
                "routes[0].max_stream_duration: must be longer than zero (omit it for no limit)",
                "streams.sse_retry: must be between 1ms and 60s",
                "streams.exp_grace: invalid duration \"soon\": expected number at 0 (use e.g. \"30s\", \"5m\")",
            ]
        );
    }

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
    fn routes_go_to_the_upstream_they_name_or_the_default() {
        let named = "[[upstreams]]\nname = \"search\"\nurl = \"https://search.example\"\nhost_header = \"upstream\"\n";
        let route = |extra: &str| {
            format!("[[routes]]\nname = \"r\"\nprefix = \"/\"\npublic = true\n{extra}")
        };
        let c = parse(&format!(
            "{UPSTREAM}{named}{}",
            route("upstream = \"search\"\n")
        ))
        .unwrap();
        assert_eq!(c.upstreams.len(), 2);
        assert_eq!(
            (c.upstreams[0].name.as_str(), c.upstreams[1].name.as_str()),
            ("default", "search")
        );
        assert_eq!(c.upstreams[1].host_header, HostHeader::Upstream);
        assert_eq!(c.upstreams[0].host_header, HostHeader::Client);
        assert_eq!(c.routes[0].upstream, 1);
        // Unnamed: the default; with only named upstreams, the one there is.
        assert_eq!(
            parse(&format!("{UPSTREAM}{named}{}", route("")))
                .unwrap()
                .routes[0]
                .upstream,
            0
        );
        assert_eq!(
            parse(&format!("{named}{}", route(""))).unwrap().routes[0].upstream,
            0
        );
        let two = format!("{named}{}", named.replace("search", "files"));
        for (text, expected) in [
            (
                format!("{two}{}", route("")),
                "routes[0].upstream: required: there are several [[upstreams]] and no [upstream]",
            ),
            (
                format!("{UPSTREAM}{}", route("upstream = \"nope\"\n")),
                "routes[0].upstream: no upstream named \"nope\"",
            ),
            (
                format!("{named}{named}"),
                "upstreams[1].name: duplicate upstream name \"search\"",
            ),
            (
                format!(
                    "{UPSTREAM}{}",
                    named.replace("search\"\nurl", "default\"\nurl")
                ),
                "upstreams[0].name: \"default\" is the name of [upstream]",
            ),
            (
                UPSTREAM.replace("[upstream]\n", "[upstream]\nname = \"x\"\n"),
                "upstream.name: [upstream] is the upstream named \"default\"",
            ),
            (
                format!("{UPSTREAM}{}", named.replace("\"upstream\"", "\"both\"")),
                "upstreams[0].host_header: \"both\" is not one of",
            ),
            (
                "[[routes]]\nname = \"r\"\nprefix = \"/\"\npublic = true\n".into(),
                "upstream: missing table [upstream] (or [[upstreams]])",
            ),
            (
                format!(
                    "{UPSTREAM}{}",
                    named.replace("host_header", "credential = \"nope\"\nhost_header")
                ),
                "upstreams[0].credential: no credential named \"nope\"",
            ),
            (
                format!(
                    "[[credentials]]\nname = \"own\"\nkind = \"managed_identity\"\nscope = \"https://search.azure.com/.default\"\n{}{}",
                    named.replace("host_header", "credential = \"own\"\nhost_header"),
                    route("forward_authorization = true\n")
                ),
                "routes[0].forward_authorization: its upstream gets the gateway's own credential",
            ),
            (
                format!(
                    "[[credentials]]\nname = \"app\"\nkind = \"workload_identity\"\ntenant = \"t\"\nclient_id = \"c\"\ntoken_file = \"/t\"\nscope = \"https://x/.default\"\n[[credentials]]\nname = \"own\"\nkind = \"on_behalf_of\"\nclient = \"app\"\nscope = \"https://graph.microsoft.com/.default\"\n{}{}",
                    named.replace("host_header", "credential = \"own\"\nhost_header"),
                    route("kinds = [\"app\"]\n").replace("public = true\n", "")
                ),
                "routes[0].kinds: its upstream's credential is on_behalf_of, which exchanges user tokens only",
            ),
        ] {
            let errs = errors(&text);
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "{expected:?} not in {errs:#?}"
            );
        }
    }

    #[test]
    fn strip_entries_are_checked() {
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
            ok.upstreams[0].strip_headers,
            [
                HeaderPattern::Exact("x-ms-client-principal".into()),
                HeaderPattern::Prefix("x-auth-request-".into())
            ]
        );
    }
}
