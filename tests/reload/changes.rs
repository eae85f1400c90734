//! What a reload applies: a policy change to the next request, nothing from a
//! broken or restart-only change, a new issuer's keys before the swap.

use super::*;

#[tokio::test]
async fn a_policy_change_applies_to_the_next_request_on_the_same_connection() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let issuer = oidc_issuer(&idp, "");
    let gw =
        TestGateway::start_file(&config(upstream.addr, &issuer, &routes("Models.Invoke"))).await;
    let before = gw.running().config_version();

    // One keep-alive connection for both requests.
    let mut sender = http1_connection(gw.addr).await;
    let token = idp.token().sign();
    let request = || {
        Request::get("/x")
            .header("host", "gateway")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let first = sender.send_request(request()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    first.into_body().collect().await.unwrap();

    gw.rewrite(&config(upstream.addr, &issuer, &routes("Models.Admin")));
    let (status, answer) = gw.post_reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    // The file watcher may have applied it a moment before: then this
    // answer is "unchanged", with the same new version.
    assert!(
        ["applied", "unchanged"].contains(&answer["result"].as_str().unwrap()),
        "{answer}"
    );
    assert_ne!(answer["version"], before.as_str());

    let second = sender.send_request(request()).await.unwrap();
    assert_eq!(
        second.status(),
        StatusCode::FORBIDDEN,
        "the new rule, on the same connection"
    );
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(metrics.contains("gateway_config_reloads_total{result=\"applied\"} 1"));
    assert!(metrics.contains(&format!(
        "gateway_config_info{{version=\"{}\"}} 1",
        answer["version"].as_str().unwrap()
    )));
    let records = gw.audit_records(2).await;
    assert_eq!(records[0]["config_version"], before.as_str());
    assert_eq!(records[1]["config_version"], answer["version"]);
}

#[tokio::test]
async fn a_broken_config_changes_nothing_and_says_why() {
    let (idp, _upstream, good) = stack().await;
    let gw = TestGateway::start_file(&good).await;
    let version = gw.running().config_version();
    let token = idp.token().sign();

    let broken = [
        ("syntax", format!("{good}\n[[routes]\n"), "expected"),
        (
            "unknown key",
            good.replace("realm = \"test\"", "realm = \"test\"\nrelam = \"typo\""),
            "server.relam: unknown key `relam`",
        ),
        (
            "no audiences",
            good.replace(&format!("audiences = [\"{AUDIENCE}\"]"), "audiences = []"),
            "issuers[0].audiences: must not be empty",
        ),
    ];
    for (what, text, expected) in &broken {
        gw.rewrite(text);
        let (status, answer) = gw.post_reload().await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {answer}");
        assert_eq!(answer["result"], "failed");
        let errors = answer["errors"].to_string();
        assert!(errors.contains(expected), "{what}: {errors}");
        assert_eq!(gw.running().config_version(), version, "{what}");
        assert_eq!(
            get(&gw.url("/x"), Some(&token)).await.status(),
            StatusCode::OK
        );
    }
    let failed = gw
        .metric("gateway_config_reloads_total{result=\"failed\"}")
        .await;
    assert!(
        failed >= 3,
        "each broken file counted (the watcher may add its own)"
    );

    // Back to the running text: nothing to do.
    gw.rewrite(&good);
    let (status, answer) = gw.post_reload().await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["result"], "unchanged");
}

#[tokio::test]
async fn startup_only_changes_are_refused_by_name() {
    let (_idp, _upstream, good) = stack().await;
    let gw = TestGateway::start_file(&good).await;
    gw.rewrite(
        &good
            .replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"")
            .replace("drain_timeout = \"5s\"", "drain_timeout = \"6s\"")
            .replace("[server]\n", "[server]\nworker_threads = 2\n"),
    );
    let errors = gw.refused_reload().await;
    assert!(
        errors.contains("server.listen: cannot change without a restart"),
        "{errors}"
    );
    assert!(errors.contains("server.drain_timeout"), "{errors}");
    assert!(
        errors.contains(
            "server.worker_threads: cannot change without a restart (running: one per CPU)"
        ),
        "{errors}"
    );
}

#[tokio::test]
async fn the_uri_limit_reloads_live_and_the_connection_limits_need_a_restart() {
    let (idp, _upstream, good) = stack().await;
    let gw = TestGateway::start_file(&format!("{good}\n[limits]\nmax_uri_bytes = 4096\n")).await;
    let token = idp.token().sign();
    let long = format!("/x/{}", "a".repeat(2000));
    assert_eq!(
        get(&gw.url(&long), Some(&token)).await.status(),
        StatusCode::OK
    );
    gw.rewrite(&format!("{good}\n[limits]\nmax_uri_bytes = 1024\n"));
    let (status, answer) = gw.post_reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        get(&gw.url(&long), Some(&token)).await.status(),
        StatusCode::URI_TOO_LONG
    );
    gw.rewrite(&format!(
        "{good}\n[limits]\nmax_uri_bytes = 1024\nmax_connections = 10\nmax_header_bytes = 16384\n"
    ));
    let errors = gw.refused_reload().await;
    assert!(
        errors.contains("limits.max_connections: cannot change without a restart (running: 4096)"),
        "{errors}"
    );
    assert!(errors.contains("limits.max_header_bytes"), "{errors}");
}

#[tokio::test]
async fn a_new_issuer_is_ready_when_the_reload_answers() {
    let idp = TestIdp::start().await;
    let second = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let one = oidc_issuer(&idp, "");
    let gw = TestGateway::start_file(&config(upstream.addr, &one, &routes("Models.Invoke"))).await;
    let token = idp.token().sign();
    assert_eq!(
        get(&gw.url("/x"), Some(&token)).await.status(),
        StatusCode::OK
    );
    let other = second.token().sign();
    assert_eq!(
        get(&gw.url("/x"), Some(&other)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let two = format!(
        "{one}{}",
        oidc_issuer(&second, "").replace("name = \"idp\"", "name = \"second\"")
    );
    gw.rewrite(&config(upstream.addr, &two, &routes("Models.Invoke")));
    let (status, answer) = gw.post_reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(second.fetch_count(), 1, "fetched once, before the swap");
    assert_eq!(
        get(&gw.url("/x"), Some(&other)).await.status(),
        StatusCode::OK
    );
    // The unchanged issuer kept its keys and its verified-token cache.
    assert_eq!(idp.fetch_count(), 1);
    assert_eq!(
        get(&gw.url("/x"), Some(&token)).await.status(),
        StatusCode::OK
    );
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("gateway_token_cache_requests_total{result=\"hit\"} 1"),
        "{metrics}"
    );

    // An issuer whose settings change starts with an empty cache for it.
    let stricter = two.replacen(
        &format!("audiences = [\"{AUDIENCE}\"]"),
        "audiences = [\"api://other\"]",
        1,
    );
    gw.rewrite(&config(upstream.addr, &stricter, &routes("Models.Invoke")));
    assert_eq!(gw.post_reload().await.0, StatusCode::OK);
    assert_eq!(
        get(&gw.url("/x"), Some(&token)).await.status(),
        StatusCode::UNAUTHORIZED,
        "a cached token is checked against the new audience"
    );
}
