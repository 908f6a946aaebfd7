//! The subscriptions of the connections on this shard: a slab of [`Subscription`]s, the trie
//! that finds them by subject, and the match cache in front of it.

use super::cache::MatchCache;
use super::trie::Trie;
use bytes::Bytes;
use slab::Slab;
use std::rc::Rc;

/// One subscription of a local connection.
#[derive(Debug)]
pub struct Subscription {
    /// Slot of the owning connection on this shard.
    pub conn: u32,
    /// The client's subscription id, echoed in MSG.
    pub sid: Bytes,
    /// The filter.
    pub subject: Bytes,
    /// Queue group; empty for a plain subscription.
    pub queue: Bytes,
    /// Deliveries after which the subscription ends (UNSUB with max).
    pub max: Option<u64>,
    /// Deliveries so far.
    pub delivered: u64,
    /// For an MQTT subscription: its options, and `conn` is then the session's slot.
    pub mqtt: Option<MqttSub>,
    /// The filter overlaps a deny rule of the subscriber's token: every delivered subject is
    /// checked against the token's deny rules (only such subscriptions pay that check).
    pub deny_filter: bool,
}

/// What the fan-out needs to deliver to an MQTT session, copied into the subscription so that
/// a delivery reads no session table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MqttSub {
    /// Maximum QoS granted.
    pub qos: u8,
    /// 5.0 No Local: skip messages the session itself published.
    pub no_local: bool,
    /// 5.0 Retain As Published: keep the RETAIN flag on live deliveries.
    pub retain_as_published: bool,
    /// 5.0 Subscription Identifier, 0 when none.
    pub identifier: u32,
    /// The filter starts with a wildcard, so `$` subjects never match it [MQTT-4.7.2-1].
    pub wildcard_first: bool,
}

/// The local subscriptions that match one subject, grouped as the fan-out needs them.
#[derive(Debug, Default)]
pub struct LocalMatch {
    /// Plain subscriptions: each gets a copy.
    pub plain: Vec<u32>,
    /// Queue groups by name: one member of each gets the message.
    pub queues: Vec<(Bytes, Vec<u32>)>,
    /// Some subscription here is an MQTT one.
    pub mqtt: bool,
}

/// Local subscriptions with their trie and match cache.
#[derive(Debug, Default)]
pub struct LocalRouter {
    subscriptions: Slab<Subscription>,
    trie: Trie<u32>,
    cache: MatchCache<LocalMatch>,
}

impl LocalRouter {
    /// Adds a subscription and returns its id.
    pub fn subscribe(&mut self, subscription: Subscription) -> u32 {
        let subject = subscription.subject.clone();
        let id = u32::try_from(self.subscriptions.insert(subscription))
            .expect("fewer than 2^32 subscriptions");
        self.trie.values_mut(&subject).push(id);
        id
    }

    /// Removes a subscription; returns it if it existed.
    pub fn unsubscribe(&mut self, id: u32) -> Option<Subscription> {
        let subscription = self.subscriptions.try_remove(id as usize)?;
        let values = self.trie.values_mut(&subscription.subject);
        values.retain(|v| *v != id);
        if values.is_empty() {
            self.trie.prune(&subscription.subject);
        }
        Some(subscription)
    }

    /// Number of local subscriptions on exactly (`filter`, `queue`).
    pub fn count(&self, filter: &[u8], queue: &[u8]) -> u32 {
        let Some(ids) = self.trie.values(filter) else { return 0 };
        ids.iter().filter(|id| self.subscriptions[**id as usize].queue == queue).count() as u32
    }

    /// The subscription with this id.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Subscription> {
        self.subscriptions.get_mut(id as usize)
    }

    /// Total local subscriptions.
    pub fn len(&self) -> usize {
        self.subscriptions.len()
    }

    /// True when there are no local subscriptions.
    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
    }

    /// The local subscriptions matching a literal subject.
    pub fn matches(&mut self, subject: &[u8]) -> Rc<LocalMatch> {
        let LocalRouter { subscriptions, trie, cache } = self;
        cache.get_or_insert(trie.generation(), subject, || {
            let mut found = LocalMatch::default();
            trie.for_each_match(subject, |id| {
                let subscription = &subscriptions[*id as usize];
                found.mqtt |= subscription.mqtt.is_some();
                let queue = &subscription.queue;
                if queue.is_empty() {
                    found.plain.push(*id);
                } else if let Some((_, members)) = found.queues.iter_mut().find(|(q, _)| q == queue)
                {
                    members.push(*id);
                } else {
                    found.queues.push((queue.clone(), vec![*id]));
                }
            });
            found
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(conn: u32, subject: &'static str, queue: &'static str) -> Subscription {
        Subscription {
            conn,
            sid: "1".into(),
            subject: subject.into(),
            queue: queue.into(),
            max: None,
            delivered: 0,
            mqtt: None,
            deny_filter: false,
        }
    }

    #[test]
    fn groups_queues_by_name_across_filters() {
        let mut router = LocalRouter::default();
        let a = router.subscribe(sub(0, "a.*", ""));
        let q1 = router.subscribe(sub(1, "a.b", "g"));
        let q2 = router.subscribe(sub(2, "a.>", "g"));
        let h = router.subscribe(sub(3, "a.>", "h"));
        let m = router.matches(b"a.b");
        assert_eq!(m.plain, vec![a]);
        let mut g = m.queues.iter().find(|(q, _)| q == "g").unwrap().1.clone();
        g.sort_unstable();
        assert_eq!(g, vec![q1, q2]);
        assert_eq!(m.queues.iter().find(|(q, _)| q == "h").unwrap().1, vec![h]);
        assert_eq!(router.count(b"a.>", b"g"), 1);
        assert_eq!(router.count(b"a.>", b""), 0);
    }

    #[test]
    fn a_match_tells_whether_an_mqtt_subscription_is_in_it() {
        let mut router = LocalRouter::default();
        router.subscribe(sub(0, "a.*", ""));
        assert!(!router.matches(b"a.b").mqtt);
        let mqtt = MqttSub {
            qos: 0,
            no_local: false,
            retain_as_published: false,
            identifier: 0,
            wildcard_first: false,
        };
        let id = router.subscribe(Subscription { mqtt: Some(mqtt), ..sub(1, "a.>", "") });
        assert!(router.matches(b"a.b").mqtt);
        router.unsubscribe(id);
        assert!(!router.matches(b"a.b").mqtt);
    }

    #[test]
    fn unsubscribe_invalidates_cached_matches() {
        let mut router = LocalRouter::default();
        let a = router.subscribe(sub(0, "x", ""));
        assert_eq!(router.matches(b"x").plain, vec![a]);
        router.unsubscribe(a).unwrap();
        assert!(router.matches(b"x").plain.is_empty());
        assert!(router.is_empty());
    }
}
