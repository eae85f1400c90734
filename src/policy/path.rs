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

/// What `;` parameters a normalized path's segments carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parameters {
    None,
    /// `name;param` segments (matrix parameters, `;jsessionid=…`).
    Plain,
    /// A parameter on an empty, `.` or `..` segment (`..;`, `.;x`, `/;x`):
    /// a servlet-style server reads it as that dot segment, never allowed.
    OnDotSegment,
}

/// Finds `;` parameters in a normalized path (an encoded `%3B` is data, not
/// a delimiter, and is left alone).
pub fn parameters(path: &str) -> Parameters {
    if !path.contains(';') {
        return Parameters::None;
    }
    let on_dot = path.split('/').skip(1).any(|segment| {
        segment
            .split_once(';')
            .is_some_and(|(name, _)| matches!(name, "" | "." | ".."))
    });
    if on_dot {
        Parameters::OnDotSegment
    } else {
        Parameters::Plain
    }
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
/// Works on bytes: everything else is copied as it is, so characters
/// outside ASCII survive whole.
fn decode_unreserved(seg: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(seg.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
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
            v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => out.push(v),
            v => out.extend_from_slice(&[b'%', HEX[usize::from(v >> 4)], HEX[usize::from(v & 15)]]),
        }
        i += 3;
    }
    // Only whole characters were copied and only ASCII was added.
    String::from_utf8(out).map_err(|_| PathError::Ambiguous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_parameters_are_found_and_dot_segments_with_them_singled_out() {
        assert_eq!(parameters("/a/b"), Parameters::None);
        assert_eq!(parameters("/a/b%3Bc"), Parameters::None);
        assert_eq!(parameters("/a;jsessionid=1/b"), Parameters::Plain);
        assert_eq!(parameters("/a/b;v=2"), Parameters::Plain);
        for dot in ["/open/..;/admin", "/open/.;/x", "/;x/a", "/a/..;x", "/..;"] {
            assert_eq!(parameters(dot), Parameters::OnDotSegment, "{dot}");
        }
    }

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
            // Found by the `path` fuzz target: characters outside ASCII
            // were rebuilt byte by byte as Latin-1, so a second pass
            // changed the path again.
            ("/open\u{45f}ai/x/%2e", Ok("/open\u{45f}ai/x/")),
            ("/caf\u{e9}%20/..", Ok("/")),
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

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Paths built from the pieces that matter: separators, dot
        /// segments (plain and encoded), escapes, letters, and characters
        /// outside ASCII.
        fn paths() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("/".to_owned()),
                Just(".".to_owned()),
                Just("..".to_owned()),
                Just("%2e".to_owned()),
                Just("%2E%2e".to_owned()),
                Just("%41".to_owned()),
                Just("%3f".to_owned()),
                Just("%".to_owned()),
                "[a-z]{1,3}",
                "\\PC",
            ];
            prop::collection::vec(piece, 0..12).prop_map(|v| format!("/{}", v.concat()))
        }

        proptest! {
            #[test]
            fn normalizing_twice_changes_nothing(path in paths()) {
                if let Ok(once) = normalize(&path) {
                    let twice = normalize(&once);
                    prop_assert_eq!(twice.as_deref(), Ok(&*once));
                }
            }

            #[test]
            fn a_normalized_path_never_climbs_above_the_root(path in paths()) {
                if let Ok(p) = normalize(&path) {
                    prop_assert!(p.starts_with('/'));
                    prop_assert!(!p.split('/').any(|s| s == ".." || s == "."), "{:?} -> {:?}", path, p);
                    // Every `..` it resolved had a segment to remove.
                    let depth = path[1..].split('/').try_fold(0i64, |d, s| {
                        let s = s.replace("%2e", ".").replace("%2E", ".");
                        match s.as_str() {
                            ".." if d == 0 => None,
                            ".." => Some(d - 1),
                            "" | "." => Some(d),
                            _ => Some(d + 1),
                        }
                    });
                    prop_assert!(depth.is_some(), "{:?} climbs above the root yet gave {:?}", path, p);
                }
            }
        }
    }
}
