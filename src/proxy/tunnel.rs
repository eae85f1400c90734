//! Upgraded connections (WebSocket): bytes copied both ways until either
//! side closes, the access ends or shutdown cuts the tunnel, then one
//! closing record.
//!
//! When the access ends, a WebSocket client gets a Close frame 1008 with
//! the reason, put after the last whole frame the server sent (the frame
//! in flight is finished first, for up to a second); the upstream's
//! connection is closed at once after it. Other protocols are closed.

use std::io;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::audit::{End, Pending};
use crate::metrics::OpenConnection;
use crate::streams::websocket::{Frames, POLICY_VIOLATION, close_frame};
use crate::streams::{Ending, Lifetime};

/// How long an ending tunnel waits for the server's frame in flight, and
/// then for the client's answer to the Close frame.
const CLOSING: Duration = Duration::from_secs(1);

/// Both halves of an upgrade that the upstream accepted.
pub struct Upgrade {
    pub client: OnUpgrade,
    pub upstream: OnUpgrade,
    /// The protocol is WebSocket: it is closed with a Close frame.
    pub websocket: bool,
    /// The exchange's hold on its access.
    pub lifetime: Option<Lifetime>,
}

/// Runs one tunnel to its end.
pub async fn run(
    mut upgrade: Upgrade,
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
    let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
    let (mut upstream_read, mut upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let mut down = Pump::new(upgrade.websocket);
    let mut up = Pump::new(false);
    let mut lifetime = upgrade.lifetime.take();
    let (end, ended) = loop {
        if down.done && up.done {
            break (End::Complete, None);
        }
        tokio::select! {
            moved = down.step(&mut upstream_read, &mut client_write), if !down.done => {
                if let Err(e) = moved {
                    tracing::debug!(error = %e, "tunnel closed with an error");
                    break (End::ClientGone, None);
                }
            }
            moved = up.step(&mut client_read, &mut upstream_write), if !up.done => {
                if let Err(e) = moved {
                    tracing::debug!(error = %e, "tunnel closed with an error");
                    break (End::ClientGone, None);
                }
            }
            ending = ended(&mut lifetime) => break (End::Terminated, Some(ending)),
            () = cut.cancelled() => break (End::Shutdown, None),
        }
    };
    if let (Some(ending), Some(lifetime)) = (&ended, &lifetime) {
        lifetime.acted(ending);
        if upgrade.websocket {
            let closed = close(&mut down, &mut upstream_read, &mut client_write, ending);
            if tokio::time::timeout(CLOSING, closed).await.is_ok() {
                // The upstream is done with; the client may answer.
                drop((upstream_read, upstream_write));
                let _ = tokio::time::timeout(CLOSING, drain(&mut client_read)).await;
            }
        }
    }
    drop(lifetime);
    if let Some(mut r) = record {
        if let Some(rec) = r.record() {
            rec.bytes_in = up.moved;
            rec.bytes_out = down.moved;
            rec.end_reason = ended.as_ref().map(Ending::reason);
        }
        r.finish(end);
    }
}

/// Resolves when the access ends; never without a lifetime.
async fn ended(lifetime: &mut Option<Lifetime>) -> Ending {
    match lifetime {
        Some(l) => l.ended().await,
        None => std::future::pending().await,
    }
}

/// Finishes the server's frame in flight, then sends the Close frame with
/// the reason.
async fn close<R, W>(down: &mut Pump, from: &mut R, to: &mut W, ending: &Ending) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    down.finish_frame(from, to).await?;
    to.write_all(&close_frame(POLICY_VIOLATION, ending.reason()))
        .await?;
    to.flush().await?;
    to.shutdown().await
}

/// Reads what the client still sends (its Close frame) until it closes.
async fn drain<R: AsyncRead + Unpin>(from: &mut R) {
    let mut buf = [0u8; 1024];
    while matches!(from.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// One direction of a tunnel: what was read and not yet written, and
/// where the WebSocket frames end in what was written.
struct Pump {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// `Some` for the server's side of a WebSocket.
    frames: Option<Frames>,
    moved: u64,
    /// The source ended and the sink was shut down.
    done: bool,
}

impl Pump {
    fn new(websocket: bool) -> Self {
        Self {
            buf: vec![0; 8 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
            frames: websocket.then(Frames::default),
            moved: 0,
            done: false,
        }
    }

    /// Reads, or writes what was read: one step, so that dropping its
    /// future loses nothing (a read or a write either happened or not).
    async fn step<R, W>(&mut self, from: &mut R, to: &mut W) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.start == self.end {
            let n = from.read(&mut self.buf).await?;
            if n == 0 {
                to.shutdown().await?;
                self.done = true;
                return Ok(());
            }
            (self.start, self.end) = (0, n);
        }
        let n = to.write(&self.buf[self.start..self.end]).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.wrote(n);
        Ok(())
    }

    fn wrote(&mut self, n: usize) {
        if let Some(f) = &mut self.frames {
            f.saw(&self.buf[self.start..self.start + n]);
        }
        self.start += n;
        self.moved += n as u64;
    }

    /// Writes the rest of the frame in flight, reading it if need be.
    async fn finish_frame<R, W>(&mut self, from: &mut R, to: &mut W) -> io::Result<()>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let Some(frames) = self.frames else {
            return Ok(());
        };
        match frames.until_boundary(&self.buf[self.start..self.end]) {
            Some(n) => {
                to.write_all(&self.buf[self.start..self.start + n]).await?;
                self.wrote(n);
                Ok(())
            }
            None => {
                let pending = self.end - self.start;
                to.write_all(&self.buf[self.start..self.end]).await?;
                self.wrote(pending);
                let n = from.read(&mut self.buf).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                (self.start, self.end) = (0, n);
                Box::pin(self.finish_frame(from, to)).await
            }
        }
    }
}
