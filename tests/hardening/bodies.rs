//! Request bodies: broken framing is the client's fault, and a refused POST
//! keeps its connection.

use super::*;

#[tokio::test]
async fn broken_chunked_framing_is_the_clients_fault() {
    let (_idp, _upstream, gw, token) = stack_with("", DEFAULT_ROUTES).await;
    for body in [
        // A chunk size no one can send.
        "fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        // Chunk data not followed by CRLF.
        "3\r\nabcX0\r\n\r\n",
        // Not a chunk size at all.
        "zz\r\nabc\r\n0\r\n\r\n",
        // A bare LF ending a chunk line.
        "3\nabc\r\n0\r\n\r\n",
    ] {
        let req = request(
            &token,
            "POST /upload HTTP/1.1",
            &format!("Transfer-Encoding: chunked\r\n\r\n{body}"),
        );
        let (got, _) = raw(gw.addr, &req, 1).await;
        assert_eq!(
            got.first().map(|a| a.status),
            Some(400),
            "{body:?}: {got:?}"
        );
        assert!(got[0].head.contains("connection: close"), "{got:?}");
    }
    let records = gw.audit_records(4).await;
    assert!(
        records.iter().all(|r| r["reason"] == "bad_request_body"),
        "{records:?}"
    );
    assert_eq!(
        gw.metric(
            "gateway_requests_total{decision=\"deny\",kind=\"user\",reason=\"bad_request_body\",route=\"api\"}"
        )
        .await,
        4
    );
    let scrape = gw.admin_get("/metrics").await.1;
    assert!(
        !scrape
            .lines()
            .any(|l| l.starts_with("gateway_upstream_responses_total")
                && l.contains("status=\"none\"")),
        "no upstream failure counted:\n{scrape}"
    );
}

/// Sends `head`, then (in a later segment, as Python's http.client and
/// most SDKs do) `body` and at once `next` on the same connection; the
/// answers and whether the connection closed.
async fn post_then_next(
    addr: SocketAddr,
    head: &str,
    body: &str,
    next: &str,
) -> (Vec<Answer>, bool) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    // Not a synchronization: it only makes the body its own segment.
    tokio::time::sleep(Duration::from_millis(20)).await;
    tcp.write_all(format!("{body}{next}").as_bytes())
        .await
        .unwrap();
    read_answers(&mut tcp, 2).await
}

#[tokio::test]
async fn a_refused_post_keeps_the_connection_usable() {
    let routes = r#"
[[routes]]
name = "small"
prefix = "/small"
scopes = ["Models.Invoke"]
max_body_bytes = 4

[[routes]]
name = "admin"
prefix = "/admin"
roles = ["Admin"]

[[routes]]
name = "api"
prefix = "/"
scopes = ["Models.Invoke"]
"#;
    let (_idp, _upstream, gw, token) = stack_with("", routes).await;
    let auth = format!("Authorization: Bearer {token}\r\n");
    let next = format!("GET /v1/next HTTP/1.1\r\nHost: x\r\n{auth}\r\n");
    let body = "0123456789";
    let post = |path: &str, auth: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 10\r\n\r\n")
    };
    let cases = [
        ("no token", post("/v1/chat", ""), 401),
        ("no role", post("/admin/x", &auth), 403),
        ("over the limit", post("/small/x", &auth), 413),
        // The echo upstream answers without reading the body.
        ("upstream does not read", post("/v1/echo", &auth), 200),
    ];
    for (what, head, status) in &cases {
        let (got, closed) = post_then_next(gw.addr, head, body, &next).await;
        assert_eq!(
            got.first().map(|a| a.status),
            Some(*status),
            "{what}: {got:?}"
        );
        let said_close = got[0].head.contains("connection: close");
        if said_close {
            assert!(closed && got.len() == 1, "{what}: closed as announced");
        } else {
            assert_eq!(
                got.get(1).map(|a| a.status),
                Some(200),
                "{what}: kept alive, so the next request must be answered"
            );
        }
        if *status != 200 {
            assert!(!said_close, "{what}: a small refused body is drained");
        }
    }
    let records = gw.audit_records(7).await;
    for r in records.iter().filter(|r| r["status"] != 200) {
        assert_eq!(r["bytes_in"], 10, "what was received is counted: {r}");
    }
}
