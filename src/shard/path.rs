//! The message path run in-process, without sockets, executors or tasks: a NATS or MQTT
//! publisher's read buffer goes through its reader's decode loop ([`nats::next_op`] and
//! [`nats::handle`], or the
//! MQTT reader's `on_publish`), the mesh batches are carried to the receiving shard and back
//! home by hand, and the subscriber's output is taken as its writer would take it. `benches/publish_path.rs` times it, and callgrind counts its
//! instructions (callgrind cannot follow glommio's io_uring, and this VM has no hardware
//! counters, so the broker itself can only be timed, with a run-to-run spread of 1.5x).
//!
//! What it leaves out: the read and write system calls, the wake-ups of parked shards and the
//! cache lines the two cores pass to each other (both shards run on the calling thread).

use super::nats::{self, Next};
use super::Protocol;
use super::{Identity, Shard};
use crate::config::Config;
use crate::protocol::nats::codec::ClientOp;
use crate::stats::ShardStats;
use bytes::{Bytes, BytesMut};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Bytes handed to the decoder per read, as the broker's largest read window.
pub const READ_BYTES: usize = crate::limits::READ_CHUNK_BYTES;

/// A client's protocol on the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// A NATS client (CONNECT with headers).
    Nats,
    /// An MQTT 3.1.1 client, QoS 0.
    Mqtt,
}

/// A publisher on shard 0 and one or more subscribers of `subject` (its MQTT form for an
/// MQTT subscriber) on the last shard.
pub struct Path {
    shards: Vec<Shard>,
    publisher: u32,
    /// The MQTT publisher's packet loop state; `None` for a NATS publisher.
    mqtt_state: Option<super::mqtt::ConnState>,
    /// Each subscriber's slot and its writer buffer, swapped with its outbound buffer as the
    /// writer does.
    subscribers: Vec<(u32, BytesMut)>,
    read: BytesMut,
}

impl Path {
    /// A NATS publisher and subscriber on one shard (`shards` 1) or two, through the mesh.
    pub fn nats(shards: usize, subject: &str) -> Path {
        Path::new(shards, Client::Nats, Client::Nats, subject)
    }

    /// `from` publishes, `to` subscribes to `subject` (a NATS filter; an MQTT client uses its
    /// MQTT form), on one shard (`shards` 1) or two, through the mesh.
    pub fn new(shards: usize, from: Client, to: Client, subject: &str) -> Path {
        Path::fan_out(shards, from, to, subject, 1)
    }

    /// [`Path::new`] with `subscribers` subscribers of `subject`, all on the last shard.
    pub fn fan_out(
        shards: usize,
        from: Client,
        to: Client,
        subject: &str,
        subscribers: usize,
    ) -> Path {
        assert!((1..=2).contains(&shards));
        assert!(subscribers >= 1);
        let config = Arc::new(Config::from_toml("").expect("default config"));
        let stats: Vec<Arc<ShardStats>> = (0..shards).map(|_| Arc::default()).collect();
        let addr = "127.0.0.1:4222".parse().expect("address");
        let identity = Arc::new(Identity {
            server_id: "path".into(),
            name: "path".into(),
            nats_addr: addr,
            mqtt_addr: "127.0.0.1:1883".parse().expect("address"),
            mqtt_tls_addr: None,
            nats_tls: None,
            mqtt_tls: None,
            retain_seq: Default::default(),
            shutdown: Default::default(),
            interest_issued: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            auth: None,
            shard_stats: stats.clone(),
            moves_in_flight: (0..shards).map(|_| AtomicU64::new(0)).collect(),
        });
        let shards: Vec<Shard> = (0..shards)
            .map(|id| {
                let (config, identity) = (Arc::clone(&config), Arc::clone(&identity));
                Shard::new(id, stats.len(), config, identity, Arc::clone(&stats[id]))
            })
            .collect();
        let last = shards.len() - 1;
        let open = |shard: &Shard, client: Client, id: &str| -> (u32, Option<_>) {
            match client {
                Client::Nats => {
                    let (slot, _) = shard.open_conn(addr, Protocol::Nats);
                    let connect = br#"{"verbose":false,"pedantic":false,"headers":true}"#;
                    let connect = ClientOp::Connect(Bytes::from_static(connect));
                    assert!(matches!(nats::handle(shard, slot, connect), Next::Continue));
                    (slot, None)
                }
                Client::Mqtt => {
                    let (slot, _) = shard.open_conn(addr, Protocol::Mqtt);
                    (slot, Some(super::mqtt::path_attach(shard, slot, id)))
                }
            }
        };
        let (publisher, mqtt_publisher) = open(&shards[0], from, "publisher");
        let subscribers = (0..subscribers)
            .map(|i| {
                let (subscriber, mqtt_subscriber) =
                    open(&shards[last], to, &format!("subscriber-{i}"));
                match mqtt_subscriber {
                    None => {
                        let sub = ClientOp::Sub {
                            subject: Bytes::copy_from_slice(subject.as_bytes()),
                            queue: Bytes::new(),
                            sid: Bytes::from_static(b"1"),
                        };
                        let handled = nats::handle(&shards[last], subscriber, sub);
                        assert!(matches!(handled, Next::Continue));
                    }
                    Some((session, _)) => {
                        let filter = subject.replace('.', "/").replace('*', "+").replace('>', "#");
                        super::mqtt::path_subscribe(&shards[last], session, &filter)
                    }
                }
                (subscriber, BytesMut::new())
            })
            .collect();
        let mqtt_state = mqtt_publisher.map(|(_, state)| state);
        let read = BytesMut::new();
        let mut path = Path { shards, publisher, mqtt_state, subscribers, read };
        path.carry();
        path.take_output();
        path
    }

    /// Feeds `input` (whole publishes from [`pubs`]) to the publisher in reads of
    /// [`READ_BYTES`], as its reader loop handles them, carrying the mesh after each read.
    /// Returns the bytes the subscribers were sent.
    pub fn run(&mut self, input: &[u8]) -> usize {
        let mut sent = 0;
        for chunk in input.chunks(READ_BYTES) {
            self.read_one(chunk);
            sent += self.take_output();
        }
        sent
    }

    /// Handles one read of whole publishes and carries the mesh; the subscribers' writers do
    /// not run.
    fn read_one(&mut self, chunk: &[u8]) {
        self.read.extend_from_slice(chunk);
        let shard = &self.shards[0];
        match &mut self.mqtt_state {
            Some(state) => super::mqtt::path_publish(shard, self.publisher, state, &mut self.read),
            None => {
                while let Some(op) =
                    nats::next_op(shard, self.publisher, &mut self.read).expect("valid input")
                {
                    match nats::handle(shard, self.publisher, op) {
                        Next::Continue => {}
                        _ => panic!("the path's publishes neither wait nor end the connection"),
                    }
                }
            }
        }
        self.carry();
    }

    /// Moves every staged batch to its shard and every return back home, until none is left.
    fn carry(&self) {
        loop {
            let mut moved = false;
            for shard in &self.shards {
                shard.mesh.stage_all();
            }
            for (from, sender) in self.shards.iter().enumerate() {
                for (to, receiver) in self.shards.iter().enumerate().filter(|(to, _)| *to != from) {
                    while let Some(mut ops) = sender.mesh.take_staged(to) {
                        receiver.receive(from, &mut ops);
                        receiver.mesh.recycle(from, ops);
                        moved = true;
                    }
                    for ops in receiver.mesh.take_returns(from) {
                        sender.mesh.take_home(ops);
                        moved = true;
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Takes each subscriber's output as its writer would (`Shard::take_output`, then
    /// `conn::recycle_written` once the socket took it all); returns their total length.
    fn take_output(&mut self) -> usize {
        let shard = &self.shards[self.shards.len() - 1];
        let mut n = 0;
        for (subscriber, spare) in &mut self.subscribers {
            n += shard.with_conn(*subscriber, |c| {
                std::mem::swap(&mut c.out, spare);
                c.queued_msgs = 0;
                c.writer_woken = false;
                spare.len()
            });
            super::conn::recycle_written(spare);
        }
        n
    }

    /// Messages routed (publisher's shard) and delivered (subscriber's shard) so far, from the
    /// shards' counters.
    pub fn counted(&self) -> (u64, u64) {
        let stats = |i: usize| &self.shards[i].stats;
        let load = |a: &AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        (load(&stats(0).in_msgs), load(&stats(self.shards.len() - 1).out_msgs))
    }
}

/// `count` publishes of `payload` bytes to `subject` (NATS spelling), as one `client`'s
/// byte stream: NATS PUBs, or MQTT QoS 0 PUBLISHes to the subject's MQTT form.
pub fn pubs(client: Client, subject: &str, payload: usize, count: usize) -> Vec<u8> {
    let mut one = match client {
        Client::Nats => format!("PUB {subject} {payload}\r\n").into_bytes(),
        Client::Mqtt => {
            let topic = subject.replace('.', "/");
            let mut remaining = 2 + topic.len() + payload;
            let mut head = vec![0x30];
            loop {
                let byte = (remaining % 128) as u8;
                remaining /= 128;
                head.push(if remaining > 0 { byte | 0x80 } else { byte });
                if remaining == 0 {
                    break;
                }
            }
            head.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            head.extend_from_slice(topic.as_bytes());
            head
        }
    };
    one.resize(one.len() + payload, b'x');
    if client == Client::Nats {
        one.extend_from_slice(b"\r\n");
    }
    one.repeat(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reaches_the_subscriber_on_one_shard_and_across_two() {
        use Client::{Mqtt, Nats};
        for (from, to) in [(Nats, Nats), (Mqtt, Mqtt), (Mqtt, Nats), (Nats, Mqtt)] {
            for shards in [1, 2] {
                for payload in [0, 16, 3000] {
                    let case = format!("{from:?} -> {to:?}, {shards} shards, {payload} B");
                    let one =
                        Path::new(shards, from, to, "a.b").run(&pubs(from, "a.b", payload, 1));
                    assert!(one > payload, "{case}: {one} bytes for one message");
                    // More than one read, and a publish split between two reads.
                    let count = 2 * READ_BYTES / (payload + 12) + 7;
                    let mut path = Path::new(shards, from, to, "a.b");
                    let sent = path.run(&pubs(from, "a.b", payload, count));
                    assert_eq!(sent, count * one, "{case}");
                    assert_eq!(path.counted(), (count as u64, count as u64), "{case}");
                }
            }
        }
    }

    #[test]
    fn every_subscriber_of_a_fan_out_gets_every_message() {
        use Client::{Mqtt, Nats};
        for (from, to) in [(Nats, Nats), (Mqtt, Mqtt), (Nats, Mqtt)] {
            for shards in [1, 2] {
                for payload in [0, 16, 200, 3000] {
                    let case = format!("{from:?} -> 8 {to:?}, {shards} shards, {payload} B");
                    let one =
                        Path::new(shards, from, to, "a.b").run(&pubs(from, "a.b", payload, 1));
                    let count = 2 * READ_BYTES / (payload + 12) + 7;
                    let mut path = Path::fan_out(shards, from, to, "a.b", 8);
                    let sent = path.run(&pubs(from, "a.b", payload, count));
                    assert_eq!(sent, 8 * count * one, "{case}");
                    assert_eq!(path.counted(), (count as u64, 8 * count as u64), "{case}");
                }
            }
        }
    }

    /// A NATS subscriber whose writer does not run stalls its producer once NATS_STALL_BYTES_MAX
    /// of output is pending, not at 3/4 of the default max_pending (48 MiB), and is not cut.
    #[test]
    fn a_nats_consumer_behind_by_the_stall_cap_stalls_its_producer() {
        let cap = crate::limits::NATS_STALL_BYTES_MAX as usize;
        let mut path = Path::new(1, Client::Nats, Client::Nats, "a.b");
        let input = pubs(Client::Nats, "a.b", 256, 2 * cap / 256);
        let subscriber = path.subscribers[0].0;
        let state = |path: &Path| {
            path.shards[0].with_conn(subscriber, |c| (c.out.len(), c.stalled, c.closing))
        };
        let mut stalled_at = None;
        for read in input.chunks(READ_BYTES) {
            path.read_one(read);
            let (pending, stalled, closing) = state(&path);
            assert!(!closing, "cut as a slow consumer at {pending} bytes");
            assert_eq!(stalled, pending > cap, "{pending} bytes pending");
            if stalled && stalled_at.is_none() {
                stalled_at = Some(pending);
            }
        }
        let at = stalled_at.expect("the producer was never stalled");
        assert!(at <= cap + 2 * READ_BYTES, "stalled at {at} bytes");
    }

    /// What full reads deliver fits the subscriber's outbound buffers, so a busy subscriber
    /// keeps them: neither is given back after a write and grown again on the next read
    /// (`limits::OUTBOUND_IDLE_BYTES_MAX`). Full reads of small NATS messages deliver more
    /// bytes than they read (MSG carries a sid).
    #[test]
    fn a_busy_subscriber_keeps_its_outbound_buffers_between_reads() {
        use Client::{Mqtt, Nats};
        for (client, payload) in [(Nats, 16), (Nats, 256), (Mqtt, 16), (Mqtt, 256)] {
            let mut path = Path::new(1, client, client, "a.b");
            let input = pubs(client, "a.b", payload, 8 * READ_BYTES / payload);
            let mut seen = Vec::new();
            for read in input.chunks(READ_BYTES).take(6) {
                let sent = path.run(read);
                let (subscriber, spare) = &path.subscribers[0];
                let out = path.shards[0].with_conn(*subscriber, |c| c.out.capacity());
                seen.push((sent, spare.capacity(), out));
            }
            let case = format!("{client:?} {payload} B: (sent, writer's, outbound) {seen:?}");
            assert!(seen.iter().all(|&(sent, _, _)| sent > READ_BYTES / 2), "{case}");
            // The two buffers take turns; after the first two reads neither changes.
            let (a, b) = ((seen[2].1, seen[2].2), (seen[3].1, seen[3].2));
            assert!(a.0 >= seen[2].0 && b.0 >= seen[3].0, "{case}");
            for (i, &(_, spare, out)) in seen.iter().enumerate().skip(2) {
                assert_eq!((spare, out), if i % 2 == 0 { a } else { b }, "{case}");
            }
        }
    }
}
