"""Slow consumers and server PINGs: one bad connection must not hurt the others."""

import asyncio
import time

import pytest

from harness import IS_ISTHMUS, Collector, RawClient, connect_on_shard, sync, wait_until

PING_CONFIG = {"nats": {"ping_interval_ms": 200, "ping_max": 2}}


@pytest.mark.timeout(45)
async def test_slow_consumer_is_cut_and_fast_subscribers_get_everything(broker_factory):
    # nats-server requires max_payload <= max_pending, hence the smaller max_payload.
    broker = broker_factory(config={"nats": {"max_pending": 262144, "max_payload": 65536}})
    # The slow consumer never reads after subscribing. A tiny receive window makes the server's
    # side fill up after a few hundred KiB of kernel buffers instead of megabytes.
    slow = RawClient.on_shard(broker, broker.shard(1), rcvbuf=4096)
    slow.handshake()
    slow.send(b"SUB firehose 1\r\nPING\r\n")
    slow.expect_line(b"PONG")

    fast = []
    for shard in (1, 0):  # one fast subscriber beside the slow one, one on the other shard
        nc = await connect_on_shard(broker, broker.shard(shard))
        got = Collector()
        await nc.subscribe("firehose", cb=got.cb)
        await sync(nc)
        fast.append(got)
    pub_nc = await connect_on_shard(broker, broker.shard(0))

    total, size = 1000, 16 * 1024  # 16 MiB: far past max_pending plus any socket buffer
    body = b"x" * (size - 8)
    for i in range(total):
        await pub_nc.publish("firehose", b"%08d" % i + body)
    try:
        await sync(pub_nc, 10)
    except asyncio.TimeoutError:
        raise AssertionError("the publisher is stuck behind the slow consumer") from None

    delivered = await wait_until(lambda: all(got.count() >= total for got in fast), 10)
    assert delivered, f"fast subscribers got {[got.count() for got in fast]} of {total}"
    for got in fast:
        assert [m.data[:8] for m in got.msgs] == [b"%08d" % i for i in range(total)]

    data, closed = await asyncio.to_thread(slow.read_until_close, 10)
    assert closed, "the slow consumer must be disconnected"
    received = data.count(b"MSG firehose 1 ")
    assert received < total, f"slow consumer got all {total} messages: it was never cut"
    if IS_ISTHMUS:
        # docs/CONTRACT-issue2.md: pending output is discarded and -ERR 'Slow Consumer' is sent.
        # nats-server 2.9.10 sends no -ERR at all: it stalls producers first and then cuts the
        # consumer when a write blocks past write_deadline ("Slow Consumer Detected:
        # WriteDeadline of ... exceeded" in its log only).
        assert data.endswith(b"-ERR 'Slow Consumer'\r\n"), data[-120:]

    # The broker keeps serving: new traffic flows to the fast subscribers.
    await pub_nc.publish("firehose", b"after")
    await sync(pub_nc)
    assert await wait_until(lambda: all(got.count() == total + 1 for got in fast), 5)


async def test_stale_connection_after_unanswered_pings(broker_factory):
    broker = broker_factory(config=PING_CONFIG)
    raw = RawClient(broker)
    raw.handshake()
    started = time.monotonic()
    data, closed = raw.read_until_close(5)
    elapsed = time.monotonic() - started
    # ping_max=2: two PINGs go unanswered, the third interval closes the connection.
    assert data == b"PING\r\nPING\r\n-ERR 'Stale Connection'\r\n", data
    assert closed
    assert 0.35 < elapsed < 3.0, f"stale after {elapsed:.2f}s with a 200 ms ping interval"


async def test_answering_pings_keeps_connection_alive(broker_factory):
    broker = broker_factory(config=PING_CONFIG)
    raw = RawClient(broker)
    raw.handshake()
    raw.send(b"SUB alive 1\r\n")
    pings = 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        try:
            line = raw.read_line(deadline - time.monotonic())
        except TimeoutError:
            break
        assert line == b"PING", line
        pings += 1
        raw.send(b"PONG\r\n")
    assert pings >= 3, f"only {pings} server PINGs in 1.5 s with a 200 ms interval"
    raw.send(b"PUB alive 2\r\nok\r\n")
    while True:  # a PING may still cross our PUB
        line = raw.read_line()
        if line != b"PING":
            break
        raw.send(b"PONG\r\n")
    assert line == b"MSG alive 1 2", line
    assert raw.read_line() == b"ok"


async def test_nats_py_client_survives_fast_server_pings(broker_factory):
    broker = broker_factory(config=PING_CONFIG)
    nc = await connect_on_shard(broker, broker.shard(0))
    got = Collector()
    await nc.subscribe("tick", cb=got.cb)
    await asyncio.sleep(1.2)  # six server PING intervals; nats-py answers each
    assert nc.is_connected
    await nc.publish("tick", b"1")
    await sync(nc)
    assert await wait_until(lambda: got.count() == 1, 5)
    assert not nc.test_errors, nc.test_errors
