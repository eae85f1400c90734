//! What an inspected request asks, beyond its method and path: the facts
//! a stage read from it (an MCP method and its target; a model and the
//! tokens it used), for the decision and the audit record. Plain data,
//! below everything that records it.

use std::sync::{Arc, OnceLock};

/// One inspected call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Mcp(McpCall),
    Model(ModelCall),
}

/// A request to a model API, as the gateway read it. Names follow
/// OpenTelemetry's GenAI conventions where the record shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelCall {
    pub operation: Operation,
    /// `gen_ai.request.model`: the one effective model (the deployment on
    /// an Azure OpenAI path, else the body's `model`, else the query's).
    pub model: Option<String>,
    /// The answer was asked for as a stream.
    pub stream: bool,
    /// What the answer says it used: set once, when it ends (shared with
    /// every copy of the call, so the audit record written after the
    /// answer sees it).
    pub usage: Metered,
}

/// The usage of one answer, known when it ends.
#[derive(Debug, Clone, Default)]
pub struct Metered(Arc<OnceLock<Usage>>);

impl Metered {
    pub fn set(&self, usage: Usage) {
        let _ = self.0.set(usage);
    }
    pub fn get(&self) -> Option<&Usage> {
        self.0.get()
    }
}

impl PartialEq for Metered {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Metered {}

/// Which model API a request calls, from its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `…/chat/completions`
    Chat,
    /// `…/completions` (the legacy text API)
    Completions,
    /// `…/responses`
    Responses,
    /// `…/embeddings`
    Embeddings,
    /// `…/realtime`, a WebSocket: the model is in the query.
    Realtime,
}

impl Operation {
    /// The operation a path names by its last segments; `None` for the
    /// rest of an API (model lists, files, …).
    pub fn of(path: &str) -> Option<Self> {
        let path = path.trim_end_matches('/');
        Some(if path.ends_with("/chat/completions") {
            Self::Chat
        } else if path.ends_with("/completions") {
            Self::Completions
        } else if path.ends_with("/responses") {
            Self::Responses
        } else if path.ends_with("/embeddings") {
            Self::Embeddings
        } else if path.ends_with("/realtime") {
            Self::Realtime
        } else {
            return None;
        })
    }

    /// `gen_ai.operation.name`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "text_completion",
            Self::Responses => "responses",
            Self::Embeddings => "embeddings",
            Self::Realtime => "realtime",
        }
    }
}

/// Tokens one answer used, as the upstream reported them (or, when it
/// never did, what was reserved for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// `gen_ai.usage.input_tokens` (cached ones included).
    pub input: u64,
    /// `gen_ai.usage.output_tokens` (reasoning ones included).
    pub output: u64,
    /// Input tokens served from the prompt cache.
    pub cached_input: u64,
    /// Output tokens spent on reasoning.
    pub reasoning: u64,
    /// Where the figures come from.
    pub source: UsageSource,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UsageSource {
    /// The answer's own `usage`.
    #[default]
    Reported,
    /// The answer ended without one (cut, or no usage sent): charged at
    /// the reservation.
    Reserved,
    /// The upstream refused or failed: nothing was used.
    None,
}

impl UsageSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Reserved => "reserved",
            Self::None => "none",
        }
    }
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
