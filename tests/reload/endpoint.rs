//! The reload endpoint: loopback only, and a conflict without a file.

use super::*;

/// This machine's address on its default route: a peer that is not
/// loopback. (A UDP `connect` sends nothing.)
fn outward_address() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("192.0.2.1:9").expect("a default route");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "need a non-loopback address, got {ip}");
    ip
}

#[tokio::test]
async fn reload_is_refused_to_a_peer_off_loopback() {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &routes("Models.Invoke"),
    )
    .replace(
        "admin_listen = \"127.0.0.1:0\"",
        "admin_listen = \"0.0.0.0:0\"",
    );
    let gw = TestGateway::start_file(&cfg).await;
    let admin = std::net::SocketAddr::new(outward_address(), gw.admin.port());
    let resp = send(
        Request::post(format!("http://{admin}/reload"))
            .header("x-forwarded-for", "127.0.0.1")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert_eq!(text(resp).await, "reload is allowed from loopback only\n");
    // The same request from loopback is served.
    let (status, answer) = gw.post_reload().await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["result"], "unchanged");
}

#[tokio::test]
async fn reload_without_a_file_is_a_conflict() {
    let (_idp, _upstream, gw) = default_stack().await;
    // Started from text: nothing to reload.
    let resp = send(
        Request::post(format!("http://{}/reload", gw.admin))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let get = send(
        Request::get(format!("http://{}/reload", gw.admin))
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
}
