"""TLS listeners with paho-mqtt and nats-py (docs/tls.md): MQTT over TLS on [mqtt.tls] beside the
plaintext listener, NATS that requires TLS with [nats.tls] (plaintext INFO, then the handshake),
and client certificates (mTLS).

Isthmus-only: the harness does not translate the TLS tables for mosquitto or nats-server.
Certificates are made per test with the openssl command line (EC P-256) in a temporary
directory; no key is kept.
"""

import asyncio
import socket
import ssl
import subprocess
from pathlib import Path

import nats
import pytest

from harness import connect, isthmus_bin, isthmus_only_because, mqtt_client, sync

pytestmark = isthmus_only_because("the TLS tables have no translation for the reference brokers")

CLIENT_CN = "device-42"


def _openssl(*args: str, cwd: Path):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    """ca.pem, server.pem/server-key.pem (localhost, 127.0.0.1), client.pem/client-key.pem."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=isthmus test CA", cwd=tmp_path)
    for name, cn, ext in [
        ("server", "localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                "extendedKeyUsage=serverAuth\n"),
        ("client", CLIENT_CN, "extendedKeyUsage=clientAuth\n"),
    ]:
        (tmp_path / f"{name}.ext").write_text(ext)
        _openssl("req", *ec, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=tmp_path)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "1",
                 "-extfile", f"{name}.ext", cwd=tmp_path)
    return tmp_path


def tls_table(pki: Path, mtls: bool = False, listen: bool = False) -> dict:
    table = {"cert_file": str(pki / "server.pem"), "key_file": str(pki / "server-key.pem")}
    if mtls:
        table["client_ca_file"] = str(pki / "ca.pem")
    if listen:
        table["listen"] = "127.0.0.1:0"
    return table


def nats_tls_context(pki: Path, client_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if client_cert:
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client-key.pem"))
    return context


async def blocking(fn, *args, **kwargs):
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kwargs))


@pytest.mark.parametrize("level", [4, 5])
async def test_paho_over_tls_reaches_plaintext_nats(broker_factory, pki, level):
    broker = broker_factory(shards=2, config={"mqtt.tls": tls_table(pki, listen=True)})
    nc = await connect(broker)
    sub = await nc.subscribe("tls.py.>")
    await sync(nc)
    tls = {"ca_certs": str(pki / "ca.pem")}
    publisher = await blocking(mqtt_client, broker, f"py-tls-pub-{level}", level=level, tls=tls)
    await blocking(lambda: publisher.client.publish("tls/py/up", b"over tls", qos=1).wait_for_publish(5))
    msg = await sub.next_msg(timeout=5)
    assert (msg.subject, msg.data) == ("tls.py.up", b"over tls")
    # And back: a nats-py publish reaches a paho subscriber over TLS.
    subscriber = await blocking(mqtt_client, broker, f"py-tls-sub-{level}", level=level, tls=tls)
    await blocking(lambda: subscriber.client.subscribe("tls/py/down", qos=0))
    for _ in range(50):
        await nc.publish("tls.py.down", b"to tls")
        await nc.flush()
        got = await blocking(subscriber.drain, 0.1)
        if got:
            assert (got[0].topic, got[0].payload) == ("tls/py/down", b"to tls")
            break
    else:
        raise AssertionError("the TLS subscriber got nothing from NATS")


async def test_nats_py_over_tls(broker_factory, pki):
    broker = broker_factory(shards=2, config={"nats.tls": tls_table(pki)})
    context = nats_tls_context(pki)
    sub_nc = await connect(broker, tls=context, tls_hostname="localhost")
    pub_nc = await connect(broker, tls=context, tls_hostname="localhost")
    sub = await sub_nc.subscribe("secure.>")
    await sync(sub_nc)
    payload = b"y" * 100_000  # several TLS records
    await pub_nc.publish("secure.py", payload)
    await pub_nc.flush()
    msg = await sub.next_msg(timeout=5)
    assert (msg.subject, msg.data) == ("secure.py", payload)


async def test_plaintext_nats_py_is_refused_by_a_tls_listener(broker_factory, pki):
    broker = broker_factory(shards=1, config={"nats.tls": tls_table(pki)})
    with socket.create_connection((broker.host, broker.port), timeout=5) as raw:
        info = raw.recv(4096)
        assert info.startswith(b"INFO ") and b'"tls_required":true' in info, info
        raw.sendall(b"CONNECT {}\r\nPING\r\n")
        rest = b""
        while chunk := raw.recv(4096):
            rest += chunk
    assert rest == b"-ERR 'Secure Connection - TLS Required'\r\n"
    # nats-py itself notices tls_required and will not go on without a TLS context.
    with pytest.raises(Exception):
        await nats.connect(broker.url, allow_reconnect=False, connect_timeout=2)


async def test_mtls_requires_a_client_certificate(broker_factory, pki):
    config = {"nats.tls": tls_table(pki, mtls=True), "mqtt.tls": tls_table(pki, True, True)}
    broker = broker_factory(shards=2, config=config)
    with pytest.raises(Exception):
        await nats.connect(broker.url, tls=nats_tls_context(pki), tls_hostname="localhost",
                           allow_reconnect=False, connect_timeout=2)
    nc = await connect(broker, tls=nats_tls_context(pki, client_cert=True), tls_hostname="localhost")
    await nc.flush()
    without = {"ca_certs": str(pki / "ca.pem")}
    with pytest.raises(Exception):
        await blocking(mqtt_client, broker, "py-mtls-none", level=5, tls=without)
    with_cert = dict(without, certfile=str(pki / "client.pem"), keyfile=str(pki / "client-key.pem"))
    client = await blocking(mqtt_client, broker, "py-mtls-device", level=5, tls=with_cert)
    assert client.connack[1] == 0


async def test_mtls_identity_is_percent_u_in_token_rules(broker_factory, pki, tmp_path):
    """With a client certificate the token's `%u` is the certificate's CN, not the username the
    client claims: a token allowing `users.%u.>` reaches the CN's subjects only."""
    isthmus = str(isthmus_bin())
    secret = tmp_path / "hmac.secret"
    subprocess.run([isthmus, "token", "keygen", "--alg", "hs256", "--out", str(secret)],
                   check=True, capture_output=True)
    token = subprocess.run([isthmus, "token", "issue", "--key", str(secret), "--alg", "HS256",
                            "--kid", "k1", "--sub", "someone", "--pub", "users.%u.>"],
                           check=True, capture_output=True, text=True).stdout.strip()
    config = {
        "mqtt.tls": tls_table(pki, True, True),
        "auth.jwt": {"required": True},
        "auth.jwt.keys": [{"kid": "k1", "algorithms": ["HS256"], "secret_file": str(secret)}],
    }
    broker = broker_factory(shards=2, config=config)
    tls = {"ca_certs": str(pki / "ca.pem"), "certfile": str(pki / "client.pem"),
           "keyfile": str(pki / "client-key.pem")}
    client = await blocking(mqtt_client, broker, "py-mtls-u", level=5, tls=tls,
                            username="intruder", password=token)
    own = await blocking(client.publish, f"users/{CLIENT_CN}/status", b"ok", qos=1)
    claimed = await blocking(client.publish, "users/intruder/status", b"no", qos=1)
    assert client.pubacks[own.mid] == 0 and client.pubacks[claimed.mid] == 0x87
