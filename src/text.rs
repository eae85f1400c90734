//! Addresses and bytes written as ASCII without the formatting machinery:
//! what the request path (`X-Forwarded-For`, request ids) and every audit
//! record write, where `format!` was a measurable share of the work.

use std::io::Write as _;
use std::net::IpAddr;

/// One byte as two lower-case hex digits.
pub fn hex_pair(b: u8) -> [u8; 2] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]
}

/// `bytes` in lower-case hex.
pub fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.extend_from_slice(&hex_pair(*b));
    }
}

/// An address as `Display` writes it; IPv4 directly (IPv6 through
/// `Display`: its zero compression is not worth restating).
pub fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_hex_read_as_display_writes_them() {
        for addr in [
            "0.0.0.0",
            "10.100.9.255",
            "192.0.2.7",
            "255.255.255.255",
            "::1",
            "2001:db8::17",
            "::ffff:192.0.2.7",
        ] {
            let addr: IpAddr = addr.parse().unwrap();
            let mut out = Vec::new();
            write_ip(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
        let bytes: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        write_hex(&mut out, &bytes);
        let plain: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(String::from_utf8(out).unwrap(), plain);
    }
}
