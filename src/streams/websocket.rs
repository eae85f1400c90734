//! Where a WebSocket's frames end, in the bytes a tunnel copies from the
//! server to the client (RFC 6455 §5.2), so that a Close frame can be put
//! between two of them: the tunnel copies bytes and never parses a
//! message, so only the frame lengths are read, never a payload.

/// The close code for an ended access (RFC 6455 §7.4.1, 1008 "policy
/// violation"): clients re-authenticate rather than reconnect blindly.
pub const POLICY_VIOLATION: u16 = 1008;

/// Follows frame boundaries in a byte stream, fed in any pieces.
#[derive(Debug, Clone, Copy, Default)]
pub struct Frames {
    /// The header of the frame being read (at most 14 bytes).
    header: [u8; 14],
    /// Header bytes read so far.
    have: usize,
    /// The header's length, once its second byte is known (else 0).
    need: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
}

impl Frames {
    /// Whether the bytes seen so far end with a whole frame.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// Takes `bytes` as the next ones of the stream.
    pub fn saw(&mut self, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            if self.remaining > 0 {
                let n = self.remaining.min((bytes.len() - i) as u64);
                self.remaining -= n;
                i += n as usize;
                continue;
            }
            self.header[self.have] = bytes[i];
            self.have += 1;
            i += 1;
            if self.have == 2 {
                let ext = match self.header[1] & 0x7f {
                    126 => 2,
                    127 => 8,
                    _ => 0,
                };
                let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
                self.need = 2 + ext + mask;
            }
            if self.have >= 2 && self.have == self.need {
                self.remaining = self.payload_len();
                self.have = 0;
                self.need = 0;
            }
        }
    }

    /// How many of `bytes` (the next ones of the stream) complete the
    /// current frame: `None` when they do not.
    pub fn until_boundary(&self, bytes: &[u8]) -> Option<usize> {
        if self.at_boundary() {
            return Some(0);
        }
        let mut probe = *self;
        let mut i = 0;
        while i < bytes.len() {
            let n = match probe.remaining {
                0 => 1,
                r => r.min((bytes.len() - i) as u64) as usize,
            };
            probe.saw(&bytes[i..i + n]);
            i += n;
            if probe.at_boundary() {
                return Some(i);
            }
        }
        None
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut len = [0; 8];
                len.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(len)
            }
            n => u64::from(n),
        }
    }
}

/// A server's Close frame (unmasked) with `code` and `reason` (cut to the
/// 123 bytes a control frame has room for, at a character boundary).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x88);
    frame.push((2 + reason.len()) as u8);
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

    /// Frames as a real implementation writes them.
    fn frames(payload_lens: &[usize], masked: bool) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for (i, len) in payload_lens.iter().enumerate() {
            let mut frame = Frame::message(vec![i as u8; *len], OpCode::Data(Data::Binary), true);
            if masked {
                frame.header_mut().mask = Some([1, 2, 3, 4]);
            }
            frame.format(&mut bytes).unwrap();
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    #[test]
    fn frame_ends_are_found_whatever_the_pieces() {
        for masked in [false, true] {
            let (bytes, ends) = frames(&[0, 5, 125, 126, 300, 65_535, 65_536, 70_000], masked);
            for piece in [1, 2, 3, 7, 100, 4096, bytes.len()] {
                let mut f = Frames::default();
                let mut seen = 0;
                let mut boundaries = Vec::new();
                for chunk in bytes.chunks(piece) {
                    // Byte by byte within the piece, to see every boundary.
                    for b in chunk {
                        f.saw(std::slice::from_ref(b));
                        seen += 1;
                        if f.at_boundary() {
                            boundaries.push(seen);
                        }
                    }
                }
                assert_eq!(boundaries, ends, "masked {masked}, pieces of {piece}");
            }
        }
    }

    #[test]
    fn until_boundary_counts_the_rest_of_the_frame() {
        let (bytes, ends) = frames(&[10, 200], false);
        let mut f = Frames::default();
        assert_eq!(f.until_boundary(&bytes), Some(0), "nothing sent yet");
        f.saw(&bytes[..3]);
        assert_eq!(f.until_boundary(&bytes[3..]), Some(ends[0] - 3));
        assert_eq!(f.until_boundary(&bytes[3..5]), None, "not enough yet");
        f.saw(&bytes[3..ends[0] + 1]);
        assert_eq!(
            f.until_boundary(&bytes[ends[0] + 1..]),
            Some(ends[1] - ends[0] - 1),
            "a header read in part"
        );
    }

    #[test]
    fn the_close_frame_is_what_a_client_reads_as_one() {
        let bytes = close_frame(POLICY_VIOLATION, "token_expired");
        let mut cursor = std::io::Cursor::new(&bytes);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(header.is_final);
        assert_eq!(len, 15);
        let payload = &bytes[cursor.position() as usize..];
        assert_eq!(
            CloseCode::from(u16::from_be_bytes([payload[0], payload[1]])),
            CloseCode::Policy
        );
        assert_eq!(&payload[2..], b"token_expired");
        let long = "é".repeat(100);
        let frame = close_frame(POLICY_VIOLATION, &long);
        assert!(frame.len() <= 2 + 125);
        assert!(
            std::str::from_utf8(&frame[4..]).is_ok(),
            "cut at a character"
        );
    }
}
