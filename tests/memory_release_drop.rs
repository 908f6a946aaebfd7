//! When the process's traffic drops from a busy spell to a trickle (so it never goes quiet),
//! each shard hands what the busy spell freed back to the kernel then, once, through the hook
//! the binary installs (mimalloc's `mi_collect` in `isthmus serve`); not while only the trickle
//! runs, and not when the allocator is told to purge at once (`allocator_purge_delay_ms = 0`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

static RELEASES: AtomicU64 = AtomicU64::new(0);

fn hook() {
    RELEASES.fetch_add(1, Ordering::SeqCst);
}

fn nats(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut info = [0u8; 4096];
    let n = s.read(&mut info).unwrap();
    assert!(info[..n].starts_with(b"INFO "), "INFO first");
    s.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n").unwrap();
    let mut pong = [0u8; 6];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"PONG\r\n");
    s
}

/// Publishes one message every 5 ms until `stop`: 50 a sweep, so the process is never quiet.
fn trickle(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let mut s = nats(addr);
    std::thread::spawn(move || {
        let mut sent = 0;
        while !stop.load(Ordering::SeqCst) {
            s.write_all(b"PUB trickle 1\r\nx\r\n").unwrap();
            sent += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        sent
    })
}

/// Publishes `messages` empty messages (no subscriber) as fast as the broker takes them, then
/// waits until it has counted them all; returns how long that took.
fn burst(running: &isthmus::serve::Running, messages: u64) -> Duration {
    let mut s = nats(running.nats_addr());
    let before = common::counter(running, |s| &s.in_msgs);
    let started = Instant::now();
    let chunk = b"PUB burst 0\r\n\r\n".repeat(4096);
    let per_chunk = 4096;
    for _ in 0..messages / per_chunk {
        s.write_all(&chunk).unwrap();
    }
    let sent = messages / per_chunk * per_chunk;
    while common::counter(running, |s| &s.in_msgs) < before + sent {
        assert!(started.elapsed() < Duration::from_secs(30), "the burst was not all counted");
        std::thread::sleep(Duration::from_millis(1));
    }
    started.elapsed()
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_drop_from_busy_to_a_trickle_releases_memory_once() {
    isthmus::serve::set_release_memory(hook);
    // The burst must make at least one 250 ms sweep busy; this many messages do so as long as
    // the broker takes them at 4 x TRAFFIC_BUSY_SWEEP_MIN a second or faster, checked below.
    let messages = isthmus::limits::TRAFFIC_BUSY_SWEEP_MIN * 12;
    let busy_for = |elapsed: Duration| {
        let per_sweep = messages as f64 / elapsed.as_secs_f64() / 4.0;
        eprintln!("burst: {messages} messages in {elapsed:?}, {per_sweep:.0} a sweep");
        assert!(
            per_sweep >= 1.25 * isthmus::limits::TRAFFIC_BUSY_SWEEP_MIN as f64,
            "the burst ran at {per_sweep:.0} messages a sweep: too slow to test a drop"
        );
    };

    let running = common::in_process(1, "");
    let stop = Arc::new(AtomicBool::new(false));
    let trickling = trickle(running.nats_addr(), stop.clone());
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(RELEASES.load(Ordering::SeqCst), 0, "released with only the trickle running");
    busy_for(burst(&running, messages));
    wait_for("a release after the burst", Duration::from_secs(3), || {
        RELEASES.load(Ordering::SeqCst) > 0
    });
    // The trickle went on (never quiet), and a drop releases once, not on every slow sweep.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(RELEASES.load(Ordering::SeqCst), 1, "one release per drop");
    assert_eq!(common::counter(&running, |s| &s.memory_releases), 1);
    stop.store(true, Ordering::SeqCst);
    let trickled = trickling.join().unwrap();
    assert!(trickled > 100, "the trickle published {trickled} messages");
    running.stop();

    // An allocator that purges at once leaves nothing to release.
    RELEASES.store(0, Ordering::SeqCst);
    let running = common::in_process_toml(1, "[server]\nallocator_purge_delay_ms = 0\n");
    let stop = Arc::new(AtomicBool::new(false));
    let trickling = trickle(running.nats_addr(), stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    busy_for(burst(&running, messages));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(RELEASES.load(Ordering::SeqCst), 0, "released with allocator_purge_delay_ms = 0");
    stop.store(true, Ordering::SeqCst);
    trickling.join().unwrap();
    running.stop();
}
