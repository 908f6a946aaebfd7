//! A wave of MQTT connections going dormant makes each shard hand freed memory back through the
//! hook the binary installs (mimalloc's `mi_collect` in `isthmus serve`), on the shard's own
//! thread, and the connections still work afterwards.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static RELEASES: AtomicU64 = AtomicU64::new(0);
static THREADS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn hook() {
    RELEASES.fetch_add(1, Ordering::SeqCst);
    let name = std::thread::current().name().unwrap_or("").to_string();
    THREADS.lock().unwrap().push(name);
}

fn connect(addr: SocketAddr, id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut body = b"\x00\x04MQTT\x04\x02\x00\x3c".to_vec(); // 3.1.1, clean, keep alive 60 s
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    s.write_all(&packet).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    s
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_wave_of_dormant_connections_releases_memory_on_the_shard_thread() {
    isthmus::serve::set_release_memory(hook);
    let running = common::in_process(1, "dormant_after_ms = 300");
    let addr = running.mqtt_addr();
    // Fewer than the threshold: no release.
    let few = isthmus::limits::DORMANT_RELEASE_MIN as usize / 2;
    let mut keep: Vec<TcpStream> = (0..few).map(|i| connect(addr, &format!("few-{i}"))).collect();
    let dormant = || common::counter(&running, |s| &s.mqtt_dormant);
    wait_for("the first connections to go dormant", || dormant() == few as u64);
    std::thread::sleep(Duration::from_millis(600)); // two more sweeps
    assert_eq!(RELEASES.load(Ordering::SeqCst), 0, "released below the threshold");
    // A wave past it: one release (the counter starts again after it).
    let wave = isthmus::limits::DORMANT_RELEASE_MIN as usize;
    keep.extend((0..wave).map(|i| connect(addr, &format!("wave-{i}"))));
    wait_for("the wave to go dormant", || dormant() == (few + wave) as u64);
    wait_for("a release", || RELEASES.load(Ordering::SeqCst) > 0);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(RELEASES.load(Ordering::SeqCst), 1, "one release per wave");
    assert_eq!(common::counter(&running, |s| &s.memory_releases), 1);
    let threads = THREADS.lock().unwrap().clone();
    assert!(threads.iter().all(|t| t.starts_with("shard-")), "called on {threads:?}");
    // A dormant connection still answers: PINGREQ -> PINGRESP.
    let s = &mut keep[few + wave - 1];
    s.write_all(&[0xC0, 0]).unwrap();
    let mut pingresp = [0u8; 2];
    s.read_exact(&mut pingresp).unwrap();
    assert_eq!(pingresp, [0xD0, 0]);
    drop(keep);
    running.stop();
}
