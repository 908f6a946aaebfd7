//! Cost per operation of the NATS codec and the subject trie, as JSON lines.
//!
//! `cargo bench --bench nats_codec` (release profile). Each figure is the median of 7 runs;
//! `BENCH_QUICK=1` does one short run (CI smoke). Numbers go to tuning/results/ by hand with
//! the commit and CPU; on this 2-core VM they are noisy, so compare within one run only.

mod common;

use bytes::BytesMut;
use common::report;
use isthmus::message::Message;
use isthmus::protocol::nats::codec::{self, ClientOp, Limits};
use isthmus::router::local::{LocalRouter, Subscription};
use isthmus::router::trie::Trie;
use std::hint::black_box;

const LIMITS: Limits = Limits { max_payload: 1 << 20, max_control_line: 4096 };

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let runs = if quick { 1 } else { 7 };
    let scale = if quick { 10 } else { 1 };

    let pipelined = pub_stream(10_000, 16);
    report("decode_pub_16b", runs, 10_000, || {
        let mut buf = BytesMut::from(&pipelined[..]);
        let mut n = 0;
        while let Ok(Some(op)) = codec::decode(&mut buf, &LIMITS) {
            black_box(&op);
            n += 1;
        }
        assert_eq!(n, 10_000);
    });

    let message = Message {
        subject: "sensors.device42.temperature".into(),
        reply: "".into(),
        headers: "".into(),
        payload: vec![b'x'; 16].into(),
        meta: Default::default(),
    };
    let mut out = BytesMut::with_capacity(1 << 20);
    report("encode_msg_16b", runs, 10_000, || {
        out.clear();
        for _ in 0..10_000 {
            codec::encode_msg(&mut out, &message, b"17", true);
        }
        black_box(&out);
    });

    for subs in [10_000usize, 100_000 / scale] {
        let mut trie = Trie::default();
        for i in 0..subs {
            trie.values_mut(format!("devices.d{i}.telemetry").as_bytes()).push(i as u32);
        }
        trie.values_mut(b"devices.*.telemetry").push(u32::MAX);
        trie.values_mut(b"devices.>").push(u32::MAX - 1);
        let subjects: Vec<String> =
            (0..1000).map(|i| format!("devices.d{}.telemetry", i * 7 % subs)).collect();
        report(&format!("trie_match_uncached_{subs}_subs"), runs, 1000, || {
            for subject in &subjects {
                let mut found = 0;
                trie.for_each_match(subject.as_bytes(), |_| found += 1);
                assert_eq!(found, 3);
            }
        });
    }

    let mut router = LocalRouter::default();
    for i in 0..10_000u32 {
        router.subscribe(Subscription {
            conn: i,
            sid: "1".into(),
            subject: format!("devices.d{i}.telemetry").into(),
            queue: "".into(),
            max: None,
            delivered: 0,
            mqtt: None,
            deny_filter: false,
        });
    }
    let hot: Vec<String> = (0..100).map(|i| format!("devices.d{i}.telemetry")).collect();
    report("local_match_cached_10000_subs", runs, 10_000, || {
        for _ in 0..100 {
            for subject in &hot {
                black_box(router.matches(subject.as_bytes()));
            }
        }
    });
}

fn pub_stream(count: usize, payload: usize) -> Vec<u8> {
    let mut out = BytesMut::new();
    let op = ClientOp::Pub(Message {
        subject: "sensors.device42.temperature".into(),
        reply: "".into(),
        headers: "".into(),
        payload: vec![b'x'; payload].into(),
        meta: Default::default(),
    });
    for _ in 0..count {
        codec::encode_client_op(&op, &mut out);
    }
    out.to_vec()
}
