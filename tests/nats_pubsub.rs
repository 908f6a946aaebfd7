//! Pub/sub behaviour seen through the official async-nats client, across shards.
//!
//! Run against the reference server with `ISTHMUS_TEST_PEER=nats-server`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::HeaderMap;
use common::*;
use futures::{FutureExt, StreamExt};

const TEST_LIMIT: Duration = Duration::from_secs(30);
const RECV: Duration = Duration::from_secs(5);

async fn next_msg(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(RECV, sub.next())
        .await
        .expect("message within 5 s")
        .expect("subscription still open")
}

/// Everything already delivered to this subscriber's channel, without waiting.
fn take_ready(sub: &mut async_nats::Subscriber) -> Vec<async_nats::Message> {
    let mut out = Vec::new();
    while let Some(Some(msg)) = sub.next().now_or_never() {
        out.push(msg);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_subscriber_on_other_shard_and_same_shard() {
    let broker = Broker::start(2, "");
    within(TEST_LIMIT, async {
        let publisher = nats_on_shard(&broker, 0).await;
        let remote = nats_on_shard(&broker, 1).await;
        let local = nats_on_shard(&broker, 0).await;
        let mut remote_sub = remote.subscribe("greet.hello").await.unwrap();
        let mut local_sub = local.subscribe("greet.hello").await.unwrap();
        sync_interest(&remote, &publisher).await;
        sync_interest(&local, &publisher).await;

        publisher.publish("greet.hello", "world".into()).await.unwrap();
        publisher.publish("greet.other", "nobody".into()).await.unwrap();
        publisher.publish("greet.hello", "again".into()).await.unwrap();
        publisher.flush().await.unwrap();

        for sub in [&mut remote_sub, &mut local_sub] {
            let first = next_msg(sub).await;
            assert_eq!(first.subject.as_str(), "greet.hello");
            assert_eq!(first.payload.as_ref(), b"world");
            assert!(first.reply.is_none());
            let second = next_msg(sub).await;
            assert_eq!(second.payload.as_ref(), b"again", "greet.other must not be delivered");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_match_and_do_not_match() {
    let broker = Broker::start(2, "");
    within(TEST_LIMIT, async {
        let publisher = nats_on_shard(&broker, 0).await;
        let filters = ["foo.*", "foo.>", "foo.*.baz", "*.bar", ">", "foo.bar"];
        let published = [
            "foo",
            "foo.bar",
            "foo.bar.baz",
            "foo.qux.baz",
            "foo.bar.qux",
            "x.bar",
            "x.bar.y",
            "foox.bar",
            "foo.bar.baz.deep",
        ];
        let expected: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
            ("foo.*", vec!["foo.bar"]),
            (
                "foo.>",
                vec!["foo.bar", "foo.bar.baz", "foo.qux.baz", "foo.bar.qux", "foo.bar.baz.deep"],
            ),
            ("foo.*.baz", vec!["foo.bar.baz", "foo.qux.baz"]),
            ("*.bar", vec!["foo.bar", "x.bar", "foox.bar"]),
            (">", published.to_vec()),
            ("foo.bar", vec!["foo.bar"]),
        ]);
        // One subscriber connection per shard, each with every filter plus a `done` marker.
        for shard in [1, 0] {
            let client = nats_on_shard(&broker, shard).await;
            let mut subs = Vec::new();
            for filter in filters {
                subs.push((filter, client.subscribe(filter).await.unwrap()));
            }
            let mut done = client.subscribe("wild.done").await.unwrap();
            sync_interest(&client, &publisher).await;

            for subject in published {
                publisher.publish(subject, subject.into()).await.unwrap();
            }
            publisher.publish("wild.done", "".into()).await.unwrap();
            publisher.flush().await.unwrap();

            // Messages from one publisher arrive in order, and async-nats hands them to the
            // subscription channels in wire order: once `wild.done` is here, everything
            // published before it is already in the other channels.
            next_msg(&mut done).await;
            for (filter, sub) in &mut subs {
                let got: Vec<String> = take_ready(sub)
                    .into_iter()
                    .filter(|m| m.subject.as_str() != "wild.done")
                    .filter(|m| !m.subject.starts_with("_INBOX.")) // sync_interest probes
                    .map(|m| {
                        assert_eq!(m.payload.as_ref(), m.subject.as_bytes());
                        m.subject.to_string()
                    })
                    .collect();
                assert_eq!(got, expected[filter], "filter {filter} on shard {shard}");
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_group_members_on_different_shards_share_the_work() {
    const N: u32 = 2000;
    let broker = Broker::start(2, "");
    within(TEST_LIMIT, async {
        let member0 = nats_on_shard(&broker, 0).await;
        let member1 = nats_on_shard(&broker, 1).await;
        let watcher = nats_on_shard(&broker, 1).await;
        let publisher = nats_on_shard(&broker, 0).await;
        let mut q0 = member0.queue_subscribe("jobs.work", "workers".into()).await.unwrap();
        let mut q1 = member1.queue_subscribe("jobs.work", "workers".into()).await.unwrap();
        let mut all = watcher.subscribe("jobs.work").await.unwrap();
        for c in [&member0, &member1, &watcher] {
            sync_interest(c, &publisher).await;
        }

        for i in 0..N {
            publisher.publish("jobs.work", i.to_string().into()).await.unwrap();
        }
        publisher.flush().await.unwrap();

        // A plain subscriber sees every message; once it has all N, in order, the queue
        // members' shares are at most a mesh hop behind.
        for i in 0..N {
            let msg = next_msg(&mut all).await;
            assert_eq!(msg.payload.as_ref(), i.to_string().as_bytes());
        }
        let mut seen = BTreeSet::new();
        let (mut n0, mut n1) = (0u32, 0u32);
        let deadline = tokio::time::Instant::now() + RECV;
        while n0 + n1 < N {
            let (msg, from0) = tokio::select! {
                m = q0.next() => (m.expect("member 0 open"), true),
                m = q1.next() => (m.expect("member 1 open"), false),
                _ = tokio::time::sleep_until(deadline) => {
                    panic!("queue members got {} of {N} (member0 {n0}, member1 {n1})", n0 + n1)
                }
            };
            if from0 {
                n0 += 1
            } else {
                n1 += 1
            }
            let i: u32 = std::str::from_utf8(&msg.payload).unwrap().parse().unwrap();
            assert!(seen.insert(i), "message {i} delivered twice to the queue group");
        }
        // Nothing extra trickles in afterwards.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let extra = take_ready(&mut q0).len() + take_ready(&mut q1).len();
        assert_eq!(extra, 0, "queue group got more than {N} messages");
        assert_eq!(seen.len() as u32, N);
        assert!(n0 > 0 && n1 > 0, "both members must get work: member0 {n0}, member1 {n1}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_across_shards() {
    let broker = Broker::start(2, "");
    within(TEST_LIMIT, async {
        let responder = nats_on_shard(&broker, 0).await;
        let requester = nats_on_shard(&broker, 1).await;
        let mut service = responder.subscribe("svc.upper").await.unwrap();
        sync_interest(&responder, &requester).await;
        let serving = tokio::spawn({
            let responder = responder.clone();
            async move {
                while let Some(req) = service.next().await {
                    let reply = req.reply.expect("request carries a reply subject");
                    let body = String::from_utf8_lossy(&req.payload).to_uppercase();
                    responder.publish(reply, body.into()).await.unwrap();
                    responder.flush().await.unwrap();
                }
            }
        });
        for i in 0..20 {
            let answer = tokio::time::timeout(
                RECV,
                requester.request("svc.upper", format!("hello {i}").into()),
            )
            .await
            .expect("reply within 5 s")
            .expect("request succeeds");
            assert_eq!(answer.payload.as_ref(), format!("HELLO {i}").as_bytes());
        }
        serving.abort();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_round_trip_with_multiple_values() {
    let broker = Broker::start(2, "");
    within(TEST_LIMIT, async {
        let publisher = nats_on_shard(&broker, 0).await;
        let subscriber = nats_on_shard(&broker, 1).await;
        assert!(subscriber.server_info().headers, "INFO must advertise headers support");
        let mut sub = subscriber.subscribe("hdr.test").await.unwrap();
        sync_interest(&subscriber, &publisher).await;

        let mut headers = HeaderMap::new();
        headers.insert("X-Single", "one");
        headers.append("X-Multi", "first");
        headers.append("X-Multi", "second");
        headers.insert("X-Spaces", "a value with spaces");
        publisher.publish_with_headers("hdr.test", headers, "body".into()).await.unwrap();
        // Headers with an empty payload are still a header message.
        let mut only = HeaderMap::new();
        only.insert("X-Only", "yes");
        publisher.publish_with_headers("hdr.test", only, "".into()).await.unwrap();
        publisher.flush().await.unwrap();

        let msg = next_msg(&mut sub).await;
        assert_eq!(msg.payload.as_ref(), b"body");
        let got = msg.headers.expect("headers delivered");
        assert_eq!(got.get("X-Single").map(|v| v.as_str()), Some("one"));
        let multi: Vec<&str> = got.get_all("X-Multi").map(|v| v.as_str()).collect();
        assert_eq!(multi, ["first", "second"]);
        assert_eq!(got.get("X-Spaces").map(|v| v.as_str()), Some("a value with spaces"));
        assert!(got.get("X-Absent").is_none());

        let msg = next_msg(&mut sub).await;
        assert!(msg.payload.is_empty());
        let got = msg.headers.expect("headers delivered with empty payload");
        assert_eq!(got.get("X-Only").map(|v| v.as_str()), Some("yes"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_after_max_messages() {
    let broker = Broker::start(2, "");
    within(TEST_LIMIT, async {
        let publisher = nats_on_shard(&broker, 0).await;
        let subscriber = nats_on_shard(&broker, 1).await;
        let mut limited = subscriber.subscribe("unsub.max").await.unwrap();
        let mut unlimited = subscriber.subscribe("unsub.max").await.unwrap();
        limited.unsubscribe_after(3).await.unwrap();
        sync_interest(&subscriber, &publisher).await;

        for i in 0..10 {
            publisher.publish("unsub.max", i.to_string().into()).await.unwrap();
        }
        publisher.flush().await.unwrap();

        for i in 0..10 {
            assert_eq!(next_msg(&mut unlimited).await.payload.as_ref(), i.to_string().as_bytes());
        }
        for i in 0..3 {
            assert_eq!(next_msg(&mut limited).await.payload.as_ref(), i.to_string().as_bytes());
        }
        let end = tokio::time::timeout(RECV, limited.next()).await.expect("stream ends");
        assert!(end.is_none(), "subscription must end after 3 messages, got {end:?}");
    })
    .await;
}

/// The same with raw bytes, so the server (not the client library) is what stops delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stops_delivery_after_unsub_max() {
    let broker = Broker::start(2, "");
    within(TEST_LIMIT, async {
        let mut subscriber = raw_on_shard(&broker, 1).await;
        let mut publisher = raw_on_shard(&broker, 0).await;
        subscriber.send(b"SUB raw.max 7\r\nUNSUB 7 2\r\nSUB raw.end 8\r\nPING\r\n").await;
        subscriber.expect_line("PONG", RECV).await;
        publisher
            .send(b"PUB raw.max 1\r\na\r\nPUB raw.max 1\r\nb\r\nPUB raw.max 1\r\nc\r\nPUB raw.end 0\r\n\r\nPING\r\n")
            .await;
        publisher.expect_line("PONG", RECV).await;
        subscriber.expect_msg("raw.max", b"a", RECV).await;
        subscriber.expect_msg("raw.max", b"b", RECV).await;
        // One publisher's messages arrive in order: the end marker comes where `c` would have.
        subscriber.expect_msg("raw.end", b"", RECV).await;
        subscriber.send(b"PING\r\n").await;
        subscriber.expect_line("PONG", RECV).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_without_responders_fails_fast() {
    let broker = Broker::start(2, "");
    within(TEST_LIMIT, async {
        let client = nats_connect(&broker).await;
        let started = std::time::Instant::now();
        let err =
            client.request("nobody.listens.here", "ping".into()).await.expect_err("no responders");
        assert_eq!(err.kind(), RequestErrorKind::NoResponders, "{err:?}");
        // The default request timeout is 10 s; a no-responders answer must come long before.
        assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_pipelined_burst_arrives_complete_and_in_order() {
    const PUBLISHERS: usize = 2;
    const PER_PUBLISHER: u32 = 50_000;
    const TOTAL: usize = PUBLISHERS * PER_PUBLISHER as usize;
    let broker = Broker::start(2, "");
    within(Duration::from_secs(45), async {
        let subscriber = nats_on_shard(&broker, 1).await;
        let mut sub = subscriber.subscribe("burst.>").await.unwrap();
        let counting = tokio::spawn(async move {
            let mut next = [0u32; PUBLISHERS];
            let mut count = 0usize;
            while count < TOTAL {
                let Ok(msg) = tokio::time::timeout(Duration::from_secs(10), sub.next()).await
                else {
                    panic!("stalled after {count} of {TOTAL} messages (next seq {next:?})");
                };
                let msg = msg.expect("subscription open");
                let p: usize = msg.subject.as_str().rsplit('.').next().unwrap().parse().unwrap();
                let seq: u32 = std::str::from_utf8(&msg.payload).unwrap().parse().unwrap();
                assert_eq!(seq, next[p], "publisher {p}: out of order or lost");
                next[p] += 1;
                count += 1;
            }
            // Nothing beyond the expected count.
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert!(sub.next().now_or_never().is_none(), "more than {TOTAL} messages");
            count
        });

        let mut publishers = Vec::new();
        for p in 0..PUBLISHERS {
            let client = nats_on_shard(&broker, 0).await;
            sync_interest(&subscriber, &client).await;
            publishers.push(tokio::spawn(async move {
                let subject = format!("burst.{p}");
                for seq in 0..PER_PUBLISHER {
                    client.publish(subject.clone(), seq.to_string().into()).await.unwrap();
                }
                client.flush().await.unwrap();
            }));
        }
        for p in publishers {
            p.await.unwrap();
        }
        assert_eq!(counting.await.unwrap(), TOTAL);
    })
    .await;
}
