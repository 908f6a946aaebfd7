//! A shard: everything one core owns, and the routing and fan-out it does.
//!
//! A `Shard` is `!Send` and lives on one glommio executor. It owns its connections' slots
//! (outbound buffers, protocol state), its local subscriptions and their trie, its copy of the
//! interest map and its side of the mesh. Only [`Config`], [`Identity`] and [`ShardStats`] are
//! shared with other threads, all behind `Arc` and read-only or atomic.

pub mod accept;
pub mod conn;
pub mod dormant;
pub mod mesh;
pub mod mqtt;
pub mod nats;
#[doc(hidden)]
pub mod path;
pub mod session;
pub mod stream;

use crate::config::Config;
use crate::limits::IN_PLACE_BACKOFF_MAX;
use crate::message::{Message, MsgParts};
use crate::protocol::nats::codec::{self, Limits};
use crate::router::interest::{InterestMap, InterestMatch};
use crate::router::local::{LocalRouter, Subscription};
use crate::router::retained::Retained;
use crate::stats::ShardStats;
use ahash::AHashMap;
use bytes::{Bytes, BytesMut};
use mesh::{Envelope, MeshOp, MeshState};
use slab::Slab;
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

/// How long after a sync a connection's unrouted publishes are dropped without syncing
/// again: a publisher to a subject nobody wants pays at most one mesh round trip per period.
pub const SYNC_COVERS: std::time::Duration = std::time::Duration::from_millis(5);

/// Outcome of [`Shard::publish`]; the waits hand the message back for
/// [`Shard::publish_after_wait`].
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    /// Routed (or dropped: nobody wants it).
    Done,
    /// Another shard changed its interest and the change has not arrived yet: wait for it
    /// ([`Shard::wait_for_peer_interest`]) and publish again.
    AwaitInterest(Message),
    /// Nobody wants it. Before dropping it (or answering 503), sync with the other shards
    /// ([`Shard::sync_peers`]): one of them may be about to read a SUB it was sent first.
    AwaitSync(Message),
}

/// Process-wide identity, built once before the shards start.
#[derive(Debug)]
pub struct Identity {
    /// INFO server_id: unique per process start.
    pub server_id: String,
    /// INFO server_name.
    pub name: String,
    /// The NATS listen address actually bound.
    pub nats_addr: SocketAddr,
    /// The MQTT listen address actually bound.
    pub mqtt_addr: SocketAddr,
    /// The MQTT-over-TLS listen address actually bound (`[mqtt.tls]`).
    pub mqtt_tls_addr: Option<SocketAddr>,
    /// TLS of the NATS listener (`[nats.tls]`: it then requires TLS).
    pub nats_tls: Option<crate::tls::ServerTls>,
    /// TLS of the MQTT-over-TLS listener.
    pub mqtt_tls: Option<crate::tls::ServerTls>,
    /// Orders retained-message updates across shards (the newest wins on every replica).
    pub retain_seq: std::sync::atomic::AtomicU64,
    /// Set when the process is asked to stop.
    pub shutdown: AtomicBool,
    /// Per shard: the epoch of its latest interest change, stored the moment it makes one.
    /// Other shards compare it with what they have applied before they route a publish, so a
    /// SUB processed anywhere before a PUB is processed is always seen by that PUB (the order
    /// guarantee a single nats-server gives), at the cost of one atomic load per peer.
    pub interest_issued: Vec<std::sync::atomic::AtomicU64>,
    /// Token checks (`[auth.jwt]`); `None`: the broker is open (loopback, or allow_anonymous).
    pub auth: Option<crate::auth::Authenticator>,
    /// Every shard's counters, by shard index (a moving connection's target checks the
    /// connection counts of all shards).
    pub shard_stats: Vec<Arc<ShardStats>>,
    /// Per shard: NATS connections moved to it that it has not opened yet (so that several
    /// publishers deciding at once do not all go to one shard).
    pub moves_in_flight: Vec<std::sync::atomic::AtomicU64>,
}

/// The protocol options of a NATS connection (from CONNECT).
#[derive(Clone, Copy, Debug)]
pub struct NatsFlags {
    /// +OK after each op.
    pub verbose: bool,
    /// Strict publish subject checks.
    pub pedantic: bool,
    /// Receive own publishes.
    pub echo: bool,
    /// Understands HMSG.
    pub headers: bool,
    /// Wants 503 status messages.
    pub no_responders: bool,
}

/// The protocol a connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Core NATS client protocol.
    Nats,
    /// MQTT 3.1.1 or 5.0.
    Mqtt,
}

/// The back-off of a connection's attempts to deliver its publishes in place
/// (`nats::publish_in_place`, `mqtt::publish_in_place`). A declined attempt costs about what
/// the general path's routing costs (two matches, 136 instructions in callgrind), so after a
/// decline the next 1, 2, 4 ... up to [`IN_PLACE_BACKOFF_MAX`] reader steps do not try; a
/// success resets it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InPlaceBackoff {
    /// Steps left to skip.
    skip: u8,
    /// The skip after the next decline.
    next: u8,
}

impl InPlaceBackoff {
    /// True if this step may try; a skipped step is counted.
    #[inline]
    pub fn attempt(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// True when a success would change nothing (no decline since the last success).
    #[inline]
    pub fn settled(&self) -> bool {
        self.next == 0
    }

    /// Takes an attempt's outcome.
    #[inline]
    pub fn record(&mut self, done: bool) {
        if done {
            self.next = 0;
        } else {
            self.skip = self.next;
            self.next = (self.next * 2).clamp(1, IN_PLACE_BACKOFF_MAX);
        }
    }
}

/// A connection slot: the per-connection state the shard reaches from any task.
#[derive(Debug)]
pub struct Conn {
    /// Connection id; `cid % shards` is the shard that accepted it (a NATS publisher may have
    /// moved since, see [`Shard::may_move`]).
    pub cid: u64,
    /// This connection's slot index on its shard.
    pub slot: u32,
    /// Peer address.
    pub addr: SocketAddr,
    /// Output not yet handed to the writer.
    pub out: BytesMut,
    /// Bytes the writer is writing now (counted against max_pending).
    pub writing: usize,
    writer: Option<Waker>,
    writer_woken: bool,
    reader: Option<Waker>,
    /// Set once the connection is going away; no more output is queued.
    pub closing: bool,
    tasks_alive: u8,
    /// CONNECT options.
    pub flags: NatsFlags,
    /// NATS: sid -> subscription id (allocated on the first SUB; MQTT never has one).
    pub sids: Option<Box<AHashMap<Bytes, u32>>>,
    /// Unanswered server PINGs.
    pub pings_out: u32,
    /// Data arrived since the last ping tick.
    pub active: bool,
    /// Interest epoch the next PONG must wait for.
    pub required_epoch: u64,
    /// Messages in `out` (dropped and counted if the connection turns out slow).
    pub queued_msgs: u64,
    /// When this connection last synced with the other shards over an unrouted publish.
    pub last_sync: Option<std::time::Instant>,
    /// Pending output is over 3/4 of max_pending: producers wait for it (bounded).
    pub stalled: bool,
    /// NATS: when to try the next PUB in place ([`nats::publish_in_place`]).
    pub in_place: InPlaceBackoff,
    /// The protocol spoken.
    pub protocol: Protocol,
    /// MQTT: the session this connection serves; `None` before CONNECT or once taken over.
    pub session: Option<u32>,
    /// MQTT: the connection is closed if no packet arrives before this (1.5 x keep alive).
    pub keepalive_deadline: Option<std::time::Instant>,
    /// MQTT: sweeps in a row that saw no traffic (see [`dormant`]).
    pub idle_sweeps: u16,
    /// MQTT: the sweep asked the reader to let the connection go dormant.
    pub doze_requested: bool,
    /// MQTT: the reader agreed and waits for the writer to stop.
    pub dozing: bool,
    /// NATS: the reader is moving the connection to another shard and waits for the writer
    /// to stop.
    pub moving: bool,
    /// MQTT: what a dormant connection keeps while it has no tasks (`None`: it is live).
    dormant: Option<Box<mqtt::Sleeper>>,
    /// The connection is in `Shard::to_wake`.
    wake_queued: bool,
    /// NATS: what the connection's token allows. `None`: everything if the broker is open,
    /// else CONNECT has not been accepted yet.
    /// MQTT keeps its grant in the session.
    pub grant: Option<Box<crate::auth::Grant>>,
    /// The connection runs over TLS (and so never goes dormant: its session is in memory).
    pub tls: bool,
    /// The verified client certificate's identity (subject CN, else first DNS/email SAN), for
    /// the auth layer; `None` without mTLS. Boxed: most connections have none.
    pub tls_identity: Option<Box<str>>,
}

/// Everything one core owns.
pub struct Shard {
    /// This shard's index.
    pub id: usize,
    /// Number of shards.
    pub count: usize,
    /// Configuration, shared read-only.
    pub config: Arc<Config>,
    /// Process identity, shared.
    pub identity: Arc<Identity>,
    /// Counters, written here and read anywhere.
    pub stats: Arc<ShardStats>,
    /// Codec limits from the config.
    pub limits: Limits,
    conns: RefCell<Slab<Conn>>,
    router: RefCell<LocalRouter>,
    interest: RefCell<InterestMap>,
    /// The shard's side of the mesh.
    pub mesh: MeshState,
    next_seq: Cell<u64>,
    round_robin: Cell<u32>,
    expired: RefCell<Vec<u32>>,
    stalled: RefCell<Vec<u32>>,
    drain_waiters: RefCell<Vec<Waker>>,
    /// Per peer: the highest interest epoch of that peer applied here.
    interest_applied: RefCell<Vec<u64>>,
    interest_waiters: RefCell<Vec<Waker>>,
    sessions: RefCell<Slab<session::Session>>,
    session_ids: RefCell<AHashMap<Bytes, u32>>,
    store: RefCell<Box<dyn session::SessionStore>>,
    retained: RefCell<Retained>,
    adopted: RefCell<Vec<mesh::Adopt>>,
    mqtt_scratch: RefCell<mqtt::Scratch>,
    /// The earliest delayed will or expiry among offline sessions (`None`: nothing due).
    session_deadline: Cell<Option<std::time::Instant>>,
    /// The earliest `exp` (unix seconds) of a token held by a connection here, if any.
    auth_deadline: Cell<Option<u64>>,
    /// MQTT connections that went dormant since the allocator last released memory.
    dozed_since_release: Cell<u32>,
    /// The epoll set of dormant connections, once started (`mqtt.dormant_after_ms` > 0).
    dormancy: std::cell::OnceCell<dormant::Dormancy>,
    /// Dormant connections to wake: output arrived for them, or they are closing.
    to_wake: RefCell<Vec<u32>>,
    /// The task that wakes dormant connections.
    waker_task: RefCell<Option<Waker>>,
    /// The shards (bit per shard) that messages of local publishers went to since the last
    /// [`Shard::take_route_mask`]: how a NATS publisher finds where its subscribers are.
    route_mask: Cell<u64>,
    /// NATS connections other shards moved here, to be served.
    moved_in: RefCell<Vec<mesh::Moved>>,
    /// Messages in and out on every shard at the last sweep, and sweeps in a row since they
    /// last changed (`Shard::release_when_quiet`).
    traffic_seen: Cell<u64>,
    quiet_sweeps: Cell<u32>,
    /// Where NATS fan-outs compose their MSG (`Shard::encode_framed`).
    msg_frame: RefCell<codec::MsgFrame>,
    /// Messages in and out on every shard during the last sweep and the one before.
    swept_traffic: Cell<[u64; 2]>,
    /// When this shard last handed freed memory back to the kernel.
    released_at: Cell<Option<std::time::Instant>>,
    /// MQTT connections other shards moved here with their sessions (already held here, at
    /// the index given), to be served.
    mqtt_moved_in: RefCell<Vec<(u32, mesh::MovedMqtt)>>,
    /// Sessions whose home is this shard that moved to another shard with their connection,
    /// by client id: a CONNECT for one of them is forwarded there.
    sessions_away: RefCell<AHashMap<Bytes, usize>>,
}

/// A message going to more than one subscription here: composed into the shard's
/// [`codec::MsgFrame`] at its first NATS delivery, and written from it for the rest.
#[derive(Clone, Copy)]
struct Framing<'m, 'p> {
    parts: &'m MsgParts<'p>,
    /// 0: not composed yet; `u64::MAX`: it cannot be; else the composition's id.
    composed: &'m Cell<u64>,
}

impl Shard {
    /// A shard with no connections.
    pub fn new(
        id: usize,
        count: usize,
        config: Arc<Config>,
        identity: Arc<Identity>,
        stats: Arc<ShardStats>,
    ) -> Shard {
        let limits = Limits {
            max_payload: config.nats.max_payload,
            max_control_line: config.nats.max_control_line,
        };
        Shard {
            id,
            count,
            config,
            identity,
            stats,
            limits,
            conns: RefCell::new(Slab::new()),
            router: RefCell::new(LocalRouter::default()),
            interest: RefCell::new(InterestMap::new(count)),
            mesh: MeshState::new(id, count),
            next_seq: Cell::new(1),
            round_robin: Cell::new(0),
            expired: RefCell::new(Vec::new()),
            stalled: RefCell::new(Vec::new()),
            drain_waiters: RefCell::new(Vec::new()),
            interest_applied: RefCell::new(vec![0; count]),
            interest_waiters: RefCell::new(Vec::new()),
            sessions: RefCell::new(Slab::new()),
            session_ids: RefCell::new(AHashMap::new()),
            store: RefCell::new(Box::new(session::MemoryStore)),
            retained: RefCell::new(Retained::default()),
            adopted: RefCell::new(Vec::new()),
            mqtt_scratch: RefCell::default(),
            session_deadline: Cell::new(None),
            auth_deadline: Cell::new(None),
            dozed_since_release: Cell::new(0),
            dormancy: std::cell::OnceCell::new(),
            to_wake: RefCell::new(Vec::new()),
            waker_task: RefCell::new(None),
            route_mask: Cell::new(0),
            moved_in: RefCell::new(Vec::new()),
            traffic_seen: Cell::new(0),
            // Quiet since start: nothing to release until traffic comes.
            quiet_sweeps: Cell::new(u32::MAX),
            msg_frame: RefCell::default(),
            swept_traffic: Cell::new([0; 2]),
            released_at: Cell::new(None),
            mqtt_moved_in: RefCell::new(Vec::new()),
            sessions_away: RefCell::new(AHashMap::new()),
        }
    }

    /// Gives the shard its epoll set of dormant connections (once, at start).
    pub fn set_dormancy(&self, dormancy: dormant::Dormancy) {
        let _ = self.dormancy.set(dormancy);
    }

    /// Opens a slot for a new connection; returns (slot, cid).
    pub fn open_conn(&self, addr: SocketAddr, protocol: Protocol) -> (u32, u64) {
        let cid = self.next_cid();
        (self.open_conn_as(addr, protocol, cid), cid)
    }

    /// A new connection id (`cid % shards` is this shard), for a connection that needs it
    /// before it has a slot (a NATS INFO sent ahead of the TLS handshake).
    pub fn next_cid(&self) -> u64 {
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        seq * self.count as u64 + self.id as u64
    }

    /// Opens a slot for a new connection with the id from [`Shard::next_cid`]; returns the slot.
    pub fn open_conn_as(&self, addr: SocketAddr, protocol: Protocol, cid: u64) -> u32 {
        ShardStats::add(&self.stats.total_connections, 1);
        self.insert_conn(addr, protocol, cid)
    }

    /// Opens a slot for a connection, new or moved from another shard.
    pub(super) fn insert_conn(&self, addr: SocketAddr, protocol: Protocol, cid: u64) -> u32 {
        let slot = self.conns.borrow().vacant_key() as u32;
        let conn = Conn {
            cid,
            slot,
            addr,
            out: BytesMut::new(),
            writing: 0,
            writer: None,
            writer_woken: false,
            reader: None,
            closing: false,
            tasks_alive: 2,
            flags: NatsFlags {
                verbose: false,
                pedantic: false,
                echo: true,
                headers: false,
                no_responders: false,
            },
            sids: None,
            pings_out: 0,
            active: true,
            required_epoch: 0,
            queued_msgs: 0,
            last_sync: None,
            stalled: false,
            in_place: InPlaceBackoff::default(),
            protocol,
            session: None,
            keepalive_deadline: None,
            idle_sweeps: 0,
            doze_requested: false,
            dozing: false,
            moving: false,
            dormant: None,
            wake_queued: false,
            grant: None,
            tls: false,
            tls_identity: None,
        };
        let slot = u32::try_from(self.conns.borrow_mut().insert(conn))
            .expect("fewer than 2^32 connections");
        ShardStats::add(&self.stats.connections, 1);
        slot
    }

    /// Records that a connection runs over `stream` (TLS or not, and its client certificate's
    /// identity).
    pub fn set_stream(&self, slot: u32, stream: &stream::Stream) {
        let identity = stream.tls_identity();
        let tls = stream.is_tls();
        let cid = self.with_conn(slot, |c| {
            c.tls = tls;
            c.tls_identity = identity;
            c.cid
        });
        if let Some(identity) = self.tls_identity(slot) {
            tracing::debug!(cid, tls_identity = &*identity, "TLS client certificate verified");
        }
    }

    /// The identity of a connection's verified client certificate (`None` without mTLS), for
    /// authentication (`%u`).
    pub fn tls_identity(&self, slot: u32) -> Option<Box<str>> {
        self.with_conn(slot, |c| c.tls_identity.clone())
    }

    /// Runs `f` on a connection slot.
    pub fn with_conn<R>(&self, slot: u32, f: impl FnOnce(&mut Conn) -> R) -> R {
        f(&mut self.conns.borrow_mut()[slot as usize])
    }

    /// Appends protocol output to a connection and wakes its writer.
    pub fn send(&self, slot: u32, f: impl FnOnce(&mut BytesMut)) {
        let mut conns = self.conns.borrow_mut();
        let conn = &mut conns[slot as usize];
        if conn.closing {
            return;
        }
        f(&mut conn.out);
        self.after_append(conn);
    }

    /// Queues `-ERR '<text>'` and closes the connection once it is written.
    pub fn close_with_err(&self, slot: u32, text: &str) {
        self.send(slot, |out| codec::encode_err(out, text));
        self.close(slot);
    }

    /// Marks a connection as closing: the writer flushes what is queued and ends, the reader
    /// stops at its next wake-up.
    pub fn close(&self, slot: u32) {
        let mut conns = self.conns.borrow_mut();
        let conn = &mut conns[slot as usize];
        conn.closing = true;
        wake(&mut conn.writer);
        conn.writer_woken = true;
        wake(&mut conn.reader);
        self.wake_dormant(conn);
    }

    /// Queues a dormant connection to get its tasks back (it has output, or is closing).
    fn wake_dormant(&self, conn: &mut Conn) {
        if conn.dormant.is_some() && !conn.wake_queued {
            conn.wake_queued = true;
            self.to_wake.borrow_mut().push(conn.slot);
            wake(&mut self.waker_task.borrow_mut());
        }
    }

    /// The writer of a connection going dormant (or moving to another shard) has nothing
    /// left to write and ends without closing the socket. False if the connection is closing
    /// instead: the writer then ends as usual.
    pub fn writer_parked(&self, slot: u32) -> bool {
        let mut conns = self.conns.borrow_mut();
        let conn = &mut conns[slot as usize];
        if !(conn.dozing || conn.moving) || conn.closing {
            return false;
        }
        conn.tasks_alive -= 1;
        wake(&mut conn.reader);
        true
    }

    /// Called by each of a connection's two tasks when it ends; the last one frees the slot
    /// and removes the connection's subscriptions.
    pub fn task_done(&self, slot: u32) {
        let sub_ids: SmallVec<[u32; 8]> = {
            let mut conns = self.conns.borrow_mut();
            let conn = &mut conns[slot as usize];
            conn.closing = true;
            conn.tasks_alive -= 1;
            if conn.tasks_alive > 0 {
                wake(&mut conn.writer);
                wake(&mut conn.reader);
                return;
            }
            conn.sids.iter().flat_map(|sids| sids.values().copied()).collect()
        };
        for id in sub_ids {
            self.unsubscribe(id);
        }
        self.conns.borrow_mut().remove(slot as usize);
        ShardStats::sub(&self.stats.connections, 1);
    }

    /// Marks a connection with `why` (it goes dormant, or moves to another shard), asks its
    /// writer to write what is queued and end without closing the socket
    /// ([`Shard::writer_parked`]), and waits until the writer has ended (or the connection
    /// closed). Called by the connection's reader.
    pub(super) async fn stop_writer(&self, slot: u32, why: fn(&mut Conn)) {
        self.with_conn(slot, |c| {
            why(c);
            c.writer_woken = true;
            wake(&mut c.writer);
        });
        poll_fn(|cx| {
            self.with_conn(slot, |c| {
                if c.tasks_alive <= 1 {
                    return Poll::Ready(());
                }
                set_waker(&mut c.reader, cx.waker());
                Poll::Pending
            })
        })
        .await;
    }

    /// Frees the slot of a connection that moved to another shard: its socket and state went
    /// with it, it had no subscriptions.
    pub fn release_moved(&self, slot: u32, target: usize) {
        self.identity.moves_in_flight[target].fetch_add(1, Ordering::AcqRel);
        let conn = self.conns.borrow_mut().remove(slot as usize);
        debug_assert!(conn.sids.as_ref().is_none_or(|s| s.is_empty()));
        ShardStats::sub(&self.stats.connections, 1);
        ShardStats::add(&self.stats.nats_moves, 1);
    }

    /// Resolves when the connection is closing or asked to go dormant; used to cancel a
    /// pending read.
    pub async fn closed(&self, slot: u32) {
        poll_fn(|cx| {
            let mut conns = self.conns.borrow_mut();
            let conn = &mut conns[slot as usize];
            if conn.closing || conn.doze_requested {
                return Poll::Ready(());
            }
            set_waker(&mut conn.reader, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Waits for output, then swaps it into `spare`. Returns false when the connection is
    /// closing (or going dormant) and nothing is left to write.
    pub async fn take_output(&self, slot: u32, spare: &mut BytesMut) -> bool {
        poll_fn(|cx| {
            let mut conns = self.conns.borrow_mut();
            let conn = &mut conns[slot as usize];
            if !conn.out.is_empty() {
                std::mem::swap(&mut conn.out, spare);
                conn.writing = spare.len();
                conn.queued_msgs = 0;
                conn.writer_woken = false;
                conn.active = true;
                return Poll::Ready(true);
            }
            if conn.closing || conn.dozing || conn.moving {
                return Poll::Ready(false);
            }
            conn.writing = 0;
            conn.writer_woken = false;
            set_waker(&mut conn.writer, cx.waker());
            Poll::Pending
        })
        .await
    }

    /// The writer reports how much of its current buffer is still unwritten. Bytes the kernel
    /// accepted no longer count against max_pending.
    pub fn wrote(&self, slot: u32, remaining: usize) {
        let mut conns = self.conns.borrow_mut();
        let conn = &mut conns[slot as usize];
        conn.writing = remaining;
        if conn.stalled && !self.over_stall_mark(conn) {
            conn.stalled = false;
            for waker in self.drain_waiters.borrow_mut().drain(..) {
                waker.wake();
            }
        }
    }

    /// Waits, at most `budget`, until no consumer this shard delivered to is over the stall
    /// mark. This is how a fast producer is slowed to what its consumers take (nats-server
    /// stalls producers the same way), instead of cutting consumers that are merely behind.
    pub async fn wait_for_consumers(&self, budget: std::time::Duration) {
        if self.stalled.borrow().is_empty() {
            return;
        }
        let drained = poll_fn(|cx| {
            let conns = self.conns.borrow();
            self.stalled
                .borrow_mut()
                .retain(|slot| conns.get(*slot as usize).is_some_and(|c| c.stalled && !c.closing));
            if self.stalled.borrow().is_empty() {
                return Poll::Ready(());
            }
            mesh::add_waiter(&mut self.drain_waiters.borrow_mut(), cx.waker());
            Poll::Pending
        });
        futures_lite::future::or(drained, glommio::timer::sleep(budget)).await;
        ShardStats::add(&self.stats.producer_stalls, 1);
    }

    fn over_stall_mark(&self, conn: &Conn) -> bool {
        let mark = (self.config.nats.max_pending / 4 * 3).min(crate::limits::NATS_STALL_BYTES_MAX);
        (conn.out.len() + conn.writing) as u64 > mark
    }

    /// A NATS connection's CONNECT passed authentication: keep what its token allows.
    pub fn admit(&self, slot: u32, grant: Box<crate::auth::Grant>) {
        if let Some(at) = grant.expires_at {
            self.expect_expiry(at);
        }
        self.with_conn(slot, |c| {
            c.grant = Some(grant);
            c.keepalive_deadline = None;
        });
    }

    /// Makes the sweep look for expired tokens once `at` (unix seconds) has come.
    pub(crate) fn expect_expiry(&self, at: u64) {
        self.auth_deadline.set(Some(self.auth_deadline.get().map_or(at, |d| d.min(at))));
    }

    /// Marks a subscription whose filter overlaps a deny rule of its token.
    pub fn set_deny_filter(&self, id: u32) {
        if let Some(sub) = self.router.borrow_mut().get_mut(id) {
            sub.deny_filter = true;
        }
    }

    /// Adds a subscription for a local connection and propagates the interest.
    /// Returns the subscription id.
    pub fn subscribe(&self, slot: u32, sid: Bytes, subject: Bytes, queue: Bytes) -> u32 {
        let (id, epoch) = self.add_subscription(Subscription {
            conn: slot,
            sid: sid.clone(),
            subject,
            queue,
            max: None,
            delivered: 0,
            mqtt: None,
            deny_filter: false,
        });
        let previous =
            self.with_conn(slot, |c| c.sids.get_or_insert_with(Box::default).insert(sid, id));
        if let Some(old) = previous {
            // A reused sid replaces the old subscription, as nats-server does.
            self.unsubscribe(old);
        }
        if let Some(epoch) = epoch {
            self.with_conn(slot, |c| c.required_epoch = c.required_epoch.max(epoch));
        }
        id
    }

    /// Adds a subscription to the router and propagates the interest. Returns its id and, if
    /// other shards were told, the epoch to wait for before the subscription is seen everywhere.
    fn add_subscription(&self, subscription: Subscription) -> (u32, Option<u64>) {
        let (subject, queue) = (subscription.subject.clone(), subscription.queue.clone());
        let id = self.router.borrow_mut().subscribe(subscription);
        ShardStats::add(&self.stats.subscriptions, 1);
        let count = self.router.borrow().count(&subject, &queue);
        let epoch = (!queue.is_empty() || count == 1)
            .then(|| self.interest_changed(&subject, &queue, count));
        (id, epoch)
    }

    /// Removes a subscription and propagates the interest change.
    pub fn unsubscribe(&self, id: u32) {
        let Some(sub) = self.router.borrow_mut().unsubscribe(id) else { return };
        ShardStats::sub(&self.stats.subscriptions, 1);
        // An MQTT subscription's `conn` is its session slot; only NATS ones have sids.
        let nats_slot = sub.mqtt.is_none().then_some(sub.conn as usize);
        if let Some(slot) = nats_slot {
            if let Some(conn) = self.conns.borrow_mut().get_mut(slot) {
                if let Some(sids) = conn.sids.as_mut().filter(|s| s.get(&sub.sid) == Some(&id)) {
                    sids.remove(&sub.sid);
                }
            }
        }
        let count = self.router.borrow().count(&sub.subject, &sub.queue);
        if !sub.queue.is_empty() || count == 0 {
            let epoch = self.interest_changed(&sub.subject, &sub.queue, count);
            if let Some(slot) = nats_slot {
                if let Some(conn) = self.conns.borrow_mut().get_mut(slot) {
                    conn.required_epoch = conn.required_epoch.max(epoch);
                }
            }
        }
    }

    /// Sets the max deliveries of a subscription; ends it at once if already reached.
    pub fn set_max(&self, id: u32, max: u64) {
        let done = {
            let mut router = self.router.borrow_mut();
            let Some(sub) = router.get_mut(id) else { return };
            sub.max = Some(max);
            sub.delivered >= max
        };
        if done {
            self.unsubscribe(id);
        }
    }

    fn interest_changed(&self, filter: &Bytes, queue: &Bytes, count: u32) -> u64 {
        self.interest.borrow_mut().set(self.id, filter, queue, count);
        if self.count == 1 {
            return 0;
        }
        let epoch = self.mesh.next_epoch();
        for peer in (0..self.count).filter(|p| *p != self.id) {
            let op =
                MeshOp::Interest { filter: filter.clone(), queue: queue.clone(), count, epoch };
            self.mesh.push(peer, op);
        }
        epoch
    }

    /// Routes a message published by local connection `origin`. Unless `synced`, returns
    /// without routing when it should wait for other shards first (see [`Routed`]).
    ///
    /// The message is lent, not given: it is taken out of `message` only where it must move
    /// (into the last remote shard's envelope, or into a wait). Passed by value through
    /// `publish` and `route_to`, a cross-shard NATS message was copied 8 times between decode
    /// and the outbox, now 4 (callgrind of benches/publish_path.rs).
    #[inline]
    pub fn publish(&self, origin: u32, message: &mut Message, synced: bool) -> Routed {
        if !synced && self.peer_interest_in_flight() {
            return Routed::AwaitInterest(std::mem::take(message));
        }
        let interest = self.interest.borrow_mut().matches(&message.subject);
        if interest.is_empty() && !synced && self.count > 1 {
            let recent =
                self.with_conn(origin, |c| c.last_sync.is_some_and(|t| t.elapsed() < SYNC_COVERS));
            if !recent {
                return Routed::AwaitSync(std::mem::take(message));
            }
        }
        self.route_to(Some(origin), message, &interest);
        Routed::Done
    }

    /// Waits as `routed` says, then routes its message; nothing to do for `Done`.
    pub async fn publish_after_wait(&self, origin: u32, routed: Routed) {
        let mut message = match routed {
            Routed::Done => return,
            Routed::AwaitSync(message) => {
                self.sync_peers(origin).await;
                message
            }
            Routed::AwaitInterest(message) => {
                self.wait_for_peer_interest().await;
                message
            }
        };
        let routed = self.publish(origin, &mut message, true);
        debug_assert_eq!(routed, Routed::Done, "a synced publish never waits");
    }

    /// Routes a message now, without waiting for other shards. `origin` is the publishing
    /// connection on this shard, if any (a will has none).
    pub fn route(&self, origin: Option<u32>, mut message: Message) {
        let interest = self.interest.borrow_mut().matches(&message.subject);
        self.route_to(origin, &mut message, &interest);
    }

    /// Delivers to this shard's subscriptions first, then moves the message into the last
    /// remote target's envelope (clones only for fan-out over several shards): every clone
    /// is an atomic increment per `Bytes` on the publisher's read buffer.
    #[inline]
    fn route_to(&self, origin: Option<u32>, message: &mut Message, interest: &InterestMatch) {
        ShardStats::add(&self.stats.in_msgs, 1);
        ShardStats::add(&self.stats.in_bytes, message.size() as u64);
        if interest.is_empty() {
            if let Some(origin) = origin {
                self.no_responders(origin, message);
            }
            return;
        }
        let mut picks: SmallVec<[u8; 4]> = SmallVec::new();
        let mut targets = interest.plain_mask;
        for queue in &interest.queues {
            let shard = queue.pick(fastrand::u32(..));
            picks.push(shard as u8);
            targets |= 1 << shard;
        }
        let duties = |target: usize| {
            let plain = interest.plain_mask & (1 << target) != 0;
            let mut queues: SmallVec<[Bytes; 1]> = SmallVec::new();
            for (queue, _) in
                interest.queues.iter().zip(&picks).filter(|(_, p)| usize::from(**p) == target)
            {
                queues.push(queue.name.clone());
            }
            (plain, queues)
        };
        if origin.is_some() {
            self.route_mask.set(self.route_mask.get() | targets);
        }
        if targets & (1 << self.id) != 0 {
            targets &= !(1 << self.id);
            let (plain, queues) = duties(self.id);
            self.deliver(message, plain, &queues, origin, 0);
        }
        while targets != 0 {
            let target = targets.trailing_zeros() as usize;
            targets &= targets - 1;
            let (plain, queues) = duties(target);
            ShardStats::add(&self.stats.mesh_msgs_out, 1);
            if targets == 0 {
                self.mesh.push_deliver(target, std::mem::take(message), plain, queues);
                return;
            }
            self.mesh.push_deliver(target, message.clone(), plain, queues);
        }
    }

    /// Waits until every other shard has processed everything queued to it before now and
    /// its interest changes so far are applied here. Peers handle a read burst whole and
    /// answer in FIFO order behind the interest changes they staged; the round trip also gives
    /// a peer whose reactor was asleep the time to read what its clients sent.
    pub async fn sync_peers(&self, origin: u32) {
        let epoch = self.mesh.next_epoch();
        for peer in (0..self.count).filter(|p| *p != self.id) {
            self.mesh.push(peer, MeshOp::Sync { epoch });
        }
        self.mesh.stage_all();
        self.mesh.wait_for_epoch(epoch).await;
        self.wait_for_peer_interest().await;
        self.with_conn(origin, |c| c.last_sync = Some(std::time::Instant::now()));
    }

    /// True if some other shard has made an interest change that has not been applied here.
    fn peer_interest_in_flight(&self) -> bool {
        let applied = self.interest_applied.borrow();
        self.identity
            .interest_issued
            .iter()
            .enumerate()
            .any(|(peer, issued)| peer != self.id && issued.load(Ordering::Acquire) > applied[peer])
    }

    /// Waits until every interest change other shards have made so far is applied here.
    pub async fn wait_for_peer_interest(&self) {
        self.mesh.stage_all();
        poll_fn(|cx| {
            if !self.peer_interest_in_flight() {
                return Poll::Ready(());
            }
            mesh::add_waiter(&mut self.interest_waiters.borrow_mut(), cx.waker());
            Poll::Pending
        })
        .await;
        ShardStats::add(&self.stats.interest_waits, 1);
    }

    /// Applies a batch received from shard `from`. Deliveries are read in place: the batch
    /// goes back to `from` with its messages (`MeshState::recycle`), so the reference counts
    /// of the publisher's read buffers are dropped on the core that raised them.
    pub fn receive(&self, from: usize, ops: &mut [MeshOp]) {
        for op in ops.iter_mut() {
            match op {
                MeshOp::Deliver(envelope) => self.deliver(
                    &envelope.message,
                    envelope.plain,
                    &envelope.queues,
                    None,
                    envelope.hops,
                ),
                MeshOp::Interest { filter, queue, count, epoch } => {
                    let epoch = *epoch;
                    self.interest.borrow_mut().set(from, filter, queue, *count);
                    self.mesh.push(from, MeshOp::InterestAck { epoch });
                    let mut applied = self.interest_applied.borrow_mut();
                    applied[from] = applied[from].max(epoch);
                    drop(applied);
                    for waker in self.interest_waiters.borrow_mut().drain(..) {
                        waker.wake();
                    }
                }
                MeshOp::Sync { epoch } => {
                    self.mesh.push(from, MeshOp::InterestAck { epoch: *epoch })
                }
                MeshOp::InterestAck { epoch } => self.mesh.acked(from, *epoch),
                // The operations this shard keeps are moved out of the batch.
                MeshOp::Adopt(_) => {
                    if let MeshOp::Adopt(adopt) = std::mem::replace(op, MeshOp::Taken) {
                        self.adopted.borrow_mut().push(*adopt);
                    }
                }
                MeshOp::Move(_) => {
                    if let MeshOp::Move(moved) = std::mem::replace(op, MeshOp::Taken) {
                        self.moved_in.borrow_mut().push(*moved);
                    }
                }
                MeshOp::MoveMqtt(moved) => {
                    let slot = self.mqtt_take_in(moved);
                    if let MeshOp::MoveMqtt(moved) = std::mem::replace(op, MeshOp::Taken) {
                        self.mqtt_moved_in.borrow_mut().push((slot, *moved));
                    }
                }
                MeshOp::SessionGone { client_id } => self.mqtt_session_gone(from, client_id),
                MeshOp::Retain { .. } => {
                    if let MeshOp::Retain { subject, seq, message } =
                        std::mem::replace(op, MeshOp::Taken)
                    {
                        self.retained.borrow_mut().apply(subject, seq, message);
                    }
                }
                MeshOp::Taken => {}
            }
        }
        self.mesh.stage_all();
    }

    /// Delivers to local subscriptions: every plain one if `plain`, and one member of each
    /// queue group named in `queues`.
    fn deliver(
        &self,
        message: &Message,
        plain: bool,
        queues: &[Bytes],
        origin: Option<u32>,
        hops: u8,
    ) {
        let matched = self.router.borrow_mut().matches(&message.subject);
        let no_echo = origin.filter(|slot| !self.with_conn(*slot, |c| c.flags.echo));
        // MQTT No Local compares sessions: a session's subscriptions live on its own shard,
        // where its publishes are routed from, so the origin is always local when it matters.
        let origin_session = origin.and_then(|slot| self.with_conn(slot, |c| c.session));
        if plain {
            let parts = message.parts();
            let composed = Cell::new(0);
            let frame =
                (matched.plain.len() > 1).then_some(Framing { parts: &parts, composed: &composed });
            for id in &matched.plain {
                self.deliver_one(*id, message, no_echo, origin_session, frame);
            }
        }
        for name in queues {
            let members = matched.queues.iter().find(|(q, _)| q == name).map(|(_, m)| m.as_slice());
            match members {
                Some(members) if !members.is_empty() => {
                    let turn = self.round_robin.get().wrapping_add(1);
                    self.round_robin.set(turn);
                    let member = members[turn as usize % members.len()];
                    self.deliver_one(member, message, no_echo, origin_session, None);
                }
                _ => self.redirect(message, name, hops),
            }
        }
        self.unsubscribe_expired();
    }

    /// Removes the subscriptions that reached their `max` during the last delivery (a check
    /// of an empty list on the common path: collecting it cost 1.8 % of a shard in perf).
    fn unsubscribe_expired(&self) {
        if self.expired.borrow().is_empty() {
            return;
        }
        let expired: SmallVec<[u32; 4]> = self.expired.borrow_mut().drain(..).collect();
        for id in expired {
            self.unsubscribe(id);
        }
    }

    /// A queue message arrived for a group whose last local member just left: send it to
    /// another shard that still has members, once; count it if there is none.
    fn redirect(&self, message: &Message, queue: &Bytes, hops: u8) {
        if hops == 0 {
            let interest = self.interest.borrow_mut().matches(&message.subject);
            if let Some(group) = interest.queues.iter().find(|q| q.name == queue) {
                let others = group.total - group.counts[self.id];
                if others > 0 {
                    let mut ticket = fastrand::u32(..others);
                    for (shard, count) in group.counts.iter().enumerate() {
                        if shard == self.id {
                            continue;
                        }
                        if ticket < *count {
                            let mut queues = SmallVec::new();
                            queues.push(queue.clone());
                            let envelope = Envelope {
                                message: message.clone(),
                                plain: false,
                                queues,
                                hops: 1,
                            };
                            self.mesh.push(shard, MeshOp::Deliver(envelope));
                            return;
                        }
                        ticket -= count;
                    }
                }
            }
        }
        ShardStats::add(&self.stats.dropped_no_queue_member, 1);
    }

    fn deliver_one(
        &self,
        id: u32,
        message: &Message,
        no_echo: Option<u32>,
        origin_session: Option<u32>,
        frame: Option<Framing>,
    ) {
        let mut router = self.router.borrow_mut();
        let Some(sub) = router.get_mut(id) else { return };
        if let Some(mqtt) = sub.mqtt {
            let session = sub.conn;
            let deny_filter = sub.deny_filter;
            drop(router);
            if deny_filter && !self.mqtt_may_deliver(session, &message.subject) {
                ShardStats::add(&self.stats.auth_deliveries_denied, 1);
                return;
            }
            self.deliver_mqtt(session, mqtt, message, origin_session);
            return;
        }
        self.deliver_nats(id, sub, &message.parts(), no_echo, frame);
    }

    /// One MSG to NATS subscription `id` (`sub`), unless it is the publisher's own with echo
    /// off, reached its max, is closing or may not receive the subject.
    #[inline]
    fn deliver_nats(
        &self,
        id: u32,
        sub: &mut Subscription,
        message: &MsgParts,
        no_echo: Option<u32>,
        frame: Option<Framing>,
    ) {
        if no_echo == Some(sub.conn) {
            return;
        }
        if sub.max.is_some_and(|max| sub.delivered >= max) {
            return;
        }
        let mut conns = self.conns.borrow_mut();
        let conn = &mut conns[sub.conn as usize];
        if conn.closing {
            return;
        }
        if sub.deny_filter
            && !conn.grant.as_ref().is_none_or(|g| g.permissions.may_deliver(message.subject))
        {
            ShardStats::add(&self.stats.auth_deliveries_denied, 1);
            return;
        }
        if !frame.is_some_and(|frame| self.encode_framed(frame, &mut conn.out, &sub.sid)) {
            codec::encode_msg_parts(&mut conn.out, message, &sub.sid, conn.flags.headers);
        }
        sub.delivered += 1;
        conn.queued_msgs += 1;
        if sub.max.is_some_and(|max| sub.delivered >= max) {
            self.expired.borrow_mut().push(id);
        }
        ShardStats::add(&self.stats.out_msgs, 1);
        ShardStats::add(&self.stats.out_bytes, message.size() as u64);
        self.after_append(conn);
    }

    /// Appends the MSG of `frame`'s message for `sid` from the shard's composition of it,
    /// composing it first if this is its first delivery. False, having written nothing, if it
    /// cannot be composed or a delivery in between (a nested routing) composed another.
    fn encode_framed(&self, frame: Framing, out: &mut BytesMut, sid: &[u8]) -> bool {
        let mut composition = self.msg_frame.borrow_mut();
        let id = match frame.composed.get() {
            0 => {
                let id = composition.compose(frame.parts).unwrap_or(u64::MAX);
                frame.composed.set(id);
                id
            }
            id => id,
        };
        if id != composition.id() {
            return false;
        }
        composition.encode(out, sid, frame.parts.payload);
        true
    }

    /// Routes a publish of connection `origin` whose every subscriber is on this shard and
    /// takes it without a copy (a NATS subscription, or an MQTT one that gets it at QoS 0),
    /// from borrowed parts: the general path (`publish`) cuts the parts out of the read
    /// buffer as `Bytes`, and those reference counts (an atomic increment and decrement per
    /// part) were 30 % of a shard's CPU in NATS 1->1 at 16 B and 22 % in MQTT QoS 0 1->1 (perf,
    /// one shard). Returns false, having changed nothing, for any other publish (subscribers
    /// elsewhere, queue groups, an MQTT subscription that gets it at QoS 1 or 2 and must keep
    /// it, no subscriber, interest changes of other shards in flight): the caller then takes
    /// the general path.
    pub(super) fn deliver_in_place(&self, origin: u32, message: &MsgParts) -> bool {
        if self.peer_interest_in_flight() {
            return false;
        }
        let own = 1u64 << self.id;
        let interest = self.interest.borrow_mut().matches(message.subject);
        if interest.plain_mask != own || !interest.queues.is_empty() {
            return false;
        }
        let matched = self.router.borrow_mut().matches(message.subject);
        if !matched.queues.is_empty() {
            return false;
        }
        let origin_session = if matched.mqtt {
            let origin_session = self.with_conn(origin, |c| c.session);
            let mut router = self.router.borrow_mut();
            let keeps = matched.plain.iter().any(|id| {
                router.get_mut(*id).is_some_and(|sub| {
                    sub.mqtt.is_some_and(|mqtt| {
                        let qos = mqtt::mqtt_delivery_qos(sub.conn, mqtt, message, origin_session);
                        qos.is_some_and(|qos| qos > 0)
                    })
                })
            });
            if keeps {
                return false;
            }
            origin_session
        } else {
            None
        };
        ShardStats::add(&self.stats.in_msgs, 1);
        ShardStats::add(&self.stats.in_bytes, message.size() as u64);
        self.route_mask.set(self.route_mask.get() | own);
        let no_echo = (!self.with_conn(origin, |c| c.flags.echo)).then_some(origin);
        let composed = Cell::new(0);
        let frame =
            (matched.plain.len() > 1).then_some(Framing { parts: message, composed: &composed });
        for id in &matched.plain {
            let mut router = self.router.borrow_mut();
            let Some(sub) = router.get_mut(*id) else { continue };
            let Some(mqtt) = sub.mqtt else {
                self.deliver_nats(*id, sub, message, no_echo, frame);
                continue;
            };
            let (session, deny_filter) = (sub.conn, sub.deny_filter);
            drop(router);
            if deny_filter && !self.mqtt_may_deliver(session, message.subject) {
                ShardStats::add(&self.stats.auth_deliveries_denied, 1);
                continue;
            }
            self.deliver_mqtt_qos0(session, mqtt, message, origin_session);
        }
        self.unsubscribe_expired();
        true
    }

    /// After output was appended: enforce max_pending, then wake the writer once per tick.
    /// MQTT connections bound their output before appending (QoS 0 drops, session queues), so
    /// they are never cut and never stall producers here.
    fn after_append(&self, conn: &mut Conn) {
        if conn.protocol == Protocol::Mqtt {
        } else if (conn.out.len() + conn.writing) as u64 > self.config.nats.max_pending {
            // Slow consumer: what could not be sent is dropped and counted, the client is told
            // why and closed. Other connections are untouched.
            ShardStats::add(&self.stats.slow_consumers, 1);
            ShardStats::add(&self.stats.dropped_slow_consumer, conn.queued_msgs);
            conn.queued_msgs = 0;
            conn.out.clear();
            codec::encode_err(&mut conn.out, "Slow Consumer");
            conn.closing = true;
            wake(&mut conn.reader);
        } else if !conn.stalled && self.over_stall_mark(conn) {
            conn.stalled = true;
            self.stalled.borrow_mut().push(conn.slot);
        }
        if !conn.writer_woken {
            conn.writer_woken = true;
            wake(&mut conn.writer);
        }
        self.wake_dormant(conn);
    }

    /// Sends a 503 status to the requester if it asked for no-responder notices.
    fn no_responders(&self, origin: u32, message: &Message) {
        if message.reply.is_empty() || !self.with_conn(origin, |c| c.flags.no_responders) {
            return;
        }
        let status = Message {
            subject: message.reply.clone(),
            reply: Bytes::new(),
            headers: Bytes::from_static(codec::NO_RESPONDERS_HEADERS),
            payload: Bytes::new(),
            meta: Default::default(),
        };
        let matched = self.router.borrow_mut().matches(&status.subject);
        let own: SmallVec<[u32; 2]> = {
            let mut router = self.router.borrow_mut();
            matched
                .plain
                .iter()
                .copied()
                .filter(|id| router.get_mut(*id).is_some_and(|s| s.conn == origin))
                .collect()
        };
        for id in own {
            self.deliver_one(id, &status, None, None, None);
        }
        self.unsubscribe_expired();
    }

    /// One ping tick: PING idle connections, close those with `ping_max` unanswered PINGs.
    pub fn ping_tick(&self) {
        let ping_max = self.config.nats.ping_max;
        let mut stale: SmallVec<[u32; 4]> = SmallVec::new();
        let mut conns = self.conns.borrow_mut();
        for (slot, conn) in conns.iter_mut() {
            if conn.closing || conn.protocol == Protocol::Mqtt {
                continue;
            }
            if conn.active {
                conn.active = false;
                continue;
            }
            if conn.pings_out >= ping_max {
                stale.push(slot as u32);
                continue;
            }
            conn.pings_out += 1;
            conn.out.extend_from_slice(b"PING\r\n");
            self.after_append(conn);
        }
        drop(conns);
        for slot in stale {
            ShardStats::add(&self.stats.stale_connections, 1);
            self.close_with_err(slot, "Stale Connection");
        }
    }

    /// Closes every connection (shutdown): queued output is still written.
    pub fn close_all(&self) {
        let slots: Vec<u32> = self.conns.borrow().iter().map(|(slot, _)| slot as u32).collect();
        for slot in slots {
            self.close(slot);
        }
    }

    /// The shards (bit per shard) that messages of local connections were routed to since
    /// the last call.
    pub fn take_route_mask(&self) -> u64 {
        self.route_mask.replace(0)
    }

    /// NATS connections moved here since the last call, to be served.
    pub fn take_moved(&self) -> Vec<mesh::Moved> {
        std::mem::take(&mut *self.moved_in.borrow_mut())
    }

    /// Whether NATS connection `slot` may move to shard `target` now: co-location is on, the
    /// connection only publishes (no subscriptions: theirs would have to move with it), runs
    /// over plain TCP (a TLS session stays where it is) and is not closing, and `target`
    /// holds no more connections than this shard: after the move it has at most two more.
    /// So a pair moves together, but many publishers of one subscriber stay spread over the
    /// shards (8->1 with the publishers piled onto the subscriber's shard delivered 2.18,
    /// 2.57, 2.80 and 3.57 M msg/s against 2.93-3.40 spread: tuning/results/2026-12-01-colocate.md).
    pub fn may_move(&self, slot: u32, target: usize) -> bool {
        if !self.config.server.colocate_publishers || target == self.id || target >= self.count {
            return false;
        }
        let eligible = self.with_conn(slot, |c| {
            c.protocol == Protocol::Nats
                && !c.closing
                && !c.tls
                && c.sids.as_ref().is_none_or(|sids| sids.is_empty())
        });
        eligible && self.target_has_room(target)
    }

    /// A connection may move to `target` if that shard holds no more connections than this
    /// one, counting moves to either still in flight: after the move it has at most two more.
    pub(super) fn target_has_room(&self, target: usize) -> bool {
        let connections = |shard: usize| {
            ShardStats::get(&self.identity.shard_stats[shard].connections)
                + self.identity.moves_in_flight[shard].load(Ordering::Acquire)
        };
        connections(target) <= connections(self.id)
    }

    /// A connection moved here was opened (or failed to be): no longer in flight.
    pub fn move_arrived(&self) {
        self.identity.moves_in_flight[self.id].fetch_sub(1, Ordering::AcqRel);
    }

    /// Opens the slot of a NATS connection another shard moved here and restores its state;
    /// returns the slot.
    pub fn open_moved(&self, moved: mesh::MovedConn) -> u32 {
        let slot = self.insert_conn(moved.addr, Protocol::Nats, moved.cid);
        self.move_arrived();
        if let Some(grant) = moved.grant {
            self.admit(slot, grant);
        }
        self.with_conn(slot, |c| {
            c.flags = moved.flags;
            c.pings_out = moved.pings_out;
            c.last_sync = moved.last_sync;
        });
        if !moved.out.is_empty() {
            self.send(slot, |out| out.extend_from_slice(&moved.out));
        }
        slot
    }

    /// Open connections on this shard.
    pub fn connection_count(&self) -> usize {
        self.conns.borrow().len()
    }

    /// True once shutdown was requested.
    pub fn shutting_down(&self) -> bool {
        self.identity.shutdown.load(Ordering::Relaxed)
    }
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(waker) = slot.take() {
        waker.wake();
    }
}

fn set_waker(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(existing) if existing.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// Seconds since the Unix epoch (token times are in these).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_place_attempts_back_off_while_they_decline_and_resume_after_a_success() {
        let mut backoff = InPlaceBackoff::default();
        let mut tried = Vec::new();
        for step in 0..300 {
            if backoff.attempt() {
                tried.push(step);
                backoff.record(false);
            }
        }
        // Skips of 0, 1, 2, 4 ... 64 between attempts, then 64 for good.
        let gaps: Vec<usize> = tried.windows(2).map(|w| w[1] - w[0] - 1).collect();
        assert_eq!(&gaps[..9], &[0, 1, 2, 4, 8, 16, 32, 64, 64]);
        assert!(gaps.iter().all(|g| *g <= usize::from(IN_PLACE_BACKOFF_MAX)));
        assert!(!backoff.settled());
        // A success resets it: the next decline skips nothing.
        while !backoff.attempt() {}
        backoff.record(true);
        assert!(backoff.settled());
        assert!(backoff.attempt());
        backoff.record(false);
        assert!(backoff.attempt(), "the first decline after a success skips no step");
    }
}
