//! Conditional access: policies in the shape security teams know from Entra.
//!
//! Every policy that applies must be satisfied; any `block` wins;
//! `report_only` policies are evaluated and recorded, never enforced. The
//! set is compiled once per snapshot and indexed by route, so a request
//! only looks at the policies that can apply to its route.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::Method;
use ipnet::IpNet;
use wildmatch::WildMatch;

use super::routes::{kind_bit, kind_mask};
use super::{Denial, RequestFacts};
use crate::config::{Location, PolicyConfig, PolicyGrant, PolicyState};
use crate::token::{Groups, IdentityKind, VerifiedClaims};

/// Entra's vocabulary for a policy's result on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyResult {
    Success,
    Failure,
    NotApplied,
    ReportOnlySuccess,
    ReportOnlyFailure,
    ReportOnlyNotApplied,
}

impl PolicyResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::NotApplied => "notApplied",
            Self::ReportOnlySuccess => "reportOnlySuccess",
            Self::ReportOnlyFailure => "reportOnlyFailure",
            Self::ReportOnlyNotApplied => "reportOnlyNotApplied",
        }
    }
}

/// One policy's result for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyOutcome {
    pub policy: Arc<str>,
    pub result: PolicyResult,
}

/// Include/exclude sets; an empty include set means everyone.
#[derive(Debug, Default)]
struct Set(HashSet<String>);

impl Set {
    fn new(v: &[String]) -> Self {
        Self(v.iter().cloned().collect())
    }
    fn includes(&self, value: Option<&str>) -> bool {
        self.0.is_empty() || value.is_some_and(|v| self.0.contains(v))
    }
    fn excludes(&self, value: Option<&str>) -> bool {
        value.is_some_and(|v| self.0.contains(v))
    }
    fn includes_any(&self, values: &[String]) -> bool {
        self.0.is_empty() || values.iter().any(|v| self.0.contains(v))
    }
    fn excludes_any(&self, values: &[String]) -> bool {
        values.iter().any(|v| self.0.contains(v))
    }
}

struct Policy {
    name: Arc<str>,
    is_report_only: bool,
    include_kinds: u8,
    exclude_kinds: u8,
    agents: (Set, Set),
    client_apps: (Set, Set),
    tenants: (Set, Set),
    groups: (Set, Set),
    roles: (Set, Set),
    wids: (Set, Set),
    exclude_routes: Set,
    locations: Vec<IpNet>,
    exclude_locations: Vec<IpNet>,
    days: Vec<u8>,
    hours: Option<(u16, u16)>,
    timezone: jiff::tz::TimeZone,
    methods: Vec<Method>,
    params: Vec<(String, Vec<String>)>,
    token_older_than: Option<Duration>,
    client_capabilities: Vec<String>,
    /// Model patterns (lower case): the policy is decided once a model
    /// route's request names its model, not at admission.
    models: Vec<WildMatch>,
    grant: PolicyGrant,
    /// The Entra claims challenge for an unmet authentication context.
    claims_challenge: Option<Arc<str>>,
}

enum Applies {
    Yes,
    No,
    /// Group membership decides, but the token has a groups overage.
    GroupsUnknown,
}

/// The compiled policy set. Each policy sits in exactly one index family:
/// by route when it names routes, else by agent when it names agents, else
/// by identity kind. A request looks only at its route's, its agent's and
/// its kind's lists, so policies that cannot apply cost nothing.
pub struct PolicySet {
    policies: Vec<Policy>,
    by_route: HashMap<String, Vec<usize>>,
    by_agent: HashMap<String, Vec<usize>>,
    by_kind: [Vec<usize>; 4],
    deny_on_groups_overage: bool,
}

impl PolicySet {
    pub fn compile(
        policies: &[PolicyConfig],
        locations: &[Location],
        deny_on_groups_overage: bool,
    ) -> Self {
        let ranges = |names: &[String]| -> Vec<IpNet> {
            locations
                .iter()
                .filter(|l| names.contains(&l.name))
                .flat_map(|l| l.ranges.iter().copied())
                .collect()
        };
        let mut compiled = Vec::new();
        let mut by_route: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_agent: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_kind: [Vec<usize>; 4] = Default::default();
        for p in policies.iter().filter(|p| p.state != PolicyState::Off) {
            let a = &p.assignments;
            let c = &p.conditions;
            let index = compiled.len();
            let include_kinds = if a.include_kinds.is_empty() {
                0b1111
            } else {
                kind_mask(&a.include_kinds)
            };
            if !a.include_routes.is_empty() {
                for r in &a.include_routes {
                    by_route.entry(r.clone()).or_default().push(index);
                }
            } else if !a.include_agents.is_empty() {
                for agent in &a.include_agents {
                    by_agent.entry(agent.clone()).or_default().push(index);
                }
            } else {
                for (slot, kind) in IdentityKind::ALL.iter().enumerate() {
                    if include_kinds & kind_bit(*kind) != 0 {
                        by_kind[slot].push(index);
                    }
                }
            }
            let claims_challenge = match &p.grant {
                PolicyGrant::Require {
                    auth_context: Some(ctx),
                    ..
                } => {
                    let json = format!(
                        r#"{{"access_token":{{"acrs":{{"essential":true,"value":"{ctx}"}}}}}}"#
                    );
                    Some(Arc::from(STANDARD.encode(json)))
                }
                _ => None,
            };
            compiled.push(Policy {
                name: Arc::from(p.name.as_str()),
                is_report_only: p.state == PolicyState::ReportOnly,
                include_kinds,
                exclude_kinds: kind_mask(&a.exclude_kinds),
                agents: (Set::new(&a.include_agents), Set::new(&a.exclude_agents)),
                client_apps: (
                    Set::new(&a.include_client_apps),
                    Set::new(&a.exclude_client_apps),
                ),
                tenants: (Set::new(&a.include_tenants), Set::new(&a.exclude_tenants)),
                groups: (Set::new(&a.include_groups), Set::new(&a.exclude_groups)),
                roles: (Set::new(&a.include_roles), Set::new(&a.exclude_roles)),
                wids: (Set::new(&a.include_wids), Set::new(&a.exclude_wids)),
                exclude_routes: Set::new(&a.exclude_routes),
                locations: ranges(&c.locations),
                exclude_locations: ranges(&c.exclude_locations),
                days: c.days.clone(),
                hours: c.hours,
                timezone: c.timezone.clone(),
                methods: c.methods.clone(),
                params: c.params.clone(),
                token_older_than: c.token_older_than,
                client_capabilities: c.client_capabilities.clone(),
                models: c
                    .models
                    .iter()
                    .map(|m| WildMatch::new(&m.to_ascii_lowercase()))
                    .collect(),
                grant: p.grant.clone(),
                claims_challenge,
            });
        }
        Self {
            policies: compiled,
            by_route,
            by_agent,
            by_kind,
            deny_on_groups_overage,
        }
    }

    /// The policies with an authentication-context challenge: (name, base64
    /// claims), for prebuilding challenge headers.
    pub fn claims_challenges(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.policies
            .iter()
            .filter_map(|p| p.claims_challenge.as_ref().map(|c| (&p.name, c)))
    }

    /// Evaluates every policy that can apply to `route`, but those on
    /// models. Returns the first enforced denial (any block wins over unmet
    /// requirements) and every policy's result.
    pub fn evaluate(
        &self,
        route: &str,
        claims: &VerifiedClaims,
        facts: &RequestFacts<'_>,
    ) -> (Result<(), Denial>, Vec<PolicyOutcome>) {
        self.run(route, claims, facts, None)
    }

    /// Evaluates the policies on models for a request to `model` (lower
    /// case), as [`Self::evaluate`] does the rest.
    pub fn evaluate_model(
        &self,
        route: &str,
        claims: &VerifiedClaims,
        facts: &RequestFacts<'_>,
        model: &str,
    ) -> (Result<(), Denial>, Vec<PolicyOutcome>) {
        self.run(route, claims, facts, Some(model))
    }

    fn run(
        &self,
        route: &str,
        claims: &VerifiedClaims,
        facts: &RequestFacts<'_>,
        model: Option<&str>,
    ) -> (Result<(), Denial>, Vec<PolicyOutcome>) {
        let by_route = self.by_route.get(route).map_or(&[][..], Vec::as_slice);
        let by_agent = claims
            .agent_id()
            .and_then(|a| self.by_agent.get(a))
            .map_or(&[][..], Vec::as_slice);
        let slot = IdentityKind::ALL
            .iter()
            .position(|k| *k == claims.kind())
            .unwrap_or(0);
        let by_kind = self.by_kind[slot].as_slice();
        // Config order, so the first blocking policy named is the first written.
        let mut candidates: Vec<usize> =
            Vec::with_capacity(by_route.len() + by_agent.len() + by_kind.len());
        candidates.extend_from_slice(by_route);
        candidates.extend_from_slice(by_agent);
        candidates.extend_from_slice(by_kind);
        candidates.sort_unstable();
        // Each policy is decided once: those on models when the model is read.
        candidates.retain(|&i| self.policies[i].models.is_empty() == model.is_none());
        let mut outcomes = Vec::with_capacity(candidates.len());
        let mut block = None;
        let mut unmet = None;
        for &i in &candidates {
            let p = &self.policies[i];
            let on_model = model.is_none_or(|m| p.models.iter().any(|w| w.matches(m)));
            let applies = match on_model {
                true => self.applies(p, route, claims, facts),
                false => Applies::No,
            };
            let (result, denial) = match applies {
                Applies::No => (PolicyResult::NotApplied, None),
                Applies::GroupsUnknown => (PolicyResult::Failure, Some(Denial::GroupsOverage)),
                Applies::Yes => match &p.grant {
                    PolicyGrant::Block => (
                        PolicyResult::Failure,
                        Some(Denial::PolicyBlock(p.name.clone())),
                    ),
                    PolicyGrant::Require { .. } => match p.unmet(claims) {
                        None => (PolicyResult::Success, None),
                        Some(denial) => (PolicyResult::Failure, Some(denial)),
                    },
                },
            };
            let result = if p.is_report_only {
                report_only(result)
            } else {
                result
            };
            outcomes.push(PolicyOutcome {
                policy: p.name.clone(),
                result,
            });
            if p.is_report_only {
                continue;
            }
            match denial {
                Some(d @ (Denial::PolicyBlock(_) | Denial::GroupsOverage)) if block.is_none() => {
                    block = Some(d)
                }
                Some(d) if unmet.is_none() => unmet = Some(d),
                _ => {}
            }
        }
        let verdict = match block.or(unmet) {
            Some(d) => Err(d),
            None => Ok(()),
        };
        (verdict, outcomes)
    }

    fn applies(
        &self,
        p: &Policy,
        route: &str,
        claims: &VerifiedClaims,
        facts: &RequestFacts<'_>,
    ) -> Applies {
        let kind = kind_bit(claims.kind());
        let assigned = p.include_kinds & kind != 0
            && p.exclude_kinds & kind == 0
            && p.agents.0.includes(claims.agent_id())
            && !p.agents.1.excludes(claims.agent_id())
            && p.client_apps.0.includes(claims.client_app())
            && !p.client_apps.1.excludes(claims.client_app())
            && p.tenants.0.includes(claims.tid())
            && !p.tenants.1.excludes(claims.tid())
            && p.roles.0.includes_any(claims.roles())
            && !p.roles.1.excludes_any(claims.roles())
            && p.wids.0.includes_any(claims.wids())
            && !p.wids.1.excludes_any(claims.wids())
            && !p.exclude_routes.excludes(Some(route));
        if !assigned || !p.conditions_hold(claims, facts) {
            return Applies::No;
        }
        let uses_groups = !p.groups.0.0.is_empty() || !p.groups.1.0.is_empty();
        match claims.groups() {
            Groups::Overage if uses_groups && self.deny_on_groups_overage => Applies::GroupsUnknown,
            // Ignored overage: unknown membership matches no group.
            Groups::Overage if !p.groups.0.0.is_empty() => Applies::No,
            Groups::Overage => Applies::Yes,
            Groups::Listed(groups) => {
                if p.groups.0.includes_any(groups) && !p.groups.1.excludes_any(groups) {
                    Applies::Yes
                } else {
                    Applies::No
                }
            }
        }
    }
}

impl Policy {
    fn conditions_hold(&self, claims: &VerifiedClaims, facts: &RequestFacts<'_>) -> bool {
        let in_any = |ranges: &[IpNet], ip: IpAddr| ranges.iter().any(|r| r.contains(&ip));
        (self.locations.is_empty() || in_any(&self.locations, facts.client_ip))
            && !in_any(&self.exclude_locations, facts.client_ip)
            && (self.methods.is_empty() || self.methods.contains(facts.method))
            && self.params.iter().all(|(n, allowed)| {
                facts
                    .param(n)
                    .is_some_and(|v| allowed.iter().any(|a| a == v))
            })
            && self.in_time_window(facts)
            && self
                .token_older_than
                .is_none_or(|limit| token_age(claims, facts).is_none_or(|age| age > limit))
            && self
                .client_capabilities
                .iter()
                .all(|c| c.eq_ignore_ascii_case("cp1") && claims.handles_claims_challenge())
    }

    fn in_time_window(&self, facts: &RequestFacts<'_>) -> bool {
        if self.days.is_empty() && self.hours.is_none() {
            return true;
        }
        let Ok(now) = jiff::Timestamp::try_from(facts.now) else {
            return false;
        };
        let local = self.timezone.to_datetime(now);
        let day = local.weekday().to_monday_zero_offset() as u8;
        let minute = local.hour() as u16 * 60 + local.minute() as u16;
        let day_ok = self.days.is_empty() || self.days.contains(&day);
        let hour_ok = self.hours.is_none_or(|(start, end)| {
            if start <= end {
                (start..end).contains(&minute)
            } else {
                minute >= start || minute < end
            }
        });
        day_ok && hour_ok
    }

    /// What the token lacks for a `require` grant, as a denial.
    fn unmet(&self, claims: &VerifiedClaims) -> Option<Denial> {
        let PolicyGrant::Require {
            scopes,
            roles,
            mfa,
            auth_context,
            acr,
        } = &self.grant
        else {
            return None;
        };
        let has_mfa = claims.amr().iter().any(|m| m == "mfa" || m == "ngcmfa");
        let context_ok = auth_context
            .as_ref()
            .is_none_or(|c| claims.acrs().contains(c));
        let ok = scopes.iter().all(|s| claims.scopes().contains(s))
            && roles.iter().all(|r| claims.roles().contains(r))
            && (!mfa || has_mfa)
            && (acr.is_empty() || claims.acr().is_some_and(|a| acr.iter().any(|x| x == a)))
            && context_ok;
        if ok {
            return None;
        }
        // Why (Entra claims challenge): only a client that declared `cp1`
        // can answer a step-up challenge; others get a plain 403.
        let challenge =
            (!context_ok && claims.handles_claims_challenge()).then(|| self.name.clone());
        Some(Denial::PolicyUnmet {
            policy: self.name.clone(),
            claims_challenge: challenge,
        })
    }
}

/// Time since the user authenticated (`auth_time`), else since issue;
/// `None` only when the token has neither. A time slightly in the future
/// (clock skew) is age zero, not "unknown".
fn token_age(claims: &VerifiedClaims, facts: &RequestFacts<'_>) -> Option<Duration> {
    let at = claims.auth_time().or(claims.iat())?;
    Some(
        facts
            .now
            .duration_since(UNIX_EPOCH + Duration::from_secs(at))
            .unwrap_or(Duration::ZERO),
    )
}

fn report_only(r: PolicyResult) -> PolicyResult {
    match r {
        PolicyResult::Success => PolicyResult::ReportOnlySuccess,
        PolicyResult::Failure => PolicyResult::ReportOnlyFailure,
        _ => PolicyResult::ReportOnlyNotApplied,
    }
}
