//! Token validation through the real gateway: the rejection matrix, request
//! faults, Entra tenant and multi-tenant modes, route restrictions, signing
//! algorithms and the verified-token cache.

#![allow(clippy::unwrap_used, clippy::expect_used)] // reason: integration tests; a panic is a failure

#[path = "../support/mod.rs"]
mod support;

mod entra;
mod keys;
mod matrix;
mod requests;
mod routes;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis::dev::SigningKey;
use serde_json::json;
use support::*;

/// The challenge for an invalid token, described by `text`.
fn desc(text: &str) -> String {
    format!("Bearer realm=\"test\", error=\"invalid_token\", error_description=\"{text}\"")
}
