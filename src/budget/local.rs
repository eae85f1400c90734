//! Budget counters in this process: one replica, nothing to run.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Counter, Reserved};

/// Past this many counters, a reservation first drops the ones whose
/// window has ended.
const SWEEP_AT: usize = 16_384;

#[derive(Default)]
pub struct LocalCounters {
    counters: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    used: u64,
    /// The end of its window (seconds since the epoch), and a second more.
    expires: u64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl LocalCounters {
    /// Reserves in every counter, or in none when an enforced one has no
    /// room: under one lock, so concurrent requests see each other.
    pub fn reserve(&self, counters: &[Counter], now: SystemTime) -> Reserved {
        let now = secs(now);
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|_, e| e.expires > now);
        }
        for (index, c) in counters.iter().enumerate() {
            let used = map
                .get(&c.key)
                .filter(|e| e.expires > now)
                .map_or(0, |e| e.used);
            if c.enforce && !has_room(used, c.reserve, c.limit) {
                return Reserved::Full { index, used };
            }
        }
        let totals = counters
            .iter()
            .map(|c| {
                let e = map.entry(c.key.clone()).or_insert(Entry {
                    used: 0,
                    expires: c.window.end + 1,
                });
                if e.expires <= now {
                    *e = Entry {
                        used: 0,
                        expires: c.window.end + 1,
                    };
                }
                e.used = e.used.saturating_add(c.reserve);
                e.used
            })
            .collect();
        Reserved::Taken(totals)
    }

    /// Adds `delta` where [`Counter::settle_into`] says; the total after.
    pub fn settle(&self, counter: &Counter, delta: i64, now: SystemTime) -> Option<u64> {
        let (key, window) = counter.settle_into(delta, now)?;
        let mut map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(key.into_owned()).or_insert(Entry {
            used: 0,
            expires: window.end + 1,
        });
        e.used = e.used.saturating_add_signed(delta);
        Some(e.used)
    }

    pub fn used(&self, key: &str) -> Option<u64> {
        let map = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).map(|e| e.used)
    }
}

/// Whether a counter at `used` can take `reserve` more under `limit`. A
/// spent budget takes nothing, not even a request that reserves nothing.
pub(super) fn has_room(used: u64, reserve: u64, limit: u64) -> bool {
    used < limit && used.saturating_add(reserve) <= limit
}
