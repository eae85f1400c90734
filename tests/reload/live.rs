//! Reloading while serving: a storm of reloads under load, a rotated
//! certificate, the audit failure policy.

use super::*;

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
    let tmp = temp_dir();
    let files = tmp.path();
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
