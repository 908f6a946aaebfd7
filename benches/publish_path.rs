//! The NATS message path in-process (`isthmus::shard::path`): PUBs decoded from a read buffer,
//! routed, carried through the mesh when the subscriber is on the other shard, written as MSG
//! into the subscriber's output. No sockets, so it runs under callgrind, whose instruction
//! counts repeat exactly; the broker itself can only be timed here, and its runs spread by 1.5x.
//!
//! `cargo bench --bench publish_path`: ns per message, median of 7, as JSON lines;
//! `BENCH_QUICK=1` one short run. For instruction counts, one pass of one case:
//! `PATH_ONCE=<shards>,<payload>,<messages>,<from>-<to>[,rotate] valgrind --tool=callgrind
//! --toggle-collect='isthmus::shard::path::Path::run' <bench binary>` (from, to: nats or mqtt;
//! `rotate`: 64 subjects in turn to one wildcard subscriber; `fan<K>`: K subscribers)
//! (the binary: `cargo bench --bench publish_path --no-run` prints it); the total divided by
//! the messages is instructions per message.

mod common;

use common::report;
use isthmus::shard::path::{pubs, Client, Path};

const SUBJECT: &str = "sensors.device42.temperature";

fn client(name: &str) -> Client {
    match name {
        "nats" => Client::Nats,
        "mqtt" => Client::Mqtt,
        _ => panic!("nats or mqtt, not {name}"),
    }
}

fn main() {
    if let Ok(once) = std::env::var("PATH_ONCE") {
        let n: Vec<&str> = once.split(',').collect();
        let number =
            |i: usize| -> usize { n[i].parse().expect("PATH_ONCE=shards,payload,n,from-to") };
        let (from, to) = n.get(3).copied().unwrap_or("nats-nats").split_once('-').expect("from-to");
        let (from, to) = (client(from), client(to));
        // A fifth field `rotate`: every message to another of 64 subjects, one wildcard
        // subscriber (the worst case for the match caches' last-subject shortcut).
        let rotate = n.get(4) == Some(&"rotate");
        // Or `fan<K>`: K subscribers of the subject.
        let fan: usize = n
            .get(4)
            .and_then(|f| f.strip_prefix("fan"))
            .map_or(1, |k| k.parse().expect("fan<K>: K subscribers"));
        let (input, filter) = if rotate {
            let subjects: Vec<Vec<u8>> = (0..64)
                .map(|d| pubs(from, &format!("sensors.device{d}.temperature"), number(1), 1))
                .collect();
            let input = (0..number(2)).flat_map(|i| subjects[i % 64].clone()).collect();
            (input, "sensors.*.temperature")
        } else {
            (pubs(from, SUBJECT, number(1), number(2)), SUBJECT)
        };
        let mut path = Path::fan_out(number(0), from, to, filter, fan);
        let sent = path.run(&input);
        let (routed, delivered) = path.counted();
        assert_eq!((routed, delivered), (number(2) as u64, (fan * number(2)) as u64));
        println!("{{\"once\":\"{once}\",\"bytes_sent\":{sent}}}");
        return;
    }
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let (runs, count) = if quick { (1, 10_000) } else { (7, 200_000) };
    let cases = [
        ("nats", "nats", 16),
        ("nats", "nats", 256),
        ("mqtt", "mqtt", 16),
        ("mqtt", "mqtt", 256),
        ("mqtt", "nats", 16),
        ("nats", "mqtt", 16),
    ];
    for shards in [1, 2] {
        for (from, to, payload) in cases {
            let input = pubs(client(from), SUBJECT, payload, count);
            let mut path = Path::new(shards, client(from), client(to), SUBJECT);
            report(&format!("{from}_to_{to}_{shards}shard_{payload}b"), runs, count, || {
                path.run(&input);
            });
            let (routed, delivered) = path.counted();
            assert_eq!(routed, delivered, "every message delivered");
        }
    }
}
