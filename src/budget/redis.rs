//! Budget counters in Redis, shared by every replica: one script checks
//! and reserves in all of a request's counters at once, one settles a
//! counter; each counter expires with its window.
//!
//! The connection is made on first use (compiling a config opens nothing)
//! and remade by the client after a failure. Every command has a deadline;
//! a store that misses it counts as down until a command succeeds, and a
//! request meets what `on_error` says: refused, let through uncounted, or
//! counted in this replica's own counters meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, Script};
use tokio::sync::OnceCell;

use super::local::LocalCounters;
use super::{Counter, Reserved, Unavailable};
use crate::config::{RedisStoreConfig, StoreFailure};

/// Checks every counter (enforced ones must have room for their
/// reservation), then reserves in all. KEYS: the counters; ARGV per key:
/// limit, reserve, enforce (1/0), time to live in ms. Answers
/// `{1, total…}`, or `{0, index, used}` for the first counter without room
/// (nothing reserved).
const RESERVE: &str = r"
for i = 1, #KEYS do
  local a = (i - 1) * 4
  local used = tonumber(redis.call('GET', KEYS[i]) or '0')
  local limit, reserve = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  if ARGV[a + 3] == '1' and (used >= limit or used + reserve > limit) then
    return {0, i - 1, used}
  end
end
local out = {1}
for i = 1, #KEYS do
  local a = (i - 1) * 4
  out[i + 1] = redis.call('INCRBY', KEYS[i], ARGV[a + 2])
  if redis.call('PTTL', KEYS[i]) < 0 then
    redis.call('PEXPIRE', KEYS[i], ARGV[a + 4])
  end
end
return out
";

/// Adds a settlement to one counter (created with its time to live if a
/// refund outlived it), never below zero. KEYS: the counter; ARGV: delta,
/// time to live in ms. Answers the total.
const SETTLE: &str = r"
local total = redis.call('INCRBY', KEYS[1], ARGV[1])
if total < 0 then
  redis.call('SET', KEYS[1], 0, 'KEEPTTL')
  total = 0
end
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return total
";

pub struct RedisStore {
    client: Client,
    connection: OnceCell<ConnectionManager>,
    prefix: String,
    timeout: Duration,
    on_error: StoreFailure,
    /// Counts while the store is down, with `on_error = "local"`.
    fallback: LocalCounters,
    reserve: Script,
    settle: Script,
    up: AtomicBool,
    errors: AtomicU64,
}

impl RedisStore {
    /// A store for `config`; nothing is connected until it is used.
    pub fn new(config: &RedisStoreConfig) -> Result<Self, String> {
        let client = Client::open(config.url.as_str()).map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            connection: OnceCell::new(),
            prefix: config.prefix.clone(),
            timeout: config.timeout,
            on_error: config.on_error,
            fallback: LocalCounters::default(),
            reserve: Script::new(RESERVE),
            settle: Script::new(SETTLE),
            up: AtomicBool::new(true),
            errors: AtomicU64::new(0),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, redis::RedisError> {
        self.connection
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            })
            .await
            .cloned()
    }

    /// Runs one script with the deadline, and notes whether the store
    /// answered.
    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, ()> {
        let result = tokio::time::timeout(self.timeout, async {
            let mut connection = self.connection().await?;
            invocation.invoke_async::<T>(&mut connection).await
        })
        .await;
        self.noted(result)
    }

    fn failed(&self, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error, "budget store unreachable");
        }
    }

    fn key(&self, counter_key: &str) -> String {
        format!("{}:budget:{counter_key}", self.prefix)
    }

    /// Reserves in every counter, or none; `true` with it when it was
    /// counted in this replica because the store is down.
    pub async fn reserve(
        &self,
        counters: &[Counter],
        now: SystemTime,
    ) -> Result<(Reserved, bool), Unavailable> {
        let mut call = self.reserve.prepare_invoke();
        for c in counters {
            call.key(self.key(&c.key));
            call.arg(c.limit)
                .arg(c.reserve)
                .arg(u8::from(c.enforce))
                .arg(c.window.ttl(now).as_millis() as u64);
        }
        match self.run::<Vec<u64>>(call).await {
            Ok(answer) => match answer.as_slice() {
                [1, totals @ ..] => Ok((Reserved::Taken(totals.to_vec()), false)),
                [0, index, used] => Ok((
                    Reserved::Full {
                        index: *index as usize,
                        used: *used,
                    },
                    false,
                )),
                _ => {
                    self.failed("unexpected answer to the reservation script");
                    self.unavailable(counters, now)
                }
            },
            Err(()) => self.unavailable(counters, now),
        }
    }

    fn unavailable(
        &self,
        counters: &[Counter],
        now: SystemTime,
    ) -> Result<(Reserved, bool), Unavailable> {
        match self.on_error {
            StoreFailure::Deny => Err(Unavailable::Deny),
            StoreFailure::Allow => Err(Unavailable::Allow),
            StoreFailure::Local => Ok((self.fallback.reserve(counters, now), true)),
        }
    }

    /// Settles one counter where [`Counter::settle_into`] says; the total
    /// after, if the store answered.
    pub async fn settle(
        &self,
        counter: &Counter,
        delta: i64,
        now: SystemTime,
        fallback: bool,
    ) -> Option<u64> {
        if fallback {
            return self.fallback.settle(counter, delta, now);
        }
        let (key, window) = counter.settle_into(delta, now)?;
        let mut call = self.settle.prepare_invoke();
        call.key(self.key(&key))
            .arg(delta)
            .arg(window.ttl(now).as_millis() as u64);
        self.run::<u64>(call).await.ok()
    }

    pub async fn used(&self, key: &str) -> Option<u64> {
        let mut get = redis::cmd("GET");
        get.arg(self.key(key));
        self.query::<Option<u64>>(get)
            .await
            .ok()
            .map(|u| u.unwrap_or(0))
    }

    /// Whether the last command reached the store.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Commands that failed or missed their deadline.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn denies_when_down(&self) -> bool {
        self.on_error == StoreFailure::Deny
    }

    fn session_key(&self, session: &str) -> String {
        format!("{}:mcp-session:{session}", self.prefix)
    }

    /// The owner a session is bound to (its digest, in hex), refreshing
    /// the binding's idle timeout: one `GETEX`. `Err` when the store did
    /// not answer.
    pub async fn session_owner(&self, session: &str, idle: Duration) -> Result<Option<String>, ()> {
        let mut cmd = redis::cmd("GETEX");
        cmd.arg(self.session_key(session))
            .arg("PX")
            .arg(idle.as_millis() as u64);
        self.query(cmd).await
    }

    /// Binds a session to its owner for `idle`, or forgets it (`None`).
    pub async fn session_set(&self, session: &str, owner: Option<&str>, idle: Duration) {
        let key = self.session_key(session);
        let cmd = match owner {
            Some(owner) => {
                let mut c = redis::cmd("SET");
                c.arg(key).arg(owner).arg("PX").arg(idle.as_millis() as u64);
                c
            }
            None => {
                let mut c = redis::cmd("DEL");
                c.arg(key);
                c
            }
        };
        let _ = self.query::<redis::Value>(cmd).await;
    }

    /// Runs one command with the deadline, and notes whether the store
    /// answered.
    async fn query<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, ()> {
        let result = tokio::time::timeout(self.timeout, async {
            let mut connection = self.connection().await?;
            cmd.query_async::<T>(&mut connection).await
        })
        .await;
        self.noted(result)
    }

    fn noted<T>(
        &self,
        result: Result<Result<T, redis::RedisError>, tokio::time::error::Elapsed>,
    ) -> Result<T, ()> {
        match result {
            Ok(Ok(v)) => {
                self.up.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                Err(())
            }
            Err(_) => {
                self.failed("timed out");
                Err(())
            }
        }
    }

    /// What a request meets while the store is down.
    pub fn on_error(&self) -> StoreFailure {
        self.on_error
    }

    /// Asks the store whether it answers (for readiness while no request
    /// comes).
    pub async fn ping(&self) -> bool {
        self.query::<String>(redis::cmd("PING")).await.is_ok()
    }
}
