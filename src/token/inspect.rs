//! What a token says of itself, read without trusting it: for `portcullis
//! explain` and the debug line of a refused token, so that a user can see
//! the decisive claims (`iss`, `aud`, `tid`, `ver`, `exp`, the client, the
//! permissions) beside what the config accepts, without decoding the JWT
//! by hand. Never the signature, and nothing here decides anything.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// The decisive header fields and claims of a token, as it states them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFacts {
    pub alg: Option<String>,
    pub kid: Option<String>,
    pub typ: Option<String>,
    pub iss: Option<String>,
    pub aud: Vec<String>,
    pub tid: Option<String>,
    pub ver: Option<String>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    /// `azp`, else `appid`, else `client_id`.
    pub client: Option<String>,
    pub idtyp: Option<String>,
    /// `scp`, else `scope`, as the token has it (a string or a list).
    pub scopes: Option<String>,
    pub roles: Option<String>,
}

impl TokenFacts {
    /// `None` when the token is not three dot-separated parts whose first
    /// two are base64url JSON objects.
    pub fn read(token: &str) -> Option<Self> {
        let mut parts = token.split('.');
        let (header, payload) = (parts.next()?, parts.next()?);
        let header = object(header)?;
        let claims = object(payload)?;
        Some(Self::of(Some(&header), &claims))
    }

    /// The facts of a JOSE header (if any) and a claims object.
    pub fn of(header: Option<&Value>, claims: &Value) -> Self {
        let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let head = |k: &str| header.and_then(|h| text(h, k));
        let first = |keys: &[&str]| keys.iter().find_map(|k| text(claims, k));
        let listed = |k: &str| claims.get(k).map(show);
        Self {
            alg: head("alg"),
            kid: head("kid"),
            typ: head("typ"),
            iss: text(claims, "iss"),
            aud: match claims.get("aud") {
                Some(Value::String(a)) => vec![a.clone()],
                Some(Value::Array(a)) => a.iter().map(show).collect(),
                Some(other) => vec![show(other)],
                None => Vec::new(),
            },
            tid: text(claims, "tid"),
            ver: text(claims, "ver"),
            exp: claims.get("exp").and_then(Value::as_i64),
            nbf: claims.get("nbf").and_then(Value::as_i64),
            client: first(&["azp", "appid", "client_id"]),
            idtyp: text(claims, "idtyp"),
            scopes: listed("scp").or_else(|| listed("scope")),
            roles: listed("roles"),
        }
    }
}

fn object(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// A claim value for display: strings as they are, lists space-separated.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(show).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(v: Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    #[test]
    fn reads_the_decisive_claims_and_nothing_of_the_signature() {
        let token = format!(
            "{}.{}.c2lnbmF0dXJl",
            part(serde_json::json!({"alg": "RS256", "kid": "k1", "typ": "JWT"})),
            part(serde_json::json!({
                "iss": "https://idp", "aud": ["a", "b"], "exp": 10, "appid": "app",
                "scp": "x y", "roles": ["r"], "tid": "t", "ver": "1.0"
            }))
        );
        let facts = TokenFacts::read(&token).unwrap();
        assert_eq!(facts.aud, ["a", "b"]);
        assert_eq!(facts.client.as_deref(), Some("app"));
        assert_eq!(facts.scopes.as_deref(), Some("x y"));
        assert_eq!(facts.roles.as_deref(), Some("r"));
        assert_eq!((facts.exp, facts.nbf), (Some(10), None));
        assert!(!format!("{facts:?}").contains("c2lnbmF0dXJl"));
        for bad in ["", "a", "a.b", "e30.W10.x", "!!.e30.x"] {
            assert_eq!(TokenFacts::read(bad), None, "{bad}");
        }
    }
}
