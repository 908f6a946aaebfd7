//! Per-shard counters, written by the owning shard with relaxed atomics and read by anyone
//! (the monitor, shutdown logging, tests) without locks.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one shard. Only the owning shard writes them.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Messages received from clients.
    pub in_msgs: AtomicU64,
    /// Header + payload bytes received from clients.
    pub in_bytes: AtomicU64,
    /// Messages delivered to clients.
    pub out_msgs: AtomicU64,
    /// Header + payload bytes delivered to clients.
    pub out_bytes: AtomicU64,
    /// Open connections.
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub total_connections: AtomicU64,
    /// Connections closed as slow consumers.
    pub slow_consumers: AtomicU64,
    /// Connections closed as stale (unanswered PINGs).
    pub stale_connections: AtomicU64,
    /// Connections closed for protocol errors.
    pub protocol_errors: AtomicU64,
    /// Messages dropped because their connection was a slow consumer (the pending output
    /// discarded when it was closed counts here, one per message that could not be queued).
    pub dropped_slow_consumer: AtomicU64,
    /// Messages sent to this shard for a queue group that had no member left here.
    pub dropped_no_queue_member: AtomicU64,
    /// Times a producer (a publishing connection or a mesh receiver) waited for consumers
    /// over 3/4 of max_pending.
    pub producer_stalls: AtomicU64,
    /// Publishes that waited for another shard's in-flight interest change.
    pub interest_waits: AtomicU64,
    /// Local subscriptions.
    pub subscriptions: AtomicU64,
    /// Batches sent to other shards.
    pub mesh_batches_out: AtomicU64,
    /// Messages sent to other shards.
    pub mesh_msgs_out: AtomicU64,
    /// MQTT sessions held (online and offline).
    pub mqtt_sessions: AtomicU64,
    /// MQTT connections handed to their session's home shard by this shard.
    pub mqtt_handoffs: AtomicU64,
    /// NATS connections moved from this shard to the shard their messages go to.
    pub nats_moves: AtomicU64,
    /// MQTT sessions taken over by a new connection with the same client id.
    pub mqtt_takeovers: AtomicU64,
    /// Will messages published.
    pub mqtt_wills_published: AtomicU64,
    /// QoS 0 deliveries dropped: the connection's unsent output was over mqtt.max_pending_bytes,
    /// or the session was offline.
    pub mqtt_dropped_qos0: AtomicU64,
    /// QoS 1/2 deliveries dropped because the session queue held mqtt.max_queued_messages.
    pub mqtt_dropped_queue_full: AtomicU64,
    /// Deliveries to MQTT skipped because the NATS subject has no MQTT topic form.
    pub mqtt_dropped_no_topic: AtomicU64,
    /// Deliveries whose Message Expiry passed before they could be sent.
    pub mqtt_dropped_expired: AtomicU64,
    /// Deliveries larger than the client's Maximum Packet Size.
    pub mqtt_dropped_too_large: AtomicU64,
    /// Queued or unacknowledged deliveries discarded when their session ended.
    pub mqtt_dropped_session_end: AtomicU64,
    /// MQTT publishes (and wills) whose topic has no NATS subject form (e.g. a space), dropped.
    pub mqtt_dropped_bad_topic: AtomicU64,
    /// MQTT connections dormant now (quiet for mqtt.dormant_after_ms; no tasks or buffers).
    pub mqtt_dormant: AtomicU64,
    /// Times a dormant MQTT connection was woken (by input, output or its close).
    pub mqtt_woken: AtomicU64,
    /// PINGREQs answered for dormant MQTT connections without waking them.
    pub mqtt_dormant_pings: AtomicU64,
    /// Times the shard asked the allocator to return freed memory after a wave of connections
    /// went dormant ([`crate::limits::DORMANT_RELEASE_MIN`]).
    pub memory_releases: AtomicU64,
    /// Connections refused by authentication (bad, expired or missing token; no permissions).
    pub auth_refused: AtomicU64,
    /// Publishes a connection's token does not allow (dropped, refused or answered with an error).
    pub auth_publish_denied: AtomicU64,
    /// Subscriptions a connection's token does not allow.
    pub auth_subscribe_denied: AtomicU64,
    /// Deliveries withheld from a wildcard subscription by a deny rule of its token.
    pub auth_deliveries_denied: AtomicU64,
    /// Connections closed because their token expired.
    pub auth_expired: AtomicU64,
    /// Stored subscriptions of a resumed session that its new token no longer allows (removed).
    pub auth_subscriptions_revoked: AtomicU64,
    /// TLS handshakes that failed or timed out (NATS and MQTT listeners), including plaintext
    /// clients on a TLS-only NATS listener.
    pub tls_handshake_failures: AtomicU64,
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
