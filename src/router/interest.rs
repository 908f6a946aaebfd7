//! The interest map: which shards have subscriptions on which filters, replicated to every
//! shard so that a publish is sent only to shards that want it.
//!
//! Each shard holds a full copy. A shard that changes its own interest updates its copy at once
//! and tells the others over the mesh (`MeshOp::Interest`); entries carry absolute counts, so an
//! update is idempotent. Plain subscriptions count only as present or absent; queue groups keep
//! their member count per shard, which weights the pick of the shard that gets each message.

use super::cache::MatchCache;
use super::trie::Trie;
use bytes::Bytes;
use smallvec::SmallVec;
use std::rc::Rc;

/// Per-shard counts, inline for small shard counts.
pub type ShardCounts = SmallVec<[u32; 8]>;

#[derive(Debug)]
struct Entry {
    queue: Bytes,
    counts: ShardCounts,
}

/// Interest in one queue group among all shards, summed over the filters that matched.
#[derive(Debug)]
pub struct QueueInterest {
    /// Queue group name.
    pub name: Bytes,
    /// Members per shard.
    pub counts: ShardCounts,
    /// Sum of `counts`.
    pub total: u32,
}

impl QueueInterest {
    /// The shard that gets a message, chosen with probability proportional to its members.
    /// `roll` is any random number.
    pub fn pick(&self, roll: u32) -> usize {
        debug_assert!(self.total > 0);
        let mut ticket = roll % self.total;
        for (shard, count) in self.counts.iter().enumerate() {
            if ticket < *count {
                return shard;
            }
            ticket -= count;
        }
        unreachable!("ticket below total")
    }
}

/// Every shard's interest in one literal subject.
#[derive(Debug, Default)]
pub struct InterestMatch {
    /// Bit `s` set: shard `s` has plain subscriptions matching.
    pub plain_mask: u64,
    /// Queue groups with members matching.
    pub queues: Vec<QueueInterest>,
}

impl InterestMatch {
    /// True when no shard wants the subject.
    pub fn is_empty(&self) -> bool {
        self.plain_mask == 0 && self.queues.is_empty()
    }
}

/// The replicated interest map of one shard.
#[derive(Debug)]
pub struct InterestMap {
    shards: usize,
    trie: Trie<Entry>,
    cache: MatchCache<InterestMatch>,
}

impl InterestMap {
    /// An empty map for `shards` shards.
    pub fn new(shards: usize) -> InterestMap {
        assert!(shards <= crate::limits::SHARDS_MAX);
        InterestMap { shards, trie: Trie::default(), cache: MatchCache::default() }
    }

    /// Records that `shard` now has `count` subscriptions on (`filter`, `queue`).
    pub fn set(&mut self, shard: usize, filter: &Bytes, queue: &Bytes, count: u32) {
        assert!(shard < self.shards);
        let entries = self.trie.values_mut(filter);
        match entries.iter_mut().position(|e| e.queue == queue) {
            Some(i) => {
                entries[i].counts[shard] = count;
                if entries[i].counts.iter().all(|c| *c == 0) {
                    entries.swap_remove(i);
                }
            }
            None if count > 0 => {
                let mut counts: ShardCounts = SmallVec::from_elem(0, self.shards);
                counts[shard] = count;
                // Most filters hold one entry; a first push would reserve four (288 bytes).
                entries.reserve_exact(1);
                entries.push(Entry { queue: queue.clone(), counts });
            }
            None => {}
        }
        if entries.is_empty() {
            self.trie.prune(filter);
        }
    }

    /// Every shard's interest in a literal subject.
    pub fn matches(&mut self, subject: &[u8]) -> Rc<InterestMatch> {
        let InterestMap { shards, trie, cache } = self;
        cache.get_or_insert(trie.generation(), subject, || {
            let mut found = InterestMatch::default();
            trie.for_each_match(subject, |entry| {
                if entry.queue.is_empty() {
                    for (shard, count) in entry.counts.iter().enumerate() {
                        if *count > 0 {
                            found.plain_mask |= 1 << shard;
                        }
                    }
                    return;
                }
                let queue = match found.queues.iter_mut().position(|q| q.name == entry.queue) {
                    Some(i) => &mut found.queues[i],
                    None => {
                        found.queues.push(QueueInterest {
                            name: entry.queue.clone(),
                            counts: SmallVec::from_elem(0, *shards),
                            total: 0,
                        });
                        found.queues.last_mut().expect("pushed")
                    }
                };
                for (shard, count) in entry.counts.iter().enumerate() {
                    queue.counts[shard] += count;
                    queue.total += count;
                }
            });
            found
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_mask_and_queue_weights() {
        let mut map = InterestMap::new(3);
        let none = Bytes::new();
        map.set(0, &"a.*".into(), &none, 1);
        map.set(2, &"a.>".into(), &none, 1);
        map.set(1, &"a.b".into(), &"q".into(), 2);
        map.set(2, &"a.*".into(), &"q".into(), 1);
        let m = map.matches(b"a.b");
        assert_eq!(m.plain_mask, 0b101);
        assert_eq!(m.queues.len(), 1);
        assert_eq!(&m.queues[0].counts[..], &[0, 2, 1]);
        assert_eq!(m.queues[0].total, 3);
        let picks: Vec<usize> = (0..3).map(|r| m.queues[0].pick(r)).collect();
        assert_eq!(picks, vec![1, 1, 2]);
    }

    #[test]
    fn zero_counts_remove_interest() {
        let mut map = InterestMap::new(2);
        let none = Bytes::new();
        map.set(1, &"x".into(), &none, 1);
        assert!(!map.matches(b"x").is_empty());
        map.set(1, &"x".into(), &none, 0);
        assert!(map.matches(b"x").is_empty());
        map.set(0, &"x".into(), &none, 0);
        assert!(map.matches(b"x").is_empty());
    }
}
