//! The agent registry: who may act, where, and with what.

use super::*;

#[test]
fn agent_registry() {
    let registry = format!(
        r#"
[[agents]]
id = "{AGENT}"
name = "Research agent"
owner = "ada@contoso.example"
tenant = "{TENANT}"
expires = "2027-01-31T00:00:00Z"
routes = ["chat"]
methods = ["POST"]
params = {{ deployment = ["gpt-4o-mini"] }}

[[agents]]
id = "b0000000-0000-4000-8000-000000000001"
name = "Retired"
owner = "ops"
enabled = false

[[agents]]
id = "b0000000-0000-4000-8000-000000000002"
name = "Expired"
owner = "ops"
expires = "2026-01-01T00:00:00Z"

[[agents]]
id = "b0000000-0000-4000-8000-000000000003"
name = "Needs a permission"
owner = "ops"
permissions = ["Agents.Run"]
"#
    );
    let f = fixture(&registry);
    let mini = "/openai/deployments/gpt-4o-mini/chat/completions";
    let other = |id: &str| agent(json!({"appid": id, "oid": id}));
    let cases: Vec<(&str, Claims, Req, Verdict)> = vec![
        ("allowed deployment", agent(json!({})), req(mini), Ok(())),
        (
            "other deployment",
            agent(json!({})),
            req(CHAT),
            Err(Denial::AgentNotAllowed),
        ),
        (
            "method outside the registration",
            agent(json!({})),
            Req {
                method: Method::GET,
                ..req(mini)
            },
            Err(Denial::AgentNotAllowed),
        ),
        (
            "route outside the registration",
            agent(json!({"roles": ["Models.Invoke"]})),
            req("/open/x"),
            Err(Denial::AgentNotAllowed),
        ),
        (
            "after expiry",
            agent(json!({})),
            Req {
                at: 1_801_440_000,
                ..req(mini)
            },
            Err(Denial::AgentExpired),
        ),
        (
            "same id, other tenant",
            agent(json!({"tid": "99998888-7777-6666-5555-444433332222"})),
            req(mini),
            Err(Denial::AgentUnregistered),
        ),
        (
            "disabled",
            other("b0000000-0000-4000-8000-000000000001"),
            req(CHAT),
            Err(Denial::AgentDisabled),
        ),
        (
            "expired",
            other("b0000000-0000-4000-8000-000000000002"),
            req(CHAT),
            Err(Denial::AgentExpired),
        ),
        (
            "missing agent permission",
            other("b0000000-0000-4000-8000-000000000003"),
            req(CHAT),
            Err(Denial::AgentPermissionMissing),
        ),
        (
            "has agent permission",
            agent(
                json!({"appid": "b0000000-0000-4000-8000-000000000003", "roles": ["Models.Invoke", "Agents.Run"]}),
            ),
            req(CHAT),
            Ok(()),
        ),
        (
            "unregistered agent",
            other("c0000000-0000-4000-8000-00000000000c"),
            req(CHAT),
            Err(Denial::AgentUnregistered),
        ),
        (
            "a plain app is not an agent",
            user(
                json!({"scp": null, "idtyp": "app", "roles": ["Models.Invoke"], "appid": "c0000000-0000-4000-8000-00000000000c"}),
            ),
            req(CHAT),
            Ok(()),
        ),
        (
            "agent user is governed too",
            user(json!({"azp": AGENT, "xms_sub_fct": "1 13", "xms_act_fct": "11"})),
            req(mini),
            Ok(()),
        ),
        (
            "OBO agent is governed by its agent id",
            user(json!({"azp": AGENT, "xms_act_fct": "11 9"})),
            req(CHAT),
            Err(Denial::AgentNotAllowed),
        ),
    ];
    for (name, claims, r, want) in cases {
        assert_eq!(decide(&f, claims, &r).0, want, "{name}");
    }
    // Unregistered agents can be allowed explicitly.
    let f = fixture("[identity]\nunregistered_agents = \"allow\"");
    assert_eq!(
        decide(
            &f,
            other("c0000000-0000-4000-8000-00000000000c"),
            &req(CHAT)
        )
        .0,
        Ok(())
    );
}
