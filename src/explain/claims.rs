//! The decisive claims of the token being explained, each beside what the
//! config accepts: the first thing to look at when a token does not fit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::config::{Config, IssuerAnchor, IssuerConfig, RouteConfig};
use crate::token::{TokenFacts, VerifiedClaims};

/// One claim: its value, what is accepted, and whether it fits (`None`
/// where nothing is checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimCheck {
    pub claim: &'static str,
    pub value: String,
    pub accepted: String,
    pub fits: Option<bool>,
}

impl ClaimCheck {
    pub fn to_json(&self) -> Value {
        json!({"claim": self.claim, "value": self.value, "accepted": self.accepted, "fits": self.fits})
    }
}

/// Checks `facts` against `config` at `now`, for `route` when one matched.
/// `verified` are the token's claims when it passed: its scopes and roles
/// then come from where the issuer reads them. Claims given without a
/// token (`--claims`) have no header, and their lifetime is not checked.
pub fn check(
    config: &Config,
    facts: &TokenFacts,
    verified: Option<&VerifiedClaims>,
    route: Option<&RouteConfig>,
    now: Option<SystemTime>,
) -> Vec<ClaimCheck> {
    let found = config.issuers.iter().find_map(|i| {
        i.anchors
            .iter()
            .find(|a| facts.iss.as_deref() == Some(a.iss.as_str()))
            .map(|a| (i, a))
    });
    let mut out = vec![issuer(config, facts, found)];
    out.push(audience(config, facts, found.map(|(i, _)| i)));
    out.extend(entra(facts, found.map(|(_, a)| a)));
    match now {
        Some(now) => {
            out.extend(lifetime(facts, found.map(|(i, _)| i), now));
            out.push(signing(facts, found.map(|(i, _)| i)));
        }
        None => out.push(ClaimCheck {
            claim: "exp",
            value: facts.exp.map_or_else(|| "-".into(), rfc3339),
            accepted: "(not checked with --claims)".into(),
            fits: None,
        }),
    }
    out.push(ClaimCheck {
        claim: "client",
        value: show(facts.client.as_deref()),
        accepted: "(azp, appid or client_id: who obtained the token)".into(),
        fits: None,
    });
    let (scopes, roles) = match verified {
        Some(c) => (Some(c.scopes().join(" ")), Some(c.roles().join(" "))),
        None => (facts.scopes.clone(), facts.roles.clone()),
    };
    out.extend(permissions(scopes, roles, route));
    out
}

fn show(value: Option<&str>) -> String {
    value.filter(|v| !v.is_empty()).unwrap_or("-").to_owned()
}

fn issuer(
    config: &Config,
    facts: &TokenFacts,
    found: Option<(&IssuerConfig, &IssuerAnchor)>,
) -> ClaimCheck {
    let accepted = match found {
        Some((i, _)) => format!("issuer {:?}", i.name),
        None => config
            .issuers
            .iter()
            .flat_map(|i| i.anchors.iter().map(|a| a.iss.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
    };
    ClaimCheck {
        claim: "iss",
        value: show(facts.iss.as_deref()),
        accepted,
        fits: Some(found.is_some()),
    }
}

fn audience(config: &Config, facts: &TokenFacts, issuer: Option<&IssuerConfig>) -> ClaimCheck {
    let accepted: Vec<&str> = match issuer {
        Some(i) => i.audiences.iter().map(String::as_str).collect(),
        None => config
            .issuers
            .iter()
            .flat_map(|i| i.audiences.iter().map(String::as_str))
            .collect(),
    };
    ClaimCheck {
        claim: "aud",
        value: show(Some(&facts.aud.join(" "))),
        accepted: accepted.join(", "),
        fits: Some(facts.aud.iter().any(|a| accepted.contains(&a.as_str()))),
    }
}

/// `tid` and `ver`: checked for Entra issuers only.
fn entra(facts: &TokenFacts, anchor: Option<&IssuerAnchor>) -> Vec<ClaimCheck> {
    let tenant = anchor.and_then(|a| a.tenant.as_deref());
    let version = anchor.and_then(|a| a.version);
    let unchecked = || "(not checked for this issuer)".to_owned();
    vec![
        ClaimCheck {
            claim: "tid",
            value: show(facts.tid.as_deref()),
            accepted: tenant.map_or_else(unchecked, str::to_owned),
            fits: tenant
                .map(|t| facts.tid.as_deref().map(str::to_ascii_lowercase).as_deref() == Some(t)),
        },
        ClaimCheck {
            claim: "ver",
            value: show(facts.ver.as_deref()),
            accepted: version.map_or_else(unchecked, str::to_owned),
            fits: version.map(|v| facts.ver.as_deref().is_none_or(|ver| ver == v)),
        },
    ]
}

fn lifetime(facts: &TokenFacts, issuer: Option<&IssuerConfig>, now: SystemTime) -> Vec<ClaimCheck> {
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let skew = issuer.map_or(60, |i| i.clock_skew.as_secs() as i64);
    let when = |t: i64| {
        let apart = humantime::format_duration(Duration::from_secs(rounded(t.abs_diff(now))));
        let relative = match t.cmp(&now) {
            std::cmp::Ordering::Equal => "now".to_owned(),
            std::cmp::Ordering::Greater => format!("in {apart}"),
            std::cmp::Ordering::Less => format!("{apart} ago"),
        };
        format!("{} ({relative})", rfc3339(t))
    };
    let mut out = vec![ClaimCheck {
        claim: "exp",
        value: facts.exp.map_or_else(|| "-".into(), when),
        accepted: format!("later than now, give or take {skew}s"),
        fits: Some(facts.exp.is_some_and(|exp| exp > now - skew)),
    }];
    if let Some(nbf) = facts.nbf {
        out.push(ClaimCheck {
            claim: "nbf",
            value: when(nbf),
            accepted: format!("earlier than now, give or take {skew}s"),
            fits: Some(nbf <= now + skew),
        });
    }
    out
}

fn rfc3339(t: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Seconds to the precision a reader wants: whole days beyond two days,
/// whole minutes beyond an hour.
fn rounded(secs: u64) -> u64 {
    match secs {
        172_800.. => secs / 86_400 * 86_400,
        3_600.. => secs / 60 * 60,
        _ => secs,
    }
}

fn signing(facts: &TokenFacts, issuer: Option<&IssuerConfig>) -> ClaimCheck {
    let value = format!(
        "{} (kid {}, typ {})",
        show(facts.alg.as_deref()),
        show(facts.kid.as_deref()),
        show(facts.typ.as_deref())
    );
    let Some(i) = issuer else {
        return ClaimCheck {
            claim: "alg",
            value,
            accepted: "(the issuer's)".into(),
            fits: None,
        };
    };
    let algorithms: Vec<String> = i.algorithms.iter().map(|a| format!("{a:?}")).collect();
    let alg_ok = facts.alg.as_ref().is_some_and(|a| algorithms.contains(a));
    let typ_ok = facts
        .typ
        .as_deref()
        .is_some_and(|t| i.accepted_typ.iter().any(|a| a.eq_ignore_ascii_case(t)));
    ClaimCheck {
        claim: "alg",
        value,
        accepted: format!(
            "{}, typ {}",
            algorithms.join(", "),
            i.accepted_typ.join(", ")
        ),
        fits: Some(alg_ok && typ_ok),
    }
}

/// The token's scopes and roles beside the route's: any one of them.
fn permissions(
    scopes: Option<String>,
    roles: Option<String>,
    route: Option<&RouteConfig>,
) -> Vec<ClaimCheck> {
    let asks = |r: &&RouteConfig| !r.public && (!r.scopes.is_empty() || !r.roles.is_empty());
    let required = route.filter(asks);
    let has = |held: &Option<String>, wanted: &String| {
        held.as_deref()
            .is_some_and(|h| h.split(' ').any(|n| n == wanted))
    };
    // Any one of them (or all, for an all-of route): a row that holds its
    // part is ok; with an any-of route, the other row is then not needed.
    let fits = |held: &Option<String>, wanted: &[String]| -> Option<bool> {
        let r = required?;
        let all = wanted.iter().all(|w| has(held, w));
        let any = wanted.iter().any(|w| has(held, w));
        if r.require_all {
            return (!wanted.is_empty()).then_some(all);
        }
        let met =
            r.scopes.iter().any(|w| has(&scopes, w)) || r.roles.iter().any(|w| has(&roles, w));
        match (met, any) {
            (_, true) => Some(true),
            (true, false) => None,
            (false, false) => (!wanted.is_empty()).then_some(false),
        }
    };
    let accepted = |wanted: &[String], kind: &str| match required {
        Some(r) if wanted.is_empty() => format!("(route {} asks for no {kind})", r.name),
        Some(r) => {
            let all = if r.require_all { "all" } else { "any" };
            format!("{all} of {} (route {})", wanted.join(", "), r.name)
        }
        None => "(no route asks)".into(),
    };
    vec![
        ClaimCheck {
            claim: "scopes",
            value: show(scopes.as_deref()),
            accepted: accepted(required.map_or(&[], |r| &r.scopes), "scope"),
            fits: fits(&scopes, required.map_or(&[], |r| &r.scopes)),
        },
        ClaimCheck {
            claim: "roles",
            value: show(roles.as_deref()),
            accepted: accepted(required.map_or(&[], |r| &r.roles), "role"),
            fits: fits(&roles, required.map_or(&[], |r| &r.roles)),
        },
    ]
}
