//! One audit record: what the request path hands the writer, and its JSON
//! encoding (schema `portcullis.audit/v1`, documented in the README).
//!
//! The request path only moves values it already has (`Arc`s, header
//! values, the pipeline's [`Decision`]) into a [`Record`]; the writer thread
//! encodes it. Nothing here can hold a token: the record has no field for
//! one, only the token's id claim and a short digest.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Uri, Version};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::metrics::DecisionLabel;
use crate::proxy::pipeline::Decision;
use crate::token::CacheUse;

pub const SCHEMA: &str = "portcullis.audit/v1";

/// Which moment of a request a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The request's decision and response: one per request.
    Request,
    /// A WebSocket (or other upgraded) session ended: a second record for
    /// the same request id, with the session's bytes and duration.
    TunnelClose,
}

/// How the exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The response (or tunnel) finished normally.
    Complete,
    /// The client went away before the response ended (a truncated stream).
    ClientGone,
    /// The upstream failed mid-response.
    UpstreamError,
    /// Cut off by shutdown after the drain timeout.
    Shutdown,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::ClientGone => "client_gone",
            Self::UpstreamError => "upstream_error",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What the request said, captured when it arrived.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub time: SystemTime,
    pub request_id: HeaderValue,
    pub traceparent: Option<HeaderValue>,
    pub method: Method,
    pub uri: Uri,
    pub host: Option<HeaderValue>,
    pub version: Version,
    pub client_ip: IpAddr,
    pub user_agent: Option<HeaderValue>,
}

/// What the upstream did, when the request was forwarded.
#[derive(Debug, Clone, Default)]
pub struct UpstreamInfo {
    pub status: Option<u16>,
    pub duration: Option<Duration>,
    /// Why forwarding failed (connect error, timeout); internal detail that
    /// the client never sees.
    pub error: Option<String>,
}

/// One record, filled in as the request goes.
#[derive(Debug, Clone)]
pub struct Record {
    pub event: Event,
    pub request: RequestInfo,
    pub config_version: Arc<str>,
    /// `None` when the request ended before the pipeline decided.
    pub decision: Option<Decision>,
    pub label: DecisionLabel,
    pub reason: &'static str,
    pub status: Option<u16>,
    /// The `WWW-Authenticate` value sent, if any (its `error` is recorded).
    pub challenge: Option<HeaderValue>,
    pub upstream: Option<UpstreamInfo>,
    /// The response is a `text/event-stream`.
    pub stream: bool,
    pub duration: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub end: End,
}

impl Record {
    pub fn new(request: RequestInfo, config_version: Arc<str>) -> Self {
        Self {
            event: Event::Request,
            request,
            config_version,
            decision: None,
            label: DecisionLabel::Error,
            reason: "client_closed",
            status: None,
            challenge: None,
            upstream: None,
            stream: false,
            duration: Duration::ZERO,
            bytes_in: 0,
            bytes_out: 0,
            end: End::ClientGone,
        }
    }

    /// Appends the record as one JSON object (no newline, no chain fields).
    pub fn encode(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, &View(self))
    }
}

/// The serialized shape; field order is the schema's.
struct View<'a>(&'a Record);

impl Serialize for View<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let req = &r.request;
        let decision = r.decision.as_ref();
        let claims = decision.and_then(|d| d.identity.as_deref());
        let route = decision.and_then(|d| d.route.as_deref());
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("schema", SCHEMA)?;
        m.serialize_entry(
            "event",
            match r.event {
                Event::Request => "request",
                Event::TunnelClose => "tunnel_close",
            },
        )?;
        m.serialize_entry("time", &Rfc3339(req.time))?;
        m.serialize_entry("request_id", &Text(Some(&req.request_id)))?;
        m.serialize_entry("trace_id", &req.traceparent.as_ref().and_then(trace_id))?;
        m.serialize_entry("decision", r.label.as_str())?;
        m.serialize_entry("reason", r.reason)?;
        m.serialize_entry("policy", &decision.and_then(Decision::policy))?;
        m.serialize_entry("status", &r.status)?;
        m.serialize_entry(
            "challenge",
            &r.challenge.as_ref().map(|c| challenge_error(c.as_bytes())),
        )?;
        m.serialize_entry("method", req.method.as_str())?;
        m.serialize_entry("host", &Text(req.host.as_ref()))?;
        m.serialize_entry("path", req.uri.path())?;
        m.serialize_entry("protocol", protocol(req.version))?;
        m.serialize_entry("route", &route.map(|r| r.name()))?;
        m.serialize_entry("route_params", &Params(decision))?;
        m.serialize_entry("client_ip", &req.client_ip)?;
        m.serialize_entry("user_agent", &Text(req.user_agent.as_ref()))?;
        m.serialize_entry("identity", &claims.map(|c| Identity(c, decision)))?;
        m.serialize_entry(
            "token",
            &decision.and_then(|d| d.token_digest.map(|digest| Token(d, digest))),
        )?;
        m.serialize_entry("policies", &Policies(decision))?;
        m.serialize_entry("config_version", &*r.config_version)?;
        m.serialize_entry("upstream", &r.upstream.as_ref().map(Upstream))?;
        m.serialize_entry("stream", &r.stream)?;
        m.serialize_entry("duration_ms", &millis(r.duration))?;
        m.serialize_entry("bytes_in", &r.bytes_in)?;
        m.serialize_entry("bytes_out", &r.bytes_out)?;
        m.serialize_entry("end", r.end.as_str())?;
        m.end()
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP",
    }
}

/// Milliseconds with microsecond precision.
fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

struct Rfc3339(SystemTime);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match jiff::Timestamp::try_from(self.0) {
            Ok(t) => s.collect_str(&format_args!("{t:.3}")),
            Err(_) => s.serialize_none(),
        }
    }
}

/// A header value as a string; bytes outside visible ASCII become `\u{fffd}`.
struct Text<'a>(Option<&'a HeaderValue>);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => s.serialize_none(),
            Some(v) => match v.to_str() {
                Ok(text) => s.serialize_str(text),
                Err(_) => s.serialize_str(&String::from_utf8_lossy(v.as_bytes())),
            },
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
fn trace_id(v: &HeaderValue) -> Option<&str> {
    let text = v.to_str().ok()?;
    let id = text.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The `error` of a challenge we built, or `"bearer"` for a bare challenge.
fn challenge_error(value: &[u8]) -> &str {
    let text = std::str::from_utf8(value).unwrap_or("");
    match text.split_once("error=\"") {
        Some((_, rest)) => rest.split('"').next().unwrap_or(""),
        None => "bearer",
    }
}

struct Params<'a>(Option<&'a Decision>);

impl Serialize for Params<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let params = self.0.map_or(&[][..], |d| &d.params[..]);
        let mut m = s.serialize_map(Some(params.len()))?;
        for (k, v) in params {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

struct Identity<'a>(&'a crate::token::VerifiedClaims, Option<&'a Decision>);

impl Serialize for Identity<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (c, agent) = (self.0, self.1.and_then(|d| d.agent.as_deref()));
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", c.kind().as_str())?;
        m.serialize_entry("tenant", &c.tid())?;
        m.serialize_entry("principal", &c.principal())?;
        m.serialize_entry("client_app", &c.client_app())?;
        m.serialize_entry("client_authenticated", &c.is_client_authenticated())?;
        m.serialize_entry("idtyp", &c.idtyp())?;
        m.serialize_entry("on_behalf_of", &c.is_on_behalf_of())?;
        m.serialize_entry("agent_id", &c.agent_id())?;
        m.serialize_entry("blueprint", &c.blueprint())?;
        m.serialize_entry("agent_name", &agent.map(|a| a.name.as_str()))?;
        m.serialize_entry("agent_owner", &agent.and_then(|a| a.owner.as_deref()))?;
        m.end()
    }
}

struct Token<'a>(&'a Decision, crate::token::TokenDigest);

impl Serialize for Token<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (d, digest) = (self.0, &self.1);
        let claims = d.identity.as_deref();
        let route = d.route.as_deref();
        let used = |granted: &[String], held: Option<&[String]>| -> Vec<String> {
            let held = held.unwrap_or(&[]);
            granted
                .iter()
                .filter(|g| held.contains(g))
                .cloned()
                .collect()
        };
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("issuer", &claims.map(|c| c.issuer_name()))?;
        m.serialize_entry("iss", &claims.map(|c| c.iss()))?;
        m.serialize_entry("id", &claims.and_then(|c| c.token_id()))?;
        m.serialize_entry("digest", &Digest(digest))?;
        m.serialize_entry(
            "cache",
            match d.cache {
                Some(CacheUse::Hit) => "hit",
                Some(CacheUse::Miss) => "miss",
                Some(CacheUse::Off) | None => "off",
            },
        )?;
        m.serialize_entry(
            "scopes_used",
            &used(
                route.map_or(&[][..], |r| r.scopes()),
                claims.map(|c| c.scopes()),
            ),
        )?;
        m.serialize_entry(
            "roles_used",
            &used(
                route.map_or(&[][..], |r| r.roles()),
                claims.map(|c| c.roles()),
            ),
        )?;
        m.serialize_entry("acrs", &claims.map_or(&[][..], |c| c.acrs()))?;
        m.end()
    }
}

/// `sha256:` and the first 8 bytes of the token's SHA-256, in hex: enough
/// to correlate records of one token, useless for replaying it.
struct Digest<'a>(&'a crate::token::TokenDigest);

impl Serialize for Digest<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use std::fmt::Write;
        let mut text = String::with_capacity(23);
        text.push_str("sha256:");
        for b in &self.0[..8] {
            let _ = write!(text, "{b:02x}");
        }
        s.serialize_str(&text)
    }
}

struct Policies<'a>(Option<&'a Decision>);

impl Serialize for Policies<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let outcomes = self.0.map_or(&[][..], |d| &d.policies[..]);
        let mut seq = s.serialize_seq(Some(outcomes.len()))?;
        for o in outcomes {
            seq.serialize_element(&PolicyEntry(&o.policy, o.result.as_str()))?;
        }
        seq.end()
    }
}

struct PolicyEntry<'a>(&'a str, &'a str);

impl Serialize for PolicyEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("name", self.0)?;
        m.serialize_entry("result", self.1)?;
        m.end()
    }
}

struct Upstream<'a>(&'a UpstreamInfo);

impl Serialize for Upstream<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let u = self.0;
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("status", &u.status)?;
        m.serialize_entry("duration_ms", &u.duration.map(millis))?;
        m.serialize_entry("error", &u.error)?;
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_and_challenges() {
        let tp =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(trace_id(&tp), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(trace_id(&HeaderValue::from_static("garbage")), None);
        assert_eq!(
            challenge_error(
                b"Bearer realm=\"x\", error=\"invalid_token\", error_description=\"y\""
            ),
            "invalid_token"
        );
        assert_eq!(challenge_error(b"Bearer realm=\"x\""), "bearer");
    }

    #[test]
    fn a_bare_record_encodes_every_field() {
        let request = RequestInfo {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            request_id: HeaderValue::from_static("req-1"),
            traceparent: None,
            method: Method::POST,
            uri: "/v1/chat?api-version=1".parse().unwrap(),
            host: Some(HeaderValue::from_static("api.example")),
            version: Version::HTTP_11,
            client_ip: "192.0.2.7".parse().unwrap(),
            user_agent: Some(HeaderValue::from_static("sdk/1.0")),
        };
        let record = Record::new(request, Arc::from("abc"));
        let mut out = Vec::new();
        record.encode(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["path"], "/v1/chat", "no query string");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["decision"], "error");
        assert_eq!(v["reason"], "client_closed");
        assert_eq!(v["end"], "client_gone");
        assert!(v["identity"].is_null() && v["token"].is_null());
        assert_eq!(v["route_params"], serde_json::json!({}));
    }
}
