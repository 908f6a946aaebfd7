//! A bounded cache of match results keyed by literal subject, invalidated wholesale when the
//! trie's generation moves (any subscribe or unsubscribe on the shard).
//!
//! Results are `Rc`s so a hit costs a refcount, not a copy. When full, the cache is cleared:
//! simpler than an eviction policy, and a publisher working set larger than the bound misses
//! no matter which policy is used. Such a working set (a fleet of devices each publishing on
//! its own subject) made every lookup pay the miss, a key copy, an insert and a share of the
//! clears: 1109 ns against 554 ns without a cache at 1M subscriptions
//! (tuning/results/2026-12-01-trie.md). So a fill that served fewer hits than misses is
//! followed by [`BYPASS_MISSES`] misses computed without caching, then the cache tries again.

use crate::limits::MATCH_CACHE_ENTRIES_MAX;
use ahash::AHashMap;
use bytes::Bytes;
use std::rc::Rc;

/// Misses computed uncached after a fill that did not pay off.
pub const BYPASS_MISSES: u32 = 4 * MATCH_CACHE_ENTRIES_MAX as u32;

/// Subject -> match result, valid for one trie generation.
#[derive(Debug)]
pub struct MatchCache<R> {
    entries: AHashMap<Bytes, Rc<R>>,
    generation: u64,
    hits: u64,
    misses: u64,
    /// Hits and misses since the cache was last emptied.
    fill_hits: u64,
    fill_misses: u64,
    /// Misses still to compute without caching.
    bypass: u32,
    /// A subject served twice in a row (`key_valid`) and its result: then a publisher that
    /// keeps to one subject is served by one compare, without hashing. `last_seen` is the
    /// address of the last result served, compared, never dereferenced: the subject is copied
    /// and the result kept only when a run starts, so lookups that change subject every time
    /// (many devices on a shard) pay an integer compare (callgrind of benches/publish_path.rs
    /// with `rotate`: copying on every hit cost 154 instructions a message there, as much as the
    /// shortcut saves for one subject). A reused address can only start a run early, with the
    /// subject and result of that lookup, so it cannot serve a wrong result.
    last_key: Vec<u8>,
    key_valid: bool,
    last: Option<Rc<R>>,
    last_seen: usize,
}

impl<R> Default for MatchCache<R> {
    fn default() -> Self {
        MatchCache {
            entries: AHashMap::new(),
            generation: 0,
            hits: 0,
            misses: 0,
            fill_hits: 0,
            fill_misses: 0,
            bypass: 0,
            last_key: Vec::new(),
            key_valid: false,
            last: None,
            last_seen: 0,
        }
    }
}

impl<R> MatchCache<R> {
    /// The cached result for `subject` at `generation`, or the one `compute` builds.
    pub fn get_or_insert(
        &mut self,
        generation: u64,
        subject: &[u8],
        compute: impl FnOnce() -> R,
    ) -> Rc<R> {
        if generation != self.generation {
            self.entries.clear();
            self.generation = generation;
            (self.fill_hits, self.fill_misses, self.bypass) = (0, 0, 0);
            (self.last, self.key_valid, self.last_seen) = (None, false, 0);
        }
        if let (true, Some(last)) = (self.key_valid, &self.last) {
            if self.last_key == subject {
                self.hits += 1;
                self.fill_hits += 1;
                return Rc::clone(last);
            }
        }
        if let Some(result) = self.entries.get(subject) {
            self.hits += 1;
            self.fill_hits += 1;
            let result = Rc::clone(result);
            let seen = Rc::as_ptr(&result) as usize;
            if seen != self.last_seen {
                (self.last_seen, self.key_valid) = (seen, false);
            } else if !self.key_valid {
                self.last_key.clear();
                self.last_key.extend_from_slice(subject);
                (self.last, self.key_valid) = (Some(Rc::clone(&result)), true);
            }
            return result;
        }
        self.misses += 1;
        if self.bypass > 0 {
            self.bypass -= 1;
            return Rc::new(compute());
        }
        self.fill_misses += 1;
        if self.entries.len() >= MATCH_CACHE_ENTRIES_MAX {
            self.entries.clear();
            if self.fill_hits < self.fill_misses {
                self.bypass = BYPASS_MISSES;
            }
            (self.fill_hits, self.fill_misses) = (0, 0);
            if self.bypass > 0 {
                return Rc::new(compute());
            }
        }
        let result = Rc::new(compute());
        // Copy the key: the subject is usually a slice of a read buffer it must not pin.
        self.entries.insert(Bytes::copy_from_slice(subject), Rc::clone(&result));
        (self.last_seen, self.key_valid) = (Rc::as_ptr(&result) as usize, false);
        result
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    /// Entries currently cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_miss_and_invalidation() {
        let mut cache = MatchCache::default();
        let mut computed = 0;
        for _ in 0..3 {
            cache.get_or_insert(1, b"a", || {
                computed += 1;
                7
            });
        }
        assert_eq!(computed, 1);
        assert_eq!(cache.stats(), (2, 1));
        assert_eq!(*cache.get_or_insert(2, b"a", || 8), 8);
    }

    #[test]
    fn a_working_set_larger_than_the_cache_bypasses_it_then_retries() {
        let mut cache = MatchCache::default();
        let wide = 2 * MATCH_CACHE_ENTRIES_MAX;
        // One fill of distinct subjects: no hits, so the cache stops caching.
        for i in 0..MATCH_CACHE_ENTRIES_MAX + 1 {
            assert_eq!(*cache.get_or_insert(0, i.to_string().as_bytes(), || i), i);
        }
        assert!(cache.is_empty(), "cleared and bypassing");
        for i in 0..BYPASS_MISSES as usize {
            let subject = (i % wide).to_string();
            assert_eq!(*cache.get_or_insert(0, subject.as_bytes(), || i % wide), i % wide);
            assert!(cache.is_empty(), "nothing cached while bypassing");
        }
        // Then it caches again, and a hot set that fits is served from it.
        for _ in 0..3 {
            for i in 0..100 {
                cache.get_or_insert(0, format!("hot{i}").as_bytes(), || i);
            }
        }
        assert_eq!(cache.len(), 100);
        let (hits, _) = cache.stats();
        assert!(hits >= 200, "{hits} hits");
        // A new trie generation ends a bypass at once.
        for i in 0..MATCH_CACHE_ENTRIES_MAX + 1 {
            cache.get_or_insert(0, format!("x{i}").as_bytes(), || i);
        }
        cache.get_or_insert(1, b"fresh", || 1);
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn alternating_subjects_each_get_their_own_result() {
        let mut cache = MatchCache::default();
        for round in 0..3 {
            assert_eq!(*cache.get_or_insert(0, b"a.b", || 1), 1, "round {round}");
            assert_eq!(*cache.get_or_insert(0, b"a.c", || 2), 2, "round {round}");
            // The second and third lookups of a.c in a row start and use the shortcut.
            assert_eq!(*cache.get_or_insert(0, b"a.c", || 3), 2, "round {round}");
            assert_eq!(*cache.get_or_insert(0, b"a.c", || 3), 2, "round {round}");
            assert_eq!(*cache.get_or_insert(0, b"a", || 4), 4, "round {round}");
            assert_eq!(*cache.get_or_insert(0, b"a.c", || 3), 2, "round {round}");
        }
        assert_eq!(cache.stats(), (15, 3));
        // A new generation forgets the last result too.
        assert_eq!(*cache.get_or_insert(1, b"a", || 5), 5);
    }

    #[test]
    fn bounded() {
        let mut cache = MatchCache::default();
        for i in 0..MATCH_CACHE_ENTRIES_MAX + 5 {
            cache.get_or_insert(0, i.to_string().as_bytes(), || i);
        }
        assert!(cache.len() <= MATCH_CACHE_ENTRIES_MAX);
    }
}
