"""MQTT publish/subscribe at QoS 0, 1 and 2, in 3.1.1 and 5.0, as paho clients see it.

Checked against mosquitto 2.0 (ISTHMUS_PEER=mosquitto).
"""

import pytest

from harness import (
    MQTT_LEVELS,
    PROP_SESSION_EXPIRY,
    PUBACK,
    PUBCOMP,
    PUBREC,
    PUBREL,
    RawMqtt,
    ack_packet,
    mqtt_client,
    publish_packet,
)


@pytest.mark.parametrize("sub_level", MQTT_LEVELS)
@pytest.mark.parametrize("pub_level", MQTT_LEVELS)
def test_delivered_qos_is_min_of_publish_and_subscription(broker, pub_level, sub_level):
    subscribers = {}
    for sub_qos in (0, 1, 2):
        client = mqtt_client(broker, f"sub-q{sub_qos}", level=sub_level)
        client.subscribe("qos/test", qos=sub_qos)
        subscribers[sub_qos] = client
    publisher = mqtt_client(broker, "pub", level=pub_level)
    for pub_qos in (0, 1, 2):
        publisher.publish("qos/test", b"published at %d" % pub_qos, qos=pub_qos)

    for sub_qos, client in subscribers.items():
        got = client.get_n(3)
        assert [m.payload for m in got] == [b"published at %d" % q for q in (0, 1, 2)]
        assert [m.qos for m in got] == [min(q, sub_qos) for q in (0, 1, 2)], f"sub QoS {sub_qos}"
        assert {m.topic for m in got} == {"qos/test"}
        assert not any(m.retain for m in got)
        client.assert_no_message(0.3)  # exactly once, also at QoS 2


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_qos1_order_of_200_messages_preserved(broker, level):
    sub = mqtt_client(broker, "ordered-sub", level=level)
    sub.subscribe("order/q1", qos=1)
    pub = mqtt_client(broker, "ordered-pub", level=level)
    infos = [pub.publish("order/q1", b"%d" % i, qos=1, wait=False) for i in range(200)]
    for info in infos:
        info.wait_for_publish(5)
        assert info.is_published()
    got = sub.get_n(200, timeout=8)
    assert [m.payload for m in got] == [b"%d" % i for i in range(200)]
    assert {m.qos for m in got} == {1}


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_wildcard_filters_match_and_do_not_match(broker, level):
    filters = ["sport/#", "sport/+", "sport/+/player1", "+/tennis/#", "#", "sport/tennis"]
    clients = {}
    for index, topic_filter in enumerate(filters):
        clients[topic_filter] = mqtt_client(broker, f"wild{index}", level=level)
        clients[topic_filter].subscribe(topic_filter, qos=1)
    pub = mqtt_client(broker, "wild-pub", level=level)
    topics = ["sport", "sport/tennis", "sport/tennis/player1", "sport/golf/player1", "other/tennis"]
    for topic in topics:
        pub.publish(topic, topic.encode(), qos=1)
    pub.publish("done", b"done", qos=1)

    expected = {
        "sport/#": ["sport", "sport/tennis", "sport/tennis/player1", "sport/golf/player1"],
        "sport/+": ["sport/tennis"],
        "sport/+/player1": ["sport/tennis/player1", "sport/golf/player1"],
        "+/tennis/#": ["sport/tennis", "sport/tennis/player1", "other/tennis"],
        "#": topics + ["done"],
        "sport/tennis": ["sport/tennis"],
    }
    for topic_filter, want in expected.items():
        got = clients[topic_filter].get_n(len(want))
        assert [m.topic for m in got] == want, f"filter {topic_filter!r}"
        clients[topic_filter].assert_no_message(0.2)


def test_qos2_raw_exchange_delivers_once_after_pubrel(broker):
    """PUBLISH QoS 2 -> PUBREC; subscribers get the message once, PUBREL -> PUBCOMP."""
    sub = mqtt_client(broker, "q2-sub", level=5)
    sub.subscribe("q2/raw", qos=2)
    raw = RawMqtt(broker)
    raw.connect("q2-raw", level=5)
    raw.send(publish_packet("q2/raw", b"once", qos=2, packet_id=7))
    pubrec = raw.read_packet()
    assert pubrec.type == PUBREC and pubrec.body[:2] == b"\x00\x07", pubrec
    # A resend with DUP before PUBREL must not be delivered a second time.
    raw.send(publish_packet("q2/raw", b"once", qos=2, packet_id=7, dup=True))
    pubrec = raw.read_packet()
    assert pubrec.type == PUBREC and pubrec.body[:2] == b"\x00\x07", pubrec
    raw.send(ack_packet(PUBREL, 7))
    pubcomp = raw.read_packet()
    assert pubcomp.type == PUBCOMP and pubcomp.body[:2] == b"\x00\x07", pubcomp
    got = sub.get()
    assert (got.payload, got.qos) == (b"once", 2)
    sub.assert_no_message(0.5)


def test_qos1_raw_puback(broker):
    raw = RawMqtt(broker)
    raw.connect("q1-raw", level=4)
    raw.send(publish_packet("q1/raw", b"x", qos=1, packet_id=300, level=4))
    puback = raw.read_packet()
    assert puback.raw == ack_packet(PUBACK, 300), puback


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_unacknowledged_qos1_is_resent_with_dup_after_reconnect(broker, level):
    """A delivery not PUBACKed before the connection drops comes again, DUP=1 [MQTT-4.4.0-1]."""
    props = [(PROP_SESSION_EXPIRY, 300)] if level == 5 else []
    raw = RawMqtt(broker)
    # 3.1.1: clean session 0 keeps the session; 5.0: clean start with a session expiry.
    raw.connect("resend", level=level, clean=level == 5, props=props)
    raw.subscribe("resend/t", qos=1)
    pub = mqtt_client(broker, "resend-pub", level=level)
    pub.publish("resend/t", b"ack me", qos=1)
    first = raw.read_packet().publish(level)
    assert (first["payload"], first["qos"], first["dup"]) == (b"ack me", 1, False)
    raw.close()  # no PUBACK

    again = RawMqtt(broker)
    connack = again.connect("resend", level=level, clean=False, props=props)
    assert connack.body[0] & 1, "session present"
    second = again.read_packet().publish(level)
    assert (second["payload"], second["qos"], second["dup"]) == (b"ack me", 1, True)
    again.send(ack_packet(PUBACK, second["packet_id"]))


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_unsubscribe_stops_delivery(broker, level):
    sub = mqtt_client(broker, "unsub", level=level)
    sub.subscribe("unsub/a", qos=1)
    sub.subscribe("unsub/b", qos=1)
    pub = mqtt_client(broker, "unsub-pub", level=level)
    pub.publish("unsub/a", b"before", qos=1)
    assert sub.get().payload == b"before"
    sub.unsubscribe("unsub/a")
    pub.publish("unsub/a", b"after", qos=1)
    pub.publish("unsub/b", b"other filter", qos=1)
    assert sub.get().payload == b"other filter"  # unsub/a's "after" would have come first
    sub.assert_no_message(0.3)


def test_many_subscribers_each_get_every_message_in_order(broker):
    subscribers = []
    for i in range(20):
        client = mqtt_client(broker, f"fan-{i}", level=5 if i % 2 else 4)
        client.subscribe("fan/out", qos=i % 3)
        subscribers.append(client)
    pub = mqtt_client(broker, "fan-pub", level=5)
    for i in range(50):
        pub.publish("fan/out", b"%d" % i, qos=1, wait=False)
    want = [b"%d" % i for i in range(50)]
    for i, client in enumerate(subscribers):
        got = [m.payload for m in client.get_n(50, timeout=8)]
        if i % 3 == 0:
            # QoS 0 may be dropped under pressure, but what arrives keeps its order.
            assert got == sorted(got, key=int), f"subscriber {i} reordered"
        else:
            assert got == want, f"subscriber {i} (QoS {i % 3})"


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_large_payload_intact(broker, level):
    sub = mqtt_client(broker, "big-sub", level=level)
    sub.subscribe("big/t", qos=1)
    pub = mqtt_client(broker, "big-pub", level=level)
    payload = bytes(range(256)) * 2000  # 512000 bytes, every byte value
    pub.publish("big/t", payload, qos=1)
    got = sub.get()
    assert len(got.payload) == len(payload) and got.payload == payload
