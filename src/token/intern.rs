//! Shared claim values. Tokens in the cache repeat the same tenant, client
//! app, scope set and authentication methods across users (and every field
//! but the ids across one user's tokens); each distinct value is kept once
//! and shared by `Arc`.
//!
//! Whole profiles (the claims' `Profile`) are shared the same way: tokens
//! of one app for one permission set differ only in their ids.
//!
//! The tables hold weak references, so a value lives only as long as some
//! cached token uses it; dead entries are swept when a table has doubled
//! since the last sweep. It is used on cache misses only (after a signature
//! check), never on the hit path.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};

/// Interns `str`s, string lists and profiles of type `P`.
pub(super) struct Interner<P> {
    strs: Mutex<Table<str>>,
    lists: Mutex<Table<[String]>>,
    profiles: Mutex<Profiles<P>>,
    /// Every value its own allocation: where claims do not outlive their
    /// request (no token cache), sharing would only cost the lookups.
    off: bool,
}

struct Table<T: ?Sized> {
    values: HashMap<Box<T>, Weak<T>>,
    sweep: Sweep,
}

/// When a table of weak references is due for removing its dead ones:
/// when it has doubled since the last sweep (and holds more than 64), so
/// that sweeping costs a constant per insertion.
#[derive(Default)]
struct Sweep {
    /// Entries left by the last sweep.
    live: usize,
}

impl Sweep {
    fn due(&self, len: usize) -> bool {
        len > 2 * self.live.max(64)
    }
}

impl<T: ?Sized> Default for Table<T> {
    fn default() -> Self {
        Self {
            values: HashMap::new(),
            sweep: Sweep::default(),
        }
    }
}

impl<T: ?Sized + Eq + Hash> Table<T>
where
    Box<T>: for<'a> From<&'a T>,
{
    /// The shared copy of `value`, made from `value` itself (moved, where
    /// the caller owns it) when there is none in use.
    fn get<V: Borrow<T>>(&mut self, value: V) -> Arc<T>
    where
        Arc<T>: From<V>,
    {
        if let Some(weak) = self.values.get_mut(value.borrow()) {
            if let Some(shared) = weak.upgrade() {
                return shared;
            }
            // Known but no longer used: the key stays, the value is new.
            let shared = Arc::from(value);
            *weak = Arc::downgrade(&shared);
            return shared;
        }
        let shared = Arc::from(value);
        self.values
            .insert(Box::from(&*shared), Arc::downgrade(&shared));
        if self.sweep.due(self.values.len()) {
            self.values.retain(|_, weak| weak.strong_count() > 0);
            self.sweep.live = self.values.len();
        }
        shared
    }
}

/// Profiles by hash, without a second copy of each as its key (a
/// profile is some 250 bytes; its hash 8): a lookup compares the live
/// profiles of one hash.
struct Profiles<P> {
    by_hash: HashMap<u64, Vec<Weak<P>>>,
    hasher: RandomState,
    sweep: Sweep,
    /// Weak references held, live or not.
    len: usize,
}

impl<P> Default for Profiles<P> {
    fn default() -> Self {
        Self {
            by_hash: HashMap::new(),
            hasher: RandomState::new(),
            sweep: Sweep::default(),
            len: 0,
        }
    }
}

impl<P> Default for Interner<P> {
    fn default() -> Self {
        Self {
            strs: Mutex::default(),
            lists: Mutex::default(),
            profiles: Mutex::default(),
            off: false,
        }
    }
}

impl<P: Eq + Hash> Profiles<P> {
    fn get(&mut self, profile: P) -> Arc<P> {
        let hash = self.hasher.hash_one(&profile);
        let same = self.by_hash.entry(hash).or_default();
        if let Some(shared) = same
            .iter()
            .filter_map(Weak::upgrade)
            .find(|p| **p == profile)
        {
            return shared;
        }
        let shared = Arc::new(profile);
        let weak = Arc::downgrade(&shared);
        match same.iter_mut().find(|w| w.strong_count() == 0) {
            Some(dead) => *dead = weak,
            None => {
                same.push(weak);
                self.len += 1;
            }
        }
        if self.sweep.due(self.len) {
            self.by_hash.retain(|_, same| {
                same.retain(|weak| weak.strong_count() > 0);
                !same.is_empty()
            });
            self.len = self.by_hash.values().map(Vec::len).sum();
            self.sweep.live = self.len;
        }
        shared
    }
}

fn lock<T>(table: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave the table inconsistent: every
    // operation on it completes or changes nothing.
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<P: Eq + Hash> Interner<P> {
    pub fn off() -> Self {
        Self {
            off: true,
            ..Self::default()
        }
    }

    pub fn str(&self, value: &str) -> Arc<str> {
        if self.off {
            return Arc::from(value);
        }
        lock(&self.strs).get(value)
    }

    pub fn profile(&self, profile: P) -> Arc<P> {
        if self.off {
            return Arc::new(profile);
        }
        lock(&self.profiles).get(profile)
    }

    /// Profiles in the table, live or not yet swept.
    #[cfg(test)]
    pub fn profile_count(&self) -> usize {
        lock(&self.profiles).len
    }

    /// Takes the list, so that a new one keeps its strings rather than
    /// copying them.
    pub fn list(&self, values: Vec<String>) -> Arc<[String]> {
        // Most lists are empty (no groups, no wids, …): one for all.
        static EMPTY: OnceLock<Arc<[String]>> = OnceLock::new();
        if values.is_empty() {
            return EMPTY.get_or_init(|| Arc::from(Vec::new())).clone();
        }
        if self.off {
            return Arc::from(values);
        }
        lock(&self.lists).get(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_are_one_allocation_while_in_use() {
        let interner = Interner::<()>::default();
        let a = interner.str("tenant");
        let b = interner.str(&String::from("tenant"));
        assert!(Arc::ptr_eq(&a, &b));
        let list = vec!["Models.Read".to_owned(), "Models.Invoke".to_owned()];
        assert!(Arc::ptr_eq(
            &interner.list(list.clone()),
            &interner.list(list)
        ));
        assert!(!Arc::ptr_eq(&a, &interner.str("other")));
        let off = Interner::<()>::off();
        assert!(!Arc::ptr_eq(&off.str("tenant"), &off.str("tenant")));
        assert_eq!(*off.str("tenant"), *a);
    }

    #[test]
    fn values_no_token_uses_are_swept() {
        let interner = Interner::<()>::default();
        let kept = interner.str("kept");
        for i in 0..10_000 {
            let _dropped = interner.str(&format!("value {i}"));
        }
        let table = lock(&interner.strs);
        assert!(table.values.len() <= 2 * 64 + 1, "{}", table.values.len());
        drop(table);
        assert!(Arc::ptr_eq(&kept, &interner.str("kept")));
    }
}
