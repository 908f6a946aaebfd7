"""MQTT 5.0 features between paho clients: properties, expiry, subscription options, shared
subscriptions, topic aliases, Receive Maximum, Maximum Packet Size, CONNACK limits.

Checked against mosquitto 2.0 (ISTHMUS_PEER=mosquitto).
"""

import time

from harness import (
    PROP_TOPIC_ALIAS,
    PROP_MAXIMUM_PACKET_SIZE,
    PROP_RECEIVE_MAXIMUM,
    PUBACK,
    PROP_TOPIC_ALIAS_MAXIMUM,
    RawMqtt,
    ack_packet,
    isthmus_only_because,
    mqtt_client,
    user_properties,
)


def test_publish_properties_passed_to_subscribers(broker):
    sub = mqtt_client(broker, "props-sub", level=5)
    sub.subscribe("props/t", qos=1)
    pub = mqtt_client(broker, "props-pub", level=5)
    pub.publish(
        "props/t",
        b'{"ok":true}',
        qos=1,
        UserProperty=[("k1", "v1"), ("k2", "v2"), ("k1", "again")],
        ContentType="application/json",
        PayloadFormatIndicator=1,
        ResponseTopic="props/reply",
        CorrelationData=b"\x00corr\xff",
    )
    got = sub.get()
    assert got.payload == b'{"ok":true}'
    # Order and duplicates of user properties are kept [MQTT-3.3.2-18].
    assert user_properties(got) == [("k1", "v1"), ("k2", "v2"), ("k1", "again")]
    assert got.properties.ContentType == "application/json"
    assert got.properties.PayloadFormatIndicator == 1
    assert got.properties.ResponseTopic == "props/reply"
    assert got.properties.CorrelationData == b"\x00corr\xff"


def test_properties_absent_when_not_sent(broker):
    sub = mqtt_client(broker, "bare-sub", level=5)
    sub.subscribe("bare/t", qos=1)
    mqtt_client(broker, "bare-pub", level=5).publish("bare/t", b"x", qos=1)
    got = sub.get()
    for name in ("UserProperty", "ContentType", "ResponseTopic", "CorrelationData",
                 "MessageExpiryInterval", "SubscriptionIdentifier"):
        assert not hasattr(got.properties, name), f"unexpected {name} in {got.properties}"


def test_message_expiry_drops_expired_queued_message(broker):
    offline = mqtt_client(broker, "exp-sub", level=5, session_expiry=300)
    offline.subscribe("exp/t", qos=1)
    offline.disconnect()
    pub = mqtt_client(broker, "exp-pub", level=5)
    pub.publish("exp/t", b"short-lived", qos=1, MessageExpiryInterval=1)
    pub.publish("exp/t", b"long-lived", qos=1, MessageExpiryInterval=100)
    time.sleep(2.2)
    back = mqtt_client(broker, "exp-sub", level=5, clean=False, session_expiry=300)
    assert back.session_present
    got = back.get()
    assert got.payload == b"long-lived"
    remaining = got.properties.MessageExpiryInterval
    # Decremented by the ~2 s it was held (MQTT 5.0 3.3.2.3.3), never more than was sent.
    assert 95 <= remaining <= 99, f"MessageExpiryInterval {remaining} after holding 2.2 s"
    back.assert_no_message(0.5)


def test_message_expiry_on_live_delivery_at_most_sent(broker):
    sub = mqtt_client(broker, "exp-live", level=5)
    sub.subscribe("exp/live", qos=0)
    mqtt_client(broker, "exp-live-pub", level=5).publish(
        "exp/live", b"x", qos=1, MessageExpiryInterval=60
    )
    got = sub.get()
    assert 0 < got.properties.MessageExpiryInterval <= 60


def test_retained_message_expires(broker):
    pub = mqtt_client(broker, "exp-ret-pub", level=5)
    pub.publish("exp/ret", b"brief", qos=1, retain=True, MessageExpiryInterval=1)
    pub.publish("exp/ret2", b"lasting", qos=1, retain=True)
    time.sleep(2.2)
    sub = mqtt_client(broker, "exp-ret-sub", level=5)
    sub.subscribe("exp/+", qos=1)
    got = sub.get()
    assert got.payload == b"lasting"
    sub.assert_no_message(0.5)


def test_subscription_identifiers_on_delivery(broker):
    sub = mqtt_client(broker, "sid-sub", level=5)
    sub.subscribe("sid/a", qos=1, subscription_id=7)
    sub.subscribe("sid/b/#", qos=1, subscription_id=268435455)  # the largest allowed
    sub.subscribe("sid/c", qos=1)  # none
    pub = mqtt_client(broker, "sid-pub", level=5)
    pub.publish("sid/a", b"a", qos=1)
    pub.publish("sid/b/x", b"b", qos=1)
    pub.publish("sid/c", b"c", qos=1)
    got = {m.topic: m for m in sub.get_n(3)}
    assert got["sid/a"].properties.SubscriptionIdentifier == [7]
    assert got["sid/b/x"].properties.SubscriptionIdentifier == [268435455]
    assert not hasattr(got["sid/c"].properties, "SubscriptionIdentifier")


def test_no_local(broker):
    chatty = mqtt_client(broker, "nl-self", level=5)
    chatty.subscribe("nl/room", qos=1, no_local=True)
    other = mqtt_client(broker, "nl-other", level=5)
    other.subscribe("nl/room", qos=1)
    for i in range(3):
        chatty.publish("nl/room", b"mine %d" % i, qos=1)
    assert [m.payload for m in other.get_n(3)] == [b"mine %d" % i for i in range(3)]
    chatty.assert_no_message(0.5)
    # The subscription is alive: other clients' messages still arrive.
    other.publish("nl/room", b"theirs", qos=1)
    assert chatty.get().payload == b"theirs"


def test_no_local_off_echoes_own_publish(broker):
    echo = mqtt_client(broker, "echo-self", level=5)
    echo.subscribe("echo/t", qos=1, no_local=False)
    echo.publish("echo/t", b"me", qos=1)
    assert echo.get().payload == b"me"


def test_shared_subscription_each_message_to_one_member(broker):
    members = [mqtt_client(broker, f"share-{i}", level=5) for i in range(2)]
    for member in members:
        member.subscribe("$share/g/jobs/+", qos=1)
    everyone = mqtt_client(broker, "share-all", level=5)
    everyone.subscribe("jobs/+", qos=1)
    pub = mqtt_client(broker, "share-pub", level=5)
    sent = [b"job %d" % i for i in range(100)]
    for payload in sent:
        pub.publish("jobs/new", payload, qos=1, wait=False)
    assert [m.payload for m in everyone.get_n(100, timeout=8)] == sent

    time.sleep(0.3)
    received = [member.drain(0.2) for member in members]
    counts = [len(r) for r in received]
    payloads = sorted(m.payload for r in received for m in r)
    assert payloads == sorted(sent), f"each message exactly once in the group; counts {counts}"
    assert all(counts), f"both members get some: {counts}"
    for r in received:
        assert all(m.topic == "jobs/new" for m in r)  # the topic, without $share/g/


def test_shared_subscription_member_leaving_moves_traffic(broker):
    stay = mqtt_client(broker, "share-stay", level=5)
    stay.subscribe("$share/grp/work", qos=1)
    leave = mqtt_client(broker, "share-leave", level=5)
    leave.subscribe("$share/grp/work", qos=1)
    leave.disconnect()
    pub = mqtt_client(broker, "share-pub2", level=5)
    for i in range(10):
        pub.publish("work", b"%d" % i, qos=1)
    assert sorted(m.payload for m in stay.get_n(10)) == sorted(b"%d" % i for i in range(10))


def test_topic_alias_from_client(broker):
    sub = mqtt_client(broker, "alias-sub", level=5)
    sub.subscribe("alias/#", qos=1)
    pub = mqtt_client(broker, "alias-pub", level=5)
    limit = pub.connack_properties.TopicAliasMaximum if hasattr(
        pub.connack_properties, "TopicAliasMaximum") else 0
    assert limit >= 2, f"server grants no topic aliases: {pub.connack_properties}"
    pub.publish("alias/long/topic/name", b"set", qos=1, TopicAlias=1)
    pub.publish("", b"use", qos=1, TopicAlias=1)
    pub.publish("alias/other", b"set2", qos=1, TopicAlias=2)
    pub.publish("", b"use2", qos=1, TopicAlias=2)
    pub.publish("alias/remapped", b"remap", qos=1, TopicAlias=1)  # alias 1 now means this
    pub.publish("", b"use3", qos=1, TopicAlias=1)
    messages = sub.get_n(6)
    got = [(m.topic, m.payload) for m in messages]
    assert got == [
        ("alias/long/topic/name", b"set"),
        ("alias/long/topic/name", b"use"),
        ("alias/other", b"set2"),
        ("alias/other", b"use2"),
        ("alias/remapped", b"remap"),
        ("alias/remapped", b"use3"),
    ]
    # The subscriber allowed no aliases (Topic Alias Maximum 0), so none comes back to it.
    assert not any(hasattr(m.properties, "TopicAlias") for m in messages)


def test_client_receive_maximum_1_gets_everything_in_order(broker):
    sub = mqtt_client(broker, "rm-sub", level=5, connect_properties={"ReceiveMaximum": 1})
    sub.subscribe("rm/t", qos=1)
    pub = mqtt_client(broker, "rm-pub", level=5)
    for i in range(20):
        pub.publish("rm/t", b"%d" % i, qos=1, wait=False)
    got = sub.get_n(20, timeout=8)
    assert [m.payload for m in got] == [b"%d" % i for i in range(20)]


def test_receive_maximum_1_respected_on_the_wire(broker):
    """With Receive Maximum 1 the server sends the next QoS 1 only after the PUBACK."""
    raw = RawMqtt(broker)
    raw.connect("rm-raw", level=5, props=[(PROP_RECEIVE_MAXIMUM, 1)])
    raw.subscribe("rm/raw", qos=1)
    pub = mqtt_client(broker, "rm-raw-pub", level=5)
    for i in range(3):
        pub.publish("rm/raw", b"%d" % i, qos=1)
    for i in range(3):
        first = raw.read_packet().publish()
        assert first["payload"] == b"%d" % i
        try:
            extra = raw.read_packet(0.5)
            raise AssertionError(f"second QoS 1 in flight before PUBACK: {extra}")
        except TimeoutError:
            pass
        raw.send(ack_packet(PUBACK, first["packet_id"]))


def test_client_maximum_packet_size_respected(broker):
    """The server drops messages bigger than the client's Maximum Packet Size."""
    small = mqtt_client(broker, "mps-sub", level=5, connect_properties={"MaximumPacketSize": 200})
    small.subscribe("mps/t", qos=1)
    pub = mqtt_client(broker, "mps-pub", level=5)
    pub.publish("mps/t", b"x" * 500, qos=1)
    pub.publish("mps/t", b"fits", qos=1)
    got = small.get()
    assert got.payload == b"fits"
    small.assert_no_message(0.3)
    assert small.is_connected()


def test_connack_reports_configured_limits(broker_factory):
    broker = broker_factory(
        config={"mqtt": {"max_packet_bytes": 4096, "topic_alias_maximum": 5}}
    )
    raw = RawMqtt(broker)
    props = raw.connect("limits", level=5).properties()
    assert props.get(PROP_MAXIMUM_PACKET_SIZE) == 4096, props
    assert props.get(PROP_TOPIC_ALIAS_MAXIMUM) == 5, props


def test_server_keep_alive(broker_factory):
    broker = broker_factory(config={"mqtt": {"server_keep_alive_s": 10}})
    asks_more = mqtt_client(broker, "ka-more", level=5, keepalive=60)
    assert asks_more.connack_properties.ServerKeepAlive == 10
    asks_none = mqtt_client(broker, "ka-none", level=5, keepalive=0)
    assert asks_none.connack_properties.ServerKeepAlive == 10


def test_request_response_between_mqtt_clients(broker):
    responder = mqtt_client(broker, "responder", level=5)
    responder.subscribe("svc/echo", qos=1)
    requester = mqtt_client(broker, "requester", level=5)
    requester.subscribe("reply/requester", qos=1)
    requester.publish(
        "svc/echo", b"ping", qos=1, ResponseTopic="reply/requester", CorrelationData=b"42"
    )
    request = responder.get()
    responder.publish(
        request.properties.ResponseTopic,
        b"pong:" + request.payload,
        qos=1,
        CorrelationData=request.properties.CorrelationData,
    )
    answer = requester.get()
    assert (answer.topic, answer.payload) == ("reply/requester", b"pong:ping")
    assert answer.properties.CorrelationData == b"42"


@isthmus_only_because("mosquitto 2.0.11 sends retained messages to new shared subscriptions")
def test_shared_subscription_gets_no_retained(broker):
    """MQTT 5.0 4.8.2: retained messages are not sent for a new shared subscription."""
    pub = mqtt_client(broker, "shr-pub", level=5)
    pub.publish("shr/t", b"retained", qos=1, retain=True)
    member = mqtt_client(broker, "shr-member", level=5)
    member.subscribe("$share/g/shr/t", qos=1)
    plain = mqtt_client(broker, "shr-plain", level=5)
    plain.subscribe("shr/t", qos=1)
    assert plain.get().payload == b"retained"  # it is stored
    member.assert_no_message(0.5)
    pub.publish("shr/t", b"live", qos=1)
    assert member.get().payload == b"live"


@isthmus_only_because("mosquitto 2.0.11 sends no topic aliases to clients")
def test_topic_aliases_server_to_client(broker):
    """A client allowing 2 aliases: topics resolve correctly and at most 2 aliases are used."""
    raw = RawMqtt(broker)
    raw.connect("alias-in", level=5, props=[(PROP_TOPIC_ALIAS_MAXIMUM, 2)])
    raw.subscribe("ta/#", qos=0)
    pub = mqtt_client(broker, "alias-src", level=5)
    topics = ["ta/a", "ta/a", "ta/b", "ta/b", "ta/c", "ta/c", "ta/a"]
    for topic in topics:
        pub.publish(topic, topic.encode(), qos=0)
    aliases, resolved, used = {}, [], set()
    for _ in topics:
        msg = raw.read_packet().publish()
        alias = msg["props"].get(PROP_TOPIC_ALIAS)
        if alias is not None:
            assert 1 <= alias <= 2, f"alias {alias} over the client's maximum 2"
            used.add(alias)
            if msg["topic"]:
                aliases[alias] = msg["topic"]
            assert alias in aliases, f"alias {alias} used before it was set"
            resolved.append((aliases[alias], msg["payload"]))
        else:
            assert msg["topic"], "empty topic without an alias"
            resolved.append((msg["topic"], msg["payload"]))
    assert resolved == [(t, t.encode()) for t in topics]
    assert used, "no alias used although the client allowed 2"


def test_session_expiry_capped_by_server(broker_factory):
    broker = broker_factory(config={"mqtt": {"max_session_expiry_s": 1}})
    client = mqtt_client(broker, "capped", level=5, session_expiry=300)
    # 3.2.2.3.2: a server using another value than asked sends it in CONNACK.
    assert client.connack_properties.SessionExpiryInterval == 1
    client.subscribe("capped/t", qos=1)
    client.disconnect()
    time.sleep(2.2)
    again = mqtt_client(broker, "capped", level=5, clean=False, session_expiry=300)
    assert again.session_present is False


def test_311_persistent_session_expires_after_max_session_expiry(broker_factory):
    broker = broker_factory(config={"mqtt": {"max_session_expiry_s": 1}})
    client = mqtt_client(broker, "capped311", level=4, clean=False)
    client.subscribe("capped/t", qos=1)
    client.disconnect()
    time.sleep(2.2)
    again = mqtt_client(broker, "capped311", level=4, clean=False)
    assert again.session_present is False


def test_slow_qos0_consumer_is_not_cut(broker_factory):
    """A subscriber that stops reading loses QoS 0 messages (counted), is not disconnected, and
    gets new messages once it reads again."""
    broker = broker_factory(config={"mqtt": {"max_pending_bytes": 65536}})
    raw = RawMqtt(broker, rcvbuf=4096)
    raw.connect("slowpoke", level=5)
    raw.subscribe("flood/t", qos=0)
    pub = mqtt_client(broker, "flooder", level=5)
    chunk = b"z" * 1000
    total = 20000  # 20 MB: far more than socket buffers and max_pending_bytes hold
    for i in range(total):
        pub.publish("flood/t", b"%06d" % i + chunk, qos=0, wait=False)
    pub.publish("flood/done", b"", qos=1)  # the publisher was never stalled for long
    received = 0
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        try:
            raw.read_packet(1.0)
        except TimeoutError:
            break
        received += 1
    assert not raw.closed, "a slow MQTT subscriber was disconnected"
    assert 0 < received < total, f"received {received} of {total}: nothing was dropped?"
    pub.publish("flood/t", b"after", qos=0)
    last = raw.read_packet(3).publish()
    assert last["payload"] == b"after"
