//! Hot reload through the real gateway: a change applies to the next
//! request, a broken or startup-only change applies nothing, the watcher
//! follows a ConfigMap-style symlink swap, and a new issuer's keys are
//! fetched before the swap.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure
#[path = "../support/mod.rs"]
mod support;

mod changes;
mod endpoint;
mod live;
mod watcher;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;

fn routes(scope: &str) -> String {
    format!(
        r#"
[[routes]]
name = "api"
prefix = "/"
scopes = ["{scope}"]
"#
    )
}

/// An issuer, an upstream, and the text of a config that trusts the one and
/// forwards to the other on a route asking for `Models.Invoke`.
async fn stack() -> (TestIdp, TestUpstream, String) {
    let idp = TestIdp::start().await;
    let upstream = TestUpstream::start().await;
    let text = config(
        upstream.addr,
        &oidc_issuer(&idp, ""),
        &routes("Models.Invoke"),
    );
    (idp, upstream, text)
}
