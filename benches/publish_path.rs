//! The NATS message path in-process (`isthmus::shard::path`): PUBs decoded from a read buffer,
//! routed, carried through the mesh when the subscriber is on the other shard, written as MSG
//! into the subscriber's output. No sockets, so it runs under callgrind, whose instruction
//! counts repeat exactly; the broker itself can only be timed here, and its runs spread by 1.5x.
//!
//! `cargo bench --bench publish_path`: ns per message, median of 7, as JSON lines;
//! `BENCH_QUICK=1` one short run. For instruction counts, one pass of one case:
//! `PATH_ONCE=<shards>,<payload>,<messages> valgrind --tool=callgrind <bench binary>`
//! (the binary: `cargo bench --bench publish_path --no-run` prints it); the setup is the same
//! for every case, so compare the totals of two builds or divide the difference by the messages.

mod common;

use common::report;
use isthmus::shard::path::{pubs, Path};

const SUBJECT: &str = "sensors.device42.temperature";

fn main() {
    if let Ok(once) = std::env::var("PATH_ONCE") {
        let n: Vec<usize> = once.split(',').map(|v| v.parse().expect("PATH_ONCE=s,p,n")).collect();
        let input = pubs(SUBJECT, n[1], n[2]);
        let mut path = Path::nats(n[0], SUBJECT);
        let sent = path.run(&input);
        let (routed, delivered) = path.counted();
        assert_eq!((routed, delivered), (n[2] as u64, n[2] as u64));
        println!("{{\"once\":\"{once}\",\"bytes_sent\":{sent}}}");
        return;
    }
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let (runs, count) = if quick { (1, 10_000) } else { (7, 200_000) };
    for shards in [1, 2] {
        for payload in [16, 256] {
            let input = pubs(SUBJECT, payload, count);
            let mut path = Path::nats(shards, SUBJECT);
            report(&format!("nats_path_{shards}shard_{payload}b"), runs, count, || {
                path.run(&input);
            });
            let (routed, delivered) = path.counted();
            assert_eq!(routed, delivered, "every message delivered");
        }
    }
}
