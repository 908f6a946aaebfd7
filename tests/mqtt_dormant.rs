//! Dormant MQTT connections (quiet for `mqtt.dormant_after_ms`: no tasks, no buffers, the
//! socket in an epoll set) must behave exactly like live ones: they receive deliveries (from
//! MQTT and NATS), publish, answer PINGREQ, are cut at 1.5 x keep alive, can be taken over,
//! publish their will when the client vanishes, and do not hold up shutdown. Each test checks
//! through the broker's counters that the connection really was dormant at the step under test.
//!
//! The broker runs in this process so its counters can be read (isthmus only).

mod common;

use std::time::Duration;

use common::mqtt::*;
use common::{counter, within};
use isthmus::protocol::mqtt::packet::*;

const TEST_LIMIT: Duration = Duration::from_secs(20);
const DORMANT_AFTER_MS: u64 = 300;

fn broker(shards: usize) -> isthmus::serve::Running {
    common::in_process(shards, &format!("dormant_after_ms = {DORMANT_AFTER_MS}"))
}

/// Waits until `n` connections are dormant (a sweep runs every 250 ms).
async fn until_dormant(running: &isthmus::serve::Running, n: u64) {
    let started = std::time::Instant::now();
    while counter(running, |s| &s.mqtt_dormant) < n {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{} of {n} connections went dormant",
            counter(running, |s| &s.mqtt_dormant)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn skip() -> bool {
    if common::peer() != common::Peer::Isthmus {
        eprintln!("note: in-process isthmus test; skipped with ISTHMUS_TEST_PEER set");
        return true;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dormant_subscribers_get_mqtt_and_nats_deliveries_and_dormant_publishers_publish() {
    if skip() {
        return;
    }
    let running = broker(2);
    let addr = running.mqtt_addr().to_string();
    let nats = async_nats::connect(running.nats_addr().to_string()).await.unwrap();
    within(TEST_LIMIT, async {
        // Client ids chosen so that both shards hold dormant sessions.
        let mut subs = Vec::new();
        for i in 0..4 {
            let (mut sub, _) =
                RawMqtt::connect_as(&addr, Version::V5_0, &format!("sleepy-sub-{i}"), true).await;
            assert_eq!(sub.subscribe("dorm/+/cmd", QoS::AtLeastOnce).await, vec![ReasonCode(1)]);
            subs.push(sub);
        }
        let (mut publisher, _) =
            RawMqtt::connect_as(&addr, Version::V3_1_1, "sleepy-pub", true).await;
        until_dormant(&running, 5).await;
        let woken = counter(&running, |s| &s.mqtt_woken);

        // A dormant publisher publishes at QoS 1 (and gets its PUBACK); dormant subscribers get it.
        publisher.publish("dorm/a/cmd", QoS::AtLeastOnce, b"from mqtt").await;
        for sub in &mut subs {
            let publish = sub.expect_publish(PACKET_TIMEOUT).await;
            assert_eq!(&publish.payload[..], b"from mqtt");
            assert_eq!(publish.qos, QoS::AtLeastOnce);
            sub.send(&Packet::PubAck(ack(publish.packet_id))).await;
        }
        assert!(counter(&running, |s| &s.mqtt_woken) >= woken + 5, "not woken from dormancy");

        // Dormant again, then a NATS publish wakes them by output alone.
        until_dormant(&running, 5).await;
        nats.publish("dorm.b.cmd", "from nats".into()).await.unwrap();
        nats.flush().await.unwrap();
        for sub in &mut subs {
            let publish = sub.expect_publish(PACKET_TIMEOUT).await;
            assert_eq!(&publish.topic[..], b"dorm/b/cmd");
            assert_eq!(&publish.payload[..], b"from nats");
            sub.send(&Packet::PubAck(ack(publish.packet_id))).await;
        }

        // PINGREQ on a dormant connection.
        until_dormant(&running, 5).await;
        publisher.send(&Packet::PingReq).await;
        assert!(matches!(publisher.expect_packet(PACKET_TIMEOUT).await, Packet::PingResp));
        for sub in subs {
            sub.disconnect().await;
        }
        publisher.disconnect().await;
    })
    .await;
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dormant_connection_is_cut_at_one_and_a_half_keep_alive() {
    if skip() {
        return;
    }
    let running = broker(1);
    let addr = running.mqtt_addr().to_string();
    within(TEST_LIMIT, async {
        let mut connect = connect_packet(Version::V5_0, "sleepy-ka", true);
        connect.keep_alive_seconds = 1;
        let (mut raw, _) = RawMqtt::handshake(&addr, connect).await;
        let started = std::time::Instant::now();
        until_dormant(&running, 1).await;
        raw.expect_disconnect(ReasonCode::KEEP_ALIVE_TIMEOUT.0).await;
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1400), "cut after {waited:?}");
        assert!(waited < Duration::from_millis(2500), "cut only after {waited:?}");
        assert_eq!(counter(&running, |s| &s.stale_connections), 1);
    })
    .await;
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dormant_session_is_taken_over_and_a_vanished_client_leaves_its_will() {
    if skip() {
        return;
    }
    let running = broker(2);
    let addr = running.mqtt_addr().to_string();
    within(TEST_LIMIT, async {
        let (mut watcher, _) = RawMqtt::connect_as(&addr, Version::V5_0, "watcher", true).await;
        watcher.subscribe("wills/#", QoS::AtMostOnce).await;

        let (mut old, _) = RawMqtt::connect_as(&addr, Version::V5_0, "sleepy-twin", false).await;
        old.subscribe("twin/cmd", QoS::AtLeastOnce).await;
        until_dormant(&running, 2).await;
        let (new, connack) = RawMqtt::connect_as(&addr, Version::V5_0, "sleepy-twin", false).await;
        assert!(connack.session_present, "the dormant session was not resumed");
        old.expect_disconnect(ReasonCode::SESSION_TAKEN_OVER.0).await;
        assert_eq!(counter(&running, |s| &s.mqtt_takeovers), 1);
        new.disconnect().await;

        let mut connect = connect_packet(Version::V3_1_1, "sleepy-will", true);
        connect.will = Some(Will {
            topic: "wills/sleepy".into(),
            payload: "gone".into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        });
        let (vanishing, _) = RawMqtt::handshake(&addr, connect).await;
        until_dormant(&running, 2).await;
        drop(vanishing);
        let will = watcher.expect_publish(PACKET_TIMEOUT).await;
        assert_eq!(&will.topic[..], b"wills/sleepy");
        assert_eq!(&will.payload[..], b"gone");
        watcher.disconnect().await;
    })
    .await;
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_dormant_connections() {
    if skip() {
        return;
    }
    let running = broker(2);
    let addr = running.mqtt_addr().to_string();
    let mut clients = Vec::new();
    for i in 0..20 {
        clients.push(
            RawMqtt::connect_as(&addr, Version::V3_1_1, &format!("sleepy-{i}"), true).await.0,
        );
    }
    until_dormant(&running, 20).await;
    let started = std::time::Instant::now();
    running.stop();
    assert!(started.elapsed() < Duration::from_secs(2), "stop took {:?}", started.elapsed());
    for mut client in clients {
        client.expect_closed(PACKET_TIMEOUT).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_pings_are_answered_without_waking_and_other_input_still_wakes() {
    if skip() {
        return;
    }
    let running = broker(1);
    let addr = running.mqtt_addr().to_string();
    within(TEST_LIMIT, async {
        let (mut watcher, _) =
            RawMqtt::connect_as(&addr, Version::V5_0, "ping-watcher", true).await;
        watcher.subscribe("pinger/+", QoS::AtMostOnce).await;
        let mut connect = connect_packet(Version::V3_1_1, "pinger", true);
        connect.keep_alive_seconds = 1;
        let (mut device, _) = RawMqtt::handshake(&addr, connect).await;
        until_dormant(&running, 2).await;
        let woken = counter(&running, |s| &s.mqtt_woken);
        // 3 s of pings every 0.5 s: twice the 1.5 s keep-alive deadline, so the answers must
        // also count as traffic.
        for _ in 0..6 {
            device.send(&Packet::PingReq).await;
            assert!(matches!(device.expect_packet(PACKET_TIMEOUT).await, Packet::PingResp));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(counter(&running, |s| &s.mqtt_woken), woken, "a PINGREQ woke the connection");
        assert!(counter(&running, |s| &s.mqtt_dormant_pings) >= 6);
        assert_eq!(counter(&running, |s| &s.stale_connections), 0);
        // A PINGREQ and a PUBLISH in one write: the PUBLISH wakes it and is routed.
        let mut both = encoded(&Packet::PingReq, Version::V3_1_1);
        let publish = publish_packet("pinger/data", QoS::AtMostOnce, 0, b"awake");
        both.extend(encoded(&Packet::Publish(publish), Version::V3_1_1));
        device.send_bytes(&both).await;
        assert!(matches!(device.expect_packet(PACKET_TIMEOUT).await, Packet::PingResp));
        let seen = watcher.expect_publish(PACKET_TIMEOUT).await;
        assert_eq!(&seen.payload[..], b"awake");
        assert!(counter(&running, |s| &s.mqtt_woken) > woken);
        device.disconnect().await;
        watcher.disconnect().await;
    })
    .await;
    running.stop();
}
