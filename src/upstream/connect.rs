//! The upstream connector, without the per-response connection info.
//!
//! hyper-util's `HttpConnector` reports each connection's socket addresses
//! (`HttpInfo`), and the client then puts them into the extensions of every
//! response it carries: a map and a box for each forwarded request, which
//! nothing here reads. [`WithoutInfo`] wraps a connector and reports only
//! what the client needs of a connection: whether it goes through a proxy
//! and whether HTTP/2 was negotiated.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

/// A connector whose connections carry no extra info.
#[derive(Clone)]
pub struct WithoutInfo<C>(pub C);

impl<C> tower_service::Service<Uri> for WithoutInfo<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Unpin,
{
    type Response = Plain<C::Response>;
    type Error = C::Error;
    type Future = Connecting<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Connecting(self.0.call(uri))
    }
}

/// The wrapped connector's connection in the making.
pub struct Connecting<F>(F);

impl<F, T, E> Future for Connecting<F>
where
    F: Future<Output = Result<T, E>> + Unpin,
{
    type Output = Result<Plain<T>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_ok(Plain)
    }
}

/// A connection that reports no extra info; reads and writes pass through.
pub struct Plain<T>(T);

impl<T: Connection> Connection for Plain<T> {
    fn connected(&self) -> Connected {
        let inner = self.0.connected();
        let connected = Connected::new().proxy(inner.is_proxied());
        if inner.is_negotiated_h2() {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl<T: Read + Unpin> Read for Plain<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Plain<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reported(Connected);

    impl Connection for Reported {
        fn connected(&self) -> Connected {
            Connected::new()
                .proxy(self.0.is_proxied())
                .extra(7_u32)
                .negotiated_h2()
        }
    }

    #[test]
    fn a_connection_keeps_proxy_and_http2_and_drops_its_extra_info() {
        for proxied in [false, true] {
            let plain = Plain(Reported(Connected::new().proxy(proxied)));
            let connected = plain.connected();
            assert_eq!(connected.is_proxied(), proxied);
            assert!(connected.is_negotiated_h2());
            let mut extensions = http::Extensions::new();
            connected.get_extras(&mut extensions);
            assert!(extensions.is_empty(), "nothing for each response to carry");
        }
    }
}
