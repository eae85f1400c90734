//! Streaming both ways: SSE events one by one, a WebSocket tunnel, a 200 MB
//! upload with flat memory.

use super::*;

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
