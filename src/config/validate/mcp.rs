//! MCP routes: the resource-server settings of a route in front of an MCP
//! server, and the checks that catch the misconfigurations MCP clients
//! and Entra then report only as opaque errors.

use std::collections::HashSet;
use std::time::Duration;

use super::{
    ConfigError, Errors, IssuerConfig, IssuerKind, RouteConfig, check_kinds, check_names, is_guid,
};
use crate::config::file::{McpRouteFile, McpRuleFile, RouteFile};
use crate::config::{METADATA_PREFIX, McpRoute, McpRule};
use crate::config::{McpArgument, json_pointer};

/// A route's `mcp` table, checked against the route it belongs to.
pub(super) fn mcp_route(
    errs: &mut Errors,
    at: &str,
    f: McpRouteFile,
    route: &RouteFile,
    issuers: &[IssuerConfig],
) -> Option<McpRoute> {
    let before = errs.0.len();
    let at_resource = format!("{at}.mcp.resource");
    if route.forward_authorization {
        errs.push(
            format!("{at}.forward_authorization"),
            "an MCP route never forwards the client's token: MCP forbids token passthrough (the server gets the identity headers instead)",
        );
    }
    let resource = f.resource.as_str();
    // Why: a public MCP route checks no token, so it is no one's resource
    // server; its messages are still read strictly and Origin checked.
    let uri = if resource.is_empty() {
        if !route.public {
            errs.push(&at_resource, "required: the MCP endpoint's public URL");
        }
        None
    } else if resource.contains('#') {
        errs.push(
            &at_resource,
            "must not have a fragment (RFC 9728 §2): use the MCP endpoint's URL as clients reach it",
        );
        None
    } else {
        match resource.parse::<http::Uri>() {
            Ok(uri) if uri.authority().is_some() && uri.query().is_none() => Some(uri),
            _ => {
                errs.push(
                    &at_resource,
                    "must be the MCP endpoint's absolute URL, without a query, e.g. \"https://mcp.contoso.com/mcp\"",
                );
                None
            }
        }
    };
    let uri = uri.and_then(|uri| match uri.scheme_str() {
        Some("https") => Some(uri),
        Some("http") if is_loopback(uri.host().unwrap_or_default()) => Some(uri),
        _ => {
            errs.push(
                &at_resource,
                "must be https (MCP requires it, and Entra accepts an https identifier URI only on a verified domain of the tenant); http is for loopback only",
            );
            None
        }
    });
    if let (Some(uri), Some(route_path)) = (&uri, route.path.as_ref().or(route.prefix.as_ref())) {
        let path = uri.path();
        if path != route_path
            && (path.strip_suffix('/') == Some(route_path)
                || route_path.strip_suffix('/') == Some(path))
        {
            errs.push(
                &at_resource,
                format!(
                    "differs from the route's path {route_path:?} by a trailing slash: clients send the resource as written here and Entra compares it exactly with the application's identifier URIs (AADSTS9010010 invalid_target); write the URL clients use, and add the same to identifierUris"
                ),
            );
        }
    }
    let scopes_supported = f.scopes_supported.unwrap_or_else(|| route.scopes.clone());
    check_names(
        errs,
        || format!("{at}.mcp.scopes_supported"),
        &scopes_supported,
    );
    let authorization_servers = f.authorization_servers.unwrap_or_else(|| {
        accepted(route.issuers.as_deref(), issuers)
            .flat_map(|i| &i.anchors)
            // Why: clients discover an authorization server by its metadata;
            // Entra serves it for v2 issuers only.
            .filter(|a| a.version != Some("1.0"))
            .map(|a| a.iss.clone())
            .collect()
    });
    for (i, server) in authorization_servers.iter().enumerate() {
        if !server.starts_with("https://") && !server.starts_with("http://") {
            errs.push(
                format!("{at}.mcp.authorization_servers[{i}]"),
                "must be an issuer URL",
            );
        }
    }
    let mut allowed_origins: Vec<String> = f
        .allowed_origins
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match origin_of(o) {
            Some(origin) if origin.len() == o.trim_end_matches('/').len() => Some(origin),
            _ => {
                errs.push(
                    format!("{at}.mcp.allowed_origins[{i}]"),
                    format!("{o:?} is not an origin (scheme://host[:port], nothing after it)"),
                );
                None
            }
        })
        .collect();
    let idle = errs.duration(
        &format!("{at}.mcp.session_idle_timeout"),
        f.session_idle_timeout.as_deref(),
        Duration::from_secs(3600),
    );
    let report_only = match f.rules.as_deref() {
        None | Some("enforce") => false,
        Some("report") => true,
        Some(other) => {
            errs.push(
                format!("{at}.mcp.rules"),
                format!("{other:?} is not \"enforce\" or \"report\""),
            );
            false
        }
    };
    if errs.0.len() != before {
        return None;
    }
    // Why: the resource's own origin is the one a browser page on it has.
    allowed_origins.extend(origin_of(&f.resource));
    let (metadata_path, metadata_url) = match &uri {
        // A public route has no metadata: no token, no resource server.
        Some(uri) if !route.public => {
            let path = format!("{METADATA_PREFIX}{}", uri.path().trim_end_matches('/'));
            let authority = uri.authority().map_or("", |a| a.as_str());
            let scheme = uri.scheme_str().unwrap_or("https");
            let url = format!("{scheme}://{authority}{path}");
            (path, url)
        }
        _ => (String::new(), String::new()),
    };
    Some(McpRoute {
        resource: f.resource,
        metadata_url,
        metadata_path,
        scopes_supported,
        authorization_servers,
        allowed_origins,
        hide_denied: f.hide_denied.unwrap_or(true),
        report_only,
        session_idle_timeout: f.bind_sessions.unwrap_or(true).then_some(idle),
    })
}

/// `[[mcp_rules]]`: each names an MCP route and something to allow.
pub(super) fn mcp_rules(
    errs: &mut Errors,
    files: Vec<McpRuleFile>,
    routes: &[RouteConfig],
) -> Vec<McpRule> {
    files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let at = |field: &str| format!("mcp_rules[{i}].{field}");
            match routes.iter().find(|r| r.name == f.route) {
                None => errs.push(at("route"), format!("no route named {:?}", f.route)),
                Some(r) if r.mcp.is_none() => errs.push(
                    at("route"),
                    format!(
                        "route {:?} is not an MCP route (give it a [routes.mcp] table)",
                        f.route
                    ),
                ),
                Some(r) if r.public => errs.push(
                    at("route"),
                    format!(
                        "route {:?} is public: it knows no caller to decide for",
                        f.route
                    ),
                ),
                Some(_) => {}
            }
            if f.tools.is_empty() && f.prompts.is_empty() && f.resources.is_empty() {
                errs.push(
                    format!("mcp_rules[{i}]"),
                    "allows nothing: name tools, prompts or resources (\"*\" for all)",
                );
            }
            for (field, patterns) in [
                ("tools", &f.tools),
                ("prompts", &f.prompts),
                ("resources", &f.resources),
            ] {
                for (j, p) in patterns.iter().enumerate() {
                    if p.is_empty() {
                        errs.push(format!("{}[{j}]", at(field)), "must not be empty");
                    }
                }
            }
            check_names(errs, || at("scopes"), &f.scopes);
            check_names(errs, || at("roles"), &f.roles);
            if let Some(kinds) = &f.kinds {
                check_kinds(errs, &at("kinds"), kinds);
            }
            for (j, a) in f.arguments.iter().enumerate() {
                let at = |field: &str| format!("mcp_rules[{i}].arguments[{j}].{field}");
                if json_pointer(&a.pointer).is_none() {
                    errs.push(
                        at("pointer"),
                        format!(
                            "{:?} is not a JSON pointer (\"/project\", \"/filter/team\")",
                            a.pointer
                        ),
                    );
                }
                if a.r#in.is_empty() {
                    errs.push(at("in"), "must list the values allowed");
                }
            }
            if !f.arguments.is_empty() && f.tools.is_empty() {
                errs.push(
                    at("arguments"),
                    "only tool calls have arguments: name the tools",
                );
            }
            if f.calls_per_minute == Some(0) {
                errs.push(
                    at("calls_per_minute"),
                    "must be at least 1 (leave the tools out of the rule to allow none)",
                );
            }
            McpRule {
                route: f.route,
                tools: f.tools,
                prompts: f.prompts,
                resources: f.resources,
                scopes: f.scopes,
                roles: f.roles,
                kinds: f.kinds,
                agents: f
                    .agents
                    .map(|ids| ids.into_iter().map(|id| id.to_ascii_lowercase()).collect()),
                calls_per_minute: f.calls_per_minute,
                arguments: f
                    .arguments
                    .into_iter()
                    .filter_map(|a| {
                        Some(McpArgument {
                            path: json_pointer(&a.pointer)?,
                            allowed: a.r#in,
                        })
                    })
                    .collect(),
            }
        })
        .collect()
}

/// `scheme://authority` of an absolute http(s) URL, lower-cased.
fn origin_of(url: &str) -> Option<String> {
    let uri = url.parse::<http::Uri>().ok()?;
    let scheme = uri
        .scheme_str()
        .filter(|s| matches!(*s, "http" | "https"))?;
    let authority = uri.authority()?;
    Some(format!("{scheme}://{authority}").to_ascii_lowercase())
}

/// What MCP clients and Entra would later fail on with an opaque error,
/// said now with the fix: scopes not in the form clients request them, an
/// Entra application whose v2 tokens would not match, two MCP servers that
/// would accept each other's tokens.
pub(super) fn doctor(
    warnings: &mut Vec<ConfigError>,
    routes: &[RouteConfig],
    issuers: &[IssuerConfig],
) {
    let mut warn = |path: String, message: String| warnings.push(ConfigError { path, message });
    let mcp_routes = || {
        routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.mcp.as_ref().map(|m| (i, r, m)))
    };
    let mut warned_issuers = HashSet::new();
    for (i, route, mcp) in mcp_routes() {
        for (j, scope) in mcp.scopes_supported.iter().enumerate() {
            if !scope.contains("://") {
                warn(
                    format!("routes[{i}].mcp.scopes_supported[{j}]"),
                    format!(
                        "{scope:?} is not in full form: clients request Entra scopes as the application ID URI, a slash and the name (e.g. \"api://<client id>/{scope}\"); a short name gets AADSTS70011 or a token for another resource"
                    ),
                );
            }
        }
        for (j, issuer) in issuers.iter().enumerate() {
            let reaches = route
                .issuers
                .as_ref()
                .is_none_or(|n| n.contains(&issuer.name));
            if reaches
                && issuer.kind == IssuerKind::Entra
                && !issuer.audiences.iter().any(|a| is_guid(a))
                && warned_issuers.insert(j)
            {
                warn(
                    format!("issuers[{j}].audiences"),
                    format!(
                        "MCP route {:?} takes tokens from this issuer, whose audiences have no client id: Entra v2 tokens carry the application's client id (a GUID) as aud, even when the client asked for the identifier URI; add it",
                        route.name
                    ),
                );
            }
        }
    }
    for (i, a, _) in mcp_routes() {
        for (_, b, _) in mcp_routes().filter(|(j, _, _)| *j > i) {
            let shared = accepted(a.issuers.as_deref(), issuers)
                .any(|x| accepted(b.issuers.as_deref(), issuers).any(|y| x.name == y.name));
            if shared {
                warn(
                    format!("routes[{i}]"),
                    format!(
                        "MCP routes {:?} and {:?} accept tokens from the same issuer and audiences: a token issued for one MCP server is accepted by the other; give each server its own application (audience) and issuer entry, and name it in the route's issuers",
                        a.name, b.name
                    ),
                );
            }
        }
    }
}

/// The issuers a route takes tokens from.
fn accepted<'a>(
    names: Option<&'a [String]>,
    issuers: &'a [IssuerConfig],
) -> impl Iterator<Item = &'a IssuerConfig> + 'a {
    issuers
        .iter()
        .filter(move |i| names.is_none_or(|n| n.contains(&i.name)))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use crate::config::validate::testing::{UPSTREAM, errors, parse};

    const ISSUER: &str = "[[issuers]]\nname = \"contoso\"\nkind = \"entra\"\ntenants = [\"aaaabbbb-0000-cccc-1111-dddd2222eeee\"]\naudiences = [\"11112222-bbbb-3333-cccc-4444dddd5555\"]\n";

    fn mcp_route(name: &str, path: &str, table: &str) -> String {
        format!(
            "[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nscopes = [\"api://11112222-bbbb-3333-cccc-4444dddd5555/Tools.Read\"]\n[routes.mcp]\n{table}\n"
        )
    }

    #[test]
    fn an_mcp_route_serves_its_metadata_beside_its_own_path() {
        let config = parse(&format!(
            "{UPSTREAM}{ISSUER}{}",
            mcp_route("mcp", "/mcp", "resource = \"https://mcp.contoso.com/mcp\"")
        ))
        .unwrap();
        let mcp = config.routes[0].mcp.as_ref().unwrap();
        assert_eq!(
            mcp.metadata_path,
            "/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            mcp.metadata_url,
            "https://mcp.contoso.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            mcp.scopes_supported,
            ["api://11112222-bbbb-3333-cccc-4444dddd5555/Tools.Read"]
        );
        // The v2 issuer only: Entra serves authorization-server metadata
        // for it, not for the v1 one.
        assert_eq!(
            mcp.authorization_servers,
            ["https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0"]
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn mcp_resources_that_clients_or_entra_would_refuse_are_errors() {
        let cases = [
            ("resource = \"\"", "required"),
            (
                "resource = \"https://mcp.contoso.com/mcp#x\"",
                "must not have a fragment",
            ),
            ("resource = \"/mcp\"", "absolute URL"),
            ("resource = \"http://mcp.contoso.com/mcp\"", "must be https"),
            (
                "resource = \"https://mcp.contoso.com/mcp/\"",
                "trailing slash",
            ),
        ];
        for (table, want) in cases {
            let errs = errors(&format!(
                "{UPSTREAM}{ISSUER}{}",
                mcp_route("mcp", "/mcp", table)
            ));
            assert!(
                errs.iter()
                    .any(|e| e.starts_with("routes[0].mcp.resource: ") && e.contains(want)),
                "{table}: {errs:?}"
            );
        }
        // Loopback may be plain http (development, tests).
        parse(&format!(
            "{UPSTREAM}{ISSUER}{}",
            mcp_route("mcp", "/mcp", "resource = \"http://127.0.0.1:8080/mcp\"")
        ))
        .unwrap();
    }

    /// A public MCP route checks no token: no resource, no metadata, no
    /// rules; its messages are still read and its Origin checked.
    #[test]
    fn a_public_mcp_route_has_no_resource_server_and_no_rules() {
        let public = "[[routes]]\nname = \"open\"\npath = \"/mcp\"\npublic = true\n[routes.mcp]\nallowed_origins = [\"http://127.0.0.1:8080\"]\n";
        let config = parse(&format!("{UPSTREAM}{public}")).unwrap();
        let mcp = config.routes[0].mcp.as_ref().unwrap();
        assert_eq!(
            (mcp.metadata_path.as_str(), mcp.resource.as_str()),
            ("", "")
        );
        assert_eq!(mcp.allowed_origins, ["http://127.0.0.1:8080"]);
        let errs = errors(&format!(
            "{UPSTREAM}{public}[[mcp_rules]]\nroute = \"open\"\ntools = [\"*\"]\n"
        ));
        assert_eq!(
            errs,
            ["mcp_rules[0].route: route \"open\" is public: it knows no caller to decide for"]
        );
    }

    #[test]
    fn an_mcp_route_never_forwards_the_clients_token() {
        let errs = errors(&format!(
            "{UPSTREAM}{ISSUER}{}",
            mcp_route("mcp", "/mcp", "resource = \"https://mcp.contoso.com/mcp\"")
                .replace("[routes.mcp]", "forward_authorization = true\n[routes.mcp]")
        ));
        assert!(
            errs.iter().any(|e| e.starts_with(
                "routes[0].forward_authorization: an MCP route never forwards the client's token"
            )),
            "{errs:?}"
        );
    }

    #[test]
    fn the_doctor_warns_of_short_scopes_missing_client_ids_and_shared_audiences() {
        let issuer = ISSUER.replace(
            "\"11112222-bbbb-3333-cccc-4444dddd5555\"",
            "\"api://contoso-mcp\"",
        );
        let routes = [
            mcp_route(
                "tickets",
                "/tickets/mcp",
                "resource = \"https://mcp.contoso.com/tickets/mcp\"\nscopes_supported = [\"Tools.Read\"]",
            ),
            mcp_route(
                "files",
                "/files/mcp",
                "resource = \"https://mcp.contoso.com/files/mcp\"",
            ),
        ]
        .concat();
        let config = parse(&format!("{UPSTREAM}{issuer}{routes}")).unwrap();
        let warnings: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
        for want in [
            "routes[0].mcp.scopes_supported[0]: \"Tools.Read\" is not in full form",
            "issuers[0].audiences: MCP route \"tickets\" takes tokens from this issuer, whose audiences have no client id",
            "routes[0]: MCP routes \"tickets\" and \"files\" accept tokens from the same issuer",
        ] {
            assert!(
                warnings.iter().any(|w| w.starts_with(want)),
                "missing {want}: {warnings:?}"
            );
        }
        assert_eq!(warnings.len(), 3, "{warnings:?}");
    }
}
