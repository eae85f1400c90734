//! The model stage: reads every request to a model API route, decides on
//! its one effective model, reserves its budgets, and meters its answer.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use http::request::Parts;
use wildmatch::WildMatch;

use super::ModelObserver;
use super::meter::{Closing, ModelAnswer};
use super::request;
use crate::budget::{Asking, Budgets, Estimate};
use crate::call::{Call, Metered, ModelCall, Operation};
use crate::config::{AgentConfig, MeteringConfig};
use crate::policy::{self, Agent, Denial, Grant, Policies};
use crate::rejection::Rejection;
use crate::stages::{Inspect, Inspecting, Inspection};

/// The most of a request body read on a model route that sets no
/// `max_body_bytes`: prompts with images inline are megabytes.
const DEFAULT_LIMIT: usize = 16 << 20;

pub struct ModelInspector {
    policies: Arc<Policies>,
    /// Each registered agent's model patterns (lower case), where it has
    /// a list.
    agent_models: HashMap<String, Vec<WildMatch>>,
    budgets: Arc<Budgets>,
    metering: MeteringConfig,
    observer: Arc<dyn ModelObserver>,
}

impl ModelInspector {
    pub fn new(
        policies: Arc<Policies>,
        agents: &[Arc<AgentConfig>],
        budgets: Arc<Budgets>,
        metering: MeteringConfig,
        observer: Arc<dyn ModelObserver>,
    ) -> Self {
        let agent_models = agents
            .iter()
            .filter_map(|a| {
                let models = a.models.as_ref()?;
                let patterns = models
                    .iter()
                    .map(|m| WildMatch::new(&m.to_ascii_lowercase()))
                    .collect();
                Some((a.id.clone(), patterns))
            })
            .collect();
        Self {
            policies,
            agent_models,
            budgets,
            metering,
            observer,
        }
    }

    /// The decision on `model` for a granted request, as the stage makes
    /// it (for `explain`): the refusal if any, and the policies' results.
    pub fn decide(
        &self,
        grant: &Grant,
        method: &Method,
        model: &str,
    ) -> (Result<(), Rejection>, Vec<policy::PolicyOutcome>) {
        let mut reports = Vec::new();
        let agent = grant.claims().and_then(|c| self.policies.agents.find(c));
        let verdict = self.authorize(grant, agent, method, model, &mut reports);
        (verdict, reports)
    }

    /// The route's and the agent's model lists, then the policies on
    /// models.
    fn authorize(
        &self,
        grant: &Grant,
        agent: Option<&Arc<Agent>>,
        method: &Method,
        model: &str,
        reports: &mut Vec<policy::PolicyOutcome>,
    ) -> Result<(), Rejection> {
        if !grant.route().serves_model(model) {
            return Err(Rejection::Denied(Denial::ModelNotAllowed));
        }
        if let Some(agent) = agent
            && let Some(patterns) = self.agent_models.get(&agent.id)
            && !patterns.iter().any(|p| p.matches(model))
        {
            return Err(Rejection::Denied(Denial::ModelNotAllowed));
        }
        let (verdict, outcomes) = policy::authorize_model(&self.policies, grant, method, model);
        reports.extend(outcomes);
        verdict.map_err(Rejection::Denied)
    }

    async fn inspect_model(
        &self,
        grant: &Grant,
        head: &mut Parts,
        body: Option<&mut Bytes>,
    ) -> Inspection {
        let route = grant.route();
        let Some(operation) = Operation::of(head.uri.path()) else {
            return Inspection::pass();
        };
        let read = match &body {
            Some(b) => request::read(b).map(Some),
            None => Ok(None),
        };
        let from_path = request::deployment(head.uri.path());
        let from_query = match operation {
            Operation::Realtime => request::in_query(head.uri.query()),
            _ => Ok(None),
        };
        let (read, from_path, from_query) = match (read, from_path, from_query) {
            (Ok(r), Ok(p), Ok(q)) => (r, p, q),
            _ => return refused(None, Rejection::ModelInvalid, Vec::new()),
        };
        // The deployment is what an Azure path runs, whatever the body says.
        let model = from_path
            .or(from_query)
            .or_else(|| read.as_ref().and_then(|r| r.model.clone()));
        let stream = read.as_ref().is_some_and(|r| r.stream);
        let metered = Metered::default();
        let call = ModelCall {
            operation,
            model: model.clone(),
            stream,
            usage: metered.clone(),
        };
        let Some(model) = model else {
            return refused(Some(call), Rejection::ModelMissing, Vec::new());
        };
        let mut reports = Vec::new();
        let agent = grant.claims().and_then(|c| self.policies.agents.find(c));
        if let Err(r) = self.authorize(grant, agent, &head.method, &model, &mut reports) {
            return refused(Some(call), r, reports);
        }
        // A Realtime session's usage is in its WebSocket events: it is
        // decided on, not metered.
        let (Some(read), Some(body)) = (read, body) else {
            return Inspection {
                call: Some(Call::Model(call)),
                verdict: Ok(None),
                reports,
                hold: None,
            };
        };
        let output = match operation {
            Operation::Embeddings => 0,
            _ => read.output_cap.unwrap_or(self.metering.max_output_tokens),
        };
        let estimate = Estimate {
            input: request::prompt_estimate(body),
            output,
        };
        let reserved = match self.metering.reserve {
            true => estimate,
            false => Estimate {
                input: 0,
                output: 0,
            },
        };
        let asking = Asking {
            claims: grant.claims().map(|c| &**c),
            route: route.name(),
            model: Some(&model),
        };
        let admitted = match self
            .budgets
            .admit(&asking, reserved, std::time::SystemTime::now())
            .await
        {
            Ok(a) => a,
            Err((rejection, outcomes)) => {
                reports.extend(outcomes);
                return refused(Some(call), rejection, reports);
            }
        };
        reports.extend(admitted.outcomes);
        let strip = self.metering.inject_include_usage && read.needs_usage(operation);
        if strip {
            *body = read.with_usage(body);
        }
        let claims = grant.claims();
        let answer = ModelAnswer {
            closing: Closing {
                metered,
                reservation: admitted.reservation,
                estimate,
                observer: self.observer.clone(),
                route: route.name_arc().clone(),
                model,
                agent: agent.cloned(),
                app: claims.and_then(|c| c.client_app()).map(str::to_owned),
                answered: false,
            },
            strip,
            remaining: self
                .metering
                .remaining_header
                .clone()
                .zip(admitted.remaining),
        };
        Inspection {
            call: Some(Call::Model(call)),
            verdict: Ok(Some(Box::new(answer))),
            reports,
            hold: None,
        }
    }
}

fn refused(
    call: Option<ModelCall>,
    rejection: Rejection,
    reports: Vec<policy::PolicyOutcome>,
) -> Inspection {
    Inspection {
        call: call.map(Call::Model),
        verdict: Err(rejection),
        reports,
        hold: None,
    }
}

impl Inspect for ModelInspector {
    fn body_limit(&self, grant: &Grant, head: &Parts) -> Option<usize> {
        let route = grant.route();
        if !route.is_model_api() || head.method != Method::POST {
            return None;
        }
        match Operation::of(head.uri.path()) {
            None | Some(Operation::Realtime) => None,
            Some(_) => Some(route.max_body_bytes().map_or(DEFAULT_LIMIT, |max| {
                usize::try_from(max).unwrap_or(usize::MAX)
            })),
        }
    }

    fn inspect<'a>(
        &'a self,
        grant: &'a Grant,
        head: &'a mut Parts,
        body: Option<&'a mut Bytes>,
    ) -> Inspecting<'a> {
        if !grant.route().is_model_api() {
            return Box::pin(std::future::ready(Inspection::pass()));
        }
        Box::pin(self.inspect_model(grant, head, body))
    }
}
