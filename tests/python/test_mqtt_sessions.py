"""Persistent sessions: 3.1.1 clean session 0, 5.0 clean start 0 + Session Expiry Interval.

Checked against mosquitto 2.0 (ISTHMUS_PEER=mosquitto).
"""

import time

import pytest

from harness import MQTT_LEVELS, mqtt_client


def persistent(broker, client_id, level, clean, **kw):
    """A client whose session outlives its connection (5.0: expiry 300 s)."""
    if level == 5:
        return mqtt_client(broker, client_id, level=5, clean=clean, session_expiry=300, **kw)
    return mqtt_client(broker, client_id, level=4, clean=clean, **kw)


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_offline_qos1_messages_queued_and_delivered_on_resume(broker, level):
    first = persistent(broker, "sess-1", level, clean=level == 5)
    assert first.session_present is False
    first.subscribe("sess/q1", qos=1)
    first.disconnect()

    pub = mqtt_client(broker, "sess-pub", level=level)
    for i in range(5):
        pub.publish("sess/q1", b"offline %d" % i, qos=1)
    pub.publish("sess/q1", b"qos0 while offline", qos=0)  # QoS 0 need not be queued

    resumed = persistent(broker, "sess-1", level, clean=False)
    assert resumed.session_present is True
    got = resumed.get_n(5)
    assert [m.payload for m in got] == [b"offline %d" % i for i in range(5)]
    assert {m.qos for m in got} == {1}
    # The subscription survived too: live messages arrive without a new SUBSCRIBE.
    pub.publish("sess/q1", b"live", qos=1)
    rest = [m.payload for m in resumed.drain(1.0)]
    assert rest[-1:] == [b"live"], rest
    assert set(rest[:-1]) <= {b"qos0 while offline"}, rest


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_clean_reconnect_discards_session(broker, level):
    first = persistent(broker, "sess-2", level, clean=level == 5)
    first.subscribe("sess/clean", qos=1)
    first.disconnect()
    pub = mqtt_client(broker, "sess-pub2", level=level)
    for i in range(5):
        pub.publish("sess/clean", b"%d" % i, qos=1)

    clean = mqtt_client(broker, "sess-2", level=level, clean=True)
    assert clean.session_present is False
    clean.assert_no_message(0.8)
    pub.publish("sess/clean", b"after", qos=1)  # the old subscription is gone as well
    clean.assert_no_message(0.5)


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_qos2_offline_messages_delivered_once(broker, level):
    first = persistent(broker, "sess-q2", level, clean=level == 5)
    first.subscribe("sess/q2", qos=2)
    first.disconnect()
    pub = mqtt_client(broker, "sess-pub-q2", level=level)
    for i in range(3):
        pub.publish("sess/q2", b"q2 %d" % i, qos=2)
    resumed = persistent(broker, "sess-q2", level, clean=False)
    assert resumed.session_present is True
    got = resumed.get_n(3)
    assert [(m.payload, m.qos) for m in got] == [(b"q2 %d" % i, 2) for i in range(3)]
    resumed.assert_no_message(0.5)


def test_session_expiry_zero_ends_session_at_disconnect(broker):
    first = mqtt_client(broker, "sess-0", level=5, clean=True, session_expiry=0)
    first.subscribe("sess/zero", qos=1)
    first.disconnect()
    mqtt_client(broker, "sess-pub0", level=5).publish("sess/zero", b"lost", qos=1)
    again = mqtt_client(broker, "sess-0", level=5, clean=False, session_expiry=300)
    assert again.session_present is False
    again.assert_no_message(0.5)


def test_session_expires_after_interval(broker):
    first = mqtt_client(broker, "sess-exp", level=5, clean=True, session_expiry=1)
    first.subscribe("sess/exp", qos=1)
    first.disconnect()
    time.sleep(2.5)
    again = mqtt_client(broker, "sess-exp", level=5, clean=False, session_expiry=300)
    assert again.session_present is False


def test_session_survives_within_interval(broker):
    first = mqtt_client(broker, "sess-keep", level=5, clean=True, session_expiry=5)
    first.subscribe("sess/keep", qos=1)
    first.disconnect()
    time.sleep(1)
    mqtt_client(broker, "sess-pubk", level=5).publish("sess/keep", b"kept", qos=1)
    again = mqtt_client(broker, "sess-keep", level=5, clean=False, session_expiry=5)
    assert again.session_present is True
    assert again.get().payload == b"kept"


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_takeover_keeps_persistent_session(broker, level):
    old = persistent(broker, "sess-take", level, clean=level == 5)
    old.subscribe("sess/take", qos=1)
    new = persistent(broker, "sess-take", level, clean=False)
    old.wait_disconnected()
    assert new.session_present is True
    mqtt_client(broker, "sess-pubt", level=level).publish("sess/take", b"to new", qos=1)
    assert new.get().payload == b"to new"


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_offline_queue_keeps_oldest_max_queued_messages(broker_factory, level):
    """20 publishes for an offline session with max_queued_messages 3: the first 3 are kept.

    Both mosquitto 2.0.11 and Isthmus keep exactly max_queued_messages for an offline session
    (max_inflight does not add to it while the client is away).
    """
    broker = broker_factory(config={"mqtt": {"max_inflight": 2, "max_queued_messages": 3}})
    first = persistent(broker, "sess-full", level, clean=level == 5)
    first.subscribe("sess/full", qos=1)
    first.disconnect()
    pub = mqtt_client(broker, "sess-pub-full", level=level)
    for i in range(20):
        pub.publish("sess/full", b"%d" % i, qos=1)
    resumed = persistent(broker, "sess-full", level, clean=False)
    assert [m.payload for m in resumed.drain(1.0)] == [b"0", b"1", b"2"]
    # The session still works once drained.
    pub.publish("sess/full", b"fresh", qos=1)
    assert resumed.get().payload == b"fresh"


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_session_resumed_repeatedly(broker, level):
    pub = mqtt_client(broker, "sess-pub-rep", level=level)
    client = persistent(broker, "sess-rep", level, clean=level == 5)
    client.subscribe("sess/rep", qos=1)
    for cycle in range(3):
        client.disconnect()
        pub.publish("sess/rep", b"cycle %d" % cycle, qos=1)
        client = persistent(broker, "sess-rep", level, clean=False)
        assert client.session_present is True, f"cycle {cycle}"
        assert client.get().payload == b"cycle %d" % cycle


@pytest.mark.parametrize("level", MQTT_LEVELS)
def test_unsubscribe_persists_in_session(broker, level):
    client = persistent(broker, "sess-unsub", level, clean=level == 5)
    client.subscribe("sess/keep", qos=1)
    client.subscribe("sess/drop", qos=1)
    client.unsubscribe("sess/drop")
    client.disconnect()
    pub = mqtt_client(broker, "sess-pub-unsub", level=level)
    pub.publish("sess/drop", b"dropped filter", qos=1)
    pub.publish("sess/keep", b"kept filter", qos=1)
    resumed = persistent(broker, "sess-unsub", level, clean=False)
    assert [m.payload for m in resumed.drain(1.0)] == [b"kept filter"]
