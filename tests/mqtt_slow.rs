//! Slow MQTT subscribers must cost only themselves: QoS 0 deliveries over
//! `max_pending_bytes` and QoS 1 deliveries over `max_queued_messages` are dropped and
//! counted, while the publisher and a fast subscriber of the same topic carry on. A NATS
//! subscriber that is behind slows an MQTT publisher down instead (as it does NATS ones).
//!
//! The broker runs in this process so its counters can be read (isthmus only).

mod common;

use std::time::Duration;
use tokio::io::AsyncWriteExt;

use bytes::BytesMut;
use common::mqtt::*;
use common::{counter, within};
use isthmus::protocol::mqtt::codec::encode;
use isthmus::protocol::mqtt::packet::*;

const TEST_LIMIT: Duration = Duration::from_secs(10);

fn broker(mqtt_toml: &str) -> isthmus::serve::Running {
    common::in_process(1, mqtt_toml)
}

/// The payload of message `i`: its number, padded to `size` bytes.
fn payload(i: usize, size: usize) -> Vec<u8> {
    let mut bytes = format!("{i:08}").into_bytes();
    bytes.resize(size, b'.');
    bytes
}

fn index(payload: &[u8]) -> usize {
    std::str::from_utf8(&payload[..8]).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_to_a_subscriber_that_never_reads_is_dropped_and_counted() {
    const N: usize = 50_000;
    const SIZE: usize = 1024;
    const BATCH: usize = 100;
    if common::peer() != common::Peer::Isthmus {
        eprintln!("note: in-process isthmus test; skipped with ISTHMUS_TEST_PEER set");
        return;
    }
    let running = broker("max_pending_bytes = 262144\n");
    let addr = running.mqtt_addr().to_string();
    within(TEST_LIMIT, async {
        let topic = "slow/qos0";
        // Never read: a 4 KiB receive buffer fills at once, then the broker's pending bytes.
        let mut slow = RawMqtt::connect_small_rcvbuf(&addr, 4096).await;
        slow.version = Version::V3_1_1;
        slow.send(&Packet::Connect(Box::new(connect_packet(Version::V3_1_1, "slow0", true)))).await;
        assert!(matches!(slow.expect_packet(PACKET_TIMEOUT).await, Packet::ConnAck(_)));
        assert_eq!(slow.subscribe(topic, QoS::AtMostOnce).await, vec![ReasonCode(0)]);
        let (mut fast, _) = RawMqtt::connect_as(&addr, Version::V3_1_1, "fast0", true).await;
        fast.subscribe(topic, QoS::AtMostOnce).await;
        let (mut publisher, _) = RawMqtt::connect_as(&addr, Version::V3_1_1, "pub0", true).await;

        // The publisher runs in batches that the fast subscriber drains before the next one,
        // so the fast subscriber is never over max_pending_bytes itself.
        let mut received = 0;
        let mut out = BytesMut::new();
        for batch in 0..N / BATCH {
            out.clear();
            for i in batch * BATCH..(batch + 1) * BATCH {
                let publish = publish_packet(topic, QoS::AtMostOnce, 0, &payload(i, SIZE));
                encode(&Packet::Publish(publish), Version::V3_1_1, &mut out);
            }
            publisher.send_bytes(&out).await;
            while received < (batch + 1) * BATCH {
                let publish = fast.expect_publish(PACKET_TIMEOUT).await;
                assert_eq!(index(&publish.payload), received, "fast subscriber lost or reordered");
                assert_eq!(publish.payload.len(), SIZE);
                received += 1;
            }
        }
        assert_eq!(received, N);
        let dropped = counter(&running, |s| &s.mqtt_dropped_qos0);
        assert!(dropped > 0, "no QoS 0 delivery to the stalled subscriber was dropped");
        // Everything not delivered to the slow subscriber's socket was counted: what it can
        // have received is bounded by its buffers plus max_pending_bytes (a few MiB).
        assert!(dropped as usize >= N - 8 * 1024 * 1024 / SIZE, "only {dropped} of {N} dropped");
        fast.expect_nothing(QUIET).await;
        drop(slow);
    })
    .await;
    running.stop();
}

/// A publisher whose socket always has data (every read fills the window) must not keep the
/// writers of its own shard from running: a QoS 0 subscriber there that reads as fast as it
/// can gets the whole burst, byte for byte. glommio reads a ready socket without returning
/// to the executor, so before readers yielded after a full read the subscriber's writer ran
/// only after the publisher's whole burst and every delivery past `max_pending_bytes` was
/// dropped (`isthmus-loadtest mqtt-pubsub --size 256` on one shard: 31,739 of 500,000, one
/// 8 MiB bound's worth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_subscriber_on_the_publishers_shard_gets_a_whole_burst() {
    let running = common::in_process(1, "max_pending_bytes = 262144\n");
    whole_burst(&running, "burst-sub", "burst-pub").await;
    running.stop();
}

/// The same across shards: the subscriber's shard takes the publisher's batches from the
/// mesh, and taking a waiting batch does not return to the executor either (before its
/// receiver yielded after each batch: 470,687 of 500,000 at 256 B, a split pair).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_subscriber_on_another_shard_gets_a_whole_burst() {
    use isthmus::protocol::mqtt::interop::home_shard;
    let toml = "[server]\ncolocate_publishers = false\n[mqtt]\nmax_pending_bytes = 262144\n";
    let running = common::in_process_toml(2, toml);
    let at_home = |shard: usize, prefix: &str| {
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .find(|id| home_shard(id.as_bytes(), 2) == shard)
            .unwrap()
    };
    whole_burst(&running, &at_home(0, "burst-sub"), &at_home(1, "burst-pub")).await;
    assert_eq!(counter(&running, |s| &s.mqtt_moves), 0, "the pair stayed split");
    running.stop();
}

/// Publishes 20,000 QoS 0 messages of 256 B (5 MiB, twenty times `max_pending_bytes`) in one
/// write and checks that the subscriber, reading all the while, gets every byte.
async fn whole_burst(running: &isthmus::serve::Running, sub_id: &str, pub_id: &str) {
    use tokio::io::AsyncReadExt;
    const N: usize = 20_000;
    const SIZE: usize = 256;
    if common::peer() != common::Peer::Isthmus {
        eprintln!("note: in-process isthmus test; skipped with ISTHMUS_TEST_PEER set");
        return;
    }
    let addr = running.mqtt_addr().to_string();
    within(TEST_LIMIT, async {
        let topic = "burst/qos0";
        let (mut sub, _) = RawMqtt::connect_as(&addr, Version::V3_1_1, sub_id, true).await;
        assert_eq!(sub.subscribe(topic, QoS::AtMostOnce).await, vec![ReasonCode(0)]);
        let mut sub = sub.into_stream();
        let (mut publisher, _) = RawMqtt::connect_as(&addr, Version::V3_1_1, pub_id, true).await;
        // A 3.1.1 QoS 0 PUBLISH goes out as it came in, so the subscriber's bytes must be
        // exactly the publisher's.
        let mut out = BytesMut::new();
        for i in 0..N {
            let publish = publish_packet(topic, QoS::AtMostOnce, 0, &payload(i, SIZE));
            encode(&Packet::Publish(publish), Version::V3_1_1, &mut out);
        }
        let sent = out.clone();
        let sending = tokio::spawn(async move {
            publisher.send_bytes(&out).await;
            publisher
        });
        let mut received = Vec::with_capacity(sent.len());
        let mut chunk = vec![0u8; 256 * 1024];
        while received.len() < sent.len() {
            match tokio::time::timeout(QUIET, sub.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => received.extend_from_slice(&chunk[..n]),
                _ => break,
            }
        }
        let dropped = counter(running, |s| &s.mqtt_dropped_qos0);
        assert_eq!(
            received.len(),
            sent.len(),
            "the subscriber got {} of {} bytes; {dropped} deliveries dropped",
            received.len(),
            sent.len()
        );
        assert!(received == sent[..], "the subscriber's bytes differ from what was published");
        assert_eq!(dropped, 0);
        let _publisher = sending.await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_to_a_subscriber_that_never_acknowledges_is_dropped_past_the_queue() {
    const N: usize = 2000;
    const INFLIGHT: usize = 16;
    const QUEUED: usize = 32;
    const BATCH: usize = 16;
    if common::peer() != common::Peer::Isthmus {
        eprintln!("note: in-process isthmus test; skipped with ISTHMUS_TEST_PEER set");
        return;
    }
    let running = broker(&format!("max_inflight = {INFLIGHT}\nmax_queued_messages = {QUEUED}\n"));
    let addr = running.mqtt_addr().to_string();
    within(TEST_LIMIT, async {
        let topic = "slow/qos1";
        let (mut slow, _) = RawMqtt::connect_as(&addr, Version::V5_0, "slow1", true).await;
        assert_eq!(slow.subscribe(topic, QoS::AtLeastOnce).await, vec![ReasonCode(1)]);
        let (mut fast, _) = RawMqtt::connect_as(&addr, Version::V5_0, "fast1", true).await;
        fast.subscribe(topic, QoS::AtLeastOnce).await;
        let (mut publisher, _) = RawMqtt::connect_as(&addr, Version::V5_0, "pub1", true).await;

        let started = tokio::time::Instant::now();
        let mut out = BytesMut::new();
        let mut received = 0;
        for batch in 0..N / BATCH {
            out.clear();
            let first_id = (batch * BATCH + 1) as u16;
            for i in batch * BATCH..(batch + 1) * BATCH {
                let packet_id = (i + 1) as u16;
                let publish = publish_packet(topic, QoS::AtLeastOnce, packet_id, &payload(i, 64));
                encode(&Packet::Publish(publish), Version::V5_0, &mut out);
            }
            publisher.send_bytes(&out).await;
            // The publisher is acknowledged whatever the slow subscriber does.
            for k in 0..BATCH as u16 {
                match publisher.expect_packet(PACKET_TIMEOUT).await {
                    Packet::PubAck(puback) => assert_eq!(puback.packet_id, first_id + k),
                    other => panic!("publisher expected PUBACK, got {other:?}"),
                }
            }
            while received < (batch + 1) * BATCH {
                let publish = fast.expect_publish(PACKET_TIMEOUT).await;
                assert_eq!(index(&publish.payload), received, "fast subscriber lost or reordered");
                fast.send(&Packet::PubAck(ack(publish.packet_id))).await;
                received += 1;
            }
        }
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "publisher took {elapsed:?}: stalled?");
        assert_eq!(received, N);

        let dropped = counter(&running, |s| &s.mqtt_dropped_queue_full);
        assert_eq!(
            dropped as usize,
            N - INFLIGHT - QUEUED,
            "{INFLIGHT} in flight and {QUEUED} queued for the slow subscriber, the rest dropped"
        );
        // The slow subscriber holds exactly the inflight window ...
        let mut window = Vec::new();
        for _ in 0..INFLIGHT {
            window.push(slow.expect_publish(PACKET_TIMEOUT).await);
        }
        slow.expect_nothing(QUIET).await;
        // ... and acknowledging it releases the queued ones, oldest first; nothing else.
        let mut got: Vec<usize> = window.iter().map(|p| index(&p.payload)).collect();
        for publish in &window {
            slow.send(&Packet::PubAck(ack(publish.packet_id))).await;
        }
        while got.len() < INFLIGHT + QUEUED {
            let publish = slow.expect_publish(PACKET_TIMEOUT).await;
            got.push(index(&publish.payload));
            slow.send(&Packet::PubAck(ack(publish.packet_id))).await;
        }
        assert_eq!(got, (0..INFLIGHT + QUEUED).collect::<Vec<_>>());
        slow.expect_nothing(QUIET).await;
    })
    .await;
    running.stop();
}

/// An MQTT publisher on the shard of a NATS subscriber that is behind waits for it, as NATS
/// publishers do (up to the stall budget per read burst), instead of pushing it past
/// max_pending and getting it cut as a slow consumer. Seen in `isthmus-loadtest mqtt-to-nats`:
/// with both clients on one shard the NATS subscriber was cut in about a third of the runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_publisher_waits_for_a_nats_subscriber_that_is_behind() {
    use tokio::io::AsyncReadExt;
    const N: usize = 16_000;
    const SIZE: usize = 1000; // 16 MB: more than max_pending and the kernel's buffers hold
                              // 4 MiB: the writer reports progress only when the socket turns writable again, and the
                              // stall mark (3/4) must leave room for the bursts read meanwhile (a 100 ms budget each).
    let toml = "[nats]\nmax_pending = 4194304\nmax_payload = 65536\n";
    let running = common::in_process_toml(1, toml);
    let nats_addr = running.nats_addr().to_string();
    let mqtt_addr = running.mqtt_addr().to_string();
    within(Duration::from_secs(60), async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(65536).unwrap();
        let mut sub = socket.connect(nats_addr.parse().unwrap()).await.unwrap();
        sub.write_all(
            b"CONNECT {\"verbose\":false,\"headers\":true}\r\nSUB slow.nats 1\r\nPING\r\n",
        )
        .await
        .unwrap();
        let mut seen = Vec::new();
        while !seen.windows(6).any(|w| w == b"PONG\r\n") {
            let mut chunk = [0u8; 4096];
            let n = sub.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed before PONG");
            seen.extend_from_slice(&chunk[..n]);
        }
        let (mut publisher, _) =
            RawMqtt::connect_as(&mqtt_addr, Version::V3_1_1, "pub-to-nats", true).await;
        let mut out = BytesMut::new();
        for i in 0..N {
            let publish = publish_packet("slow/nats", QoS::AtMostOnce, 0, &payload(i, SIZE));
            encode(&Packet::Publish(publish), Version::V3_1_1, &mut out);
        }
        // One write of everything: the broker reads it in bursts as fast as it can.
        let sending = tokio::spawn(async move {
            publisher.send_bytes(&out).await;
            publisher
        });
        // Read at most 16 KiB a millisecond, far slower than the broker can produce.
        let mut received = Vec::with_capacity(N * (SIZE + 80));
        let mut chunk = vec![0u8; 16 * 1024];
        const MARK: &[u8] = b"MSG slow.nats ";
        let (mut delivered, mut counted) = (0usize, 0usize);
        while delivered < N {
            let n = sub.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            received.extend_from_slice(&chunk[..n]);
            // Windows that start before `counted - 13` were counted already.
            let from = counted.saturating_sub(MARK.len() - 1);
            delivered += received[from..].windows(MARK.len()).filter(|w| *w == MARK).count();
            counted = received.len();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let text = String::from_utf8_lossy(&received);
        let stalls = counter(&running, |s| &s.producer_stalls);
        assert!(
            !text.contains("-ERR"),
            "subscriber cut after {delivered} messages ({stalls} producer stalls)"
        );
        assert_eq!(delivered, N, "every message reaches the NATS subscriber");
        let _publisher = sending.await.unwrap();
        assert_eq!(counter(&running, |s| &s.slow_consumers), 0);
        assert!(counter(&running, |s| &s.producer_stalls) > 0, "the publisher never waited");
    })
    .await;
}
