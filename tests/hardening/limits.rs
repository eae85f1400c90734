//! The limits on what one client may send or hold.

use super::*;

#[tokio::test]
async fn a_header_block_over_the_limit_gets_431_and_never_reaches_the_upstream() {
    let (_idp, upstream, gw, token) = stack_with("max_header_bytes = 8192", DEFAULT_ROUTES).await;
    let filler = "a".repeat(9000);
    let req = format!(
        "GET /v1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nX-Filler: {filler}\r\n\r\n"
    );
    let (got, closed) = raw(gw.addr, req.as_bytes(), 1).await;
    assert_eq!(got[0].status, 431, "{got:?}");
    assert!(closed || got.len() == 1);
    assert!(upstream.seen().is_empty());
    // Under the limit, the same request passes.
    let req = format!("GET /v1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    let (got, _) = raw(gw.addr, req.as_bytes(), 1).await;
    assert_eq!(got[0].status, 200);
}

#[tokio::test]
async fn too_many_headers_get_431() {
    let (_idp, upstream, gw, token) = stack_with("max_headers = 16", DEFAULT_ROUTES).await;
    let mut req = format!("GET /v1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n");
    for i in 0..20 {
        req.push_str(&format!("X-H{i}: v\r\n"));
    }
    req.push_str("\r\n");
    let (got, _) = raw(gw.addr, req.as_bytes(), 1).await;
    assert_eq!(got[0].status, 431, "{got:?}");
    assert!(upstream.seen().is_empty());
}

#[tokio::test]
async fn a_uri_over_the_limit_gets_414_with_an_audit_record() {
    let (_idp, upstream, mut gw, token) = stack_with("max_uri_bytes = 1024", DEFAULT_ROUTES).await;
    let long = format!("/v1/{}", "p".repeat(1100));
    let resp = get(&gw.url(&long), Some(&token)).await;
    assert_eq!(resp.status(), StatusCode::URI_TOO_LONG);
    assert!(text(resp).await.contains("uri_too_long"));
    // The query counts too.
    let resp = get(
        &gw.url(&format!("/v1/x?q={}", "q".repeat(1100))),
        Some(&token),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::URI_TOO_LONG);
    let resp = get(&gw.url("/v1/short"), Some(&token)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(upstream.seen().len(), 1);
    let records = gw.stop().await;
    let reasons: Vec<_> = records
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["uri_too_long", "uri_too_long", "allowed"]);
    assert_eq!(records[0]["status"], 414);
}

const UPLOAD_ROUTES: &str = r#"
[[routes]]
name = "upload"
prefix = "/upload"
scopes = ["Models.Invoke"]
max_body_bytes = 1000

[[routes]]
name = "api"
prefix = "/"
scopes = ["Models.Invoke"]
"#;

#[tokio::test]
async fn a_declared_body_over_the_route_limit_gets_413_before_the_upstream_is_asked() {
    let (_idp, upstream, mut gw, token) = stack_with("", UPLOAD_ROUTES).await;
    let post = |path: &str, size: usize| {
        Request::post(gw.url(path))
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(vec![b'x'; size])))
            .unwrap()
    };
    let resp = send(post("/upload/a", 1001)).await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(text(resp).await.contains("body_too_large"));
    assert!(upstream.seen().is_empty());
    // At the limit, and on a route without one, bodies pass.
    assert_eq!(send(post("/upload/a", 1000)).await.status(), StatusCode::OK);
    assert_eq!(send(post("/other", 5000)).await.status(), StatusCode::OK);
    let records = gw.stop().await;
    assert_eq!(records[0]["reason"], "body_too_large");
    assert_eq!(records[0]["decision"], "deny");
}

#[tokio::test]
async fn a_streamed_body_is_cut_at_the_route_limit_with_413() {
    let (_idp, _upstream, mut gw, token) = stack_with("", UPLOAD_ROUTES).await;
    // No content-length: the body arrives in chunks and passes the limit
    // only on the way.
    let chunks = (0..8)
        .map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(vec![b'x'; 300]))));
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let req = Request::post(gw.url("/upload/stream"))
        .header("authorization", format!("Bearer {token}"))
        .body(body)
        .unwrap();
    let resp = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http()
        .request(req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("body_too_large"));
    let records = gw.stop().await;
    assert_eq!(records[0]["reason"], "body_too_large");
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let (_idp, _upstream, gw, token) = stack_with("max_connections = 2", DEFAULT_ROUTES).await;
    let req = format!("GET /v1/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    // Two keep-alive connections hold both slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tcp = TcpStream::connect(gw.addr).await.unwrap();
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(tcp);
    }
    // A third connects (the kernel's backlog) but is not served...
    let third = tokio::spawn({
        let addr = gw.addr;
        let req = req.clone();
        async move { raw(addr, req.as_bytes(), 1).await }
    });
    let early = tokio::time::timeout(Duration::from_millis(300), async {
        while !third.is_finished() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        early.is_err(),
        "a third connection was served past the limit"
    );
    // ...until a slot frees.
    drop(held.pop());
    let (got, _) = third.await.unwrap();
    assert_eq!(got[0].status, 200);
}
