//! MCP messages: by route, method and how each ended. Methods outside the
//! protocol's own are counted as `other`, so a client cannot mint labels.

use prometheus::IntCounterVec;

use super::{Metrics, Register};

pub(super) struct Families {
    messages: IntCounterVec,
}

impl Families {
    pub(super) fn new(r: &mut Register) -> Result<Self, prometheus::Error> {
        Ok(Self {
            messages: r.counters(
                "gateway_mcp_messages_total",
                "MCP messages on MCP routes by route, method (mcp.method.name; none for a stream or session end, other outside the protocol) and reason (allowed, or why refused).",
                &["route", "method", "reason"],
            )?,
        })
    }
}

/// The label of a method: the protocol's own names as they are, families
/// of notifications and tasks folded.
fn method_label(method: Option<&str>) -> &'static str {
    const KNOWN: &[&str] = &[
        "initialize",
        "ping",
        "server/discover",
        "tools/list",
        "tools/call",
        "prompts/list",
        "prompts/get",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
        "completion/complete",
        "logging/setLevel",
        "subscriptions/listen",
    ];
    match method {
        None => "none",
        Some(m) if m.starts_with("notifications/") => "notifications",
        Some(m) if m.starts_with("tasks/") => "tasks",
        Some(m) => KNOWN.iter().find(|k| **k == m).copied().unwrap_or("other"),
    }
}

impl Metrics {
    /// One MCP message and how it ended (`reason`: the request's).
    pub fn mcp_message(&self, route: &str, method: Option<&str>, reason: &str) {
        self.mcp
            .messages
            .with_label_values(&[route, method_label(method), reason])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_the_protocols_or_other() {
        assert_eq!(method_label(Some("tools/call")), "tools/call");
        assert_eq!(
            method_label(Some("notifications/initialized")),
            "notifications"
        );
        assert_eq!(method_label(Some("tasks/get")), "tasks");
        assert_eq!(method_label(Some("tools/call-me-maybe")), "other");
        assert_eq!(method_label(None), "none");
    }
}
