//! Dormant connections: an MQTT connection that has been quiet for `mqtt.dormant_after_ms`
//! gives back everything a live connection holds (its two tasks, glommio's readiness source,
//! its read and write buffers, its subject cache) and keeps only its slot, its session and its
//! socket. The socket waits in this shard's epoll set; a helper thread blocks on that set and
//! tells the shard, over a socket pair the shard reads through io_uring, which slots became
//! readable. Output for a dormant connection (a delivery, a keep-alive DISCONNECT, a takeover)
//! wakes it from the shard itself. Either way the shard gives it new tasks and it carries on.
//!
//! Why a thread and epoll: glommio 0.9 has no public way to wait on an arbitrary descriptor
//! without a task and a readiness source per socket, which is what costs memory (about 3 KiB of
//! a 9 KiB idle connection: tests/idle_memory.rs). One epoll registration lives in kernel
//! memory instead. The thread only blocks in `epoll_wait` and forwards slot numbers; it never
//! touches a connection.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Readiness events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// Data word of the stop eventfd's registration (no slot has it: slots are below 2^32).
const STOP: u64 = u64::MAX;

/// One shard's epoll set of dormant sockets and the thread that waits on it.
pub struct Dormancy {
    epoll: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
    stop_fd: OwnedFd,
    woken: crossbeam_channel::Receiver<u64>,
}

impl std::fmt::Debug for Dormancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dormancy").field("epoll", &self.epoll.as_raw_fd()).finish()
    }
}

/// The data word of a dormant connection's registration: its slot and the low bits of its
/// connection id, so that an event for a slot that was reused since is recognised and ignored.
pub fn token(slot: u32, cid: u64) -> u64 {
    u64::from(slot) | (cid << 32)
}

/// The slot and connection-id bits of a token.
pub fn untoken(token: u64) -> (u32, u32) {
    (token as u32, (token >> 32) as u32)
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl Dormancy {
    /// Creates the epoll set and starts its thread (named `isthmus-dormant-<shard>`). Returns
    /// the shard's end of the wake-up socket pair: one byte arrives on it whenever woken slots
    /// are waiting in [`Dormancy::take_woken`].
    #[allow(unsafe_code)]
    pub fn start(shard: usize) -> io::Result<(Dormancy, UnixStream)> {
        // SAFETY: plain syscalls; the returned descriptors are checked and owned at once.
        let epoll =
            unsafe { OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?) };
        // SAFETY: as above.
        let stop_fd = unsafe {
            OwnedFd::from_raw_fd(check(libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?)
        };
        add(epoll.as_raw_fd(), stop_fd.as_raw_fd(), STOP, libc::EPOLLIN as u32)?;
        let (shard_end, thread_end) = UnixStream::pair()?;
        shard_end.set_nonblocking(true)?;
        thread_end.set_nonblocking(true)?;
        let (sender, woken) = crossbeam_channel::unbounded();
        let epoll = Arc::new(epoll);
        let stop = Arc::new(AtomicBool::new(false));
        let (thread_epoll, thread_stop) = (Arc::clone(&epoll), Arc::clone(&stop));
        std::thread::Builder::new()
            .name(format!("isthmus-dormant-{shard}"))
            .spawn(move || wait_loop(&thread_epoll, &thread_stop, &sender, &thread_end))?;
        Ok((Dormancy { epoll, stop, stop_fd, woken }, shard_end))
    }

    /// Puts `fd` in the set, reported once (`EPOLLONESHOT`) when readable or hung up.
    pub fn watch(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let events = libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT;
        add(self.epoll.as_raw_fd(), fd, token, events as u32)
    }

    /// Takes `fd` out of the set (before its socket goes back to io_uring).
    #[allow(unsafe_code)]
    pub fn unwatch(&self, fd: RawFd) {
        let mut event = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: both descriptors are open; the kernel only reads `event` (ignored for DEL).
        let _ =
            unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut event) };
    }

    /// Reports `fd` once more when it turns readable (after [`Dormancy::watch`] reported it).
    #[allow(unsafe_code)]
    pub fn rearm(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let events = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLONESHOT) as u32;
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: both descriptors are open; `event` lives across the call.
        check(unsafe {
            libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut event)
        })
        .map(drop)
    }

    /// Tokens of the connections found readable since the last call.
    pub fn take_woken(&self) -> crossbeam_channel::TryIter<'_, u64> {
        self.woken.try_iter()
    }
}

impl Drop for Dormancy {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd.
        let _ = unsafe { libc::write(self.stop_fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }
}

#[allow(unsafe_code)]
fn add(epoll: RawFd, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
    let mut event = libc::epoll_event { events, u64: token };
    // SAFETY: both descriptors are open; `event` lives across the call.
    check(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) }).map(drop)
}

/// The thread: waits for readiness, forwards tokens, pokes the shard.
#[allow(unsafe_code)]
fn wait_loop(
    epoll: &OwnedFd,
    stop: &AtomicBool,
    sender: &crossbeam_channel::Sender<u64>,
    poke: &UnixStream,
) {
    use std::io::Write;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `events` has room for EVENTS_PER_WAIT entries and outlives the call.
        let n = unsafe {
            libc::epoll_wait(epoll.as_raw_fd(), events.as_mut_ptr(), EVENTS_PER_WAIT as i32, -1)
        };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let mut any = false;
        for event in &events[..n as usize] {
            let token = event.u64;
            if token == STOP {
                return;
            }
            if sender.send(token).is_err() {
                return;
            }
            any = true;
        }
        if any {
            // One byte per wake-up; a full pair means a wake-up is already pending.
            let _ = (&*poke).write(&[1]);
        }
    }
}

/// What a non-blocking read of a dormant socket found.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// These many bytes were read into the buffer.
    Bytes(usize),
    /// Nothing to read after all (a spurious report).
    Nothing,
    /// End of stream or an error: the connection is going away.
    Closed,
}

/// Reads what is waiting on a dormant socket, without blocking.
#[allow(unsafe_code)]
pub fn read_now(fd: RawFd, buf: &mut [u8]) -> Input {
    // SAFETY: `buf` is valid for writes of its length for the duration of the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    match n {
        0 => Input::Closed,
        n if n > 0 => Input::Bytes(n as usize),
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Input::Nothing,
            _ => Input::Closed,
        },
    }
}

/// Writes as much of `bytes` as the socket takes now; returns how much that was.
#[allow(unsafe_code)]
pub fn write_now(fd: RawFd, bytes: &[u8]) -> usize {
    // SAFETY: `bytes` is valid for reads of its length for the duration of the call.
    let n = unsafe {
        libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    };
    n.max(0) as usize
}
