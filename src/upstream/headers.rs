//! Header hygiene for a forwarded request: what is stripped (hop-by-hop
//! headers, spellings of the gateway's own headers, the operator's strip
//! list), what is replaced (identity headers, `X-Forwarded-*`, `Forwarded`)
//! and what is extended (the forwarding chain through a trusted proxy).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::config::{HeaderPattern, IdentityHeaders, is_spelled_as, normalize_header_name};
use crate::policy::Grant;
use crate::text::write_ip;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Facts about the client connection that shape forwarded headers.
#[derive(Clone)]
pub struct ClientConn {
    pub peer: SocketAddr,
    pub is_tls: bool,
    /// The peer's address as an `X-Forwarded-For` value: the same for
    /// every request on the connection, so written once.
    forwarded_for: HeaderValue,
    /// This hop's `Forwarded` element without `host` (RFC 7239 §4):
    /// `for=…;proto=…`, also written once.
    forwarded: Bytes,
    /// The upstream connection this client connection holds.
    pub held: Arc<super::Held>,
}

impl ClientConn {
    pub fn new(peer: SocketAddr, is_tls: bool) -> Self {
        let mut ip = Vec::with_capacity(39);
        write_ip(&mut ip, peer.ip());
        let mut forwarded = Vec::with_capacity(ip.len() + 20);
        // RFC 7239 §6: an IPv6 address is bracketed, and so quoted.
        match peer.ip() {
            IpAddr::V4(_) => {
                forwarded.extend_from_slice(b"for=");
                forwarded.extend_from_slice(&ip);
            }
            IpAddr::V6(_) => {
                forwarded.extend_from_slice(b"for=\"[");
                forwarded.extend_from_slice(&ip);
                forwarded.extend_from_slice(b"]\"");
            }
        }
        forwarded.extend_from_slice(if is_tls {
            b";proto=https"
        } else {
            b";proto=http"
        });
        Self {
            peer,
            is_tls,
            // An address's text is always a valid value; RFC 7239's
            // "unknown" rather than a panic if that ever changed.
            forwarded_for: HeaderValue::from_maybe_shared(Bytes::from(ip))
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            forwarded: Bytes::from(forwarded),
            held: Arc::default(),
        }
    }
}

/// The inbound headers no request may carry upstream, compiled once per
/// snapshot: every spelling of a header the gateway sets, and the
/// operator's `strip_headers` of the upstream.
#[derive(Debug, Clone)]
pub struct InboundStrip {
    /// Names the gateway sets or owns, normalized (`_` as `-`).
    owned: Vec<String>,
    strip: Vec<HeaderPattern>,
}

impl InboundStrip {
    pub fn new(identity: &IdentityHeaders, strip: &[HeaderPattern]) -> Self {
        let owned = [
            &identity.subject,
            &identity.tenant,
            &identity.client_app,
            &identity.scopes,
            &identity.roles,
            &X_FORWARDED_FOR,
            &X_FORWARDED_PROTO,
            &X_FORWARDED_HOST,
            &header::FORWARDED,
            &X_REQUEST_ID,
        ]
        .iter()
        .map(|n| normalize_header_name(n.as_str()))
        .collect();
        Self {
            owned,
            strip: strip.to_vec(),
        }
    }

    /// Removes every header that an upstream could read as one the gateway
    /// sets, and every header the config strips.
    ///
    /// Why: header names arrive lower-cased, but many upstream stacks
    /// (CGI/WSGI `HTTP_*` variables, some frameworks) also read `_` as `-`,
    /// so `x_portcullis_subject` would be taken for the identity header
    /// (the pattern of oauth2-proxy's CVE-2025-64484)
    /// (`underscore_spellings_of_owned_headers_never_reach_the_upstream`).
    pub fn apply(&self, headers: &mut HeaderMap) {
        // Only a name with `_` can pass for an owned one under another
        // spelling; most requests have none and no strip list to check.
        if self.strip.is_empty() && !headers.keys().any(|n| n.as_str().contains('_')) {
            return;
        }
        let doomed: Vec<HeaderName> = headers
            .keys()
            .filter(|n| self.is_stripped(n.as_str()))
            .cloned()
            .collect();
        for name in doomed {
            headers.remove(name);
        }
    }

    fn is_stripped(&self, name: &str) -> bool {
        // An owned name as it is spelled is replaced where it is set; only
        // another spelling needs removing here.
        (name.contains('_')
            && self
                .owned
                .iter()
                .any(|o| o.len() == name.len() && is_spelled_as(o, name)))
            || self.strip.iter().any(|p| p.matches(name))
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including every header
/// named in `Connection`, and `HTTP2-Settings` (RFC 9113 §3.1: only ever
/// sent with the h2c upgrade, which is never forwarded).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let hop_by_hop = [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
        &header::PROXY_AUTHENTICATE,
        &HTTP2_SETTINGS,
    ];
    // Why: most messages carry none of them, and looking at each of their
    // few headers once costs less than ten removals by name (each hashes
    // the name). `Connection` is among them, so nothing it names is missed.
    if !headers.keys().any(|name| hop_by_hop.contains(&name)) {
        return;
    }
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in hop_by_hop {
        headers.remove(name);
    }
}

pub(crate) fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Sets the identity headers from the verified claims, replacing every
/// inbound copy, and removes the inbound copies of those it does not set
/// (all of them on a public route).
pub(crate) fn set_identity_headers(
    headers: &mut HeaderMap,
    names: &IdentityHeaders,
    grant: &Grant,
) {
    let claims = grant.claims();
    let shared = claims.map(|c| c.profile_headers());
    let subject = claims
        .and_then(|c| c.principal())
        .and_then(|p| HeaderValue::from_str(p).ok());
    // Why: a client must never be able to send its own identity upstream.
    // `insert` replaces every value the client sent under the name.
    let mut set = |name: &HeaderName, value: Option<HeaderValue>| match value {
        Some(v) => {
            headers.insert(name.clone(), v);
        }
        None => {
            headers.remove(name);
        }
    };
    set(&names.subject, subject);
    set(&names.tenant, shared.and_then(|h| h.tenant.clone()));
    set(&names.client_app, shared.and_then(|h| h.client_app.clone()));
    set(&names.scopes, shared.and_then(|h| h.scopes.clone()));
    set(&names.roles, shared.and_then(|h| h.roles.clone()));
}

/// `X-Forwarded-For/-Proto/-Host` and `Forwarded`: set by us, replacing a
/// client's values, unless the peer is a configured trusted proxy (then
/// the chains grow and its proto and host stand).
pub(crate) fn set_forwarded_headers(
    headers: &mut HeaderMap,
    trusted: bool,
    conn: &ClientConn,
    host: Option<&HeaderValue>,
) {
    let xff = if trusted {
        extend_chain(headers, &X_FORWARDED_FOR, conn.forwarded_for.as_bytes())
    } else {
        Some(conn.forwarded_for.clone())
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    // RFC 7239 §5.3: `host` as the client sent it, quoted (it may hold a
    // port's `:`); a value that cannot be quoted is left out.
    let mut element = conn.forwarded.to_vec();
    if let Some(h) = host.filter(|h| !h.as_bytes().iter().any(|b| matches!(b, b'"' | b'\\'))) {
        element.extend_from_slice(b";host=\"");
        element.extend_from_slice(h.as_bytes());
        element.push(b'"');
    }
    let forwarded = if trusted {
        extend_chain(headers, &header::FORWARDED, &element)
    } else {
        HeaderValue::from_maybe_shared(Bytes::from(element)).ok()
    };
    match forwarded {
        Some(v) => headers.insert(header::FORWARDED, v),
        None => headers.remove(header::FORWARDED),
    };
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if conn.is_tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => headers.insert(X_FORWARDED_HOST.clone(), h.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
}

/// Every value of `name` (a trusted proxy's chain, over one or more
/// lines) with `ours` appended as its last element.
fn extend_chain(headers: &HeaderMap, name: &HeaderName, ours: &[u8]) -> Option<HeaderValue> {
    let mut chain = Vec::with_capacity(64 + ours.len());
    for prior in headers.get_all(name) {
        chain.extend_from_slice(prior.as_bytes());
        chain.extend_from_slice(b", ");
    }
    chain.extend_from_slice(ours);
    HeaderValue::from_maybe_shared(Bytes::from(chain)).ok()
}

pub(crate) fn is_trusted(proxies: &[ipnet::IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-portcullis-subject, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("x-portcullis-subject", HeaderValue::from_static("spoof"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));

        // Each alone is found (the pass that skips clean messages).
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "proxy-authenticate",
            "http2-settings",
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
    }

    fn identity() -> IdentityHeaders {
        IdentityHeaders {
            subject: HeaderName::from_static("x-portcullis-subject"),
            tenant: HeaderName::from_static("x-portcullis-tenant"),
            client_app: HeaderName::from_static("x-portcullis-client-app"),
            scopes: HeaderName::from_static("x-portcullis-scopes"),
            roles: HeaderName::from_static("x-portcullis-roles"),
        }
    }

    #[test]
    fn spellings_of_owned_headers_and_the_strip_list_are_removed() {
        let strip = InboundStrip::new(
            &identity(),
            &[
                HeaderPattern::Exact("x-ms-client-principal".into()),
                HeaderPattern::Prefix("x-auth-request-".into()),
            ],
        );
        let mut h = HeaderMap::new();
        for name in [
            "x_portcullis_subject",
            "x-portcullis_scopes",
            "x_forwarded_for",
            "x_request_id",
            "x_ms_client_principal",
            "x-ms-client-principal",
            "x-auth-request-user",
            "x_auth_request_email",
            // Kept: not ours, not listed.
            "x_custom_thing",
            "x-ms-client-principal-name-not-a-prefix-match",
            "accept",
        ] {
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("v"));
        }
        strip.apply(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "accept",
                "x-ms-client-principal-name-not-a-prefix-match",
                "x_custom_thing"
            ]
        );

        // Without a strip list, a request with no `_` is left as it is.
        let plain = InboundStrip::new(&identity(), &[]);
        let mut h = HeaderMap::new();
        h.insert("x-portcullis-subject", HeaderValue::from_static("v"));
        plain.apply(&mut h);
        assert_eq!(h.len(), 1, "exact names are replaced where they are set");
    }

    fn conn(peer: &str, tls: bool) -> ClientConn {
        ClientConn::new(peer.parse().unwrap(), tls)
    }

    #[test]
    fn forwarded_is_replaced_for_a_client_and_extended_through_a_trusted_proxy() {
        let host = HeaderValue::from_static("api.example:8443");
        let mut h = HeaderMap::new();
        h.append(header::FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        h.append(header::FORWARDED, HeaderValue::from_static("for=7.7.7.7"));
        set_forwarded_headers(&mut h, false, &conn("203.0.113.5:1", false), Some(&host));
        assert_eq!(
            h.get_all(header::FORWARDED).iter().collect::<Vec<_>>(),
            ["for=203.0.113.5;proto=http;host=\"api.example:8443\""]
        );

        let mut h = HeaderMap::new();
        h.append(header::FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
        h.append(header::FORWARDED, HeaderValue::from_static("for=5.6.7.8"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        h.append(&X_FORWARDED_FOR, HeaderValue::from_static("5.6.7.8"));
        set_forwarded_headers(&mut h, true, &conn("[2001:db8::1]:1", true), None);
        assert_eq!(
            h[header::FORWARDED],
            "for=1.2.3.4, for=5.6.7.8, for=\"[2001:db8::1]\";proto=https"
        );
        assert_eq!(h[&X_FORWARDED_FOR], "1.2.3.4, 5.6.7.8, 2001:db8::1");
    }
}
