//! The protocols clients and upstreams speak: h2c, TLS with ALPN, an upstream
//! over h2c or TLS with a private CA.

use super::*;

#[tokio::test]
async fn h2c_prior_knowledge_clients_are_served() {
    let (idp, _upstream, gw) = default_stack().await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::get(gw.url("/x"))
        .header("authorization", format!("Bearer {}", idp.token().sign()))
        .body(Full::default())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.version(), Version::HTTP_2);
    let seen = echoed(resp).await;
    assert_eq!(seen["version"], "HTTP/1.1", "upstream is HTTP/1.1");
    assert_eq!(
        seen["headers"]["host"][0],
        gw.addr.to_string(),
        "authority becomes Host"
    );
}

#[tokio::test]
async fn tls_clients_negotiate_h2_or_http1_by_alpn() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let dir = temp_dir();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES).replace(
        "realm = \"test\"",
        &format!(
            "realm = \"test\"\ntls = {{ cert = \"{0}/cert.pem\", key = \"{0}/key.pem\" }}",
            dir.path().display()
        ),
    );
    let gw = TestGateway::start(&cfg).await;
    let token = idp.token().sign();

    for (h2, want) in [(true, Version::HTTP_2), (false, Version::HTTP_11)] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert.der().clone()).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only();
        let connector = if h2 {
            builder.enable_all_versions().build()
        } else {
            builder.enable_http1().build()
        };
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        let req = Request::get(format!("https://localhost:{}/x", gw.addr.port()))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::default())
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.version(), want);
        let seen = echoed(resp).await;
        assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
    }
}

#[tokio::test]
async fn upstream_over_h2c() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES).replace(
        "response_timeout = \"2s\"",
        "response_timeout = \"2s\"\nhttp2 = true",
    );
    let gw = TestGateway::start(&cfg).await;
    let seen = echoed(get(&gw.url("/x"), Some(&idp.token().sign())).await).await;
    assert_eq!(seen["version"], "HTTP/2.0");
}

#[tokio::test]
async fn upstream_over_tls_with_a_private_ca() {
    let idp = TestIdp::start().await;
    let dir = temp_dir();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("upstream-ca.pem"), cert.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("upstream-key.pem"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let cert_files = portcullis::tls::ServerCert::load(
        &dir.path().join("upstream-ca.pem"),
        &dir.path().join("upstream-key.pem"),
    )
    .unwrap();
    let tls = portcullis::tls::server_config(cert_files).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        Ok::<_, Infallible>(portcullis::dev::echo(&req))
                    });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    for h2 in [false, true] {
        let cfg = config_to(
            &format!(
                "url = \"https://localhost:{port}\"\nca_file = \"{}\"\nhttp2 = {h2}",
                dir.path().join("upstream-ca.pem").display()
            ),
            &oidc_issuer(&idp, ""),
            DEFAULT_ROUTES,
        );
        let gw = TestGateway::start(&cfg).await;
        let seen = echoed(get(&gw.url("/x"), Some(&idp.token().sign())).await).await;
        assert_eq!(seen["version"], if h2 { "HTTP/2.0" } else { "HTTP/1.1" });
    }
    server.abort();
}
