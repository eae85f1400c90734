//! Server-sent events as they cross the gateway: where one event ends in
//! the bytes that have come, so that a stage can pass, hold or drop whole
//! events (their fields are read by the `sse-parse` crate).

/// The end of the first complete event in `buf` (just past the blank line
/// that ends it), searching from `line_start`, the start of a line; or,
/// when no event is complete yet, where the search resumes (the start of
/// the last, unfinished line). Lines end in CRLF, LF or CR; a CR at the end
/// of what has come may be half of a CRLF, so its line waits.
pub fn event_end(buf: &[u8], mut line_start: usize) -> Result<usize, usize> {
    let mut i = line_start;
    while i < buf.len() {
        match buf[i] {
            b'\n' | b'\r' => {
                let end = match (buf[i], buf.get(i + 1)) {
                    (b'\r', None) => return Err(line_start),
                    (b'\r', Some(b'\n')) => i + 2,
                    _ => i + 1,
                };
                if i == line_start {
                    return Ok(end);
                }
                line_start = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    Err(line_start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_ends_at_a_blank_line_whatever_the_line_ends() {
        assert_eq!(event_end(b"data: a\n\nrest", 0), Ok(9));
        assert_eq!(event_end(b"data: a\r\n\r\n", 0), Ok(11));
        assert_eq!(
            event_end(b"data: a\r\r", 0),
            Err(8),
            "the CR may be half a CRLF"
        );
        assert_eq!(event_end(b"data: a\r\rx", 8), Ok(9));
        assert_eq!(event_end(b"data: a\ndata: b\n", 0), Err(16));
        assert_eq!(event_end(b"data: a\ndata: b\n\n", 16), Ok(17));
        assert_eq!(event_end(b"data: a\ndata", 0), Err(8));
        assert_eq!(event_end(b"\n", 0), Ok(1));
    }
}
