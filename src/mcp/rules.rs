//! Per tool, prompt and resource: which calls on an MCP route a caller may
//! make. Pure, over plain data, compiled once per config.
//!
//! A route without rules keeps the route's decision for every call. A
//! route with rules allows a call that reaches a tool, prompt or resource
//! only when some rule names it and the caller meets that rule; a
//! registered agent with a `tools` list is held to it as well. Methods that
//! reach none (`initialize`, `ping`, notifications, lists, completions)
//! need only the route's decision.

use std::collections::HashMap;
use std::sync::Arc;

use wildmatch::WildMatch;

use crate::call::{McpCall, McpTarget};
use serde_json::value::RawValue;

use super::arguments;
use crate::config::{AgentConfig, McpArgument, McpRule};
use crate::policy::{PolicyOutcome, PolicyResult, Route};
use crate::rejection::Rejection;
use crate::token::VerifiedClaims;

/// The verdict on one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No rule allows it, and nothing the caller can get would change
    /// that: answered as if it did not exist (or, with `hide_denied =
    /// false`, as not allowed).
    NotAllowed,
    /// A delegated caller that a rule would allow with more scopes: these,
    /// in the form the client requests them.
    ScopeShort(String),
}

struct Rule {
    tools: Vec<WildMatch>,
    prompts: Vec<WildMatch>,
    resources: Vec<WildMatch>,
    scopes: Vec<String>,
    roles: Vec<String>,
    kinds: Option<Vec<String>>,
    agents: Option<Vec<String>>,
    per_minute: Option<u32>,
    arguments: Vec<McpArgument>,
}

/// What the rules know of a call's arguments.
#[derive(Debug, Clone, Copy)]
pub enum Args<'a> {
    /// Nothing: a list is filtered as if they would fit.
    Unknown,
    /// The call's `params.arguments`, if it has them.
    Given(Option<&'a RawValue>),
}

impl Rule {
    fn takes(&self, args: Args<'_>) -> bool {
        match args {
            Args::Unknown => true,
            Args::Given(a) => self.arguments.iter().all(|c| arguments::fits(c, a)),
        }
    }

    fn names(&self, target: &McpTarget) -> bool {
        let patterns = match target {
            McpTarget::Tool(_) => &self.tools,
            McpTarget::Prompt(_) => &self.prompts,
            McpTarget::Resource(_) => &self.resources,
        };
        patterns.iter().any(|p| p.matches(target.name()))
    }

    /// Whether the caller is one the rule is for, permissions aside.
    fn is_for(&self, claims: &VerifiedClaims) -> bool {
        self.kinds
            .as_ref()
            .is_none_or(|k| k.iter().any(|k| k == claims.kind().as_str()))
            && self.agents.as_ref().is_none_or(|ids| {
                claims
                    .agent_id()
                    .is_some_and(|id| ids.iter().any(|a| a.eq_ignore_ascii_case(id)))
            })
    }

    fn permits(&self, claims: &VerifiedClaims) -> bool {
        (self.scopes.is_empty() && self.roles.is_empty())
            || claims.scopes().iter().any(|s| self.scopes.contains(s))
            || claims.roles().iter().any(|r| self.roles.contains(r))
    }
}

/// One route's rules, and the name its report-only results go by.
struct RouteRules {
    rules: Vec<Rule>,
    /// `mcp:<route>`.
    report_as: Arc<str>,
}

/// Every MCP rule of one config, by route, and the registered agents'
/// tool lists.
#[derive(Default)]
pub struct McpRules {
    by_route: HashMap<String, RouteRules>,
    agent_tools: HashMap<String, Vec<WildMatch>>,
}

impl McpRules {
    pub fn compile(rules: &[McpRule], agents: &[Arc<AgentConfig>]) -> Self {
        let patterns = |list: &[String]| list.iter().map(|p| WildMatch::new(p)).collect();
        let mut by_route: HashMap<String, RouteRules> = HashMap::new();
        for r in rules {
            let route = by_route
                .entry(r.route.clone())
                .or_insert_with(|| RouteRules {
                    rules: Vec::new(),
                    report_as: Arc::from(format!("mcp:{}", r.route)),
                });
            route.rules.push(Rule {
                tools: patterns(&r.tools),
                prompts: patterns(&r.prompts),
                resources: patterns(&r.resources),
                scopes: r.scopes.clone(),
                roles: r.roles.clone(),
                kinds: r.kinds.clone(),
                agents: r.agents.clone(),
                per_minute: r.calls_per_minute,
                arguments: r.arguments.clone(),
            });
        }
        let agent_tools = agents
            .iter()
            .filter_map(|a| Some((a.id.clone(), patterns(a.tools.as_deref()?))))
            .collect();
        Self {
            by_route,
            agent_tools,
        }
    }

    /// The decision as the route applies it: on a route whose rules only
    /// report, always allowed, with what enforcing them would have done as
    /// a report-only policy result (`mcp:<route>`) for the record.
    pub fn judge(
        &self,
        route: &Route,
        claims: &VerifiedClaims,
        method: Option<&str>,
        target: Option<&McpTarget>,
        args: Args<'_>,
    ) -> (Verdict, Option<PolicyOutcome>) {
        let verdict = self.decide(route, claims, method, target, args);
        let reporting = self
            .by_route
            .get(route.name())
            .filter(|_| route.mcp().is_some_and(|m| m.report_only) && reaches_a_target(method));
        let Some(RouteRules { report_as, .. }) = reporting else {
            return (verdict, None);
        };
        let result = match verdict {
            Verdict::Allowed => PolicyResult::ReportOnlySuccess,
            _ => PolicyResult::ReportOnlyFailure,
        };
        let policy = report_as.clone();
        (Verdict::Allowed, Some(PolicyOutcome { policy, result }))
    }

    /// The call-rate limit that holds for an allowed call: that of the
    /// first rule allowing it that has one (its index, calls per minute).
    pub fn limit(
        &self,
        route: &Route,
        claims: &VerifiedClaims,
        target: &McpTarget,
        args: Args<'_>,
    ) -> Option<(usize, u32)> {
        self.by_route
            .get(route.name())?
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.names(target) && r.is_for(claims) && r.permits(claims) && r.takes(args)
            })
            .find_map(|(i, r)| r.per_minute.map(|n| (i, n)))
    }

    /// Whether calls on the route are decided by rules (and its lists
    /// filtered).
    pub fn governs(&self, route: &Route) -> bool {
        self.by_route.contains_key(route.name())
    }

    /// Whether `method` (reaching `target`, if any) may be called on
    /// `route` by `claims`.
    pub fn decide(
        &self,
        route: &Route,
        claims: &VerifiedClaims,
        method: Option<&str>,
        target: Option<&McpTarget>,
        args: Args<'_>,
    ) -> Verdict {
        let Some(RouteRules { rules, .. }) = self.by_route.get(route.name()) else {
            return Verdict::Allowed;
        };
        if !reaches_a_target(method) {
            return Verdict::Allowed;
        }
        // A call that names nothing reaches nothing the rules allow.
        let Some(target) = target else {
            return Verdict::NotAllowed;
        };
        if let (McpTarget::Tool(name), Some(tools)) = (
            target,
            claims
                .agent_id()
                .and_then(|id| self.agent_tools.get(&id.to_ascii_lowercase())),
        ) && !tools.iter().any(|p| p.matches(name))
        {
            return Verdict::NotAllowed;
        }
        let naming: Vec<&Rule> = rules.iter().filter(|r| r.names(target)).collect();
        if naming
            .iter()
            .any(|r| r.is_for(claims) && r.permits(claims) && r.takes(args))
        {
            return Verdict::Allowed;
        }
        // Why: a delegated caller can get more scopes (consent, step-up);
        // an app or an autonomous agent cannot, and is better answered as
        // by a server without the tool.
        if claims.scopes().is_empty() {
            return Verdict::NotAllowed;
        }
        let mut wanted: Vec<&str> = Vec::new();
        for r in naming.iter().filter(|r| r.is_for(claims) && r.takes(args)) {
            for s in &r.scopes {
                if !wanted.contains(&s.as_str()) {
                    wanted.push(s);
                }
            }
        }
        if wanted.is_empty() {
            return Verdict::NotAllowed;
        }
        let full = route.mcp().map_or(&[][..], |m| &m.scopes_supported[..]);
        let in_full_form = |short: &str| {
            full.iter()
                .find(|f| f.strip_suffix(short).is_some_and(|p| p.ends_with('/')))
                .map_or(short, String::as_str)
                .to_owned()
        };
        let scopes: Vec<String> = wanted.into_iter().map(in_full_form).collect();
        Verdict::ScopeShort(scopes.join(" "))
    }
}

impl Verdict {
    /// The verdict as the caller gets it: through, or the refusal that
    /// fits it (step-up for a scope it could get, else the error of a
    /// missing tool, `hidden` or plainly not allowed).
    pub fn into_result(self, call: &McpCall, hidden: bool) -> Result<(), Rejection> {
        match self {
            Self::Allowed => Ok(()),
            Self::ScopeShort(scope) => Err(Rejection::McpScopeMissing {
                scope: scope.into(),
            }),
            Self::NotAllowed => Err(Rejection::McpNotAllowed {
                // A call that names nothing is answered as one to an
                // unknown tool without a name.
                target: call
                    .target
                    .clone()
                    .unwrap_or(McpTarget::Tool(String::new())),
                id: call.id.clone(),
                hidden,
            }),
        }
    }
}

/// Methods whose target a rule must allow.
fn reaches_a_target(method: Option<&str>) -> bool {
    matches!(
        method,
        Some(
            "tools/call"
                | "prompts/get"
                | "resources/read"
                | "resources/subscribe"
                | "resources/unsubscribe"
        )
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{Value, json};

    use super::*;
    use crate::policy::RouteTable;

    const AGENT: &str = "a9e1c0de-0000-4a11-8a9e-000000000033";

    struct Fixture {
        routes: RouteTable,
        rules: McpRules,
    }

    impl Fixture {
        fn new() -> Self {
            let text = format!(
                r#"
[upstream]
url = "http://127.0.0.1:1"

[[issuers]]
name = "idp"
kind = "oidc"
issuer = "https://idp"
audiences = ["api"]

[[routes]]
name = "tickets"
path = "/tickets/mcp"
scopes = ["Tools.Read", "Tools.Write"]
roles = ["Tools.Read", "Tools.Write"]
[routes.mcp]
resource = "https://mcp.contoso.com/tickets/mcp"
scopes_supported = ["api://tickets/Tools.Read", "api://tickets/Tools.Write"]

[[routes]]
name = "open"
path = "/open/mcp"
scopes = ["Tools.Read"]
[routes.mcp]
resource = "https://mcp.contoso.com/open/mcp"

[[mcp_rules]]
route = "tickets"
tools = ["search_*", "get_ticket"]
scopes = ["Tools.Read"]
roles = ["Tools.Read"]

[[mcp_rules]]
route = "tickets"
tools = ["close_ticket", "delete_*"]
scopes = ["Tools.Write"]
roles = ["Tools.Write"]
kinds = ["user", "agent_user"]

[[mcp_rules]]
route = "tickets"
prompts = ["summarize"]
resources = ["file:///shared/*"]

[[agents]]
id = "{AGENT}"
name = "Triage agent"
owner = "ada@contoso.example"
tools = ["search_*"]
"#
            );
            let config = crate::config::parse(&text, Path::new(".")).unwrap();
            Self {
                routes: RouteTable::compile(&config.routes).unwrap(),
                rules: McpRules::compile(&config.mcp_rules, &config.agents),
            }
        }

        fn decide(
            &self,
            route: &str,
            claims: Value,
            method: &str,
            target: Option<McpTarget>,
        ) -> Verdict {
            let route = self
                .routes
                .routes()
                .iter()
                .find(|r| r.name() == route)
                .unwrap();
            let mut c = json!({"iss": "https://idp", "exp": 2_000_000_000u64, "tid": "t",
                "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474"});
            for (k, v) in claims.as_object().unwrap() {
                c[k] = v.clone();
            }
            let claims = crate::token::VerifiedClaims::for_tests("idp", c);
            self.rules.decide(
                route,
                &claims,
                Some(method),
                target.as_ref(),
                Args::Given(None),
            )
        }
    }

    fn tool(name: &str) -> Option<McpTarget> {
        Some(McpTarget::Tool(name.into()))
    }

    fn user(scp: &str) -> Value {
        json!({"idtyp": "user", "azp": "c", "scp": scp})
    }

    fn app(roles: &[&str]) -> Value {
        json!({"idtyp": "app", "azp": "c", "roles": roles})
    }

    fn agent(roles: &[&str]) -> Value {
        json!({"idtyp": "app", "appid": AGENT, "oid": AGENT, "roles": roles,
            "xms_act_fct": "3 9 11", "xms_sub_fct": "9 3 11"})
    }

    #[test]
    fn a_call_needs_a_rule_that_names_its_target_and_fits_its_caller() {
        let f = Fixture::new();
        let allowed = [
            ("tools/call", tool("search_docs")),
            ("tools/call", tool("get_ticket")),
            ("prompts/get", Some(McpTarget::Prompt("summarize".into()))),
            (
                "resources/read",
                Some(McpTarget::Resource("file:///shared/a/b".into())),
            ),
            // Methods that reach no tool need only the route.
            ("tools/list", None),
            ("initialize", None),
            ("notifications/initialized", None),
        ];
        for (method, target) in allowed {
            assert_eq!(
                f.decide("tickets", user("Tools.Read"), method, target.clone()),
                Verdict::Allowed,
                "{method} {target:?}"
            );
        }
        for (method, target) in [
            ("tools/call", tool("get_tickets")),
            ("tools/call", tool("GET_TICKET")),
            ("tools/call", None),
            ("prompts/get", Some(McpTarget::Prompt("search_docs".into()))),
            (
                "resources/read",
                Some(McpTarget::Resource("file:///etc/passwd".into())),
            ),
        ] {
            assert_eq!(
                f.decide("tickets", user("Tools.Read"), method, target.clone()),
                Verdict::NotAllowed,
                "{method} {target:?}"
            );
        }
        // No rules on a route: the route's decision stands.
        assert_eq!(
            f.decide("open", app(&[]), "tools/call", tool("delete_everything")),
            Verdict::Allowed
        );
    }

    #[test]
    fn a_delegated_caller_short_of_a_scope_is_told_which_an_app_is_not() {
        let f = Fixture::new();
        assert_eq!(
            f.decide(
                "tickets",
                user("Tools.Read"),
                "tools/call",
                tool("delete_all")
            ),
            Verdict::ScopeShort("api://tickets/Tools.Write".into())
        );
        assert_eq!(
            f.decide(
                "tickets",
                user("Tools.Write"),
                "tools/call",
                tool("delete_all")
            ),
            Verdict::Allowed
        );
        // Apps and autonomous agents cannot step up; and this rule is for
        // users and agent users only.
        assert_eq!(
            f.decide(
                "tickets",
                app(&["Tools.Read"]),
                "tools/call",
                tool("delete_all")
            ),
            Verdict::NotAllowed
        );
        assert_eq!(
            f.decide(
                "tickets",
                app(&["Tools.Write"]),
                "tools/call",
                tool("close_ticket")
            ),
            Verdict::NotAllowed
        );
        assert_eq!(
            f.decide(
                "tickets",
                app(&["Tools.Read"]),
                "tools/call",
                tool("search_x")
            ),
            Verdict::Allowed
        );
    }

    #[test]
    fn a_registered_agent_is_held_to_its_own_tool_list_too() {
        let f = Fixture::new();
        assert_eq!(
            f.decide(
                "tickets",
                agent(&["Tools.Read"]),
                "tools/call",
                tool("search_docs")
            ),
            Verdict::Allowed
        );
        // The rules would allow it; the agent's registration does not.
        assert_eq!(
            f.decide(
                "tickets",
                agent(&["Tools.Read"]),
                "tools/call",
                tool("get_ticket")
            ),
            Verdict::NotAllowed
        );
    }
}
