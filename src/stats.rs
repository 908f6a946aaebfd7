//! Per-shard counters, written by the owning shard with relaxed atomics and read by anyone
//! (the monitor, shutdown logging, tests) without locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Defines [`ShardStats`] from a list of documented `counter name` / `gauge name` lines, and
/// [`ShardStats::FIELDS`] with each one's name, kind and doc text (what the monitoring endpoint
/// prints), so a new counter cannot be left out of it.
macro_rules! shard_stats {
    ($($(#[doc = $doc:literal])* $kind:ident $name:ident,)*) => {
        /// Counters of one shard. Only the owning shard writes them.
        #[derive(Debug, Default)]
        pub struct ShardStats {
            $($(#[doc = $doc])* pub $name: AtomicU64,)*
        }

        impl ShardStats {
            /// Every field: name, kind and doc text, in declaration order.
            pub const FIELDS: &'static [Field] = &[
                $(Field {
                    name: stringify!($name),
                    kind: Kind::$kind,
                    help: concat!($($doc),*),
                    get: |stats| &stats.$name,
                },)*
            ];
        }
    };
}

/// What a field of [`ShardStats`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum Kind {
    /// Only grows (events since start).
    counter,
    /// Goes up and down (things held now).
    gauge,
}

/// One field of [`ShardStats`], for printing them all.
#[derive(Clone, Copy)]
pub struct Field {
    /// The field's name.
    pub name: &'static str,
    /// Counter or gauge.
    pub kind: Kind,
    /// Its doc comment.
    pub help: &'static str,
    /// Reads it.
    pub get: fn(&ShardStats) -> &AtomicU64,
}

impl std::fmt::Debug for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Field").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

shard_stats! {
    /// Messages received from clients.
    counter in_msgs,
    /// Header + payload bytes received from clients.
    counter in_bytes,
    /// Messages delivered to clients.
    counter out_msgs,
    /// Header + payload bytes delivered to clients.
    counter out_bytes,
    /// Open connections.
    gauge connections,
    /// Connections accepted since start.
    counter total_connections,
    /// Connections closed as slow consumers.
    counter slow_consumers,
    /// Connections closed as stale (unanswered PINGs).
    counter stale_connections,
    /// Connections closed for protocol errors.
    counter protocol_errors,
    /// Messages dropped because their connection was a slow consumer (the pending output
    /// discarded when it was closed counts here, one per message that could not be queued).
    counter dropped_slow_consumer,
    /// Messages sent to this shard for a queue group that had no member left here.
    counter dropped_no_queue_member,
    /// Times a producer (a publishing connection or a mesh receiver) waited for consumers
    /// over 3/4 of max_pending.
    counter producer_stalls,
    /// Publishes that waited for another shard's in-flight interest change.
    counter interest_waits,
    /// Local subscriptions.
    gauge subscriptions,
    /// Batches sent to other shards.
    counter mesh_batches_out,
    /// Messages sent to other shards.
    counter mesh_msgs_out,
    /// MQTT sessions held (online and offline).
    gauge mqtt_sessions,
    /// MQTT connections handed to their session's home shard by this shard.
    counter mqtt_handoffs,
    /// NATS connections moved from this shard to the shard their messages go to.
    counter nats_moves,
    /// MQTT connections moved, with their sessions, from this shard (their home) to the shard
    /// their messages go to.
    counter mqtt_moves,
    /// MQTT sessions taken over by a new connection with the same client id.
    counter mqtt_takeovers,
    /// Will messages published.
    counter mqtt_wills_published,
    /// QoS 0 deliveries dropped: the connection's unsent output was over mqtt.max_pending_bytes,
    /// or the session was offline.
    counter mqtt_dropped_qos0,
    /// QoS 1/2 deliveries dropped because the session queue held mqtt.max_queued_messages.
    counter mqtt_dropped_queue_full,
    /// Deliveries to MQTT skipped because the NATS subject has no MQTT topic form.
    counter mqtt_dropped_no_topic,
    /// Deliveries whose Message Expiry passed before they could be sent.
    counter mqtt_dropped_expired,
    /// Deliveries larger than the client's Maximum Packet Size.
    counter mqtt_dropped_too_large,
    /// Queued or unacknowledged deliveries discarded when their session ended.
    counter mqtt_dropped_session_end,
    /// MQTT publishes (and wills) whose topic has no NATS subject form (e.g. a space), dropped.
    counter mqtt_dropped_bad_topic,
    /// MQTT connections dormant now (quiet for mqtt.dormant_after_ms; no tasks or buffers).
    gauge mqtt_dormant,
    /// Times a dormant MQTT connection was woken (by input, output or its close).
    counter mqtt_woken,
    /// PINGREQs answered for dormant MQTT connections without waking them.
    counter mqtt_dormant_pings,
    /// Times the shard asked the allocator to return freed memory after a wave of connections
    /// went dormant ([`crate::limits::DORMANT_RELEASE_MIN`]).
    counter memory_releases,
    /// Connections refused by authentication (bad, expired or missing token; no permissions).
    counter auth_refused,
    /// Publishes a connection's token does not allow (dropped, refused or answered with an error).
    counter auth_publish_denied,
    /// Subscriptions a connection's token does not allow.
    counter auth_subscribe_denied,
    /// Deliveries withheld from a wildcard subscription by a deny rule of its token.
    counter auth_deliveries_denied,
    /// Connections closed because their token expired.
    counter auth_expired,
    /// Stored subscriptions of a resumed session that its new token no longer allows (removed).
    counter auth_subscriptions_revoked,
    /// TLS handshakes that failed or timed out (NATS and MQTT listeners), including plaintext
    /// clients on a TLS-only NATS listener.
    counter tls_handshake_failures,
}

impl ShardStats {
    /// Adds `n` to a counter. A load and a store, not a read-modify-write: each shard's
    /// counters have one writer (the shard's thread; `Shard` is not `Send`), so no update can
    /// be lost, readers still see whole values, and the message path pays no `lock`-prefixed
    /// instruction per counter (several per message).
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Subtracts `n` from a gauge (one writer, as [`ShardStats::add`]).
    #[inline]
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed).wrapping_sub(n), Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
