//! One audit record: what the request path hands the writer. Its JSON
//! encoding (schema `portcullis.audit/v1`, documented in `docs/audit.md`)
//! is `json`'s.
//!
//! The request path only moves values it already has (`Arc`s, header
//! values, the pipeline's [`Decision`]) into a [`Record`]; the writer thread
//! encodes it. Nothing here can hold a token: the record has no field for
//! one, only the token's id claim and a short digest.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Version};

use crate::decision::Decision;
use crate::metrics::DecisionLabel;

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
    /// Ended by the gateway because its access ended (`end_reason` says
    /// why: its token expired, it was revoked, …).
    Terminated,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::ClientGone => "client_gone",
            Self::UpstreamError => "upstream_error",
            Self::Shutdown => "shutdown",
            Self::Terminated => "terminated",
        }
    }
}

/// What the request said, captured when it arrived.
///
/// The texts (request id, path, host, user agent, trace id) are copied into
/// one owned buffer: a record lives until the writer takes it, and must not
/// keep the connection's read buffer (which header values point into) from
/// being reused for the next request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub time: SystemTime,
    pub method: Method,
    pub version: Version,
    pub client_ip: IpAddr,
    text: String,
    /// Where each [`Field`] is in `text`; `None` when absent.
    spans: [Option<(u32, u32)>; 5],
}

/// The texts a [`RequestInfo`] keeps.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    RequestId = 0,
    Path = 1,
    Host = 2,
    UserAgent = 3,
    TraceId = 4,
}

impl RequestInfo {
    pub fn new(time: SystemTime, method: Method, version: Version, client_ip: IpAddr) -> Self {
        Self {
            time,
            method,
            version,
            client_ip,
            text: String::with_capacity(192),
            spans: [None; 5],
        }
    }

    /// Keeps `value` (header bytes; anything not UTF-8 is replaced).
    pub fn set(&mut self, field: Field, value: &[u8]) {
        let start = self.text.len();
        // Why not `from_utf8_lossy` alone: `from_utf8` checks ASCII (all
        // that header values usually hold) a word at a time.
        match std::str::from_utf8(value) {
            Ok(text) => self.text.push_str(text),
            Err(_) => self.text.push_str(&String::from_utf8_lossy(value)),
        }
        self.spans[field as usize] = Some((start as u32, self.text.len() as u32));
    }

    pub fn get(&self, field: Field) -> Option<&str> {
        let (start, end) = self.spans[field as usize]?;
        self.text.get(start as usize..end as usize)
    }
}

/// What the upstream did, when the request was forwarded.
#[derive(Debug, Clone, Default)]
pub struct UpstreamInfo {
    /// Which upstream (`default` for `[upstream]`).
    pub name: Arc<str>,
    /// The gateway's own credential it was sent, if the upstream has one:
    /// its name and the token's digest.
    pub credential: Option<(Arc<str>, Arc<str>)>,
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
    /// Why the gateway ended it, when `end` is `terminated`.
    pub end_reason: Option<&'static str>,
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
            end_reason: None,
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace>-<span>-<flags>`).
pub fn trace_id(traceparent: &[u8]) -> Option<&[u8]> {
    let id = traceparent.split(|b| *b == b'-').nth(1)?;
    (id.len() == 32 && id.iter().all(u8::is_ascii_hexdigit)).then_some(id)
}
