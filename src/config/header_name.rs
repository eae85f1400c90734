//! Header names as the gateway compares them: `upstream.strip_headers`
//! patterns, and any spelling an upstream may fold together.

/// A header name to strip, kept as the gateway compares names (see
/// [`normalize_header_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderPattern {
    Exact(String),
    /// Every name that starts with this.
    Prefix(String),
}

impl HeaderPattern {
    /// Whether `name`, in any spelling, matches; nothing is allocated.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(n) => n.len() == name.len() && is_spelled_as(n, name),
            Self::Prefix(p) => p.len() <= name.len() && is_spelled_as(p, name),
        }
    }
}

/// A header name as the gateway compares names: lower-case, with `_` read
/// as `-` (many upstream stacks fold the two together).
pub fn normalize_header_name(name: &str) -> String {
    name.bytes().map(|b| char::from(fold(b))).collect()
}

/// Whether `name` begins with another spelling of `normalized` (the whole
/// of it, when the two are as long).
pub fn is_spelled_as(normalized: &str, name: &str) -> bool {
    normalized
        .bytes()
        .zip(name.bytes())
        .all(|(n, b)| n == fold(b))
}

fn fold(b: u8) -> u8 {
    match b {
        b'_' => b'-',
        b => b.to_ascii_lowercase(),
    }
}
