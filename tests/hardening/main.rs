//! Hostile clients: the limits on what one client may send or hold, and
//! request smuggling. Raw bytes over real sockets; the assertions are on
//! what the client is answered and what the upstream parsed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: tests

#[path = "../support/mod.rs"]
mod support;

mod bodies;
mod host;
mod http2;
mod limits;
mod smuggling;
mod tokens;
mod upgrades;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The default stack with `[limits]` lines and routes of the test's own.
async fn stack_with(limits: &str, routes: &str) -> (TestIdp, TestUpstream, TestGateway, String) {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let cfg = format!(
        "{}\n[limits]\n{limits}\n",
        config(upstream.addr, &oidc_issuer(&idp, ""), routes)
    );
    let gw = TestGateway::start(&cfg).await;
    let token = idp.token().scp("Models.Invoke").sign();
    (idp, upstream, gw, token)
}

/// One parsed response: status, head (lower-cased) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Complete responses in `buf` (each with a `content-length`).
fn answers(buf: &[u8]) -> Vec<Answer> {
    let text = String::from_utf8_lossy(buf);
    let mut rest: &str = &text;
    let mut out = Vec::new();
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = rest[..end].to_ascii_lowercase();
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_default();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap_or(0));
        let body_start = end + 4;
        if rest.len() < body_start + len {
            break;
        }
        out.push(Answer {
            status,
            head,
            body: rest[body_start..body_start + len].to_owned(),
        });
        rest = &rest[body_start + len..];
    }
    out
}

/// Writes `bytes` on a new connection and reads until `want` complete
/// responses arrived or the gateway closed the connection.
async fn raw(addr: SocketAddr, bytes: &[u8], want: usize) -> (Vec<Answer>, bool) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    read_answers(&mut tcp, want).await
}

/// Reads until `want` complete responses arrived or the connection closed.
async fn read_answers(tcp: &mut TcpStream, want: usize) -> (Vec<Answer>, bool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let read = async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if answers(&buf).len() >= want {
                return false;
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer in time");
    (answers(&buf), closed)
}

/// A request line and headers with the test token, then `rest`.
fn request(token: &str, head: &str, rest: &str) -> Vec<u8> {
    format!("{head}\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{rest}").into_bytes()
}
