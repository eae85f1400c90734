//! `[[issuers]]`: where keys come from, which `iss` values each entry accepts, and how its tokens are read.

use super::*;

pub(super) fn issuer(
    errs: &mut Errors,
    at: &str,
    f: IssuerFile,
    base: &Path,
) -> Option<IssuerConfig> {
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
pub(super) fn claim_paths(
    errs: &mut Errors,
    at: &str,
    texts: Option<&[String]>,
) -> Option<Vec<ClaimPath>> {
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

pub(super) fn oidc_source(errs: &mut Errors, at: &str, f: &IssuerFile) -> Option<IssuerSource> {
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

pub(super) fn entra_source(errs: &mut Errors, at: &str, f: &IssuerFile) -> Option<IssuerSource> {
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

pub(super) fn algorithms(errs: &mut Errors, at: &str, names: Option<&[String]>) -> Vec<Algorithm> {
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
pub(super) fn check_issuer_uniqueness(errs: &mut Errors, issuers: &[IssuerConfig]) {
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

/// Where an issuer entry's tokens come from, as the file says it; expanded
/// into [`IssuerAnchor`]s before anything else sees it.
pub(super) enum IssuerSource {
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
pub(super) fn anchors(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::testing::{UPSTREAM, errors, parse};

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
}
