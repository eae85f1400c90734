//! What a forwarded answer's audit record learns as the answer streams:
//! the bytes sent, and how it ended. The record is written then.

use bytes::Bytes;

use crate::audit::{End, Pending};
use crate::body::{Ended, Watch};

/// Counts a response's bytes and finishes its request's record when the
/// response ends, fails or is dropped early.
pub struct Recorder {
    pending: Pending,
    bytes: u64,
}

impl Recorder {
    pub fn new(pending: Pending) -> Self {
        Self { pending, bytes: 0 }
    }
}

impl Watch for Recorder {
    fn frame(&mut self, data: &Bytes) {
        self.bytes += data.len() as u64;
    }

    fn end(mut self, ended: Ended) {
        let end = match ended {
            Ended::Complete => End::Complete,
            Ended::Failed => End::UpstreamError,
            Ended::Dropped => self.pending.dropped_end(),
        };
        if let Some(r) = self.pending.record() {
            r.bytes_out = self.bytes;
        }
        self.pending.finish(end);
    }
}
