//! MCP: the gateway as the resource server of the MCP servers behind it.
//!
//! An MCP route (a route with an `mcp` table) is where the gateway checks
//! tokens for an MCP server, so the gateway also says how to get one: it
//! serves the route's protected-resource metadata (RFC 9728) itself and
//! names it in every challenge on the route.

mod metadata;

pub use metadata::ResourceMetadata;
