"""Retained messages, Retain Handling, Retain As Published, and `$` topics vs wildcards.

Checked against mosquitto 2.0 (ISTHMUS_PEER=mosquitto).
"""

import pytest

from harness import MQTT_LEVELS, mqtt_client


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_retained_stored_sent_on_subscribe_and_cleared(broker, level):
    pub = mqtt_client(broker, "ret-pub", level=level)
    pub.publish("home/temp", b"21.5", qos=1, retain=True)
    pub.publish("home/hum", b"40", qos=0, retain=True)
    pub.publish("home/temp", b"22.0", qos=1, retain=True)  # replaces 21.5

    sub = mqtt_client(broker, "ret-sub", level=level)
    sub.subscribe("home/#", qos=1)
    got = sorted(sub.get_n(2), key=lambda m: m.topic)
    assert [(m.topic, m.payload, m.retain) for m in got] == [
        ("home/hum", b"40", True),
        ("home/temp", b"22.0", True),
    ]
    assert [m.qos for m in got] == [0, 1]  # min(publish QoS, subscription QoS)
    sub.assert_no_message(0.3)

    # A live publish with RETAIN=1 reaches an existing subscriber with RETAIN=0 (no RAP).
    pub.publish("home/temp", b"23.0", qos=1, retain=True)
    live = sub.get()
    assert (live.payload, live.retain) == (b"23.0", False)

    # An empty retained payload deletes; subscribers still see it live.
    pub.publish("home/temp", b"", qos=1, retain=True)
    deleted = sub.get()
    assert (deleted.topic, deleted.payload) == ("home/temp", b"")

    late = mqtt_client(broker, "ret-late", level=level)
    late.subscribe("home/#", qos=1)
    got = late.get()
    assert (got.topic, got.payload, got.retain) == ("home/hum", b"40", True)
    late.assert_no_message(0.5)


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_non_retained_publish_is_not_stored(broker, level):
    pub = mqtt_client(broker, "nr-pub", level=level)
    pub.publish("plain/t", b"not kept", qos=1, retain=False)
    pub.publish("kept/t", b"kept", qos=1, retain=True)
    sub = mqtt_client(broker, "nr-sub", level=level)
    sub.subscribe("plain/#", qos=1)
    sub.subscribe("kept/#", qos=1)
    got = sub.get()
    assert (got.topic, got.payload) == ("kept/t", b"kept")
    sub.assert_no_message(0.5)


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_retained_matches_wildcards_per_filter(broker, level):
    pub = mqtt_client(broker, "rw-pub", level=level)
    for topic in ("a/b/c", "a/x/c", "a/b", "b/b/c"):
        pub.publish(topic, topic.encode(), qos=1, retain=True)
    sub = mqtt_client(broker, "rw-sub", level=level)
    sub.subscribe("a/+/c", qos=1)
    got = sorted(m.topic for m in sub.get_n(2))
    assert got == ["a/b/c", "a/x/c"]
    sub.assert_no_message(0.3)


def test_retain_handling_0_1_2(broker):
    pub = mqtt_client(broker, "rh-pub", level=5)
    pub.publish("rh/t", b"kept", qos=1, retain=True)

    send_always = mqtt_client(broker, "rh0", level=5)
    send_always.subscribe("rh/t", qos=1, retain_handling=0)
    assert send_always.get().payload == b"kept"
    send_always.subscribe("rh/t", qos=1, retain_handling=0)  # re-subscribe: sent again
    again = send_always.get()
    assert (again.payload, again.retain) == (b"kept", True)

    if_new = mqtt_client(broker, "rh1", level=5)
    if_new.subscribe("rh/t", qos=1, retain_handling=1)
    assert if_new.get().payload == b"kept"
    if_new.subscribe("rh/t", qos=1, retain_handling=1)  # exists already: not sent
    if_new.assert_no_message(0.5)

    never = mqtt_client(broker, "rh2", level=5)
    never.subscribe("rh/t", qos=1, retain_handling=2)
    never.assert_no_message(0.5)
    # ...but the subscription itself works.
    pub.publish("rh/t", b"live", qos=1)
    assert never.get().payload == b"live"


def test_retain_as_published(broker):
    rap = mqtt_client(broker, "rap1", level=5)
    rap.subscribe("rap/t", qos=1, retain_as_published=True)
    plain = mqtt_client(broker, "rap0", level=5)
    plain.subscribe("rap/t", qos=1, retain_as_published=False)
    pub = mqtt_client(broker, "rap-pub", level=5)
    pub.publish("rap/t", b"r", qos=1, retain=True)
    pub.publish("rap/t", b"n", qos=1, retain=False)
    assert [(m.payload, m.retain) for m in rap.get_n(2)] == [(b"r", True), (b"n", False)]
    assert [(m.payload, m.retain) for m in plain.get_n(2)] == [(b"r", False), (b"n", False)]


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_dollar_topics_not_matched_by_leading_wildcards(broker, level):
    pub = mqtt_client(broker, "dollar-pub", level=level)
    pub.publish("$foo/bar", b"retained dollar", qos=1, retain=True)

    hash_all = mqtt_client(broker, "d-hash", level=level)
    hash_all.subscribe("#", qos=1)
    plus = mqtt_client(broker, "d-plus", level=level)
    plus.subscribe("+/bar", qos=1)
    dollar = mqtt_client(broker, "d-dollar", level=level)
    dollar.subscribe("$foo/#", qos=1)

    retained = dollar.get()
    assert (retained.topic, retained.payload, retained.retain) == ("$foo/bar", b"retained dollar", True)

    pub.publish("$foo/bar", b"live dollar", qos=1)
    pub.publish("foo/bar", b"normal", qos=1)
    assert dollar.get().payload == b"live dollar"
    # `#` and `+/bar` get the normal topic only: not the retained nor the live `$foo/bar`.
    assert [(m.topic, m.payload) for m in hash_all.get_n(1)] == [("foo/bar", b"normal")]
    assert [(m.topic, m.payload) for m in plus.get_n(1)] == [("foo/bar", b"normal")]
    hash_all.assert_no_message(0.3)
    plus.assert_no_message(0.1)
    dollar.assert_no_message(0.1)
