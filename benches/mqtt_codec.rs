//! Cost per operation of the MQTT codec and the MQTT <-> NATS subject mapping, as JSON lines.
//!
//! `cargo bench --bench mqtt_codec` (release profile). Each figure is the median of 7 runs;
//! `BENCH_QUICK=1` does one short run (CI smoke). On this 2-core VM the numbers are noisy:
//! compare within one run only, and record them with the commit and CPU.

mod common;

use bytes::{Bytes, BytesMut};
use common::report;
use isthmus::protocol::mqtt::codec::{self, PublishHeader};
use isthmus::protocol::mqtt::packet::{Packet, Publish, PublishProperties, QoS, Version};
use isthmus::protocol::subject;
use std::hint::black_box;

const MAX_PACKET: u32 = 1 << 20;
const TOPIC: &[u8] = b"sensors/device42/temperature";

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    let runs = if quick { 1 } else { 7 };
    let ops = if quick { 1_000 } else { 10_000 };

    for (name, version, properties) in [
        ("decode_publish_v311_16b", Version::V3_1_1, PublishProperties::default()),
        ("decode_publish_v5_16b", Version::V5_0, PublishProperties::default()),
        ("decode_publish_v5_16b_user_property", Version::V5_0, user_property()),
    ] {
        let stream = publish_stream(ops, version, properties);
        report(name, runs, ops, || {
            let mut buf = BytesMut::from(&stream[..]);
            let mut n = 0;
            while let Ok(Some(packet)) = codec::decode(&mut buf, version, MAX_PACKET) {
                black_box(&packet);
                n += 1;
            }
            assert_eq!(n, ops);
        });
    }

    let payload = [b'x'; 16];
    let mut out = BytesMut::with_capacity(1 << 20);
    for (name, version, properties) in [
        ("encode_publish_v311_16b", Version::V3_1_1, PublishProperties::default()),
        ("encode_publish_v5_16b_subscription_id", Version::V5_0, subscription_id()),
    ] {
        report(name, runs, ops, || {
            out.clear();
            let header =
                PublishHeader { dup: false, qos: QoS::AtLeastOnce, retain: false, packet_id: 7 };
            for _ in 0..ops {
                codec::encode_publish(&mut out, version, header, TOPIC, &properties, &payload);
            }
            black_box(&out);
        });
    }
    // What the broker writes to a 3.1.1 subscriber: no property set at all.
    report("encode_publish_v3_16b", runs, ops, || {
        out.clear();
        let header =
            PublishHeader { dup: false, qos: QoS::AtLeastOnce, retain: false, packet_id: 7 };
        for _ in 0..ops {
            codec::encode_publish_v3(&mut out, header, TOPIC, &payload);
        }
        black_box(&out);
    });

    let mut arena = BytesMut::with_capacity(1 << 20);
    report("topic_to_subject_3_levels", runs, ops, || {
        arena.clear();
        for _ in 0..ops {
            let translated = subject::mqtt_topic_to_subject_into(TOPIC, &mut arena);
            black_box(translated.expect("valid topic"));
        }
    });
    report("subject_to_topic_3_levels", runs, ops, || {
        arena.clear();
        for _ in 0..ops {
            let translated =
                subject::subject_to_mqtt_topic_into(b"sensors.device42.temperature", &mut arena);
            black_box(translated.expect("has a topic"));
        }
    });
    report("filter_to_subject_wildcards", runs, ops, || {
        for _ in 0..ops {
            black_box(subject::mqtt_filter_to_subject(b"sensors/+/temperature/#").expect("valid"));
        }
    });
}

fn user_property() -> PublishProperties {
    PublishProperties { user_properties: vec![("unit".into(), "C".into())], ..Default::default() }
}

fn subscription_id() -> PublishProperties {
    PublishProperties { subscription_identifiers: vec![7], ..Default::default() }
}

fn publish_stream(count: usize, version: Version, properties: PublishProperties) -> Vec<u8> {
    let mut out = BytesMut::new();
    let packet = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: Bytes::from_static(TOPIC),
        packet_id: 7,
        payload: Bytes::from_static(&[b'x'; 16]),
        topic_alias: None,
        properties: (properties != PublishProperties::default()).then(|| Box::new(properties)),
    });
    for _ in 0..count {
        codec::encode(&packet, version, &mut out);
    }
    out.to_vec()
}
