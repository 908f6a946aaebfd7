"""MQTT CONNECT as clients see it: versions, client ids, takeover, keep alive.

Every expectation here was checked against Debian's mosquitto 2.0 (ISTHMUS_PEER=mosquitto)
unless marked isthmus-only.
"""

import time

import pytest

from harness import (
    CONNACK,
    IS_ISTHMUS,
    DISCONNECT,
    MQTT_LEVELS,
    PROP_ASSIGNED_CLIENT_ID,
    PROP_SESSION_EXPIRY,
    RawMqtt,
    assert_closed_with,
    connect_packet,
    isthmus_only_because,
    mqtt_client,
)


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_connect_accepted_and_usable(broker, level):
    client = mqtt_client(broker, "hello", level=level)
    assert client.session_present is False
    client.subscribe("greet/+", qos=1)
    client.publish("greet/joe", b"hi", qos=1)
    msg = client.get()
    assert (msg.topic, msg.payload) == ("greet/joe", b"hi")


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_raw_connack_bytes(broker, level):
    raw = RawMqtt(broker)
    connack = raw.connect("raw-ok", level=level)
    if level == 4:
        assert connack.raw == b"\x20\x02\x00\x00"
    else:
        assert connack.body[:2] == b"\x00\x00", connack  # no session present, Success
        connack.properties()  # decodes: a well-formed property block


@isthmus_only_because("mosquitto 2.0 still accepts MQTT 3.1 (MQIsdp)")
def test_mqtt31_refused_with_return_code_1(broker):
    raw = RawMqtt(broker)
    raw.send(connect_packet("old-client", level=3))
    packets, closed = raw.read_until_close(5)
    assert [p.raw for p in packets] == [b"\x20\x02\x00\x01"]
    assert closed


@pytest.mark.parametrize("level", [2, 3, 6])  # with protocol name "MQTT": none is 3.1.1 or 5.0
def test_unknown_protocol_level_refused_with_return_code_1(broker, level):
    raw = RawMqtt(broker)
    raw.send(connect_packet("future", level=level, proto_name="MQTT"))
    packets, closed = raw.read_until_close(5)
    assert [p.raw for p in packets] == [b"\x20\x02\x00\x01"]
    assert closed


def test_empty_client_id_gets_assigned_id_in_5(broker):
    client = mqtt_client(broker, "", level=5)
    assigned = client.assigned_client_id()
    assert assigned, f"no Assigned Client Identifier in CONNACK {client.connack_properties}"
    other = mqtt_client(broker, "", level=5)
    assert other.assigned_client_id() not in (None, assigned)
    # The assigned id works: it can subscribe and receive.
    client.subscribe("x/y", qos=1)
    other.publish("x/y", b"1", qos=1)
    assert client.get().payload == b"1"


def test_empty_client_id_raw_5_connack_property(broker):
    raw = RawMqtt(broker)
    connack = raw.connect("", level=5)
    assert connack.reason() == 0
    assert connack.properties().get(PROP_ASSIGNED_CLIENT_ID), connack.properties()


def test_empty_client_id_311_clean_session_accepted(broker):
    raw = RawMqtt(broker)
    assert raw.connect("", level=4, clean=True).raw == b"\x20\x02\x00\x00"


def test_empty_client_id_311_persistent_session_refused(broker):
    raw = RawMqtt(broker)
    raw.send(connect_packet("", level=4, clean=False))
    packets, closed = raw.read_until_close(5)
    assert [p.raw for p in packets] == [b"\x20\x02\x00\x02"]  # identifier rejected
    assert closed


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_duplicate_client_id_takes_over(broker, level):
    old = mqtt_client(broker, "twin", level=level)
    old.subscribe("twin/old", qos=1)
    new = mqtt_client(broker, "twin", level=level)
    old.wait_disconnected(5)
    assert not old.is_connected()
    # The new connection is the one that works, and the old one's subscription went with it.
    new.subscribe("twin/new", qos=1)
    new.publish("twin/new", b"still here", qos=1)
    assert new.get().payload == b"still here"
    assert new.is_connected()


@isthmus_only_because("mosquitto 2.0.11 closes the old 5.0 connection without DISCONNECT 0x8E")
def test_duplicate_client_id_takeover_sends_0x8e_in_5(broker):
    first = RawMqtt(broker)
    first.connect("raw-twin", level=5, props=[(PROP_SESSION_EXPIRY, 0)])
    second = RawMqtt(broker)
    assert second.connect("raw-twin", level=5).reason() == 0
    assert_closed_with(first, 0x8E)
    paho_old = mqtt_client(broker, "paho-twin", level=5)
    mqtt_client(broker, "paho-twin", level=5)
    from_server, reason, _ = paho_old.wait_disconnected(5)
    assert (from_server, reason) == (True, 0x8E), "paho should see 'Session taken over'"


# mosquitto 2.0 checks keep alives in a periodic sweep: a 1 s keep alive is enforced after ~6 s.
KEEPALIVE_CLOSE_S_MAX = 2.6 if IS_ISTHMUS else 7.0


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_keepalive_enforced_and_will_published(broker, level):
    watcher = mqtt_client(broker, "watcher", level=level)
    watcher.subscribe("status/sleepy", qos=1)
    raw = RawMqtt(broker)
    started = time.monotonic()
    raw.connect(
        "sleepy",
        level=level,
        keepalive=1,
        will={"topic": "status/sleepy", "payload": b"gone", "qos": 1},
    )
    packets, closed = raw.read_until_close(KEEPALIVE_CLOSE_S_MAX + 0.5)
    elapsed = time.monotonic() - started
    assert closed, f"still open {elapsed:.1f} s after keep alive 1 s; got {packets}"
    assert 1.4 <= elapsed <= KEEPALIVE_CLOSE_S_MAX, (
        f"closed after {elapsed:.2f} s, want 1.5 x keep alive (limit {KEEPALIVE_CLOSE_S_MAX} s)"
    )
    assert all(p.type == DISCONNECT for p in packets), packets
    will = watcher.get(3)
    assert (will.topic, will.payload) == ("status/sleepy", b"gone")


@isthmus_only_because("mosquitto 2.0 closes a silent 5.0 client without DISCONNECT 0x8D")
def test_keepalive_timeout_sends_disconnect_0x8d_in_5(broker):
    raw = RawMqtt(broker)
    raw.connect("sleepy5", level=5, keepalive=1)
    assert_closed_with(raw, 0x8D, timeout=4)


def test_pingreq_keeps_connection_alive(broker):
    raw = RawMqtt(broker)
    raw.connect("pinger", level=4, keepalive=1)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        time.sleep(0.5)
        raw.send(b"\xc0\x00")
        pong = raw.read_packet(2)
        assert pong.raw == b"\xd0\x00", pong
    assert not raw.closed


def test_connack_is_first_packet(broker):
    raw = RawMqtt(broker)
    raw.send(connect_packet("first", level=5))
    assert raw.read_packet().type == CONNACK
