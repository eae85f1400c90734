//! A record's JSON encoding, schema `portcullis.audit/v1` (documented in
//! `docs/audit.md`).

use std::time::{Duration, SystemTime};

use http::Version;
use serde::Serialize;

use super::record::{Event, Field, Record, SCHEMA};
use crate::call::Call;
use crate::decision::Decision;
use crate::text::{write_hex, write_ip};
use crate::token::CacheUse;

impl Record {
    /// Appends the record as one JSON object (no newline, no chain fields).
    ///
    /// Why a writer and not `#[derive(Serialize)]`: this runs once per
    /// request; spelling the keys out as constant bytes and escaping only
    /// the values halves the cost. Values still go through `serde_json`.
    pub fn encode(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let r = self;
        let req = &r.request;
        let decision = r.decision.as_ref();
        let claims = decision.and_then(|d| d.identity.as_deref());
        let route = decision.and_then(|d| d.route.as_deref());
        let mut w = Json(out);
        w.raw(b"{\"schema\":\"");
        w.raw(SCHEMA.as_bytes());
        w.raw(match r.event {
            Event::Request => b"\",\"event\":\"request\",\"time\":\"",
            Event::TunnelClose => b"\",\"event\":\"tunnel_close\",\"time\":\"",
        });
        rfc3339(w.0, req.time);
        w.raw(b"\",\"request_id\":");
        w.opt_str(req.get(Field::RequestId))?;
        w.raw(b",\"trace_id\":");
        w.opt_str(req.get(Field::TraceId))?;
        w.raw(b",\"decision\":\"");
        w.raw(r.label.as_str().as_bytes());
        w.raw(b"\",\"reason\":\"");
        w.raw(r.reason.as_bytes());
        w.raw(b"\",\"policy\":");
        w.opt_str(decision.and_then(Decision::policy))?;
        w.raw(b",\"status\":");
        w.opt_num(r.status)?;
        w.raw(b",\"challenge\":");
        w.opt_str(r.challenge.as_ref().map(|c| challenge_error(c.as_bytes())))?;
        w.raw(b",\"method\":");
        w.str(r.request.method.as_str())?;
        w.raw(b",\"host\":");
        w.opt_str(req.get(Field::Host))?;
        w.raw(b",\"path\":");
        w.opt_str(req.get(Field::Path))?;
        w.raw(b",\"protocol\":\"");
        w.raw(protocol(req.version).as_bytes());
        w.raw(b"\",\"route\":");
        w.opt_str(route.map(|r| r.name()))?;
        w.raw(b",\"route_params\":{");
        for (i, (k, v)) in decision
            .map_or(&[][..], |d| &d.params[..])
            .iter()
            .enumerate()
        {
            if i > 0 {
                w.raw(b",");
            }
            w.str(k)?;
            w.raw(b":");
            w.str(v)?;
        }
        w.raw(b"},\"client_ip\":\"");
        write_ip(w.0, req.client_ip);
        w.raw(b"\",\"user_agent\":");
        w.opt_str(req.get(Field::UserAgent))?;
        w.raw(b",\"identity\":");
        match claims {
            None => w.raw(b"null"),
            Some(c) => {
                let agent = decision.and_then(|d| d.agent.as_deref());
                w.raw(b"{\"kind\":\"");
                w.raw(c.kind().as_str().as_bytes());
                w.raw(b"\",\"tenant\":");
                w.opt_str(c.tid())?;
                w.raw(b",\"principal\":");
                w.opt_str(c.principal())?;
                w.raw(b",\"client_app\":");
                w.opt_str(c.client_app())?;
                w.raw(b",\"client_authenticated\":");
                w.bool(c.is_client_authenticated());
                w.raw(b",\"idtyp\":");
                w.opt_str(c.idtyp())?;
                w.raw(b",\"on_behalf_of\":");
                w.bool(c.is_on_behalf_of());
                w.raw(b",\"agent_id\":");
                w.opt_str(c.agent_id())?;
                w.raw(b",\"blueprint\":");
                w.opt_str(c.blueprint())?;
                w.raw(b",\"agent_name\":");
                w.opt_str(agent.map(|a| a.name.as_str()))?;
                w.raw(b",\"agent_owner\":");
                w.opt_str(agent.and_then(|a| a.owner.as_deref()))?;
                w.raw(b"}");
            }
        }
        w.raw(b",\"token\":");
        match decision.and_then(|d| d.token_digest.map(|digest| (d, digest))) {
            None => w.raw(b"null"),
            Some((d, digest)) => {
                w.raw(b"{\"issuer\":");
                w.opt_str(claims.map(|c| c.issuer_name()))?;
                w.raw(b",\"iss\":");
                w.opt_str(claims.map(|c| c.iss()))?;
                w.raw(b",\"id\":");
                w.opt_str(claims.and_then(|c| c.token_id()))?;
                w.raw(b",\"digest\":\"sha256:");
                write_hex(w.0, &digest[..8]);
                w.raw(match d.cache {
                    Some(CacheUse::Hit) => b"\",\"cache\":\"hit\",\"scopes_used\":",
                    Some(CacheUse::Miss) => b"\",\"cache\":\"miss\",\"scopes_used\":",
                    Some(CacheUse::Off) | None => b"\",\"cache\":\"off\",\"scopes_used\":",
                });
                let empty: &[String] = &[];
                w.used(
                    route.map_or(empty, |r| r.scopes()),
                    claims.map_or(empty, |c| c.scopes()),
                )?;
                w.raw(b",\"roles_used\":");
                w.used(
                    route.map_or(empty, |r| r.roles()),
                    claims.map_or(empty, |c| c.roles()),
                )?;
                w.raw(b",\"acrs\":");
                let acrs = claims.map_or(empty, |c| c.acrs());
                w.used(acrs, acrs)?;
                w.raw(b"}");
            }
        }
        w.raw(b",\"policies\":[");
        for (i, o) in decision
            .map_or(&[][..], |d| &d.policies[..])
            .iter()
            .enumerate()
        {
            w.raw(if i > 0 { b",{\"name\":" } else { b"{\"name\":" });
            w.str(&o.policy)?;
            w.raw(b",\"result\":\"");
            w.raw(o.result.as_str().as_bytes());
            w.raw(b"\"}");
        }
        w.raw(b"],\"mcp\":");
        let call = decision.and_then(|d| d.call.as_ref());
        match call {
            None | Some(Call::Model(_)) => w.raw(b"null"),
            Some(Call::Mcp(c)) => {
                w.raw(b"{\"mcp.method.name\":");
                w.opt_str(c.method.as_deref())?;
                if let Some(target) = &c.target {
                    w.raw(b",\"");
                    w.raw(target.attribute().as_bytes());
                    w.raw(b"\":");
                    w.str(target.name())?;
                }
                w.raw(b",\"jsonrpc.request.id\":");
                match c.id.as_deref() {
                    // A string id is JSON text already; a number becomes one.
                    Some(id) if id.starts_with('"') => w.raw(id.as_bytes()),
                    id => w.opt_str(id)?,
                }
                w.raw(b",\"mcp.protocol.version\":");
                w.opt_str(c.protocol_version.as_deref())?;
                w.raw(b",\"mcp.session.id\":");
                w.opt_str(c.session.as_deref())?;
                w.raw(b"}");
            }
        }
        w.raw(b",\"model\":");
        match call {
            Some(Call::Model(c)) => {
                w.raw(b"{\"gen_ai.operation.name\":\"");
                w.raw(c.operation.as_str().as_bytes());
                w.raw(b"\",\"gen_ai.request.model\":");
                w.opt_str(c.model.as_deref())?;
                w.raw(b",\"stream\":");
                w.bool(c.stream);
                w.raw(b",\"usage\":");
                match c.usage.get() {
                    None => w.raw(b"null"),
                    Some(u) => {
                        w.raw(b"{\"gen_ai.usage.input_tokens\":");
                        w.num(u.input)?;
                        w.raw(b",\"gen_ai.usage.output_tokens\":");
                        w.num(u.output)?;
                        w.raw(b",\"cached_input_tokens\":");
                        w.num(u.cached_input)?;
                        w.raw(b",\"reasoning_tokens\":");
                        w.num(u.reasoning)?;
                        w.raw(b",\"source\":\"");
                        w.raw(u.source.as_str().as_bytes());
                        w.raw(b"\"}");
                    }
                }
                w.raw(b"}");
            }
            _ => w.raw(b"null"),
        }
        w.raw(b",\"config_version\":");
        w.str(&r.config_version)?;
        w.raw(b",\"upstream\":");
        match &r.upstream {
            None => w.raw(b"null"),
            Some(u) => {
                w.raw(b"{\"name\":");
                w.str(&u.name)?;
                w.raw(b",\"credential\":");
                w.opt_str(u.credential.as_ref().map(|(name, _)| &**name))?;
                w.raw(b",\"credential_token\":");
                w.opt_str(u.credential.as_ref().map(|(_, digest)| &**digest))?;
                w.raw(b",\"status\":");
                w.opt_num(u.status)?;
                w.raw(b",\"duration_ms\":");
                w.opt_num(u.duration.map(millis))?;
                w.raw(b",\"error\":");
                w.opt_str(u.error.as_deref())?;
                w.raw(b"}");
            }
        }
        w.raw(b",\"stream\":");
        w.bool(r.stream);
        w.raw(b",\"duration_ms\":");
        w.num(millis(r.duration))?;
        w.raw(b",\"bytes_in\":");
        w.num(r.bytes_in)?;
        w.raw(b",\"bytes_out\":");
        w.num(r.bytes_out)?;
        w.raw(b",\"end\":\"");
        w.raw(r.end.as_str().as_bytes());
        w.raw(b"\",\"end_reason\":");
        w.opt_str(r.end_reason)?;
        w.raw(b"}");
        Ok(())
    }
}

/// Appends JSON pieces: constant bytes as they are, values through
/// `serde_json` (string escaping, number formatting).
struct Json<'a>(&'a mut Vec<u8>);

impl Json<'_> {
    fn raw(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }
    fn str(&mut self, s: &str) -> serde_json::Result<()> {
        // Most values (ids, names, reasons) need no escaping: copy them.
        if is_plain(s.as_bytes()) {
            self.0.reserve(s.len() + 2);
            self.0.push(b'"');
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(b'"');
            return Ok(());
        }
        serde_json::to_writer(&mut *self.0, s)
    }
    fn opt_str(&mut self, s: Option<&str>) -> serde_json::Result<()> {
        match s {
            Some(s) => self.str(s),
            None => {
                self.raw(b"null");
                Ok(())
            }
        }
    }
    fn num(&mut self, n: impl Serialize) -> serde_json::Result<()> {
        serde_json::to_writer(&mut *self.0, &n)
    }
    fn opt_num(&mut self, n: Option<impl Serialize>) -> serde_json::Result<()> {
        serde_json::to_writer(&mut *self.0, &n)
    }
    fn bool(&mut self, b: bool) {
        self.raw(if b { b"true" } else { b"false" });
    }
    /// The entries of `granted` that `held` contains, as a JSON array.
    fn used(&mut self, granted: &[String], held: &[String]) -> serde_json::Result<()> {
        self.raw(b"[");
        let mut first = true;
        for g in granted.iter().filter(|g| held.contains(g)) {
            if !first {
                self.raw(b",");
            }
            first = false;
            self.str(g)?;
        }
        self.raw(b"]");
        Ok(())
    }
}

/// Whether `s` needs no JSON escaping (no control character, quote or
/// backslash).
///
/// Why a fold and not `all`: without an early exit the compiler checks
/// several bytes per instruction; byte by byte this was nearly half the
/// cost of encoding a record (a lookup table and eight-byte words were
/// slower still, most values being short).
fn is_plain(s: &[u8]) -> bool {
    !s.iter().fold(false, |bad, &b| {
        bad | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
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

/// `2026-11-27T00:32:27.146Z`.
fn rfc3339(out: &mut Vec<u8>, time: SystemTime) {
    let Ok(ts) = jiff::Timestamp::try_from(time) else {
        out.extend_from_slice(b"1970-01-01T00:00:00.000Z");
        return;
    };
    let dt = jiff::tz::Offset::UTC.to_datetime(ts);
    let digits = |out: &mut Vec<u8>, n: i32, width: u32| {
        for i in (0..width).rev() {
            out.push(b'0' + (n.unsigned_abs() / 10u32.pow(i) % 10) as u8);
        }
    };
    digits(out, i32::from(dt.year()), 4);
    out.push(b'-');
    digits(out, i32::from(dt.month()), 2);
    out.push(b'-');
    digits(out, i32::from(dt.day()), 2);
    out.push(b'T');
    digits(out, i32::from(dt.hour()), 2);
    out.push(b':');
    digits(out, i32::from(dt.minute()), 2);
    out.push(b':');
    digits(out, i32::from(dt.second()), 2);
    out.push(b'.');
    digits(out, i32::from(dt.millisecond()), 3);
    out.push(b'Z');
}

/// The `error` of a challenge we built, or `"bearer"` for a bare challenge.
fn challenge_error(value: &[u8]) -> &str {
    let text = std::str::from_utf8(value).unwrap_or("");
    match text.split_once("error=\"") {
        Some((_, rest)) => rest.split('"').next().unwrap_or(""),
        None => "bearer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use http::Method;

    use crate::audit::record::*;

    #[test]
    fn trace_ids_and_challenges() {
        let tp = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id(tp), Some(&b"4bf92f3577b34da6a3ce929d0e0e4736"[..]));
        assert_eq!(trace_id(b"garbage"), None);
        assert_eq!(
            challenge_error(
                b"Bearer realm=\"x\", error=\"invalid_token\", error_description=\"y\""
            ),
            "invalid_token"
        );
        assert_eq!(challenge_error(b"Bearer realm=\"x\""), "bearer");
    }

    #[test]
    fn hostile_texts_still_make_valid_json() {
        let mut request = RequestInfo::new(
            SystemTime::UNIX_EPOCH,
            Method::from_bytes(b"PURGE").unwrap(),
            Version::HTTP_2,
            "::1".parse().unwrap(),
        );
        request.set(Field::Path, b"/a\"b\\c");
        request.set(Field::UserAgent, b"x\"}\n{\"forged\":true\x01\xc3\xa9");
        request.set(Field::Host, b"h\t");
        let mut record = Record::new(request, Arc::from("v\""));
        record.upstream = Some(UpstreamInfo {
            name: Arc::from("default"),
            credential: None,
            status: None,
            duration: None,
            error: Some("connect \"refused\"\r\n".into()),
        });
        let mut out = Vec::new();
        record.encode(&mut out).unwrap();
        assert!(!out.contains(&b'\n'), "one line");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["user_agent"], "x\"}\n{\"forged\":true\u{1}\u{e9}");
        assert_eq!(v["path"], "/a\"b\\c");
        assert_eq!(v["method"], "PURGE");
        assert_eq!(v["client_ip"], "::1");
        assert_eq!(v["protocol"], "HTTP/2");
        assert_eq!(v["upstream"]["error"], "connect \"refused\"\r\n");
        assert!(v.get("forged").is_none());
    }

    #[test]
    fn the_fast_paths_agree_with_the_plain_definitions() {
        // Every byte, alone and at every position of a long value (the
        // check runs several bytes per step).
        for b in 0..=255u8 {
            let special = b < 0x20 || b == b'"' || b == b'\\';
            assert_eq!(is_plain(&[b]), !special, "byte {b:#x}");
            for at in [0, 15, 16, 33, 63] {
                let mut long = vec![b'a'; 64];
                long[at] = b;
                assert_eq!(is_plain(&long), !special, "byte {b:#x} at {at}");
            }
        }
        assert!(is_plain(b"") && is_plain("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn a_bare_record_encodes_every_field() {
        let mut request = RequestInfo::new(
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            Method::POST,
            Version::HTTP_11,
            "192.0.2.7".parse().unwrap(),
        );
        request.set(Field::RequestId, b"req-1");
        request.set(Field::Path, b"/v1/chat");
        request.set(Field::Host, b"api.example");
        request.set(Field::UserAgent, b"sdk/1.0\xff");
        let record = Record::new(request, Arc::from("abc"));
        let mut out = Vec::new();
        record.encode(&mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["path"], "/v1/chat");
        assert_eq!(v["user_agent"], "sdk/1.0\u{fffd}", "not UTF-8: replaced");
        assert!(v["trace_id"].is_null());
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["decision"], "error");
        assert_eq!(v["reason"], "client_closed");
        assert_eq!(v["end"], "client_gone");
        assert!(v["identity"].is_null() && v["token"].is_null());
        assert_eq!(v["route_params"], serde_json::json!({}));
    }
}
