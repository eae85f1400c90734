//! What a forwarded answer's audit record learns as the answer streams:
//! the bytes sent, and how it ended. The record is written then.

use bytes::Bytes;

use crate::audit::{End, Pending};
use crate::body::{Ended, Watch};
use crate::streams::EndingOf;

/// Counts a response's bytes and finishes its request's record when the
/// response ends, fails or is dropped early, or the gateway ended it.
pub struct Recorder {
    pending: Pending,
    bytes: u64,
    /// The exchange's ending, if the gateway ends it.
    ending: Option<EndingOf>,
}

impl Recorder {
    pub fn new(pending: Pending, ending: Option<EndingOf>) -> Self {
        Self {
            pending,
            bytes: 0,
            ending,
        }
    }
}

impl Watch for Recorder {
    fn frame(&mut self, data: &Bytes) {
        self.bytes += data.len() as u64;
    }

    fn end(mut self, ended: Ended) {
        let terminated = self.ending.as_ref().and_then(EndingOf::reason);
        let end = match ended {
            _ if terminated.is_some() => End::Terminated,
            Ended::Complete => End::Complete,
            Ended::Failed => End::UpstreamError,
            Ended::Dropped => self.pending.dropped_end(),
        };
        if let Some(r) = self.pending.record() {
            r.bytes_out = self.bytes;
            r.end_reason = terminated;
        }
        self.pending.finish(end);
    }
}
