//! The auth decision, top to bottom: normalize → route → extract → verify →
//! authorize. Each step returns a typed value or a [`Rejection`]; none logs
//! or counts (the caller observes the outcome once).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::Method;
use http::header::HOST;
use http::request::Parts;
use ipnet::IpNet;

use super::ClientConn;
use crate::policy::{self, Grant, RequestFacts, RevocationList, RouteMatchResult, path};
use crate::rejection::Rejection;
use crate::snapshot::Snapshot;
use crate::token::{TokenError, TokenFacts, VerifiedClaims, VerifyError, extract_bearer};
use crate::upstream::headers::{X_FORWARDED_FOR, is_trusted};

use crate::decision::Decision;

/// A request that may be forwarded, with its normalized path.
pub struct Admitted<'a> {
    pub grant: Grant,
    pub path: Cow<'a, str>,
}

impl Admitted<'_> {
    /// What forwarding needs: the grant, and the path when normalization
    /// changed it (the request's own is forwarded otherwise).
    pub fn into_forwarding(self) -> (Grant, Option<String>) {
        let rewritten = match self.path {
            Cow::Owned(p) => Some(p),
            Cow::Borrowed(_) => None,
        };
        (self.grant, rewritten)
    }
}

/// Who sent the request, where and when: what policies look at besides the
/// token and the route.
#[derive(Clone, Copy)]
pub struct Circumstances<'r> {
    pub client_ip: IpAddr,
    pub now: SystemTime,
    pub revoked: &'r RevocationList,
}

/// The pipeline's answer for one request: what it found out (for metrics,
/// the audit record and `explain`), and what may be forwarded or why not.
pub struct Admission<'a> {
    pub decision: Decision,
    pub admitted: Result<Admitted<'a>, Rejection>,
}

/// Decides whether `parts` may be forwarded.
pub async fn admit<'a>(
    snapshot: &Snapshot,
    parts: &'a Parts,
    circumstances: Circumstances<'_>,
) -> Admission<'a> {
    let mut decision = Decision::pending();
    let admitted = admit_steps(snapshot, parts, circumstances, &mut decision).await;
    if let Err(rejection) = &admitted {
        decision.verdict = Err(rejection.clone());
    }
    Admission { decision, admitted }
}

async fn admit_steps<'a>(
    snapshot: &Snapshot,
    parts: &'a Parts,
    circumstances: Circumstances<'_>,
    facts: &mut Decision,
) -> Result<Admitted<'a>, Rejection> {
    check_host(parts)?;
    let uri_len = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > snapshot.max_uri_bytes {
        return Err(Rejection::UriTooLong);
    }
    let path = path::normalize(parts.uri.path()).map_err(|_| Rejection::BadPath)?;
    let matched = snapshot
        .routes
        .find(&parts.method, request_host(parts), &path);
    if let Some(m) = &matched {
        facts.route = Some(m.route.clone());
        facts.params = m
            .params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
    }
    // Why: servlet-style upstreams drop `;…` from each segment before they
    // resolve `..`, so `/open/..;/admin` would reach another route there
    // than here (`path_parameters_are_refused_unless_the_route_allows_them`).
    match path::parameters(&path) {
        path::Parameters::None => {}
        path::Parameters::Plain
            if matched
                .as_ref()
                .is_some_and(|m| m.route.allows_matrix_params()) => {}
        path::Parameters::Plain | path::Parameters::OnDotSegment => return Err(Rejection::BadPath),
    }
    // Why (MCP transport, DNS rebinding): a page on another origin must not
    // reach an MCP server through a browser that holds a token for it.
    if let Some(m) = &matched
        && !m.route.allows_origin(&parts.headers)
    {
        return Err(Rejection::OriginNotAllowed);
    }
    if let Some(grant) = matched.as_ref().and_then(|m| policy::admit_public(m.route)) {
        return Ok(Admitted { grant, path });
    }
    // Why: the token is checked even when no route matches, so that callers
    // without a valid token cannot map which paths exist (401 before 403).
    let token = extract_bearer(&parts.headers, parts.uri.query())?;
    let verification = snapshot.verifier.verify(token).await;
    facts.cache = Some(verification.cache);
    facts.token_digest = verification.digest;
    let claims = verification.result.map_err(|e| match e {
        VerifyError::Invalid(reason) => {
            debug_refused(token, reason);
            Rejection::InvalidToken(reason)
        }
        VerifyError::KeysUnavailable => Rejection::KeysUnavailable,
    })?;
    let matched = matched.ok_or(Rejection::Denied(policy::Denial::NoRoute));
    let grant = decide(
        snapshot,
        &parts.method,
        matched,
        claims,
        circumstances,
        facts,
    )?;
    Ok(Admitted { grant, path })
}

/// At debug level, the decisive claims of a refused token, read again
/// without trusting them: what its user needs to see why (never the token
/// or its signature). Costs nothing unless debug is on.
fn debug_refused(token: &str, reason: TokenError) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let Some(f) = TokenFacts::read(token) else {
        tracing::debug!(
            reason = reason.reason(),
            "token refused: not a readable JWT"
        );
        return;
    };
    tracing::debug!(
        reason = reason.reason(),
        iss = f.iss.as_deref(),
        aud = %f.aud.join(" "),
        tid = f.tid.as_deref(),
        ver = f.ver.as_deref(),
        exp = f.exp,
        nbf = f.nbf,
        client = f.client.as_deref(),
        idtyp = f.idtyp.as_deref(),
        scopes = f.scopes.as_deref(),
        roles = f.roles.as_deref(),
        alg = f.alg.as_deref(),
        kid = f.kid.as_deref(),
        typ = f.typ.as_deref(),
        "token refused"
    );
}

/// Everything after the token is verified: revocation, the route's rules,
/// the agent registry and conditional access. Synchronous and pure but for
/// the revocation list handed in; `portcullis explain` runs it too.
pub fn decide(
    snapshot: &Snapshot,
    method: &Method,
    matched: Result<RouteMatchResult<'_>, Rejection>,
    claims: Arc<VerifiedClaims>,
    circumstances: Circumstances<'_>,
    facts: &mut Decision,
) -> Result<Grant, Rejection> {
    // Why: a refused agent is named in the record as well as an admitted one.
    facts.agent = snapshot.policies.agents.find(&claims).cloned();
    facts.identity = Some(claims.clone());
    // Why: checked after every verification and every cache hit, so a
    // revocation applies to the next request, cached tokens included.
    if circumstances.revoked.check(&claims).is_some() {
        return Err(Rejection::InvalidToken(TokenError::Revoked));
    }
    let matched = matched?;
    let request = RequestFacts {
        method,
        params: &matched.params,
        client_ip: circumstances.client_ip,
        now: circumstances.now,
    };
    let (result, outcomes) = policy::authorize(&snapshot.policies, matched.route, claims, &request);
    facts.policies = outcomes;
    result.map_err(Rejection::Denied)
}

/// One `Host`, present on HTTP/1.1, that names what the request target or
/// `:authority` names, if either has an authority (RFC 9112 §3.2, §3.2.2;
/// RFC 9113 §8.3.1). Why: an upstream that reads the other one would route
/// the request somewhere this gateway did not decide on
/// (`host_must_be_one_and_agree_with_the_target`).
fn check_host(parts: &Parts) -> Result<(), Rejection> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(Rejection::BadHost),
        (Some(h), None) => Some(h.to_str().map_err(|_| Rejection::BadHost)?),
        (None, None) => None,
    };
    match (host, parts.uri.authority()) {
        (Some(h), Some(a)) if !same_authority(h, a.as_str(), parts.uri.scheme_str()) => {
            Err(Rejection::BadHost)
        }
        (None, None) if parts.version == http::Version::HTTP_11 => Err(Rejection::BadHost),
        _ => Ok(()),
    }
}

/// Whether two authorities name the same host and port, a missing port
/// being the scheme's default (RFC 3986 §6.2.3).
fn same_authority(a: &str, b: &str, scheme: Option<&str>) -> bool {
    let default = if scheme == Some("https") { "443" } else { "80" };
    let ((host_a, port_a), (host_b, port_b)) = (split_port(a), split_port(b));
    host_a.eq_ignore_ascii_case(host_b) && port_a.unwrap_or(default) == port_b.unwrap_or(default)
}

/// The request's host without port: `Host` (HTTP/1.1) or the authority
/// (HTTP/2).
pub fn request_host(parts: &Parts) -> Option<&str> {
    let raw = match parts.headers.get(HOST).and_then(|h| h.to_str().ok()) {
        Some(h) => h,
        None => parts.uri.authority()?.as_str(),
    };
    Some(split_port(raw).0)
}

/// An authority's host and port, minding IPv6 literals (`[::1]:8080`).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    }
}

/// The client address policies see: the socket peer, unless the peer is a
/// trusted proxy; then the right-most `X-Forwarded-For` entry that is not a
/// trusted proxy.
pub fn client_ip(parts: &Parts, conn: &ClientConn, trusted: &[IpNet]) -> IpAddr {
    let peer = conn.peer.ip();
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in parts.headers.get_all(&X_FORWARDED_FOR) {
        let Ok(text) = value.to_str() else {
            return peer;
        };
        for entry in text.split(',') {
            match entry.trim().parse() {
                Ok(ip) => hops.push(ip),
                // Why: a chain we cannot read is not evidence of anything.
                Err(_) => return peer,
            }
        }
    }
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(trusted, **ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn parts(xff: &[&str]) -> Parts {
        let mut b = http::Request::get("/");
        for v in xff {
            b = b.header("x-forwarded-for", *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn conn(peer: &str) -> ClientConn {
        ClientConn::new(SocketAddr::new(peer.parse().unwrap(), 1), false)
    }

    #[test]
    fn client_ip_trusts_forwarded_for_only_through_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |p: &Parts, peer| client_ip(p, &conn(peer), &trusted).to_string();
        assert_eq!(
            ip(&parts(&["1.2.3.4"]), "203.0.113.5"),
            "203.0.113.5",
            "untrusted peer: its header is ignored"
        );
        assert_eq!(ip(&parts(&["1.2.3.4"]), "10.0.0.1"), "1.2.3.4");
        assert_eq!(
            ip(&parts(&["6.6.6.6, 1.2.3.4, 10.0.0.2"]), "10.0.0.1"),
            "1.2.3.4",
            "right-most untrusted hop"
        );
        assert_eq!(ip(&parts(&["6.6.6.6", "1.2.3.4"]), "10.0.0.1"), "1.2.3.4");
        assert_eq!(ip(&parts(&["garbage"]), "10.0.0.1"), "10.0.0.1");
        assert_eq!(ip(&parts(&[]), "10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn host_must_be_one_and_agree_with_the_target() {
        let req = |version, uri: &str, hosts: &[&str]| {
            let mut b = http::Request::get(uri).version(version);
            for h in hosts {
                b = b.header("host", *h);
            }
            check_host(&b.body(()).unwrap().into_parts().0)
        };
        use http::Version;
        let bad = Err(Rejection::BadHost);
        assert_eq!(req(Version::HTTP_11, "/", &["a"]), Ok(()));
        assert_eq!(
            req(Version::HTTP_11, "/", &[]),
            bad,
            "HTTP/1.1 needs a Host"
        );
        assert_eq!(
            req(Version::HTTP_10, "/", &[]),
            Ok(()),
            "HTTP/1.0 may omit it"
        );
        assert_eq!(
            req(Version::HTTP_11, "/", &["a", "a"]),
            bad,
            "two, even alike"
        );
        assert_eq!(req(Version::HTTP_2, "https://a/", &["a:443"]), Ok(()));
        assert_eq!(req(Version::HTTP_2, "https://A:443/", &[]), Ok(()));
        assert_eq!(req(Version::HTTP_2, "https://a/", &["b"]), bad);
        assert_eq!(req(Version::HTTP_2, "http://a:8080/", &["a"]), bad, "port");
        assert_eq!(
            req(Version::HTTP_11, "http://a/x", &["b"]),
            bad,
            "absolute form"
        );
        assert_eq!(
            req(Version::HTTP_11, "http://[::1]:80/", &["[::1]"]),
            Ok(())
        );
    }

    #[test]
    fn host_without_port() {
        let p = |h: &str| {
            http::Request::get("/")
                .header("host", h)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        assert_eq!(request_host(&p("api.example:8443")), Some("api.example"));
        assert_eq!(request_host(&p("api.example")), Some("api.example"));
        assert_eq!(request_host(&p("[::1]:8080")), Some("[::1]"));
        assert_eq!(request_host(&p("[::1]")), Some("[::1]"));
    }
}
