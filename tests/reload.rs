//! Hot reload through the real gateway: a change applies to the next
//! request, a broken or startup-only change applies nothing, the watcher
//! follows a ConfigMap-style symlink swap, and a new issuer's keys are
//! fetched before the swap.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use support::*;

fn routes(scope: &str) -> String {
    format!(
        r#"
[[routes]]
name = "api"
prefix = "/"
scopes = ["{scope}"]
"#
    )
}

/// An issuer, an upstream, and the text of a config that trusts the one and
/// forwards to the other on a route asking for `Models.Invoke`.
async fn stack() -> (TestIdp, TestUpstream, String) {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let text = config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &routes("Models.Invoke"),
    );
    (idp, upstream, text)
}

#[tokio::test]
async fn a_policy_change_applies_to_the_next_request_on_the_same_connection() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let issuer = oidc_issuer(&idp, "");
    let gw =
        TestGateway::start_file(&config(upstream.addr, &issuer, &routes("Models.Invoke"))).await;
    let before = gw.running().config_version();

    // One keep-alive connection for both requests.
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
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

/// A Kubernetes ConfigMap volume: `gateway.toml` → `..data/gateway.toml`,
/// `..data` → `..<timestamp>`; an update swaps `..data` atomically.
#[tokio::test]
async fn the_watcher_follows_a_configmap_symlink_swap() {
    use std::os::unix::fs::symlink;
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let issuer = oidc_issuer(&idp, "");
    let dir = temp_dir();
    let with_audit = |routes: &str| {
        format!(
            "{}\n[audit]\nsink = \"file\"\nfile = \"{}\"\n",
            config(upstream.addr, &issuer, routes),
            dir.join("audit.jsonl").display()
        )
    };
    std::fs::create_dir(dir.join("..2026_11_27_a")).unwrap();
    std::fs::write(
        dir.join("..2026_11_27_a/gateway.toml"),
        with_audit(&routes("Models.Invoke")),
    )
    .unwrap();
    symlink("..2026_11_27_a", dir.join("..data")).unwrap();
    symlink("..data/gateway.toml", dir.join("gateway.toml")).unwrap();
    let config = portcullis::config::load(&dir.join("gateway.toml")).unwrap();
    let running = portcullis::app::start(config).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.wait_ready())
        .await
        .unwrap();
    let url = format!("http://{}/x", running.addr);
    let token = idp.token().sign();
    assert_eq!(get(&url, Some(&token)).await.status(), StatusCode::OK);

    let mut reloads = running.reloads();
    std::fs::create_dir(dir.join("..2026_11_27_b")).unwrap();
    std::fs::write(
        dir.join("..2026_11_27_b/gateway.toml"),
        with_audit(&routes("Models.Admin")),
    )
    .unwrap();
    symlink("..2026_11_27_b", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), reloads.wait_for(|n| *n >= 1))
        .await
        .expect("the watcher reloaded")
        .unwrap();
    assert_eq!(
        get(&url, Some(&token)).await.status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn reading_the_config_file_never_reloads_and_a_rename_reloads_once() {
    let (idp, _upstream, text) = stack().await;
    let gw = TestGateway::start_file(&text).await;
    let token = idp.token().scp("Models.Invoke").sign();
    let mut reloads = gw.running().reloads();
    let count = |result: &'static str| {
        let gw = &gw;
        async move {
            gw.metric(&format!(
                "gateway_config_reloads_total{{result=\"{result}\"}}"
            ))
            .await
        }
    };

    // Read as `cat` does, then as `POST /reload` does (each reading it).
    for _ in 0..3 {
        std::fs::read_to_string(gw.dir().join("gateway.toml")).unwrap();
    }
    for _ in 0..2 {
        assert_eq!(gw.post_reload().await.1["result"], "unchanged");
    }
    // One rename: one reload, applied.
    gw.rewrite(&text.replace("Models.Invoke", "Models.Admin"));
    tokio::time::timeout(Duration::from_secs(10), reloads.wait_for(|n| *n >= 3))
        .await
        .expect("the watcher reloaded")
        .unwrap();
    assert_eq!(
        get(&gw.url("/x"), Some(&token)).await.status(),
        StatusCode::FORBIDDEN
    );
    // The watcher's reload read the file too; a last synchronous reload
    // closes the count.
    assert_eq!(gw.post_reload().await.1["result"], "unchanged");
    assert_eq!(
        count("applied").await,
        1,
        "exactly one reload for the rename"
    );
    assert_eq!(
        count("unchanged").await,
        3,
        "only the two asked for, and the last"
    );
}

/// This machine's address on its default route: a peer that is not
/// loopback. (A UDP `connect` sends nothing.)
fn outward_address() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("192.0.2.1:9").expect("a default route");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "need a non-loopback address, got {ip}");
    ip
}

#[tokio::test]
async fn reload_is_refused_to_a_peer_off_loopback() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &routes("Models.Invoke"),
    )
    .replace(
        "admin_listen = \"127.0.0.1:0\"",
        "admin_listen = \"0.0.0.0:0\"",
    );
    let gw = TestGateway::start_file(&cfg).await;
    let admin = std::net::SocketAddr::new(outward_address(), gw.admin.port());
    let resp = send(
        Request::post(format!("http://{admin}/reload"))
            .header("x-forwarded-for", "127.0.0.1")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(text(resp).await, "reload is allowed from loopback only\n");
    // The same request from loopback is served.
    let (status, answer) = gw.post_reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], "unchanged");
}

#[tokio::test]
async fn reload_without_a_file_is_a_conflict() {
    let (_idp, _upstream, gw) = default_stack().await;
    // Started from text: nothing to reload.
    let resp = send(
        Request::post(format!("http://{}/reload", gw.admin))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let get = send(
        Request::get(format!("http://{}/reload", gw.admin))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
}

async fn records_with_status(gw: &TestGateway, status: u64) -> usize {
    read_records(&gw.audit_path())
        .iter()
        .filter(|r| r["status"] == status)
        .count()
}

/// Thousands of requests over real sockets while 50 reloads alternate
/// between two configs: every request gets the right answer for the
/// generation that decided it (its audit record names it), and none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_a_reload_storm_all_get_a_correct_answer() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let issuer = oidc_issuer(&idp, "");
    let allow = config(upstream.addr, &issuer, &routes("Models.Invoke"));
    let deny = config(upstream.addr, &issuer, &routes("Models.Admin"));
    let gw = std::sync::Arc::new(TestGateway::start_file(&allow).await);
    let token = std::sync::Arc::new(idp.token().sign());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));

    let mut load = Vec::new();
    for _ in 0..8 {
        let (gw, token, stop) = (gw.clone(), token.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || statuses.len() < 400 {
                let resp = get(&gw.url("/x"), Some(&token)).await;
                statuses.push(resp.status());
                text(resp).await;
            }
            statuses
        }));
    }
    let mut versions = std::collections::HashMap::new();
    versions.insert(gw.running().config_version(), 200u16);
    for i in 0..50 {
        let (text, status) = if i % 2 == 0 {
            (&deny, 403)
        } else {
            (&allow, 200)
        };
        gw.rewrite(text);
        let (code, answer) = gw.post_reload().await;
        assert_eq!(code, StatusCode::OK, "{answer}");
        versions.insert(answer["version"].as_str().unwrap().to_owned(), status);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for task in load {
        for status in task.await.unwrap() {
            assert!(
                status == StatusCode::OK || status == StatusCode::FORBIDDEN,
                "{status}"
            );
            total += 1;
        }
    }
    assert!(total >= 3200, "{total} requests");
    for status in [200, 403] {
        assert!(
            records_with_status(&gw, status).await > 0,
            "both generations served"
        );
    }
    assert_eq!(versions.len(), 2);
    let records = gw.audit_records(total as u64).await;
    assert_eq!(records.len(), total);
    for r in &records {
        let version = r["config_version"].as_str().unwrap();
        assert_eq!(
            r["status"].as_u64(),
            versions.get(version).map(|s| u64::from(*s)),
            "the answer of the generation that decided: {r}"
        );
    }
}

fn tls_client(
    trusted: &rcgen::Certificate,
) -> hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

/// A rotated certificate is served to the next handshake; a connection
/// opened before the rotation goes on.
#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_clients() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let files = temp_dir();
    let write = |c: &rcgen::CertifiedKey<rcgen::KeyPair>| {
        std::fs::write(files.join("key.pem.tmp"), c.signing_key.serialize_pem()).unwrap();
        std::fs::write(files.join("cert.pem.tmp"), c.cert.pem()).unwrap();
        std::fs::rename(files.join("key.pem.tmp"), files.join("key.pem")).unwrap();
        std::fs::rename(files.join("cert.pem.tmp"), files.join("cert.pem")).unwrap();
    };
    let old = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    write(&old);
    let cfg = config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &routes("Models.Invoke"),
    )
    .replace(
        "realm = \"test\"",
        &format!(
            "realm = \"test\"\ntls = {{ cert = \"{0}/cert.pem\", key = \"{0}/key.pem\" }}",
            files.display()
        ),
    );
    let gw = TestGateway::start_file(&cfg).await;
    let token = idp.token().sign();
    let url = format!("https://localhost:{}/x", gw.addr.port());
    let request = || {
        Request::get(&url)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let before = tls_client(&old.cert);
    let resp = before.request(request()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();

    let new = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    write(&new);
    let (status, answer) = gw.post_reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let resp = tls_client(&new.cert).request(request()).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "a new client gets the new certificate"
    );
    assert!(
        tls_client(&old.cert).request(request()).await.is_err(),
        "and no longer the old one"
    );
    let resp = before.request(request()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the open connection goes on");

    // A key that does not match its certificate is refused; the new pair stays.
    std::fs::write(files.join("key.pem"), old.signing_key.serialize_pem()).unwrap();
    let errors = gw.refused_reload().await;
    assert!(errors.contains("server.tls"), "{errors}");
    let resp = tls_client(&new.cert).request(request()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_audit_failure_policy_reloads_live_and_the_sink_needs_a_restart() {
    let (idp, _upstream, base) = stack().await;
    // A real ENOSPC sink, failing closed.
    let deny = format!("{base}\n{FULL_DISK_AUDIT}");
    let gw = TestGateway::start_file(&deny).await;
    let token = idp.token().sign();
    fail_the_audit_sink(&gw, &token).await;
    assert_eq!(
        get(&gw.url("/x"), Some(&token)).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    gw.rewrite(&format!("{deny}on_failure = \"allow\"\n"));
    let (status, answer) = gw.post_reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        get(&gw.url("/x"), Some(&token)).await.status(),
        StatusCode::OK,
        "availability first, from the next request on"
    );

    gw.rewrite(&format!(
        "{base}\n[audit]\nsink = \"file\"\nfile = \"/dev/null\"\non_failure = \"allow\"\n"
    ));
    let errors = gw.refused_reload().await;
    assert!(
        errors.contains("audit.sink: cannot change without a restart (running: /dev/full"),
        "{errors}"
    );
}
