//! The only code that crosses cores: what one shard sends another, per-target batches, and
//! the tasks that move them over glommio's channel mesh.
//!
//! A shard appends operations for a target shard to that target's outbox while it handles a
//! read burst; at the end of the burst the outbox becomes one batch in the target's pending
//! queue, and one sender task per target moves batches into the bounded mesh channel in FIFO
//! order. A reader whose targets have more than [`PENDING_BATCHES_MAX`] batches queued stops
//! reading its socket until they drain (TCP back-pressure), so nothing is dropped. Receivers
//! never wait on a send, so two shards sending to each other cannot deadlock. Handled batches
//! travel back to the shard that built them with their messages still in them: that shard
//! drops the messages' `Bytes` (whose reference counts its own reader raised, so no count is
//! touched by two cores) and reuses the vector, so steady traffic allocates nothing.

use crate::limits::{
    MESH_BATCH_OPS_MAX, MESH_BATCH_POOL_MAX, MESH_RETURNS_HELD_MAX, MESH_RETURN_HOLD,
    MESH_RETURN_SMALL_OPS,
};
use crate::message::Message;
use bytes::Bytes;
use smallvec::SmallVec;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::{Poll, Waker};

/// Batches that may wait in a shard's local queue for one target before readers pause.
pub const PENDING_BATCHES_MAX: usize = 2;

/// What one shard tells another.
#[derive(Debug)]
pub enum MeshOp {
    /// Deliver a message to this shard's matching subscriptions.
    Deliver(Envelope),
    /// The sender now has `count` subscriptions on (`filter`, `queue`).
    Interest {
        /// Subscription filter.
        filter: Bytes,
        /// Queue group, empty for plain.
        queue: Bytes,
        /// Absolute count on the sending shard.
        count: u32,
        /// Sender's interest epoch; echoed back in `InterestAck`.
        epoch: u64,
    },
    /// Acknowledge with `InterestAck` once everything sent before this was applied.
    Sync {
        /// Sender's epoch to acknowledge.
        epoch: u64,
    },
    /// The receiver has applied every interest update up to `epoch` of the shard it acks.
    InterestAck {
        /// Highest epoch applied.
        epoch: u64,
    },
    /// An MQTT connection whose client id lives on the receiver: serve it there.
    Adopt(Box<Adopt>),
    /// A NATS publisher whose messages all go to the receiver: serve it there.
    Move(Box<Moved>),
    /// An MQTT publisher and its session, moved from their home shard (the sender) to the
    /// receiver, where its messages go: the receiver holds the session from now on.
    MoveMqtt(Box<MovedMqtt>),
    /// The session of `client_id` that the receiver (its home shard) moved here has ended.
    SessionGone {
        /// Its client id.
        client_id: Bytes,
    },
    /// Set (`Some`) or delete (`None`) the retained message of `subject`.
    Retain {
        /// Subject in NATS spelling.
        subject: Bytes,
        /// Process-wide order of retained updates; the newest wins.
        seq: u64,
        /// The message, detached from any read buffer.
        message: Option<Message>,
    },
    /// Left in a received batch where the receiver moved an `Adopt`, a `Move`, a `MoveMqtt` or
    /// a `Retain` out; never sent.
    Taken,
}

/// An MQTT connection handed to its session's home shard right after its CONNECT was read.
#[derive(Debug)]
pub struct Adopt {
    /// The socket (a duplicate of the accepting shard's descriptor, which was closed).
    pub fd: std::os::fd::OwnedFd,
    /// The TLS session of a connection from the TLS listener, moved with its socket (rustls'
    /// `ServerConnection` is `Send`; see `shard::stream`).
    pub tls: Option<Box<rustls::ServerConnection>>,
    /// Peer address.
    pub addr: std::net::SocketAddr,
    /// The decoded CONNECT, client id already assigned if it was empty.
    pub connect: Box<crate::protocol::mqtt::packet::Connect>,
    /// True if the broker assigned the client id.
    pub assigned: bool,
    /// Bytes read after the CONNECT packet.
    pub rest: Bytes,
    /// What the CONNECT's token allows (checked on the accepting shard); `None`: open broker.
    pub grant: Option<Box<crate::auth::Grant>>,
}

/// A NATS connection moved to the shard its messages go to (`Shard::may_move`), with what it
/// needs to go on there: the same client sees the same connection.
#[derive(Debug)]
pub struct Moved {
    /// The socket (a duplicate of the sending shard's descriptor, which was closed).
    pub fd: std::os::fd::OwnedFd,
    /// Bytes read but not decoded yet (part of an op).
    pub rest: Vec<u8>,
    /// When it moved (the next move waits `limits::MOVE_COOLDOWN`).
    pub moved_at: std::time::Instant,
    /// The connection's state.
    pub conn: MovedConn,
}

/// The state of a moved NATS connection that its new slot takes over.
#[derive(Debug)]
pub struct MovedConn {
    /// Peer address.
    pub addr: std::net::SocketAddr,
    /// Connection id, as INFO gave it to the client.
    pub cid: u64,
    /// CONNECT options.
    pub flags: super::NatsFlags,
    /// What the connection's token allows; `None` on an open broker.
    pub grant: Option<Box<crate::auth::Grant>>,
    /// Unanswered server PINGs.
    pub pings_out: u32,
    /// When the connection last synced with the other shards over an unrouted publish.
    pub last_sync: Option<std::time::Instant>,
    /// Output queued after its writer stopped (a PING of the ping tick, say).
    pub out: bytes::BytesMut,
}

/// An MQTT connection and its session moved away from their home shard
/// (`Shard::mqtt_may_move`): a publisher without subscriptions whose session ends with it.
#[derive(Debug)]
pub struct MovedMqtt {
    /// The socket (a duplicate of the sending shard's descriptor, which was closed).
    pub fd: std::os::fd::OwnedFd,
    /// Bytes read but not decoded yet (part of a packet).
    pub rest: Vec<u8>,
    /// Peer address.
    pub addr: std::net::SocketAddr,
    /// Connection id.
    pub cid: u64,
    /// The session; taken out by the receiver as it applies the batch.
    pub session: Option<Box<super::session::Session>>,
    /// Protocol version.
    pub version: crate::protocol::mqtt::packet::Version,
    /// Inbound topic aliases (index = alias - 1).
    pub aliases: Vec<Option<Bytes>>,
    /// 1.5 x the keep alive, if any.
    pub keep_alive: Option<std::time::Duration>,
    /// Session Expiry Interval from CONNECT was 0.
    pub expiry_was_zero: bool,
    /// Output queued after its writer stopped.
    pub out: bytes::BytesMut,
}

/// A message with the delivery duties of the receiving shard.
#[derive(Debug)]
pub struct Envelope {
    /// The message; its `Bytes` are shared with the publisher's shard.
    pub message: Message,
    /// Deliver to the receiver's plain subscriptions.
    pub plain: bool,
    /// Queue groups for which the receiver must pick one local member.
    pub queues: SmallVec<[Bytes; 1]>,
    /// Times this envelope was redirected because its queue member had left.
    pub hops: u8,
}

/// What travels in a mesh channel.
#[derive(Debug)]
pub enum MeshItem {
    /// Operations, in order.
    Batch(Vec<MeshOp>),
    /// A handled batch going home, to be emptied and reused there.
    Recycle(Vec<MeshOp>),
}

/// Where a sender waiting for its next item stands with the returns it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    /// No hold timer runs: a held return must start one.
    Unarmed,
    /// A hold timer runs: held returns wait for it (or for company).
    Armed,
    /// The hold is over: held returns go now.
    Over,
}

/// A shard's side of the mesh: outboxes, pending queues, epochs and the waiters on them.
#[derive(Debug)]
pub struct MeshState {
    outbox: RefCell<Vec<Vec<MeshOp>>>,
    pending: RefCell<Vec<VecDeque<MeshItem>>>,
    /// Handled batches to send home, per origin; not counted as pending (they are bounded by
    /// the batches the origin sent).
    returns: RefCell<Vec<Vec<Vec<MeshOp>>>>,
    /// When the oldest return held for each origin was handled; `None` when none is held.
    held_since: RefCell<Vec<Option<std::time::Instant>>>,
    /// A large batch is among the held returns, or the hold is full: send them all now.
    returns_due: RefCell<Vec<bool>>,
    sender_wakers: RefCell<Vec<Option<Waker>>>,
    room_waiters: RefCell<Vec<Waker>>,
    pool: RefCell<Vec<Vec<MeshOp>>>,
    epoch_sent: Cell<u64>,
    epoch_acked: RefCell<Vec<u64>>,
    epoch_waiters: RefCell<Vec<Waker>>,
    me: usize,
}

impl MeshState {
    /// Mesh state for shard `me` of `shards`.
    pub fn new(me: usize, shards: usize) -> MeshState {
        MeshState {
            outbox: RefCell::new((0..shards).map(|_| Vec::new()).collect()),
            pending: RefCell::new((0..shards).map(|_| VecDeque::new()).collect()),
            returns: RefCell::new((0..shards).map(|_| Vec::new()).collect()),
            held_since: RefCell::new(vec![None; shards]),
            returns_due: RefCell::new(vec![false; shards]),
            sender_wakers: RefCell::new(vec![None; shards]),
            room_waiters: RefCell::new(Vec::new()),
            pool: RefCell::new(Vec::new()),
            epoch_sent: Cell::new(0),
            epoch_acked: RefCell::new(vec![0; shards]),
            epoch_waiters: RefCell::new(Vec::new()),
            me,
        }
    }

    /// Appends the delivery of `message` to `target`. Inlined, with room made before the
    /// envelope exists, so the compiler can build it in the outbox: a message is otherwise
    /// copied once more per call it passes through, and those stores are what the reader's
    /// next atomic reference count operation waits for.
    #[inline(always)]
    pub fn push_deliver(
        &self,
        target: usize,
        message: Message,
        plain: bool,
        queues: SmallVec<[Bytes; 1]>,
    ) {
        self.push(target, MeshOp::Deliver(Envelope { message, plain, queues, hops: 0 }));
    }

    /// Appends an operation for `target`; a full outbox is staged at once.
    #[inline(always)]
    #[allow(unsafe_code)]
    pub fn push(&self, target: usize, op: MeshOp) {
        debug_assert_ne!(target, self.me);
        let full = {
            let mut outbox = self.outbox.borrow_mut();
            let ops = &mut outbox[target];
            if ops.capacity() == ops.len() {
                self.make_room(ops);
            }
            // Written straight into the vector's free slot: `Vec::push` of the built `MeshOp`
            // copied a delivery's envelope twice more (perf: 7.5 % of the publisher shard's
            // samples in those copies, 16 B NATS 1->1).
            ops.spare_capacity_mut()[0].write(op);
            // SAFETY: the slot at `len` is within capacity (made above) and now initialized.
            unsafe { ops.set_len(ops.len() + 1) };
            ops.len() >= MESH_BATCH_OPS_MAX
        };
        if full {
            self.stage(target);
        }
    }

    /// Gives an empty outbox a pooled vector, or grows a full one. A vector grows once, to
    /// the most a batch holds, and stays pooled at that size: doubling from 64 copied every
    /// envelope so far at each step (one perf run of MQTT 1->1 put 1.9 % of the publisher
    /// shard's samples in copies under `reserve`).
    #[cold]
    fn make_room(&self, ops: &mut Vec<MeshOp>) {
        if ops.capacity() == 0 {
            *ops = self.pool.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(64));
        } else {
            ops.reserve_exact(MESH_BATCH_OPS_MAX.max(ops.len() + 1) - ops.len());
        }
    }

    /// Starts a new interest epoch and returns it.
    pub fn next_epoch(&self) -> u64 {
        let epoch = self.epoch_sent.get() + 1;
        self.epoch_sent.set(epoch);
        epoch
    }

    /// Turns every non-empty outbox into a pending batch.
    pub fn stage_all(&self) {
        let shards = self.outbox.borrow().len();
        for target in 0..shards {
            if !self.outbox.borrow()[target].is_empty() {
                self.stage(target);
            }
        }
    }

    fn stage(&self, target: usize) {
        let batch = std::mem::take(&mut self.outbox.borrow_mut()[target]);
        self.pending.borrow_mut()[target].push_back(MeshItem::Batch(batch));
        if let Some(waker) = self.sender_wakers.borrow_mut()[target].take() {
            waker.wake();
        }
    }

    /// Sends a handled batch back to the shard that allocated it, operations and all, so that
    /// the `Bytes` of its messages are dropped there: those reference counts live in the
    /// origin's read buffers, and the origin's reader raises them for every message it slices
    /// off, so an atomic decrement here would pull that cache line across cores once per
    /// message (perf: `shared_v_drop` was 57 % of the receiving shard's samples in MQTT 1->1
    /// before this). Returns go out ahead of this shard's own batches.
    pub fn recycle(&self, origin: usize, ops: Vec<MeshOp>) {
        let large = ops.len() > MESH_RETURN_SMALL_OPS;
        let held = {
            let mut returns = self.returns.borrow_mut();
            returns[origin].push(ops);
            returns[origin].len()
        };
        // The sender hears of the first held return (to start its hold timer), of a full hold
        // and of a large batch (due at once); the ones in between wait without waking it.
        if held == 1 {
            self.held_since.borrow_mut()[origin] = Some(std::time::Instant::now());
        }
        if large || held >= MESH_RETURNS_HELD_MAX {
            // All of them go, not just the one that tipped it.
            self.returns_due.borrow_mut()[origin] = true;
        }
        if held == 1 || held >= MESH_RETURNS_HELD_MAX || large {
            if let Some(waker) = self.sender_wakers.borrow_mut()[origin].take() {
                waker.wake();
            }
        }
    }

    /// The oldest batch staged for `target`, taken as a sender task would (for in-process
    /// drivers that have no sender tasks: [`crate::shard::path`]).
    pub fn take_staged(&self, target: usize) -> Option<Vec<MeshOp>> {
        match self.pending.borrow_mut()[target].pop_front()? {
            MeshItem::Batch(ops) | MeshItem::Recycle(ops) => Some(ops),
        }
    }

    /// Every return held for `origin`, taken as a sender task would (in-process drivers).
    pub fn take_returns(&self, origin: usize) -> Vec<Vec<MeshOp>> {
        self.held_since.borrow_mut()[origin] = None;
        self.returns_due.borrow_mut()[origin] = false;
        std::mem::take(&mut self.returns.borrow_mut()[origin])
    }

    /// Keeps a vector that came home, after dropping what it still holds.
    pub fn take_home(&self, mut ops: Vec<MeshOp>) {
        ops.clear();
        let mut pool = self.pool.borrow_mut();
        if pool.len() < MESH_BATCH_POOL_MAX {
            pool.push(ops);
        }
    }

    /// Waits until every target's pending queue is short enough to accept more.
    pub async fn wait_for_room(&self) {
        poll_fn(|cx| {
            if self.pending.borrow().iter().all(|q| q.len() <= PENDING_BATCHES_MAX) {
                return Poll::Ready(());
            }
            add_waiter(&mut self.room_waiters.borrow_mut(), cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Waits for the next item to send to `target`. Returns go first when anything else goes
    /// (or [`MESH_RETURNS_HELD_MAX`] are held); on their own they wait up to
    /// [`MESH_RETURN_HOLD`] for company.
    pub async fn next_item(&self, target: usize) -> MeshItem {
        loop {
            let hold = self.held_since.borrow()[target]
                .map(|t| MESH_RETURN_HOLD.saturating_sub(t.elapsed()));
            let item = match hold {
                None => self.next_item_now(target, Hold::Unarmed).await,
                Some(left) if left.is_zero() => self.next_item_now(target, Hold::Over).await,
                Some(left) => {
                    let now = self.next_item_now(target, Hold::Armed);
                    let later = async {
                        glommio::timer::sleep(left).await;
                        None
                    };
                    futures_lite::future::or(now, later).await
                }
            };
            if let Some(item) = item {
                return item;
            }
        }
    }

    /// The next item for `target`; `None` when a return arrived while no hold timer ran (the
    /// caller then starts one).
    async fn next_item_now(&self, target: usize, hold: Hold) -> Option<MeshItem> {
        poll_fn(|cx| {
            let pending = !self.pending.borrow()[target].is_empty();
            {
                let mut returns = self.returns.borrow_mut();
                let due = hold == Hold::Over || pending || self.returns_due.borrow()[target];
                if due {
                    if let Some(ops) = returns[target].pop() {
                        if returns[target].is_empty() {
                            self.held_since.borrow_mut()[target] = None;
                            self.returns_due.borrow_mut()[target] = false;
                        }
                        return Poll::Ready(Some(MeshItem::Recycle(ops)));
                    }
                } else if hold == Hold::Unarmed && !returns[target].is_empty() {
                    return Poll::Ready(None);
                }
            }
            if let Some(item) = self.pending.borrow_mut()[target].pop_front() {
                for waker in self.room_waiters.borrow_mut().drain(..) {
                    waker.wake();
                }
                return Poll::Ready(Some(item));
            }
            self.sender_wakers.borrow_mut()[target] = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Records an acknowledgement from `peer`.
    pub fn acked(&self, peer: usize, epoch: u64) {
        let mut acked = self.epoch_acked.borrow_mut();
        acked[peer] = acked[peer].max(epoch);
        for waker in self.epoch_waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Waits until every other shard has applied this shard's interest updates up to `epoch`.
    pub async fn wait_for_epoch(&self, epoch: u64) {
        poll_fn(|cx| {
            let acked = self.epoch_acked.borrow();
            if acked.iter().enumerate().all(|(peer, a)| peer == self.me || *a >= epoch) {
                return Poll::Ready(());
            }
            add_waiter(&mut self.epoch_waiters.borrow_mut(), cx.waker());
            Poll::Pending
        })
        .await
    }
}

/// Adds `waker` to a list of waiters unless the same task is already in it. A waiting future
/// is polled again whenever its task wakes, also for other reasons, and a future that ends by
/// another route (a timeout) leaves its entry behind; without this check the entries, each a
/// waker clone, would pile up, and glommio counts a task's wakers in an i16.
pub fn add_waiter(waiters: &mut Vec<Waker>, waker: &Waker) {
    if !waiters.iter().any(|w| w.will_wake(waker)) {
        waiters.push(waker.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Task;
    impl std::task::Wake for Task {
        fn wake(self: std::sync::Arc<Self>) {}
    }

    #[test]
    fn a_task_waits_in_a_list_once() {
        let one = Waker::from(std::sync::Arc::new(Task));
        let other = Waker::from(std::sync::Arc::new(Task));
        let mut waiters = Vec::new();
        for _ in 0..3 {
            add_waiter(&mut waiters, &one.clone());
        }
        add_waiter(&mut waiters, &other);
        assert_eq!(waiters.len(), 2);
    }

    fn deliver(payload: Bytes) -> MeshOp {
        let message =
            Message { subject: Bytes::from_static(b"a.b"), payload, ..Default::default() };
        MeshOp::Deliver(Envelope { message, plain: true, queues: SmallVec::new(), hops: 0 })
    }

    #[test]
    fn a_handled_batch_goes_home_with_its_messages_ahead_of_new_batches() {
        // Shard 1 received a batch from shard 0 and has its own batch for shard 0 staged.
        let receiver = MeshState::new(1, 2);
        receiver.push(0, MeshOp::Sync { epoch: 1 });
        receiver.stage_all();
        let read_buffer = Bytes::from(vec![7u8; 64]);
        let handled = vec![deliver(read_buffer.slice(0..16)), deliver(read_buffer.slice(16..32))];
        receiver.recycle(0, handled);
        // The receiver has not dropped the slices: the buffer is still shared three ways.
        assert!(!read_buffer.is_unique());
        let first = futures_lite::future::block_on(receiver.next_item(0));
        let MeshItem::Recycle(ops) = first else { panic!("the return goes first") };
        assert_eq!(ops.len(), 2);
        let second = futures_lite::future::block_on(receiver.next_item(0));
        assert!(matches!(second, MeshItem::Batch(ref ops) if ops.len() == 1));
        // Home, the origin drops the messages and keeps the vector.
        let origin = MeshState::new(0, 2);
        origin.take_home(ops);
        assert!(read_buffer.is_unique());
        assert_eq!(origin.pool.borrow().len(), 1);
        assert!(origin.pool.borrow()[0].is_empty());
    }

    /// Polls `future` once with a waker that does nothing.
    fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
        let waker = Waker::from(std::sync::Arc::new(Task));
        let mut future = std::pin::pin!(future);
        match future.as_mut().poll(&mut std::task::Context::from_waker(&waker)) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        }
    }

    #[test]
    fn small_returns_wait_for_company_and_a_large_one_takes_them_home() {
        let receiver = MeshState::new(1, 2);
        for _ in 0..MESH_RETURNS_HELD_MAX - 1 {
            receiver.recycle(0, vec![deliver(Bytes::from_static(b"x"))]);
        }
        // Nothing else for shard 0: the small returns are held.
        assert!(poll_once(receiver.next_item_now(0, Hold::Armed)).is_none());
        // One more makes the hold full: they all go.
        receiver.recycle(0, vec![deliver(Bytes::from_static(b"x"))]);
        for _ in 0..MESH_RETURNS_HELD_MAX {
            let item = poll_once(receiver.next_item_now(0, Hold::Armed));
            assert!(matches!(item, Some(Some(MeshItem::Recycle(_)))));
        }
        assert!(poll_once(receiver.next_item_now(0, Hold::Armed)).is_none());
        assert!(receiver.held_since.borrow()[0].is_none(), "nothing held, no timer");
        // A large batch is due at once, and takes the small one held before it along.
        receiver.recycle(0, vec![deliver(Bytes::from_static(b"x"))]);
        let large = (0..=MESH_RETURN_SMALL_OPS).map(|_| deliver(Bytes::from_static(b"y")));
        receiver.recycle(0, large.collect());
        for _ in 0..2 {
            let item = poll_once(receiver.next_item_now(0, Hold::Armed));
            assert!(matches!(item, Some(Some(MeshItem::Recycle(_)))));
        }
        assert!(poll_once(receiver.next_item_now(0, Hold::Armed)).is_none());
    }

    #[test]
    fn a_held_return_goes_home_after_the_hold() {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 * 1024)
            .make()
            .expect("executor");
        executor.run(async {
            let receiver = MeshState::new(1, 2);
            receiver.recycle(0, vec![deliver(Bytes::from_static(b"x"))]);
            let started = std::time::Instant::now();
            let item = receiver.next_item(0).await;
            assert!(matches!(item, MeshItem::Recycle(ref ops) if ops.len() == 1));
            let waited = started.elapsed();
            assert!(waited >= MESH_RETURN_HOLD / 2, "went home after {waited:?}, not held");
            assert!(waited < MESH_RETURN_HOLD * 100, "held {waited:?}");
            // The sender already waits when the return arrives: it still goes home.
            let receiver = std::rc::Rc::new(receiver);
            let sender = glommio::spawn_local({
                let receiver = std::rc::Rc::clone(&receiver);
                async move { receiver.next_item(0).await }
            });
            glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            receiver.recycle(0, vec![deliver(Bytes::from_static(b"z"))]);
            let item = glommio::timer::timeout(std::time::Duration::from_secs(1), async {
                Ok(sender.await)
            })
            .await
            .expect("a return that came while the sender waited was held for good");
            assert!(matches!(item, MeshItem::Recycle(ref ops) if ops.len() == 1));
        });
    }
}
