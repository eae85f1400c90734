//! One JSON-RPC message of the MCP streamable-HTTP transport, read into a
//! typed view of the fields that authorization reads, strictly.
//!
//! Why strict: the gateway decides on the tool, prompt or resource a call
//! names, and the server acts on what it parses. Any difference between
//! the two readings is a way past the decision, so whatever could be read
//! two ways is refused: a key given twice on the authorization path (JSON
//! parsers differ on which one counts), a batch, a name that is not a
//! string, a routing header that disagrees with the body. The bytes
//! forwarded are the bytes read, never a re-serialization.

use std::borrow::Cow;

use http::HeaderMap;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::call::{McpCall, McpTarget};
use crate::rejection::McpFault as Fault;

/// The fields the gateway reads. Derived structs refuse a repeated field
/// (a `Value` would keep the last one silently); fields nobody reads are
/// skipped, whatever they hold.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    jsonrpc: Cow<'a, str>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    /// Read in two steps: a derived struct would also take an array, by
    /// position, and a server would not.
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    uri: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<&'a RawValue>,
}

/// A message as read: what it asks, and a tool call's arguments as sent
/// (read further only where a rule looks into them).
pub struct Read<'a> {
    pub call: McpCall,
    pub arguments: Option<&'a RawValue>,
}

/// Reads `body` (a `POST` to an MCP route) with the request's headers.
pub fn read<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Read<'a>, Fault> {
    if body.trim_ascii_start().first() == Some(&b'[') {
        return Err(Fault::Batch);
    }
    let message: Message<'_> = serde_json::from_slice(body).map_err(|_| Fault::Malformed)?;
    if message.jsonrpc != "2.0" {
        return Err(Fault::Malformed);
    }
    let method = message.method.map(Cow::into_owned);
    let params: Option<Params<'_>> = match message.params {
        None => None,
        Some(raw) if raw.get().starts_with('{') => {
            Some(serde_json::from_str(raw.get()).map_err(|_| Fault::Malformed)?)
        }
        Some(_) => return Err(Fault::Malformed),
    };
    let (target, arguments) = match (method.as_deref(), params) {
        (Some(m), Some(p)) => {
            let name = if m.starts_with("resources/") {
                p.uri
            } else {
                p.name
            };
            (
                name.and_then(|n| McpTarget::of(m, n.into_owned())),
                p.arguments,
            )
        }
        _ => (None, None),
    };
    // Why: a server of the 2026-07-28 revision may route on these headers
    // (they must equal the body there); a gateway that decided on the body
    // must not let them say otherwise.
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if header("mcp-method").is_some_and(|h| Some(h) != method.as_deref())
        || header("mcp-name").is_some_and(|h| Some(h) != target.as_ref().map(McpTarget::name))
    {
        return Err(Fault::HeaderMismatch);
    }
    Ok(Read {
        call: McpCall {
            method,
            target,
            id: message.id.map(|id| id.get().to_owned()),
            ..McpCall::default()
        },
        arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(body: &str) -> Result<McpCall, Fault> {
        read(&HeaderMap::new(), body.as_bytes()).map(|r| r.call)
    }

    #[test]
    fn a_tool_call_names_its_tool_and_keeps_its_id_as_written() {
        let c = call(
            r#"{"jsonrpc":"2.0","id":"a-7","method":"tools/call","params":{"name":"search","arguments":{"q":"x"},"_meta":{"progressToken":1}}}"#,
        )
        .unwrap();
        assert_eq!(c.method.as_deref(), Some("tools/call"));
        assert_eq!(c.target, Some(McpTarget::Tool("search".into())));
        assert_eq!(c.id.as_deref(), Some("\"a-7\""));
        let c = call(
            r#"{"jsonrpc":"2.0","id":3,"method":"resources/read","params":{"uri":"file:///a"}}"#,
        )
        .unwrap();
        assert_eq!(c.target, Some(McpTarget::Resource("file:///a".into())));
        let c = call(
            r#"{"jsonrpc":"2.0","id":4,"method":"prompts/get","params":{"name":"summarize"}}"#,
        )
        .unwrap();
        assert_eq!(c.target, Some(McpTarget::Prompt("summarize".into())));
        // Escapes are read as the server reads them.
        let c = call(
            r#"{"jsonrpc":"2.0","id":5,"method":"tools\/call","params":{"name":"del\u0065te"}}"#,
        )
        .unwrap();
        assert_eq!(c.target, Some(McpTarget::Tool("delete".into())));
    }

    #[test]
    fn notifications_and_responses_are_messages_too() {
        let n = call(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(
            (n.method.as_deref(), n.id),
            (Some("notifications/initialized"), None)
        );
        let r = call(r#"{"jsonrpc":"2.0","id":9,"result":{"content":[]}}"#).unwrap();
        assert_eq!((r.method, r.id.as_deref()), (None, Some("9")));
    }

    /// A parser differential between gateway and server is a way to call a
    /// tool the gateway did not authorize: what could be read two ways is
    /// refused.
    #[test]
    fn what_could_be_read_two_ways_is_refused() {
        for (body, fault) in [
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search","name":"delete_everything"}}"#,
                Fault::Malformed,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping","params":{"name":"x"}}"#,
                Fault::Malformed,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a"},"params":{"name":"b"}}"#,
                Fault::Malformed,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#,
                Fault::Malformed,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["delete"]}}"#,
                Fault::Malformed,
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":["delete"]}"#,
                Fault::Malformed,
            ),
            (
                r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
                Fault::Malformed,
            ),
            (r#"{"id":1,"method":"ping"}"#, Fault::Malformed),
            (r#"{"jsonrpc":"2.0","id":1,"method":7}"#, Fault::Malformed),
            ("not json", Fault::Malformed),
            (
                r#" [{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
                Fault::Batch,
            ),
        ] {
            assert_eq!(call(body).err(), Some(fault), "{body}");
        }
    }

    #[test]
    fn routing_headers_must_say_what_the_body_says() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search"}}"#;
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, http::HeaderValue::from_static(v));
            }
            read(&h, body).map(|r| r.call)
        };
        assert!(with(&[("mcp-method", "tools/call"), ("mcp-name", "search")]).is_ok());
        for pairs in [
            &[("mcp-method", "tools/list")][..],
            &[("mcp-name", "delete_everything")][..],
            &[("mcp-method", "tools/call"), ("mcp-name", "")][..],
        ] {
            assert_eq!(with(pairs).err(), Some(Fault::HeaderMismatch), "{pairs:?}");
        }
    }
}
