//! Where an issuer's tokens carry scopes and roles: `scope_claims` and
//! `role_claims`, claim names or paths into nested claims.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerKind {
    Entra,
    Oidc,
}

/// `scope_claims` and `role_claims`: the claims, read in order and joined,
/// that hold an issuer's scopes and roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimSources {
    pub scopes: Vec<ClaimPath>,
    pub roles: Vec<ClaimPath>,
}

impl ClaimSources {
    /// Entra's: `scp` and `roles`.
    pub fn entra() -> Self {
        Self {
            scopes: vec![ClaimPath::top("scp")],
            roles: vec![ClaimPath::top("roles")],
        }
    }

    /// Any other provider's: RFC 9068 `scope`, then `scp` (Okta, and
    /// Entra-shaped tokens), and `roles`.
    pub fn oidc() -> Self {
        Self {
            scopes: vec![ClaimPath::top("scope"), ClaimPath::top("scp")],
            roles: vec![ClaimPath::top("roles")],
        }
    }
}

/// A claim, or a claim nested in objects, named as a TOML dotted key:
/// `scp`, `realm_access.roles`, `resource_access."my.client".roles`,
/// `"https://example.com/roles"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(Vec<String>);

impl ClaimPath {
    fn top(name: &str) -> Self {
        Self(vec![name.to_owned()])
    }

    /// Parses a dotted key with TOML's own grammar (bare and quoted keys).
    pub fn parse(text: &str) -> Option<Self> {
        if !is_one_key(text) {
            return None;
        }
        let table: toml::Table = toml::from_str(&format!("{text} = true\n")).ok()?;
        let mut segments = Vec::new();
        let mut level = &table;
        loop {
            let mut entries = level.iter();
            let (key, value) = entries.next()?;
            if entries.next().is_some() {
                return None;
            }
            segments.push(key.clone());
            match value {
                toml::Value::Table(next) => level = next,
                toml::Value::Boolean(true) => return Some(Self(segments)),
                _ => return None,
            }
        }
    }

    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The claim's name when it is not nested.
    pub fn top_level(&self) -> Option<&str> {
        match self.0.as_slice() {
            [name] => Some(name),
            _ => None,
        }
    }
}

/// Whether `text` holds nothing but a key: no line break, and no `=`, `#`
/// or brackets outside quotes, so it cannot smuggle a value or a comment
/// into the document it is parsed in.
fn is_one_key(text: &str) -> bool {
    let mut quote = None;
    let mut escaped = false;
    for c in text.chars() {
        if matches!(c, '\n' | '\r') {
            return false;
        }
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if matches!(c, '"' | '\'') => quote = Some(c),
            None if matches!(c, '=' | '#' | '[' | ']') => return false,
            None => {}
        }
    }
    quote.is_none()
}
