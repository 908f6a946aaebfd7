"""MQTT <-> NATS on one Isthmus broker: paho-mqtt clients and nats-py clients talk to each other.

Isthmus-only (mosquitto has no NATS side; nats-server 2.9 has no MQTT 5). The subject mapping is
nats-server's (docs/mqtt-subjects.md); the behaviour is docs/mqtt.md's "NATS messages seen from MQTT" and "Publishing".
paho calls block, so these async tests run them in a thread (`blocking`) to keep nats-py's
event loop running.
"""

import asyncio
import json
from collections import Counter

import pytest

from harness import (
    MQTT_LEVELS,
    Collector,
    RawMqtt,
    connect,
    mqtt_client,
    mqtt_nats_interop,
    sync,
    user_properties,
    wait_until,
)

pytestmark = mqtt_nats_interop


async def blocking(fn, *args, **kwargs):
    return await asyncio.to_thread(fn, *args, **kwargs)


async def nats_subscriber(broker, subject, queue=""):
    nc = await connect(broker)
    got = Collector()
    await nc.subscribe(subject, queue=queue, cb=got.cb)
    await sync(nc)
    return nc, got


async def test_nats_publish_reaches_mqtt_subscribers_at_their_qos(broker):
    subscribers = []
    for level in (5, 4):
        for qos in (0, 1, 2):
            client = await blocking(mqtt_client, broker, f"sensor-{level}-{qos}", level=level)
            await blocking(client.subscribe, "sensor/data/temperature", qos=qos)
            subscribers.append((level, qos, client))
    wildcard = await blocking(mqtt_client, broker, "sensor-wild", level=5)
    await blocking(wildcard.subscribe, "sensor/+/temperature", qos=1)

    nc = await connect(broker)
    payload = json.dumps({"device_id": "sensor_001", "temp": 25.5}).encode()
    await nc.publish("sensor.data.temperature", payload)
    await sync(nc)

    for level, qos, client in subscribers + [(5, 1, wildcard)]:
        msg = await blocking(client.get, 5)
        assert (msg.topic, msg.payload) == ("sensor/data/temperature", payload), (level, qos)
        assert msg.qos == qos, f"level {level}: delivered at QoS {msg.qos}, subscription {qos}"
        assert json.loads(msg.payload) == {"device_id": "sensor_001", "temp": 25.5}
        assert not msg.retain


@pytest.mark.parametrize("level", MQTT_LEVELS)
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_mqtt_publish_reaches_nats_with_nmqtt_pub_header(broker, level, qos):
    collectors = []
    for subject in ("command.device.light_001", "command.device.*", "command.>"):
        _, got = await nats_subscriber(broker, subject)
        collectors.append((subject, got))
    _, other = await nats_subscriber(broker, "command.device.light_002")
    pub = await blocking(mqtt_client, broker, "light-pub", level=level)
    await blocking(pub.publish, "command/device/light_001", b"ON", qos=qos)

    for subject, got in collectors:
        assert await wait_until(lambda: got.count() >= 1, 5), f"nothing on {subject}"
        msg = got.msgs[0]
        assert (msg.subject, msg.data) == ("command.device.light_001", b"ON"), subject
        assert msg.headers == {"Nmqtt-Pub": str(qos)}, f"{subject}: headers {msg.headers}"
        assert msg.reply == "", "an MQTT publish without Response Topic has no reply subject"
    await asyncio.sleep(0.2)
    assert [got.count() for _, got in collectors] == [1, 1, 1]
    assert other.count() == 0


async def test_demo_subjects_both_ways(broker):
    nc, admin = await nats_subscriber(broker, "NATS.MQTT.Demo.Admin.>")
    mqtt_admin = await blocking(mqtt_client, broker, "demo-device", level=4)
    for count in range(3):
        await blocking(
            mqtt_admin.publish, "NATS/MQTT/Demo/Admin/ProdConsumedCount/0/Count",
            b"%d" % count, qos=1,
        )
    assert await wait_until(lambda: admin.count() >= 3, 5), admin.data
    assert admin.data == [b"0", b"1", b"2"]
    assert {m.subject for m in admin.msgs} == {"NATS.MQTT.Demo.Admin.ProdConsumedCount.0.Count"}

    commands = await blocking(mqtt_client, broker, "demo-listener", level=5)
    await blocking(commands.subscribe, "NATS/MQTT/Demo/Command/#", qos=1)
    await nc.publish("NATS.MQTT.Demo.Command.Stop", b"stop now")
    await nc.publish("NATS.MQTT.Demo.Command", b"parent level")  # `#` matches the parent too
    await nc.publish("NATS.MQTT.Demo.Other", b"not a command")
    await sync(nc)
    got = await blocking(commands.get_n, 2, 5)
    assert [(m.topic, m.payload) for m in got] == [
        ("NATS/MQTT/Demo/Command/Stop", b"stop now"),
        ("NATS/MQTT/Demo/Command", b"parent level"),
    ]
    await blocking(commands.assert_no_message, 0.3)


TOPIC_SUBJECT = [
    ("spBv1.0/group/NBIRTH/node", "spBv1//0.group.NBIRTH.node"),
    ("a//b", "a./.b"),
    ("/leading", "/.leading"),
    ("trailing/", "trailing./"),
    ("plain/topic", "plain.topic"),
]


@pytest.mark.parametrize("topic,subject", TOPIC_SUBJECT)
async def test_topic_subject_mapping_mqtt_to_nats(broker, topic, subject):
    _, got = await nats_subscriber(broker, subject)
    _, everything = await nats_subscriber(broker, ">")
    pub = await blocking(mqtt_client, broker, "map-pub", level=5)
    await blocking(pub.publish, topic, b"mapped", qos=1)
    assert await wait_until(lambda: got.count() >= 1, 5), (
        f"MQTT {topic!r} did not reach NATS {subject!r}; `>` saw {[m.subject for m in everything.msgs]}"
    )
    assert (got.msgs[0].subject, got.data) == (subject, [b"mapped"])


@pytest.mark.parametrize("topic,subject", TOPIC_SUBJECT)
async def test_topic_subject_mapping_nats_to_mqtt(broker, topic, subject):
    sub = await blocking(mqtt_client, broker, "map-sub", level=5)
    await blocking(sub.subscribe, topic, qos=1)
    catch_all = await blocking(mqtt_client, broker, "map-all", level=5)
    await blocking(catch_all.subscribe, "#", qos=1)
    nc = await connect(broker)
    await nc.publish(subject, b"mapped")
    await sync(nc)
    msg = await blocking(sub.get, 5)
    assert (msg.topic, msg.payload) == (topic, b"mapped")
    assert (await blocking(catch_all.get, 5)).topic == topic


async def test_user_properties_become_nats_headers(broker):
    _, got = await nats_subscriber(broker, "props.out")
    pub = await blocking(mqtt_client, broker, "props-pub", level=5)
    await blocking(
        pub.publish, "props/out", b"with props", qos=1,
        UserProperty=[("X-Trace-Id", "abc-123"), ("Region", "eu")],
    )
    assert await wait_until(lambda: got.count() >= 1, 5)
    assert got.msgs[0].headers == {"Nmqtt-Pub": "1", "X-Trace-Id": "abc-123", "Region": "eu"}


async def test_nats_headers_become_user_properties(broker):
    sub5 = await blocking(mqtt_client, broker, "hdr-sub5", level=5)
    await blocking(sub5.subscribe, "hdr/in", qos=1)
    sub4 = await blocking(mqtt_client, broker, "hdr-sub4", level=4)
    await blocking(sub4.subscribe, "hdr/in", qos=1)
    nc = await connect(broker)
    headers = {"X-Trace-Id": "abc-123", "Region": "eu", "Nmqtt-Internal": "hidden"}
    await nc.publish("hdr.in", b"with headers", headers=headers)
    await nc.publish("hdr.in", b"without headers")
    await sync(nc)

    first, second = await blocking(sub5.get_n, 2, 5)
    assert first.payload == b"with headers"
    assert sorted(user_properties(first)) == [("Region", "eu"), ("X-Trace-Id", "abc-123")], (
        "NATS headers -> user properties, Nmqtt-* left out"
    )
    assert second.payload == b"without headers"
    assert user_properties(second) == []
    # 3.1.1 has no properties: the payload arrives untouched.
    assert [m.payload for m in await blocking(sub4.get_n, 2, 5)] == [
        b"with headers", b"without headers",
    ]


async def test_mqtt_to_mqtt_carries_no_nmqtt_user_property(broker):
    sub = await blocking(mqtt_client, broker, "no-nmqtt-sub", level=5)
    await blocking(sub.subscribe, "plain/x", qos=1)
    pub = await blocking(mqtt_client, broker, "no-nmqtt-pub", level=5)
    await blocking(pub.publish, "plain/x", b"x", qos=1)
    msg = await blocking(sub.get, 5)
    assert user_properties(msg) == []


async def test_shared_subscription_and_queue_group_are_one_group(broker):
    mqtt_members = []
    for i in range(2):
        client = await blocking(mqtt_client, broker, f"shared-{i}", level=5)
        await blocking(client.subscribe, "$share/g/s", qos=1)
        mqtt_members.append(client)
    nats_members = [await nats_subscriber(broker, "s", queue="g") for _ in range(2)]
    _, watcher = await nats_subscriber(broker, "s")

    nc = await connect(broker)
    for i in range(100):
        await nc.publish("s", b"nats %d" % i)
    await sync(nc)
    pub = await blocking(mqtt_client, broker, "shared-pub", level=5)
    for i in range(100):
        await blocking(pub.publish, "s", b"mqtt %d" % i, qos=1)

    sent = [b"nats %d" % i for i in range(100)] + [b"mqtt %d" % i for i in range(100)]
    assert await wait_until(lambda: watcher.count() >= 200, 8), watcher.count()
    await asyncio.sleep(0.5)
    mqtt_got = [[m.payload for m in await blocking(c.drain, 0.2)] for c in mqtt_members]
    nats_got = [got.data for _, got in nats_members]
    per_message = Counter(p for member in mqtt_got + nats_got for p in member)
    counts = {"mqtt": [len(m) for m in mqtt_got], "nats": [len(n) for n in nats_got]}
    missing = set(sent) - set(per_message)
    duplicates = {p: n for p, n in per_message.items() if n > 1}
    assert not missing, f"{len(missing)} messages reached no member; counts {counts}"
    assert not duplicates, f"{len(duplicates)} messages reached two members; counts {counts}"
    assert sum(per_message.values()) == 200


async def test_mqtt_request_answered_by_nats_service(broker):
    service_nc = await connect(broker)
    requests = []

    async def serve(msg):
        requests.append(msg)
        await msg.respond(b"answer:" + msg.data)

    await service_nc.subscribe("svc.echo", cb=serve)
    await sync(service_nc)
    requester = await blocking(mqtt_client, broker, "mqtt-requester", level=5)
    await blocking(requester.subscribe, "r/x", qos=1)
    await blocking(
        requester.publish, "svc/echo", b"hello", qos=1,
        ResponseTopic="r/x", CorrelationData=b"corr-1",
    )
    answer = await blocking(requester.get, 5)
    assert requests and requests[0].reply, "the NATS service saw no reply subject"
    assert (answer.topic, answer.payload) == ("r/x", b"answer:hello")
    assert answer.properties.CorrelationData == b"corr-1"


async def test_nats_request_answered_by_mqtt_responder(broker):
    responder = await blocking(mqtt_client, broker, "mqtt-responder", level=5)
    await blocking(responder.subscribe, "svc/time", qos=1)
    nc = await connect(broker)
    pending = asyncio.create_task(nc.request("svc.time", b"what time?", timeout=5))
    request = await blocking(responder.get, 5)
    response_topic = getattr(request.properties, "ResponseTopic", None)
    assert response_topic and response_topic.startswith("_INBOX/"), request.properties
    extra = {}
    if hasattr(request.properties, "CorrelationData"):
        extra["CorrelationData"] = request.properties.CorrelationData
    await blocking(responder.publish, response_topic, b"noon", qos=1, **extra)
    reply = await pending
    assert reply.data == b"noon"


async def test_will_reaches_nats_subscribers(broker):
    _, got = await nats_subscriber(broker, "dev.status")
    raw = RawMqtt(broker)
    raw.connect("dev-1", level=4, will={"topic": "dev/status", "payload": b"dev-1 lost", "qos": 1})
    raw.close()
    assert await wait_until(lambda: got.count() >= 1, 5), "no will on NATS"
    assert got.data == [b"dev-1 lost"]
    assert got.msgs[0].headers == {"Nmqtt-Pub": "1"}


@pytest.mark.parametrize("level", MQTT_LEVELS)
async def test_nats_publishes_queued_for_offline_mqtt_session(broker, level):
    def persistent(clean):
        if level == 5:
            return mqtt_client(broker, "offline-dev", level=5, clean=clean, session_expiry=300)
        return mqtt_client(broker, "offline-dev", level=4, clean=clean)

    first = await blocking(persistent, level == 5)
    await blocking(first.subscribe, "fleet/cmd", qos=1)
    await blocking(first.disconnect)
    nc = await connect(broker)
    for i in range(5):
        await nc.publish("fleet.cmd", b"cmd %d" % i)
    await sync(nc)
    back = await blocking(persistent, False)
    assert back.session_present
    got = await blocking(back.get_n, 5, 5)
    assert [(m.payload, m.qos) for m in got] == [(b"cmd %d" % i, 1) for i in range(5)]


async def test_large_payload_both_ways(broker):
    payload = bytes(range(256)) * 2000  # 512000 bytes
    nc, got = await nats_subscriber(broker, "big.out")
    pub = await blocking(mqtt_client, broker, "big-mqtt", level=5)
    await blocking(pub.publish, "big/out", payload, qos=1)
    assert await wait_until(lambda: got.count() >= 1, 5)
    assert got.data == [payload]

    sub = await blocking(mqtt_client, broker, "big-sub", level=4)
    await blocking(sub.subscribe, "big/in", qos=1)
    await nc.publish("big.in", payload)
    await sync(nc)
    assert (await blocking(sub.get, 5)).payload == payload


async def test_retained_mqtt_publish_reaches_nats_with_qos_digit(broker):
    _, got = await nats_subscriber(broker, "ret.nats")
    pub = await blocking(mqtt_client, broker, "ret-pub", level=5)
    await blocking(pub.publish, "ret/nats", b"kept", qos=1, retain=True)
    assert await wait_until(lambda: got.count() >= 1, 5)
    assert got.msgs[0].headers == {"Nmqtt-Pub": "1"}
    # A NATS publish is never retained: a late MQTT subscriber gets only the MQTT one.
    nc = await connect(broker)
    await nc.publish("ret.nats", b"live only")
    await sync(nc)
    late = await blocking(mqtt_client, broker, "ret-late", level=5)
    await blocking(late.subscribe, "ret/nats", qos=1)
    msg = await blocking(late.get, 5)
    assert (msg.payload, msg.retain) == (b"kept", True)
    await blocking(late.assert_no_message, 0.3)


async def test_nats_subject_without_mqtt_topic_is_skipped(broker):
    """A token with a lone `/` has no MQTT topic (docs/mqtt-subjects.md): skipped, not mangled
    into another topic as nats-server does (`a/b` -> `ab`); the next message still arrives."""
    sub = await blocking(mqtt_client, broker, "odd-sub", level=5)
    await blocking(sub.subscribe, "odd/#", qos=1)
    everything = await blocking(mqtt_client, broker, "odd-all", level=4)
    await blocking(everything.subscribe, "#", qos=0)
    nc = await connect(broker)
    await nc.publish("odd.a/b", b"no topic for this")
    await nc.publish("odd.ok", b"fine")
    await sync(nc)
    for client in (sub, everything):
        msg = await blocking(client.get, 5)
        assert (msg.topic, msg.payload) == ("odd/ok", b"fine")
        await blocking(client.assert_no_message, 0.3)
