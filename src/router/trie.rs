//! A subject trie keyed by `.`-separated tokens, with `*` and `>` children held apart from the
//! literal children (nats-server's `sublist.go` is the model).
//!
//! Values of type `V` sit on the node a filter ends at. The trie owns structure only; what a
//! value means (a local subscription, a shard's interest) belongs to the caller.

use crate::limits::SUBJECT_TOKENS_INLINE;
use ahash::AHashMap;
use bytes::Bytes;
use smallvec::SmallVec;

/// A subject trie holding values of type `V` at the nodes their filters end at.
#[derive(Debug)]
pub struct Trie<V> {
    root: Node<V>,
    generation: u64,
}

#[derive(Debug)]
struct Node<V> {
    literal: AHashMap<Bytes, Node<V>>,
    star: Option<Box<Node<V>>>,
    full: Option<Box<Node<V>>>,
    values: Vec<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node { literal: AHashMap::new(), star: None, full: None, values: Vec::new() }
    }
}

impl<V> Node<V> {
    fn is_empty(&self) -> bool {
        self.values.is_empty()
            && self.literal.is_empty()
            && self.star.is_none()
            && self.full.is_none()
    }
}

impl<V> Default for Trie<V> {
    fn default() -> Self {
        Trie { root: Node::default(), generation: 0 }
    }
}

impl<V> Trie<V> {
    /// Counter bumped on every change; match caches compare it to drop stale results.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The values stored at `filter`, created empty if absent. The caller must call
    /// [`Trie::prune`] if it leaves the vector empty.
    pub fn values_mut(&mut self, filter: &[u8]) -> &mut Vec<V> {
        self.generation += 1;
        let mut node = &mut self.root;
        for token in filter.split(|&b| b == b'.') {
            node = match token {
                b"*" => node.star.get_or_insert_with(Box::default),
                b">" => node.full.get_or_insert_with(Box::default),
                _ => {
                    if !node.literal.contains_key(token) {
                        node.literal.insert(Bytes::copy_from_slice(token), Node::default());
                    }
                    node.literal.get_mut(token).expect("inserted above")
                }
            };
        }
        &mut node.values
    }

    /// The values stored at exactly `filter`, if any.
    pub fn values(&self, filter: &[u8]) -> Option<&[V]> {
        let mut node = &self.root;
        for token in filter.split(|&b| b == b'.') {
            node = match token {
                b"*" => node.star.as_deref()?,
                b">" => node.full.as_deref()?,
                _ => node.literal.get(token)?,
            };
        }
        Some(&node.values)
    }

    /// Removes the nodes on `filter`'s path that hold nothing any more.
    pub fn prune(&mut self, filter: &[u8]) {
        self.generation += 1;
        let tokens: SmallVec<[&[u8]; SUBJECT_TOKENS_INLINE]> =
            filter.split(|&b| b == b'.').collect();
        prune_path(&mut self.root, &tokens);
    }

    /// The reverse of [`Trie::for_each_match`]: calls `visit` for every value stored under a
    /// literal subject that the filter `filter` matches (retained messages for a subscribe).
    /// Values stored under wildcard tokens are not visited.
    pub fn for_each_matched_by(&self, filter: &[u8], mut visit: impl FnMut(&V)) {
        let tokens: SmallVec<[&[u8]; SUBJECT_TOKENS_INLINE]> =
            filter.split(|&b| b == b'.').collect();
        collect_by_filter(&self.root, &tokens, &mut visit);
    }

    /// Calls `visit` for every value whose filter matches the literal `subject`.
    pub fn for_each_match(&self, subject: &[u8], mut visit: impl FnMut(&V)) {
        let tokens: SmallVec<[&[u8]; SUBJECT_TOKENS_INLINE]> =
            subject.split(|&b| b == b'.').collect();
        collect(&self.root, &tokens, &mut visit);
    }
}

fn collect<V>(node: &Node<V>, tokens: &[&[u8]], visit: &mut impl FnMut(&V)) {
    let Some((token, rest)) = tokens.split_first() else {
        node.values.iter().for_each(&mut *visit);
        return;
    };
    if let Some(full) = &node.full {
        full.values.iter().for_each(&mut *visit);
    }
    if let Some(star) = &node.star {
        collect(star, rest, visit);
    }
    if let Some(child) = node.literal.get(*token) {
        collect(child, rest, visit);
    }
}

/// Visits the values under literal paths that `tokens` (a filter) matches.
fn collect_by_filter<V>(node: &Node<V>, tokens: &[&[u8]], visit: &mut impl FnMut(&V)) {
    let Some((token, rest)) = tokens.split_first() else {
        node.values.iter().for_each(&mut *visit);
        return;
    };
    match *token {
        b">" => node.literal.values().for_each(|child| visit_all(child, visit)),
        b"*" => node.literal.values().for_each(|child| collect_by_filter(child, rest, visit)),
        _ => {
            if let Some(child) = node.literal.get(*token) {
                collect_by_filter(child, rest, visit);
            }
        }
    }
}

/// Visits the values of `node` and of every literal path below it.
fn visit_all<V>(node: &Node<V>, visit: &mut impl FnMut(&V)) {
    node.values.iter().for_each(&mut *visit);
    node.literal.values().for_each(|child| visit_all(child, visit));
}

/// Returns true if `node` itself became empty.
fn prune_path<V>(node: &mut Node<V>, tokens: &[&[u8]]) -> bool {
    if let Some((token, rest)) = tokens.split_first() {
        match *token {
            b"*" => {
                if node.star.as_deref_mut().is_some_and(|n| prune_path(n, rest)) {
                    node.star = None;
                }
            }
            b">" => {
                if node.full.as_deref_mut().is_some_and(|n| prune_path(n, rest)) {
                    node.full = None;
                }
            }
            _ => {
                if node.literal.get_mut(*token).is_some_and(|n| prune_path(n, rest)) {
                    node.literal.remove(*token);
                }
            }
        }
    }
    node.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(trie: &Trie<&'static str>, subject: &str) -> Vec<&'static str> {
        let mut found = Vec::new();
        trie.for_each_match(subject.as_bytes(), |v| found.push(*v));
        found.sort_unstable();
        found
    }

    fn trie(filters: &[&'static str]) -> Trie<&'static str> {
        let mut trie = Trie::default();
        for f in filters {
            trie.values_mut(f.as_bytes()).push(*f);
        }
        trie
    }

    #[test]
    fn wildcards_match_like_nats() {
        let t = trie(&["a.b.c", "a.*.c", "a.>", ">", "*", "a.*", "*.b.>", "b"]);
        assert_eq!(matches(&t, "a.b.c"), ["*.b.>", ">", "a.*.c", "a.>", "a.b.c"]);
        assert_eq!(matches(&t, "a"), ["*", ">"]);
        assert_eq!(matches(&t, "a.x"), [">", "a.*", "a.>"]);
        assert_eq!(matches(&t, "b"), ["*", ">", "b"]);
        assert_eq!(matches(&t, "a.b"), [">", "a.*", "a.>"]);
        assert_eq!(matches(&t, "x.y.z.w"), [">"]);
    }

    #[test]
    fn filters_find_stored_literal_subjects() {
        let t = trie(&["a.b.c", "a.b", "a.x.c", "b", "a"]);
        let by = |filter: &str| {
            let mut found = Vec::new();
            t.for_each_matched_by(filter.as_bytes(), |v| found.push(*v));
            found.sort_unstable();
            found
        };
        assert_eq!(by("a.*.c"), ["a.b.c", "a.x.c"]);
        assert_eq!(by("a.>"), ["a.b", "a.b.c", "a.x.c"]);
        assert_eq!(by(">"), ["a", "a.b", "a.b.c", "a.x.c", "b"]);
        assert_eq!(by("*"), ["a", "b"]);
        assert_eq!(by("a.b"), ["a.b"]);
        assert!(by("c.>").is_empty());
        // Agrees with the forward direction (a trie of the filter, matched by the subject).
        for filter in ["a.*.c", "a.>", ">", "*", "*.b", "a.b.c"] {
            let forward = trie(&[filter]);
            for subject in ["a.b.c", "a.b", "a.x.c", "b", "a"] {
                let matched = !matches(&forward, subject).is_empty();
                assert_eq!(by(filter).contains(&subject), matched, "{filter} {subject}");
            }
        }
    }

    #[test]
    fn gt_needs_at_least_one_token() {
        let t = trie(&["a.>"]);
        assert!(matches(&t, "a").is_empty());
        assert_eq!(matches(&t, "a.b.c.d"), ["a.>"]);
    }

    #[test]
    fn literal_wildcard_subject_only_matches_wildcard_filters() {
        // A non-pedantic PUB to "a.*" is matched literally, as nats-server does.
        let t = trie(&["a.*", "a.b", "a.>"]);
        assert_eq!(matches(&t, "a.*"), ["a.*", "a.>"]);
    }

    #[test]
    fn prune_removes_empty_paths_and_bumps_generation() {
        let mut t = trie(&["a.b.c", "a.b"]);
        let g = t.generation();
        t.values_mut(b"a.b.c").clear();
        t.prune(b"a.b.c");
        assert!(t.generation() > g);
        assert!(t.values(b"a.b.c").is_none());
        assert_eq!(t.values(b"a.b"), Some(&["a.b"][..]));
        t.values_mut(b"a.b").clear();
        t.prune(b"a.b");
        assert!(t.root.is_empty());
    }
}
