//! Conditions on a tool call's arguments: the value a JSON pointer names
//! must be one of a list. Read strictly, as the message is: a member given
//! twice anywhere on the pointer's path fits nothing (the server could read
//! the other one).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer as _, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::config::McpArgument;

/// Whether `arguments` fit `rule`: the value is there, once, a string,
/// number or boolean, and one of the allowed (numbers and booleans as
/// written).
pub(super) fn fits(rule: &McpArgument, arguments: Option<&RawValue>) -> bool {
    let mut at = match arguments {
        Some(a) => a,
        None => return false,
    };
    for key in &rule.path {
        match member(at, key) {
            Some(next) => at = next,
            None => return false,
        }
    }
    let text = at.get();
    let value: Cow<'_, str> = if text.starts_with('"') {
        match serde_json::from_str::<Cow<'_, str>>(text) {
            Ok(s) => s,
            Err(_) => return false,
        }
    } else if text == "true"
        || text == "false"
        || text.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
    {
        Cow::Borrowed(text)
    } else {
        return false;
    };
    rule.allowed.iter().any(|a| *a == value)
}

/// The member `key` of the object `raw`: `None` if `raw` is not an object,
/// has no such member, or has it twice.
fn member<'a>(raw: &'a RawValue, key: &str) -> Option<&'a RawValue> {
    struct Member<'k>(&'k str);

    impl<'de> Visitor<'de> for Member<'_> {
        type Value = Option<&'de RawValue>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                if k == self.0 {
                    if found.is_some() {
                        return Err(de::Error::custom("a member given twice"));
                    }
                    found = Some(map.next_value::<&'de RawValue>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    let mut de = serde_json::Deserializer::from_str(raw.get());
    de.deserialize_map(Member(key)).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pointer: &str, allowed: &[&str]) -> McpArgument {
        McpArgument {
            path: crate::config::json_pointer(pointer).unwrap(),
            allowed: allowed.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn fits(rule: &McpArgument, arguments: &str) -> bool {
        let raw: Box<RawValue> = serde_json::from_str(arguments).unwrap();
        super::fits(rule, Some(&raw))
    }

    #[test]
    fn the_value_at_the_pointer_must_be_one_allowed_and_given_once() {
        let project = rule("/project", &["ops", "sec"]);
        assert!(fits(&project, r#"{"project":"ops","q":"x"}"#));
        assert!(fits(
            &project,
            r#"{"q":{"project":"dev"},"project":"s\u0065c"}"#
        ));
        assert!(!fits(&project, r#"{"project":"dev"}"#));
        assert!(!fits(&project, r#"{"q":"ops"}"#));
        assert!(!fits(&project, r#"{"project":["ops"]}"#));
        assert!(!fits(&project, r#"["ops"]"#));
        // Read two ways: fits nothing.
        assert!(!fits(&project, r#"{"project":"ops","project":"prod"}"#));
        assert!(!super::fits(&project, None));

        let team = rule("/filter/team", &["7", "true"]);
        assert!(fits(&team, r#"{"filter":{"team":7}}"#));
        assert!(fits(&team, r#"{"filter":{"team":true}}"#));
        assert!(!fits(&team, r#"{"filter":{"team":8}}"#));
        assert!(!fits(&team, r#"{"filter":{"team":7},"filter":{"team":8}}"#));
        let escaped = rule("/a~1b/c~0d", &["x"]);
        assert!(fits(&escaped, r#"{"a/b":{"c~d":"x"}}"#));
        assert!(crate::config::json_pointer("project").is_none());
    }
}
