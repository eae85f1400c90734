//! Audit: one record per request, written off the request path by a
//! dedicated writer, tamper evident. `record` is the schema, `chain` the
//! hash chain and the rotating file, `writer` the queue and its thread.

pub mod chain;
mod json;
mod queue;
pub mod record;
mod writer;

pub use chain::{AuditFile, Chain, ChainBreak, GENESIS, Verified, verify};
pub use queue::{AuditStatus, Auditor, Pending, Progress, Refused};
pub use record::{End, Event, Field, Record, RequestInfo, SCHEMA, UpstreamInfo, trace_id};
pub use writer::{WriterHandle, start};
