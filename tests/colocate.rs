//! Co-location: a NATS connection that only publishes, and whose every message goes to one
//! other shard, moves to that shard (`server.colocate_publishers`). What a user checks: no
//! message is lost, duplicated or reordered by the move, the client notices nothing, and
//! the connection works on its new shard as before. Placement is read from the in-process
//! broker's per-shard counters (isthmus only).

mod common;

use std::time::Duration;

use async_nats::Client;
use common::{counter, in_process_toml, nats_options, within};
use futures::StreamExt;
use isthmus::stats::ShardStats;

const TEST_LIMIT: Duration = Duration::from_secs(30);

fn skip() -> bool {
    if common::peer() != common::Peer::Isthmus {
        eprintln!("note: in-process isthmus test; skipped with ISTHMUS_TEST_PEER set");
        return true;
    }
    false
}

/// Connects until a client lands on `shard` (`client_id % 2`: the shard that accepted it).
async fn client_on(running: &isthmus::serve::Running, shard: usize) -> Client {
    for _ in 0..64 {
        let client = nats_options()
            .connect(running.nats_addr().to_string())
            .await
            .expect("async-nats connect");
        if client.server_info().client_id as usize % running.stats.len() == shard {
            return client;
        }
    }
    panic!("no connection landed on shard {shard}");
}

fn connections(running: &isthmus::serve::Running, shard: usize) -> u64 {
    ShardStats::get(&running.stats[shard].connections)
}

/// Publishes `count` numbered messages to `subject` in rounds of `round`, sleeping `pause`
/// between rounds.
async fn publish_numbered(
    publisher: &Client,
    subject: &str,
    count: usize,
    round: usize,
    pause: Duration,
) {
    for start in (0..count).step_by(round) {
        for i in start..(start + round).min(count) {
            publisher.publish(subject.to_string(), i.to_string().into()).await.expect("publish");
        }
        publisher.flush().await.expect("flush");
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Receives `count` messages and checks they are 0..count in order.
async fn expect_numbered(subscriber: &mut async_nats::Subscriber, count: usize) {
    for want in 0..count {
        let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
            .await
            .unwrap_or_else(|_| panic!("message {want} of {count} did not arrive"))
            .expect("subscription open");
        let got: usize = std::str::from_utf8(&message.payload).unwrap().parse().unwrap();
        assert_eq!(got, want, "lost, duplicated or reordered");
    }
}

/// Gives the broker time to act on what `client` sent (a move would have happened by then).
async fn settle(client: &Client) {
    client.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_moves_to_its_subscribers_shard_and_loses_nothing() {
    if skip() {
        return;
    }
    let running = in_process_toml(2, "");
    within(TEST_LIMIT, async {
        let subscriber = client_on(&running, 0).await;
        let mut messages = subscriber.subscribe("co.paced").await.unwrap();
        let publisher = client_on(&running, 1).await;
        common::sync_interest(&subscriber, &publisher).await;
        assert_eq!((connections(&running, 0), connections(&running, 1)), (1, 1));

        // 300 rounds 1 ms apart: well past the 20 ms streak that moves it.
        const N: usize = 30_000;
        let receiving = tokio::spawn(async move {
            expect_numbered(&mut messages, N).await;
            messages
        });
        publish_numbered(&publisher, "co.paced", N, 100, Duration::from_millis(1)).await;
        let mut messages = receiving.await.expect("receiver");

        assert_eq!(ShardStats::get(&running.stats[1].nats_moves), 1, "moved once");
        assert_eq!((connections(&running, 0), connections(&running, 1)), (2, 0));
        let crossed = counter(&running, |s| &s.mesh_msgs_out);
        assert!(crossed < N as u64, "{crossed} of {N} messages still crossed shards");

        // On its new shard the connection is a connection like any other: it subscribes and
        // is delivered to, and what it publishes still arrives in order.
        let mut own = publisher.subscribe("co.back").await.unwrap();
        common::sync_interest(&publisher, &subscriber).await;
        subscriber.publish("co.back", "hello".into()).await.unwrap();
        subscriber.flush().await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), own.next()).await;
        assert_eq!(back.expect("delivered after the move").unwrap().payload.as_ref(), b"hello");
        publish_numbered(&publisher, "co.paced", 100, 100, Duration::ZERO).await;
        expect_numbered(&mut messages, 100).await;
        assert_eq!(counter(&running, |s| &s.slow_consumers), 0);
    })
    .await;
    running.stop();
}

/// A raw NATS connection (INFO read, CONNECT sent) that landed on `shard`.
async fn raw_publisher_on(
    running: &isthmus::serve::Running,
    shard: usize,
) -> tokio::net::TcpStream {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    for _ in 0..64 {
        let stream = tokio::net::TcpStream::connect(running.nats_addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut reader = tokio::io::BufReader::new(stream);
        let mut info = String::new();
        reader.read_line(&mut info).await.unwrap();
        let json: serde_json::Value =
            serde_json::from_str(info.trim_start_matches("INFO ")).unwrap();
        if json["client_id"].as_u64().unwrap() as usize % 2 == shard {
            let mut stream = reader.into_inner();
            stream.write_all(b"CONNECT {\"verbose\":false}\r\n").await.unwrap();
            return stream;
        }
    }
    panic!("no raw connection landed on shard {shard}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_carries_the_unread_part_of_a_message() {
    use tokio::io::AsyncWriteExt;
    if skip() {
        return;
    }
    let running = in_process_toml(2, "");
    within(TEST_LIMIT, async {
        let subscriber = client_on(&running, 1).await;
        let mut messages = subscriber.subscribe("co.split").await.unwrap();
        subscriber.flush().await.unwrap();
        let mut publisher = raw_publisher_on(&running, 0).await;
        tokio::time::sleep(Duration::from_millis(50)).await;

        // Every write ends in the middle of a PUB, finished by the next write 1 ms later: a
        // read burst always ends with part of a message, so the move must carry it over.
        const N: usize = 20_000;
        let receiving = tokio::spawn(async move { expect_numbered(&mut messages, N).await });
        let mut pending = Vec::new();
        for start in (0..N).step_by(100) {
            for i in start..start + 100 {
                let payload = i.to_string();
                pending.extend_from_slice(
                    format!("PUB co.split {}\r\n{payload}\r\n", payload.len()).as_bytes(),
                );
            }
            let cut = pending.len() - 7;
            publisher.write_all(&pending[..cut]).await.unwrap();
            pending.drain(..cut);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        publisher.write_all(&pending).await.unwrap();
        receiving.await.expect("receiver");
        assert_eq!(ShardStats::get(&running.stats[0].nats_moves), 1, "moved once");
        assert_eq!((connections(&running, 0), connections(&running, 1)), (0, 2));
    })
    .await;
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_stay_with_colocation_off_with_subscriptions_or_when_fast() {
    if skip() {
        return;
    }
    for (toml, subscribed) in [
        ("[server]\ncolocate_publishers = false\n", false),
        ("", true),
        // 5,000 messages of ~20 bytes in 100 ms read far more than 1 kB/s.
        ("[server]\ncolocate_max_bytes_per_s = 1000\n", false),
    ] {
        let running = in_process_toml(2, toml);
        within(TEST_LIMIT, async {
            let subscriber = client_on(&running, 0).await;
            let mut messages = subscriber.subscribe("co.stay").await.unwrap();
            let publisher = client_on(&running, 1).await;
            // A subscription of its own (its replies, say) keeps a connection where it is:
            // moving it would mean moving the subscription too.
            let _own =
                if subscribed { Some(publisher.subscribe("co.own").await.unwrap()) } else { None };
            common::sync_interest(&subscriber, &publisher).await;
            const N: usize = 5_000;
            let receiving = tokio::spawn(async move { expect_numbered(&mut messages, N).await });
            publish_numbered(&publisher, "co.stay", N, 50, Duration::from_millis(1)).await;
            receiving.await.expect("receiver");
            settle(&publisher).await;
            assert_eq!(counter(&running, |s| &s.nats_moves), 0, "{toml:?} subscribed={subscribed}");
            assert_eq!((connections(&running, 0), connections(&running, 1)), (1, 1));
        })
        .await;
        running.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_does_not_move_to_a_shard_with_more_connections() {
    if skip() {
        return;
    }
    let running = in_process_toml(2, "");
    within(TEST_LIMIT, async {
        // Two connections on the subscriber's shard, one on the publisher's: the move would
        // leave three against none, so the publisher stays (as the publishers of a fan-in do).
        let subscriber = client_on(&running, 0).await;
        let _idle = client_on(&running, 0).await;
        let mut messages = subscriber.subscribe("co.full").await.unwrap();
        let publisher = client_on(&running, 1).await;
        common::sync_interest(&subscriber, &publisher).await;
        const N: usize = 5_000;
        let receiving = tokio::spawn(async move { expect_numbered(&mut messages, N).await });
        publish_numbered(&publisher, "co.full", N, 50, Duration::from_millis(1)).await;
        receiving.await.expect("receiver");
        settle(&publisher).await;
        assert_eq!(counter(&running, |s| &s.nats_moves), 0);
        assert_eq!((connections(&running, 0), connections(&running, 1)), (2, 1));
    })
    .await;
    running.stop();
}

/// One publisher whose messages alternate between a subject with subscribers only on its own
/// shard (delivered straight from its read buffer, `nats::publish_in_place`) and one with a
/// subscriber on the other shard too (the general path, cut into `Bytes`, and the in-place
/// attempts' back-off): every subscriber gets its messages complete and in order, and the one
/// subscribed to both sees them interleaved as they were published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_place_and_routed_publishes_of_one_connection_keep_their_order() {
    if skip() {
        return;
    }
    let running = in_process_toml(2, "[server]\ncolocate_publishers = false\n");
    within(TEST_LIMIT, async {
        const N: usize = 3_000;
        let here = client_on(&running, 0).await;
        let mut all = here.subscribe("mix.>").await.unwrap();
        let mut local = here.subscribe("mix.local").await.unwrap();
        let there = client_on(&running, 1).await;
        let mut remote = there.subscribe("mix.remote").await.unwrap();
        let publisher = client_on(&running, 0).await;
        common::sync_interest(&here, &publisher).await;
        common::sync_interest(&there, &publisher).await;
        // Runs of 1 to 6 local messages between remote ones, so attempts decline, back off
        // and resume.
        let is_local = |i: usize| i % 7 < 1 + i / 7 % 6;
        let receiving = tokio::spawn(async move {
            let (mut got_all, mut got_local, mut got_remote): (Vec<usize>, Vec<usize>, Vec<usize>) =
                Default::default();
            for (subscriber, got, want) in [
                (&mut all, &mut got_all, N),
                (&mut local, &mut got_local, (0..N).filter(|i| is_local(*i)).count()),
                (&mut remote, &mut got_remote, (0..N).filter(|i| !is_local(*i)).count()),
            ] {
                while got.len() < want {
                    let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
                        .await
                        .unwrap_or_else(|_| panic!("{} of {want} arrived", got.len()))
                        .expect("subscription open");
                    got.push(std::str::from_utf8(&message.payload).unwrap().parse().unwrap());
                }
            }
            (got_all, got_local, got_remote)
        });
        for i in 0..N {
            let subject = if is_local(i) { "mix.local" } else { "mix.remote" };
            publisher.publish(subject, i.to_string().into()).await.unwrap();
        }
        publisher.flush().await.unwrap();
        let (got_all, got_local, got_remote) = receiving.await.unwrap();
        assert_eq!(got_all, (0..N).collect::<Vec<usize>>(), "mix.> lost or reordered");
        assert_eq!(got_local, (0..N).filter(|i| is_local(*i)).collect::<Vec<usize>>());
        assert_eq!(got_remote, (0..N).filter(|i| !is_local(*i)).collect::<Vec<usize>>());
        assert_eq!(counter(&running, |s| &s.nats_moves), 0, "the publisher stayed");
    })
    .await;
    running.stop();
}

// ---------------------------------------------------------------------------------------------
// MQTT publishers move with their session; their client id follows them.

use common::mqtt::{connect_packet, publish_packet, RawMqtt};
use isthmus::protocol::mqtt::codec::encode;
use isthmus::protocol::mqtt::interop::home_shard;
use isthmus::protocol::mqtt::packet::{Packet, QoS, Version, Will, WillProperties};

/// A client id whose home is `shard` of `shards`.
fn id_at_home(shard: usize, shards: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| home_shard(id.as_bytes(), shards) == shard)
        .unwrap()
}

fn gauge(
    running: &isthmus::serve::Running,
    shard: usize,
    field: fn(&ShardStats) -> &std::sync::atomic::AtomicU64,
) -> u64 {
    ShardStats::get(field(&running.stats[shard]))
}

/// Waits up to 5 s for `check`.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("not within 5 s: {what}");
}

/// Publishes `count` numbered QoS 0 messages to `topic` in rounds of 100, 1 ms apart.
async fn mqtt_publish_numbered(publisher: &mut RawMqtt, topic: &str, from: usize, count: usize) {
    let mut out = bytes::BytesMut::new();
    for start in (from..from + count).step_by(100) {
        out.clear();
        for i in start..(start + 100).min(from + count) {
            let publish = publish_packet(topic, QoS::AtMostOnce, 0, i.to_string().as_bytes());
            encode(&Packet::Publish(publish), publisher.version, &mut out);
        }
        publisher.send_bytes(&out).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// An MQTT publisher whose QoS 0 messages alternate between a topic with only a NATS
/// subscriber (delivered from its read buffer, `mqtt::publish_in_place`) and a topic with an
/// MQTT subscriber too (the general path, and the attempts' back-off), in 3.1.1 and 5.0, on
/// one shard: the NATS subscriber of both gets every message in order with the same
/// `Nmqtt-Pub` header either way, the MQTT subscriber its own in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_in_place_and_routed_publishes_keep_their_order_and_headers() {
    if skip() {
        return;
    }
    let running = in_process_toml(1, "");
    let addr = running.mqtt_addr().to_string();
    within(TEST_LIMIT, async {
        for version in [Version::V3_1_1, Version::V5_0] {
            const N: usize = 2_000;
            let nats = client_on(&running, 0).await;
            let mut all = nats.subscribe("mqttmix.>").await.unwrap();
            nats.flush().await.unwrap();
            let (mut device, _) = RawMqtt::connect_as(&addr, version, "mix-sub", true).await;
            device.subscribe("mqttmix/mqtt", QoS::AtMostOnce).await;
            let (mut publisher, _) = RawMqtt::connect_as(&addr, version, "mix-pub", true).await;
            let to_nats_only = |i: usize| i % 7 < 1 + i / 7 % 6;
            let mut out = bytes::BytesMut::new();
            for i in 0..N {
                let topic = if to_nats_only(i) { "mqttmix/nats" } else { "mqttmix/mqtt" };
                let publish = publish_packet(topic, QoS::AtMostOnce, 0, i.to_string().as_bytes());
                encode(&Packet::Publish(publish), version, &mut out);
            }
            publisher.send_bytes(&out).await;
            for want in 0..N {
                let message = tokio::time::timeout(Duration::from_secs(10), all.next())
                    .await
                    .unwrap_or_else(|_| panic!("{version:?}: message {want} did not arrive"))
                    .unwrap();
                let got: usize = std::str::from_utf8(&message.payload).unwrap().parse().unwrap();
                assert_eq!(got, want, "{version:?}: lost, duplicated or reordered");
                let subject = if to_nats_only(want) { "mqttmix.nats" } else { "mqttmix.mqtt" };
                assert_eq!(message.subject.as_str(), subject);
                let headers = message.headers.expect("Nmqtt-Pub header");
                assert_eq!(headers.get("Nmqtt-Pub").map(|v| v.as_str()), Some("0"));
            }
            for want in (0..N).filter(|i| !to_nats_only(*i)) {
                let publish = device.expect_publish(Duration::from_secs(10)).await;
                assert_eq!(&publish.payload[..], want.to_string().as_bytes(), "{version:?}");
            }
            device.disconnect().await;
            publisher.disconnect().await;
        }
    })
    .await;
    running.stop();
}

/// A NATS subscriber of `subject` on shard 1, and a 5.0 MQTT publisher connected as a client
/// id whose home is shard 0 (of `shards`). Returns the subscriber's client (keep it), its
/// subscription, the publisher and its client id.
async fn subscriber_and_publisher(
    running: &isthmus::serve::Running,
    shards: usize,
    subject: &str,
    client_id: &str,
) -> (Client, async_nats::Subscriber, RawMqtt, String) {
    let subscriber = client_on(running, 1).await;
    let messages = subscriber.subscribe(subject.to_string()).await.unwrap();
    subscriber.flush().await.unwrap();
    let id = id_at_home(0, shards, client_id);
    let mqtt = running.mqtt_addr().to_string();
    let (publisher, _) = RawMqtt::connect_as(&mqtt, Version::V5_0, &id, true).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    (subscriber, messages, publisher, id)
}

/// Publishes `count` numbered QoS 0 messages from `publisher` to `topic` (paced, so that it
/// moves), checks that `messages` gets every one in order, and that the publisher moved once,
/// from shard 0. Returns `messages` for more.
async fn publish_numbered_and_move(
    running: &isthmus::serve::Running,
    publisher: &mut RawMqtt,
    topic: &str,
    mut messages: async_nats::Subscriber,
    count: usize,
) -> async_nats::Subscriber {
    let receiving = tokio::spawn(async move {
        expect_numbered(&mut messages, count).await;
        messages
    });
    mqtt_publish_numbered(publisher, topic, 0, count).await;
    let messages = receiving.await.expect("receiver");
    assert_eq!(gauge(running, 0, |s| &s.mqtt_moves), 1, "moved once");
    messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_publisher_moves_with_its_session_and_its_client_id_follows() {
    if skip() {
        return;
    }
    let running = in_process_toml(2, "");
    let mqtt = running.mqtt_addr().to_string();
    within(TEST_LIMIT, async {
        let (_subscriber, messages, mut publisher, id) =
            subscriber_and_publisher(&running, 2, "co.mqtt", "co-pub").await;
        let mut messages =
            publish_numbered_and_move(&running, &mut publisher, "co/mqtt", messages, 20_000).await;
        assert_eq!((connections(&running, 0), connections(&running, 1)), (0, 2));
        assert_eq!(
            (gauge(&running, 0, |s| &s.mqtt_sessions), gauge(&running, 1, |s| &s.mqtt_sessions)),
            (0, 1)
        );

        // The same client id again: the home shard forwards it to the session, which is
        // taken over there (the moved connection is told, 0x8E), and it publishes on.
        let (mut second, _) = RawMqtt::connect_as(&mqtt, Version::V5_0, &id, true).await;
        publisher.expect_disconnect(0x8E).await;
        assert_eq!(counter(&running, |s| &s.mqtt_takeovers), 1);
        let publish = publish_packet("co/mqtt", QoS::AtMostOnce, 0, b"0");
        second.send(&Packet::Publish(publish)).await;
        expect_numbered(&mut messages, 1).await;
        assert_eq!(gauge(&running, 1, |s| &s.mqtt_sessions), 1);

        // Once that session ends, the client id is at home again.
        second.disconnect().await;
        eventually("the moved session ended", || gauge(&running, 1, |s| &s.mqtt_sessions) == 0)
            .await;
        let (_third, _) = RawMqtt::connect_as(&mqtt, Version::V3_1_1, &id, true).await;
        eventually("a new session at home", || gauge(&running, 0, |s| &s.mqtt_sessions) == 1).await;
        assert_eq!(gauge(&running, 1, |s| &s.mqtt_sessions), 0);
    })
    .await;
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_mqtt_publisher_that_drops_sends_its_will() {
    if skip() {
        return;
    }
    let running = in_process_toml(2, "");
    let mqtt = running.mqtt_addr().to_string();
    within(TEST_LIMIT, async {
        let subscriber = client_on(&running, 1).await;
        let messages = subscriber.subscribe("co.willed").await.unwrap();
        let mut wills = subscriber.subscribe("co.will").await.unwrap();
        subscriber.flush().await.unwrap();
        let id = id_at_home(0, 2, "co-will");
        let mut connect = connect_packet(Version::V3_1_1, &id, true);
        connect.will = Some(Will {
            topic: "co/will".into(),
            payload: "gone".into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        });
        let (mut publisher, _) = RawMqtt::handshake(&mqtt, connect).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        publish_numbered_and_move(&running, &mut publisher, "co/willed", messages, 5_000).await;
        // The socket closes without DISCONNECT: the shard it moved to publishes the will.
        drop(publisher);
        let will = tokio::time::timeout(Duration::from_secs(5), wills.next()).await;
        assert_eq!(will.expect("the will").unwrap().payload.as_ref(), b"gone");
        assert_eq!(gauge(&running, 1, |s| &s.mqtt_wills_published), 1);
    })
    .await;
    running.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_accepted_on_a_third_shard_reaches_the_moved_session_through_its_home() {
    if skip() {
        return;
    }
    // Three shards: home 0, moved to 1; a CONNECT accepted on 2 goes home first, and home
    // forwards it to 1.
    let running = in_process_toml(3, "");
    let mqtt = running.mqtt_addr().to_string();
    within(TEST_LIMIT, async {
        let (_subscriber, messages, mut publisher, id) =
            subscriber_and_publisher(&running, 3, "co.third", "co-third").await;
        let mut messages =
            publish_numbered_and_move(&running, &mut publisher, "co/third", messages, 5_000).await;
        // Reconnect with the same client id until the kernel hands a connection to shard 2
        // (its hand-off counter moves); each takes the session over where it is.
        let mut current = publisher;
        for attempt in 0..64 {
            let before = gauge(&running, 2, |s| &s.mqtt_handoffs);
            let (next, _) = RawMqtt::connect_as(&mqtt, Version::V5_0, &id, false).await;
            current.expect_disconnect(0x8E).await;
            current = next;
            if gauge(&running, 2, |s| &s.mqtt_handoffs) > before {
                break;
            }
            assert!(attempt < 63, "no connection was accepted on shard 2");
        }
        assert_eq!(
            (0..3).map(|s| gauge(&running, s, |s| &s.mqtt_sessions)).collect::<Vec<_>>(),
            [0, 1, 0]
        );
        let publish = publish_packet("co/third", QoS::AtMostOnce, 0, b"0");
        current.send(&Packet::Publish(publish)).await;
        expect_numbered(&mut messages, 1).await;
    })
    .await;
    running.stop();
}

/// Subscribes `raw` to `filter` with `options` and subscription identifier `identifier` (0:
/// none), and checks the SUBACK grants the QoS asked for.
async fn subscribe_with(
    raw: &mut RawMqtt,
    filter: &str,
    options: isthmus::protocol::mqtt::packet::SubscriptionOptions,
    identifier: u32,
) {
    use isthmus::protocol::mqtt::packet::{Subscribe, SubscribeProperties};
    let packet_id = raw.packet_id();
    let properties = SubscribeProperties {
        subscription_identifier: (identifier != 0).then_some(identifier),
        ..Default::default()
    };
    let subscribe = Subscribe {
        packet_id,
        filters: vec![(bytes::Bytes::copy_from_slice(filter.as_bytes()), options)],
        properties,
    };
    raw.send(&Packet::Subscribe(subscribe)).await;
    match raw.expect_packet(Duration::from_secs(5)).await {
        Packet::SubAck(suback) => {
            assert_eq!(suback.reason_codes.len(), 1);
            assert_eq!(suback.reason_codes[0].0, options.qos as u8, "{filter}: granted QoS");
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

/// On one shard, every QoS 0 publish below reaches its MQTT subscribers without a `Message`
/// (`Shard::deliver_in_place`) unless a subscriber keeps it at QoS 1. What a 5.0 subscriber
/// checks must not change with the path: order, the Subscription Identifier, No Local, `$`
/// topics under a filter that starts with a wildcard, the QoS 1 a NATS publish gets from a
/// QoS 1 subscription, and NATS headers as user properties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_subscribers_served_in_place_see_what_the_general_path_gives() {
    use isthmus::protocol::mqtt::packet::SubscriptionOptions;
    if skip() {
        return;
    }
    let running = in_process_toml(1, "");
    let addr = running.mqtt_addr().to_string();
    within(TEST_LIMIT, async {
        let (mut device, _) = RawMqtt::connect_as(&addr, Version::V5_0, "ip-sub", true).await;
        subscribe_with(&mut device, "ip/+", SubscriptionOptions::with_qos(QoS::AtMostOnce), 7)
            .await;
        subscribe_with(&mut device, "+/d", SubscriptionOptions::with_qos(QoS::AtMostOnce), 0).await;
        let (mut reliable, _) = RawMqtt::connect_as(&addr, Version::V5_0, "ip-q1", true).await;
        subscribe_with(&mut reliable, "q1/x", SubscriptionOptions::with_qos(QoS::AtLeastOnce), 0)
            .await;
        let (mut publisher, _) = RawMqtt::connect_as(&addr, Version::V5_0, "ip-pub", true).await;
        let no_local = SubscriptionOptions {
            no_local: true,
            ..SubscriptionOptions::with_qos(QoS::AtMostOnce)
        };
        subscribe_with(&mut publisher, "ip/+", no_local, 0).await;

        // MQTT QoS 0 to MQTT QoS 0, the same topic over and over (the in-place case).
        const N: usize = 3_000;
        let mut out = bytes::BytesMut::new();
        for i in 0..N {
            let publish = publish_packet("ip/a", QoS::AtMostOnce, 0, i.to_string().as_bytes());
            encode(&Packet::Publish(publish), Version::V5_0, &mut out);
        }
        publisher.send_bytes(&out).await;
        for want in 0..N {
            let publish = device.expect_publish(Duration::from_secs(10)).await;
            assert_eq!(&publish.payload[..], want.to_string().as_bytes(), "lost or reordered");
            assert_eq!(publish.qos, QoS::AtMostOnce);
            let ids = publish.properties.as_ref().map(|p| p.subscription_identifiers.clone());
            assert_eq!(ids, Some(vec![7]), "message {want}: Subscription Identifier");
        }
        // No Local: the publisher's own subscription got none of them.
        publisher.expect_nothing(Duration::from_millis(200)).await;

        // `+/d` matches `x/d` but not `$x/d` [MQTT-4.7.2-1].
        for topic in ["$x/d", "x/d", "$x/d", "x/d"] {
            publisher.publish(topic, QoS::AtMostOnce, topic.as_bytes()).await;
        }
        for _ in 0..2 {
            let publish = device.expect_publish(Duration::from_secs(5)).await;
            assert_eq!(&publish.topic[..], b"x/d");
        }
        device.expect_nothing(Duration::from_millis(200)).await;

        // A NATS publish reaches a QoS 1 subscription at QoS 1; an MQTT QoS 0 one at QoS 0.
        let nats = client_on(&running, 0).await;
        for i in 0..3 {
            nats.publish("q1.x", format!("n{i}").into()).await.unwrap();
        }
        nats.flush().await.unwrap();
        for i in 0..3 {
            let publish = reliable.expect_publish(Duration::from_secs(5)).await;
            assert_eq!(publish.qos, QoS::AtLeastOnce, "NATS publish {i} at the subscription's QoS");
            assert_eq!(&publish.payload[..], format!("n{i}").as_bytes());
            reliable.send(&Packet::PubAck(common::mqtt::ack(publish.packet_id))).await;
        }
        publisher.publish("q1/x", QoS::AtMostOnce, b"m").await;
        let publish = reliable.expect_publish(Duration::from_secs(5)).await;
        assert_eq!((publish.qos, &publish.payload[..]), (QoS::AtMostOnce, &b"m"[..]));

        // NATS headers arrive as user properties, PUB and HPUB interleaved on one subject.
        for i in 0..20 {
            if i % 2 == 0 {
                nats.publish("ip.h", format!("{i}").into()).await.unwrap();
            } else {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("unit", format!("u{i}").as_str());
                nats.publish_with_headers("ip.h", headers, format!("{i}").into()).await.unwrap();
            }
        }
        nats.flush().await.unwrap();
        for i in 0..20 {
            let publish = device.expect_publish(Duration::from_secs(5)).await;
            assert_eq!(&publish.payload[..], format!("{i}").as_bytes());
            let properties = publish.properties.expect("Subscription Identifier at least");
            assert_eq!(properties.subscription_identifiers, vec![7]);
            let users: Vec<(&[u8], &[u8])> =
                properties.user_properties.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            if i % 2 == 0 {
                assert!(users.is_empty(), "message {i}: {users:?}");
            } else {
                assert_eq!(users, vec![(&b"unit"[..], format!("u{i}").as_bytes())], "message {i}");
            }
        }
        assert_eq!(counter(&running, |s| &s.mqtt_dropped_qos0), 0);
        device.disconnect().await;
        reliable.disconnect().await;
        publisher.disconnect().await;
    })
    .await;
    running.stop();
}
