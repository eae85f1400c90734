//! `[identity]`, `[[locations]]`, `[[agents]]` and `[[policies]]`: who may do what beyond the routes.

use super::*;

pub(super) fn identity(errs: &mut Errors, f: IdentityFile) -> IdentitySettings {
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

pub(super) fn locations(errs: &mut Errors, files: Vec<LocationFile>) -> Vec<Location> {
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

pub(super) fn agents(
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
            if let Some(tools) = &f.tools {
                check_names(errs, || at("tools"), tools);
            }
            if let Some(models) = &f.models {
                super::models::check_patterns(errs, || at("models"), models, false);
            }
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
                tools: f.tools,
                models: f.models,
            })
        })
        .collect()
}

pub(super) fn policies(
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
            errs.check_name(format!("{at}.name"), &f.name);
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
            super::models::check_patterns(errs, || format!("{at}.models"), &f.models, false);
            if !f.models.is_empty() && !f.params.is_empty() {
                // Why: a policy on models is decided once the body is read,
                // where route parameters are not at hand; on Azure paths the
                // deployment is the model.
                errs.push(format!("{at}.models"), "set models or params, not both (the model of an Azure OpenAI path is its deployment)");
            }
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
                    models: f.models,
                },
                grant,
            }
        })
        .collect()
}

/// `"08:00-18:00"` → minutes after midnight.
pub(super) fn parse_hours(text: &str) -> Option<(u16, u16)> {
    let (a, b) = text.split_once('-')?;
    let minutes = |t: &str| {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 1440).then_some(h * 60 + m)
    };
    Some((minutes(a)?, minutes(b)?))
}

/// `"UTC"`, `"+02:00"`, `"-05:30"` → minutes east of UTC.
pub(super) fn parse_utc_offset(text: &str) -> Option<i32> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate::testing::{UPSTREAM, errors, parse};

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
}
