//! The only socket code: one reader task and one writer task per connection.
//!
//! The reader reads a burst, decodes and applies every complete op in it, then stages the
//! burst's cross-shard batches and waits if the mesh is backed up (that pause is the TCP
//! back-pressure on the publisher). The writer sleeps until its connection has output, swaps
//! the output buffer with its spare one and writes it in one call, so however many messages a
//! tick delivers to a connection, they leave in one write.

use super::mesh::{MeshOp, Moved};
use super::nats::{self, Next};
use super::stream::{self, adopt_fd, HandshakeError, Stream};
use super::Shard;
use crate::limits::{
    MOVE_COOLDOWN, MOVE_STREAK, MOVE_STREAK_BURSTS_MIN, NATS_TLS_HANDSHAKE_MS_MAX,
    OUTBOUND_IDLE_BYTES_MAX, READ_CHUNK_BYTES, READ_WINDOW_MIN,
};
use crate::protocol::nats::codec;
use bytes::BytesMut;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::TcpStream;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

/// Longest a producer waits, per read burst or mesh batch, for consumers over the stall mark.
/// nats-server 2.9 stalls 100 ms to 1 s, newer releases 2-10 ms; a consumer still over the mark
/// afterwards is pushed past max_pending by the next burst and cut as a slow consumer.
pub const STALL_BUDGET: std::time::Duration = std::time::Duration::from_millis(100);

/// Serves one accepted NATS connection until it closes. With `[nats.tls]` the connection
/// first gets INFO in plaintext and must then complete a TLS handshake.
pub async fn serve_nats(shard: Rc<Shard>, tcp: TcpStream) {
    // Without TCP_NODELAY small replies wait for delayed ACKs (DECISIONS.md §4: 9 vs 441
    // TLS handshakes/s); every socket sets it.
    let _ = tcp.set_nodelay(true);
    let deadline = std::time::Duration::from_millis(shard.config.nats.write_deadline_ms);
    if tcp.set_write_timeout(Some(deadline)).is_err() {
        return;
    }
    let Ok(addr) = tcp.peer_addr() else { return };
    let cid = shard.next_cid();
    let stream = match &shard.identity.nats_tls {
        None => Stream::Plain(tcp),
        Some(tls) => match upgrade(&shard, tcp, cid, addr, tls).await {
            Some(stream) => stream,
            None => return,
        },
    };
    let slot = shard.open_conn_as(addr, super::Protocol::Nats, cid);
    shard.set_stream(slot, &stream);
    if !stream.is_tls() {
        nats::greet(&shard, slot, cid);
    }
    nats::expect_connect(&shard, slot);
    let stream = Rc::new(RefCell::new(stream));
    glommio::spawn_local(write_loop(Rc::clone(&shard), slot, Half(Rc::clone(&stream)))).detach();
    let resume = Resume { buf: BytesMut::new(), moved_at: None };
    if read_loop(&shard, slot, stream, resume).await == End::Closed {
        shard.task_done(slot);
    }
}

/// Serves a NATS connection that another shard moved here (see [`move_out`]).
pub async fn serve_moved(shard: Rc<Shard>, moved: Moved) {
    let Moved { fd, rest, moved_at, conn } = moved;
    let tcp = adopt_fd(fd);
    let deadline = std::time::Duration::from_millis(shard.config.nats.write_deadline_ms);
    if tcp.set_write_timeout(Some(deadline)).is_err() {
        shard.move_arrived();
        return;
    }
    let slot = shard.open_moved(conn);
    let stream = Rc::new(RefCell::new(Stream::Plain(tcp)));
    glommio::spawn_local(write_loop(Rc::clone(&shard), slot, Half(Rc::clone(&stream)))).detach();
    let resume = Resume { buf: BytesMut::from(&rest[..]), moved_at: Some(moved_at) };
    if read_loop(&shard, slot, stream, resume).await == End::Closed {
        shard.task_done(slot);
    }
}

/// The nats-server upgrade: INFO with `tls_required` in plaintext, then the client's TLS
/// handshake on the same socket. A client that answers in plaintext (or not at all) is told
/// `-ERR 'Secure Connection - TLS Required'` in plaintext and closed. `None`: it failed.
async fn upgrade(
    shard: &Shard,
    mut tcp: TcpStream,
    cid: u64,
    addr: std::net::SocketAddr,
    tls: &crate::tls::ServerTls,
) -> Option<Stream> {
    let mut info = BytesMut::new();
    nats::encode_info(shard, cid, addr, &mut info);
    tcp.write_all(&info).await.ok()?;
    let limit = std::time::Duration::from_millis(NATS_TLS_HANDSHAKE_MS_MAX);
    match stream::handshake(tcp, std::sync::Arc::clone(&tls.config), limit).await {
        Ok(stream) => Some(stream),
        Err((mut tcp, error)) => {
            crate::stats::ShardStats::add(&shard.stats.tls_handshake_failures, 1);
            tracing::debug!(%addr, %error, "NATS TLS handshake failed");
            if matches!(error, HandshakeError::NotTls | HandshakeError::TimedOut) {
                let mut err = BytesMut::new();
                codec::encode_err(&mut err, "Secure Connection - TLS Required");
                let _ = tcp.write_all(&err).await;
            }
            let _ = tcp.close().await;
            None
        }
    }
}

/// Where a NATS connection's reading starts.
struct Resume {
    /// Bytes read but not decoded yet (a moved connection's part of an op).
    buf: BytesMut,
    /// When the connection last moved between shards.
    moved_at: Option<Instant>,
}

/// How a NATS connection's read loop ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The connection is closing: the reader's task is done.
    Closed,
    /// The connection went to another shard; its slot here is already free.
    Moved,
}

async fn read_loop(
    shard: &Rc<Shard>,
    slot: u32,
    stream: Rc<RefCell<Stream>>,
    resume: Resume,
) -> End {
    let Resume { mut buf, moved_at } = resume;
    let mut reader = Half(stream);
    let mut window = ReadWindow::default();
    let mut streak = Streak::new(shard, moved_at);
    loop {
        window.give_back_idle(&mut buf);
        let offered = window.get();
        let Some((n, room)) = read_some(shard, slot, &mut reader, &mut buf, offered).await else {
            return End::Closed;
        };
        window.after_read(n, room);
        // PONGs are owed until the burst is done: clients such as nats-py write their flush
        // PING ahead of a SUB queued before it, and expect the PONG to cover that SUB. So the
        // PONG waits until every shard applied the interest changes of the whole burst.
        let mut pongs_owed = 0u32;
        // Where this burst's publishes went; a wait lets other connections route meanwhile,
        // so a burst that waited tells nothing.
        shard.take_route_mask();
        let mut waited = false;
        loop {
            match nats::next_op(shard, slot, &mut buf) {
                Ok(Some(op)) => match nats::handle(shard, slot, op) {
                    Next::Continue => {}
                    Next::Pong => pongs_owed += 1,
                    Next::Wait(wait) => {
                        waited = true;
                        shard.publish_after_wait(slot, wait).await;
                    }
                    Next::Close => return End::Closed,
                },
                Ok(None) => break,
                Err(error) => {
                    crate::stats::ShardStats::add(&shard.stats.protocol_errors, 1);
                    shard.close_with_err(slot, error.err_text());
                    return End::Closed;
                }
            }
        }
        let mask = shard.take_route_mask();
        shard.mesh.stage_all();
        if pongs_owed > 0 {
            let epoch = shard.with_conn(slot, |c| c.required_epoch);
            shard.mesh.wait_for_epoch(epoch).await;
            for _ in 0..pongs_owed {
                nats::pong(shard, slot);
            }
        }
        shard.mesh.wait_for_room().await;
        shard.wait_for_consumers(STALL_BUDGET).await;
        if shard.with_conn(slot, |c| c.closing) {
            return End::Closed;
        }
        if waited {
            continue;
        }
        let full = offered == READ_CHUNK_BYTES && n == offered;
        if let Some(target) = streak.after_burst(mask, shard.id, n, full) {
            if shard.may_move(slot, target) {
                match move_out(shard, slot, reader.0, &mut buf, target).await {
                    Ok(()) => return End::Moved,
                    Err(stream) => reader = Half(stream),
                }
            }
            streak.restart();
        }
    }
}

/// Where a connection's publishes went over its last read bursts: the start of a run of
/// bursts whose every routed message went to one other shard and nowhere else.
#[derive(Debug, Default)]
pub(super) struct Streak {
    /// The one shard the run's messages went to.
    target: usize,
    /// When the run began; `None`: no run.
    since: Option<Instant>,
    /// Bursts with routed messages in the run.
    bursts: u32,
    /// Bytes those bursts read.
    bytes: u64,
    /// Most bytes a second a run may read and still move (`server.colocate_max_bytes_per_s`;
    /// 0: no cap).
    rate_max: u64,
    /// When the connection last moved.
    moved_at: Option<Instant>,
}

impl Streak {
    /// No run yet; the connection last moved at `moved_at`.
    pub(super) fn new(shard: &Shard, moved_at: Option<Instant>) -> Streak {
        let rate_max = shard.config.server.colocate_max_bytes_per_s;
        Streak { moved_at, rate_max, ..Streak::default() }
    }

    /// Forgets the run (after a move was declined).
    pub(super) fn restart(&mut self) {
        self.since = None;
    }

    /// Takes one burst's target mask (bit per shard its messages went to; 0: it routed
    /// nothing, which neither extends nor ends a run), the bytes it read and whether that
    /// read filled the largest read window ([`READ_CHUNK_BYTES`]). Returns the shard to move
    /// to once the run is [`MOVE_STREAK`] long over at least [`MOVE_STREAK_BURSTS_MIN`]
    /// bursts and the last move is [`MOVE_COOLDOWN`] ago. With a cap (`rate_max` > 0) the run
    /// must also have read at most `rate_max` bytes a second: a faster run starts over, and so
    /// does a full read (the client sends faster than it is read at the largest window, so it
    /// is no slow publisher, whatever its rate over a window a stall of the client slowed).
    pub(super) fn after_burst(
        &mut self,
        mask: u64,
        own: usize,
        read: usize,
        full: bool,
    ) -> Option<usize> {
        if full && self.rate_max > 0 {
            self.since = None;
            return None;
        }
        if mask == 0 {
            return None;
        }
        let target = mask.trailing_zeros() as usize;
        if !mask.is_power_of_two() || target == own {
            self.since = None;
            return None;
        }
        if self.since.is_none() || self.target != target {
            *self = Streak { target, since: Some(Instant::now()), bursts: 0, bytes: 0, ..*self };
        }
        self.bursts += 1;
        self.bytes += read as u64;
        if self.bursts < MOVE_STREAK_BURSTS_MIN {
            return None;
        }
        let now = Instant::now();
        let elapsed = self.since.map_or(std::time::Duration::ZERO, |since| now - since);
        if elapsed < MOVE_STREAK {
            return None;
        }
        if self.rate_max > 0 && self.bytes as f64 / elapsed.as_secs_f64() > self.rate_max as f64 {
            self.since = None;
            return None;
        }
        let rested = self.moved_at.is_none_or(|at| now.duration_since(at) >= MOVE_COOLDOWN);
        rested.then_some(target)
    }
}

/// Moves NATS connection `slot` to shard `target`, where every message it published lately
/// went: stops its writer once everything queued is written, waits until every shard handled
/// what this one sent it so far (so no message it publishes there can overtake one it
/// published here), then sends the socket, the bytes read but not decoded and the
/// connection's state, and frees the slot. Gives the stream back, with the writer running
/// again, if the connection must stay (it is closing, subscribed meanwhile, or the socket
/// cannot be handed over).
async fn move_out(
    shard: &Rc<Shard>,
    slot: u32,
    stream: Rc<RefCell<Stream>>,
    buf: &mut BytesMut,
    target: usize,
) -> Result<(), Rc<RefCell<Stream>>> {
    shard.stop_writer(slot, |c| c.moving = true).await;
    shard.sync_peers(slot).await;
    if !shard.may_move(slot, target) {
        return Err(stay(shard, slot, stream));
    }
    let (stream, fd) = match stream::detach(stream) {
        Ok(parts) => parts,
        Err(stream) => return Err(stay(shard, slot, stream)),
    };
    let conn = shard.with_conn(slot, |c| super::mesh::MovedConn {
        addr: c.addr,
        cid: c.cid,
        flags: c.flags,
        grant: c.grant.take(),
        pings_out: c.pings_out,
        last_sync: c.last_sync,
        out: std::mem::take(&mut c.out),
    });
    tracing::debug!(cid = conn.cid, from = shard.id, to = target, "NATS connection moved");
    let moved = Moved { fd, rest: buf.to_vec(), moved_at: Instant::now(), conn };
    shard.mesh.push(target, MeshOp::Move(Box::new(moved)));
    shard.mesh.stage_all();
    // Our descriptor closes here; the duplicate keeps the socket open.
    drop(stream);
    shard.release_moved(slot, target);
    Ok(())
}

/// A connection that was to move stays: its writer runs again.
fn stay(shard: &Rc<Shard>, slot: u32, stream: Rc<RefCell<Stream>>) -> Rc<RefCell<Stream>> {
    shard.with_conn(slot, |c| {
        c.moving = false;
        c.tasks_alive += 1;
    });
    glommio::spawn_local(write_loop(Rc::clone(shard), slot, Half(Rc::clone(&stream)))).detach();
    stream
}

/// How much a connection reads per call: grows while reads fill it, shrinks when they do not,
/// so busy connections read 64 KiB at a time and idle ones hold next to nothing.
#[derive(Debug)]
pub(super) struct ReadWindow(usize);

impl Default for ReadWindow {
    fn default() -> Self {
        ReadWindow(READ_WINDOW_MIN)
    }
}

impl ReadWindow {
    /// Bytes to offer the next read.
    pub(super) fn get(&self) -> usize {
        self.0
    }

    /// Adjusts the window after a read of `n` bytes into `room`.
    pub(super) fn after_read(&mut self, n: usize, room: usize) {
        if n == room {
            self.0 = (self.0 * 2).min(READ_CHUNK_BYTES);
        } else if n < self.0 / 4 {
            self.0 = (self.0 / 2).max(READ_WINDOW_MIN);
        }
    }

    /// Drops an emptied buffer that a burst grew far past the window.
    pub(super) fn give_back_idle(&self, buf: &mut BytesMut) {
        if buf.is_empty() && buf.capacity() > 4 * self.0 {
            *buf = BytesMut::new();
        }
    }
}

/// Makes room in `buf` for a read of `window` bytes: when less than half a window is spare,
/// `reserve(window)`, which moves a partial packet to the front of the allocation it already
/// has when that holds a window (a copy of under a packet), and otherwise allocates.
///
/// Half a window, not a fixed few KiB: a buffer first sized while the window was small (a
/// little over 4 KiB) has its partial packet moved back to its front by the codec's `reserve`
/// read after read, so its spare room never fell below a 4 KiB floor and it never grew again:
/// a 256 B MQTT stream stayed at 4140-byte reads (15 packets, 130,690 reads per 2M messages
/// against 14,500) and took 2.5x the shard CPU per message until the connection closed
/// (tuning/results/2026-12-04-read-room.md).
pub(super) fn make_room(buf: &mut BytesMut, window: usize) {
    if buf.capacity() - buf.len() < window / 2 {
        buf.reserve(window);
    }
}

/// Reads once into the spare room of `buf` ([`make_room`]), at most `window` bytes. Returns
/// (bytes read, room offered), or `None` on end of stream, a read error, or when the
/// connection is closing.
pub(super) async fn read_some(
    shard: &Shard,
    slot: u32,
    reader: &mut Half,
    buf: &mut BytesMut,
    window: usize,
) -> Option<(usize, usize)> {
    make_room(buf, window);
    let start = buf.len();
    let end = buf.capacity().min(start + window);
    buf.resize(end, 0);
    let read =
        futures_lite::future::or(async { Some(reader.read(&mut buf[start..]).await) }, async {
            shard.closed(slot).await;
            None
        })
        .await;
    match read {
        Some(Ok(n)) if n > 0 => {
            buf.truncate(start + n);
            if n == end - start {
                // A full read: more is likely waiting, and glommio reads a ready socket
                // without returning to the executor, so a client that always has data would
                // keep the shard to itself. Let the tasks already woken run first (the writers
                // of what the last burst routed, other readers).
                futures_lite::future::yield_now().await;
            }
            Some((n, end - start))
        }
        _ => {
            buf.truncate(start);
            None
        }
    }
}

/// Readies a writer's buffer, all of it written, for its next turn (it is swapped with the
/// connection's outbound buffer by `Shard::take_output`): emptied, and given back if a burst
/// grew it past [`OUTBOUND_IDLE_BYTES_MAX`], rather than held while idle.
pub(super) fn recycle_written(spare: &mut BytesMut) {
    spare.clear();
    if spare.capacity() > OUTBOUND_IDLE_BYTES_MAX {
        *spare = BytesMut::new();
    }
}

pub(super) async fn write_loop(shard: Rc<Shard>, slot: u32, mut writer: Half) {
    let mut spare = BytesMut::new();
    'output: while shard.take_output(slot, &mut spare).await {
        let mut written = 0;
        while written < spare.len() {
            match writer.write(&spare[written..]).await {
                Ok(n) if n > 0 => {
                    written += n;
                    shard.wrote(slot, spare.len() - written);
                }
                _ => {
                    shard.close(slot);
                    break 'output;
                }
            }
        }
        recycle_written(&mut spare);
    }
    if shard.writer_parked(slot) {
        return;
    }
    let _ = writer.close().await;
    shard.task_done(slot);
}

/// One half of a shared stream. glommio's non-buffered stream keeps separate readiness
/// sources for reading and writing, so one reader and one writer may use it at once (over TLS
/// too: `stream.rs` says how); the `RefCell` is borrowed only inside a poll, never across an
/// await.
pub(super) struct Half(pub(super) Rc<RefCell<Stream>>);

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE_MAX: u64 = 16 * 1024 * 1024;

    fn streak() -> Streak {
        Streak { rate_max: RATE_MAX, ..Streak::default() }
    }

    /// The cycle a 256 B MQTT stream fell into: an allocation a little over 4 KiB (sized while
    /// the window was small), 4140-byte reads of 15 packets, a 52-byte partial packet that the
    /// codec's `reserve` moves back to the front. A read must get half a window.
    #[test]
    fn a_small_reclaimed_read_buffer_grows_back_to_half_a_window() {
        let (packet, window) = (276, READ_CHUNK_BYTES);
        let mut buf = BytesMut::with_capacity(4192);
        for round in 0..3 {
            make_room(&mut buf, window);
            let spare = buf.capacity() - buf.len();
            assert!(spare >= window / 2, "round {round}: {spare} bytes of room");
            // A read fills the room offered (at most a window); whole packets are consumed.
            let room = spare.min(window);
            buf.resize(buf.len() + room, 0);
            let whole = buf.len() / packet * packet;
            bytes::Buf::advance(&mut buf, whole);
            // The codec asks for the rest of the partial packet.
            buf.reserve(packet - buf.len());
        }
        assert!(buf.capacity() >= window / 2);
    }

    #[test]
    fn a_read_buffer_with_room_keeps_its_allocation() {
        let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        buf.resize(100, 7);
        let before = buf.as_ptr();
        make_room(&mut buf, READ_CHUNK_BYTES);
        assert_eq!(buf.as_ptr(), before, "more than half a window spare: no copy, no allocation");
        // An idle connection's small window asks for little.
        let mut idle = BytesMut::new();
        make_room(&mut idle, READ_WINDOW_MIN);
        assert!(idle.capacity() >= READ_WINDOW_MIN && idle.capacity() < 4 * READ_WINDOW_MIN);
    }

    fn bursts(streak: &mut Streak, mask: u64, n: u32) -> Option<usize> {
        (0..n).map(|_| streak.after_burst(mask, 0, 100, false)).last().flatten()
    }

    #[test]
    fn a_streak_to_one_other_shard_asks_to_move_after_its_time_and_bursts() {
        let mut streak = streak();
        assert_eq!(bursts(&mut streak, 0b10, MOVE_STREAK_BURSTS_MIN + 4), None, "too soon");
        std::thread::sleep(MOVE_STREAK);
        assert_eq!(streak.after_burst(0b10, 0, 100, false), Some(1));
        // Bursts that routed nothing neither end nor extend the run.
        assert_eq!(streak.after_burst(0, 0, 100, false), None);
        assert_eq!(streak.after_burst(0b10, 0, 100, false), Some(1));
    }

    #[test]
    fn a_streak_needs_its_bursts_as_well_as_its_time() {
        let mut streak = streak();
        assert_eq!(streak.after_burst(0b100, 0, 100, false), None);
        std::thread::sleep(MOVE_STREAK);
        assert_eq!(bursts(&mut streak, 0b100, MOVE_STREAK_BURSTS_MIN - 2), None);
        assert_eq!(streak.after_burst(0b100, 0, 100, false), Some(2));
    }

    #[test]
    fn local_deliveries_several_targets_or_another_target_restart_the_run() {
        for breaker in [0b01, 0b11, 0b110] {
            let mut streak = streak();
            bursts(&mut streak, 0b10, MOVE_STREAK_BURSTS_MIN);
            std::thread::sleep(MOVE_STREAK);
            assert_eq!(streak.after_burst(breaker, 0, 100, false), None, "mask {breaker:#b}");
            assert_eq!(
                bursts(&mut streak, 0b10, MOVE_STREAK_BURSTS_MIN),
                None,
                "a new run after {breaker:#b}"
            );
        }
    }

    #[test]
    fn a_publisher_reading_faster_than_the_cap_stays_and_starts_over() {
        let mut streak = streak();
        let fast = RATE_MAX as usize; // a second's worth per burst
        bursts(&mut streak, 0b10, MOVE_STREAK_BURSTS_MIN);
        streak.after_burst(0b10, 0, fast, false);
        std::thread::sleep(MOVE_STREAK);
        assert_eq!(streak.after_burst(0b10, 0, fast, false), None, "too fast to move");
        assert!(streak.since.is_none(), "the run starts over");
        // The same pair slowed down moves after a run of its own.
        bursts(&mut streak, 0b10, MOVE_STREAK_BURSTS_MIN);
        std::thread::sleep(MOVE_STREAK);
        assert_eq!(streak.after_burst(0b10, 0, 100, false), Some(1));
    }

    #[test]
    fn a_full_read_ends_the_run() {
        let mut streak = streak();
        bursts(&mut streak, 0b10, MOVE_STREAK_BURSTS_MIN);
        std::thread::sleep(MOVE_STREAK);
        assert_eq!(streak.after_burst(0b10, 0, 100, true), None);
        assert_eq!(bursts(&mut streak, 0b10, MOVE_STREAK_BURSTS_MIN), None, "a new run");
    }

    #[test]
    fn with_no_cap_a_full_rate_publisher_moves() {
        let mut streak = Streak { rate_max: 0, ..Streak::default() };
        let full = READ_CHUNK_BYTES;
        (0..MOVE_STREAK_BURSTS_MIN).for_each(|_| _ = streak.after_burst(0b10, 0, full, true));
        std::thread::sleep(MOVE_STREAK);
        assert_eq!(streak.after_burst(0b10, 0, full, true), Some(1));
    }

    #[test]
    fn a_connection_that_moved_lately_waits_out_the_cooldown() {
        let mut streak = Streak { moved_at: Some(Instant::now()), ..streak() };
        bursts(&mut streak, 0b10, MOVE_STREAK_BURSTS_MIN);
        std::thread::sleep(MOVE_STREAK);
        assert_eq!(streak.after_burst(0b10, 0, 100, false), None);
        streak.moved_at = Instant::now().checked_sub(MOVE_COOLDOWN);
        assert_eq!(streak.after_burst(0b10, 0, 100, false), Some(1));
    }
}
