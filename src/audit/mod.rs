//! Audit: one record per request, written off the request path, tamper
//! evident. This module has the hash-chained writer and its verifier; the
//! record schema and the queue come with the request-path wiring.

pub mod chain;

pub use chain::{ChainBreak, ChainWriter, GENESIS, Verified, verify};
