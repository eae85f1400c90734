//! MCP sessions bound to who opened them.
//!
//! The server names a session in the `Mcp-Session-Id` of its answer to
//! `initialize`; the gateway remembers which principal that answer went
//! to. A request that presents the session for another principal is
//! answered 404, as for a session that does not exist (the client starts a
//! new one), so a session id that leaks is of no use to anyone else. The
//! gateway never mints, rewrites or requires session ids: a request
//! without one, or with one it has not seen (another replica's, or from
//! before a restart), goes to the server, which decides.
//!
//! The store keeps digests, not ids, and forgets a session on `DELETE`
//! or after it has been idle for its route's `session_idle_timeout`. A
//! fleet of replicas shares its bindings in the Redis of `[budget_store]`
//! (a session opened through one replica is bound on all); each replica
//! also keeps its own, for when Redis is down and `on_error = "local"`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{Context, SHA256};
use http::{HeaderMap, HeaderValue};

use crate::budget::Store;
use crate::config::StoreFailure;
use crate::rejection::Rejection;
use crate::token::VerifiedClaims;

pub const SESSION_HEADER: &str = "mcp-session-id";

/// Most sessions remembered by one replica; past it the least recently
/// used are forgotten (their requests then go to the server unchecked by
/// the binding, as after a restart).
const CAPACITY: usize = 100_000;

/// A session id's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey([u8; 16]);

impl SessionKey {
    pub fn of(headers: &HeaderMap) -> Option<Self> {
        headers.get(SESSION_HEADER).map(Self::from_value)
    }

    fn from_value(id: &HeaderValue) -> Self {
        Self(truncated(&[id.as_bytes()]))
    }

    /// As the audit record shows it: `sha256:` and the digest's first 8
    /// bytes in hex (follows a session through the records, cannot take
    /// it over).
    pub fn for_record(&self) -> String {
        let mut out = b"sha256:".to_vec();
        crate::text::write_hex(&mut out, &self.0[..8]);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// As the shared store's key names it.
    fn hex(&self) -> String {
        let mut out = Vec::with_capacity(32);
        crate::text::write_hex(&mut out, &self.0);
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// Who a session belongs to: the digest of the tenant, the principal, the
/// client application and the agent of the token that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner([u8; 16]);

impl Owner {
    pub fn of(claims: &VerifiedClaims) -> Self {
        fn part(s: Option<&str>) -> &[u8] {
            s.unwrap_or("").as_bytes()
        }
        Self(truncated(&[
            claims.iss().as_bytes(),
            b"\0",
            part(claims.tid()),
            b"\0",
            part(claims.principal()),
            b"\0",
            part(claims.client_app()),
            b"\0",
            part(claims.agent_id()),
        ]))
    }
}

#[cfg(test)]
impl Owner {
    pub(super) fn for_tests(n: u8) -> Self {
        Self([n; 16])
    }
}

fn truncated(parts: &[&[u8]]) -> [u8; 16] {
    let mut context = Context::new(&SHA256);
    for p in parts {
        context.update(p);
    }
    let digest = context.finish();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest.as_ref()[..16]);
    out
}

/// Where bindings live: this replica's, and the fleet's when the store
/// is Redis.
pub struct Sessions {
    local: LocalSessions,
    shared: Arc<Store>,
}

impl Sessions {
    pub fn new(store: Arc<Store>) -> Self {
        Self {
            local: LocalSessions::default(),
            shared: store,
        }
    }

    /// Whether these bindings live in `store`.
    pub fn uses(&self, store: &Arc<Store>) -> bool {
        Arc::ptr_eq(&self.shared, store)
    }

    /// The session's owner, if it is bound and not idle past its timeout;
    /// using it keeps it alive. A shared store that does not answer is met
    /// as its `on_error` says: refused, unknown (the server decides), or
    /// this replica's binding.
    pub async fn owner(
        &self,
        session: SessionKey,
        idle: Duration,
        now: Instant,
    ) -> Result<Option<Owner>, Rejection> {
        let Store::Redis(redis) = &*self.shared else {
            return Ok(self.local.owner(session, now));
        };
        match redis.session_owner(&session.hex(), idle).await {
            Ok(owner) => Ok(owner.map(|stored| Owner::from_stored(&stored))),
            Err(()) => match redis.on_error() {
                StoreFailure::Deny => Err(Rejection::StoreUnavailable),
                StoreFailure::Allow => Ok(None),
                StoreFailure::Local => Ok(self.local.owner(session, now)),
            },
        }
    }

    /// Binds a session here; with a shared store, also returns the write
    /// that binds it for the fleet.
    fn bind(
        self: &Arc<Self>,
        session: SessionKey,
        owner: Owner,
        idle: Duration,
        now: Instant,
    ) -> Option<Write> {
        self.local.bind(session, owner, idle, now);
        self.shared_set(session, Some(owner), idle)
    }

    fn end(self: &Arc<Self>, session: SessionKey) -> Option<Write> {
        self.local.end(session);
        self.shared_set(session, None, Duration::ZERO)
    }

    fn shared_set(
        self: &Arc<Self>,
        session: SessionKey,
        owner: Option<Owner>,
        idle: Duration,
    ) -> Option<Write> {
        if !matches!(&*self.shared, Store::Redis(_)) {
            return None;
        }
        let sessions = self.clone();
        Some(Box::pin(async move {
            if let Store::Redis(redis) = &*sessions.shared {
                let owner = owner.map(Owner::to_stored);
                redis
                    .session_set(&session.hex(), owner.as_deref(), idle)
                    .await;
            }
        }))
    }
}

/// A write to the shared store, to finish before the answer's body goes.
pub type Write = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

impl Owner {
    /// As the shared store keeps it: the digest as one decimal number.
    fn to_stored(self) -> String {
        u128::from_be_bytes(self.0).to_string()
    }

    /// From the shared store; a value that is not one (written by
    /// something else) owns nothing anyone has.
    fn from_stored(text: &str) -> Self {
        Self(text.parse::<u128>().unwrap_or(u128::MAX).to_be_bytes())
    }
}

/// The bindings of one replica, bounded.
pub struct LocalSessions {
    entries: quick_cache::sync::Cache<SessionKey, Binding>,
}

#[derive(Clone, Copy)]
struct Binding {
    owner: Owner,
    idle: Duration,
    last_used: Instant,
}

impl Default for LocalSessions {
    fn default() -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(CAPACITY),
        }
    }
}

impl LocalSessions {
    fn owner(&self, session: SessionKey, now: Instant) -> Option<Owner> {
        let binding = self.entries.get(&session)?;
        if now.saturating_duration_since(binding.last_used) > binding.idle {
            self.entries.remove(&session);
            return None;
        }
        self.entries.insert(
            session,
            Binding {
                last_used: now,
                ..binding
            },
        );
        Some(binding.owner)
    }

    fn bind(&self, session: SessionKey, owner: Owner, idle: Duration, now: Instant) {
        self.entries.insert(
            session,
            Binding {
                owner,
                idle,
                last_used: now,
            },
        );
    }

    fn end(&self, session: SessionKey) {
        self.entries.remove(&session);
    }
}

/// Binds the session an answer names to the caller, or forgets one a
/// `DELETE` ended.
pub struct Binder {
    pub store: Arc<Sessions>,
    pub owner: Owner,
    pub idle: Duration,
    /// The request was a `DELETE` of this session.
    pub ending: Option<SessionKey>,
    /// The request named no session: a session its answer names is new
    /// (the answer to `initialize`), and the caller's. (An answer that
    /// repeats a session the request named binds nothing: after a restart
    /// the first to present a session must not take it.)
    pub opens: bool,
}

impl Binder {
    /// Binds the session the answer names, or ends the one a `DELETE`
    /// ended; with a shared store, returns the write that the answer's
    /// body waits for (so that a client that read the answer finds the
    /// binding on every replica).
    pub fn answered(&self, status: http::StatusCode, headers: &HeaderMap) -> Option<Write> {
        if let Some(ended) = self.ending {
            return status.is_success().then(|| self.store.end(ended)).flatten();
        }
        let session = SessionKey::of(headers).filter(|_| self.opens && status.is_success())?;
        self.store
            .bind(session, self.owner, self.idle, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &'static str) -> SessionKey {
        SessionKey::from_value(&HeaderValue::from_static(id))
    }

    #[test]
    fn a_binding_is_kept_while_used_and_forgotten_when_idle_or_ended() {
        let store = LocalSessions::default();
        let (a, b) = (Owner([1; 16]), Owner([2; 16]));
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        store.bind(key("s1"), a, idle, t0);
        store.bind(key("s2"), b, idle, t0);
        assert_eq!(
            store.owner(key("s1"), t0 + Duration::from_secs(50)),
            Some(a)
        );
        // Used at 50 s: alive at 100 s.
        assert_eq!(
            store.owner(key("s1"), t0 + Duration::from_secs(100)),
            Some(a)
        );
        // Not used since 0 s: gone at 61 s.
        assert_eq!(store.owner(key("s2"), t0 + Duration::from_secs(61)), None);
        store.end(key("s1"));
        assert_eq!(store.owner(key("s1"), t0 + Duration::from_secs(101)), None);
        assert_eq!(store.owner(key("never"), t0), None);
    }
}
