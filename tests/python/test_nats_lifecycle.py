"""Starting, sharding and stopping the broker (docs/CONTRACT-issue2.md)."""

import signal
import socket
import subprocess

import pytest

from harness import (
    IS_ISTHMUS,
    Collector,
    RawClient,
    connect,
    isthmus_bin,
    isthmus_only,
    sync,
    wait_until,
)

# Isthmus exits 0 on both signals (contract). nats-server 2.9.10 exits 0 on SIGINT but 1 on
# SIGTERM (signal.go: os.Exit(1) after Shutdown), which is what the nats-server run checks.
EXPECTED_EXIT = {signal.SIGINT: 0, signal.SIGTERM: 0 if IS_ISTHMUS else 1}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_broker_cleanly(broker_factory, sig):
    broker = broker_factory(shards=2)
    disconnected = []

    async def on_disconnect():
        disconnected.append(True)

    nc = await connect(broker, disconnected_cb=on_disconnect)
    got = Collector()
    await nc.subscribe("x", cb=got.cb)
    await nc.publish("x", b"before stop")
    await sync(nc)
    assert await wait_until(lambda: got.count() == 1, 5)

    code = broker.stop(sig)
    assert code == EXPECTED_EXIT[sig], f"exit code {code} after {sig.name}\n{broker.log()}"
    assert await wait_until(lambda: bool(disconnected), 5), "the client saw no disconnect"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((broker.host, broker.port), timeout=2).close()


@isthmus_only
async def test_ready_line_and_connections_spread_over_shards(broker_factory):
    broker = broker_factory(shards=2)
    assert broker.shards == 2
    clients = [RawClient(broker) for _ in range(24)]
    ids = [raw.client_id for raw in clients]
    assert len(set(ids)) == len(ids), f"client_ids must be unique: {ids}"
    assert {broker.shard_of(cid) for cid in ids} == {0, 1}, f"all on one shard: {ids}"


@isthmus_only
async def test_three_shards_each_get_connections_and_messages(broker_factory):
    broker = broker_factory(shards=3)
    assert broker.shards == 3
    subs = [RawClient.on_shard(broker, shard) for shard in range(3)]
    for raw in subs:
        raw.handshake()
        raw.send(b"SUB tri.> 1\r\nPING\r\n")
        raw.expect_line(b"PONG")
    pub = RawClient.on_shard(broker, 2)
    pub.handshake()
    pub.send(b"".join(b"PUB tri.%d 1\r\n%d\r\n" % (i, i % 10) for i in range(30)) + b"PING\r\n")
    pub.expect_line(b"PONG")
    for shard, raw in enumerate(subs):
        got = [raw.read_msg()[0] for _ in range(30)]
        assert got == [b"tri.%d" % i for i in range(30)], f"shard {shard}"


@isthmus_only
def test_config_default_prints_the_documented_keys():
    out = subprocess.run(
        [str(isthmus_bin()), "config", "--default"], capture_output=True, timeout=10, check=True
    ).stdout.decode()
    for key in ("max_payload", "max_control_line", "max_pending", "ping_interval_ms", "ping_max"):
        assert key in out, f"`isthmus config --default` does not mention {key}"
