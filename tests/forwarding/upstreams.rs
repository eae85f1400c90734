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

/// An HTTP/1 client sends one request at a time, so its connection holds one
/// upstream connection for all its requests; when it closes, the next client
/// connection takes that upstream connection over. Two client connections at
/// once hold one each.
#[tokio::test]
async fn an_http1_client_connection_holds_one_upstream_connection_and_passes_it_on() {
    let (idp, upstream, gw) = default_stack().await;
    let token = idp.token().sign();
    let connect = || async {
        let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        (sender, tokio::spawn(conn))
    };
    let exchange = |sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>| {
        let request = Request::get("/x")
            .header("host", "gateway")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let sent = sender.send_request(request);
        async move {
            let resp = sent.await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            resp.into_body().collect().await.unwrap();
        }
    };
    let open = "gateway_open_connections{protocol=\"http1\"}";
    for client_connection in 1..=2 {
        let (mut sender, conn) = connect().await;
        for _ in 0..5 {
            exchange(&mut sender).await;
        }
        drop(sender);
        conn.await.unwrap().unwrap();
        while gw.metric(open).await != 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            upstream.connections(),
            1,
            "after client connection {client_connection}"
        );
    }

    // In turn, never at once: a shared pool would serve them all on one.
    let ((mut one, _one), (mut two, _two)) = (connect().await, connect().await);
    for _ in 0..3 {
        exchange(&mut one).await;
        exchange(&mut two).await;
    }
    let on: Vec<usize> = upstream.seen()[10..].iter().map(|s| s.connection).collect();
    assert_eq!(on[0], 0, "the idle one is taken over");
    assert_eq!(on, [0, 1, 0, 1, 0, 1], "each client connection on its own");
}

/// An upstream connection idle for `pool_idle_timeout` is not used again,
/// though its client connection is still open: the next request gets a new
/// one.
#[tokio::test]
async fn a_held_connection_idle_past_the_pool_idle_timeout_is_not_used_again() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = config_to(
        &format!(
            "url = \"http://{}\"\nresponse_timeout = \"2s\"\npool_idle_timeout = \"100ms\"",
            upstream.addr
        ),
        &oidc_issuer(&idp, ""),
        DEFAULT_ROUTES,
    );
    let gw = TestGateway::start(&cfg).await;
    let token = idp.token().sign();
    let mut sender = http1_connection(gw.addr).await;
    for pause in [Duration::ZERO, Duration::ZERO, Duration::from_millis(150)] {
        // The time passing is what is tested.
        tokio::time::sleep(pause).await;
        let request = Request::get("/x")
            .header("host", "gateway")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let resp = sender.send_request(request).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
    }
    let on: Vec<usize> = upstream.seen().iter().map(|s| s.connection).collect();
    assert_eq!(on, [0, 0, 1], "the third request after 150 ms idle");
}
