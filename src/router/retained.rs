//! Retained messages: the last retained publish per subject, replicated to every shard.
//!
//! Every shard holds the whole set so that a subscribe reads only local memory. A retained
//! publish is applied on the publisher's shard and sent to every other shard with a
//! process-wide sequence number; an update older than what a shard already has is ignored, so
//! every shard ends with the same message per subject whatever order updates arrive in.
//! A deletion (empty retained payload) is kept as a tombstone with its sequence number for the
//! same reason. Messages sit in a subject trie, so a subscribe visits only the subjects its
//! filter matches.

use super::trie::Trie;
use crate::message::Message;
use crate::protocol::subject::is_reserved_subject;
use bytes::Bytes;

#[derive(Debug)]
struct Entry {
    seq: u64,
    message: Option<Message>,
}

/// The retained messages of one shard's replica.
#[derive(Debug, Default)]
pub struct Retained {
    /// One entry per subject ever retained (tombstones included).
    trie: Trie<Entry>,
    live: usize,
}

impl Retained {
    /// Sets (`Some`) or deletes (`None`) the retained message of `subject` if `seq` is newer
    /// than what is held. Returns true if it changed anything.
    pub fn apply(&mut self, subject: Bytes, seq: u64, message: Option<Message>) -> bool {
        let entries = self.trie.values_mut(&subject);
        match entries.first_mut() {
            Some(entry) if entry.seq >= seq => false,
            Some(entry) => {
                self.live = self.live + usize::from(message.is_some())
                    - usize::from(entry.message.is_some());
                *entry = Entry { seq, message };
                true
            }
            None => {
                self.live += usize::from(message.is_some());
                entries.push(Entry { seq, message });
                true
            }
        }
    }

    /// The retained messages whose subjects match the NATS `filter`, in no particular order.
    /// A filter starting with a wildcard (`wildcard_first`) skips `$` subjects.
    pub fn matching(&self, filter: &[u8], wildcard_first: bool) -> Vec<Message> {
        let mut found = Vec::new();
        self.trie.for_each_matched_by(filter, |entry| {
            if let Some(message) = &entry.message {
                if !(wildcard_first && is_reserved_subject(&message.subject)) {
                    found.push(message.clone());
                }
            }
        });
        found
    }

    /// Retained messages held (tombstones not counted).
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no message is retained.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &'static str) -> Message {
        Message { payload: payload.into(), subject: "t".into(), ..Default::default() }
    }

    fn at(subject: &'static str, payload: &'static str) -> Message {
        Message { payload: payload.into(), subject: subject.into(), ..Default::default() }
    }

    #[test]
    fn newest_sequence_wins_in_any_order() {
        let mut a = Retained::default();
        let mut b = Retained::default();
        a.apply("t".into(), 1, Some(msg("one")));
        a.apply("t".into(), 2, None);
        a.apply("t".into(), 3, Some(msg("three")));
        b.apply("t".into(), 3, Some(msg("three")));
        b.apply("t".into(), 1, Some(msg("one")));
        b.apply("t".into(), 2, None);
        assert_eq!(a.matching(b"t", false), vec![msg("three")]);
        assert_eq!(b.matching(b"t", false), vec![msg("three")]);
        assert_eq!(a.len(), 1);
        a.apply("t".into(), 4, None);
        assert!(a.is_empty());
        assert!(a.matching(b">", true).is_empty());
    }

    #[test]
    fn wildcard_first_filters_skip_dollar_subjects() {
        let mut r = Retained::default();
        r.apply("$SYS.x".into(), 1, Some(at("$SYS.x", "sys")));
        r.apply("a.b".into(), 2, Some(at("a.b", "ab")));
        assert_eq!(r.matching(b">", true), vec![at("a.b", "ab")]);
        assert_eq!(r.matching(b"*.x", true), Vec::<Message>::new());
        assert_eq!(r.matching(b"$SYS.>", false), vec![at("$SYS.x", "sys")]);
        assert_eq!(r.matching(b"a.*", false), vec![at("a.b", "ab")]);
    }
}
