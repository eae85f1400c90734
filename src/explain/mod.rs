//! `portcullis explain`: what would the gateway decide for this token (or
//! these claims) on this request, and why. Runs the same pipeline steps as
//! the gateway: path normalization, routing, verification (unless given
//! claims), revocation, route rules, agent registry, policies.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{Method, Request};
use serde_json::{Value, json};

use crate::budget::{Asking, Store};
use crate::call::{Call, McpCall, McpTarget};
use crate::call::{Metered, ModelCall, Operation};
use crate::config::Config;
use crate::decision::Decision;
use crate::mcp::{Args, McpRules, Verdict};
use crate::model::{ModelInspector, request};
use crate::policy::{self, RevocationList, path};
use crate::proxy::pipeline::{self, Circumstances};
use crate::rejection::Rejection;
use crate::snapshot::{KeyEnv, Snapshot};
use crate::token::{TokenFacts, VerifyError};

mod claims;

pub use claims::ClaimCheck;

/// The credential to explain.
pub enum Credential {
    /// A bearer token: verified against the issuers' keys (fetched now).
    Token(String),
    /// Claims taken on trust: signature and lifetime are not checked.
    Claims(Value),
}

/// The request to explain.
pub struct ExplainRequest {
    pub method: Method,
    pub path: String,
    pub host: Option<String>,
    pub client_ip: IpAddr,
    pub at: SystemTime,
    pub credential: Credential,
    /// The MCP message, on an MCP route.
    pub mcp: Option<McpRequest>,
    /// The model a model API request names (its body's `model`).
    pub model: Option<String>,
}

/// One budget that applies, with its counter now.
pub struct BudgetState {
    pub name: String,
    pub limit: u64,
    /// Tokens counted in the current window, read from a shared store;
    /// `None` when the counters are in the gateway's own process (or the
    /// store did not answer).
    pub used: Option<u64>,
    pub shared: bool,
    /// Seconds until the window renews.
    pub renews_in: u64,
    pub enforced: bool,
}

/// An MCP message: its method and the name (or URI) it reaches.
pub struct McpRequest {
    pub method: String,
    pub name: Option<String>,
}

/// The answer, ready to print as text or JSON.
pub struct Explanation {
    pub signature_checked: bool,
    pub route: Option<String>,
    pub params: Vec<(String, String)>,
    /// The gateway's own decision value.
    pub decision: Decision,
    /// The token's decisive claims beside what the config accepts (none on
    /// a public route).
    pub claims: Vec<ClaimCheck>,
    /// On a model API route: the budgets that apply and their counters.
    pub budgets: Vec<BudgetState>,
    /// When an exchange it opened would end, if allowed with a token.
    pub stream: Option<StreamDeadline>,
}

/// The deadline an admitted exchange would get: the first of its token's
/// `exp` (with clock skew and `exp_grace`), its agent's `expires` and its
/// route's `max_stream_duration`.
pub struct StreamDeadline {
    /// `None`: no bound (never on a route that asks for a token).
    pub at: Option<SystemTime>,
    /// The reason it would end with then.
    pub reason: &'static str,
    /// How long a model answer may still finish after it.
    pub finish: Option<std::time::Duration>,
}

/// Runs the decision. Fails only when the config or the request cannot be
/// used at all (exit code 2).
pub async fn explain(config: &Config, request: ExplainRequest) -> Result<Explanation, String> {
    let facts = match &request.credential {
        Credential::Token(t) => TokenFacts::read(t),
        Credential::Claims(v) => Some(TokenFacts::of(None, v)),
    };
    // The verifier checks a token's lifetime against the clock, whatever
    // `--at` says to the policies; the claims show the same.
    let now = matches!(request.credential, Credential::Token(_)).then(SystemTime::now);
    let mut out = decide(config, request).await?;
    let route = out
        .route
        .as_deref()
        .and_then(|name| config.routes.iter().find(|r| r.name == name));
    if let Some(facts) = facts.filter(|_| !route.is_some_and(|r| r.public)) {
        let verified = out.decision.identity.clone();
        out.claims = claims::check(config, &facts, verified.as_deref(), route, now);
    }
    Ok(out)
}

async fn decide(config: &Config, request: ExplainRequest) -> Result<Explanation, String> {
    let metrics = crate::metrics::Metrics::new().map_err(|e| e.to_string())?;
    let env = KeyEnv {
        observer: Arc::new(metrics),
    };
    let snapshot = Snapshot::compile(config, &env).map_err(|e| e.to_string())?;
    let revoked = match &config.revocation_file {
        Some(p) => RevocationList::load(p).map_err(|e| format!("revocation file: {e}"))?,
        None => RevocationList::default(),
    };
    let mut builder = Request::builder()
        .method(request.method.clone())
        .uri(request.path.as_str());
    if let Some(h) = &request.host {
        builder = builder.header(http::header::HOST, h.as_str());
    }
    let parts = builder
        .body(())
        .map_err(|e| format!("invalid request: {e}"))?
        .into_parts()
        .0;
    let circumstances = Circumstances {
        client_ip: request.client_ip,
        now: request.at,
        revoked: &revoked,
    };
    let signature_checked = matches!(request.credential, Credential::Token(_));
    let mut out = Explanation {
        signature_checked,
        route: None,
        params: Vec::new(),
        decision: Decision::pending(),
        claims: Vec::new(),
        budgets: Vec::new(),
        stream: None,
    };

    let normalized = match path::normalize(parts.uri.path()) {
        Ok(p) => p,
        Err(_) => {
            out.decision.verdict = Err(Rejection::BadPath);
            return Ok(out);
        }
    };
    let matched = snapshot
        .routes
        .find(&parts.method, pipeline::request_host(&parts), &normalized);
    out.route = matched.as_ref().map(|m| m.route.name().to_owned());
    out.params = matched.as_ref().map_or_else(Vec::new, |m| {
        m.params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    });
    if matched.as_ref().is_some_and(|m| m.route.is_public()) {
        return Ok(out);
    }
    let claims = match request.credential {
        Credential::Claims(value) => Arc::new(
            snapshot
                .verifier
                .claims_taken_on_trust(value)
                .map_err(|e| format!("claims: {e}"))?,
        ),
        Credential::Token(token) => {
            for source in &snapshot.key_sources {
                if let Err(e) = source.refresh().await {
                    return Err(format!("cannot fetch keys for {}: {e}", source.label()));
                }
            }
            match snapshot.verifier.verify(&token).await.result {
                Ok(claims) => claims,
                Err(VerifyError::Invalid(reason)) => {
                    out.decision.verdict = Err(Rejection::InvalidToken(reason));
                    return Ok(out);
                }
                Err(VerifyError::KeysUnavailable) => return Err("no usable keys".into()),
            }
        }
    };
    let matched = matched.ok_or(Rejection::Denied(policy::Denial::NoRoute));
    let mut decision = Decision::pending();
    let verdict = pipeline::decide(
        &snapshot,
        &parts.method,
        matched,
        claims,
        circumstances,
        &mut decision,
    );
    let model = match &verdict {
        Ok(grant) if grant.route().is_model_api() => request::deployment(parts.uri.path())
            .ok()
            .flatten()
            .or_else(|| request::in_query(parts.uri.query()).ok().flatten())
            .or(request.model.map(|m| m.to_ascii_lowercase())),
        _ => None,
    };
    if let (Ok(grant), Some(model)) = (&verdict, &model) {
        let now = request.at;
        let asking = Asking {
            claims: grant.claims().map(|c| &**c),
            route: grant.route().name(),
            model: Some(model),
        };
        out.budgets = snapshot
            .budgets
            .state(&asking, now)
            .await
            .into_iter()
            .map(|(name, counter, used)| BudgetState {
                name: name.to_string(),
                limit: counter.limit,
                used,
                shared: !matches!(&**snapshot.budgets.store(), Store::Local(_)),
                renews_in: counter.window.seconds_left(now),
                enforced: counter.enforce,
            })
            .collect();
    }
    let granted = verdict
        .as_ref()
        .ok()
        .and_then(|g| Some((g.route().clone(), g.claims()?.clone())));
    decision.verdict = match (verdict, request.mcp) {
        // The MCP stage's decision, as the gateway makes it on the message.
        (Ok(grant), Some(message)) if grant.route().mcp().is_some() => {
            let target = message.name.and_then(|n| McpTarget::of(&message.method, n));
            let call = McpCall {
                method: Some(message.method),
                target,
                ..McpCall::default()
            };
            let rules = McpRules::compile(&config.mcp_rules, &config.agents);
            let (verdict, report) = match grant.claims() {
                // Its arguments are not given: decided as if they fit.
                Some(c) => rules.judge(
                    grant.route(),
                    c,
                    call.method.as_deref(),
                    call.target.as_ref(),
                    Args::Unknown,
                ),
                None => (Verdict::Allowed, None),
            };
            decision.policies.extend(report);
            let hidden = grant.route().mcp().is_some_and(|m| m.hide_denied);
            let result = verdict.into_result(&call, hidden);
            decision.call = Some(Call::Mcp(call));
            result
        }
        // The model stage's decision on the model, as the gateway makes it.
        (Ok(grant), None) if grant.route().is_model_api() => match &model {
            None => Err(Rejection::ModelMissing),
            Some(m) => {
                let inspector = ModelInspector::new(
                    snapshot.policies.clone(),
                    &config.agents,
                    snapshot.budgets.clone(),
                    config.metering.clone(),
                    env.observer.clone(),
                );
                let (verdict, reports) = inspector.decide(&grant, &parts.method, m);
                decision.policies.extend(reports);
                decision.call = Some(Call::Model(ModelCall {
                    operation: Operation::of(parts.uri.path()).unwrap_or(Operation::Chat),
                    model: Some(m.clone()),
                    stream: false,
                    usage: Metered::default(),
                }));
                verdict
            }
        },
        (verdict, _) => verdict.map(|_| ()),
    };
    if let (Ok(()), Some((route, claims))) = (&decision.verdict, &granted) {
        let (at, bound) = crate::streams::deadline_of(&snapshot, route, claims, request.at);
        out.stream = Some(StreamDeadline {
            at,
            reason: bound.reason(),
            finish: route.finish_bound(),
        });
    }
    out.decision = decision;
    Ok(out)
}

impl Explanation {
    pub fn is_allowed(&self) -> bool {
        self.decision.is_allowed()
    }

    fn decision_json(&self) -> Value {
        match &self.decision.verdict {
            Ok(()) => json!({"result": "allow"}),
            Err(r) => json!({
                "result": "deny", "reason": self.decision.reason_detail(), "status": r.status().as_u16(), "policy": self.decision.policy(),
            }),
        }
    }

    fn identity_json(&self) -> Value {
        let Some(c) = &self.decision.identity else {
            return Value::Null;
        };
        json!({
            "kind": c.kind().as_str(), "on_behalf_of_user": c.is_on_behalf_of(), "issuer": c.issuer_name(),
            "tenant": c.tid(), "principal": c.principal(), "client_app": c.client_app(),
            "agent_id": c.agent_id(), "blueprint": c.blueprint(), "scopes": c.scopes(), "roles": c.roles(),
            "token_id": c.token_id(),
        })
    }

    pub fn to_json(&self) -> Value {
        json!({
            "signature_checked": self.signature_checked,
            "identity": self.identity_json(),
            "route": self.route,
            "params": self.params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
            "claims": self.claims.iter().map(ClaimCheck::to_json).collect::<Vec<_>>(),
            "policies": self.decision.policies.iter().map(|p| json!({"policy": &*p.policy, "result": p.result.as_str()})).collect::<Vec<_>>(),
            "mcp": match &self.decision.call {
                Some(Call::Mcp(c)) => json!({
                    "method": c.method,
                    "target": c.target.as_ref().map(|t| json!({t.attribute(): t.name()})),
                }),
                _ => Value::Null,
            },
            "model": match &self.decision.call {
                Some(Call::Model(c)) => json!({"gen_ai.request.model": c.model}),
                _ => Value::Null,
            },
            "budgets": self.budgets.iter().map(|b| json!({
                "name": b.name, "limit": b.limit, "used": b.used,
                "renews_in_secs": b.renews_in, "mode": if b.enforced { "enforce" } else { "report" },
            })).collect::<Vec<_>>(),
            "stream": self.stream.as_ref().map(|s| json!({
                "deadline": s.at.and_then(rfc3339), "ends_as": s.reason,
                "finish_secs": s.finish.map(|d| d.as_secs()),
            })),
            "decision": self.decision_json(),
        })
    }

    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let checked = if self.signature_checked {
            "checked against the issuer's keys"
        } else {
            "NOT checked (--claims): signature, lifetime and audience are taken on trust"
        };
        let _ = writeln!(t, "token:     {checked}");
        match &self.decision.identity {
            Some(c) => {
                let obo = if c.is_on_behalf_of() {
                    " (acting for a user)"
                } else {
                    ""
                };
                let _ = writeln!(
                    t,
                    "identity:  {}{obo}, issuer {}",
                    c.kind().as_str(),
                    c.issuer_name()
                );
                let _ = writeln!(
                    t,
                    "           tenant {}, principal {}",
                    c.tid().unwrap_or("-"),
                    c.principal().unwrap_or("-")
                );
                let _ = writeln!(t, "           client app {}", c.client_app().unwrap_or("-"));
                if let Some(agent) = c.agent_id() {
                    let _ = writeln!(
                        t,
                        "           agent {agent}, blueprint {}",
                        c.blueprint().unwrap_or("-")
                    );
                }
                let _ = writeln!(
                    t,
                    "           scopes [{}], roles [{}]",
                    c.scopes().join(" "),
                    c.roles().join(" ")
                );
            }
            None => {
                let _ = writeln!(t, "identity:  -");
            }
        }
        if !self.claims.is_empty() {
            let _ = writeln!(
                t,
                "claims:    as the token states them, beside what is accepted"
            );
            let width = self
                .claims
                .iter()
                .map(|c| c.value.chars().count())
                .max()
                .unwrap_or(0)
                .min(60);
            for c in &self.claims {
                let mark = match c.fits {
                    Some(true) => "ok",
                    Some(false) => "MISMATCH",
                    None => "",
                };
                let _ = writeln!(
                    t,
                    "  {:<7} {:<width$}  {mark:<8}  {}",
                    c.claim, c.value, c.accepted
                );
            }
        }
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = match &self.route {
            Some(r) if params.is_empty() => writeln!(t, "route:     {r}"),
            Some(r) => writeln!(t, "route:     {r} ({})", params.join(", ")),
            None => writeln!(t, "route:     none matches (default deny)"),
        };
        if let Some(Call::Mcp(call)) = &self.decision.call {
            let _ = writeln!(
                t,
                "mcp:       {} {}",
                call.method.as_deref().unwrap_or("-"),
                call.target.as_ref().map_or("", McpTarget::name)
            );
        }
        if let Some(Call::Model(call)) = &self.decision.call {
            let _ = writeln!(t, "model:     {}", call.model.as_deref().unwrap_or("-"));
        }
        for (i, b) in self.budgets.iter().enumerate() {
            let label = if i == 0 { "budgets: " } else { "         " };
            let used = match (b.used, b.shared) {
                (Some(u), _) => format!("{u} of {} used", b.limit),
                (None, true) => format!("{} (the store did not answer)", b.limit),
                (None, false) => format!("{} (counted in the gateway's process)", b.limit),
            };
            let mode = if b.enforced { "" } else { ", report-only" };
            let _ = writeln!(
                t,
                "{label}  {:<24} {used}, renews in {} s{mode}",
                b.name, b.renews_in
            );
        }
        if !self.budgets.is_empty() {
            let _ = writeln!(
                t,
                "           (a budget is overspent only by answers past their reservation)"
            );
        }
        if self.decision.policies.is_empty() {
            let _ = writeln!(t, "policies:  none evaluated");
        }
        for (i, p) in self.decision.policies.iter().enumerate() {
            let label = if i == 0 { "policies: " } else { "          " };
            let _ = writeln!(t, "{label} {:<32} {}", &*p.policy, p.result.as_str());
        }
        if let Some(s) = &self.stream {
            let finish = s
                .finish
                .map(|d| {
                    format!(
                        "; an answer may finish for {}",
                        humantime::format_duration(d)
                    )
                })
                .unwrap_or_default();
            let _ = match s.at.and_then(rfc3339) {
                Some(at) => writeln!(t, "stream:    open until {at} ({}){finish}", s.reason),
                None => writeln!(t, "stream:    no deadline"),
            };
        }
        let _ = match &self.decision.verdict {
            Ok(()) => writeln!(t, "decision:  allow"),
            Err(r) => {
                let policy = self
                    .decision
                    .policy()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default();
                writeln!(
                    t,
                    "decision:  deny, {}{policy}, HTTP {}",
                    r.reason(),
                    r.status().as_u16()
                )
            }
        };
        t
    }
}

/// A time as RFC 3339 UTC, to the second.
fn rfc3339(at: SystemTime) -> Option<String> {
    let ts = jiff::Timestamp::try_from(at).ok()?;
    Some(ts.round(jiff::Unit::Second).ok()?.to_string())
}
