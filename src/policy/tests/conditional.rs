//! Conditional access: where a policy applies, what it requires, and how
//! results combine.

use super::*;

fn policy(body: &str) -> Fixture {
    fixture(&format!(
        "[identity]\nunregistered_agents = \"allow\"\n[[policies]]\nname = \"p\"\n{body}\n"
    ))
}

fn outcome(
    f: &Fixture,
    claims: Arc<VerifiedClaims>,
    r: &Req,
) -> (Result<(), Denial>, Option<PolicyResult>) {
    let (v, o) = decide(f, claims, r);
    (v, o.iter().find(|x| &*x.policy == "p").map(|x| x.result))
}

fn blocked() -> Result<(), Denial> {
    Err(Denial::PolicyBlock(Arc::from("p")))
}

#[test]
fn conditions_decide_where_a_policy_applies() {
    use PolicyResult::*;
    let include_agents = format!("grant = \"block\"\ninclude_agents = [\"{AGENT}\"]");
    let exclude_tenants = format!("grant = \"block\"\nexclude_tenants = [\"{TENANT}\"]");
    let cases: Vec<(&str, &str, Claims, Req, Expected)> = vec![
        (
            "block everyone",
            "grant = \"block\"",
            user(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "kind included",
            "grant = \"block\"\ninclude_kinds = [\"agent\"]",
            agent(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "kind not included",
            "grant = \"block\"\ninclude_kinds = [\"agent\"]",
            user(json!({})),
            req(CHAT),
            (Ok(()), None),
        ),
        (
            "exclude beats include",
            "grant = \"block\"\ninclude_kinds = [\"agent\"]\nexclude_agents = [\"A9E1C0DE-0000-4A11-8A9E-000000000011\"]",
            agent(json!({})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "include agents",
            &include_agents,
            agent(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "include client apps",
            "grant = \"block\"\ninclude_client_apps = [\"00001111-aaaa-2222-bbbb-3333cccc4444\"]",
            user(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "exclude tenants",
            &exclude_tenants,
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "include roles",
            "grant = \"block\"\ninclude_roles = [\"Models.Invoke\"]",
            agent(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "include wids",
            "grant = \"block\"\ninclude_wids = [\"62e90394-69f5-4237-9190-012177145e10\"]",
            user(json!({"wids": ["62e90394-69f5-4237-9190-012177145e10"]})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "include groups",
            "grant = \"block\"\ninclude_groups = [\"5d1c7a0e-1f2b-4c3d-9e8f-a1b2c3d4e5f6\"]",
            user(json!({"groups": ["5d1c7a0e-1f2b-4c3d-9e8f-a1b2c3d4e5f6"]})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "groups overage denies",
            "grant = \"block\"\nexclude_groups = [\"5d1c7a0e-1f2b-4c3d-9e8f-a1b2c3d4e5f6\"]",
            user(json!({"_claim_names": {"groups": "src1"}})),
            req(CHAT),
            (Err(Denial::GroupsOverage), Some(Failure)),
        ),
        (
            "route included elsewhere",
            "grant = \"block\"\ninclude_routes = [\"admin\"]",
            user(json!({})),
            req(CHAT),
            (Ok(()), None),
        ),
        (
            "route excluded",
            "grant = \"block\"\nexclude_routes = [\"chat\"]",
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "outside the corp network",
            "grant = \"block\"\nexclude_locations = [\"corp\"]",
            user(json!({})),
            Req {
                ip: "203.0.113.9",
                ..req(CHAT)
            },
            (blocked(), Some(Failure)),
        ),
        (
            "inside the corp network",
            "grant = \"block\"\nexclude_locations = [\"corp\"]",
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "location included",
            "grant = \"block\"\nlocations = [\"corp\"]",
            user(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "method condition",
            "grant = \"block\"\nmethods = [\"DELETE\"]",
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "param condition",
            "grant = \"block\"\nparams = { deployment = [\"gpt-4o\"] }",
            user(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "param condition elsewhere",
            "grant = \"block\"\nparams = { deployment = [\"o3\"] }",
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "weekend only, on a Thursday",
            "grant = \"block\"\ndays = [\"sat\", \"sun\"]",
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "Thursday",
            "grant = \"block\"\ndays = [\"thu\"]",
            user(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "outside hours 08-09 UTC",
            "grant = \"block\"\nhours = \"08:00-09:00\"",
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "inside hours with offset",
            "grant = \"block\"\nhours = \"11:00-12:00\"\nutc_offset = \"+01:00\"",
            user(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "named zone: 10:00 UTC is 11:00 in Paris in November",
            "grant = \"block\"\nhours = \"11:00-12:00\"\ntimezone = \"Europe/Paris\"",
            user(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "named zone: not 10:00 in Tokyo",
            "grant = \"block\"\nhours = \"10:00-11:00\"\ntimezone = \"Asia/Tokyo\"",
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "hours wrapping midnight",
            "grant = \"block\"\nhours = \"22:00-11:00\"",
            user(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "old token",
            "grant = \"block\"\ntoken_older_than = \"30s\"",
            user(json!({})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "iat slightly in the future is fresh, not old",
            "grant = \"block\"\ntoken_older_than = \"1h\"",
            user(json!({"iat": THURSDAY_10_UTC + 30})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "fresh token",
            "grant = \"block\"\ntoken_older_than = \"1h\"",
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "auth_time counts over iat",
            "grant = \"block\"\ntoken_older_than = \"1h\"",
            user(json!({"auth_time": THURSDAY_10_UTC - 7200})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "client capability cp1",
            "grant = \"block\"\nclient_capabilities = [\"cp1\"]",
            user(json!({"xms_cc": ["CP1"]})),
            req(CHAT),
            (blocked(), Some(Failure)),
        ),
        (
            "no client capability",
            "grant = \"block\"\nclient_capabilities = [\"cp1\"]",
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(NotApplied)),
        ),
        (
            "report-only block never enforces",
            "grant = \"block\"\nstate = \"report_only\"",
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(ReportOnlyFailure)),
        ),
        (
            "report-only not applied",
            "grant = \"block\"\nstate = \"report_only\"\nmethods = [\"GET\"]",
            user(json!({})),
            req(CHAT),
            (Ok(()), Some(ReportOnlyNotApplied)),
        ),
        (
            "off policies are not evaluated",
            "grant = \"block\"\nstate = \"off\"",
            user(json!({})),
            req(CHAT),
            (Ok(()), None),
        ),
    ];
    for (name, body, claims, r, want) in cases {
        assert_eq!(outcome(&policy(body), claims, &r), want, "{name}");
    }
}

#[test]
fn require_grants() {
    use PolicyResult::*;
    let unmet = |challenge: bool| {
        Err(Denial::PolicyUnmet {
            policy: Arc::from("p"),
            claims_challenge: challenge.then(|| Arc::from("p")),
        })
    };
    let cases: Vec<(&str, &str, Claims, Expected)> = vec![
        (
            "scopes met",
            "grant = \"require\"\nrequire_scopes = [\"Models.Invoke\"]",
            user(json!({})),
            (Ok(()), Some(Success)),
        ),
        (
            "scopes unmet",
            "grant = \"require\"\nrequire_scopes = [\"Models.Invoke\", \"Extra\"]",
            user(json!({})),
            (unmet(false), Some(Failure)),
        ),
        (
            "mfa met",
            "grant = \"require\"\nrequire_mfa = true",
            user(json!({"amr": ["pwd", "mfa"]})),
            (Ok(()), Some(Success)),
        ),
        (
            "mfa unmet",
            "grant = \"require\"\nrequire_mfa = true",
            user(json!({"amr": ["pwd"]})),
            (unmet(false), Some(Failure)),
        ),
        (
            "auth context met",
            "grant = \"require\"\nrequire_auth_context = \"c1\"",
            user(json!({"acrs": ["c1"]})),
            (Ok(()), Some(Success)),
        ),
        (
            "auth context unmet, cp1 client gets a claims challenge",
            "grant = \"require\"\nrequire_auth_context = \"c1\"",
            user(json!({"xms_cc": ["cp1"]})),
            (unmet(true), Some(Failure)),
        ),
        (
            "auth context unmet, other clients a plain denial",
            "grant = \"require\"\nrequire_auth_context = \"c1\"",
            user(json!({})),
            (unmet(false), Some(Failure)),
        ),
        (
            "acr met",
            "grant = \"require\"\nrequire_acr = [\"1\"]",
            user(json!({"acr": "1"})),
            (Ok(()), Some(Success)),
        ),
        (
            "acr unmet",
            "grant = \"require\"\nrequire_acr = [\"1\"]",
            user(json!({"acr": "0"})),
            (unmet(false), Some(Failure)),
        ),
        (
            "report-only requirement",
            "grant = \"require\"\nrequire_mfa = true\nstate = \"report_only\"",
            user(json!({})),
            (Ok(()), Some(ReportOnlyFailure)),
        ),
    ];
    for (name, body, claims, want) in cases {
        assert_eq!(outcome(&policy(body), claims, &req(CHAT)), want, "{name}");
    }
}

#[test]
fn any_block_wins_and_every_result_is_recorded() {
    let f = fixture(
        r#"
[[policies]]
name = "needs-mfa"
grant = "require"
require_mfa = true

[[policies]]
name = "watch"
state = "report_only"
grant = "block"

[[policies]]
name = "chat-only-block"
include_routes = ["chat"]
grant = "block"
"#,
    );
    let (verdict, outcomes) = decide(&f, user(json!({})), &req(CHAT));
    assert_eq!(
        verdict,
        Err(Denial::PolicyBlock(Arc::from("chat-only-block")))
    );
    let results: Vec<(&str, PolicyResult)> =
        outcomes.iter().map(|o| (&*o.policy, o.result)).collect();
    assert_eq!(
        results,
        vec![
            ("needs-mfa", PolicyResult::Failure),
            ("watch", PolicyResult::ReportOnlyFailure),
            ("chat-only-block", PolicyResult::Failure),
        ]
    );
    // The route-specific policy is not even looked at elsewhere.
    let (_, outcomes) = decide(&f, user(json!({"scp": null})), &req("/open/x"));
    assert!(outcomes.iter().all(|o| &*o.policy != "chat-only-block"));
}

#[test]
fn claims_challenges_are_base64_json_rooted_at_access_token() {
    let f = policy("grant = \"require\"\nrequire_auth_context = \"c1\"");
    let (name, claims) = f.rules.policies.claims_challenges().next().unwrap();
    assert_eq!(&**name, "p");
    // Microsoft's documented example value for context c1.
    assert_eq!(
        &**claims,
        "eyJhY2Nlc3NfdG9rZW4iOnsiYWNycyI6eyJlc3NlbnRpYWwiOnRydWUsInZhbHVlIjoiYzEifX19"
    );
    let _ = SystemTime::now();
}
