//! A subject trie keyed by `.`-separated tokens, with `*` and `>` children held apart from the
//! literal children (nats-server's `sublist.go` is the model).
//!
//! Values of type `V` sit on the node a filter ends at. The trie owns structure only; what a
//! value means (a local subscription, a shard's interest) belongs to the caller.

use crate::limits::SUBJECT_TOKENS_INLINE;
use ahash::AHashMap;
use smallvec::SmallVec;

/// A subject trie holding values of type `V` at the nodes their filters end at.
#[derive(Debug)]
pub struct Trie<V> {
    root: Node<V>,
    generation: u64,
}

#[derive(Debug)]
struct Node<V> {
    literal: Literals<V>,
    star: Option<Box<Node<V>>>,
    full: Option<Box<Node<V>>>,
    values: Vec<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node { literal: Literals::default(), star: None, full: None, values: Vec::new() }
    }
}

/// Most literal children a node keeps in a vector before it moves them to a hash map.
const FEW_CHILDREN: usize = 8;

/// The literal children of a node. Most nodes of a device-shaped subject space have one child
/// (`site.<n>.device.<m>.temp` below `<m>`), so up to [`FEW_CHILDREN`] sit in a vector searched
/// in order: 56 bytes per child, where a hash map's smallest table holds four (about 300
/// bytes; tests/idle_memory.rs measured 1.1-1.7 KiB per unique subscription per trie with a
/// map in every node). Wide nodes (`device.*` with thousands of ids) use a map.
#[derive(Debug)]
enum Literals<V> {
    Few(Vec<(Box<[u8]>, Node<V>)>),
    Many(Box<AHashMap<Box<[u8]>, Node<V>>>),
}

impl<V> Default for Literals<V> {
    fn default() -> Self {
        Literals::Few(Vec::new())
    }
}

impl<V> Literals<V> {
    fn is_empty(&self) -> bool {
        match self {
            Literals::Few(few) => few.is_empty(),
            Literals::Many(many) => many.is_empty(),
        }
    }

    #[inline]
    fn get(&self, token: &[u8]) -> Option<&Node<V>> {
        match self {
            Literals::Few(few) => few.iter().find(|(t, _)| **t == *token).map(|(_, n)| n),
            Literals::Many(many) => many.get(token),
        }
    }

    fn get_mut(&mut self, token: &[u8]) -> Option<&mut Node<V>> {
        match self {
            Literals::Few(few) => few.iter_mut().find(|(t, _)| **t == *token).map(|(_, n)| n),
            Literals::Many(many) => many.get_mut(token),
        }
    }

    /// The child for `token`, created empty if absent.
    fn child(&mut self, token: &[u8]) -> &mut Node<V> {
        if let Literals::Few(few) = self {
            if let Some(at) = few.iter().position(|(t, _)| **t == *token) {
                let Literals::Few(few) = self else { unreachable!() };
                return &mut few[at].1;
            }
            if few.len() < FEW_CHILDREN {
                // One at a time: a first push would reserve room for four children.
                few.reserve_exact(1);
                few.push((token.into(), Node::default()));
                let Literals::Few(few) = self else { unreachable!() };
                return &mut few.last_mut().expect("just pushed").1;
            }
            let many: AHashMap<Box<[u8]>, Node<V>> = few.drain(..).collect();
            *self = Literals::Many(Box::new(many));
        }
        let Literals::Many(many) = self else { unreachable!() };
        many.entry(token.into()).or_default()
    }

    fn remove(&mut self, token: &[u8]) {
        match self {
            Literals::Few(few) => {
                if let Some(at) = few.iter().position(|(t, _)| **t == *token) {
                    few.swap_remove(at);
                }
            }
            Literals::Many(many) => {
                many.remove(token);
            }
        }
    }

    fn values(&self) -> impl Iterator<Item = &Node<V>> {
        let (few, many) = match self {
            Literals::Few(few) => (Some(few), None),
            Literals::Many(many) => (None, Some(many)),
        };
        let few = few.into_iter().flatten().map(|(_, node)| node);
        few.chain(many.into_iter().flat_map(|many| many.values()))
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
                _ => node.literal.child(token),
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
    if let Some(child) = node.literal.get(token) {
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
            if let Some(child) = node.literal.get(token) {
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
                if node.literal.get_mut(token).is_some_and(|n| prune_path(n, rest)) {
                    node.literal.remove(token);
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
    fn wide_nodes_move_their_children_to_a_map_and_still_match() {
        let mut t = Trie::default();
        let filters: Vec<String> = (0..40).map(|i| format!("dev.{i}.cmd")).collect();
        for (i, f) in filters.iter().enumerate() {
            t.values_mut(f.as_bytes()).push(i);
        }
        t.values_mut(b"dev.*.cmd").push(100);
        for (i, f) in filters.iter().enumerate() {
            let mut found = Vec::new();
            t.for_each_match(f.as_bytes(), |v| found.push(*v));
            found.sort_unstable();
            assert_eq!(found, [i, 100], "{f}");
        }
        let mut all = Vec::new();
        t.for_each_matched_by(b"dev.>", |v| all.push(*v));
        // The reverse walk visits literal paths only, not the `dev.*.cmd` value.
        assert_eq!(all.len(), 40);
        for f in filters.iter().step_by(2) {
            t.values_mut(f.as_bytes()).clear();
            t.prune(f.as_bytes());
            assert!(t.values(f.as_bytes()).is_none());
        }
        let mut left = Vec::new();
        t.for_each_matched_by(b"dev.*.cmd", |v| left.push(*v));
        left.sort_unstable();
        let odd: Vec<usize> = (1..40).step_by(2).collect();
        assert_eq!(left, odd);
        let mut found = Vec::new();
        t.for_each_match(b"dev.1.cmd", |v| found.push(*v));
        found.sort_unstable();
        assert_eq!(found, [1, 100]);
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
