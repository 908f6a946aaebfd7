//! MQTT and NATS on one subject space (isthmus only): MQTT publishes reach NATS subscribers
//! with the `Nmqtt-Pub` header, NATS publishes reach MQTT subscribers at the subscription's QoS
//! with redelivery, user properties <-> headers, shared subscriptions and queue groups as one
//! group, and request/response both ways.
//!
//! With `ISTHMUS_TEST_PEER` set to a reference broker these tests print a note and return.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use common::mqtt::*;
use common::*;
use futures::StreamExt;
use isthmus::protocol::mqtt::packet::*;

const TEST_LIMIT: Duration = Duration::from_secs(10);
const RECV: Duration = Duration::from_secs(5);
const WHY: &str = "NATS <-> MQTT interop exists only in isthmus";

async fn next_nats(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(RECV, sub.next())
        .await
        .expect("NATS message within 5 s")
        .expect("subscription still open")
}

/// Waits until NATS subscriptions made so far on `nats` see MQTT publishes from `mqtt`:
/// subscribes to a fresh subject and publishes QoS 0 probes from MQTT until one arrives
/// (SUBs on one connection take effect in order).
async fn sync_nats_with_mqtt(nats: &async_nats::Client, mqtt: &mut RawMqtt) {
    let token = unique_id("sync").replace('-', "_");
    let mut probe = nats.subscribe(format!("sync.{token}")).await.expect("probe subscribe");
    nats.flush().await.expect("flush");
    for _ in 0..200 {
        mqtt.publish(&format!("sync/{token}"), QoS::AtMostOnce, b"").await;
        if let Ok(msg) = tokio::time::timeout(Duration::from_millis(25), probe.next()).await {
            msg.expect("probe subscription open");
            probe.unsubscribe().await.expect("probe unsubscribe");
            return;
        }
    }
    panic!("NATS subscription never saw MQTT publishes (5 s of probes)");
}

fn header<'a>(msg: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_publish_reaches_nats_subscribers_with_the_qos_header() {
    let Some(broker) = isthmus_broker(2, "", WHY) else { return };
    within(TEST_LIMIT, async {
        let nats = nats_connect(&broker).await;
        let mut wide = nats.subscribe("a.b.>").await.unwrap();
        let mut narrow = nats.subscribe("a.*.c").await.unwrap();
        let mut exact = nats.subscribe("a.b").await.unwrap();
        let (mut publisher, _) =
            RawMqtt::connect_as(&broker.mqtt_addr(), Version::V3_1_1, &unique_id("to-nats"), true)
                .await;
        sync_nats_with_mqtt(&nats, &mut publisher).await;
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            publisher.publish("a/b/c", qos, format!("q{}", qos as u8).as_bytes()).await;
        }
        publisher.publish("a/b", QoS::AtLeastOnce, b"short").await;
        for sub in [&mut wide, &mut narrow] {
            let mut got = BTreeSet::new();
            for _ in 0..3 {
                let msg = next_nats(sub).await;
                assert_eq!(msg.subject.as_str(), "a.b.c");
                let payload = String::from_utf8(msg.payload.to_vec()).unwrap();
                let qos = payload.strip_prefix('q').expect("payload q<QoS>");
                assert_eq!(header(&msg, "Nmqtt-Pub"), Some(qos), "header of {payload}: {msg:?}");
                got.insert(payload);
            }
            assert_eq!(got, BTreeSet::from(["q0".into(), "q1".into(), "q2".into()]));
        }
        let msg = next_nats(&mut exact).await;
        assert_eq!(msg.payload.as_ref(), b"short");
        assert_eq!(header(&msg, "Nmqtt-Pub"), Some("1"));
        // `a.b.>` does not match `a.b` itself.
        assert!(tokio::time::timeout(QUIET, wide.next()).await.is_err(), "a.b.> must not get a.b");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_publish_reaches_mqtt_subscribers_at_the_subscription_qos() {
    let Some(broker) = isthmus_broker(2, "", WHY) else { return };
    within(TEST_LIMIT, async {
        let mut subscribers = Vec::new();
        for qos in 0..3u8 {
            let mut sub = v4(&broker, &unique_id(&format!("from-nats-q{qos}"))).await;
            sub.subscribe("x/+", qos).await;
            subscribers.push((qos, sub));
        }
        let mut v5_sub = v5(&broker, &unique_id("from-nats-v5")).await;
        v5_sub.subscribe("x/+", 2).await;
        let nats = nats_connect(&broker).await;
        nats.publish("x.y", "hello".into()).await.unwrap();
        nats.publish("x.y.z", "too deep".into()).await.unwrap();
        nats.publish("x.w", "second".into()).await.unwrap();
        nats.flush().await.unwrap();
        for (qos, sub) in &mut subscribers {
            for (topic, payload) in [("x/y", "hello"), ("x/w", "second")] {
                let publish = sub.next_publish(RECV).await;
                assert_eq!(publish.topic, topic);
                assert_eq!(publish.payload.as_ref(), payload.as_bytes());
                assert_eq!(publish.qos, <V4 as Types>::qos(*qos), "subscription QoS {qos}");
                assert!(!publish.retain && !publish.dup);
            }
            sub.expect_no_publish(QUIET).await;
        }
        let publish = v5_sub.next_publish(RECV).await;
        assert_eq!(publish.topic.as_ref(), b"x/y");
        assert_eq!(publish.qos, rumqttc::v5::mqttbytes::QoS::ExactlyOnce);
        assert_eq!(v5_sub.next_publish(RECV).await.payload.as_ref(), b"second");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_publish_is_redelivered_to_an_unacknowledging_mqtt_subscriber() {
    let Some(broker) = isthmus_broker(2, "", WHY) else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        let id = unique_id("nats-redeliver");
        let (mut sub, _) = RawMqtt::connect_as(&addr, Version::V3_1_1, &id, false).await;
        sub.subscribe("x/+", QoS::AtLeastOnce).await;
        let nats = nats_connect(&broker).await;
        nats.publish("x.y", "one".into()).await.unwrap();
        nats.flush().await.unwrap();
        let first = sub.expect_publish(RECV).await;
        assert_eq!(first.payload.as_ref(), b"one");
        assert_eq!(first.qos, QoS::AtLeastOnce);
        assert!(!first.dup);
        drop(sub); // No PUBACK, no DISCONNECT: the connection just goes.
                   // Make sure the broker has seen the close before the next publish is routed, so it is
                   // queued rather than written to the dead socket (either would be correct, but only the
                   // queued case is deterministic to assert on).
        tokio::time::sleep(Duration::from_millis(200)).await;
        nats.publish("x.z", "two".into()).await.unwrap();
        nats.flush().await.unwrap();

        let (mut sub, connack) = RawMqtt::connect_as(&addr, Version::V3_1_1, &id, false).await;
        assert!(connack.session_present);
        let again = sub.expect_publish(RECV).await;
        assert_eq!(again.payload.as_ref(), b"one");
        assert!(again.dup, "redelivery without DUP=1: {again:?}");
        assert_eq!(again.packet_id, first.packet_id);
        let second = sub.expect_publish(RECV).await;
        assert_eq!(second.payload.as_ref(), b"two");
        assert_eq!(second.topic.as_ref(), b"x/z");
        sub.send(&Packet::PubAck(ack(again.packet_id))).await;
        sub.send(&Packet::PubAck(ack(second.packet_id))).await;
        sub.expect_nothing(QUIET).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_properties_become_headers_and_headers_become_user_properties() {
    let Some(broker) = isthmus_broker(2, "", WHY) else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        let nats = nats_connect(&broker).await;
        let mut from_mqtt = nats.subscribe("h.t").await.unwrap();
        let (mut mqtt, _) =
            RawMqtt::connect_as(&addr, Version::V5_0, &unique_id("props"), true).await;
        sync_nats_with_mqtt(&nats, &mut mqtt).await;
        let mut publish = publish_packet("h/t", QoS::AtLeastOnce, 1, b"with props");
        publish.properties.get_or_insert_default().user_properties = vec![
            (Bytes::from_static(b"k1"), Bytes::from_static(b"v1")),
            (Bytes::from_static(b"k2"), Bytes::from_static(b"v2")),
        ];
        mqtt.send(&Packet::Publish(publish)).await;
        assert!(matches!(mqtt.expect_packet(RECV).await, Packet::PubAck(_)));
        let msg = next_nats(&mut from_mqtt).await;
        assert_eq!(msg.payload.as_ref(), b"with props");
        assert_eq!(header(&msg, "k1"), Some("v1"), "{msg:?}");
        assert_eq!(header(&msg, "k2"), Some("v2"), "{msg:?}");
        assert_eq!(header(&msg, "Nmqtt-Pub"), Some("1"));

        assert_eq!(mqtt.subscribe("h/u", QoS::AtLeastOnce).await, vec![ReasonCode(1)]);
        let mut headers = HeaderMap::new();
        headers.insert("k3", "v3");
        headers.insert("Nmqtt-Internal", "secret");
        nats.publish_with_headers("h.u", headers, "from nats".into()).await.unwrap();
        nats.flush().await.unwrap();
        let got = mqtt.expect_publish(RECV).await;
        assert_eq!(got.payload.as_ref(), b"from nats");
        let properties: Vec<(String, String)> = got
            .properties
            .unwrap_or_default()
            .user_properties
            .iter()
            .map(|(k, v)| {
                (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned())
            })
            .collect();
        assert!(properties.contains(&("k3".into(), "v3".into())), "{properties:?}");
        assert!(
            properties.iter().all(|(k, _)| !k.to_ascii_lowercase().starts_with("nmqtt-")),
            "internal Nmqtt- headers passed on: {properties:?}"
        );
        mqtt.send(&Packet::PubAck(ack(got.packet_id))).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_and_queue_group_form_one_group_across_shards() {
    const EACH: usize = 200;
    let Some(broker) = isthmus_broker(2, "", WHY) else { return };
    within(TEST_LIMIT, async {
        let mut mqtt_members = Vec::new();
        for i in 0..2 {
            let mut member = v4(&broker, &unique_id(&format!("share-{i}"))).await;
            member.subscribe("$share/g/t", 1).await;
            mqtt_members.push(member);
        }
        let nats_publisher = nats_connect(&broker).await;
        let mut nats_members = Vec::new();
        for shard in 0..2 {
            let client = nats_on_shard(&broker, shard).await;
            let sub = client.queue_subscribe("t", "g".into()).await.unwrap();
            sync_interest(&client, &nats_publisher).await;
            nats_members.push((client, sub));
        }
        let mut mqtt_publisher = v4(&broker, &unique_id("share-pub")).await;
        for i in 0..EACH {
            nats_publisher.publish("t", format!("n{i}").into()).await.unwrap();
            mqtt_publisher.publish("t", 1, false, format!("m{i}").as_bytes()).await;
        }
        nats_publisher.flush().await.unwrap();
        mqtt_publisher.wait_acks(EACH).await;

        let mut seen = BTreeSet::new();
        let mut per_member = [0usize; 4];
        let deadline = tokio::time::Instant::now() + RECV;
        let [mqtt0, mqtt1] = &mut mqtt_members[..] else { unreachable!() };
        let [(_, nats0), (_, nats1)] = &mut nats_members[..] else { unreachable!() };
        while seen.len() < 2 * EACH {
            let (member, payload) = tokio::select! {
                p = mqtt0.next_publish(RECV) => (0, p.payload.to_vec()),
                p = mqtt1.next_publish(RECV) => (1, p.payload.to_vec()),
                m = nats0.next() => (2, m.expect("member open").payload.to_vec()),
                m = nats1.next() => (3, m.expect("member open").payload.to_vec()),
                _ = tokio::time::sleep_until(deadline) => panic!(
                    "group got {} of {} (per member {per_member:?})", seen.len(), 2 * EACH
                ),
            };
            per_member[member] += 1;
            let text = String::from_utf8(payload).unwrap();
            assert!(seen.insert(text.clone()), "{text} reached two members ({per_member:?})");
        }
        // Nothing extra afterwards.
        for member in &mut mqtt_members {
            member.expect_no_publish(Duration::from_millis(100)).await;
        }
        for (_, sub) in &mut nats_members {
            assert!(tokio::time::timeout(Duration::from_millis(100), sub.next()).await.is_err());
        }
        assert_eq!(seen.len(), 2 * EACH, "per member {per_member:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_request_is_answered_from_nats_with_correlation_data() {
    let Some(broker) = isthmus_broker(2, "", WHY) else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        let nats = nats_connect(&broker).await;
        let mut service = nats.subscribe("svc.mqtt").await.unwrap();
        let (mut requester, _) =
            RawMqtt::connect_as(&addr, Version::V5_0, &unique_id("mqtt-requester"), true).await;
        requester.subscribe("r/x", QoS::AtLeastOnce).await;
        sync_nats_with_mqtt(&nats, &mut requester).await;
        let mut request = publish_packet("svc/mqtt", QoS::AtMostOnce, 0, b"ping");
        request.properties.get_or_insert_default().response_topic =
            Some(Bytes::from_static(b"r/x"));
        request.properties.get_or_insert_default().correlation_data =
            Some(Bytes::from_static(b"corr-1"));
        requester.send(&Packet::Publish(request)).await;

        let msg = next_nats(&mut service).await;
        assert_eq!(msg.payload.as_ref(), b"ping");
        let reply = msg.reply.expect("an MQTT request with a Response Topic has a reply subject");
        nats.publish(reply, "pong".into()).await.unwrap();
        nats.flush().await.unwrap();

        let response = requester.expect_publish(RECV).await;
        assert_eq!(response.topic.as_ref(), b"r/x");
        assert_eq!(response.payload.as_ref(), b"pong");
        assert_eq!(
            response.properties.as_ref().and_then(|p| p.correlation_data.as_deref()),
            Some(&b"corr-1"[..])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_request_is_answered_by_an_mqtt5_responder() {
    let Some(broker) = isthmus_broker(2, "", WHY) else { return };
    let addr = broker.mqtt_addr();
    within(TEST_LIMIT, async {
        let (mut responder, _) =
            RawMqtt::connect_as(&addr, Version::V5_0, &unique_id("mqtt-responder"), true).await;
        responder.subscribe("svc/nats", QoS::AtMostOnce).await;
        let nats = nats_connect(&broker).await;
        let asking = tokio::spawn({
            let nats = nats.clone();
            async move { nats.request("svc.nats", "question".into()).await }
        });
        let request = responder.expect_publish(RECV).await;
        assert_eq!(request.payload.as_ref(), b"question");
        let topic = request
            .properties
            .as_ref()
            .and_then(|p| p.response_topic.clone())
            .expect("NATS request has a Response Topic");
        assert!(topic.starts_with(b"_INBOX/"), "Response Topic {topic:?}");
        let mut answer =
            publish_packet(std::str::from_utf8(&topic).unwrap(), QoS::AtMostOnce, 0, b"answer");
        answer.properties.get_or_insert_default().correlation_data =
            request.properties.as_ref().and_then(|p| p.correlation_data.clone());
        responder.send(&Packet::Publish(answer)).await;
        let reply = tokio::time::timeout(RECV, asking)
            .await
            .expect("NATS reply within 5 s")
            .expect("request task")
            .expect("request answered");
        assert_eq!(reply.payload.as_ref(), b"answer");
    })
    .await;
}
