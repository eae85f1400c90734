//! `[routes.model]`, `[[budgets]]`, `[metering]` and `[budget_store]`.

use super::super::file::{BudgetFile, BudgetStoreFile, MeteringFile, ModelRouteFile};
use super::super::{
    BudgetConfig, BudgetKey, BudgetPeriod, BudgetStoreConfig, MeteringConfig, ModelRoute, OnExpiry,
    RedisStoreConfig, StoreFailure, TokenCount, TokenWeights,
};
use super::*;

/// The most budgets one request can meet: each is a counter to reserve in.
const MAX_BUDGETS: usize = 64;

pub(super) fn model_route(
    errs: &mut Errors,
    at: &str,
    f: ModelRouteFile,
    is_mcp: bool,
) -> Option<ModelRoute> {
    if is_mcp {
        errs.push(
            format!("{at}.model"),
            "a route is a model API or an MCP server, not both",
        );
    }
    if let Some(models) = &f.models {
        check_patterns(errs, || format!("{at}.model.models"), models, true);
    }
    let on_expiry = errs.choice(
        &format!("{at}.model.on_expiry"),
        f.on_expiry.as_deref(),
        &[("finish", true), ("cut", false)],
        true,
    );
    let default = match OnExpiry::default() {
        OnExpiry::Finish(d) => d,
        OnExpiry::Cut => Duration::ZERO,
    };
    let max_finish = errs.duration(
        &format!("{at}.model.max_finish"),
        f.max_finish.as_deref(),
        default,
    );
    if f.max_finish.is_some() && !on_expiry {
        errs.push(
            format!("{at}.model.max_finish"),
            "applies to on_expiry = \"finish\" only",
        );
    }
    let on_expiry = match on_expiry {
        true => OnExpiry::Finish(max_finish),
        false => OnExpiry::Cut,
    };
    Some(ModelRoute {
        models: f.models,
        on_expiry,
    })
}

/// Model names and patterns: non-empty, printable, no spaces; a list that
/// must allow something is not empty.
pub(super) fn check_patterns(
    errs: &mut Errors,
    at: impl Fn() -> String,
    values: &[String],
    non_empty: bool,
) {
    if non_empty && values.is_empty() {
        errs.push(at(), "must not be empty (omit it to allow every model)");
    }
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_graphic()) {
            errs.push(
                format!("{}[{i}]", at()),
                "must be a model name or pattern (printable, no spaces; '*' for any run of characters)",
            );
        }
    }
}

pub(super) fn budgets(
    errs: &mut Errors,
    files: Vec<BudgetFile>,
    routes: &[RouteConfig],
) -> Vec<BudgetConfig> {
    if files.len() > MAX_BUDGETS {
        errs.push(
            "budgets",
            format!("at most {MAX_BUDGETS} budgets (every one may be a counter per request)"),
        );
    }
    if !files.is_empty() && !routes.iter().any(|r| r.model.is_some()) {
        errs.push(
            "budgets",
            "no route is a model API: give the routes to budget a [routes.model] table",
        );
    }
    let mut names = HashSet::new();
    files
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            let at = |field: &str| format!("budgets[{i}].{field}");
            errs.check_name(at("name"), &f.name);
            if !names.insert(f.name.clone()) {
                errs.push(at("name"), format!("duplicate budget name {:?}", f.name));
            }
            let key = key(errs, &at("key"), &f.key);
            let (tokens, period) = match (f.tokens_per_minute, f.tokens, f.period.as_deref()) {
                (Some(n), None, None) => (n, BudgetPeriod::Minute),
                (None, Some(n), Some(p)) => {
                    let period = errs.choice(
                        &at("period"),
                        Some(p),
                        &[
                            ("minute", BudgetPeriod::Minute),
                            ("hour", BudgetPeriod::Hour),
                            ("day", BudgetPeriod::Day),
                            ("week", BudgetPeriod::Week),
                            ("month", BudgetPeriod::Month),
                        ],
                        BudgetPeriod::Minute,
                    );
                    (n, period)
                }
                (None, Some(_), None) => {
                    errs.push(
                        at("period"),
                        "required with tokens: \"hour\", \"day\", \"week\" or \"month\"",
                    );
                    (0, BudgetPeriod::Minute)
                }
                _ => {
                    errs.push(
                        format!("budgets[{i}]"),
                        "set tokens_per_minute, or tokens with a period, not both",
                    );
                    (0, BudgetPeriod::Minute)
                }
            };
            if f.tokens_per_minute.or(f.tokens) == Some(0) {
                errs.push(at("tokens"), "must be at least 1");
            }
            let count = match (f.count.as_deref().unwrap_or("total"), f.weights) {
                ("weighted", w) => {
                    let w = w.unwrap_or_default();
                    let mut weight = |name: &str, v: Option<f64>| {
                        let v = v.unwrap_or(1.0);
                        if !(v.is_finite() && v >= 0.0) {
                            errs.push(
                                at(&format!("weights.{name}")),
                                "must be a number, 0 or more",
                            );
                        }
                        v
                    };
                    TokenCount::Weighted(TokenWeights {
                        input: weight("input", w.input),
                        cached_input: weight("cached_input", w.cached_input),
                        output: weight("output", w.output),
                        reasoning: weight("reasoning", w.reasoning),
                    })
                }
                (other, w) => {
                    if w.is_some() {
                        errs.push(at("weights"), "only with count = \"weighted\"");
                    }
                    errs.choice(
                        &at("count"),
                        Some(other),
                        &[
                            ("input", TokenCount::Input),
                            ("output", TokenCount::Output),
                            ("total", TokenCount::Total),
                        ],
                        TokenCount::Total,
                    )
                }
            };
            if let Some(names) = &f.routes {
                for (j, n) in names.iter().enumerate() {
                    match routes.iter().find(|r| &r.name == n) {
                        None => errs.push(
                            format!("{}[{j}]", at("routes")),
                            format!("no route named {n:?}"),
                        ),
                        Some(r) if r.model.is_none() => errs.push(
                            format!("{}[{j}]", at("routes")),
                            format!(
                                "route {n:?} is not a model API (give it a [routes.model] table)"
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
            if let Some(models) = &f.models {
                check_patterns(errs, || at("models"), models, true);
            }
            if let Some(kinds) = &f.kinds {
                check_kinds(errs, &at("kinds"), kinds);
            }
            let report_only = errs.choice(
                &at("mode"),
                f.mode.as_deref(),
                &[("enforce", false), ("report", true)],
                false,
            );
            BudgetConfig {
                name: f.name,
                key,
                tokens,
                period,
                count,
                routes: f.routes,
                models: f.models,
                kinds: f.kinds,
                report_only,
            }
        })
        .collect()
}

/// Model lists that can never apply: no route is a model API.
pub(super) fn doctor(
    warnings: &mut Vec<ConfigError>,
    routes: &[RouteConfig],
    agents: &[Arc<AgentConfig>],
    policies: &[PolicyConfig],
) {
    if routes.iter().any(|r| r.model.is_some()) {
        return;
    }
    let mut warn = |path: String| {
        warnings.push(ConfigError {
            path,
            message: "no route is a model API (a [routes.model] table): this list never applies"
                .into(),
        })
    };
    for (i, a) in agents.iter().enumerate() {
        if a.models.is_some() {
            warn(format!("agents[{i}].models"));
        }
    }
    for (i, p) in policies.iter().enumerate() {
        if !p.conditions.models.is_empty() {
            warn(format!("policies[{i}].models"));
        }
    }
}

fn key(errs: &mut Errors, at: &str, parts: &[String]) -> Vec<BudgetKey> {
    if parts.is_empty() {
        let names: Vec<&str> = BudgetKey::NAMES.iter().map(|(n, _)| *n).collect();
        errs.push(
            at,
            format!(
                "must name what one counter is kept for, from: {}",
                names.join(", ")
            ),
        );
    }
    let mut key: Vec<BudgetKey> = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        match BudgetKey::NAMES.iter().find(|(n, _)| n == p) {
            Some((_, k)) if key.contains(k) => errs.push(format!("{at}[{i}]"), "named twice"),
            Some((_, k)) => key.push(*k),
            None => {
                let names: Vec<String> = BudgetKey::NAMES
                    .iter()
                    .map(|(n, _)| format!("{n:?}"))
                    .collect();
                errs.push(
                    format!("{at}[{i}]"),
                    format!(
                        "{p:?} is not one of {} (budgets key on the verified identity and the request, never on a header or an address)",
                        names.join(", ")
                    ),
                );
            }
        }
    }
    key
}

pub(super) fn metering(
    errs: &mut Errors,
    f: MeteringFile,
    identity_headers: &IdentityHeaders,
) -> MeteringConfig {
    let defaults = MeteringConfig::default();
    let reserve = errs.choice(
        "metering.reserve",
        f.reserve.as_deref(),
        &[("estimate", true), ("none", false)],
        defaults.reserve,
    );
    let max_output_tokens = f.max_output_tokens.unwrap_or(defaults.max_output_tokens);
    if max_output_tokens == 0 {
        errs.push("metering.max_output_tokens", "must be at least 1");
    }
    let remaining_header = f.remaining_header.and_then(|name| {
        let lower = name.to_ascii_lowercase();
        let identity = [
            &identity_headers.subject,
            &identity_headers.tenant,
            &identity_headers.client_app,
            &identity_headers.scopes,
            &identity_headers.roles,
        ];
        if lower.starts_with("x-ratelimit-") {
            // Why: Azure OpenAI's own headers; a client reads them to pace
            // itself against the upstream, and must see them as sent.
            errs.push(
                "metering.remaining_header",
                "x-ratelimit-* are the upstream's headers: choose another name, such as \"x-portcullis-remaining-tokens\"",
            );
            return None;
        }
        match HeaderName::from_str(&lower) {
            Ok(h) if identity.contains(&&h) => {
                errs.push("metering.remaining_header", "is an identity header");
                None
            }
            Ok(h) => Some(h),
            Err(_) => {
                errs.push(
                    "metering.remaining_header",
                    format!("{name:?} is not a header name"),
                );
                None
            }
        }
    });
    MeteringConfig {
        reserve,
        max_output_tokens,
        inject_include_usage: f
            .inject_include_usage
            .unwrap_or(defaults.inject_include_usage),
        remaining_header,
    }
}

pub(super) fn budget_store(errs: &mut Errors, f: Option<BudgetStoreFile>) -> BudgetStoreConfig {
    let Some(f) = f else {
        return BudgetStoreConfig::Local;
    };
    let redis = errs.choice(
        "budget_store.kind",
        f.kind.as_deref(),
        &[("local", false), ("redis", true)],
        false,
    );
    if !redis {
        for (name, set) in [
            ("url", f.url.is_some()),
            ("prefix", f.prefix.is_some()),
            ("timeout", f.timeout.is_some()),
            ("on_error", f.on_error.is_some()),
        ] {
            if set {
                errs.push(format!("budget_store.{name}"), "only with kind = \"redis\"");
            }
        }
        return BudgetStoreConfig::Local;
    }
    let url = f.url.unwrap_or_default();
    match url.split_once("://") {
        Some(("redis", rest)) if !rest.is_empty() => {}
        Some(("rediss", _)) => errs.push(
            "budget_store.url",
            "TLS to Redis (rediss://) is not supported: run Redis beside the gateway, or reach it through a TLS tunnel",
        ),
        _ => errs.push(
            "budget_store.url",
            "required: \"redis://host:port\" (with kind = \"redis\")",
        ),
    }
    let prefix = f.prefix.unwrap_or_else(|| "portcullis".into());
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
        errs.push("budget_store.prefix", "must be printable, without spaces");
    }
    let timeout = errs.duration(
        "budget_store.timeout",
        f.timeout.as_deref(),
        Duration::from_millis(250),
    );
    if timeout.is_zero() {
        errs.push("budget_store.timeout", "must be more than 0");
    }
    let on_error = errs.choice(
        "budget_store.on_error",
        f.on_error.as_deref(),
        &[
            ("deny", StoreFailure::Deny),
            ("allow", StoreFailure::Allow),
            ("local", StoreFailure::Local),
        ],
        StoreFailure::Deny,
    );
    BudgetStoreConfig::Redis(RedisStoreConfig {
        url,
        prefix,
        timeout,
        on_error,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::validate::testing::{UPSTREAM, errors, parse};
    use crate::config::{BudgetKey, BudgetPeriod, BudgetStoreConfig, StoreFailure, TokenCount};

    const ISSUER: &str = "[[issuers]]\nname = \"e\"\nkind = \"oidc\"\nissuer = \"https://issuer.example\"\njwks_uri = \"https://issuer.example/keys\"\naudiences = [\"api://x\"]\n";

    fn config(rest: &str) -> String {
        format!(
            "{UPSTREAM}{ISSUER}[[routes]]\nname = \"chat\"\nprefix = \"/openai/\"\nscopes = [\"Models.Invoke\"]\n[routes.model]\nmodels = [\"gpt-4o*\"]\n{rest}"
        )
    }

    #[test]
    fn budgets_read_their_window_key_count_and_scope() {
        let c = parse(&config(
            "[[budgets]]\nname = \"agent-tpm\"\nkey = [\"tid\", \"agent\"]\ntokens_per_minute = 20000\nroutes = [\"chat\"]\nmodels = [\"gpt-4o*\"]\n[[budgets]]\nname = \"monthly\"\nkey = [\"agent\"]\ntokens = 50_000_000\nperiod = \"month\"\ncount = \"weighted\"\nweights = { cached_input = 0.1, output = 4.0 }\nmode = \"report\"\n[budget_store]\nkind = \"redis\"\nurl = \"redis://127.0.0.1:6379\"\non_error = \"local\"\n",
        ))
        .unwrap();
        let [tpm, monthly] = &c.budgets[..] else {
            panic!("two budgets")
        };
        assert_eq!(tpm.key, vec![BudgetKey::Tenant, BudgetKey::Agent]);
        assert_eq!((tpm.tokens, tpm.period), (20_000, BudgetPeriod::Minute));
        assert_eq!(tpm.count, TokenCount::Total);
        assert!(!tpm.report_only);
        assert_eq!(
            (monthly.tokens, monthly.period),
            (50_000_000, BudgetPeriod::Month)
        );
        let TokenCount::Weighted(w) = monthly.count else {
            panic!("weighted")
        };
        assert_eq!(
            (w.input, w.cached_input, w.output, w.reasoning),
            (1.0, 0.1, 4.0, 1.0)
        );
        assert!(monthly.report_only);
        let BudgetStoreConfig::Redis(r) = &c.budget_store else {
            panic!("redis")
        };
        assert_eq!(r.on_error, StoreFailure::Local);
        assert_eq!(r.prefix, "portcullis");
        assert_eq!(
            c.routes[0].model.as_ref().unwrap().models.as_deref(),
            Some(&["gpt-4o*".to_owned()][..])
        );
    }

    #[test]
    fn budgets_that_would_count_the_wrong_thing_are_refused_with_their_paths() {
        let errs = errors(&config(
            "[[budgets]]\nname = \"a\"\nkey = [\"x-tenant-header\", \"agent\", \"agent\"]\ntokens_per_minute = 10\ntokens = 5\n[[budgets]]\nname = \"a\"\nkey = [\"oid\"]\ntokens = 10\nroutes = [\"nope\"]\ncount = \"total\"\nweights = { input = -1.0 }\n[metering]\nremaining_header = \"x-ratelimit-remaining-tokens\"\n[budget_store]\nkind = \"redis\"\nurl = \"rediss://cache:6380\"\n",
        ));
        for expected in [
            "budgets[0].key[0]: \"x-tenant-header\" is not one of",
            "budgets[0].key[2]: named twice",
            "budgets[0]: set tokens_per_minute, or tokens with a period, not both",
            "budgets[1].name: duplicate budget name",
            "budgets[1].period: required with tokens",
            "budgets[1].weights: only with count = \"weighted\"",
            "budgets[1].routes[0]: no route named \"nope\"",
            "metering.remaining_header: x-ratelimit-* are the upstream's headers",
            "budget_store.url: TLS to Redis",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(expected)),
                "{expected:?} not in {errs:#?}"
            );
        }
        // A route is not both kinds of API; budgets need a model route.
        let errs = errors(&format!(
            "{UPSTREAM}{ISSUER}[[routes]]\nname = \"m\"\nprefix = \"/mcp\"\n[routes.mcp]\nresource = \"http://127.0.0.1/mcp\"\n[routes.model]\n"
        ));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("routes[0].model: a route is a model API or an MCP server")),
            "{errs:#?}"
        );
        let errs = errors(&format!(
            "{UPSTREAM}{ISSUER}[[routes]]\nname = \"r\"\nprefix = \"/\"\n[[budgets]]\nname = \"b\"\nkey = [\"oid\"]\ntokens_per_minute = 5\n"
        ));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("budgets: no route is a model API")),
            "{errs:#?}"
        );
        // Model lists where no route is a model API are warned of.
        let c = parse(&format!(
            "{UPSTREAM}{ISSUER}[[routes]]\nname = \"r\"\nprefix = \"/\"\n[[agents]]\nid = \"a1\"\nname = \"A\"\nowner = \"o\"\nmodels = [\"gpt-4o\"]\n[[policies]]\nname = \"p\"\nmodels = [\"o3\"]\ngrant = \"block\"\n"
        ))
        .unwrap();
        let warned: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(warned.len(), 2, "{warned:#?}");
        assert!(
            warned[0].starts_with("agents[0].models: no route is a model API"),
            "{warned:#?}"
        );
    }
}
