//! MCP: the gateway as the resource server of the MCP servers behind it.
//!
//! An MCP route (a route with an `mcp` table) is where the gateway checks
//! tokens for an MCP server, so the gateway also says how to get one: it
//! serves the route's protected-resource metadata (RFC 9728) itself and
//! names it in every challenge on the route. It reads every message posted
//! to the route, strictly, refuses what the server could read otherwise,
//! and records the method and the tool, prompt or resource it reaches.

mod arguments;
mod filter;
mod inspect;
mod limits;
mod message;
mod metadata;
mod order;
mod rules;
mod sessions;

pub use filter::{Callable, ListFilter, ListKind};
pub use inspect::McpInspector;
pub use limits::CallLimiter;
pub use message::read as read_message;
pub use metadata::ResourceMetadata;
pub use rules::{Args, McpRules, Verdict};
pub use sessions::Sessions;
