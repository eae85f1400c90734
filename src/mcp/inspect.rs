//! The MCP stage: reads every message posted to an MCP route, refuses what
//! could be read two ways, and records what it asks.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{Method, Response};

use super::filter::{ListFilter, ListKind};
use super::limits::{CallLimiter, LimitKey};
use super::message;
use super::order::{OpenGuard, Opening};
use super::rules::{Args, McpRules, Verdict};
use super::sessions::{Binder, Owner, SessionKey, Sessions};
use crate::body::Body;
use crate::call::{Call, McpCall, McpTarget};
use crate::policy::Grant;
use crate::rejection::Rejection;
use crate::stages::{Inspect, Inspecting, Inspection, Respond};

/// The most of a message read on an MCP route that sets no
/// `max_body_bytes`: tool arguments are JSON, not uploads.
const DEFAULT_LIMIT: usize = 4 << 20;

/// Reads MCP messages, decides on their calls by the config's rules, and
/// binds sessions to who opened them.
pub struct McpInspector {
    rules: Arc<McpRules>,
    sessions: Arc<Sessions>,
    limiter: Arc<CallLimiter>,
    opening: Arc<Opening>,
}

impl McpInspector {
    pub fn new(rules: McpRules, sessions: Arc<Sessions>, limiter: Arc<CallLimiter>) -> Self {
        Self {
            rules: Arc::new(rules),
            sessions,
            limiter,
            opening: Arc::new(Opening::default()),
        }
    }

    /// Takes an allowed tool call from its rule's rate limit, if it has one.
    fn rate(&self, grant: &Grant, call: &McpCall, args: Args<'_>) -> Result<(), Rejection> {
        let (Some(target @ McpTarget::Tool(tool)), Some(claims)) = (&call.target, grant.claims())
        else {
            return Ok(());
        };
        let Some((rule, per_minute)) = self.rules.limit(grant.route(), claims, target, args) else {
            return Ok(());
        };
        let key = LimitKey {
            route: grant.route().name_arc().clone(),
            rule,
            owner: Owner::of(claims),
            tool: tool.as_str().into(),
        };
        self.limiter
            .take(key, per_minute, Instant::now())
            .map_err(|wait| Rejection::McpRateLimited {
                id: call.id.clone(),
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            })
    }

    /// The filter of a list answer on a route with rules: what the caller
    /// could call stays in it (a tool it could get by asking for more
    /// scopes included, so that it can ask).
    fn list_filter(&self, grant: &Grant, call: &McpCall) -> Option<ListFilter> {
        let route = grant.route();
        let kind = ListKind::of(call.method.as_deref()?)?;
        let claims = grant.claims()?.clone();
        if !self.rules.governs(route) {
            return None;
        }
        let (rules, route) = (self.rules.clone(), route.clone());
        let callable = move |target: &McpTarget| {
            let method = Some(target.method());
            let verdict = rules.decide(&route, &claims, method, Some(target), Args::Unknown);
            verdict != Verdict::NotAllowed
        };
        let id = call.id.as_deref().unwrap_or("null");
        Some(ListFilter::new(kind, id, Arc::new(callable)))
    }

    /// On a route that binds sessions: refuses a session another principal
    /// opened, and returns what binds the one the answer names (or forgets
    /// the one a `DELETE` ends).
    async fn session(
        &self,
        grant: &Grant,
        head: &Parts,
        presented: Option<SessionKey>,
    ) -> Result<Option<Binder>, Rejection> {
        let (Some(idle), Some(claims)) = (
            grant.route().mcp().and_then(|m| m.session_idle_timeout),
            grant.claims(),
        ) else {
            return Ok(None);
        };
        let owner = Owner::of(claims);
        if let Some(session) = presented
            && self
                .sessions
                .owner(session, idle, Instant::now())
                .await?
                .is_some_and(|o| o != owner)
        {
            return Err(Rejection::McpSessionNotFound);
        }
        Ok(Some(Binder {
            store: self.sessions.clone(),
            owner,
            idle,
            ending: presented.filter(|_| head.method == Method::DELETE),
            opens: presented.is_none(),
        }))
    }
}

impl McpInspector {
    /// An allowed call's rate, session and list filter: the stage's part
    /// in the answer, if it takes one.
    async fn answer(
        &self,
        grant: &Grant,
        head: &Parts,
        call: &McpCall,
        args: Args<'_>,
        session: Option<SessionKey>,
        enforced: bool,
    ) -> Result<Option<Box<dyn Respond>>, Rejection> {
        if enforced {
            self.rate(grant, call, args)?;
        }
        let binder = self.session(grant, head, session).await?;
        let filter = self.list_filter(grant, call).filter(|_| enforced);
        let opening = session
            .filter(|_| head.method == Method::GET)
            .map(|s| self.opening.open(s));
        let answer = McpAnswer {
            binder,
            filter,
            opening,
        };
        let takes_part =
            answer.binder.is_some() || answer.filter.is_some() || answer.opening.is_some();
        Ok(takes_part.then(|| Box::new(answer) as Box<dyn Respond>))
    }
}

/// The MCP stage's part in an answer: the session it names, and the list
/// it carries.
struct McpAnswer {
    binder: Option<Binder>,
    filter: Option<ListFilter>,
    /// A `GET` stream being opened: released once the server answers.
    opening: Option<OpenGuard>,
}

impl Respond for McpAnswer {
    fn respond(self: Box<Self>, response: Response<Body>) -> Response<Body> {
        let write = self
            .binder
            .as_ref()
            .and_then(|b| b.answered(response.status(), response.headers()));
        // The stream is open (or refused): the session's messages may go.
        drop(self.opening);
        let response = match self.filter {
            Some(filter) => Box::new(filter).respond(response),
            None => response,
        };
        match write {
            Some(write) => response.map(|body| crate::body::after(write, body)),
            None => response,
        }
    }
}

impl Inspect for McpInspector {
    fn body_limit(&self, grant: &Grant, head: &Parts) -> Option<usize> {
        let route = grant.route();
        route.mcp()?;
        // `GET` opens the server's stream and `DELETE` ends a session:
        // neither has a message to read.
        (head.method == Method::POST).then(|| {
            route.max_body_bytes().map_or(DEFAULT_LIMIT, |max| {
                usize::try_from(max).unwrap_or(usize::MAX)
            })
        })
    }

    fn inspect<'a>(
        &'a self,
        grant: &'a Grant,
        head: &'a mut Parts,
        body: Option<&'a mut Bytes>,
    ) -> Inspecting<'a> {
        Box::pin(self.read(grant, head, body.map(|b| &*b)))
    }
}

impl McpInspector {
    async fn read(&self, grant: &Grant, head: &Parts, body: Option<&Bytes>) -> Inspection {
        let route = grant.route();
        let Some(mcp) = route.mcp() else {
            return Inspection::pass();
        };
        let session = SessionKey::of(&head.headers);
        let read = match body {
            Some(body) => message::read(&head.headers, body),
            None => Ok(message::Read {
                call: McpCall::default(),
                arguments: None,
            }),
        };
        let fill = |mut call: McpCall| {
            call.protocol_version = head
                .headers
                .get("mcp-protocol-version")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            call.session = session.map(|s| s.for_record());
            Some(Call::Mcp(call))
        };
        match read {
            Ok(message::Read { call, arguments }) => {
                let args = Args::Given(arguments);
                let (verdict, report) = match grant.claims() {
                    Some(claims) => self.rules.judge(
                        route,
                        claims,
                        call.method.as_deref(),
                        call.target.as_ref(),
                        args,
                    ),
                    // A public MCP route: no caller to decide for (rules on
                    // one are refused at load).
                    None => (Verdict::Allowed, None),
                };
                // Rules that only report neither limit nor filter.
                let enforced = !mcp.report_only;
                let verdict = match verdict.into_result(&call, mcp.hide_denied) {
                    Ok(()) => {
                        self.answer(grant, head, &call, args, session, enforced)
                            .await
                    }
                    Err(refused) => Err(refused),
                };
                let hold = session
                    .filter(|_| head.method == Method::POST && verdict.is_ok())
                    .and_then(|s| self.opening.wait(s));
                Inspection {
                    call: fill(call),
                    verdict,
                    reports: report.into_iter().collect(),
                    hold,
                }
            }
            Err(fault) => Inspection {
                call: fill(McpCall::default()),
                verdict: Err(Rejection::McpInvalid(fault)),
                reports: Vec::new(),
                hold: None,
            },
        }
    }
}
