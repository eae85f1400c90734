//! Request smuggling and desync: framing the gateway and the upstream
//! could read differently.

use super::*;

#[tokio::test]
async fn content_length_with_transfer_encoding_is_read_as_chunked_and_the_connection_closed() {
    let (_idp, upstream, gw, token) = stack_with("", DEFAULT_ROUTES).await;
    // RFC 9112 §6.3: Transfer-Encoding wins, and the connection must close
    // after the answer, so that the bytes after the chunked body (a second
    // request hidden in what `Content-Length` claims) are never read.
    let req = request(
        &token,
        "POST /v1/a HTTP/1.1",
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let (got, closed) = raw(gw.addr, &req, 2).await;
    assert!(closed, "the connection must close after an ambiguous body");
    assert_eq!(
        got.len(),
        1,
        "the trailing request must not be answered: {got:?}"
    );
    assert!(got[0].head.contains("connection: close"));
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/v1/a");
    assert!(seen[0].headers.get("content-length").is_none(), "{seen:?}");
}

#[tokio::test]
async fn ambiguous_framing_is_refused() {
    let (_idp, upstream, gw, token) = stack_with("", DEFAULT_ROUTES).await;
    let cases = [
        // Two lengths that disagree.
        "Content-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
        "Content-Length: 3, 30\r\n\r\nabc",
        "Content-Length: +3\r\n\r\nabc",
        "Content-Length: 0x3\r\n\r\nabc",
        // Transfer codings a front end and a back end may read differently.
        "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding:\tchunked\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
        // A header name with a space, and a header folded onto two lines.
        "X Forwarded-For: 10.0.0.1\r\n\r\n",
        "X-Folded: a\r\n b\r\n\r\n",
    ];
    for rest in cases {
        let req = request(&token, "POST /v1/a HTTP/1.1", rest);
        let (got, closed) = raw(gw.addr, &req, 1).await;
        assert!(
            got.first().is_some_and(|a| a.status == 400) || (got.is_empty() && closed),
            "{rest:?} was not refused: {got:?}"
        );
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
}

#[tokio::test]
async fn bare_line_feeds_reach_the_upstream_as_one_well_formed_request() {
    let (_idp, upstream, gw, token) = stack_with("", DEFAULT_ROUTES).await;
    let req = format!("GET /v1/lf HTTP/1.1\nHost: x\nAuthorization: Bearer {token}\nX-A: 1\n\n");
    let (got, _) = raw(gw.addr, req.as_bytes(), 1).await;
    // Accepted or refused, but never read as more than one request.
    if got[0].status == 200 {
        let seen = upstream.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].path, "/v1/lf");
        assert_eq!(seen[0].headers["x-a"], "1");
    } else {
        assert_eq!(got[0].status, 400);
        assert!(upstream.seen().is_empty());
    }
}

#[tokio::test]
async fn a_pipelined_request_is_forwarded_as_its_own_request_with_its_own_decision() {
    let (_idp, upstream, gw, token) = stack_with("", DEFAULT_ROUTES).await;
    // The first request's body is exactly its length; what follows is a
    // second request without a token, which must be decided on its own.
    let mut req = request(
        &token,
        "POST /v1/a HTTP/1.1",
        "Content-Length: 4\r\n\r\nbody",
    );
    req.extend_from_slice(b"GET /v1/second HTTP/1.1\r\nHost: x\r\n\r\n");
    let (got, _) = raw(gw.addr, &req, 2).await;
    assert_eq!(got[0].status, 200);
    assert_eq!(got[1].status, 401, "{got:?}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, "/v1/a");
}

#[tokio::test]
async fn connection_cannot_strip_the_identity_headers_the_gateway_sets() {
    let (_idp, upstream, gw, token) = stack_with("", DEFAULT_ROUTES).await;
    // A client lists our identity header (and its own forged copy) as
    // hop-by-hop, hoping the gateway drops what it set or keeps the forgery.
    let req = request(
        &token,
        "GET /v1/a HTTP/1.1",
        "Connection: keep-alive, x-portcullis-scopes, x-portcullis-tenant, x-portcullis-subject, x-forwarded-for\r\nX-Portcullis-Scopes: Admin.All\r\n\r\n",
    );
    let (got, _) = raw(gw.addr, &req, 1).await;
    assert_eq!(got[0].status, 200, "{got:?}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(h.get_all("x-portcullis-scopes").iter().count(), 1);
    assert_eq!(h["x-portcullis-scopes"], "Models.Invoke");
    assert_eq!(h["x-portcullis-tenant"], TENANT);
    assert_eq!(
        h["x-portcullis-subject"],
        "690222be-ff1a-4d56-abd1-7e4f7d38e474"
    );
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert!(
        h.get("connection")
            .is_none_or(|v| !v.to_str().unwrap().contains("portcullis"))
    );
    assert!(!got[0].body.contains("Admin.All"));
}
