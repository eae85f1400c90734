//! Request path normalization, done before routing; the normalized path is
//! what is matched and what is forwarded, so the upstream can never see a
//! path that routed differently here (RFC 3986 §5.2.4, §6.2.2).

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not an absolute path.
    NotAbsolute,
    /// An encoded `/`, `\` or NUL, a raw `\`, or a control byte: servers
    /// disagree on what these mean.
    Ambiguous,
    /// A `..` that would climb above the root.
    EscapesRoot,
}

/// Decodes percent-encoded unreserved characters, resolves `.` and `..`
/// segments and collapses repeated slashes. Borrows when nothing changes.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if path.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f) {
        return Err(PathError::Ambiguous);
    }
    let needs_work =
        path.contains("//") || path.contains('%') || path.split('/').any(|s| s == "." || s == "..");
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let mut segments: Vec<String> = Vec::new();
    let raw: Vec<&str> = path[1..].split('/').collect();
    let last = raw.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in raw.iter().enumerate() {
        let seg = decode_unreserved(seg)?;
        match seg.as_str() {
            "" => trailing_slash = i == last,
            "." => trailing_slash = i == last,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::EscapesRoot);
                }
                trailing_slash = i == last;
            }
            _ => {
                segments.push(seg);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// Decodes `%XX` of unreserved characters; keeps other escapes, uppercased.
fn decode_unreserved(seg: &str) -> Result<String, PathError> {
    let bytes = seg.as_bytes();
    let mut out = String::with_capacity(seg.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i] as char);
            i += 1;
            continue;
        }
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        let Some(value) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) else {
            return Err(PathError::Ambiguous);
        };
        match value {
            b'/' | b'\\' | 0 => return Err(PathError::Ambiguous),
            v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                out.push(v as char)
            }
            v => {
                out.push('%');
                out.push_str(&format!("{v:02X}"));
            }
        }
        i += 3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalization_table() {
        let cases: &[(&str, Result<&str, PathError>)] = &[
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a/b/", Ok("/a/b/")),
            ("//admin", Ok("/admin")),
            ("/a//b", Ok("/a/b")),
            ("/a/./b", Ok("/a/b")),
            ("/a/../admin", Ok("/admin")),
            ("/public/%2e%2e/admin", Ok("/admin")),
            ("/public/%2E%2E/admin", Ok("/admin")),
            ("/a/..", Ok("/")),
            ("/a/b/..", Ok("/a/")),
            ("/%61dmin", Ok("/admin")),
            ("/a%20b", Ok("/a%20b")),
            ("/a%3fb", Ok("/a%3Fb")),
            ("/a;x/../admin", Ok("/admin")),
            ("/..", Err(PathError::EscapesRoot)),
            ("/a/../../etc", Err(PathError::EscapesRoot)),
            ("/a%2Fb", Err(PathError::Ambiguous)),
            ("/a%2fb", Err(PathError::Ambiguous)),
            ("/a%5Cb", Err(PathError::Ambiguous)),
            ("/a\\b", Err(PathError::Ambiguous)),
            ("/a%00b", Err(PathError::Ambiguous)),
            ("/a%zz", Err(PathError::Ambiguous)),
            ("/a%4", Err(PathError::Ambiguous)),
            ("a/b", Err(PathError::NotAbsolute)),
            ("*", Err(PathError::NotAbsolute)),
        ];
        for (input, want) in cases {
            let got = normalize(input).map(|c| c.into_owned());
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                want.map_err(|e| e),
                "{input}"
            );
        }
    }

    #[test]
    fn normalization_is_idempotent() {
        for p in ["/a/../b//c/./d/", "/%7Euser/x", "/x/%41%42", "/a/b/../../c"] {
            let once = normalize(p).unwrap().into_owned();
            assert_eq!(normalize(&once).unwrap(), once, "{p}");
        }
    }
}
