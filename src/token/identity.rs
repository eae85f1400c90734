//! Who is calling: an Entra token's claims → [`IdentityKind`] and the agent
//! facts, by the rules docs/policy.md states (identity kinds). Facet claims
//! are tested by their *values* (they appear on non-agent tokens too),
//! unknown facet values are ignored, and nothing here fails on an odd claim.

use std::collections::BTreeSet;

/// Entra facet value for an agent identity (`xms_act_fct` / `xms_sub_fct`).
const FACET_AGENT_IDENTITY: u32 = 11;
/// Entra facet value for an agent's user account (`xms_sub_fct`).
const FACET_AGENT_USER: u32 = 13;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// A human, delegated (`scp`).
    User,
    /// A workload, app-only (`roles`).
    App,
    /// An agent identity: autonomous (app-only) or acting for a human (OBO).
    Agent,
    /// An agent's own user account.
    AgentUser,
}

impl IdentityKind {
    pub const ALL: [IdentityKind; 4] = [Self::User, Self::App, Self::Agent, Self::AgentUser];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::App => "app",
            Self::Agent => "agent",
            Self::AgentUser => "agent_user",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The classification inputs, borrowed from the claims.
pub struct ClassifyInput<'a> {
    pub idtyp: Option<&'a str>,
    pub has_scp: bool,
    /// The subject is the client itself (RFC 9068 §2.2: a
    /// client-credentials token); read for `kind = "oidc"` issuers only.
    pub subject_is_client: bool,
    pub act_facets: Option<&'a str>,
    pub sub_facets: Option<&'a str>,
    pub parent_app: Option<&'a str>,
}

/// What classification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    pub kind: IdentityKind,
    /// An agent acting on behalf of a human (`oid` is the human).
    pub is_on_behalf_of: bool,
}

/// Classifies a token: agent user if the subject facets hold
/// 13; an autonomous agent if app-only and the actor facets hold 11; an
/// agent acting for a user (OBO) if the actor facets hold 11; else app if
/// `idtyp` is `app` (or, without `idtyp`, if there is no `scp` or the
/// subject is the client); else user.
pub fn classify(input: &ClassifyInput<'_>) -> Classified {
    let act = facets(input.act_facets);
    let sub = facets(input.sub_facets);
    // Why: Microsoft.Identity.Web calls a token an agent user only when the
    // subject facets parse entirely as integers and contain 13.
    let sub_all = strict_facets(input.sub_facets);
    let is_app_only = match input.idtyp {
        Some(t) => t.eq_ignore_ascii_case("app"),
        None => !input.has_scp || input.subject_is_client,
    };
    let actor_is_agent = act.contains(&FACET_AGENT_IDENTITY);
    if sub_all.is_some_and(|s| s.contains(&FACET_AGENT_USER)) {
        return Classified {
            kind: IdentityKind::AgentUser,
            is_on_behalf_of: false,
        };
    }
    if actor_is_agent
        || (input.parent_app.is_some() && (is_app_only || sub.contains(&FACET_AGENT_IDENTITY)))
    {
        return Classified {
            kind: IdentityKind::Agent,
            is_on_behalf_of: !is_app_only,
        };
    }
    let kind = if is_app_only {
        IdentityKind::App
    } else {
        IdentityKind::User
    };
    Classified {
        kind,
        is_on_behalf_of: false,
    }
}

/// Space-separated integers as a set; unparsable members are ignored.
fn facets(value: Option<&str>) -> BTreeSet<u32> {
    value
        .map(|v| {
            v.split_ascii_whitespace()
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The set only if every member is an integer.
fn strict_facets(value: Option<&str>) -> Option<BTreeSet<u32>> {
    value?
        .split_ascii_whitespace()
        .map(|f| f.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        idtyp: Option<&'a str>,
        scp: bool,
        act: Option<&'a str>,
        sub: Option<&'a str>,
        par: Option<&'a str>,
    ) -> ClassifyInput<'a> {
        ClassifyInput {
            idtyp,
            has_scp: scp,
            subject_is_client: false,
            act_facets: act,
            sub_facets: sub,
            parent_app: par,
        }
    }

    #[test]
    fn classification_table() {
        use IdentityKind::*;
        let bp = Some("b1e9c1a7-0000-4b00-8000-0000000000bb");
        let cases: &[(&str, ClassifyInput, IdentityKind, bool)] = &[
            (
                "delegated user",
                input(Some("user"), true, None, None, None),
                User,
                false,
            ),
            (
                "user without idtyp",
                input(None, true, None, None, None),
                User,
                false,
            ),
            (
                "app-only",
                input(Some("app"), false, None, None, None),
                App,
                false,
            ),
            (
                "app without idtyp falls back to no scp",
                input(None, false, None, None, None),
                App,
                false,
            ),
            (
                "bot app with non-agent facets",
                input(Some("app"), false, Some("3 9"), None, None),
                App,
                false,
            ),
            (
                "user with non-agent subject facets",
                input(Some("user"), true, Some("1 9"), Some("1 5"), None),
                User,
                false,
            ),
            (
                "autonomous agent (DOMAIN 1.4c)",
                input(Some("app"), false, Some("3 9 11"), Some("9 3 11"), bp),
                Agent,
                false,
            ),
            (
                "agent acting for a user (OBO)",
                input(Some("user"), true, Some("11 9"), Some("1"), bp),
                Agent,
                true,
            ),
            (
                "agent user (DOMAIN 1.4d)",
                input(Some("user"), true, Some("1 9 11"), Some("1 13"), bp),
                AgentUser,
                false,
            ),
            (
                "facet order does not matter",
                input(Some("user"), true, Some("11"), Some("13 1"), bp),
                AgentUser,
                false,
            ),
            (
                "13 with a non-integer is not an agent user",
                input(Some("user"), true, Some("11"), Some("13 x"), bp),
                Agent,
                true,
            ),
            (
                "unknown facet values are ignored",
                input(Some("app"), false, Some("11 42 x"), None, None),
                Agent,
                false,
            ),
            (
                "blueprint alone on an app token",
                input(Some("app"), false, None, None, bp),
                Agent,
                false,
            ),
        ];
        for (name, i, kind, obo) in cases {
            let got = classify(i);
            assert_eq!((got.kind, got.is_on_behalf_of), (*kind, *obo), "{name}");
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in IdentityKind::ALL {
            assert_eq!(IdentityKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(IdentityKind::parse("robot"), None);
    }
}
