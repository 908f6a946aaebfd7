//! Session behaviour at the packet level, with a raw client: redelivery with DUP after a
//! reconnect, QoS 2 exactly once, session takeover, and the CONNECT edge cases of the contract.
//!
//! Run against the reference broker with `ISTHMUS_TEST_PEER=mosquitto`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::mqtt::*;
use common::*;
use isthmus::protocol::mqtt::packet::*;

const TEST_LIMIT: Duration = Duration::from_secs(10);

/// A CONNECT with clean start 0 that keeps the session after the connection: 3.1.1 needs
/// nothing more, 5.0 a Session Expiry Interval.
fn persistent_connect(version: Version, client_id: &str) -> Connect {
    let mut connect = connect_packet(version, client_id, false);
    if version == Version::V5_0 {
        connect.properties.session_expiry_interval = Some(60);
    }
    connect
}

async fn redelivery_with_dup(version: Version) {
    let Some(broker) = mqtt_broker(2, "") else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        let topic = format!("redeliver/{}", unique_id("t"));
        let id = unique_id("redeliver-sub");
        let (mut sub, connack) = RawMqtt::handshake(&addr, persistent_connect(version, &id)).await;
        assert!(!connack.session_present);
        assert_eq!(sub.subscribe(&topic, QoS::AtLeastOnce).await, vec![ReasonCode(1)]);
        let (mut publisher, _) =
            RawMqtt::connect_as(&addr, version, &unique_id("redeliver-pub"), true).await;
        publisher.publish(&topic, QoS::AtLeastOnce, b"first").await;
        let first = sub.expect_publish(PACKET_TIMEOUT).await;
        assert_eq!(first.payload.as_ref(), b"first");
        assert_eq!(first.qos, QoS::AtLeastOnce);
        assert!(!first.dup, "first delivery with DUP=1");
        // No PUBACK: disconnect with the message unacknowledged.
        sub.disconnect().await;
        publisher.publish(&topic, QoS::AtLeastOnce, b"second").await;

        let (mut sub, connack) = RawMqtt::handshake(&addr, persistent_connect(version, &id)).await;
        assert!(connack.session_present, "reconnect with clean start 0: {connack:?}");
        let again = sub.expect_publish(PACKET_TIMEOUT).await;
        assert_eq!(again.payload.as_ref(), b"first", "the unacknowledged message comes first");
        assert!(again.dup, "resent delivery without DUP=1: {again:?}");
        assert_eq!(again.packet_id, first.packet_id, "resent with another packet id");
        assert_eq!(again.qos, QoS::AtLeastOnce);
        let second = sub.expect_publish(PACKET_TIMEOUT).await;
        assert_eq!(second.payload.as_ref(), b"second");
        assert!(!second.dup, "queued message sent for the first time with DUP=1");
        sub.send(&Packet::PubAck(ack(again.packet_id))).await;
        sub.send(&Packet::PubAck(ack(second.packet_id))).await;
        sub.expect_nothing(QUIET).await;
        sub.disconnect().await;

        // Both acknowledged: the next resume has nothing to resend.
        let (mut sub, connack) = RawMqtt::handshake(&addr, persistent_connect(version, &id)).await;
        assert!(connack.session_present);
        sub.expect_nothing(QUIET).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_unacknowledged_delivery_is_resent_with_dup_after_reconnect() {
    redelivery_with_dup(Version::V3_1_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_unacknowledged_delivery_is_resent_with_dup_after_reconnect() {
    redelivery_with_dup(Version::V5_0).await;
}

async fn qos2_exactly_once(version: Version) {
    let Some(broker) = mqtt_broker(2, "") else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        let topic = format!("exactly/{}", unique_id("t"));
        let (mut sub, _) = RawMqtt::connect_as(&addr, version, &unique_id("qos2-sub"), true).await;
        assert_eq!(sub.subscribe(&topic, QoS::ExactlyOnce).await, vec![ReasonCode(2)]);
        let (mut publisher, _) =
            RawMqtt::connect_as(&addr, version, &unique_id("qos2-pub"), true).await;

        let mut publish = publish_packet(&topic, QoS::ExactlyOnce, 7, b"once");
        publisher.send(&Packet::Publish(publish.clone())).await;
        match publisher.expect_packet(PACKET_TIMEOUT).await {
            Packet::PubRec(pubrec) => assert_eq!(pubrec.packet_id, 7),
            other => panic!("expected PUBREC 7, got {other:?}"),
        }
        // The same message again, as a client resends it when it missed the PUBREC.
        publish.dup = true;
        publisher.send(&Packet::Publish(publish)).await;
        match publisher.expect_packet(PACKET_TIMEOUT).await {
            Packet::PubRec(pubrec) => assert_eq!(pubrec.packet_id, 7),
            other => panic!("expected a second PUBREC 7, got {other:?}"),
        }
        publisher.send(&Packet::PubRel(ack(7))).await;
        match publisher.expect_packet(PACKET_TIMEOUT).await {
            Packet::PubComp(pubcomp) => assert_eq!(pubcomp.packet_id, 7),
            other => panic!("expected PUBCOMP 7, got {other:?}"),
        }

        let got = sub.expect_publish(PACKET_TIMEOUT).await;
        assert_eq!(got.payload.as_ref(), b"once");
        assert_eq!(got.qos, QoS::ExactlyOnce);
        assert!(!got.dup);
        sub.send(&Packet::PubRec(ack(got.packet_id))).await;
        match sub.expect_packet(PACKET_TIMEOUT).await {
            Packet::PubRel(pubrel) => assert_eq!(pubrel.packet_id, got.packet_id),
            other => panic!("expected PUBREL, got {other:?}"),
        }
        sub.send(&Packet::PubComp(ack(got.packet_id))).await;
        sub.expect_nothing(QUIET).await;

        // Packet id 7 is free again after PUBCOMP: a new message with it is a new message.
        publisher.send(&Packet::Publish(publish_packet(&topic, QoS::ExactlyOnce, 7, b"new"))).await;
        match publisher.expect_packet(PACKET_TIMEOUT).await {
            Packet::PubRec(pubrec) => assert_eq!(pubrec.packet_id, 7),
            other => panic!("expected PUBREC 7, got {other:?}"),
        }
        publisher.send(&Packet::PubRel(ack(7))).await;
        assert!(matches!(publisher.expect_packet(PACKET_TIMEOUT).await, Packet::PubComp(_)));
        let got = sub.expect_publish(PACKET_TIMEOUT).await;
        assert_eq!(got.payload.as_ref(), b"new");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_qos2_publish_resent_before_pubrel_is_delivered_once() {
    qos2_exactly_once(Version::V3_1_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_qos2_publish_resent_before_pubrel_is_delivered_once() {
    qos2_exactly_once(Version::V5_0).await;
}

async fn takeover(version: Version) {
    let Some(broker) = mqtt_broker(2, "") else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        let topic = format!("takeover/{}", unique_id("t"));
        let id = unique_id("takeover");
        let (mut first, _) = RawMqtt::handshake(&addr, persistent_connect(version, &id)).await;
        first.subscribe(&topic, QoS::AtLeastOnce).await;

        let (mut second, connack) =
            RawMqtt::handshake(&addr, persistent_connect(version, &id)).await;
        assert!(connack.session_present, "the session moves to the new connection: {connack:?}");
        match version {
            Version::V5_0 => {
                expect_v5_close(&mut first, &broker, 0x8E, Mosquitto::ClosesSilently).await;
            }
            Version::V3_1_1 => {
                let packets = first.expect_closed(PACKET_TIMEOUT).await;
                assert!(packets.is_empty(), "3.1.1 takeover sent {packets:?}");
            }
        }
        // The subscription came along: the new connection gets messages without subscribing.
        let (mut publisher, _) =
            RawMqtt::connect_as(&addr, version, &unique_id("takeover-pub"), true).await;
        publisher.publish(&topic, QoS::AtLeastOnce, b"to the new one").await;
        let got = second.expect_publish(PACKET_TIMEOUT).await;
        assert_eq!(got.payload.as_ref(), b"to the new one");
        second.send(&Packet::PubAck(ack(got.packet_id))).await;
        second.expect_nothing(QUIET).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_second_connection_with_the_same_id_takes_over() {
    takeover(Version::V3_1_1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_second_connection_with_the_same_id_takes_over_with_0x8e() {
    takeover(Version::V5_0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_between_versions_closes_the_old_connection() {
    let Some(broker) = mqtt_broker(2, "") else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        let id = unique_id("takeover-mixed");
        let (mut old, _) = RawMqtt::connect_as(&addr, Version::V5_0, &id, true).await;
        let (_new, _) = RawMqtt::connect_as(&addr, Version::V3_1_1, &id, true).await;
        expect_v5_close(&mut old, &broker, 0x8E, Mosquitto::ClosesSilently).await;
        assert_mqtt_healthy(&broker).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_client_id_rules() {
    let Some(broker) = mqtt_broker(1, "") else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        // 5.0: the server assigns one.
        let (_v5, connack) = RawMqtt::connect_as(&addr, Version::V5_0, "", true).await;
        let assigned = connack
            .properties
            .assigned_client_identifier
            .expect("5.0 CONNACK for an empty client id carries Assigned Client Identifier");
        assert!(!assigned.is_empty());
        // 3.1.1 with clean session 1: accepted.
        let (_v4, connack) = RawMqtt::connect_as(&addr, Version::V3_1_1, "", true).await;
        assert!(!connack.session_present);
        // 3.1.1 with clean session 0: return code 0x02, then closed [MQTT-3.1.3-8].
        let mut raw = RawMqtt::connect(&addr).await;
        raw.version = Version::V3_1_1;
        raw.send(&Packet::Connect(Box::new(connect_packet(Version::V3_1_1, "", false)))).await;
        let packets = raw.expect_closed(PACKET_TIMEOUT).await;
        match packets.as_slice() {
            [Packet::ConnAck(connack)] => {
                assert_eq!(connack.reason_code, ReasonCode::V3_IDENTIFIER_REJECTED);
                assert!(!connack.session_present);
            }
            other => panic!("expected CONNACK 0x02 then close, got {other:?}"),
        }
        assert_mqtt_healthy(&broker).await;
    })
    .await;
}

/// Protocol levels other than 4 and 5 get the 3.1.1 CONNACK return code 0x01, then close.
/// mosquitto speaks MQTT 3.1 (`MQIsdp`, level 3), so only the unknown level 6 is checked
/// against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_protocol_levels_get_return_code_1() {
    let Some(broker) = mqtt_broker(1, "") else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        // MQTT 3.1: "MQIsdp", level 3, clean session, keep alive 30, client id "a".
        let mqisdp = b"\x10\x0f\x00\x06MQIsdp\x03\x02\x00\x1e\x00\x01a";
        // "MQTT" level 6.
        let level6 = b"\x10\x0d\x00\x04MQTT\x06\x02\x00\x1e\x00\x01b";
        let mut cases: Vec<(&str, &[u8])> = vec![("level 6", level6)];
        if broker.is_isthmus() {
            cases.push(("MQIsdp level 3", mqisdp));
        }
        for (name, bytes) in cases {
            let mut raw = RawMqtt::connect(&addr).await;
            raw.version = Version::V3_1_1;
            raw.send_bytes(bytes).await;
            let packets = raw.expect_closed(PACKET_TIMEOUT).await;
            let encoded: Vec<Vec<u8>> =
                packets.iter().map(|p| encoded(p, Version::V3_1_1)).collect();
            assert_eq!(encoded, vec![b"\x20\x02\x00\x01".to_vec()], "{name}: {packets:?}");
        }
        assert_mqtt_healthy(&broker).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_packet_not_connect_is_closed() {
    let Some(broker) = mqtt_broker(1, "") else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        for (name, packet) in [
            ("PINGREQ", Packet::PingReq),
            ("PUBLISH", Packet::Publish(publish_packet("a/b", QoS::AtMostOnce, 0, b"x"))),
            ("SUBSCRIBE", Packet::Subscribe(subscribe_packet(1, "a/#", QoS::AtMostOnce))),
        ] {
            let mut raw = RawMqtt::connect(&addr).await;
            raw.version = Version::V3_1_1;
            raw.send(&packet).await;
            let packets = raw.expect_closed(PACKET_TIMEOUT).await;
            assert!(packets.is_empty(), "{name} before CONNECT: got {packets:?}");
        }
        assert_mqtt_healthy(&broker).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_no_local_and_subscription_identifier() {
    let Some(broker) = mqtt_broker(1, "") else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        let topic = format!("options/{}", unique_id("t"));
        let (mut client, _) =
            RawMqtt::connect_as(&addr, Version::V5_0, &unique_id("no-local"), true).await;
        let mut options = SubscriptionOptions::with_qos(QoS::AtLeastOnce);
        options.no_local = true;
        client
            .send(&Packet::Subscribe(Subscribe {
                packet_id: 1,
                filters: vec![(Bytes::copy_from_slice(topic.as_bytes()), options)],
                properties: SubscribeProperties {
                    subscription_identifier: Some(42),
                    user_properties: Vec::new(),
                },
            }))
            .await;
        assert!(matches!(client.expect_packet(PACKET_TIMEOUT).await, Packet::SubAck(_)));
        // Its own publish is not sent back.
        client.publish(&topic, QoS::AtLeastOnce, b"mine").await;
        client.expect_nothing(QUIET).await;
        // Another client's is, with the subscription identifier.
        let (mut other, _) =
            RawMqtt::connect_as(&addr, Version::V5_0, &unique_id("no-local-other"), true).await;
        other.publish(&topic, QoS::AtMostOnce, b"theirs").await;
        let got = client.expect_publish(PACKET_TIMEOUT).await;
        assert_eq!(got.payload.as_ref(), b"theirs");
        assert_eq!(got.properties.expect("properties").subscription_identifiers, vec![42]);
    })
    .await;
}

/// 5.0 §3.1.2.5: on takeover the old connection's will is sent, unless the new connection has
/// clean start 0 and the will has a delay (then the session goes on and the will is cancelled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_publishes_the_old_will_unless_the_session_continues_within_its_delay() {
    let Some(broker) = mqtt_broker(2, "") else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        let will_topic = format!("will/takeover/{}", unique_id("t"));
        let (mut watcher, _) =
            RawMqtt::connect_as(&addr, Version::V5_0, &unique_id("will-watch"), true).await;
        watcher.subscribe(&will_topic, QoS::AtMostOnce).await;
        let with_will = |id: &str, clean_start: bool, delay: Option<u32>, payload: &str| {
            let mut connect = persistent_connect(Version::V5_0, id);
            connect.clean_start = clean_start;
            connect.will = Some(Will {
                topic: Bytes::copy_from_slice(will_topic.as_bytes()),
                payload: Bytes::copy_from_slice(payload.as_bytes()),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: WillProperties { will_delay_interval: delay, ..Default::default() },
            });
            connect
        };
        // Clean start 1 takes over: the old will goes out.
        let id = unique_id("will-takeover");
        let (mut old, _) = RawMqtt::handshake(&addr, with_will(&id, true, None, "old")).await;
        let (_new, _) = RawMqtt::handshake(&addr, with_will(&id, true, None, "new")).await;
        expect_v5_close(&mut old, &broker, 0x8E, Mosquitto::ClosesSilently).await;
        let will = watcher.expect_publish(PACKET_TIMEOUT).await;
        assert_eq!(will.payload.as_ref(), b"old");
        // Clean start 0 and a will delay: the session continues, no will.
        let id = unique_id("will-resume");
        let (mut old, _) = RawMqtt::handshake(&addr, with_will(&id, false, Some(5), "kept")).await;
        let (_new, connack) =
            RawMqtt::handshake(&addr, with_will(&id, false, Some(5), "new")).await;
        assert!(connack.session_present);
        expect_v5_close(&mut old, &broker, 0x8E, Mosquitto::ClosesSilently).await;
        watcher.expect_nothing(Duration::from_millis(500)).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_at_max_session_expiry_s() {
    let why = "max_session_expiry_s is an isthmus setting";
    let Some(broker) = isthmus_broker(2, "[mqtt]\nmax_session_expiry_s = 1\n", why) else {
        return;
    };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        let v4_id = unique_id("expiring-v4");
        let v5_id = unique_id("expiring-v5");
        let mut v5_connect = persistent_connect(Version::V5_0, &v5_id);
        v5_connect.properties.session_expiry_interval = Some(3600); // asks for more than 1 s
        for connect in [persistent_connect(Version::V3_1_1, &v4_id), v5_connect.clone()] {
            let (mut raw, _) = RawMqtt::handshake(&addr, connect.clone()).await;
            raw.subscribe("expiring/t", QoS::AtLeastOnce).await;
            raw.disconnect().await;
            // Within the cap the session is still there.
            let (raw, connack) = RawMqtt::handshake(&addr, connect).await;
            assert!(connack.session_present, "session gone at once");
            raw.disconnect().await;
        }
        tokio::time::sleep(Duration::from_millis(2200)).await;
        for connect in [persistent_connect(Version::V3_1_1, &v4_id), v5_connect] {
            let (_raw, connack) = RawMqtt::handshake(&addr, connect).await;
            assert!(!connack.session_present, "session outlived max_session_expiry_s = 1");
        }
    })
    .await;
}
