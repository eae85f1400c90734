//! Portcullis: a zero-trust gateway for AI workloads. It verifies Entra
//! (or any OIDC) bearer tokens, authorizes each request against its route,
//! and forwards what it allows to the upstream, streaming both ways.
//!
//! # Layout
//!
//! - [`config`]: the TOML file → a validated [`config::Config`], every error with its path.
//! - [`snapshot`]: everything a reload may change, compiled from a config, immutable.
//! - [`keys`]: JWKS fetch, parse, per-source key sets, refresh with cooldown.
//! - [`token`]: bearer extraction, JWT verification, the verified-token cache.
//! - [`policy`]: routes, identities' rules, the agent registry, conditional
//!   access, the revocation list; pure functions over plain data.
//! - [`revocation`]: keeps the revocation list current from its watched file.
//! - [`reload`]: hot reload of the config file: validate, compile, swap;
//!   [`watch`]: the directory watch behind it and the revocation list.
//! - [`audit`]: one record per request, its queue and writer thread, the
//!   hash chain and `portcullis audit verify`.
//! - [`explain`]: `portcullis explain`, the pipeline's decision for one request.
//! - [`rejection`]: the only author of 400/401/403/503 auth answers (RFC 6750).
//! - [`proxy`]: the request pipeline and forwarding to the upstream.
//! - [`serve`], [`tls`], [`admin`]: listeners, TLS, the admin port.
//! - [`metrics`], [`telemetry`]: Prometheus registry and logging.
//! - [`app`]: wiring; [`dev`]: the self-contained dev mode and test servers.
//!
//! Dependencies point one way: `app` → `serve`/`admin` → `proxy` →
//! `token`/`policy`/`rejection` → `keys`/`config`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod config;
pub mod dev;
pub mod explain;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod rejection;
pub mod reload;
pub mod revocation;
pub mod serve;
pub mod snapshot;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod token;
pub mod watch;
