//! HTTP/2 spoken by hand: connection-specific headers and rapid reset.

use super::*;

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// A header block of literal fields without indexing (RFC 7541 §6.2.2),
/// so that any header, legal or not, goes on the wire as written.
fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

pub(super) const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;

/// Sends one HTTP/2 request (prior knowledge) with exactly `headers`, and
/// returns the frame types the gateway sent for stream 1 or the connection.
pub(super) async fn h2_raw(addr: SocketAddr, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    // END_STREAM | END_HEADERS
    out.extend(frame(HEADERS, 0x5, 1, &hpack(headers)));
    tcp.write_all(&out).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 8192];
        loop {
            while buf.len() >= 9 {
                let len =
                    (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let (kind, stream) = (
                    buf[3],
                    u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
                );
                if stream == 1 || kind == GOAWAY {
                    seen.push(kind);
                    if matches!(kind, HEADERS | RST_STREAM | GOAWAY) {
                        return;
                    }
                }
                buf.drain(..9 + len);
            }
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer in time");
    seen
}

#[tokio::test]
async fn http2_requests_with_connection_specific_headers_are_reset() {
    let (_idp, upstream, gw, token) = stack_with("", DEFAULT_ROUTES).await;
    let bearer = format!("Bearer {token}");
    let base = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/v1/h2"),
        (":authority", "x"),
        ("authorization", bearer.as_str()),
    ];
    // The well-formed request is answered...
    assert_eq!(h2_raw(gw.addr, &base).await.last(), Some(&HEADERS));
    assert_eq!(upstream.seen().len(), 1);
    // ...and each connection-specific header (RFC 9113 §8.2.2) makes the
    // request malformed: reset, never forwarded.
    for extra in [
        ("connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("keep-alive", "timeout=5"),
        ("upgrade", "websocket"),
        ("proxy-connection", "keep-alive"),
        ("te", "gzip"),
    ] {
        let mut headers = base.to_vec();
        headers.push(extra);
        let frames = h2_raw(gw.addr, &headers).await;
        assert!(
            matches!(frames.last(), Some(&RST_STREAM | &GOAWAY)),
            "{extra:?} was answered: frames {frames:?}"
        );
    }
    assert_eq!(upstream.seen().len(), 1, "{:?}", upstream.seen());
}

#[tokio::test]
async fn an_http2_rapid_reset_flood_is_cut_off_and_the_gateway_keeps_serving() {
    let (_idp, upstream, gw, token) = stack_with("", DEFAULT_ROUTES).await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    const FLOOD: usize = 2000;
    let mut sent = 0;
    for _ in 0..FLOOD {
        let req = Request::get(format!("http://{}/v1/flood", gw.addr))
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        let Ok(ready) = client.ready().await else {
            break;
        };
        client = ready;
        let Ok((_resp, mut stream)) = client.send_request(req, true) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    // The gateway ended the connection (GOAWAY with ENHANCE_YOUR_CALM,
    // then close; the client may see either first) rather than take the
    // flood. Streams it accepted before their reset arrived were forwarded:
    // how many depends on how its reads interleave with accepting (58 on the
    // development VM, 256 on a CI runner), but the flood never runs through.
    let ended = tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the gateway closed the flooding connection")
        .unwrap();
    assert!(
        ended.is_err(),
        "the connection survived {sent} reset streams"
    );
    assert!(
        upstream.seen().len() < FLOOD / 4,
        "{} of {sent} reset streams reached the upstream",
        upstream.seen().len()
    );
    // Everyone else is served as before.
    assert_eq!(
        get(&gw.url("/v1/after"), Some(&token)).await.status(),
        StatusCode::OK
    );
}
