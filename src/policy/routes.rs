//! The route table: config routes compiled into a `matchit` tree.

use std::collections::HashMap;
use std::sync::Arc;

use http::Method;
use wildmatch::WildMatch;

use crate::config::{ConfigError, McpRoute, RouteConfig, RouteMatch};
use crate::token::IdentityKind;

const ALL_KINDS: u8 = 0b1111;

pub(crate) fn kind_bit(kind: IdentityKind) -> u8 {
    match kind {
        IdentityKind::User => 1,
        IdentityKind::App => 2,
        IdentityKind::Agent => 4,
        IdentityKind::AgentUser => 8,
    }
}

/// Kind names (validated at load) → bit mask; unknown names add nothing.
pub(crate) fn kind_mask(names: &[String]) -> u8 {
    names
        .iter()
        .filter_map(|n| IdentityKind::parse(n))
        .fold(0, |m, k| m | kind_bit(k))
}

/// One compiled route. Shared as `Arc<Route>` by grants and metrics.
#[derive(Debug)]
pub struct Route {
    name: Arc<str>,
    methods: Option<Vec<Method>>,
    scopes: Vec<String>,
    roles: Vec<String>,
    issuers: Option<Vec<String>>,
    public: bool,
    forward_authorization: bool,
    host: Option<String>,
    /// Bit per allowed `IdentityKind`.
    kinds: u8,
    require_all: bool,
    allow_without_permissions: bool,
    /// `scope="…"` for the insufficient-scope challenge, built once.
    required_scope: String,
    max_body_bytes: Option<u64>,
    upgrades: Vec<String>,
    allow_matrix_params: bool,
    /// An MCP route's resource-server settings.
    mcp: Option<McpRoute>,
    /// Model patterns (lower case) a model API route serves; `Some` on
    /// every model API route (empty: any model).
    models: Option<Vec<WildMatch>>,
    /// Where its requests go: an index into the snapshot's upstreams.
    upstream: usize,
    /// The longest an exchange through it may stay open.
    max_stream_duration: Option<std::time::Duration>,
    /// What a model answer still streaming at its deadline does.
    on_expiry: Option<crate::config::OnExpiry>,
}

impl Route {
    fn compile(cfg: &RouteConfig) -> Self {
        // Why: an MCP client asks for what the challenge names, in the form
        // its authorization server takes (Entra: full-form scopes).
        let required = match &cfg.mcp {
            Some(mcp) if !mcp.scopes_supported.is_empty() => &mcp.scopes_supported,
            _ if cfg.scopes.is_empty() => &cfg.roles,
            _ => &cfg.scopes,
        };
        Self {
            name: Arc::from(cfg.name.as_str()),
            methods: cfg.methods.clone(),
            scopes: cfg.scopes.clone(),
            roles: cfg.roles.clone(),
            issuers: cfg.issuers.clone(),
            public: cfg.public,
            forward_authorization: cfg.forward_authorization,
            max_body_bytes: cfg.max_body_bytes,
            host: cfg.host.clone(),
            kinds: cfg.kinds.as_deref().map_or(ALL_KINDS, kind_mask),
            require_all: cfg.require_all,
            allow_without_permissions: cfg.allow_without_permissions,
            required_scope: required.join(" "),
            upgrades: cfg.upgrades.clone(),
            allow_matrix_params: cfg.allow_matrix_params,
            mcp: cfg.mcp.clone(),
            upstream: cfg.upstream,
            max_stream_duration: cfg.max_stream_duration,
            on_expiry: cfg.model.as_ref().map(|m| m.on_expiry),
            models: cfg.model.as_ref().map(|m| {
                m.models
                    .iter()
                    .flatten()
                    .map(|p| WildMatch::new(&p.to_ascii_lowercase()))
                    .collect()
            }),
        }
    }

    /// Where its requests go: an index into the snapshot's upstreams.
    pub fn upstream(&self) -> usize {
        self.upstream
    }

    /// The longest an exchange through it may stay open.
    pub fn max_stream_duration(&self) -> Option<std::time::Duration> {
        self.max_stream_duration
    }

    /// How long a model answer may run on past its deadline: `None` on a
    /// route that is not a model API, or that cuts at once.
    pub fn finish_bound(&self) -> Option<std::time::Duration> {
        match self.on_expiry? {
            crate::config::OnExpiry::Finish(d) => Some(d),
            crate::config::OnExpiry::Cut => None,
        }
    }

    /// Whether the route is a model API.
    pub fn is_model_api(&self) -> bool {
        self.models.is_some()
    }

    /// Whether a model API route serves `model` (lower case).
    pub fn serves_model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_some_and(|ms| ms.is_empty() || ms.iter().any(|w| w.matches(model)))
    }

    /// The resource-server settings of an MCP route.
    pub fn mcp(&self) -> Option<&McpRoute> {
        self.mcp.as_ref()
    }

    /// Whether a request with these headers may use the route by its
    /// `Origin`: always on a route that is not an MCP route, and without an
    /// `Origin` (a client that is not a browser page); else when the
    /// origin is allowed.
    pub fn allows_origin(&self, headers: &http::HeaderMap) -> bool {
        let Some(mcp) = &self.mcp else { return true };
        headers.get(http::header::ORIGIN).is_none_or(|origin| {
            origin.to_str().is_ok_and(|o| {
                mcp.allowed_origins
                    .iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(o))
            })
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn name_arc(&self) -> &Arc<str> {
        &self.name
    }
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }
    pub fn roles(&self) -> &[String] {
        &self.roles
    }
    pub fn issuers(&self) -> Option<&[String]> {
        self.issuers.as_deref()
    }
    pub fn is_public(&self) -> bool {
        self.public
    }
    pub fn forwards_authorization(&self) -> bool {
        self.forward_authorization
    }
    /// The request body's size limit, if the route sets one.
    pub fn max_body_bytes(&self) -> Option<u64> {
        self.max_body_bytes
    }
    /// Whether a client may switch to `protocol` (an `Upgrade` name,
    /// without its version) through this route.
    pub fn allows_upgrade(&self, protocol: &str) -> bool {
        self.upgrades
            .iter()
            .any(|u| u.eq_ignore_ascii_case(protocol))
    }
    /// Whether path segments may carry `;` parameters.
    pub fn allows_matrix_params(&self) -> bool {
        self.allow_matrix_params
    }
    /// The space-separated scopes (or roles) named in an insufficient-scope
    /// challenge; validated at load to be quoted-string safe.
    pub fn required_scope(&self) -> &str {
        &self.required_scope
    }

    /// Whether tokens of this identity kind may use the route.
    pub fn allows_kind(&self, kind: IdentityKind) -> bool {
        self.kinds & kind_bit(kind) != 0
    }
    /// Scopes and roles are all required (true) or any one suffices.
    pub fn requires_all(&self) -> bool {
        self.require_all
    }
    pub fn allows_without_permissions(&self) -> bool {
        self.allow_without_permissions
    }

    fn accepts(&self, method: &Method, host: Option<&str>) -> bool {
        self.methods.as_ref().is_none_or(|ms| ms.contains(method))
            && self
                .host
                .as_deref()
                .is_none_or(|h| host.is_some_and(|r| r.eq_ignore_ascii_case(h)))
    }
}

/// A matched route and its path parameters.
pub struct RouteMatchResult<'a> {
    pub route: &'a Arc<Route>,
    pub params: Vec<(&'a str, &'a str)>,
}

/// Routes by path (most specific template first, as `matchit` orders them),
/// then by method in config order.
pub struct RouteTable {
    router: matchit::Router<Vec<Arc<Route>>>,
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Compiles the routes; template errors and conflicts are reported with
    /// the route's path in the config.
    pub fn compile(routes: &[RouteConfig]) -> Result<Self, Vec<ConfigError>> {
        // Pattern → the routes (with their config index) sharing it.
        type Slot = (String, Vec<(usize, Arc<Route>)>);
        let mut by_pattern: Vec<Slot> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut compiled = Vec::with_capacity(routes.len());
        for (i, cfg) in routes.iter().enumerate() {
            let route = Arc::new(Route::compile(cfg));
            compiled.push(route.clone());
            for pattern in patterns(&cfg.matcher) {
                let slot = *index.entry(pattern.clone()).or_insert_with(|| {
                    by_pattern.push((pattern, Vec::new()));
                    by_pattern.len() - 1
                });
                by_pattern[slot].1.push((i, route.clone()));
            }
        }
        let mut router = matchit::Router::new();
        let mut errors = Vec::new();
        for (pattern, entries) in by_pattern {
            let first = entries.first().map_or(0, |(i, _)| *i);
            let routes = entries.into_iter().map(|(_, r)| r).collect();
            if let Err(e) = router.insert(pattern.clone(), routes) {
                errors.push(ConfigError {
                    path: format!("routes[{first}].path"),
                    message: format!("{pattern:?}: {e}"),
                });
            }
        }
        if errors.is_empty() {
            Ok(Self {
                router,
                routes: compiled,
            })
        } else {
            Err(errors)
        }
    }

    /// Every route, in config order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route for a normalized path, method and host (without port).
    pub fn find<'a>(
        &'a self,
        method: &Method,
        host: Option<&str>,
        path: &'a str,
    ) -> Option<RouteMatchResult<'a>> {
        let matched = self.router.at(path).ok()?;
        let route = matched.value.iter().find(|r| r.accepts(method, host))?;
        let params = matched
            .params
            .iter()
            .filter(|(k, _)| !k.starts_with("__"))
            .collect();
        Some(RouteMatchResult { route, params })
    }
}

/// The `matchit` patterns for one route: a template as written, a prefix as
/// itself plus everything below it.
fn patterns(matcher: &RouteMatch) -> Vec<String> {
    match matcher {
        RouteMatch::Template(t) => vec![t.clone()],
        RouteMatch::Prefix(p) => {
            let base = p.trim_end_matches('/');
            if base.is_empty() {
                vec!["/".into(), "/{*__rest}".into()]
            } else {
                vec![base.to_owned(), format!("{base}/{{*__rest}}")]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, m: RouteMatch, methods: Option<&[&str]>) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            matcher: m,
            methods: methods.map(|ms| {
                ms.iter()
                    .map(|m| Method::from_bytes(m.as_bytes()).unwrap())
                    .collect()
            }),
            scopes: vec![],
            roles: vec![],
            issuers: None,
            public: false,
            forward_authorization: false,
            host: None,
            kinds: None,
            require_all: false,
            allow_without_permissions: false,
            max_body_bytes: None,
            upgrades: vec!["websocket".to_owned()],
            allow_matrix_params: false,
            mcp: None,
            model: None,
            upstream: 0,
            max_stream_duration: None,
        }
    }

    impl RouteTable {
        fn find_any_host<'a>(&'a self, m: &Method, path: &'a str) -> Option<RouteMatchResult<'a>> {
            self.find(m, None, path)
        }
    }

    #[test]
    fn hosts_pick_between_routes_on_one_path() {
        let mut a = route("a", RouteMatch::Prefix("/".into()), None);
        a.host = Some("a.example".into());
        let b = route("b", RouteMatch::Prefix("/".into()), None);
        let table = RouteTable::compile(&[a, b]).unwrap();
        assert_eq!(
            table
                .find(&Method::GET, Some("A.example"), "/x")
                .unwrap()
                .route
                .name(),
            "a"
        );
        assert_eq!(
            table
                .find(&Method::GET, Some("b.example"), "/x")
                .unwrap()
                .route
                .name(),
            "b"
        );
        assert_eq!(
            table.find(&Method::GET, None, "/x").unwrap().route.name(),
            "b"
        );
    }

    #[test]
    fn templates_prefixes_and_methods() {
        let table = RouteTable::compile(&[
            route(
                "chat",
                RouteMatch::Template("/openai/deployments/{deployment}/chat/completions".into()),
                Some(&["POST"]),
            ),
            route("openai", RouteMatch::Prefix("/openai".into()), None),
            route(
                "health-get",
                RouteMatch::Template("/health".into()),
                Some(&["GET"]),
            ),
            route(
                "health-head",
                RouteMatch::Template("/health".into()),
                Some(&["HEAD"]),
            ),
        ])
        .unwrap();
        let m = table
            .find_any_host(&Method::POST, "/openai/deployments/gpt4o/chat/completions")
            .unwrap();
        assert_eq!(m.route.name(), "chat");
        assert_eq!(m.params, vec![("deployment", "gpt4o")]);
        // A GET falls through to no route at this exact path: methods are per route.
        assert!(
            table
                .find_any_host(&Method::GET, "/openai/deployments/gpt4o/chat/completions")
                .is_none()
        );
        assert_eq!(
            table
                .find_any_host(&Method::GET, "/openai/files")
                .unwrap()
                .route
                .name(),
            "openai"
        );
        assert_eq!(
            table
                .find_any_host(&Method::GET, "/openai")
                .unwrap()
                .route
                .name(),
            "openai"
        );
        assert!(table.find_any_host(&Method::GET, "/openaiX").is_none());
        assert_eq!(
            table
                .find_any_host(&Method::HEAD, "/health")
                .unwrap()
                .route
                .name(),
            "health-head"
        );
        assert!(table.find_any_host(&Method::GET, "/other").is_none());
    }

    #[test]
    fn root_prefix_is_a_catch_all() {
        let table =
            RouteTable::compile(&[route("all", RouteMatch::Prefix("/".into()), None)]).unwrap();
        assert!(table.find_any_host(&Method::GET, "/").is_some());
        assert!(table.find_any_host(&Method::GET, "/x/y").is_some());
    }

    #[test]
    fn conflicting_templates_are_config_errors_with_paths() {
        let errs = RouteTable::compile(&[
            route("a", RouteMatch::Template("/a/{x}".into()), None),
            route("b", RouteMatch::Template("/a/{y}".into()), None),
        ])
        .err()
        .unwrap();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].path, "routes[1].path");
    }
}
