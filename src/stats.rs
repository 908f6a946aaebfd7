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
}

impl ShardStats {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Subtracts `n` from a gauge.
    #[inline]
    pub fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
