//! What an inspected request asks, beyond its method and path: the facts
//! a stage read from it (an MCP method and its target), for the decision
//! and the audit record. Plain data, below everything that records it.

/// One inspected call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mcp(McpCall),
}

/// An MCP message, as the gateway read it. Names follow OpenTelemetry's
/// MCP conventions where the record shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct McpCall {
    /// `mcp.method.name`; `None` for a response the client sends back
    /// (to a server's request), and for a `GET` stream or a `DELETE`.
    pub method: Option<String>,
    /// The tool, prompt or resource the call reaches.
    pub target: Option<McpTarget>,
    /// `jsonrpc.request.id`, as its JSON text (a number or a string).
    pub id: Option<String>,
    /// `mcp.protocol.version`: the `MCP-Protocol-Version` header.
    pub protocol_version: Option<String>,
    /// `mcp.session.id`, digested: enough to follow a session through the
    /// records, not to take it over.
    pub session: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpTarget {
    /// `gen_ai.tool.name`
    Tool(String),
    /// `gen_ai.prompt.name`
    Prompt(String),
    /// `mcp.resource.uri`
    Resource(String),
}

impl McpTarget {
    /// What a call of `method` reaches by `name` (its `params.name`, or
    /// `params.uri` for a resource): `None` for a method that reaches no
    /// tool, prompt or resource.
    pub fn of(method: &str, name: String) -> Option<Self> {
        match method {
            "tools/call" => Some(Self::Tool(name)),
            "prompts/get" => Some(Self::Prompt(name)),
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                Some(Self::Resource(name))
            }
            _ => None,
        }
    }

    /// The OpenTelemetry attribute that names it.
    pub fn attribute(&self) -> &'static str {
        match self {
            Self::Tool(_) => "gen_ai.tool.name",
            Self::Prompt(_) => "gen_ai.prompt.name",
            Self::Resource(_) => "mcp.resource.uri",
        }
    }

    /// The method that reaches it.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Tool(_) => "tools/call",
            Self::Prompt(_) => "prompts/get",
            Self::Resource(_) => "resources/read",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Tool(n) | Self::Prompt(n) | Self::Resource(n) => n,
        }
    }
}
