//! `[[routes]]`.

use super::*;

pub(super) fn route(
    errs: &mut Errors,
    at: &str,
    mut f: RouteFile,
    issuers: &[IssuerConfig],
    upstreams: &[UpstreamConfig],
    credentials: &[super::super::CredentialConfig],
) -> Option<RouteConfig> {
    let before = errs.0.len();
    let is_mcp = f.mcp.is_some();
    let mcp = f
        .mcp
        .take()
        .and_then(|m| super::mcp::mcp_route(errs, at, m, &f, issuers));
    let model = f
        .model
        .take()
        .and_then(|m| super::models::model_route(errs, at, m, is_mcp));
    errs.check_name(format!("{at}.name"), &f.name);
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
    let upstream = match f.upstream.as_deref() {
        Some(name) => upstreams.iter().position(|u| u.name == name).or_else(|| {
            errs.push(
                format!("{at}.upstream"),
                format!("no upstream named {name:?}"),
            );
            None
        }),
        // `[upstream]` (`default`, first), or the one upstream there is.
        // (None at all: reported as the missing [upstream] table.)
        None if upstreams.is_empty() => None,
        None if upstreams.len() == 1 || upstreams[0].name == "default" => Some(0),
        None => {
            errs.push(
                format!("{at}.upstream"),
                "required: there are several [[upstreams]] and no [upstream]",
            );
            None
        }
    };
    let on_behalf_of = upstream
        .and_then(|u| upstreams[u].credential)
        .is_some_and(|c| {
            credentials
                .get(c)
                .is_some_and(|c| c.source.is_on_behalf_of())
        });
    if on_behalf_of && f.public {
        errs.push(
            format!("{at}.public"),
            "its upstream's credential is on_behalf_of: a public route has no caller's token to exchange",
        );
    }
    if on_behalf_of
        && f.kinds
            .as_ref()
            .is_some_and(|ks| !ks.iter().any(|k| k == "user"))
    {
        // Why: Entra exchanges user tokens only (AADSTS7000114 for an app).
        errs.push(
            format!("{at}.kinds"),
            "its upstream's credential is on_behalf_of, which exchanges user tokens only: this route admits no user",
        );
    }
    if f.forward_authorization && upstream.is_some_and(|u| upstreams[u].credential.is_some()) {
        errs.push(
            format!("{at}.forward_authorization"),
            "its upstream gets the gateway's own credential: the caller's token is never forwarded there",
        );
    }
    let max_stream_duration = f.max_stream_duration.as_deref().map(|text| {
        let path = format!("{at}.max_stream_duration");
        let d = errs.duration(&path, Some(text), Duration::ZERO);
        if d.is_zero() {
            errs.push(path, "must be longer than zero (omit it for no limit)");
        }
        d
    });
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
        mcp,
        model,
        upstream: upstream.unwrap_or(0),
        max_stream_duration,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::validate::testing::{UPSTREAM, errors, parse};

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
    fn h2c_is_never_an_allowed_upgrade() {
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
    }
}
