//! Table-driven tests of the pure policy engine: no sockets, no runtime.
//! The fixtures and the route rules here; the agent registry and
//! conditional access beside.

mod agents;
mod conditional;

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::Method;
use serde_json::{Value, json};

use super::*;

const AGENT: &str = "a9e1c0de-0000-4a11-8a9e-000000000011";
const TENANT: &str = "aaaabbbb-0000-cccc-1111-dddd2222eeee";
/// 2026-11-26 (a Thursday) 10:00 UTC.
const THURSDAY_10_UTC: u64 = 1_795_687_200;

struct Fixture {
    routes: RouteTable,
    rules: Policies,
}

fn fixture(extra: &str) -> Fixture {
    let text = format!(
        r#"
[upstream]
url = "http://127.0.0.1:1"

[[issuers]]
name = "idp"
kind = "oidc"
issuer = "https://idp"
audiences = ["api"]

[[locations]]
name = "corp"
ranges = ["10.0.0.0/8"]

[[routes]]
name = "chat"
path = "/openai/deployments/{{deployment}}/chat/completions"
scopes = ["Models.Invoke"]
roles = ["Models.Invoke"]

[[routes]]
name = "admin"
prefix = "/admin"
roles = ["Admin"]
require = "all"
kinds = ["app"]

[[routes]]
name = "open"
prefix = "/open"
allow_without_permissions = true

{extra}
"#
    );
    let config = crate::config::parse(&text, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    Fixture {
        routes: RouteTable::compile(&config.routes).unwrap(),
        rules: Policies::compile(&config),
    }
}

fn user(extra: Value) -> Arc<VerifiedClaims> {
    let mut c = json!({"iss": "https://idp", "exp": 2_000_000_000u64, "iat": THURSDAY_10_UTC - 60, "tid": TENANT,
        "oid": "690222be-ff1a-4d56-abd1-7e4f7d38e474", "azp": "00001111-aaaa-2222-bbbb-3333cccc4444",
        "idtyp": "user", "scp": "Models.Invoke"});
    merge(&mut c, extra);
    Arc::new(VerifiedClaims::for_tests("idp", c))
}

fn agent(extra: Value) -> Arc<VerifiedClaims> {
    let mut c = json!({"iss": "https://idp", "exp": 2_000_000_000u64, "iat": THURSDAY_10_UTC - 60, "tid": TENANT,
        "oid": AGENT, "appid": AGENT, "idtyp": "app", "roles": ["Models.Invoke"],
        "xms_act_fct": "3 9 11", "xms_sub_fct": "9 3 11", "xms_par_app_azp": "b1e9c1a7-0000-4b00-8000-0000000000bb"});
    merge(&mut c, extra);
    Arc::new(VerifiedClaims::for_tests("idp", c))
}

fn merge(base: &mut Value, extra: Value) {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        for (k, v) in e {
            if v.is_null() {
                b.remove(&k);
            } else {
                b.insert(k, v);
            }
        }
    }
}

struct Req {
    method: Method,
    path: &'static str,
    ip: &'static str,
    at: u64,
}

fn req(path: &'static str) -> Req {
    Req {
        method: Method::POST,
        path,
        ip: "10.1.2.3",
        at: THURSDAY_10_UTC,
    }
}

fn decide(
    f: &Fixture,
    claims: Arc<VerifiedClaims>,
    r: &Req,
) -> (Result<(), Denial>, Vec<PolicyOutcome>) {
    let m = f.routes.find(&r.method, None, r.path).expect("a route");
    let facts = RequestFacts {
        method: &r.method,
        params: &m.params,
        client_ip: r.ip.parse::<IpAddr>().unwrap(),
        now: UNIX_EPOCH + Duration::from_secs(r.at),
    };
    let (result, outcomes) = authorize(&f.rules, m.route, claims, &facts);
    (result.map(|_| ()), outcomes)
}

const CHAT: &str = "/openai/deployments/gpt-4o/chat/completions";

type Claims = Arc<VerifiedClaims>;
type Verdict = Result<(), Denial>;
type Expected = (Verdict, Option<PolicyResult>);

#[test]
fn route_requirements() {
    let f = fixture("[identity]\nunregistered_agents = \"allow\"");
    let cases: Vec<(&str, Claims, &str, Verdict)> = vec![
        ("scope suffices", user(json!({})), CHAT, Ok(())),
        (
            "role suffices",
            user(json!({"scp": null, "idtyp": "app", "roles": ["Models.Invoke"]})),
            CHAT,
            Ok(()),
        ),
        (
            "missing scope",
            user(json!({"scp": "Other"})),
            CHAT,
            Err(Denial::InsufficientScope),
        ),
        (
            "no scp nor roles",
            user(json!({"scp": null})),
            CHAT,
            Err(Denial::NoPermissions),
        ),
        (
            "scp of only '/' is no permission",
            user(json!({"scp": "/"})),
            CHAT,
            Err(Denial::NoPermissions),
        ),
        (
            "route allows no permissions",
            user(json!({"scp": null})),
            "/open/x",
            Ok(()),
        ),
        (
            "kind not allowed",
            user(json!({})),
            "/admin/x",
            Err(Denial::KindNotAllowed),
        ),
        (
            "all-of roles: one missing",
            user(json!({"scp": null, "idtyp": "app", "roles": ["Reader"]})),
            "/admin/x",
            Err(Denial::InsufficientScope),
        ),
        (
            "all-of roles met",
            user(json!({"scp": null, "idtyp": "app", "roles": ["Admin"]})),
            "/admin/x",
            Ok(()),
        ),
        (
            "display claims never authorize",
            user(json!({"scp": null, "upn": "Models.Invoke", "name": "Admin"})),
            CHAT,
            Err(Denial::NoPermissions),
        ),
    ];
    for (name, claims, path, want) in cases {
        assert_eq!(decide(&f, claims, &req(path)).0, want, "{name}");
    }
}

#[test]
fn no_route_covers_a_path_no_route_names() {
    let f = fixture("");
    assert!(f.routes.find(&Method::GET, None, "/nothing").is_none());
}
