//! Protected-resource metadata (RFC 9728), served for each MCP route at
//! `/.well-known/oauth-protected-resource` followed by the route's path.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderValue, Method, Response};

use crate::body::{Body, full};
use crate::config::METADATA_PREFIX;
use crate::policy::Route;

/// Every MCP route's metadata document, encoded once per config.
#[derive(Default)]
pub struct ResourceMetadata {
    /// (path served at, route, document).
    documents: Vec<(String, Arc<Route>, Bytes)>,
}

impl ResourceMetadata {
    pub fn compile(routes: &[Arc<Route>]) -> Self {
        let mut documents: Vec<(String, Arc<Route>, Bytes)> = routes
            .iter()
            .filter_map(|route| {
                let mcp = route.mcp().filter(|m| !m.metadata_path.is_empty())?;
                let document = serde_json::json!({
                    "resource": mcp.resource,
                    "authorization_servers": mcp.authorization_servers,
                    "scopes_supported": mcp.scopes_supported,
                    "bearer_methods_supported": ["header"],
                });
                Some((
                    mcp.metadata_path.clone(),
                    route.clone(),
                    Bytes::from(document.to_string()),
                ))
            })
            .collect();
        // Why: clients that find no document beside the resource's path
        // fall back to the bare well-known path; with one MCP route it can
        // only mean that one.
        if let [(path, route, document)] = documents.as_slice()
            && path != METADATA_PREFIX
        {
            let root = (METADATA_PREFIX.to_owned(), route.clone(), document.clone());
            documents.push(root);
        }
        Self { documents }
    }

    /// The answer to a request for a metadata document, and the route it
    /// describes; `None` for any other request, which takes its usual way.
    pub fn answer(&self, parts: &Parts) -> Option<(Response<Body>, Arc<Route>)> {
        if self.documents.is_empty() || !matches!(parts.method, Method::GET | Method::HEAD) {
            return None;
        }
        let path = parts.uri.path();
        let (_, route, document) = self.documents.iter().find(|(p, ..)| p == path)?;
        let body = if parts.method == Method::HEAD {
            Bytes::new()
        } else {
            document.clone()
        };
        let mut response = Response::new(full(body));
        let h = response.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Public, and the same for every caller; a reload may change it.
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=300"),
        );
        Some((response, route.clone()))
    }
}
