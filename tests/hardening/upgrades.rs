//! Protocol switches: only the upgrades a route allows are tunnelled.

use super::*;

/// An upstream that honours every upgrade (h2c included) with a 101 and
/// then keeps what arrives in the tunnel; `always` also switches requests
/// that asked for nothing. Every request head it parses and every tunnelled
/// byte are kept, so a test can prove what passed unchecked.
async fn switching_upstream(always: bool) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end + 4);
                    log.lock().unwrap().push(head.clone());
                    let asked = head.lines().find_map(|l| l.strip_prefix("upgrade:"));
                    if asked.is_some() || always {
                        let proto = asked.map_or("h2c", str::trim).to_owned();
                        let switch = format!(
                            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {proto}\r\n\r\n"
                        );
                        tcp.write_all(switch.as_bytes()).await.unwrap();
                        // Everything from here on is the tunnel's.
                        let mut tunnelled = String::from_utf8_lossy(&buf).into_owned();
                        while let Ok(n) = tcp.read(&mut chunk).await {
                            if n == 0 {
                                break;
                            }
                            tunnelled.push_str(&String::from_utf8_lossy(&chunk[..n]));
                            log.lock().unwrap().push(format!("tunnel:{tunnelled}"));
                        }
                        return;
                    }
                    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if tcp.write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

async fn gateway_before(upstream: SocketAddr, idp: &TestIdp, routes: &str) -> TestGateway {
    TestGateway::start(&config(upstream, &oidc_issuer(idp, ""), routes)).await
}

#[tokio::test]
async fn an_h2c_upgrade_is_never_forwarded_so_nothing_passes_unchecked() {
    let idp = TestIdp::start().await;
    let (upstream, seen) = switching_upstream(false).await;
    let gw = gateway_before(upstream, &idp, DEFAULT_ROUTES).await;
    let token = idp.token().scp("Models.Invoke").sign();
    // An authorized h2c upgrade, and behind it a request without a token
    // that an upstream tunnel would carry unchecked.
    for upgrade in [
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        "Connection: Upgrade\r\nUpgrade: h2c\r\n",
        "Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n",
    ] {
        seen.lock().unwrap().clear();
        let mut req = request(&token, "GET /v1/a HTTP/1.1", &format!("{upgrade}\r\n"));
        req.extend_from_slice(b"GET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        let (got, _) = raw(gw.addr, &req, 2).await;
        assert_eq!(got[0].status, 200, "served as plain HTTP/1.1: {got:?}");
        assert_eq!(
            got.get(1).map(|a| a.status),
            Some(401),
            "{upgrade}: {got:?}"
        );
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1, "{upgrade}: {seen:?}");
        assert!(
            !seen[0].contains("upgrade") && !seen[0].contains("http2-settings"),
            "{seen:?}"
        );
    }
}

#[tokio::test]
async fn an_upstream_that_switches_protocols_unasked_gets_no_tunnel() {
    let idp = TestIdp::start().await;
    let (upstream, seen) = switching_upstream(true).await;
    let gw = gateway_before(upstream, &idp, DEFAULT_ROUTES).await;
    let token = idp.token().scp("Models.Invoke").sign();
    let mut req = request(&token, "GET /v1/a HTTP/1.1", "\r\n");
    req.extend_from_slice(b"GET /v1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    let (got, _) = raw(gw.addr, &req, 2).await;
    assert_eq!(got[0].status, 502, "{got:?}");
    assert_eq!(got.get(1).map(|a| a.status), Some(401), "{got:?}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        1,
        "nothing reached the upstream's tunnel: {seen:?}"
    );
}

#[tokio::test]
async fn only_the_upgrades_a_route_allows_are_tunnelled() {
    let idp = TestIdp::start().await;
    let (upstream, seen) = switching_upstream(false).await;
    let routes = r#"
[[routes]]
name = "plain"
prefix = "/plain"
scopes = ["Models.Invoke"]
upgrades = []

[[routes]]
name = "api"
prefix = "/"
scopes = ["Models.Invoke"]
"#;
    let gw = gateway_before(upstream, &idp, routes).await;
    let token = idp.token().scp("Models.Invoke").sign();
    let ws = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    // Not allowed here: forwarded as a plain request.
    let (got, _) = raw(gw.addr, &request(&token, "GET /plain/ws HTTP/1.1", ws), 1).await;
    assert_eq!(got[0].status, 200, "{got:?}");
    assert!(!seen.lock().unwrap()[0].contains("upgrade"));
    // Allowed by default: the switch goes through.
    let (got, _) = raw(gw.addr, &request(&token, "GET /ws HTTP/1.1", ws), 1).await;
    assert_eq!(got[0].status, 101, "{got:?}");
    assert!(seen.lock().unwrap()[1].contains("upgrade: websocket"));
    // And only after the handshake itself was authorized.
    let (got, _) = raw(gw.addr, &request("bad", "GET /ws HTTP/1.1", ws), 1).await;
    assert_eq!(got[0].status, 401, "{got:?}");
    assert_eq!(seen.lock().unwrap().len(), 2);
}
