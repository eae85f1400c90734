//! Named upstreams: each route's requests go to the upstream it names,
//! with that upstream's own `Host` rule and strip list.

use super::*;

#[tokio::test]
async fn each_route_reaches_the_upstream_it_names_with_that_upstreams_rules() {
    let idp = TestIdp::start().await;
    let (local, search) = (TestUpstream::start().await, TestUpstream::start().await);
    let routes = format!(
        r#"
[[upstreams]]
name = "search"
url = "http://{}"
host_header = "upstream"
strip_headers = ["X-Search-Key"]

[[routes]]
name = "search"
prefix = "/indexes"
scopes = ["Models.Invoke"]
upstream = "search"

[[routes]]
name = "models"
prefix = "/openai"
scopes = ["Models.Invoke"]
"#,
        search.addr
    );
    let gw = TestGateway::start(&config(local.addr, &oidc_issuer(&idp, ""), &routes)).await;
    let token = idp.token().sign();
    let call = |path: &str| {
        Request::get(gw.url(path))
            .header("authorization", format!("Bearer {token}"))
            .header("x-search-key", "the caller's")
            .body(Full::default())
            .unwrap()
    };

    // The default upstream: the client's Host, no strip of its own.
    let echo = echoed(send(call("/openai/models")).await).await;
    assert_eq!(echo["headers"]["host"][0], gw.addr.to_string());
    assert_eq!(echo["headers"]["x-search-key"][0], "the caller's");
    // The named one: its own Host, its own strip list.
    let echo = echoed(send(call("/indexes/docs/search")).await).await;
    assert_eq!(echo["headers"]["host"][0], search.addr.to_string());
    assert!(echo["headers"].get("x-search-key").is_none(), "{echo}");
    assert_eq!(echo["headers"]["x-forwarded-host"][0], gw.addr.to_string());

    let paths = |u: &TestUpstream| u.seen().into_iter().map(|s| s.path).collect::<Vec<_>>();
    assert_eq!(paths(&local), ["/openai/models"]);
    assert_eq!(paths(&search), ["/indexes/docs/search"]);
    // The record names where each request went.
    let records = gw.audit_records(2).await;
    let names: Vec<&str> = records
        .iter()
        .map(|r| r["upstream"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "search"]);
}
