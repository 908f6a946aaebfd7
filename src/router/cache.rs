//! A bounded cache of match results keyed by literal subject, invalidated wholesale when the
//! trie's generation moves (any subscribe or unsubscribe on the shard).
//!
//! Results are `Rc`s so a hit costs a refcount, not a copy. When full, the cache is cleared:
//! simpler than an eviction policy, and a publisher working set larger than the bound misses
//! no matter which policy is used.

use crate::limits::MATCH_CACHE_ENTRIES_MAX;
use ahash::AHashMap;
use bytes::Bytes;
use std::rc::Rc;

/// Subject -> match result, valid for one trie generation.
#[derive(Debug)]
pub struct MatchCache<R> {
    entries: AHashMap<Bytes, Rc<R>>,
    generation: u64,
    hits: u64,
    misses: u64,
}

impl<R> Default for MatchCache<R> {
    fn default() -> Self {
        MatchCache { entries: AHashMap::new(), generation: 0, hits: 0, misses: 0 }
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
        }
        if let Some(result) = self.entries.get(subject) {
            self.hits += 1;
            return Rc::clone(result);
        }
        self.misses += 1;
        if self.entries.len() >= MATCH_CACHE_ENTRIES_MAX {
            self.entries.clear();
        }
        let result = Rc::new(compute());
        // Copy the key: the subject is usually a slice of a read buffer it must not pin.
        self.entries.insert(Bytes::copy_from_slice(subject), Rc::clone(&result));
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
    fn bounded() {
        let mut cache = MatchCache::default();
        for i in 0..MATCH_CACHE_ENTRIES_MAX + 5 {
            cache.get_or_insert(0, i.to_string().as_bytes(), || i);
        }
        assert!(cache.len() <= MATCH_CACHE_ENTRIES_MAX);
    }
}
