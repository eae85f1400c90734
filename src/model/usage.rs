//! The usage an answer reports: `usage` in a JSON answer, in the last
//! chunk of a chat or text completion stream (when it was asked for), or
//! in the `response.completed` event of the Responses API. Content-filter
//! annotation chunks and every other event carry none and are passed by.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::call::{Usage, UsageSource};

/// `usage`, in either API's names.
#[derive(Deserialize)]
struct Reported {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    input_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
    #[serde(default)]
    output_tokens_details: Option<Details>,
}

#[derive(Deserialize)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl Reported {
    fn usage(self) -> Usage {
        let input = self.prompt_tokens.or(self.input_tokens).unwrap_or(0);
        let output = self.completion_tokens.or(self.output_tokens).unwrap_or(0);
        let detail = |d: Option<Details>, f: fn(&Details) -> Option<u64>| d.as_ref().and_then(f);
        let cached = detail(self.prompt_tokens_details, |d| d.cached_tokens)
            .or(detail(self.input_tokens_details, |d| d.cached_tokens))
            .unwrap_or(0);
        let reasoning = detail(self.completion_tokens_details, |d| d.reasoning_tokens)
            .or(detail(self.output_tokens_details, |d| d.reasoning_tokens))
            .unwrap_or(0);
        Usage {
            input,
            output,
            cached_input: cached.min(input),
            reasoning: reasoning.min(output),
            source: UsageSource::Reported,
        }
    }
}

/// A whole JSON answer.
#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    usage: Option<Reported>,
}

/// One event's data in a stream: a chat or text completion chunk, or a
/// Responses API event.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Option<&'a RawValue>,
    #[serde(default)]
    usage: Option<Reported>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    response: Option<Answer>,
}

/// The usage of a JSON answer, if it says.
pub fn of_answer(body: &[u8]) -> Option<Usage> {
    let answer: Answer = serde_json::from_slice(body).ok()?;
    answer.usage.map(Reported::usage)
}

/// What one stream event says of usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Nothing.
    Other,
    /// The usage, in a chunk that also carries choices, or in a Responses
    /// event.
    Usage(Usage),
    /// The usage, in a chunk of its own (`choices` empty): the chunk the
    /// gateway keeps from a client that did not ask for it.
    UsageOnly(Usage),
}

/// Reads one event's data.
pub fn of_event(data: &str) -> Event {
    // Most chunks of a stream say nothing of usage: not parsed.
    if !data.contains("\"usage\"") {
        return Event::Other;
    }
    let Ok(chunk) = serde_json::from_str::<Chunk<'_>>(data) else {
        return Event::Other;
    };
    if let Some(kind) = chunk.kind.as_deref()
        && kind.starts_with("response.")
    {
        return match chunk.response.and_then(|r| r.usage) {
            Some(u) => Event::Usage(u.usage()),
            None => Event::Other,
        };
    }
    match (chunk.usage, chunk.choices) {
        (Some(u), Some(choices)) if choices.get().trim() == "[]" => Event::UsageOnly(u.usage()),
        (Some(u), _) => Event::Usage(u.usage()),
        (None, _) => Event::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, cached: u64, reasoning: u64) -> Usage {
        Usage {
            input,
            output,
            cached_input: cached,
            reasoning,
            source: UsageSource::Reported,
        }
    }

    #[test]
    fn answers_report_usage_in_either_apis_names() {
        let chat = br#"{"id":"c","choices":[{"index":0,"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42,"prompt_tokens_details":{"cached_tokens":8},"completion_tokens_details":{"reasoning_tokens":20}}}"#;
        assert_eq!(of_answer(chat), Some(usage(12, 30, 8, 20)));
        let responses = br#"{"id":"r","output":[],"usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens_details":{"reasoning_tokens":3}}}"#;
        assert_eq!(of_answer(responses), Some(usage(5, 7, 0, 3)));
        let embeddings =
            br#"{"data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":4,"total_tokens":4}}"#;
        assert_eq!(of_answer(embeddings), Some(usage(4, 0, 0, 0)));
        assert_eq!(of_answer(br#"{"error":{"message":"x"}}"#), None);
    }

    #[test]
    fn stream_events_say_usage_only_where_it_is() {
        assert_eq!(
            of_event(r#"{"choices":[{"delta":{"content":"a"}}]}"#),
            Event::Other
        );
        // Every chunk of a stream that asked carries `"usage":null`.
        assert_eq!(
            of_event(r#"{"choices":[{"delta":{"content":"a"}}],"usage":null}"#),
            Event::Other
        );
        assert_eq!(
            of_event(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}"#),
            Event::UsageOnly(usage(3, 9, 0, 0))
        );
        // Azure's prompt-filter chunk has empty choices and no usage.
        assert_eq!(
            of_event(r#"{"choices":[],"prompt_filter_results":[{"prompt_index":0}]}"#),
            Event::Other
        );
        assert_eq!(
            of_event(
                r#"{"type":"response.completed","response":{"id":"r","usage":{"input_tokens":2,"output_tokens":4}}}"#
            ),
            Event::Usage(usage(2, 4, 0, 0))
        );
        assert_eq!(
            of_event(r#"{"type":"response.output_text.delta","delta":"usage"}"#),
            Event::Other
        );
        assert_eq!(of_event("[DONE]"), Event::Other);
    }
}
