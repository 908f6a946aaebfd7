//! Retained messages: the last retained publish per subject, replicated to every shard.
//!
//! Every shard holds the whole set so that a subscribe reads only local memory. A retained
//! publish is applied on the publisher's shard and sent to every other shard with a
//! process-wide sequence number; an update older than what a shard already has is ignored, so
//! every shard ends with the same message per subject whatever order updates arrive in.
//! A deletion (empty retained payload) is kept as a tombstone with its sequence number for the
//! same reason. Lookups by filter scan the set (see docs/mqtt.md, known gaps).

use crate::message::Message;
use crate::protocol::subject::{filter_matches, is_reserved_subject};
use ahash::AHashMap;
use bytes::Bytes;

#[derive(Debug)]
struct Entry {
    seq: u64,
    message: Option<Message>,
}

/// The retained messages of one shard's replica.
#[derive(Debug, Default)]
pub struct Retained {
    entries: AHashMap<Bytes, Entry>,
    live: usize,
}

impl Retained {
    /// Sets (`Some`) or deletes (`None`) the retained message of `subject` if `seq` is newer
    /// than what is held. Returns true if it changed anything.
    pub fn apply(&mut self, subject: Bytes, seq: u64, message: Option<Message>) -> bool {
        match self.entries.get_mut(&subject) {
            Some(entry) if entry.seq >= seq => false,
            Some(entry) => {
                self.live = self.live + usize::from(message.is_some())
                    - usize::from(entry.message.is_some());
                *entry = Entry { seq, message };
                true
            }
            None => {
                self.live += usize::from(message.is_some());
                self.entries.insert(subject, Entry { seq, message });
                true
            }
        }
    }

    /// The retained messages whose subjects match the NATS `filter`, in no particular order.
    /// A filter starting with a wildcard (`wildcard_first`) skips `$` subjects.
    pub fn matching(&self, filter: &[u8], wildcard_first: bool) -> Vec<Message> {
        if !crate::protocol::subject::has_wildcard(filter) {
            return self.entries.get(filter).and_then(|e| e.message.clone()).into_iter().collect();
        }
        self.entries
            .iter()
            .filter(|(subject, _)| !(wildcard_first && is_reserved_subject(subject)))
            .filter(|(subject, _)| filter_matches(filter, subject))
            .filter_map(|(_, entry)| entry.message.clone())
            .collect()
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
        Message { payload: payload.into(), ..Default::default() }
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
        r.apply("$SYS.x".into(), 1, Some(msg("sys")));
        r.apply("a.b".into(), 2, Some(msg("ab")));
        assert_eq!(r.matching(b">", true), vec![msg("ab")]);
        assert_eq!(r.matching(b"$SYS.>", false), vec![msg("sys")]);
        assert_eq!(r.matching(b"a.*", false), vec![msg("ab")]);
    }
}
