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
//! - [`decision`]: the decision on one request, as metrics, `explain` and
//!   the audit record see it.
//! - [`rejection`]: the only author of the gateway's own refusals (RFC 6750).
//! - [`mcp`]: the gateway as the resource server of MCP servers (their
//!   protected-resource metadata).
//! - [`model`]: model APIs: the effective model of a request, the usage
//!   its answer reports; [`budget`]: token budgets and their counters
//!   (in process, or in Redis for a fleet).
//! - [`upstream`]: the pooled upstream client, its connector, and the
//!   headers an upstream sees; [`credentials`]: the gateway's own tokens
//!   for upstreams; [`body`]: the body type of both directions.
//! - [`proxy`]: the request pipeline and forwarding to the upstream;
//!   [`stages`]: where the AI-aware stages inspect a request and take part in its
//!   answer.
//! - [`revocation_file`]: keeps the revocation list current from its watched file.
//! - [`reload`]: hot reload of the config file: validate, compile, swap;
//!   [`watch`]: the directory watch behind it and the revocation list.
//! - [`audit`]: one record per request, its queue and writer thread, the
//!   hash chain and `portcullis audit verify`.
//! - [`explain`]: `portcullis explain`, the pipeline's decision for one request.
//! - [`serve`], [`tls`], [`admin`], [`shutdown`]: listeners, TLS, the admin
//!   port, the shutdown signal.
//! - [`metrics`], [`telemetry`]: Prometheus registry and logging.
//! - [`app`]: wiring; [`dev`]: the self-contained dev mode and test servers.
//!
//! Dependencies point one way: `app` → `proxy`/`serve`/`admin`/`reload`
//! (and `explain` → `proxy`) → `snapshot`/`audit`/`revocation_file` →
//! `rejection`/`decision`/`stages`/`mcp`/`model` → `budget` → `upstream`/`policy` → `token` → `keys` →
//! `config`, with `metrics` above `keys`, and `body`, `text`, `tls`,
//! `telemetry`, `shutdown`, `sse` and `call` (what stages read of a request)
//! leaves anyone may use. No file imports one
//! that imports it back (a module's files and their `mod.rs` aside).

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod body;
pub mod budget;
pub mod call;
pub mod config;
pub mod credentials;
pub mod decision;
pub mod dev;
pub mod explain;
pub mod keys;
pub mod mcp;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod proxy;
pub mod rejection;
pub mod reload;
pub mod revocation_file;
pub mod serve;
pub mod shutdown;
pub mod snapshot;
pub mod sse;
pub mod stages;
pub mod streams;
pub mod telemetry;
pub mod text;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod watch;
