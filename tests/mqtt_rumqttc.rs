//! MQTT pub/sub, persistent sessions and retained messages seen through rumqttc, with its
//! 3.1.1 client (`rumqttc::AsyncClient`) and its 5.0 client (`rumqttc::v5::AsyncClient`).
//!
//! Run against the reference broker with `ISTHMUS_TEST_PEER=mosquitto`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::mqtt::*;
use common::*;
use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as V5Code;
use rumqttc::v5::mqttbytes::QoS as V5QoS;
use rumqttc::{QoS, SubscribeReasonCode};

const TEST_LIMIT: Duration = Duration::from_secs(10);
const RECV: Duration = Duration::from_secs(5);

fn v4_qos(n: u8) -> QoS {
    <V4 as Types>::qos(n)
}

fn v5_qos(n: u8) -> V5QoS {
    <V5 as Types>::qos(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_delivered_qos_is_the_lower_of_publish_and_subscription() {
    let Some(broker) = mqtt_broker(1, "") else { return };
    within(TEST_LIMIT, async {
        let topic = "qos/matrix/v4";
        let mut subscribers = Vec::new();
        for sub_qos in 0..3u8 {
            let mut sub = v4(&broker, &unique_id(&format!("v4-sub-q{sub_qos}"))).await;
            let suback = sub.subscribe(topic, sub_qos).await;
            assert_eq!(suback.return_codes, vec![SubscribeReasonCode::Success(v4_qos(sub_qos))]);
            subscribers.push((sub_qos, sub));
        }
        let mut publisher = v4(&broker, &unique_id("v4-pub")).await;
        for pub_qos in 0..3u8 {
            publisher.publish(topic, pub_qos, false, pub_qos.to_string().as_bytes()).await;
        }
        publisher.wait_acks(2).await;
        for (sub_qos, sub) in &mut subscribers {
            let mut got = BTreeMap::new();
            for _ in 0..3 {
                let publish = sub.next_publish(RECV).await;
                assert_eq!(publish.topic, topic);
                assert!(!publish.retain, "live delivery with RETAIN=1: {publish:?}");
                assert!(!publish.dup, "first delivery with DUP=1: {publish:?}");
                let pub_qos: u8 = std::str::from_utf8(&publish.payload).unwrap().parse().unwrap();
                assert!(got.insert(pub_qos, publish.qos).is_none(), "{pub_qos} delivered twice");
            }
            let want: BTreeMap<u8, QoS> =
                (0..3u8).map(|pub_qos| (pub_qos, v4_qos(pub_qos.min(*sub_qos)))).collect();
            assert_eq!(got, want, "delivered QoS by publish QoS, subscription QoS {sub_qos}");
            sub.expect_no_publish(QUIET).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_delivered_qos_is_the_lower_of_publish_and_subscription() {
    let Some(broker) = mqtt_broker(1, "") else { return };
    within(TEST_LIMIT, async {
        let topic = "qos/matrix/v5";
        let mut subscribers = Vec::new();
        for sub_qos in 0..3u8 {
            let mut sub = v5(&broker, &unique_id(&format!("v5-sub-q{sub_qos}"))).await;
            let suback = sub.subscribe(topic, sub_qos).await;
            assert_eq!(suback.return_codes, vec![V5Code::Success(v5_qos(sub_qos))]);
            subscribers.push((sub_qos, sub));
        }
        let mut publisher = v5(&broker, &unique_id("v5-pub")).await;
        for pub_qos in 0..3u8 {
            publisher.publish(topic, pub_qos, false, pub_qos.to_string().as_bytes()).await;
        }
        publisher.wait_acks(2).await;
        for (sub_qos, sub) in &mut subscribers {
            let mut got = BTreeMap::new();
            for _ in 0..3 {
                let publish = sub.next_publish(RECV).await;
                assert_eq!(publish.topic.as_ref(), topic.as_bytes());
                assert!(!publish.retain, "live delivery with RETAIN=1: {publish:?}");
                assert!(!publish.dup, "first delivery with DUP=1: {publish:?}");
                let pub_qos: u8 = std::str::from_utf8(&publish.payload).unwrap().parse().unwrap();
                assert!(got.insert(pub_qos, publish.qos).is_none(), "{pub_qos} delivered twice");
            }
            let want: BTreeMap<u8, V5QoS> =
                (0..3u8).map(|pub_qos| (pub_qos, v5_qos(pub_qos.min(*sub_qos)))).collect();
            assert_eq!(got, want, "delivered QoS by publish QoS, subscription QoS {sub_qos}");
            sub.expect_no_publish(QUIET).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_thousand_qos1_messages_arrive_complete_and_in_order() {
    const N: usize = 1000;
    let Some(broker) = mqtt_broker(1, "") else { return };
    within(TEST_LIMIT, async {
        let topic = "bulk/qos1";
        let mut sub = v4(&broker, &unique_id("bulk-sub")).await;
        sub.subscribe(topic, 1).await;
        let mut publisher = v4(&broker, &unique_id("bulk-pub")).await;
        let sending = tokio::spawn(async move {
            for i in 0..N {
                publisher.publish(topic, 1, false, i.to_string().as_bytes()).await;
            }
            publisher.wait_acks(N).await;
            publisher
        });
        for i in 0..N {
            let publish = sub.next_publish(RECV).await;
            assert_eq!(publish.qos, QoS::AtLeastOnce, "message {i}");
            assert_eq!(
                std::str::from_utf8(&publish.payload).unwrap(),
                i.to_string(),
                "message {i} out of order or missing"
            );
        }
        sending.await.expect("publisher task");
        sub.expect_no_publish(QUIET).await;
    })
    .await;
}

/// Client ids are placed on shards by a hash the test cannot know: with 8 subscribers and 4
/// publishers on 2 shards, all 12 land on one shard with probability 2^-11.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_different_shards_exchange_messages() {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 25;
    let Some(broker) = mqtt_broker(2, "") else { return };
    within(TEST_LIMIT, async {
        let topic = "xshard/t";
        let mut subscribers = Vec::new();
        for i in 0..8 {
            let mut sub = v4(&broker, &unique_id(&format!("xshard-sub-{i}"))).await;
            sub.subscribe(topic, 1).await;
            subscribers.push(sub);
        }
        let mut publishers = Vec::new();
        for p in 0..PUBLISHERS {
            publishers.push(v5(&broker, &unique_id(&format!("xshard-pub-{p}"))).await);
        }
        for i in 0..PER_PUBLISHER {
            for (p, publisher) in publishers.iter().enumerate() {
                publisher.publish(topic, 1, false, format!("{p}:{i}").as_bytes()).await;
            }
        }
        for publisher in &mut publishers {
            publisher.wait_acks(PER_PUBLISHER).await;
        }
        for (s, sub) in subscribers.iter_mut().enumerate() {
            let mut next = [0usize; PUBLISHERS];
            for _ in 0..PUBLISHERS * PER_PUBLISHER {
                let publish = sub.next_publish(RECV).await;
                let text = String::from_utf8(publish.payload.to_vec()).unwrap();
                let (p, i) = text.split_once(':').unwrap();
                let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
                assert_eq!(i, next[p], "subscriber {s}: publisher {p}'s messages out of order");
                next[p] += 1;
            }
            sub.expect_no_publish(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_persistent_session_keeps_subscription_and_queues_qos1() {
    let Some(broker) = mqtt_broker(2, "") else { return };
    within(TEST_LIMIT, async {
        let topic = "persist/v4";
        let id = unique_id("v4-persistent");
        let mut options = v4_options(&broker, &id);
        options.set_clean_session(false);
        let (mut sub, connack) = V4::connect(options.clone()).await;
        assert!(!connack.session_present, "new client id with a session: {connack:?}");
        sub.subscribe(topic, 1).await;
        sub.disconnect().await;

        let mut publisher = v4(&broker, &unique_id("v4-persistent-pub")).await;
        for i in 0..10 {
            publisher.publish(topic, 1, false, format!("m{i}").as_bytes()).await;
        }
        publisher.wait_acks(10).await;

        let (mut sub, connack) = V4::connect(options.clone()).await;
        assert!(connack.session_present, "reconnect with clean session 0: {connack:?}");
        for i in 0..10 {
            let publish = sub.next_publish(RECV).await;
            assert_eq!(publish.topic, topic);
            assert_eq!(publish.qos, QoS::AtLeastOnce);
            assert_eq!(publish.payload.as_ref(), format!("m{i}").as_bytes(), "queued message {i}");
        }
        sub.expect_no_publish(QUIET).await;
        // The subscription is still there for live messages.
        publisher.publish(topic, 1, false, b"live").await;
        assert_eq!(sub.next_publish(RECV).await.payload.as_ref(), b"live");
        sub.disconnect().await;

        // Clean session 1 throws the session away.
        options.set_clean_session(true);
        let (mut sub, connack) = V4::connect(options).await;
        assert!(!connack.session_present, "clean session 1 reported a session: {connack:?}");
        publisher.publish(topic, 1, false, b"nobody").await;
        publisher.wait_acks(2).await;
        sub.expect_no_publish(QUIET).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_session_expiry_keeps_subscription_and_queues_qos1() {
    let Some(broker) = mqtt_broker(2, "") else { return };
    within(TEST_LIMIT, async {
        let topic = "persist/v5";
        let id = unique_id("v5-persistent");
        let mut options = v5_options(&broker, &id);
        options.set_clean_start(false);
        options.set_session_expiry_interval(Some(60));
        let (mut sub, connack) = V5::connect(options.clone()).await;
        assert!(!connack.session_present, "new client id with a session: {connack:?}");
        sub.subscribe(topic, 1).await;
        sub.disconnect().await;

        let mut publisher = v5(&broker, &unique_id("v5-persistent-pub")).await;
        for i in 0..10 {
            publisher.publish(topic, 1, false, format!("m{i}").as_bytes()).await;
        }
        publisher.wait_acks(10).await;

        let (mut sub, connack) = V5::connect(options.clone()).await;
        assert!(connack.session_present, "reconnect with clean start 0: {connack:?}");
        for i in 0..10 {
            let publish = sub.next_publish(RECV).await;
            assert_eq!(publish.topic.as_ref(), topic.as_bytes());
            assert_eq!(publish.qos, V5QoS::AtLeastOnce);
            assert_eq!(publish.payload.as_ref(), format!("m{i}").as_bytes(), "queued message {i}");
        }
        sub.expect_no_publish(QUIET).await;
        sub.disconnect().await;

        // Clean start 1 discards the session.
        let mut clean = options.clone();
        clean.set_clean_start(true);
        clean.set_session_expiry_interval(None);
        let (sub, connack) = V5::connect(clean).await;
        assert!(!connack.session_present, "clean start 1 reported a session: {connack:?}");
        sub.disconnect().await;
        // ... and with Session Expiry Interval 0 (absent) the session ended at that disconnect.
        publisher.publish(topic, 1, false, b"nobody").await;
        publisher.wait_acks(1).await;
        let mut resume = options;
        resume.set_session_expiry_interval(None);
        let (mut sub, connack) = V5::connect(resume).await;
        assert!(!connack.session_present, "expiry 0 session survived: {connack:?}");
        sub.expect_no_publish(QUIET).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v4_retained_message_set_received_and_cleared() {
    let Some(broker) = mqtt_broker(2, "") else { return };
    within(TEST_LIMIT, async {
        let topic = format!("retained/v4/{}", unique_id("t"));
        let mut publisher = v4(&broker, &unique_id("v4-retain-pub")).await;
        publisher.publish(&topic, 1, true, b"r1").await;
        publisher.wait_acks(1).await;

        let mut sub = v4(&broker, &unique_id("v4-retain-sub")).await;
        sub.subscribe(&topic, 1).await;
        let publish = sub.next_publish(RECV).await;
        assert_eq!(publish.payload.as_ref(), b"r1");
        assert!(publish.retain, "retained message sent on subscribe without RETAIN=1");
        assert_eq!(publish.qos, QoS::AtLeastOnce);

        // A retained publish to a live subscriber arrives with RETAIN=0 [MQTT-3.3.1-9].
        publisher.publish(&topic, 1, true, b"r2").await;
        let publish = sub.next_publish(RECV).await;
        assert_eq!(publish.payload.as_ref(), b"r2");
        assert!(!publish.retain, "live delivery with RETAIN=1");

        // An empty retained payload clears it: a new subscriber gets nothing.
        publisher.publish(&topic, 1, true, b"").await;
        publisher.wait_acks(2).await;
        let cleared = sub.next_publish(RECV).await;
        assert!(cleared.payload.is_empty());
        let mut late = v4(&broker, &unique_id("v4-retain-late")).await;
        late.subscribe(&topic, 1).await;
        late.expect_no_publish(QUIET).await;
        // A wildcard subscriber gets the last retained one of a sibling that still has one.
        let sibling = format!("{topic}/child");
        publisher.publish(&sibling, 0, true, b"kid").await;
        publisher.publish(&sibling, 1, false, b"sync").await;
        publisher.wait_acks(1).await;
        let mut wild = v4(&broker, &unique_id("v4-retain-wild")).await;
        wild.subscribe(&format!("{topic}/#"), 0).await;
        let publish = wild.next_publish(RECV).await;
        assert_eq!(publish.topic, sibling);
        assert_eq!(publish.payload.as_ref(), b"kid");
        assert!(publish.retain);
        assert_eq!(publish.qos, QoS::AtMostOnce);
        wild.expect_no_publish(QUIET).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_retained_message_set_received_and_cleared() {
    let Some(broker) = mqtt_broker(2, "") else { return };
    within(TEST_LIMIT, async {
        let topic = format!("retained/v5/{}", unique_id("t"));
        let mut publisher = v5(&broker, &unique_id("v5-retain-pub")).await;
        publisher.publish(&topic, 2, true, b"r1").await;
        publisher.wait_acks(1).await;

        let mut sub = v5(&broker, &unique_id("v5-retain-sub")).await;
        sub.subscribe(&topic, 1).await;
        let publish = sub.next_publish(RECV).await;
        assert_eq!(publish.payload.as_ref(), b"r1");
        assert!(publish.retain, "retained message sent on subscribe without RETAIN=1");
        assert_eq!(publish.qos, V5QoS::AtLeastOnce, "min(2, subscription 1)");

        publisher.publish(&topic, 1, true, b"r2").await;
        let publish = sub.next_publish(RECV).await;
        assert_eq!(publish.payload.as_ref(), b"r2");
        assert!(!publish.retain, "live delivery with RETAIN=1 without Retain As Published");

        publisher.publish(&topic, 1, true, b"").await;
        publisher.wait_acks(2).await;
        assert!(sub.next_publish(RECV).await.payload.is_empty());
        let mut late = v5(&broker, &unique_id("v5-retain-late")).await;
        late.subscribe(&topic, 2).await;
        late.expect_no_publish(QUIET).await;
    })
    .await;
}
