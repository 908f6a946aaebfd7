"""Publish/subscribe as a nats-py user sees it, publisher and subscribers on different shards."""

import asyncio

import pytest

from harness import Collector, RawClient, connect, connect_on_shard, sync, wait_until


async def test_pub_sub_delivers_in_order_and_only_matching_subject(broker):
    sub_nc = await connect(broker)
    pub_nc = await connect(broker)
    got = Collector()
    await sub_nc.subscribe("greet.joe", cb=got.cb)
    await sync(sub_nc)

    await pub_nc.publish("greet.ann", b"not for joe")
    for i in range(5):
        await pub_nc.publish("greet.joe", b"hello %d" % i)
    await pub_nc.publish("greet.joe", b"")  # empty payloads are messages too
    await sync(pub_nc)

    assert await wait_until(lambda: got.count() >= 6, 5), got.data
    await asyncio.sleep(0.1)
    assert got.data == [b"hello 0", b"hello 1", b"hello 2", b"hello 3", b"hello 4", b""]
    assert {m.subject for m in got.msgs} == {"greet.joe"}


async def test_wildcards_match_and_do_not_match(broker):
    pub_nc = await connect_on_shard(broker, broker.shard(0))
    filters = ["foo.*", "foo.>", "foo.*.baz", "*.bar", ">", "foo.bar"]
    collectors, sentinels = {}, []
    for index, subject_filter in enumerate(filters):
        nc = await connect_on_shard(broker, broker.shard(index))
        collectors[subject_filter] = Collector()
        await nc.subscribe(subject_filter, cb=collectors[subject_filter].cb)
        sentinels.append(Collector())
        await nc.subscribe("done", cb=sentinels[-1].cb)
        await sync(nc)

    subjects = ["foo", "foo.bar", "foo.bar.baz", "foo.bar.qux", "bar.foo", "x.bar", "foo.bar.baz.q"]
    for subject in subjects:
        await pub_nc.publish(subject, subject.encode())
    await pub_nc.publish("done", b"done")
    await sync(pub_nc)

    expected = {
        "foo.*": ["foo.bar"],
        "foo.>": ["foo.bar", "foo.bar.baz", "foo.bar.qux", "foo.bar.baz.q"],
        "foo.*.baz": ["foo.bar.baz"],
        "*.bar": ["foo.bar", "x.bar"],
        ">": subjects + ["done"],
        "foo.bar": ["foo.bar"],
    }
    # Messages from one publisher arrive in order, so once a connection has "done" it has had
    # every match it will ever get.
    assert await wait_until(lambda: all(s.count() == 1 for s in sentinels), 5)
    for subject_filter, want in expected.items():
        got = [m.subject for m in collectors[subject_filter].msgs]
        assert got == want, f"filter {subject_filter!r}: got {got}, want {want}"


async def test_subscribers_on_every_shard_get_every_message(broker_factory):
    broker = broker_factory(shards=3)
    pub_nc = await connect_on_shard(broker, broker.shard(0))
    collectors = []
    for shard in range(broker.shards):
        for subject_filter in ("metrics.cpu", "metrics.>"):
            nc = await connect_on_shard(broker, shard)
            got = Collector()
            await nc.subscribe(subject_filter, cb=got.cb)
            await sync(nc)
            collectors.append((shard, subject_filter, got))

    total = 5000
    for i in range(total):
        await pub_nc.publish("metrics.cpu", b"%d" % i)
    await sync(pub_nc)

    expected = [b"%d" % i for i in range(total)]
    for shard, subject_filter, got in collectors:
        assert await wait_until(lambda: got.count() >= total, 10), (
            f"subscriber {subject_filter!r} on shard {shard} got {got.count()} of {total}"
        )
    await asyncio.sleep(0.2)
    for shard, subject_filter, got in collectors:
        assert got.data == expected, f"{subject_filter!r} on shard {shard}: wrong or reordered"


async def test_headers_arrive_intact_on_other_shard(broker):
    pub_nc = await connect_on_shard(broker, broker.shard(0))
    sub_nc = await connect_on_shard(broker, broker.shard(1))
    got = Collector()
    await sub_nc.subscribe("orders.>", cb=got.cb)
    await sync(sub_nc)

    headers = {"X-Trace-Id": "abc-123", "Content-Type": "application/json", "X-Empty": ""}
    await pub_nc.publish("orders.new", b'{"id":1}', headers=headers)
    await pub_nc.publish("orders.new", b"", headers={"Only": "headers"})
    await pub_nc.publish("orders.plain", b"no headers")
    await sync(pub_nc)

    assert await wait_until(lambda: got.count() >= 3, 5), got.data
    first, second, third = got.msgs
    assert (first.subject, first.data) == ("orders.new", b'{"id":1}')
    assert first.headers == headers
    assert (second.data, second.headers) == (b"", {"Only": "headers"})
    assert (third.data, third.headers) == (b"no headers", None)


async def test_raw_hpub_is_forwarded_byte_for_byte(broker):
    sub = RawClient.on_shard(broker, broker.shard(1))
    sub.handshake()
    sub.send(b"SUB h.* 9\r\nPING\r\n")
    sub.expect_line(b"PONG")
    pub = RawClient.on_shard(broker, broker.shard(0))
    pub.handshake()
    header = b"NATS/1.0\r\nA: B\r\nMulti: 1\r\nMulti: 2\r\n\r\n"
    sizes = b"%d %d" % (len(header), len(header) + 2)
    pub.send(b"HPUB h.x reply.to " + sizes + b"\r\n" + header + b"hi\r\nPING\r\n")
    pub.expect_line(b"PONG")
    assert sub.read_line() == b"HMSG h.x 9 reply.to " + sizes
    assert sub.read_exact(len(header) + 4) == header + b"hi\r\n"


async def test_unsubscribe_with_limit_delivers_exactly_that_many(broker):
    pub_nc = await connect_on_shard(broker, broker.shard(0))
    sub_nc = await connect_on_shard(broker, broker.shard(1))
    got = Collector()
    sub = await sub_nc.subscribe("jobs", cb=got.cb)
    await sub.unsubscribe(limit=3)
    sentinel = Collector()
    await sub_nc.subscribe("jobs.done", cb=sentinel.cb)
    await sync(sub_nc)

    for i in range(10):
        await pub_nc.publish("jobs", b"%d" % i)
    await pub_nc.publish("jobs.done", b"")
    await sync(pub_nc)

    assert await wait_until(lambda: sentinel.count() == 1, 5)
    await asyncio.sleep(0.1)
    assert got.data == [b"0", b"1", b"2"]


async def test_server_enforces_unsub_max(broker):
    # nats-py also counts max_msgs itself, so check on the wire that the server stops sending.
    sub = RawClient.on_shard(broker, broker.shard(1))
    sub.handshake()
    sub.send(b"SUB jobs 1\r\nUNSUB 1 3\r\nSUB jobs.done 2\r\nPING\r\n")
    sub.expect_line(b"PONG")
    pub_nc = await connect_on_shard(broker, broker.shard(0))
    for i in range(10):
        await pub_nc.publish("jobs", b"%d" % i)
    await pub_nc.publish("jobs.done", b"end")
    await sync(pub_nc)

    received = []
    while True:
        subject, sid, _, _, payload = await asyncio.to_thread(sub.read_msg)
        if subject == b"jobs.done":
            break
        received.append((sid, payload))
    assert received == [(b"1", b"0"), (b"1", b"1"), (b"1", b"2")]
    # The subscription is gone after its limit: a later UNSUB of the same sid is harmless.
    sub.send(b"UNSUB 1\r\nPING\r\n")
    sub.expect_line(b"PONG")


async def test_no_echo_suppresses_own_messages_only(broker):
    quiet = await connect_on_shard(broker, broker.shard(0), no_echo=True)
    other = await connect_on_shard(broker, broker.shard(1))
    quiet_got, other_got = Collector(), Collector()
    await quiet.subscribe("chat", cb=quiet_got.cb)
    await other.subscribe("chat", cb=other_got.cb)
    await sync(quiet)
    await sync(other)

    await quiet.publish("chat", b"from quiet")
    await sync(quiet)
    await other.publish("chat", b"from other")
    await sync(other)

    assert await wait_until(lambda: other_got.count() >= 2 and quiet_got.count() >= 1, 5)
    await asyncio.sleep(0.2)
    assert quiet_got.data == [b"from other"]
    assert sorted(other_got.data) == [b"from other", b"from quiet"]


async def test_echo_is_on_by_default(broker):
    nc = await connect(broker)
    got = Collector()
    await nc.subscribe("self", cb=got.cb)
    await nc.publish("self", b"me")
    await sync(nc)
    assert await wait_until(lambda: got.count() == 1, 5)
    assert got.data == [b"me"]


@pytest.mark.timeout(60)
async def test_pipelined_burst_exact_count_and_order(broker):
    total = 200_000
    pub_nc = await connect_on_shard(broker, broker.shard(0))
    sub_nc = await connect_on_shard(broker, broker.shard(1))
    received = []

    async def on_msg(msg):
        received.append(msg.data)

    await sub_nc.subscribe("burst", cb=on_msg, pending_msgs_limit=total + 1)
    await sync(sub_nc)

    for i in range(total):
        await pub_nc.publish("burst", b"%d" % i)
    await sync(pub_nc, 30)

    assert await wait_until(lambda: len(received) >= total, 45, interval=0.05), (
        f"got {len(received)} of {total}"
    )
    await asyncio.sleep(0.2)
    assert len(received) == total
    assert received == [b"%d" % i for i in range(total)], "messages reordered or corrupted"
    assert not sub_nc.test_errors and not pub_nc.test_errors
