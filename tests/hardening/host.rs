//! The Host header: one, and on HTTP/2 the same as the authority.

use super::http2::{HEADERS, h2_raw};
use super::*;

#[tokio::test]
async fn two_hosts_or_none_are_refused_and_http2_host_must_match_authority() {
    let (_idp, upstream, gw, token) = stack_with("", DEFAULT_ROUTES).await;
    let auth = format!("Authorization: Bearer {token}\r\n");
    for req in [
        format!("GET /v1/a HTTP/1.1\r\nHost: a\r\nHost: b\r\n{auth}\r\n"),
        format!("GET /v1/a HTTP/1.1\r\nHost: a\r\nHost: a\r\n{auth}\r\n"),
        format!("GET /v1/a HTTP/1.1\r\n{auth}\r\n"),
        format!("GET http://a/v1/a HTTP/1.1\r\nHost: b\r\n{auth}\r\n"),
    ] {
        let (got, _) = raw(gw.addr, req.as_bytes(), 1).await;
        assert_eq!(got[0].status, 400, "{req:?}: {got:?}");
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());

    let bearer = format!("Bearer {token}");
    let h2 = |host: &'static str| {
        let bearer = bearer.clone();
        async move {
            h2_raw(
                gw.addr,
                &[
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":path", "/v1/h2"),
                    (":authority", "x"),
                    ("host", host),
                    ("authorization", bearer.as_str()),
                ],
            )
            .await
        }
    };
    assert_eq!(h2("x").await.last(), Some(&HEADERS));
    assert_eq!(upstream.seen().len(), 1, "a Host that agrees is fine");
    assert_eq!(h2("elsewhere").await.last(), Some(&HEADERS));
    assert_eq!(upstream.seen().len(), 1, "{:?}", upstream.seen());
    let records = gw.audit_records(6).await;
    let reasons: Vec<&str> = records
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "bad_host", "bad_host", "bad_host", "bad_host", "allowed", "bad_host"
        ]
    );
}
