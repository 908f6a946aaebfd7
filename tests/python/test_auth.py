"""Device tokens (issue 5): the broker with [auth.jwt] against real clients.

Tokens come from `isthmus token issue`, the way an operator issues them. The same grant is
checked over MQTT (paho-mqtt 3.1.1 and 5.0, mosquitto_pub/sub) and NATS (nats-py, raw
sockets). The NATS texts follow nats-server 2.9.10 with authorization configured (checked by
hand: any op before CONNECT and a bad token get -ERR 'Authorization Violation' and close, no
CONNECT within 2 s gets -ERR 'Authentication Timeout', a denied PUB or SUB gets -ERR
'Permissions Violation for Publish to "x"' / 'Permissions Violation for Subscription to "x"'
and the connection stays).
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path

import nats
import pytest

from harness import (
    MosquittoSub,
    RawClient,
    isthmus_bin,
    isthmus_only_because,
    isthmus_toml,
    mqtt_client,
    wait_until,
)

pytestmark = isthmus_only_because("JWT device tokens are Isthmus's auth")

KID = "k1"


def run_isthmus(*args: str) -> str:
    done = subprocess.run([str(isthmus_bin()), *args], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, f"isthmus {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture
def keys(tmp_path):
    """An HS256 secret made by `isthmus token keygen`."""
    secret = tmp_path / "hmac.secret"
    run_isthmus("token", "keygen", "--alg", "hs256", "--out", str(secret))
    return secret


def issue(key, sub: str, *rules: str, client_id: str | None = None, ttl: str = "1h") -> str:
    args = ["token", "issue", "--key", str(key), "--alg", "HS256", "--kid", KID, "--sub", sub,
            "--ttl", ttl, *rules]
    if client_id is not None:
        args += ["--client-id", client_id]
    token = run_isthmus(*args).strip()
    assert token.count(".") == 2 and "\n" not in token, token
    return token


def auth_config(key) -> dict:
    return {
        # No leeway, so that a token 2 s past its exp is already refused.
        "auth.jwt": {"required": True, "leeway_s": 0},
        "auth.jwt.keys": [{"kid": KID, "algorithms": ["HS256"], "secret_file": str(key)}],
    }


@pytest.fixture
def secured(broker_factory, keys):
    return broker_factory(shards=2, config=auth_config(keys))


def device_token(keys, client_id="dev1", ttl="1h"):
    """A device: publishes under sensors/<client id>/, takes commands under cmd/<client id>/."""
    return issue(keys, "device", "--pub", "sensors.%c.>", "--sub-allow", "cmd.%c.>",
                 client_id=client_id, ttl=ttl)


def backend_token(keys):
    """A service: reads every device's sensors, sends every device commands."""
    return issue(keys, "backend", "--pub", "cmd.>", "--sub-allow", "sensors.>")


# ---------------------------------------------------------------------------------------------
# MQTT


@pytest.mark.parametrize("level", [4, 5])
def test_mqtt_valid_token_connects_and_its_grant_is_enforced(secured, keys, level):
    backend = mqtt_client(secured, "backend", level=level, username="svc",
                          password=backend_token(keys))
    backend.subscribe("sensors/#", qos=1)
    device = mqtt_client(secured, "dev1", level=level, username="device",
                         password=device_token(keys))
    device.publish("sensors/dev1/temp", b"21.5", qos=1)
    got = backend.get()
    assert (got.topic, got.payload) == ("sensors/dev1/temp", b"21.5")
    # Another device's namespace: refused (5.0 PUBACK 0x87; 3.1.1 acknowledged and dropped).
    info = device.publish("sensors/dev2/temp", b"spoofed", qos=1)
    if level == 5:
        assert device.pubacks[info.mid] == 0x87
    backend.assert_no_message(0.5)
    # Subscribe outside the grant: 0x87 (5.0) / 0x80 (3.1.1); inside: granted.
    device.subscribe("sensors/#", qos=1, expect=[0x87 if level == 5 else 0x80])
    device.subscribe("cmd/dev1/#", qos=1)
    backend.publish("cmd/dev1/reboot", b"now", qos=1)
    assert device.get().payload == b"now"


@pytest.mark.parametrize("level", [4, 5])
def test_mqtt_bad_tokens_are_refused_with_the_connack_code(secured, keys, tmp_path, level):
    # paho 2 reports a 3.1.1 return code as its 5.0 equivalent (4 -> 0x86, 5 -> 0x87,
    # 2 -> 0x85), so the codes are the same for both levels here; the 3.1.1 bytes themselves
    # are checked with mosquitto_pub below.
    bad = 0x86
    other = tmp_path / "other.secret"
    run_isthmus("token", "keygen", "--alg", "hs256", "--out", str(other))
    good = device_token(keys)
    expired = issue(keys, "device", "--pub", "sensors.%c.>", client_id="dev1", ttl="1s")
    time.sleep(2.1)
    header, payload, signature = good.split(".")
    tampered = ".".join([header, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"), signature])
    cases = {
        "no password": None,
        "not a JWT": "hello",
        "wrong key": issue(other, "device", "--pub", "sensors.%c.>", client_id="dev1"),
        "tampered payload": tampered,
        "expired": expired,
    }
    for what, token in cases.items():
        client = mqtt_client(secured, "dev1", level=level, username="device", password=token,
                             connect=False)
        _, code, _ = client.connect(check=False)
        assert code == bad, f"{what}: CONNACK {code:#x}, want {bad:#x}"
        client.close()
    # Valid but bound to another client id: 0x85 / 0x02.
    client = mqtt_client(secured, "dev2", level=level, username="device", password=good, connect=False)
    _, code, _ = client.connect(check=False)
    assert code == 0x85, f"client id binding: {code:#x}"
    client.close()
    # Valid but granting nothing: 0x87 / 0x05.
    nothing = issue(keys, "nobody")
    client = mqtt_client(secured, "x", level=level, username="device", password=nothing, connect=False)
    _, code, _ = client.connect(check=False)
    assert code == 0x87, f"no permissions: {code:#x}"
    client.close()


def test_mqtt_client_id_with_wildcards_does_not_widen_the_grant(secured, keys):
    """`%c` is substituted whole; a client id with MQTT or NATS wildcard characters matches no
    rule, so the token grants nothing usable."""
    backend = mqtt_client(secured, "backend", username="svc", password=backend_token(keys))
    backend.subscribe("sensors/#", qos=1)
    for client_id in ["+", "#", "a.b", "*", ">"]:
        token = issue(keys, "device", "--pub", "sensors.%c.>", "--sub-allow", "cmd.%c.>")
        client = mqtt_client(secured, client_id, username="device", password=token, connect=False)
        _, code, _ = client.connect(check=False)
        if code == 0:
            info = client.publish("sensors/x/temp", b"escape", qos=1)
            assert client.pubacks[info.mid] == 0x87, client_id
            client.subscribe("cmd/#", qos=1, expect=[0x87])
        else:
            assert code == 0x87, f"{client_id!r}: {code:#x}"
        client.close()
    backend.assert_no_message(0.5)


def test_mosquitto_cli_with_a_token(secured, keys):
    """`mosquitto_sub/pub -u device -P <jwt>`, the way devices are tested by hand."""
    sub = MosquittoSub(secured, "-i", "backend", "-u", "svc", "-P", backend_token(keys),
                       "-t", "sensors/#", "-v", "-V", "5")
    sub.wait_subscribed()
    host, port = secured.mqtt_addr
    ok = subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-i", "dev1", "-u",
                         "device", "-P", device_token(keys), "-t", "sensors/dev1/t", "-m", "7",
                         "-q", "1"], capture_output=True, text=True, timeout=10)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    sub.wait_for_output("sensors/dev1/t 7")
    refused = subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-i", "dev1", "-u",
                              "device", "-P", "not-a-token", "-t", "sensors/dev1/t", "-m", "7"],
                             capture_output=True, text=True, timeout=10)
    assert refused.returncode != 0
    assert "bad user name or password" in (refused.stdout + refused.stderr).lower(), refused


@pytest.mark.parametrize("version", ["311", "5"])
def test_mosquitto_pub_sees_each_refusal(secured, keys, version):
    """mosquitto_pub prints the CONNACK code it got: 3.1.1 return codes 4, 5 and 2, or the 5.0
    reason codes 0x86, 0x87 and 0x85."""
    host, port = secured.mqtt_addr
    cases = [
        ("not-a-token", "dev1", "bad user name or password"),
        (issue(keys, "nobody"), "dev1", "not authori"),
        (device_token(keys, client_id="dev1"), "dev2", "identifier"),
    ]
    for token, client_id, text in cases:
        done = subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), "-V", version,
                               "-i", client_id, "-u", "u", "-P", token, "-t", "sensors/x",
                               "-m", "1"], capture_output=True, text=True, timeout=10)
        out = (done.stdout + done.stderr).lower()
        assert done.returncode != 0 and text in out, f"{version} {client_id}: {out}"


def test_mqtt5_connection_closed_when_its_token_expires(secured, keys):
    """DISCONNECT 0xA0 (Maximum connect time) at `exp`; the will goes out."""
    watcher = mqtt_client(secured, "backend", username="device", password=backend_token(keys))
    watcher.subscribe("sensors/#", qos=1)
    token = device_token(keys, ttl="2s")
    device = mqtt_client(secured, "dev1", username="device", password=token,
                         will={"topic": "sensors/dev1/status", "payload": b"gone", "qos": 1})
    from_server, reason, _ = device.wait_disconnected(timeout=6)
    assert (from_server, reason) == (True, 0xA0)
    assert watcher.get().payload == b"gone"


def test_resumed_session_drops_subscriptions_the_new_token_forbids(secured, keys):
    wide = issue(keys, "device", "--sub-allow", "cmd.>", "--pub", "sensors.%c.>",
                 client_id="dev1")
    first = mqtt_client(secured, "dev1", clean=False, session_expiry=300, username="device", password=wide)
    first.subscribe("cmd/all/#", qos=1)
    first.subscribe("cmd/dev1/#", qos=1)
    first.disconnect()
    # Queued for the offline session under the wide token: not delivered under the narrow one.
    early = mqtt_client(secured, "early", username="svc", password=backend_token(keys))
    early.publish("cmd/all/queued", b"queued for all", qos=1)
    early.publish("cmd/dev1/queued", b"queued for dev1", qos=1)
    early.close()
    second = mqtt_client(secured, "dev1", clean=False, session_expiry=300,
                         username="device", password=device_token(keys))
    assert second.session_present
    backend = mqtt_client(secured, "backend", username="device", password=backend_token(keys))
    assert second.get().payload == b"queued for dev1"
    backend.publish("cmd/all/x", b"to all", qos=1)
    backend.publish("cmd/dev1/x", b"to dev1", qos=1)
    assert second.get().payload == b"to dev1"
    second.assert_no_message(0.5)


# ---------------------------------------------------------------------------------------------
# NATS


async def test_nats_token_in_auth_token_and_in_pass(secured, keys):
    url = secured.url
    svc = await nats.connect(url, token=backend_token(keys), allow_reconnect=False)
    got = []
    async def on_message(msg):
        got.append(msg.data)

    sub = await svc.subscribe("sensors.>", cb=on_message)
    await svc.flush()
    dev = await nats.connect(url, user="device", password=issue(keys, "device", "--pub",
                                                                 "sensors.dev9.>"),
                             allow_reconnect=False)
    await dev.publish("sensors.dev9.t", b"1")
    await dev.flush()
    assert await wait_until(lambda: got == [b"1"], 5), got
    await sub.unsubscribe()
    await dev.close()
    await svc.close()


async def test_nats_bad_token_is_an_authorization_violation(secured, keys):
    errors = []

    async def on_error(e):
        errors.append(e)

    with pytest.raises(Exception) as refused:
        await nats.connect(secured.url, token="nope", allow_reconnect=False,
                           connect_timeout=3, error_cb=on_error)
    text = (str(refused.value) + " ".join(map(str, errors))).lower()
    assert "authorization violation" in text, text


async def test_nats_permission_violations_keep_the_connection(secured, keys):
    raw = RawClient(secured)
    token = issue(keys, "svc", "--pub", "a.>", "--sub-allow", "b.>", "--deny-sub", "b.secret.>")
    raw.send(f'CONNECT {{"verbose":false,"auth_token":"{token}"}}\r\n'.encode())
    raw.send(b"PUB x.y 1\r\nx\r\nSUB c 1\r\nSUB b.secret.x 2\r\nSUB b.> 3\r\nPING\r\n")
    raw.expect_line(b"-ERR 'Permissions Violation for Publish to \"x.y\"'")
    raw.expect_line(b"-ERR 'Permissions Violation for Subscription to \"c\"'")
    raw.expect_line(b"-ERR 'Permissions Violation for Subscription to \"b.secret.x\"'")
    raw.expect_line(b"PONG")
    # b.> overlaps the deny rule: accepted, and b.secret.* deliveries are withheld.
    pub = RawClient(secured)
    wide = issue(keys, "pub", "--pub", ">")
    pub.send(f'CONNECT {{"verbose":false,"auth_token":"{wide}"}}\r\n'.encode())
    pub.send(b"PUB b.secret.z 1\r\ns\r\nPUB b.open 1\r\no\r\nPING\r\n")
    pub.expect_line(b"PONG")
    subject, _sid, _reply, _headers, payload = raw.read_msg()
    assert (subject, payload) == (b"b.open", b"o"), (subject, payload)


async def test_nats_ops_before_connect_and_auth_timeout(secured):
    raw = RawClient(secured)
    assert raw.info.get("auth_required") is True, raw.info
    raw.send(b"PING\r\n")
    data, closed = raw.read_until_close(5)
    assert (data, closed) == (b"-ERR 'Authorization Violation'\r\n", True)
    late = RawClient(secured)
    started = time.monotonic()
    data, closed = late.read_until_close(6)
    assert (data, closed) == (b"-ERR 'Authentication Timeout'\r\n", True)
    assert 1.5 < time.monotonic() - started < 4


async def test_nats_gets_no_more_than_mqtt_from_the_same_token(secured, keys):
    """Rules with %c need a client id: over NATS that is the token's client_id claim; a token
    without one grants NATS nothing through such rules."""
    unbound = issue(keys, "device", "--pub", "sensors.%c.>")
    raw = RawClient(secured)
    raw.send(f'CONNECT {{"verbose":false,"auth_token":"{unbound}"}}\r\n'.encode())
    raw.send(b"PUB sensors.dev1.t 1\r\nx\r\nPING\r\n")
    line = raw.read_line()
    assert line in (b"-ERR 'Authorization Violation'",
                    b"-ERR 'Permissions Violation for Publish to \"sensors.dev1.t\"'"), line
    bound = device_token(keys, client_id="dev1")
    raw = RawClient(secured)
    raw.send(f'CONNECT {{"verbose":false,"auth_token":"{bound}"}}\r\n'.encode())
    raw.send(b"PUB sensors.dev2.t 1\r\nx\r\nPUB sensors.dev1.t 1\r\nx\r\nPING\r\n")
    raw.expect_line(b"-ERR 'Permissions Violation for Publish to \"sensors.dev2.t\"'")
    raw.expect_line(b"PONG")


async def test_nats_connection_closed_when_its_token_expires(secured, keys):
    raw = RawClient(secured)
    token = issue(keys, "svc", "--pub", "a.>", ttl="2s")
    raw.send(f'CONNECT {{"verbose":false,"auth_token":"{token}"}}\r\nPING\r\n'.encode())
    raw.expect_line(b"PONG")
    data, closed = raw.read_until_close(6)
    assert (data, closed) == (b"-ERR 'User Authentication Expired'\r\n", True)


def test_listening_beyond_loopback_without_auth_needs_allow_anonymous(tmp_path):
    config = tmp_path / "open.toml"
    config.write_text('[mqtt]\nlisten = "0.0.0.0:0"\n[nats]\nlisten = "127.0.0.1:0"\n')
    done = subprocess.run([str(isthmus_bin()), "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 1
    assert "allow_anonymous" in done.stderr, done.stderr


def test_sighup_loads_a_new_key_and_connections_keep_their_grant(broker_factory, keys, tmp_path):
    """Key rotation: add kid k2 to the config file, SIGHUP, tokens signed with k2 connect;
    a client connected with a k1 token stays connected."""
    broker = broker_factory(shards=2, config=auth_config(keys))
    old = mqtt_client(broker, "backend", username="svc", password=backend_token(keys))
    new_secret = tmp_path / "k2.secret"
    run_isthmus("token", "keygen", "--alg", "hs256", "--out", str(new_secret))
    token = run_isthmus("token", "issue", "--key", str(new_secret), "--alg", "HS256", "--kid",
                        "k2", "--sub", "svc2", "--pub", "cmd.>").strip()
    before = mqtt_client(broker, "svc2", username="svc", password=token, connect=False)
    assert before.connect(check=False)[1] == 0x86
    before.close()
    config = auth_config(keys)
    config["auth.jwt.keys"].append({"kid": "k2", "algorithms": ["HS256"],
                                    "secret_file": str(new_secret)})
    path = Path(broker.tmpdir.name) / "isthmus.toml"
    path.write_text(isthmus_toml(config))
    broker.proc.send_signal(signal.SIGHUP)
    assert broker.stderr.wait_for(re.compile("token keys reloaded"), time.monotonic() + 5)
    after = mqtt_client(broker, "svc2", username="svc", password=token)
    assert after.is_connected() and old.is_connected()


def test_retained_messages_under_a_deny_rule_are_not_sent_at_subscribe(secured, keys):
    """allow cmd.>, deny cmd.secret.>: subscribing to cmd/# is accepted, and the retained
    message on cmd/secret/key is held back like a live one would be."""
    writer = mqtt_client(secured, "writer", username="svc", password=backend_token(keys))
    writer.publish("cmd/secret/key", b"hidden", qos=1, retain=True)
    writer.publish("cmd/open/note", b"visible", qos=1, retain=True)
    token = issue(keys, "reader", "--sub-allow", "cmd.>", "--deny-sub", "cmd.secret.>")
    reader = mqtt_client(secured, "reader", username="reader", password=token)
    reader.subscribe("cmd/#", qos=1)
    got = reader.get()
    assert (got.topic, got.payload, got.retain) == ("cmd/open/note", b"visible", True)
    reader.assert_no_message(0.5)
    writer.publish("cmd/secret/live", b"hidden too", qos=1)
    writer.publish("cmd/open/live", b"seen", qos=1)
    assert reader.get().payload == b"seen"
    reader.assert_no_message(0.5)
