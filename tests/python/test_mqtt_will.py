"""Will messages: unclean close, normal DISCONNECT, 5.0 reason 0x04, Will Delay, will retain.

Checked against mosquitto 2.0 (ISTHMUS_PEER=mosquitto).
"""

import time

import pytest

from harness import (
    MQTT_LEVELS,
    PROP_SESSION_EXPIRY,
    PROP_WILL_DELAY,
    RawMqtt,
    isthmus_only_because,
    mqtt_client,
)


def watcher(broker, level=5, topic="will/#"):
    client = mqtt_client(broker, "will-watcher", level=level)
    client.subscribe(topic, qos=1)
    return client


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_will_published_on_unclean_close(broker, level):
    watch = watcher(broker, level)
    dying = mqtt_client(
        broker, "dying", level=level,
        will={"topic": "will/dying", "payload": b"connection lost", "qos": 1},
    )
    watch.assert_no_message(0.3)  # nothing while it is connected
    dying.drop()
    got = watch.get(3)
    assert (got.topic, got.payload, got.qos, got.retain) == ("will/dying", b"connection lost", 1, False)
    watch.assert_no_message(0.3)


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_will_published_on_raw_socket_close(broker, level):
    watch = watcher(broker, level)
    raw = RawMqtt(broker)
    raw.connect("raw-dying", level=level, will={"topic": "will/raw", "payload": b"bye", "qos": 0})
    raw.close()
    got = watch.get(3)
    assert (got.topic, got.payload, got.qos) == ("will/raw", b"bye", 0)


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_will_not_published_on_normal_disconnect(broker, level):
    watch = watcher(broker, level)
    polite = mqtt_client(
        broker, "polite", level=level, will={"topic": "will/polite", "payload": b"x", "qos": 1}
    )
    polite.disconnect()
    watch.assert_no_message(1.0)
    # The watcher does work: a real publish on the will topic arrives.
    mqtt_client(broker, "will-pub", level=level).publish("will/polite", b"real", qos=1)
    assert watch.get().payload == b"real"


def test_disconnect_with_will_message_reason_publishes_will(broker):
    watch = watcher(broker)
    leaving = mqtt_client(
        broker, "leaving", level=5, will={"topic": "will/leaving", "payload": b"on purpose"}
    )
    leaving.disconnect(reason=0x04)  # Disconnect with Will Message
    got = watch.get(3)
    assert (got.topic, got.payload) == ("will/leaving", b"on purpose")


def test_will_delay_interval_honoured(broker):
    watch = watcher(broker)
    raw = RawMqtt(broker)
    raw.connect(
        "delayed",
        level=5,
        props=[(PROP_SESSION_EXPIRY, 60)],  # the session outlives the delay
        will={"topic": "will/delayed", "payload": b"late", "props": [(PROP_WILL_DELAY, 2)]},
    )
    closed_at = time.monotonic()
    raw.close()
    watch.assert_no_message(1.3)
    got = watch.get(3)
    elapsed = time.monotonic() - closed_at
    assert got.payload == b"late"
    assert 1.5 <= elapsed <= 4.0, f"will after {elapsed:.2f} s, delay 2 s"


def test_will_delay_cancelled_by_reconnect(broker):
    watch = watcher(broker)
    raw = RawMqtt(broker)
    raw.connect(
        "flaky",
        level=5,
        props=[(PROP_SESSION_EXPIRY, 60)],
        will={"topic": "will/flaky", "payload": b"should not", "props": [(PROP_WILL_DELAY, 2)]},
    )
    raw.close()
    time.sleep(0.3)
    back = mqtt_client(broker, "flaky", level=5, clean=False, session_expiry=60)
    assert back.session_present is True
    watch.assert_no_message(3.0)


@isthmus_only_because("mosquitto 2.0.11 waits out the will delay after a session that ended")
def test_will_delay_capped_by_session_expiry(broker):
    """MQTT 5.0 3.1.3.2.2: the will goes at the delay or when the session ends, whichever first."""
    watch = watcher(broker)
    raw = RawMqtt(broker)
    raw.connect(
        "short-session",
        level=5,
        props=[(PROP_SESSION_EXPIRY, 0)],
        will={"topic": "will/short", "payload": b"now", "props": [(PROP_WILL_DELAY, 30)]},
    )
    raw.close()
    assert watch.get(3).payload == b"now"


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_will_retain(broker, level):
    dying = mqtt_client(
        broker, "dying-retain", level=level,
        will={"topic": "will/status", "payload": b"offline", "qos": 1, "retain": True},
    )
    dying.drop()
    time.sleep(0.3)
    late = mqtt_client(broker, "late-reader", level=level)
    late.subscribe("will/status", qos=1)
    got = late.get(3)
    assert (got.payload, got.retain) == (b"offline", True)


def test_will_properties_passed_on(broker):
    watch = watcher(broker)
    dying = mqtt_client(
        broker, "dying-props", level=5,
        will={
            "topic": "will/props",
            "payload": b'{"state":"dead"}',
            "qos": 1,
            "properties": {
                "ContentType": "application/json",
                "PayloadFormatIndicator": 1,
                "UserProperty": [("device", "d1")],
            },
        },
    )
    dying.drop()
    got = watch.get(3)
    assert got.payload == b'{"state":"dead"}'
    assert got.properties.ContentType == "application/json"
    assert got.properties.PayloadFormatIndicator == 1
    assert got.properties.UserProperty == [("device", "d1")]


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_will_published_when_client_is_taken_over(broker, level):
    """The old connection is closed without a normal DISCONNECT, and its will has no delay:
    the will goes (3.1.1 [MQTT-3.1.4-2]; 5.0 3.1.2.5). nats-server discards it instead."""
    watch = watcher(broker, level=level)
    mqtt_client(broker, "same-id", level=level, will={"topic": "will/same", "payload": b"old"})
    mqtt_client(broker, "same-id", level=level)
    got = watch.get(3)
    assert (got.topic, got.payload) == ("will/same", b"old")
    watch.assert_no_message(0.3)
