//! The agent registry: agents as governed identities with an owner, a
//! lifecycle (enabled, expires) and their own reach (routes, methods, route
//! parameters such as model deployments, extra permissions).

use std::collections::HashMap;
use std::sync::Arc;

use super::{Denial, RequestFacts, Route};
use crate::config::AgentConfig;
use crate::token::VerifiedClaims;

/// One registered agent, as the audit record will name it: its entry in
/// the config, shared.
pub type Agent = AgentConfig;

/// Agents by id: an O(1) lookup whatever the registry's size.
pub struct AgentRegistry {
    by_id: HashMap<String, Arc<Agent>>,
    allow_unregistered: bool,
}

impl AgentRegistry {
    pub fn compile(agents: &[Arc<AgentConfig>], allow_unregistered: bool) -> Self {
        let by_id = agents.iter().map(|a| (a.id.clone(), a.clone())).collect();
        Self {
            by_id,
            allow_unregistered,
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether an agent without a registration is let through.
    pub fn allows_unregistered(&self) -> bool {
        self.allow_unregistered
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The registration of the agent that `claims` belong to, if any.
    pub fn find(&self, claims: &VerifiedClaims) -> Option<&Arc<Agent>> {
        let agent_id = claims.agent_id()?;
        self.by_id
            .get(agent_id)
            .or_else(|| self.by_id.get(&agent_id.to_ascii_lowercase()))
            // Why: an agent is single-tenant; the same id from another
            // tenant is another agent.
            .filter(|a| a.tenant.as_deref().is_none_or(|t| claims.tid() == Some(t)))
    }

    /// Checks an agent's token against its registration. Users and apps pass
    /// untouched (`Ok(None)`); an unregistered agent passes only when the
    /// config allows it.
    pub fn check(
        &self,
        claims: &VerifiedClaims,
        route: &Route,
        facts: &RequestFacts<'_>,
    ) -> Result<Option<Arc<Agent>>, Denial> {
        if claims.agent_id().is_none() {
            return Ok(None);
        }
        let Some(agent) = self.find(claims) else {
            return if self.allow_unregistered {
                Ok(None)
            } else {
                Err(Denial::AgentUnregistered)
            };
        };
        if !agent.enabled {
            return Err(Denial::AgentDisabled);
        }
        if agent.expires.is_some_and(|e| e <= facts.now) {
            return Err(Denial::AgentExpired);
        }
        let route_ok = agent
            .routes
            .as_ref()
            .is_none_or(|rs| rs.iter().any(|r| r == route.name()));
        let method_ok = agent
            .methods
            .as_ref()
            .is_none_or(|ms| ms.contains(facts.method));
        // A parameter restriction binds only routes that have the parameter.
        let params_ok = agent.params.iter().all(|(name, allowed)| {
            facts
                .param(name)
                .is_none_or(|v| allowed.iter().any(|a| a == v))
        });
        if !(route_ok && method_ok && params_ok) {
            return Err(Denial::AgentNotAllowed);
        }
        let has = |p: &String| claims.scopes().contains(p) || claims.roles().contains(p);
        if !agent.permissions.iter().all(has) {
            return Err(Denial::AgentPermissionMissing);
        }
        Ok(Some(agent.clone()))
    }
}
