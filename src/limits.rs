//! Every compile-time bound of the broker, with its unit and what it costs.
//!
//! Runtime limits that operators tune (max_payload, max_pending, ...) live in `config.rs`;
//! this file holds the bounds that shape memory layout and loop lengths.

/// Most shards one process runs. Costs: interest entries keep one counter per shard, and the
/// publish path keeps target shards in a `u64` mask.
pub const SHARDS_MAX: usize = 64;

/// Bytes requested from the allocator when a connection's read buffer needs room.
/// Costs: the resident read buffer of a busy connection.
pub const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Smallest read window of a connection. Windows start here and double while reads fill them
/// (up to [`READ_CHUNK_BYTES`]), then halve after reads that use under a quarter, and an empty
/// buffer much larger than the window is given back, so an idle connection does not hold a
/// 64 KiB buffer (RSS per idle MQTT connection: 78.9 KiB with 64 KiB reads, about 5-9 KiB
/// with this; tuning/results/2026-12-01-mqtt.md; NATS: 69.7 KiB of heap per idle connection
/// before it used the same windows, tests/idle_memory.rs).
pub const READ_WINDOW_MIN: usize = 1024;

/// Batches that may wait in one directed cross-shard channel. Costs: memory of queued batches;
/// a full channel pauses the publishing connections of the sending shard.
pub const MESH_CHANNEL_BATCHES: usize = 64;

/// Operations gathered for one target shard before the batch is sent early, mid-burst.
pub const MESH_BATCH_OPS_MAX: usize = 1024;

/// Handled batches a shard holds for their origin before sending them home on their own
/// (they go at once with any batch for that origin). At low rates every message is a batch,
/// and each return woke the origin's parked thread: one more cross-core wake-up per message.
/// Costs: the held messages' buffers stay allocated that much longer.
pub const MESH_RETURNS_HELD_MAX: usize = 16;

/// A handled batch with more operations than this goes home at once, with whatever is held:
/// such batches come at rates where the wake-up is shared by many messages, and holding them
/// keeps the origin's read buffers pinned (measured: 5-20 % more CPU per message at full
/// rate when every return was held).
pub const MESH_RETURN_SMALL_OPS: usize = 8;

/// Longest a handled batch waits to go home with others.
pub const MESH_RETURN_HOLD: std::time::Duration = std::time::Duration::from_millis(1);

/// Emptied batch vectors a shard keeps for reuse, per target.
pub const MESH_BATCH_POOL_MAX: usize = MESH_CHANNEL_BATCHES * 2;

/// Distinct subjects remembered by a match cache before it is cleared.
/// Costs: one cached match result per entry.
pub const MATCH_CACHE_ENTRIES_MAX: usize = 4096;

/// Tokens a subject may have before matching falls back to a heap-allocated token list.
pub const SUBJECT_TOKENS_INLINE: usize = 16;

/// Connections that must have gone dormant on a shard since its last release before the
/// shard asks the allocator to hand freed memory back to the kernel at once (at most once per
/// sweep, 250 ms). A connection frees several KiB when it goes dormant (its tasks and
/// buffers); without the release most of it stayed resident until the allocator's purge delay
/// (10 s) or, in partly used pages, for good: broker RSS per idle MQTT connection 2.3-2.5 KiB
/// without the release, 0.8-0.9 KiB with it (tuning/results/2026-12-01-idle-release.md).
/// Costs: one heap walk of the shard's thread per release (0.1-2 ms), only after such a wave.
pub const DORMANT_RELEASE_MIN: u32 = 64;

/// Most pending output (buffer plus unwritten write) a NATS consumer may have before the
/// connection delivering to it waits for it (the stall mark is 3/4 of `nats.max_pending`, at
/// most this). A fast publisher's subscriber otherwise built a backlog of 20-30 MiB (single
/// sends of 22 and 28 MiB at NATS 1->1 256 B), grown by doubling into fresh pages: realloc and
/// page faults were 7-12 % of the broker's CPU. With the mark at 3 MiB, 12 interleaved runs
/// each: median 3.26 -> 3.65 M msg/s, 280 -> 245 ns of broker CPU per message
/// (tuning/results/2026-12-06-stall-mark.md). Costs: a publisher waits (at most
/// `STALL_BUDGET` per burst) for any consumer more than this behind, not only one near
/// `max_pending`; the slow-consumer cut still comes at `max_pending`.
pub const NATS_STALL_BYTES_MAX: u64 = 3 * 1024 * 1024;

/// Largest outbound buffer capacity a connection keeps once its writer drained it; more is
/// released. Twice [`READ_CHUNK_BYTES`], so what one full read delivers to a subscriber fits
/// without growing: the deliveries of a 64 KiB read are a little larger than the read (MSG
/// carries a sid that PUB does not), and with a 64 KiB cap a busy subscriber's buffer was
/// released after every write and grown again, by doubling, on the next tick (callgrind of
/// `benches/publish_path.rs`, one shard, per message: NATS 16 B 1110 -> 1070 instructions,
/// 256 B 1524 -> 1316, MQTT QoS 0 256 B 1753 -> 1570; tuning/results/2026-12-03-outbound.md).
/// Costs: a connection that had a burst holds up to twice this (its outbound buffer and its
/// writer's) until it closes or, for MQTT, goes dormant.
pub const OUTBOUND_IDLE_BYTES_MAX: usize = 2 * READ_CHUNK_BYTES;

/// Longest a NATS client may take over its TLS handshake, after the plaintext INFO, in
/// milliseconds: nats-server's default `tls { timeout }` (2 s). Costs: a slot-less task and a
/// socket held that long by a client that never starts TLS.
pub const NATS_TLS_HANDSHAKE_MS_MAX: u64 = 2_000;

/// How long every message a NATS publisher sent must have gone to one other shard (and
/// nowhere else) before the connection moves there. Costs: a pair that talks for less stays
/// split; a longer streak moves later (the loadtest's latency warm-up is 500 ms).
pub const MOVE_STREAK: std::time::Duration = std::time::Duration::from_millis(20);

/// Read bursts with publishes the streak must also span (a single burst is no pattern).
pub const MOVE_STREAK_BURSTS_MIN: u32 = 8;

/// Shortest time between two moves of one connection: traffic that keeps changing shards
/// costs at most one move (a mesh round trip and a socket hand-off) per period.
pub const MOVE_COOLDOWN: std::time::Duration = std::time::Duration::from_secs(1);

/// Most reader steps a connection whose in-place delivery attempts decline skips between
/// two attempts (`shard::InPlaceBackoff`). Costs: a connection whose messages became local
/// may take this many more through the general path before it tries again.
pub const IN_PLACE_BACKOFF_MAX: u8 = 64;

/// Sweeps (250 ms each) without a message on any shard after which each shard returns freed
/// memory to the kernel (once per quiet spell). Costs: a heap walk and the purge of what traffic freed
/// (1-10 ms) on a shard that carries nothing; memory a short pause frees stays until the
/// allocator's own purge delay.
pub const QUIET_RELEASE_SWEEPS: u32 = 2;

/// Messages in and out over one sweep (250 ms) from which a sweep counts as busy: 256k a
/// second, counting each message once in and once per delivery.
pub const TRAFFIC_BUSY_SWEEP_MIN: u64 = 1 << 16;

/// How many times fewer messages than a busy sweep the next one must carry for each shard to
/// return freed memory to the kernel then (`Shard::release_when_quiet`), though the process
/// is not quiet. Costs: the purge of what the busy spell freed (measured 6 ms, 147 `madvise`
/// calls, after a compare's throughput runs) stalls the slower traffic once, at its start
/// instead of whenever the allocator's purge delay expires; pages the busy spell would have
/// reused are faulted in again if it resumes.
pub const TRAFFIC_DROP_FACTOR: u64 = 16;

/// Shortest time between a shard's memory release and one for a drop in traffic: traffic
/// that keeps swinging between busy and slow pays at most one purge per period.
pub const TRAFFIC_DROP_RELEASE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

const _: () = assert!(SHARDS_MAX <= 64, "target shards are kept in a u64 mask");
const _: () = assert!(READ_WINDOW_MIN <= READ_CHUNK_BYTES);
const _: () = assert!(MESH_BATCH_POOL_MAX >= MESH_CHANNEL_BATCHES);
const _: () = assert!(MESH_RETURNS_HELD_MAX < MESH_BATCH_POOL_MAX);
