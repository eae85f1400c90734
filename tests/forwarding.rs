//! Forwarding through the real gateway: streaming both ways, upgrades,
//! HTTP/2, TLS, header hygiene and upstream failures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn sse_events_arrive_one_by_one_before_the_stream_ends() {
    let (idp, upstream, gw) = default_stack().await;
    let mut resp = get(&gw.url("/sse"), Some(&idp.token().sign())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = resp.body_mut();
    for n in 0..2 {
        // The upstream holds event n+1 until we have seen event n: a
        // buffering gateway would deadlock here and time out.
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("event arrived while the stream is open")
            .unwrap()
            .unwrap();
        let data = frame.into_data().unwrap();
        assert_eq!(data, Bytes::from(format!("data: {{\"n\":{n}}}\n\n")));
        upstream.release_sse_event();
    }
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, Bytes::from_static(b"data: [DONE]\n\n"));
}

#[tokio::test]
async fn websocket_is_authorized_at_the_handshake_then_tunnelled() {
    let (idp, _upstream, gw) = default_stack().await;
    let mut req = format!("ws://{}/ws", gw.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", idp.token().sign())).unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("handshake");
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "through", "the gateway"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();

    // Without a token the handshake is refused with 401.
    let req = format!("ws://{}/ws", gw.addr)
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("expected a 401 handshake refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_200_mb_upload_streams_with_flat_memory() {
    let (idp, _upstream, gw) = default_stack().await;
    const CHUNK: usize = 1024 * 1024;
    const CHUNKS: usize = 200;
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let frames = futures_util::stream::iter(
        (0..CHUNKS).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
    );
    let body: BoxBody<Bytes, Infallible> = BodyExt::boxed(StreamBody::new(frames));
    let client: Client<_, BoxBody<Bytes, Infallible>> =
        Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(gw.url("/upload"))
        .header("authorization", format!("Bearer {}", idp.token().sign()))
        .body(body)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(120), client.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let report: serde_json::Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(report["bytes"], (CHUNK * CHUNKS) as u64);
    let start = report["start_rss"].as_u64().unwrap();
    assert!(
        start > 0,
        "RSS must be measurable for this test to mean anything"
    );
    let growth = report["peak_rss"].as_u64().unwrap().saturating_sub(start);
    // A buffering gateway would grow by the body size (200 MiB).
    assert!(
        growth < 64 * 1024 * 1024,
        "RSS grew by {} MiB during the upload",
        growth / (1024 * 1024)
    );
}

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
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES).replace(
        "realm = \"test\"",
        &format!(
            "realm = \"test\"\ntls = {{ cert = \"{0}/cert.pem\", key = \"{0}/key.pem\" }}",
            dir.display()
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
async fn identity_headers_cannot_be_spoofed_and_the_token_stays_here() {
    let (idp, _upstream, gw) = default_stack().await;
    let token = idp.token().sign();
    let req = Request::get(gw.url("/x?q=1"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-portcullis-subject", "spoofed-admin")
        .header("x-portcullis-tenant", "spoofed-tenant")
        .header("x-portcullis-tenant", "spoofed-again")
        .header("x-portcullis-roles", "Admin")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-host", "evil.example")
        .header("x-request-id", "req-123")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .header("connection", "keep-alive, x-custom-hop")
        .header("x-custom-hop", "dropped")
        .body(Full::default())
        .unwrap();
    let resp = send(req).await;
    assert_eq!(resp.headers()["x-request-id"], "req-123");
    let seen = echoed(resp).await;
    let h = &seen["headers"];
    assert!(
        h.get("authorization").is_none(),
        "the token must not reach the upstream"
    );
    assert_eq!(
        h["x-portcullis-subject"],
        serde_json::json!(["690222be-ff1a-4d56-abd1-7e4f7d38e474"])
    );
    assert_eq!(
        h["x-portcullis-tenant"],
        serde_json::json!([TENANT]),
        "every spoofed copy is replaced"
    );
    assert!(
        h.get("x-portcullis-roles").is_none(),
        "a user token has no roles to send"
    );
    assert_eq!(h["x-portcullis-scopes"][0], "Models.Invoke");
    assert_eq!(
        h["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"]),
        "client values are replaced"
    );
    assert_eq!(h["x-forwarded-host"][0], gw.addr.to_string());
    assert_eq!(h["x-request-id"][0], "req-123");
    assert_eq!(
        h["traceparent"][0],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert!(h.get("x-custom-hop").is_none() && h.get("connection").is_none());
    assert_eq!(seen["query"], "q=1");

    // A public route forwards no identity at all, and strips spoofed copies.
    let req = Request::get(gw.url("/health"))
        .header("x-portcullis-subject", "spoofed")
        .body(Full::default())
        .unwrap();
    let seen = echoed(send(req).await).await;
    assert!(seen["headers"].get("x-portcullis-subject").is_none());
    // A request id is generated when the client sends none.
    let resp = get(&gw.url("/health"), None).await;
    assert_eq!(resp.headers()["x-request-id"].len(), 32);
}

#[tokio::test]
async fn trusted_proxies_extend_x_forwarded_for() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES).replace(
        "realm = \"test\"",
        "realm = \"test\"\ntrusted_proxies = [\"127.0.0.0/8\"]",
    );
    let gw = TestGateway::start(&cfg).await;
    let req = Request::get(gw.url("/health"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .body(Full::default())
        .unwrap();
    let seen = echoed(send(req).await).await;
    assert_eq!(
        seen["headers"]["x-forwarded-for"][0],
        "203.0.113.7, 127.0.0.1"
    );
    assert_eq!(seen["headers"]["x-forwarded-proto"][0], "https");
}

#[tokio::test]
async fn forwarded_is_the_gateways_like_x_forwarded_for() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let plain = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES);
    let spoofed = || {
        Request::get("/health")
            .header("forwarded", "for=6.6.6.6;host=evil.example;proto=https")
            .header("forwarded", "for=7.7.7.7")
    };
    // An untrusted peer: replaced by this hop's element.
    let gw = TestGateway::start(&plain).await;
    let mut req = spoofed().body(Full::default()).unwrap();
    *req.uri_mut() = gw.url("/health").parse().unwrap();
    let seen = echoed(send(req).await).await;
    assert_eq!(
        seen["headers"]["forwarded"],
        serde_json::json!([format!("for=127.0.0.1;proto=http;host=\"{}\"", gw.addr)])
    );
    // A trusted proxy: its chain grows by this hop.
    let trusted = plain.replace(
        "realm = \"test\"",
        "realm = \"test\"\ntrusted_proxies = [\"127.0.0.0/8\"]",
    );
    let gw = TestGateway::start(&trusted).await;
    let mut req = spoofed().body(Full::default()).unwrap();
    *req.uri_mut() = gw.url("/health").parse().unwrap();
    let seen = echoed(send(req).await).await;
    assert_eq!(
        seen["headers"]["forwarded"],
        serde_json::json!([format!(
            "for=6.6.6.6;host=evil.example;proto=https, for=7.7.7.7, for=127.0.0.1;proto=http;host=\"{}\"",
            gw.addr
        )])
    );
}

#[tokio::test]
async fn underscore_spellings_of_owned_headers_never_reach_the_upstream() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES).replace(
        "response_timeout = \"2s\"",
        "response_timeout = \"2s\"\nstrip_headers = [\"X-MS-CLIENT-PRINCIPAL\", \"x-ms-client-principal-*\", \"X-Original-URL\", \"x-auth-request-*\"]",
    );
    let gw = TestGateway::start(&cfg).await;
    let token = idp.token().sign();
    let mut req = Request::get(gw.url("/x")).header("authorization", format!("Bearer {token}"));
    for name in [
        "x_portcullis_subject",
        "x_portcullis_roles",
        "X_Portcullis-Scopes",
        "x_forwarded_for",
        "x_forwarded_host",
        "x_request_id",
        "x-ms-client-principal",
        "x_ms_client_principal_id",
        "x-ms-client-principal-name",
        "x-original-url",
        "x-auth-request-email",
    ] {
        req = req.header(name, "spoofed");
    }
    let seen = echoed(
        send(
            req.header("x_custom", "kept")
                .body(Full::default())
                .unwrap(),
        )
        .await,
    )
    .await;
    let h = seen["headers"].as_object().unwrap();
    let spoofed: Vec<&String> = h
        .iter()
        .filter(|(_, v)| v.to_string().contains("spoofed"))
        .map(|(k, _)| k)
        .collect();
    assert!(spoofed.is_empty(), "reached the upstream: {spoofed:?}");
    assert_eq!(h["x_custom"][0], "kept", "other names pass");
    assert_eq!(
        h["x-portcullis-subject"][0],
        "690222be-ff1a-4d56-abd1-7e4f7d38e474"
    );
}

#[tokio::test]
async fn a_route_can_opt_in_to_forward_the_authorization_header() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let routes =
        "[[routes]]\nname = \"passthrough\"\nprefix = \"/\"\nforward_authorization = true\n";
    let gw = TestGateway::start(&config(upstream.addr, &oidc_issuer(&idp, ""), routes)).await;
    let token = idp.token().sign();
    let seen = echoed(get(&gw.url("/x"), Some(&token)).await).await;
    assert_eq!(
        seen["headers"]["authorization"][0],
        format!("Bearer {token}")
    );
}

#[tokio::test]
async fn an_upstream_that_dies_mid_response_cuts_the_client_off_and_leaks_nothing() {
    let (idp, _upstream, gw) = default_stack().await;
    let resp = get(&gw.url("/dies"), Some(&idp.token().sign())).await;
    assert_eq!(resp.status(), StatusCode::OK);
    // The client must not take the 10 bytes for the whole answer.
    let body = resp.into_body().collect().await;
    assert!(
        body.is_err(),
        "a cut response reached the client as complete"
    );
    let records = gw.audit_records(1).await;
    assert_eq!(records[0]["end"], "upstream_error", "{}", records[0]);
    // Nothing is left behind: no request in flight, and the client's
    // connection is closed, not kept open with a half-sent response.
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains("gateway_requests_in_flight 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("gateway_open_connections{protocol=\"http1\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn upstream_unreachable_is_502_and_slow_is_504() {
    let idp = TestIdp::start().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = TestGateway::start(&config(closed, &oidc_issuer(&idp, ""), DEFAULT_ROUTES)).await;
    let resp = get(&gw.url("/x"), Some(&idp.token().sign())).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let body = text(resp).await;
    assert_eq!(
        body,
        r#"{"error":{"message":"The upstream could not be reached.","type":"api_error","code":"upstream_unreachable"}}"#
    );

    let upstream = TestUpstream::start().await;
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES)
        .replace("response_timeout = \"2s\"", "response_timeout = \"300ms\"");
    let gw = TestGateway::start(&cfg).await;
    let resp = get(&gw.url("/slow"), Some(&idp.token().sign())).await;
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    let (_, metrics) = gw.admin_get("/metrics").await;
    assert!(
        metrics.contains(
            "gateway_requests_total{decision=\"error\",kind=\"user\",reason=\"upstream_timeout\",route=\"api\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let (idp, upstream, mut gw) = default_stack().await;
    let mut resp = get(&gw.url("/sse"), Some(&idp.token().sign())).await;
    let first = resp.body_mut().frame().await.unwrap().unwrap();
    assert!(first.is_data());
    gw.running().shutdown();
    // New connections are refused once the listener is closed...
    let refused = async {
        loop {
            if tokio::net::TcpStream::connect(gw.addr).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), refused)
        .await
        .expect("listener closed");
    // ...while the stream in flight completes.
    upstream.release_sse_event();
    upstream.release_sse_event();
    let rest = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    assert!(rest.to_bytes().ends_with(b"data: [DONE]\n\n"));
    let records = gw.stop().await;
    assert!(
        records
            .iter()
            .any(|r| r["path"] == "/sse" && r["end"] == "complete"),
        "the drained stream's record is written before exit"
    );
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
    std::fs::write(dir.join("upstream-ca.pem"), cert.cert.pem()).unwrap();
    std::fs::write(
        dir.join("upstream-key.pem"),
        cert.signing_key.serialize_pem(),
    )
    .unwrap();
    let cert_files = portcullis::tls::ServerCert::load(
        &dir.join("upstream-ca.pem"),
        &dir.join("upstream-key.pem"),
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
        let cfg = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[upstream]\nurl = \"https://localhost:{port}\"\nca_file = \"{}\"\nhttp2 = {h2}\n\n{}\n{DEFAULT_ROUTES}",
            dir.join("upstream-ca.pem").display(),
            oidc_issuer(&idp, "")
        );
        let gw = TestGateway::start(&cfg).await;
        let seen = echoed(get(&gw.url("/x"), Some(&idp.token().sign())).await).await;
        assert_eq!(seen["version"], if h2 { "HTTP/2.0" } else { "HTTP/1.1" });
    }
    server.abort();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = config(upstream.addr, &oidc_issuer(&idp, ""), DEFAULT_ROUTES).replace(
        "realm = \"test\"",
        "realm = \"test\"\nclient_header_timeout = \"300ms\"",
    );
    let gw = TestGateway::start(&cfg).await;
    let mut tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // The gateway must close the connection on its own (slowloris defence).
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "connection still open after the header timeout"
    );
}

/// An upstream that ends each connection after a few requests, at a random
/// point and in a random way: announced (`Connection: close`), silently
/// right after an answer, silently after a moment idle, or on reading the
/// next request without answering it (it decided to close as the request
/// came in). Answers GETs with `ok`.
async fn closing_upstream() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let serve = fastrand::u32(1..=6);
                let ending = fastrand::u8(0..4);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                for n in 1..=serve + 1 {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                    buf.drain(..end + 4);
                    if n > serve {
                        return; // read, never answered: closed as it came in
                    }
                    let last = n == serve;
                    let answer: &[u8] = if last && ending == 0 {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    } else {
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    };
                    if tcp.write_all(answer).await.is_err() {
                        return;
                    }
                    if last {
                        match ending {
                            0 | 1 => return,
                            2 => {
                                let idle = Duration::from_micros(fastrand::u64(0..3000));
                                tokio::time::sleep(idle).await;
                                return;
                            }
                            _ => {} // wait for the next request, then close
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_closes_connections_at_random_costs_no_request() {
    const REQUESTS: usize = 100_000;
    const CLIENTS: usize = 32;
    let idp = TestIdp::start().await;
    let upstream = closing_upstream().await;
    // Audit off: 100,000 records are not what this test is about.
    let cfg =
        config(upstream, &oidc_issuer(&idp, ""), DEFAULT_ROUTES) + "\n[audit]\nsink = \"off\"\n";
    let gw = TestGateway::start(&cfg).await;
    let client = client();
    let url: hyper::Uri = gw.url("/health").parse().unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let mut failed = Vec::new();
            for _ in 0..REQUESTS / CLIENTS {
                let resp = client.get(url.clone()).await.expect("the gateway answers");
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                if status != StatusCode::OK || body.as_ref() != b"ok" {
                    failed.push(status);
                }
            }
            failed
        });
    }
    let mut failed = Vec::new();
    while let Some(done) = tasks.join_next().await {
        failed.extend(done.unwrap());
    }
    let bad_gateway = failed
        .iter()
        .filter(|s| **s == StatusCode::BAD_GATEWAY)
        .count();
    assert_eq!(
        bad_gateway, 0,
        "{bad_gateway} of {REQUESTS} got 502: {failed:?}"
    );
    // Under CPU contention a request in a few hundred thousand waits out
    // the response timeout here (504): it hangs in hyper-util's legacy
    // pool, which a bare hyper-util client against this upstream shows too
    // (not with pooling off; the hyper#2312 family). The gateway's own pool
    // (issue 24) replaces it. Anything else, or more of them, is a failure.
    assert!(
        failed.iter().all(|s| *s == StatusCode::GATEWAY_TIMEOUT) && failed.len() <= 10,
        "{} of {REQUESTS} failed: {failed:?}",
        failed.len()
    );
}
