//! Upgraded connections (WebSocket): bytes copied both ways until either
//! side closes or shutdown cuts the tunnel, then one closing record.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::audit::{End, Pending};
use crate::metrics::OpenConnection;

/// Both halves of an upgrade that the upstream accepted.
pub struct Upgrade {
    pub client: OnUpgrade,
    pub upstream: OnUpgrade,
}

/// Runs one tunnel to its end.
pub async fn run(
    upgrade: Upgrade,
    mut record: Option<Pending>,
    cut: CancellationToken,
    open: OpenConnection,
) {
    let _open = open;
    let (client, upstream) = match tokio::try_join!(upgrade.client, upgrade.upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            if let Some(r) = record.take() {
                r.finish(End::ClientGone);
            }
            return;
        }
    };
    let mut client = CountingIo::new(TokioIo::new(client));
    let mut upstream = CountingIo::new(TokioIo::new(upstream));
    let end = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match copied {
            Ok(_) => End::Complete,
            Err(e) => {
                tracing::debug!(error = %e, "tunnel closed with an error");
                End::ClientGone
            }
        },
        () = cut.cancelled() => End::Shutdown,
    };
    if let Some(mut r) = record {
        if let Some(rec) = r.record() {
            rec.bytes_in = client.read;
            rec.bytes_out = upstream.read;
        }
        r.finish(end);
    }
}

/// An I/O object that counts the bytes read from it.
struct CountingIo<T> {
    inner: T,
    read: u64,
}

impl<T> CountingIo<T> {
    fn new(inner: T) -> Self {
        Self { inner, read: 0 }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CountingIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read += (buf.filled().len() - before) as u64;
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CountingIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
