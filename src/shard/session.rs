//! MQTT session state, owned by the session's home shard (`home_shard(client_id)`), or by the
//! shard a publisher's session moved to with its connection (`Shard::mqtt_may_move`).
//!
//! A session outlives its connections: its subscriptions stay in the router, QoS 1/2
//! deliveries wait in `queue` while it is offline, and deliveries not yet acknowledged stay in
//! `inflight` to be resent with DUP on resume. Sessions live in memory; [`SessionStore`] is the
//! seam where a durable store will hook in (every change that must survive a restart goes
//! through it).

use crate::message::Message;
use crate::protocol::mqtt::packet::{SubscriptionOptions, Version, Will};
use ahash::AHashMap;
use bytes::Bytes;
use smallvec::SmallVec;
use std::collections::VecDeque;
use std::time::Instant;

/// A delivery waiting for a free slot in the inflight window (or for the client to return).
#[derive(Debug)]
pub struct Pending {
    /// The message.
    pub message: Message,
    /// QoS it is delivered at (1 or 2).
    pub qos: u8,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription Identifier to send, 0 for none.
    pub identifier: u32,
}

/// Where an outgoing QoS 1/2 delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREC received and PUBREL sent, waiting for PUBCOMP.
    Released,
}

/// An outgoing QoS 1/2 delivery not yet acknowledged.
#[derive(Debug)]
pub struct Inflight {
    /// Packet Identifier.
    pub packet_id: u16,
    /// The delivery.
    pub pending: Pending,
    /// Stage of its flow.
    pub stage: Stage,
}

/// One subscription of a session, keyed by its filter as the client sent it.
#[derive(Debug)]
pub struct SessionSub {
    /// Router subscription ids: one, or two for a filter ending in `/#` (it also matches its
    /// parent level).
    pub ids: SmallVec<[u32; 2]>,
    /// The options the client asked for.
    pub options: SubscriptionOptions,
}

/// A session's subscriptions by filter. Most devices hold a handful, so up to
/// [`SubTable::FEW`] live in a vector searched in order (about 64 bytes each instead of a hash
/// table's 4-bucket minimum of about 280); beyond that they move to a hash map.
#[derive(Debug)]
pub enum SubTable {
    /// Few subscriptions, in insertion order.
    Few(Vec<(Bytes, SessionSub)>),
    /// Many subscriptions.
    Many(Box<AHashMap<Bytes, SessionSub>>),
}

impl Default for SubTable {
    fn default() -> Self {
        SubTable::Few(Vec::new())
    }
}

impl SubTable {
    /// Most subscriptions kept in the vector form.
    pub const FEW: usize = 16;

    /// Sets the subscription of `filter`; returns the one it replaces.
    pub fn insert(&mut self, filter: Bytes, sub: SessionSub) -> Option<SessionSub> {
        match self {
            SubTable::Few(few) => {
                if let Some((_, old)) = few.iter_mut().find(|(f, _)| *f == filter) {
                    return Some(std::mem::replace(old, sub));
                }
                if few.len() < Self::FEW {
                    // One at a time: a first push would reserve room for four.
                    few.reserve_exact(1);
                    few.push((filter, sub));
                    return None;
                }
                let mut many: AHashMap<Bytes, SessionSub> = few.drain(..).collect();
                many.insert(filter, sub);
                *self = SubTable::Many(Box::new(many));
                None
            }
            SubTable::Many(many) => many.insert(filter, sub),
        }
    }

    /// Removes the subscription of `filter`.
    pub fn remove(&mut self, filter: &[u8]) -> Option<SessionSub> {
        match self {
            SubTable::Few(few) => {
                let at = few.iter().position(|(f, _)| f == filter)?;
                Some(few.remove(at).1)
            }
            SubTable::Many(many) => many.remove(filter),
        }
    }

    /// The subscription of `filter`.
    pub fn get(&self, filter: &[u8]) -> Option<&SessionSub> {
        match self {
            SubTable::Few(few) => few.iter().find(|(f, _)| f == filter).map(|(_, sub)| sub),
            SubTable::Many(many) => many.get(filter),
        }
    }

    /// Every filter.
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        let (few, many) = match self {
            SubTable::Few(few) => (Some(few), None),
            SubTable::Many(many) => (None, Some(many)),
        };
        let few = few.into_iter().flatten().map(|(filter, _)| filter);
        few.chain(many.into_iter().flat_map(|many| many.keys()))
    }

    /// Every subscription.
    pub fn values(&self) -> impl Iterator<Item = &SessionSub> {
        let (few, many) = match self {
            SubTable::Few(few) => (Some(few), None),
            SubTable::Many(many) => (None, Some(many)),
        };
        let few = few.into_iter().flatten().map(|(_, sub)| sub);
        few.chain(many.into_iter().flat_map(|many| many.values()))
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        match self {
            SubTable::Few(few) => few.len(),
            SubTable::Many(many) => many.len(),
        }
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The state of one MQTT session.
#[derive(Debug)]
pub struct Session {
    /// Client Identifier.
    pub client_id: Bytes,
    /// The connection slot serving it, when online.
    pub conn: Option<u32>,
    /// Protocol version of the current (or last) connection.
    pub version: Version,
    /// Subscriptions by filter.
    pub subs: SubTable,
    /// Outgoing deliveries sent and not acknowledged, oldest first.
    pub inflight: VecDeque<Inflight>,
    /// Deliveries waiting for the window, oldest first.
    pub queue: VecDeque<Pending>,
    /// Packet ids of incoming QoS 2 publishes routed and waiting for PUBREL.
    pub incoming_qos2: SmallVec<[u16; 8]>,
    /// Next packet identifier to try.
    pub next_packet_id: u16,
    /// Session Expiry Interval in seconds (0: ends with the connection).
    pub expiry_s: u32,
    /// When an offline session ends.
    pub expires_at: Option<Instant>,
    /// The will of the current connection; after an unclean close, while its delay runs.
    pub will: Option<Box<Will>>,
    /// When a delayed will is published.
    pub will_at: Option<Instant>,
    /// The client's Receive Maximum, capped by `mqtt.max_inflight`.
    pub window: usize,
    /// The client's Maximum Packet Size (u32::MAX when it set none).
    pub max_packet: u32,
    /// Topic Alias Maximum the client accepts from the broker.
    pub alias_max: u16,
    /// Topics the broker has given aliases on this connection (allocated on the first).
    pub aliases: Option<Box<AHashMap<Bytes, u16>>>,
    /// What the token of the current (or last) connection allows; `None`: everything (the
    /// broker is open). Replaced at every CONNECT.
    pub grant: Option<Box<crate::auth::Grant>>,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: Bytes, version: Version) -> Session {
        Session {
            client_id,
            conn: None,
            version,
            subs: SubTable::default(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            incoming_qos2: SmallVec::new(),
            next_packet_id: 1,
            expiry_s: 0,
            expires_at: None,
            will: None,
            will_at: None,
            window: 1,
            max_packet: u32::MAX,
            alias_max: 0,
            aliases: None,
            grant: None,
        }
    }

    /// A packet identifier not used by any inflight delivery. The window is far below 65535,
    /// so the search ends after a few steps.
    pub fn allocate_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = id.checked_add(1).unwrap_or(1);
            if id != 0 && !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }

    /// Position of the inflight delivery with `packet_id`.
    pub fn inflight_index(&self, packet_id: u16) -> Option<usize> {
        self.inflight.iter().position(|f| f.packet_id == packet_id)
    }

    /// True if another QoS 1/2 delivery may be sent now.
    pub fn window_open(&self) -> bool {
        self.conn.is_some() && self.inflight.len() < self.window
    }
}

/// Where session changes go to be made durable. The in-memory broker keeps everything in the
/// shard and needs nothing here; a persistent store implements it (a later issue).
pub trait SessionStore {
    /// The session's subscriptions or expiry changed.
    fn session_saved(&mut self, session: &Session);
    /// The session ended.
    fn session_removed(&mut self, client_id: &[u8]);
}

/// The store of a broker without persistence: sessions live as long as the process.
#[derive(Debug, Default)]
pub struct MemoryStore;

impl SessionStore for MemoryStore {
    fn session_saved(&mut self, _session: &Session) {}
    fn session_removed(&mut self, _client_id: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::mqtt::packet::Version;

    #[test]
    fn packet_ids_skip_zero_and_ids_in_flight() {
        let mut session = Session::new("c".into(), Version::V5_0);
        session.next_packet_id = u16::MAX;
        assert_eq!(session.allocate_packet_id(), u16::MAX);
        let pending = Pending { message: Message::default(), qos: 1, retain: false, identifier: 0 };
        session.inflight.push_back(Inflight { packet_id: 1, pending, stage: Stage::Published });
        assert_eq!(session.allocate_packet_id(), 2);
        assert_eq!(session.inflight_index(1), Some(0));
        assert!(!session.window_open(), "offline sessions send nothing");
    }
}
