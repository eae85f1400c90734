//! The floor of Portcullis' stack: a reverse proxy made of nothing but the
//! parts the gateway forwards with (tokio's multi-thread runtime, hyper-util's
//! HTTP/1+2 server and pooled legacy client, TCP_NODELAY), and none of its
//! work: no routing, token, policy, headers, metrics or audit.
//!
//! The load benchmark runs it as the `hyper` scenario, beside nginx and the
//! gateway's public route, to separate what the stack costs per request from
//! what the gateway adds:
//!
//! ```sh
//! cargo run --release --example bare_proxy -- 127.0.0.1:18080 127.0.0.1:9000
//! ```
//!
//! `BARE_MODE` tries the stack's other shapes (scenarios `hyper-h1` and
//! `hyper-conn`): `h1-pool`, hyper's HTTP/1 server alone (no protocol
//! detection); `h1-conn`, that and each client connection with its own
//! upstream connection through hyper's connection-level client (no pool,
//! no pool lock, no key hashing per request).

use std::convert::Infallible;
use std::net::SocketAddr;

use http::uri::{Authority, Scheme, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type Body = http_body_util::Either<Incoming, http_body_util::Empty<bytes::Bytes>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        return Err("usage: bare_proxy LISTEN_ADDR UPSTREAM_HOST:PORT".into());
    };
    let listen: SocketAddr = listen.parse()?;
    let upstream: Authority = upstream.parse()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .build(connector);
    let listener = TcpListener::bind(listen).await?;
    let mode = std::env::var("BARE_MODE").unwrap_or_default();
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = client.clone();
        let upstream = upstream.clone();
        if mode == "h1-conn" {
            tokio::spawn(h1_conn(stream, upstream));
            continue;
        }
        let h1_only = mode == "h1-pool";
        tokio::spawn(async move {
            let service =
                service_fn(move |request| forward(client.clone(), upstream.clone(), request));
            if h1_only {
                return serve_h1(stream, service).await;
            }
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).keep_alive(true);
            // A client that goes away is not this example's concern.
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// HTTP/1 only, each client connection with its own upstream connection
/// (no pool).
async fn h1_conn(stream: tokio::net::TcpStream, upstream: Authority) {
    let Ok(up) = tokio::net::TcpStream::connect(upstream.as_str()).await else {
        return;
    };
    let _ = up.set_nodelay(true);
    let Ok((sender, conn)) =
        hyper::client::conn::http1::handshake::<_, Incoming>(TokioIo::new(up)).await
    else {
        return;
    };
    tokio::spawn(conn);
    let sender = std::sync::Arc::new(tokio::sync::Mutex::new(sender));
    let service = service_fn(move |request: Request<Incoming>| {
        let sender = sender.clone();
        async move {
            let mut sender = sender.lock().await;
            let (mut parts, body) = request.into_parts();
            if let Some(pq) = parts.uri.path_and_query() {
                parts.uri = Uri::from(pq.clone());
            }
            match sender.send_request(Request::from_parts(parts, body)).await {
                Ok(response) => Ok::<_, Infallible>(response.map(Body::Left)),
                Err(_) => {
                    let mut response = Response::new(Body::Right(http_body_util::Empty::new()));
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                    Ok(response)
                }
            }
        }
    });
    serve_h1(stream, service).await;
}

/// Serves one client connection with hyper's HTTP/1 server alone.
async fn serve_h1<S>(stream: tokio::net::TcpStream, service: S)
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    // A client that goes away is not this example's concern.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The request to the upstream, its answer back; 502 if it cannot be had.
async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let mut uri = Uri::builder().scheme(Scheme::HTTP).authority(upstream);
    if let Some(path) = parts.uri.path_and_query() {
        uri = uri.path_and_query(path.clone());
    }
    let bad_gateway = || {
        let mut response = Response::new(Body::Right(http_body_util::Empty::new()));
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response
    };
    let Ok(uri) = uri.build() else {
        return Ok(bad_gateway());
    };
    parts.uri = uri;
    match client.request(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response.map(Body::Left)),
        Err(_) => Ok(bad_gateway()),
    }
}
