//! A model API request, read strictly: the fields that decide its model,
//! whether it streams, and what it may cost.
//!
//! Why strict: policy and budgets decide on the model the gateway reads,
//! and the upstream serves the one it parses. A key given twice (parsers
//! differ on which one counts), a field of another type, or a body that is
//! not one object could be read two ways, so it is refused. The bytes
//! forwarded are the bytes read, unless the gateway asks a stream for its
//! usage (one member added, the rest as sent).

use std::borrow::Cow;
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::call::Operation;

/// The fields the gateway reads. Derived structs refuse a repeated field;
/// fields nobody reads are skipped, whatever they hold.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    /// Kept as written, `null` too (it must be replaced, not given a
    /// second key).
    #[serde(default, borrow, deserialize_with = "raw")]
    stream_options: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
    #[serde(default)]
    best_of: Option<u64>,
}

fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// A request body as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    /// The body's `model`, lower-cased.
    pub model: Option<String>,
    pub stream: bool,
    /// What the client set in `stream_options.include_usage`.
    pub include_usage: Option<bool>,
    /// The most output tokens it asks for (the largest cap it sets, times
    /// the completions it asks for); `None` if it sets no cap.
    pub output_cap: Option<u64>,
    /// Where `stream_options` is in the body, if it is.
    stream_options: Option<(usize, usize)>,
}

/// Why a body cannot be read one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// Reads a model request's body.
pub fn read(body: &[u8]) -> Result<Body, Invalid> {
    // Why: a derived struct also takes an array, by position; the upstream
    // would not.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(Invalid);
    }
    let f: Fields<'_> = serde_json::from_slice(body).map_err(|_| Invalid)?;
    // The raw value borrows from `body`: its place in it.
    let place = |raw: &RawValue| {
        let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
        Some((start, start + raw.get().len()))
    };
    let (include_usage, stream_options) = match f.stream_options {
        None => (None, None),
        Some(raw) if raw.get() == "null" => (None, place(raw)),
        Some(raw) if raw.get().starts_with('{') => {
            let o: StreamOptions = serde_json::from_str(raw.get()).map_err(|_| Invalid)?;
            (o.include_usage, place(raw))
        }
        Some(_) => return Err(Invalid),
    };
    let cap = [f.max_tokens, f.max_completion_tokens, f.max_output_tokens]
        .into_iter()
        .flatten()
        .max();
    let copies = f.n.unwrap_or(1).max(f.best_of.unwrap_or(1)).max(1);
    Ok(Body {
        model: f.model.map(|m| m.to_ascii_lowercase()),
        stream: f.stream.unwrap_or(false),
        include_usage,
        output_cap: cap.map(|c| c.saturating_mul(copies)),
        stream_options,
    })
}

impl Body {
    /// Whether the gateway asks this request's stream for its usage: a
    /// streamed chat or text completion that did not ask itself (the
    /// Responses API always reports it).
    pub fn needs_usage(&self, operation: Operation) -> bool {
        self.stream
            && matches!(operation, Operation::Chat | Operation::Completions)
            && self.include_usage != Some(true)
    }

    /// `body` asking for its usage: `stream_options.include_usage` set,
    /// every other byte as sent.
    pub fn with_usage(&self, body: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(body.len() + 40);
        match self.stream_options {
            Some((start, end)) => {
                // The object is re-written with the member set (its other
                // members kept); the rest of the body is untouched.
                let mut options: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&body[start..end]).unwrap_or_default();
                options.insert("include_usage".into(), true.into());
                out.extend_from_slice(&body[..start]);
                out.extend_from_slice(
                    serde_json::to_string(&options)
                        .unwrap_or_default()
                        .as_bytes(),
                );
                out.extend_from_slice(&body[end..]);
            }
            None => {
                // After the opening brace: a streaming body has members,
                // so a comma follows.
                let brace = body.iter().position(|b| *b == b'{').unwrap_or(0);
                out.extend_from_slice(&body[..=brace]);
                out.extend_from_slice(br#""stream_options":{"include_usage":true},"#);
                out.extend_from_slice(&body[brace + 1..]);
            }
        }
        out.freeze()
    }
}

/// The model an Azure OpenAI path names: the segment after `deployments`,
/// lower-cased. A deployment name is letters, digits, `-`, `_` and `.`;
/// anything else (an escape the upstream would decode) is refused.
pub fn deployment(path: &str) -> Result<Option<String>, Invalid> {
    let mut segments = path.split('/');
    while let Some(s) = segments.next() {
        if s == "deployments" {
            return match segments.next() {
                Some(d) if is_name(d) => Ok(Some(d.to_ascii_lowercase())),
                _ => Err(Invalid),
            };
        }
    }
    Ok(None)
}

/// The model a Realtime WebSocket names in its query (`deployment` on
/// Azure's, `model` on the v1 API's); both, when they differ, are refused.
pub fn in_query(query: Option<&str>) -> Result<Option<String>, Invalid> {
    let mut found: Option<String> = None;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if name != "deployment" && name != "model" {
            continue;
        }
        let value = value.to_ascii_lowercase();
        match &found {
            Some(f) if *f != value => return Err(Invalid),
            _ => found = Some(value),
        }
    }
    Ok(found)
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Tokens the prompt of `body` is estimated at: a third of the bytes of
/// its text (every JSON string but a `data:` URL, which is an image or a
/// file and counts [`DATA_URL_TOKENS`]). A tokenizer would be closer; this
/// errs high for English, close for scripts of three-byte characters.
pub fn prompt_estimate(body: &[u8]) -> u64 {
    let mut de = serde_json::Deserializer::from_slice(body);
    match TextSize::deserialize(&mut de) {
        Ok(t) => t.bytes.div_ceil(3) + t.data_urls * DATA_URL_TOKENS,
        // Read already: cannot fail here; all of it, if it did.
        Err(_) => (body.len() as u64).div_ceil(3),
    }
}

/// What a `data:` URL (an image, a file) is reserved at.
pub const DATA_URL_TOKENS: u64 = 1_500;

/// The bytes of a JSON document's strings, and its data URLs.
#[derive(Default)]
struct TextSize {
    bytes: u64,
    data_urls: u64,
}

impl<'de> Deserialize<'de> for TextSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut size = TextSize::default();
        d.deserialize_any(Walk(&mut size))?;
        Ok(size)
    }
}

/// Walks any JSON value, adding its strings to the size.
struct Walk<'s>(&'s mut TextSize);

impl<'de> de::DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if v.starts_with("data:") {
            self.0.data_urls += 1;
        } else {
            self.0.bytes += v.len() as u64;
        }
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Walk(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<IgnoredAny>()?.is_some() {
            map.next_value_seed(Walk(self.0))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_names_its_model_stream_and_output_cap() {
        let b = read(br#"{"model":"GPT-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"max_completion_tokens":100,"n":2}"#).unwrap();
        assert_eq!(b.model.as_deref(), Some("gpt-4o"));
        assert!(b.stream);
        assert_eq!(b.include_usage, None);
        assert_eq!(b.output_cap, Some(200));
        assert!(b.needs_usage(Operation::Chat));
        assert!(!b.needs_usage(Operation::Responses));
        let asked = read(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#)
            .unwrap();
        assert!(!asked.needs_usage(Operation::Chat));
        let embeddings = read(br#"{"model":"text-embedding-3-small","input":["a","b"]}"#).unwrap();
        assert_eq!((embeddings.stream, embeddings.output_cap), (false, None));
    }

    #[test]
    fn what_could_be_read_two_ways_is_refused() {
        for body in [
            &br#"{"model":"gpt-4o-mini","model":"o3"}"#[..],
            br#"[{"model":"gpt-4o"}]"#,
            br#"{"model":["gpt-4o"]}"#,
            br#"{"model":"m","stream":"yes"}"#,
            br#"{"model":"m","stream_options":{"include_usage":true,"include_usage":false}}"#,
            br#"{"model":"m","stream_options":[true]}"#,
            br#"{"model":"m","max_tokens":-1}"#,
            b"not json",
            br#"{"model":"m"} trailing"#,
        ] {
            assert_eq!(
                read(body),
                Err(Invalid),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_stream_is_asked_for_its_usage_with_one_member_and_nothing_else_changed() {
        let body = br#"{"model":"m","stream":true,"messages":[]}"#;
        let b = read(body).unwrap();
        assert_eq!(
            b.with_usage(body),
            r#"{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}"#
        );
        // Options the client set are kept; a false is turned true, not doubled.
        let body = br#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false,"include_usage":false},"messages":[]}"#;
        let b = read(body).unwrap();
        let rewritten = b.with_usage(body);
        let again = read(&rewritten).unwrap();
        assert_eq!(again.include_usage, Some(true));
        assert!(
            std::str::from_utf8(&rewritten)
                .unwrap()
                .contains(r#""include_obfuscation":false"#)
        );
        assert!(
            std::str::from_utf8(&rewritten)
                .unwrap()
                .ends_with(r#","messages":[]}"#)
        );
        // A null is replaced, never given a second key.
        let body = br#"{"model":"m","stream":true,"stream_options":null}"#;
        let rewritten = read(body).unwrap().with_usage(body);
        assert_eq!(
            rewritten,
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn the_model_of_a_path_or_a_realtime_query_is_one_name() {
        assert_eq!(
            deployment("/openai/deployments/GPT-4o/chat/completions"),
            Ok(Some("gpt-4o".into()))
        );
        assert_eq!(deployment("/openai/v1/chat/completions"), Ok(None));
        assert_eq!(
            deployment("/openai/deployments/gpt%2D4o/chat/completions"),
            Err(Invalid)
        );
        assert_eq!(
            deployment("/openai/deployments//chat/completions"),
            Err(Invalid)
        );
        assert_eq!(
            in_query(Some("api-version=2025-04-01&deployment=gpt-4o-realtime")),
            Ok(Some("gpt-4o-realtime".into()))
        );
        assert_eq!(
            in_query(Some("model=gpt-realtime")),
            Ok(Some("gpt-realtime".into()))
        );
        assert_eq!(in_query(Some("model=a&deployment=b")), Err(Invalid));
        assert_eq!(in_query(None), Ok(None));
    }

    #[test]
    fn the_prompt_is_estimated_from_its_text_and_images_at_a_flat_rate() {
        let text = "x".repeat(3000);
        let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#);
        // "m", "user" and the text: 3005 bytes.
        assert_eq!(prompt_estimate(body.as_bytes()), 1002);
        let image = format!("data:image/png;base64,{}", "A".repeat(1 << 20));
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":[{{"type":"image_url","image_url":{{"url":"{image}"}}}}]}}]}}"#
        );
        // "m", "user" and "image_url": 14 bytes.
        assert_eq!(prompt_estimate(body.as_bytes()), 5 + DATA_URL_TOKENS);
    }
}
