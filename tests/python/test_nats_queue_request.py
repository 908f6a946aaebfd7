"""Queue groups, request/reply and no-responders, with the parties on different shards."""

import asyncio
import time
from collections import Counter

import nats.errors

from harness import Collector, RawClient, connect_on_shard, sync, wait_until


async def test_queue_group_members_on_different_shards_share_the_work(broker):
    pub_nc = await connect_on_shard(broker, broker.shard(0))
    members = []
    for shard in (0, 1, 0, 1):
        nc = await connect_on_shard(broker, broker.shard(shard))
        got = Collector()
        await nc.subscribe("work", queue="workers", cb=got.cb)
        await sync(nc)
        members.append((broker.shard_of(nc.client_id), got))
    if broker.shards > 1:
        assert {shard for shard, _ in members} == {0, 1}, "members must span both shards"
    # A second group and a plain subscriber each see the whole stream, independently.
    auditors = []
    for shard in (1, 0):
        nc = await connect_on_shard(broker, broker.shard(shard))
        got = Collector()
        await nc.subscribe("work", queue="auditors", cb=got.cb)
        await sync(nc)
        auditors.append(got)
    watcher_nc = await connect_on_shard(broker, broker.shard(1))
    watcher = Collector()
    await watcher_nc.subscribe("work", cb=watcher.cb)
    await sync(watcher_nc)

    total = 2000
    for i in range(total):
        await pub_nc.publish("work", b"%d" % i)
    await sync(pub_nc)

    def delivered():
        return sum(got.count() for _, got in members)

    assert await wait_until(lambda: delivered() >= total, 10), f"{delivered()} of {total}"
    assert await wait_until(lambda: sum(a.count() for a in auditors) >= total, 10), (
        f"second group got {[a.count() for a in auditors]}, {total} in all expected"
    )
    assert await wait_until(lambda: watcher.count() >= total, 10), (
        f"plain subscriber got {watcher.count()} of {total}, first {watcher.data[:3]}"
    )
    await asyncio.sleep(0.3)  # let any duplicate arrive before counting

    expected = {b"%d" % i for i in range(total)}
    per_message = Counter(data for _, got in members for data in got.data)
    assert set(per_message) == expected
    duplicates = {data: n for data, n in per_message.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} messages went to more than one member"
    assert delivered() == total
    counts = [got.count() for _, got in members]
    assert all(count > 0 for count in counts), f"some member got nothing: {counts}"
    # Every member, whatever its shard, sees its share in publish order.
    for _, got in members:
        numbers = [int(data) for data in got.data]
        assert numbers == sorted(numbers)

    auditor_counts = Counter(data for got in auditors for data in got.data)
    assert set(auditor_counts) == expected and set(auditor_counts.values()) == {1}
    assert watcher.data == [b"%d" % i for i in range(total)]


async def test_request_reply_across_shards(broker):
    responder = await connect_on_shard(broker, broker.shard(1))
    requester = await connect_on_shard(broker, broker.shard(0))

    async def upper(msg):
        await msg.respond(msg.data.upper())

    await responder.subscribe("svc.upper", cb=upper)
    await sync(responder)

    for i in range(50):
        reply = await requester.request("svc.upper", b"hello %d" % i, timeout=5)
        assert reply.data == b"HELLO %d" % i

    replies = await asyncio.gather(
        *(requester.request("svc.upper", b"concurrent %d" % i, timeout=5) for i in range(200))
    )
    assert [r.data for r in replies] == [b"CONCURRENT %d" % i for i in range(200)]


async def test_request_reply_through_queue_group_across_shards(broker):
    requester = await connect_on_shard(broker, broker.shard(0))
    served = Counter()
    for shard in (0, 1):
        nc = await connect_on_shard(broker, broker.shard(shard))

        async def serve(msg, shard=shard):
            served[shard] += 1
            await msg.respond(b"shard %d" % shard)

        await nc.subscribe("svc.who", queue="svc", cb=serve)
        await sync(nc)

    replies = await asyncio.gather(
        *(requester.request("svc.who", b"?", timeout=5) for _ in range(300))
    )
    assert len(replies) == 300
    assert sum(served.values()) == 300, f"each request answered once, got {dict(served)}"
    if broker.shards > 1:
        assert served[0] > 0 and served[1] > 0, f"both shards should serve: {dict(served)}"


async def test_request_headers_reach_responder_and_back(broker):
    responder = await connect_on_shard(broker, broker.shard(1))
    requester = await connect_on_shard(broker, broker.shard(0))

    async def echo_headers(msg):
        seen = (msg.headers or {}).get("Trace", "missing")
        await responder.publish(msg.reply, msg.data, headers={"Seen": seen})

    await responder.subscribe("svc.headers", cb=echo_headers)
    await sync(responder)
    reply = await requester.request("svc.headers", b"x", timeout=5, headers={"Trace": "t-42"})
    assert reply.data == b"x"
    assert reply.headers == {"Seen": "t-42"}


async def test_no_responders_fails_fast(broker):
    requester = await connect_on_shard(broker, broker.shard(0))
    # Interest elsewhere on another subject must not count as a responder.
    bystander = await connect_on_shard(broker, broker.shard(1))
    await bystander.subscribe("svc.other", cb=Collector().cb)
    await sync(bystander)

    started = time.monotonic()
    try:
        await requester.request("svc.nobody", b"anyone?", timeout=10)
    except nats.errors.NoRespondersError:
        pass
    else:
        raise AssertionError("request with no subscribers must raise NoRespondersError")
    elapsed = time.monotonic() - started
    assert elapsed < 1.0, f"no-responders took {elapsed:.2f}s: it should not wait for the timeout"


async def test_no_responders_status_on_the_wire(broker):
    raw = RawClient.on_shard(broker, broker.shard(0))
    raw.handshake(headers=True, no_responders=True)
    raw.send(b"SUB inbox.1 7\r\nPUB svc.nobody inbox.1 2\r\nhi\r\n")
    subject, sid, reply, header, payload = raw.read_msg()
    assert (subject, sid, reply, payload) == (b"inbox.1", b"7", None, b"")
    # 2.9.10 sends exactly "NATS/1.0 503\r\n\r\n"; 2.12+ adds a Nats-Subject header.
    assert header.startswith(b"NATS/1.0 503\r\n") and header.endswith(b"\r\n\r\n"), header


async def test_no_responders_only_when_asked_for(broker):
    raw = RawClient.on_shard(broker, broker.shard(0))
    raw.handshake(headers=True, no_responders=False)
    raw.send(b"SUB inbox.1 7\r\nPUB svc.nobody inbox.1 2\r\nhi\r\nPING\r\n")
    raw.expect_line(b"PONG")
    assert raw.read_for(0.3) == b""
