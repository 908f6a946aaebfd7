"""Test harness: start a broker, connect nats-py and paho-mqtt clients, speak raw NATS/MQTT bytes.

The broker under test is Isthmus (`ISTHMUS_BIN`, default target/debug/isthmus). With
`ISTHMUS_PEER=nats-server` the NATS tests run against Debian's nats-server instead, and with
`ISTHMUS_PEER=mosquitto` the MQTT tests run against Debian's mosquitto 2.0, so that every
assertion is first checked against a reference implementation (conftest.py skips the other
protocol's test files there). Tests describe configuration in Isthmus terms (the TOML tables of
docs/CONTRACT-issue2.md and docs/mqtt.md); `Broker` translates it for the reference
broker, and a test whose keys have no translation is skipped there.

Shards: a connection's shard is INFO `client_id % shards`. nats-server is treated as one shard, so
`broker.shard(i)` is always 0 there and the cross-shard tests still check their delivery rules.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import queue
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import nats
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

REPO = Path(__file__).resolve().parents[2]
PEER = os.environ.get("ISTHMUS_PEER", "isthmus")
if PEER not in ("isthmus", "nats-server", "mosquitto"):
    raise RuntimeError(
        f"ISTHMUS_PEER must be 'isthmus', 'nats-server' or 'mosquitto', not {PEER!r}"
    )
IS_ISTHMUS = PEER == "isthmus"
IS_MOSQUITTO = PEER == "mosquitto"

isthmus_only = pytest.mark.skipif(
    not IS_ISTHMUS, reason="Isthmus-only behaviour (shards, or a documented difference)"
)


def isthmus_only_because(reason: str):
    """Skip on the reference broker, saying why it legitimately differs from Isthmus."""
    return pytest.mark.skipif(not IS_ISTHMUS, reason=f"Isthmus-only: {reason}")


# MQTT <-> NATS interop needs one broker that speaks both (mosquitto has no NATS side).
mqtt_nats_interop = isthmus_only_because("MQTT <-> NATS interop (the reference speaks one protocol)")

# ISTHMUS_TEST_TRACE=1: the broker logs every protocol line (shown for failed tests).
TRACE = os.environ.get("ISTHMUS_TEST_TRACE", "") not in ("", "0")

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0

_ISTHMUS_READY = re.compile(
    r"^ready nats=([0-9.]+):(\d+) mqtt=([0-9.]+):(\d+) shards=(\d+)(?: mqtt_tls=([0-9.]+):(\d+))?$"
)
_NATS_SERVER_LISTEN = re.compile(r"Listening for client connections on ([0-9.]+):(\d+)")


def isthmus_bin() -> Path:
    path = Path(os.environ.get("ISTHMUS_BIN", "target/debug/isthmus"))
    return path if path.is_absolute() else REPO / path


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL the broker if pytest dies without cleaning up."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"unsupported config value {value!r}")


def isthmus_toml(config: dict) -> str:
    """Tables by (dotted) name, e.g. {"auth.jwt": {...}}; a list of dicts is an array of tables
    ({"auth.jwt.keys": [{...}]} -> [[auth.jwt.keys]])."""
    lines = []
    for table, keys in config.items():
        for entry in keys if isinstance(keys, list) else [keys]:
            lines.append(f"[[{table}]]" if isinstance(keys, list) else f"[{table}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in entry.items())
            lines.append("")
    return "\n".join(lines)


def nats_server_conf(config: dict) -> str:
    """Translate an Isthmus config dict into nats-server's config format."""
    out = {}
    for table, keys in config.items():
        for key, value in keys.items():
            name = f"{table}.{key}"
            if name == "server.name":
                out["server_name"] = json.dumps(value)
            elif name in ("nats.max_payload", "nats.max_control_line", "nats.ping_max"):
                out[key] = str(value)
            elif name == "nats.max_pending":
                out["max_pending"] = str(value)
                # nats-server 2.9.10 stalls producers before a consumer reaches max_pending and
                # then cuts the consumer when a write blocks for write_deadline (10 s default).
                # A short deadline keeps the slow-consumer test fast against it.
                out["write_deadline"] = '"500ms"'
            elif name == "nats.ping_interval_ms":
                out["ping_interval"] = f'"{value}ms"'
            elif name in ("server.shards", "server.pin_cores"):
                pass  # nothing to translate: nats-server has no shards
            else:
                raise KeyError(f"no nats-server translation for config key {name}")
    return "".join(f"{key}: {value}\n" for key, value in out.items())


class NoTranslation(Exception):
    """A config key the reference broker has no equivalent for (the test is skipped there)."""


# Contract `[mqtt]` keys -> mosquitto 2.0 options (mosquitto.conf(5)). Keys missing here
# (receive_maximum, max_pending_bytes, max_session_expiry_s) have no mosquitto equivalent:
# its max_inflight_messages is the outbound window, not the Receive Maximum it grants clients.
_MOSQUITTO_OPTIONS = {
    "mqtt.max_packet_bytes": "max_packet_size",
    "mqtt.max_inflight": "max_inflight_messages",
    "mqtt.max_queued_messages": "max_queued_messages",
    "mqtt.topic_alias_maximum": "max_topic_alias",  # a listener option; we have one listener
    "mqtt.server_keep_alive_s": "max_keepalive",  # 0 (Isthmus: accept any) handled below
}


def mosquitto_conf(config: dict, port: int) -> str:
    """Translate an Isthmus config dict into a mosquitto.conf with one loopback listener."""
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence false",
        "log_dest stderr",
        "log_type all" if TRACE else "log_type error\nlog_type warning\nlog_type notice",
        "connection_messages true",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # stay root: the config lives in a 0700 temporary directory
    for table, keys in config.items():
        for key, value in keys.items():
            name = f"{table}.{key}"
            if name == "mqtt.server_keep_alive_s" and value == 0:
                continue  # mosquitto's default: the client's keep alive is accepted
            if name in _MOSQUITTO_OPTIONS:
                lines.append(f"{_MOSQUITTO_OPTIONS[name]} {value}")
            elif name in ("server.shards", "server.pin_cores", "mqtt.listen"):
                pass  # no shards; the listener is ours
            else:
                raise NoTranslation(f"no mosquitto translation for config key {name}")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (for brokers that cannot pick one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _LineReader(threading.Thread):
    """Drains one pipe of the broker into a list so the broker never blocks on a full pipe."""

    def __init__(self, pipe):
        super().__init__(daemon=True)
        self.pipe = pipe
        self.lines: list[str] = []
        self.changed = threading.Condition()

    def run(self):
        for raw in iter(self.pipe.readline, b""):
            with self.changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self.changed.notify_all()
        with self.changed:
            self.lines.append(None)  # end of stream marker
            self.changed.notify_all()

    def wait_for(self, pattern: re.Pattern, deadline: float):
        """Return the first match of `pattern` in the stream, or None at EOF or deadline."""
        seen = 0
        with self.changed:
            while True:
                while seen < len(self.lines):
                    line = self.lines[seen]
                    seen += 1
                    if line is None:
                        return None
                    match = pattern.search(line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)

    def text(self) -> str:
        return "\n".join(line for line in self.lines if line is not None)


class Broker:
    """One running broker process (Isthmus, nats-server or mosquitto) on loopback ports.

    `host`/`port` is the NATS listener (None on mosquitto), `mqtt_host`/`mqtt_port` the MQTT
    listener (None on nats-server, and on an Isthmus binary without MQTT).
    Raises NoTranslation when the reference broker has no equivalent of a `config` key.
    """

    def __init__(self, shards: int = 2, config: dict | None = None):
        self.peer = PEER
        self.config = config or {}
        self.host = self.port = None
        self.mqtt_host = self.mqtt_port = None
        self.mqtt_tls_port = None  # the [mqtt.tls] listener (Isthmus only)
        self.stopped = False
        self.returncode = None
        if IS_MOSQUITTO:
            self.mqtt_port = free_port()  # mosquitto 2.0 cannot report a port it picked itself
            conf = mosquitto_conf(self.config, self.mqtt_port)  # NoTranslation before any start
        self.tmpdir = tempfile.TemporaryDirectory(prefix="isthmus-pytest-")
        if IS_ISTHMUS:
            self._start_isthmus(shards)
        elif IS_MOSQUITTO:
            self._start_mosquitto(conf)
        else:
            self._start_nats_server()

    def _spawn(self, argv):
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            cwd=self.tmpdir.name,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        self.stdout = _LineReader(self.proc.stdout)
        self.stderr = _LineReader(self.proc.stderr)
        self.stdout.start()
        self.stderr.start()

    def _start_isthmus(self, shards: int):
        binary = isthmus_bin()
        if not binary.exists():
            raise RuntimeError(f"{binary} does not exist: run `cargo build` or set ISTHMUS_BIN")
        argv = [str(binary), "serve", "--nats-listen", "127.0.0.1:0", "--shards", str(shards)]
        argv += ["--mqtt-listen", "127.0.0.1:0"]
        if TRACE:
            argv += ["--log", "trace"]
        if self.config:
            path = Path(self.tmpdir.name) / "isthmus.toml"
            path.write_text(isthmus_toml(self.config))
            argv += ["--config", str(path)]
        self._spawn(argv)
        match = self.stdout.wait_for(_ISTHMUS_READY, time.monotonic() + READY_TIMEOUT_S)
        if match is None:
            self._fail_start("no `ready nats=ADDR mqtt=ADDR shards=N` line on stdout")
        self.host, self.port, self.shards = match[1], int(match[2]), int(match[5])
        self.mqtt_host, self.mqtt_port = match[3], int(match[4])
        self.mqtt_tls_port = int(match[7]) if match[7] else None
        if shards and self.shards != shards:
            self._fail_start(f"asked for {shards} shards, ready line says {self.shards}")

    def _start_mosquitto(self, conf: str):
        path = Path(self.tmpdir.name) / "mosquitto.conf"
        path.write_text(conf)
        self._spawn(["/usr/sbin/mosquitto", "-c", str(path)])
        self.mqtt_host, self.shards = "127.0.0.1", 1
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                self._fail_start("mosquitto exited before its listener accepted connections")
            try:
                socket.create_connection((self.mqtt_host, self.mqtt_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self._fail_start(f"mosquitto did not listen on port {self.mqtt_port}")
                time.sleep(0.02)

    def _start_nats_server(self):
        argv = ["nats-server", "-a", "127.0.0.1", "-p", "-1"] + (["-DV"] if TRACE else [])
        conf = nats_server_conf(self.config)
        if conf:
            path = Path(self.tmpdir.name) / "nats-server.conf"
            path.write_text(conf)
            argv += ["-c", str(path)]
        self._spawn(argv)
        deadline = time.monotonic() + READY_TIMEOUT_S
        match = self.stderr.wait_for(_NATS_SERVER_LISTEN, deadline)
        if match is None or self.stderr.wait_for(re.compile("Server is ready"), deadline) is None:
            self._fail_start("nats-server did not log 'Server is ready'")
        self.host, self.port, self.shards = match[1], int(match[2]), 1

    def _fail_start(self, why: str):
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError(
            f"{why}\nargv: {self.argv}\nexit: {self.proc.returncode}\n"
            f"stdout:\n{self.stdout.text()}\nstderr:\n{self.stderr.text()[-4000:]}"
        )

    @property
    def url(self) -> str:
        assert self.port is not None, f"{self.peer} has no NATS listener"
        return f"nats://{self.host}:{self.port}"

    @property
    def mqtt_addr(self) -> tuple[str, int]:
        """(host, port) of the MQTT listener; fails the test when the broker has none."""
        assert self.mqtt_port is not None, f"{self.peer} has no MQTT listener"
        return self.mqtt_host, self.mqtt_port

    def shard(self, index: int) -> int:
        """Shard number `index`, folded onto the shards this broker has (nats-server: 0)."""
        return index % self.shards

    def shard_of(self, client_id: int) -> int:
        return client_id % self.shards

    def log(self) -> str:
        tail = 400_000 if TRACE else 4000
        return f"stdout:\n{self.stdout.text()}\nstderr:\n{self.stderr.text()[-tail:]}"

    def crashed(self) -> bool:
        return not self.stopped and self.proc.poll() is not None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_S) -> int:
        """Signal the broker and wait for it; returns its exit code (SIGKILL after `timeout`)."""
        if not self.stopped:
            self.stopped = True
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.stdout.join(2)
            self.stderr.join(2)
            self.returncode = self.proc.returncode
            self.tmpdir.cleanup()
        return self.returncode


# ---------------------------------------------------------------------------------------------
# nats-py clients

_open_clients: list = []


async def connect(broker: Broker, **options):
    """A nats-py client that does not reconnect (a broker failure must fail the test)."""
    errors = []

    async def on_error(error):
        errors.append(error)

    options.setdefault("allow_reconnect", False)
    options.setdefault("connect_timeout", 5)
    options.setdefault("error_cb", on_error)
    nc = await nats.connect(broker.url, **options)
    nc.test_errors = errors
    _open_clients.append(nc)
    return nc


async def connect_on_shard(broker: Broker, shard: int, tries: int = 64, **options):
    """Connect until a connection lands on `shard` (INFO client_id % shards)."""
    assert 0 <= shard < broker.shards, f"shard {shard} of {broker.shards}"
    seen = []
    for _ in range(tries):
        nc = await connect(broker, **options)
        if broker.shard_of(nc.client_id) == shard:
            return nc
        seen.append(nc.client_id)
        await nc.close()
    raise AssertionError(f"no connection on shard {shard} after {tries} tries, client_ids {seen}")


async def sync(nc, timeout: float = 10):
    """A round trip to the server that follows everything `nc` sent so far.

    Use this, not `nc.flush()`: nats-py 2.16.0's flush() writes its PING straight to the socket
    while SUB/PUB commands may still sit in the client's pending list, waiting for its flusher
    task. The PONG can then come back before the server has seen them (nats-server -DV traces
    under CPU load show `PING`, `PONG`, then `SUB`). Pushing the pending list out first fixes it.
    Raises asyncio.TimeoutError (nats.errors.TimeoutError is a subclass) after `timeout`.
    """
    await asyncio.wait_for(nc._flush_pending(force_flush=True), timeout)
    await nc.flush(timeout)


async def close_all_clients():
    while _open_clients:
        nc = _open_clients.pop()
        if not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 5)
            except Exception:
                pass


async def wait_until(predicate, timeout: float, interval: float = 0.01) -> bool:
    """Poll `predicate` on the event loop until it is true or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)
    return True


class Collector:
    """Records a subscription's messages in arrival order; pass `cb=collector.cb`."""

    def __init__(self):
        self.msgs = []

    async def cb(self, msg):
        self.msgs.append(msg)

    @property
    def data(self) -> list[bytes]:
        return [m.data for m in self.msgs]

    def count(self) -> int:
        return len(self.msgs)


# ---------------------------------------------------------------------------------------------
# Raw sockets


class _RawSocket:
    """A plain blocking socket with a read buffer: what the raw NATS and MQTT clients share."""

    def __init__(self, addr: tuple[str, int], timeout: float, rcvbuf: int | None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before connect so the TCP window starts small (a slow consumer fills it fast).
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        self.buf = bytearray()
        self.closed = False

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read once more into the buffer; False at EOF or reset."""
        if self.closed:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError from None
        except (ConnectionResetError, BrokenPipeError):
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def close(self):
        self.sock.close()


class RawClient(_RawSocket):
    """A NATS connection over a plain blocking socket, for byte-exact protocol checks."""

    def __init__(self, broker: Broker, rcvbuf: int | None = None, timeout: float = 5.0):
        super().__init__((broker.host, broker.port), timeout, rcvbuf)
        line = self.read_line(timeout)
        assert line.startswith(b"INFO "), line
        self.info = json.loads(line[5:])
        self.client_id = self.info.get("client_id")

    @classmethod
    def on_shard(cls, broker: Broker, shard: int, tries: int = 64, **kwargs) -> "RawClient":
        seen = []
        for _ in range(tries):
            raw = cls(broker, **kwargs)
            if broker.shard_of(raw.client_id) == shard:
                return raw
            seen.append(raw.client_id)
            raw.close()
        raise AssertionError(f"no raw connection on shard {shard}, client_ids {seen}")

    def handshake(self, **options):
        """CONNECT (verbose and pedantic off, headers on unless overridden), then PING/PONG."""
        opts = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
        opts.update(options)
        self.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        self.expect_line(b"PONG")

    def read_line(self, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[: end + 2]
                return line
            if not self._fill(deadline):
                raise ConnectionError(f"closed while reading a line; buffered {bytes(self.buf)!r}")

    def read_exact(self, n: int, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise ConnectionError(f"closed while reading {n} bytes")
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def expect_line(self, expected: bytes, timeout: float = 5.0):
        line = self.read_line(timeout)
        assert line == expected, f"expected {expected!r}, got {line!r}"

    def read_msg(self, timeout: float = 5.0):
        """Read one MSG/HMSG: returns (subject, sid, reply, header_bytes, payload)."""
        deadline = time.monotonic() + timeout
        line = self.read_line(timeout)
        parts = line.split()
        op = parts[0].upper()
        if op == b"MSG":
            subject, sid = parts[1], parts[2]
            reply = parts[3] if len(parts) == 5 else None
            header_len, total = 0, int(parts[-1])
        elif op == b"HMSG":
            subject, sid = parts[1], parts[2]
            reply = parts[3] if len(parts) == 6 else None
            header_len, total = int(parts[-2]), int(parts[-1])
        else:
            raise AssertionError(f"expected MSG or HMSG, got {line!r}")
        body = self.read_exact(total + 2, max(deadline - time.monotonic(), 0.001))
        assert body.endswith(b"\r\n"), f"message body not terminated by CRLF: {body[-10:]!r}"
        return subject, sid, reply, body[:header_len], body[header_len:total]

    def read_until_close(self, timeout: float = 5.0) -> tuple[bytes, bool]:
        """Everything the server sends until it closes (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data, self.closed

    def read_for(self, seconds: float) -> bytes:
        """Everything that arrives within `seconds` (the connection may stay open)."""
        data, _ = self.read_until_close(seconds)
        return data


# ---------------------------------------------------------------------------------------------
# paho-mqtt 2.x clients (blocking helpers; paho runs its network loop in its own thread)

# Protocol levels, for parametrize: 4 = MQTT 3.1.1, 5 = MQTT 5.0.
MQTT_LEVELS = [pytest.param(4, id="mqtt311"), pytest.param(5, id="mqtt5")]

_open_mqtt: list["MqttClient"] = []


def mqtt_properties(packet_type: int, **values) -> Properties | None:
    """paho Properties from keyword arguments, e.g. UserProperty=[("k", "v")]; None if empty."""
    if not values:
        return None
    props = Properties(packet_type)
    for name, value in values.items():
        setattr(props, name, value)
    return props


class MqttClient:
    """A paho-mqtt 2.x client (CallbackAPIVersion.VERSION2) with thread-safe queues.

    `level` 4 is MQTT 3.1.1, 5 is MQTT 5.0. `clean` is clean session (3.1.1) or clean start (5.0).
    Never reconnects by itself. Received messages are paho MQTTMessage objects (topic, payload,
    qos, retain, dup, properties) in arrival order.
    """

    def __init__(
        self,
        broker: Broker,
        client_id: str = "",
        level: int = 5,
        clean: bool = True,
        keepalive: int = 60,
        session_expiry: int | None = None,
        will: dict | None = None,
        connect_properties: dict | None = None,
        connect: bool = True,
        timeout: float = 5.0,
        username: str | None = None,
        password: str | None = None,
        tls: dict | None = None,
    ):
        assert level in (4, 5), level
        self.broker = broker
        self.level = level
        self.clean = clean
        self.keepalive = keepalive
        self.timeout = timeout
        kwargs = {} if level == 5 else {"clean_session": clean}
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5 if level == 5 else paho.MQTTv311,
            reconnect_on_failure=False,
            **kwargs,
        )
        # paho's own outbound window: large so that it never throttles what a test sends.
        if username is not None or password is not None:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        # `tls`: keyword arguments of paho's tls_set (ca_certs, certfile, keyfile); the client
        # then connects to the broker's [mqtt.tls] listener.
        self.tls = tls is not None
        if tls is not None:
            self.client.tls_set(**tls)
        self.messages: queue.Queue = queue.Queue()
        self.changed = threading.Condition()
        self.connack = None  # (session_present, reason code int, properties or None)
        self.disconnects: list[tuple[bool, int, object]] = []  # (from server, reason, props)
        self.acks: dict[int, list[int]] = {}  # SUBACK / UNSUBACK reason codes by mid
        self.pubacks: dict[int, int] = {}  # PUBACK / PUBREC (QoS 2: PUBCOMP) reason code by mid
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_ack
        self.client.on_publish = self._on_publish
        self.client.on_unsubscribe = self._on_ack
        self.connect_properties = dict(connect_properties or {})
        if session_expiry is not None:
            assert level == 5, "SessionExpiryInterval is a 5.0 property"
            self.connect_properties["SessionExpiryInterval"] = session_expiry
        if will is not None:
            will = dict(will)
            props = will.pop("properties", None)
            self.client.will_set(
                will.pop("topic"),
                will.pop("payload", b""),
                will.pop("qos", 0),
                will.pop("retain", False),
                mqtt_properties(PacketTypes.WILLMESSAGE, **props) if props else None,
            )
            assert not will, f"unknown will keys {will}"
        _open_mqtt.append(self)
        if connect:
            self.connect()

    # -- callbacks (paho's thread) --
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        with self.changed:
            self.connack = (bool(flags.session_present), int(reason_code.value), properties)
            self.changed.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self.changed:
            self.disconnects.append(
                (bool(flags.is_disconnect_packet_from_server), int(reason_code.value), properties)
            )
            self.changed.notify_all()

    def _on_message(self, client, userdata, message):
        self.messages.put(message)

    def _on_ack(self, client, userdata, mid, reason_codes, properties):
        with self.changed:
            self.acks[mid] = [int(code.value) for code in reason_codes]
            self.changed.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.changed:
            self.pubacks[mid] = int(reason_code.value)
            self.changed.notify_all()

    def _wait(self, predicate, timeout: float, what: str):
        with self.changed:
            if not self.changed.wait_for(predicate, timeout):
                raise AssertionError(f"{what}: nothing within {timeout} s")

    # -- connection --
    def connect(self, check: bool = True):
        """CONNECT and wait for CONNACK; returns (session_present, reason code, properties)."""
        host, port = self.broker.mqtt_addr
        if self.tls:
            assert self.broker.mqtt_tls_port is not None, "the broker has no [mqtt.tls] listener"
            port = self.broker.mqtt_tls_port
        props = mqtt_properties(PacketTypes.CONNECT, **self.connect_properties)
        if self.level == 5:
            self.client.connect(
                host, port, self.keepalive, clean_start=self.clean, properties=props
            )
        else:
            self.client.connect(host, port, self.keepalive)
        self.client.loop_start()
        self._wait(lambda: self.connack or self.disconnects, self.timeout, "CONNACK")
        if check:
            assert self.connack is not None, f"closed before CONNACK: {self.disconnects}"
            assert self.connack[1] == 0, f"CONNACK refused: reason {self.connack[1]:#x}"
        return self.connack

    @property
    def session_present(self) -> bool:
        return self.connack[0]

    @property
    def connack_properties(self):
        return self.connack[2]

    def assigned_client_id(self) -> str | None:
        return getattr(self.connack_properties, "AssignedClientIdentifier", None)

    def disconnect(self, reason: int | None = None, properties: dict | None = None):
        """Send DISCONNECT (5.0: with `reason`), wait until paho has closed the socket."""
        code = ReasonCode(PacketTypes.DISCONNECT, identifier=reason) if reason is not None else None
        props = mqtt_properties(PacketTypes.DISCONNECT, **(properties or {}))
        self.client.disconnect(code, props)
        self._wait(lambda: self.disconnects, self.timeout, "close after DISCONNECT")
        self.client.loop_stop()

    def drop(self):
        """Close the socket without DISCONNECT (an unclean close: the will is published)."""
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._wait(lambda: self.disconnects, self.timeout, "paho noticing its socket closed")
        self.client.loop_stop()

    def wait_disconnected(self, timeout: float = 5.0) -> tuple[bool, int, object]:
        """Wait until the broker closes us; returns (DISCONNECT packet seen, reason, props)."""
        self._wait(lambda: self.disconnects, timeout, "disconnect by the broker")
        return self.disconnects[0]

    def is_connected(self) -> bool:
        """CONNACK Success and no close since (paho's own is_connected() stays True after a
        server DISCONNECT)."""
        with self.changed:
            accepted = self.connack is not None and self.connack[1] == 0
            return accepted and not self.disconnects and self.client.is_connected()

    def close(self):
        """Teardown: disconnect if still connected and stop the loop thread."""
        try:
            if self.client.is_connected():
                self.client.disconnect()
                with self.changed:
                    self.changed.wait_for(lambda: self.disconnects, 2)
        except Exception:
            pass
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    # -- subscribe / publish --
    def subscribe(
        self,
        topic: str,
        qos: int = 0,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        subscription_id: int | None = None,
        expect: list[int] | None = None,
    ) -> list[int]:
        """SUBSCRIBE one filter, wait for SUBACK; asserts the codes are `expect` ([qos])."""
        if self.level == 5:
            options = SubscribeOptions(qos, no_local, retain_as_published, retain_handling)
            props = None
            if subscription_id is not None:
                props = mqtt_properties(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=subscription_id)
            rc, mid = self.client.subscribe(topic, options=options, properties=props)
        else:
            assert not (no_local or retain_as_published or retain_handling or subscription_id)
            rc, mid = self.client.subscribe(topic, qos)
        assert rc == paho.MQTT_ERR_SUCCESS, f"subscribe({topic!r}) not sent: {rc}"
        self._wait(lambda: mid in self.acks, self.timeout, f"SUBACK for {topic!r}")
        codes = self.acks[mid]
        want = [qos] if expect is None else expect
        assert codes == want, f"SUBACK for {topic!r}: {codes}, want {want}"
        return codes

    def unsubscribe(self, topic: str):
        rc, mid = self.client.unsubscribe(topic)
        assert rc == paho.MQTT_ERR_SUCCESS
        self._wait(lambda: mid in self.acks, self.timeout, f"UNSUBACK for {topic!r}")

    def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        wait: bool = True,
        **properties,
    ):
        """PUBLISH; with `wait`, block until sent (QoS 0) or acknowledged (QoS 1/2).

        Keyword arguments are 5.0 PUBLISH properties (ContentType=..., UserProperty=[...]).
        """
        props = mqtt_properties(PacketTypes.PUBLISH, **properties)
        info = self.client.publish(topic, payload, qos, retain, props)
        assert info.rc == paho.MQTT_ERR_SUCCESS, f"publish({topic!r}) not queued: {info.rc}"
        if wait:
            info.wait_for_publish(self.timeout)
            assert info.is_published(), f"publish({topic!r}, qos={qos}) not acknowledged"
        return info

    # -- received messages --
    def get(self, timeout: float = 5.0):
        """The next message; fails the test after `timeout` seconds."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no MQTT message within {timeout} s") from None

    def get_n(self, n: int, timeout: float = 5.0) -> list:
        """The next `n` messages (all within `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n:
            try:
                got.append(self.messages.get(timeout=max(deadline - time.monotonic(), 0)))
            except queue.Empty:
                payloads = [m.payload[:40] for m in got[-5:]]
                raise AssertionError(
                    f"{len(got)} of {n} MQTT messages within {timeout} s; last {payloads}"
                ) from None
        return got

    def drain(self, seconds: float) -> list:
        """Every message that arrives within `seconds` (use to check for none/extra)."""
        deadline = time.monotonic() + seconds
        got = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                return got

    def assert_no_message(self, seconds: float = 0.5):
        extra = self.drain(seconds)
        assert not extra, f"unexpected: {[(m.topic, m.payload[:40]) for m in extra]}"


def mqtt_client(broker: Broker, client_id: str = "", level: int = 5, clean: bool = True, **kw):
    """A connected MqttClient (closed after the test by the broker fixture)."""
    return MqttClient(broker, client_id=client_id, level=level, clean=clean, **kw)


def close_all_mqtt():
    while _open_mqtt:
        _open_mqtt.pop().close()


def user_properties(message) -> list[tuple[str, str]]:
    return list(getattr(message.properties, "UserProperty", None) or [])


# ---------------------------------------------------------------------------------------------
# Raw MQTT bytes (for bad-input tests)

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = range(8, 16)

# 5.0 property identifier -> type (MQTT 5.0 section 2.2.2.2)
_PROP_TYPES = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "varint",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte",
    0x18: "u32", 0x19: "byte", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}
PROP_MESSAGE_EXPIRY, PROP_SESSION_EXPIRY, PROP_ASSIGNED_CLIENT_ID = 0x02, 0x11, 0x12
PROP_WILL_DELAY, PROP_RECEIVE_MAXIMUM, PROP_TOPIC_ALIAS_MAXIMUM = 0x18, 0x21, 0x22
PROP_TOPIC_ALIAS, PROP_MAXIMUM_PACKET_SIZE, PROP_USER_PROPERTY = 0x23, 0x27, 0x26


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def mqtt_props(props=()) -> bytes:
    """Encode [(identifier, value), ...] as a 5.0 property block (length prefix included)."""
    body = bytearray()
    for ident, value in props:
        kind = _PROP_TYPES[ident]
        body += varint(ident)
        if kind == "byte":
            body.append(value)
        elif kind in ("u16", "u32"):
            body += value.to_bytes(2 if kind == "u16" else 4, "big")
        elif kind == "varint":
            body += varint(value)
        elif kind in ("str", "bin"):
            body += mqtt_str(value)
        else:
            body += mqtt_str(value[0]) + mqtt_str(value[1])
    return varint(len(body)) + bytes(body)


def decode_props(data: bytes, pos: int = 0) -> tuple[dict, int]:
    """Decode a property block at `pos`: ({identifier: value or [values]}, end position)."""

    def read_varint(p):
        value, shift = 0, 0
        while True:
            byte = data[p]
            p += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value, p

    length, pos = read_varint(pos)
    end = pos + length
    out: dict = {}
    while pos < end:
        ident, pos = read_varint(pos)
        kind = _PROP_TYPES[ident]
        if kind == "byte":
            value, pos = data[pos], pos + 1
        elif kind in ("u16", "u32"):
            size = 2 if kind == "u16" else 4
            value, pos = int.from_bytes(data[pos : pos + size], "big"), pos + size
        elif kind == "varint":
            value, pos = read_varint(pos)
        else:
            n = int.from_bytes(data[pos : pos + 2], "big")
            value, pos = data[pos + 2 : pos + 2 + n], pos + 2 + n
            if kind == "str":
                value = value.decode()
            if kind == "pair":
                m = int.from_bytes(data[pos : pos + 2], "big")
                value = (value.decode(), data[pos + 2 : pos + 2 + m].decode())
                pos += 2 + m
        if ident in (PROP_USER_PROPERTY, 0x0B):
            out.setdefault(ident, []).append(value)
        else:
            out[ident] = value
    return out, end


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def connect_packet(
    client_id: str = "raw",
    level: int = 5,
    clean: bool = True,
    keepalive: int = 60,
    props=(),
    will: dict | None = None,
    proto_name: str | None = None,
) -> bytes:
    """CONNECT; `will` = {topic, payload, qos, retain, props}; level 3 uses name MQIsdp."""
    name = proto_name or ("MQIsdp" if level == 3 else "MQTT")
    flags = 0x02 if clean else 0
    will_part = b""
    if will is not None:
        flags |= 0x04 | (will.get("qos", 0) << 3) | (0x20 if will.get("retain") else 0)
        if level == 5:
            will_part += mqtt_props(will.get("props", ()))
        will_part += mqtt_str(will["topic"]) + mqtt_str(will.get("payload", b""))
    body = mqtt_str(name) + bytes([level, flags]) + keepalive.to_bytes(2, "big")
    if level == 5:
        body += mqtt_props(props)
    body += mqtt_str(client_id) + will_part
    return packet(CONNECT << 4, body)


def publish_packet(
    topic: str,
    payload: bytes = b"",
    qos: int = 0,
    retain: bool = False,
    packet_id: int = 1,
    props=(),
    level: int = 5,
    dup: bool = False,
) -> bytes:
    first = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = mqtt_str(topic)
    if qos:
        body += packet_id.to_bytes(2, "big")
    if level == 5:
        body += mqtt_props(props)
    return packet(first, body + payload)


def subscribe_packet(packet_id: int, filters, props=(), level: int = 5) -> bytes:
    """SUBSCRIBE [(filter, options byte)]."""
    body = packet_id.to_bytes(2, "big") + (mqtt_props(props) if level == 5 else b"")
    for topic_filter, options in filters:
        body += mqtt_str(topic_filter) + bytes([options])
    return packet((SUBSCRIBE << 4) | 0x02, body)


def disconnect_packet(reason: int = 0, level: int = 5) -> bytes:
    return packet(DISCONNECT << 4, bytes([reason, 0]) if level == 5 and reason else b"")


def ack_packet(kind: int, packet_id: int) -> bytes:
    """PUBACK / PUBREC / PUBREL / PUBCOMP with reason Success (no reason byte)."""
    return packet((kind << 4) | (0x02 if kind == PUBREL else 0), packet_id.to_bytes(2, "big"))


PINGREQ_PACKET = bytes([PINGREQ << 4, 0])


class MqttPacket:
    def __init__(self, first_byte: int, body: bytes):
        self.type, self.flags, self.body = first_byte >> 4, first_byte & 0x0F, body
        self.raw = packet(first_byte, body)

    def __repr__(self):
        return f"MqttPacket(type={self.type}, flags={self.flags:#x}, body={self.body[:60]!r})"

    def reason(self) -> int:
        """DISCONNECT / CONNACK reason (5.0; CONNACK return code in 3.1.1)."""
        if self.type == DISCONNECT:
            return self.body[0] if self.body else 0
        if self.type == CONNACK:
            return self.body[1]
        raise AssertionError(f"no reason code in {self}")

    def properties(self) -> dict:
        """CONNACK / DISCONNECT properties (5.0)."""
        if self.type == CONNACK:
            return decode_props(self.body, 2)[0]
        if self.type == DISCONNECT:
            return decode_props(self.body, 1)[0] if len(self.body) > 1 else {}
        raise AssertionError(f"no properties decoded for {self}")

    def publish(self, level: int = 5) -> dict:
        assert self.type == PUBLISH, self
        n = int.from_bytes(self.body[:2], "big")
        pos = 2 + n
        out = {"topic": self.body[2:pos].decode(), "qos": (self.flags >> 1) & 3,
               "retain": bool(self.flags & 1), "dup": bool(self.flags & 8), "packet_id": None}
        if out["qos"]:
            out["packet_id"] = int.from_bytes(self.body[pos : pos + 2], "big")
            pos += 2
        out["props"] = {}
        if level == 5:
            out["props"], pos = decode_props(self.body, pos)
        out["payload"] = self.body[pos:]
        return out


class RawMqtt(_RawSocket):
    """An MQTT connection over a plain blocking socket, for byte-exact checks and bad input."""

    def __init__(self, broker: Broker, timeout: float = 5.0, rcvbuf: int | None = None):
        super().__init__(broker.mqtt_addr, timeout, rcvbuf)
        self.level = 5

    def _take_packet(self) -> MqttPacket | None:
        if len(self.buf) < 2:
            return None
        length, shift, pos = 0, 0, 1
        while True:
            if pos >= len(self.buf):
                return None
            byte = self.buf[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            assert shift < 28, f"bad remaining length from the broker: {bytes(self.buf[:8])!r}"
        if len(self.buf) < pos + length:
            return None
        pkt = MqttPacket(self.buf[0], bytes(self.buf[pos : pos + length]))
        del self.buf[: pos + length]
        return pkt

    def read_packet(self, timeout: float = 5.0) -> MqttPacket:
        """The next packet; ConnectionError if the broker closes first, TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._take_packet()
            if pkt is not None:
                return pkt
            if not self._fill(deadline):
                raise ConnectionError(f"closed; buffered {bytes(self.buf)!r}")

    def read_until_close(self, timeout: float = 5.0) -> tuple[list[MqttPacket], bool]:
        """Packets until the broker closes (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            pass
        packets = []
        while (pkt := self._take_packet()) is not None:
            packets.append(pkt)
        return packets, self.closed

    def connect(self, client_id: str = "raw", level: int = 5, **kwargs) -> MqttPacket:
        """Send CONNECT and return the CONNACK (asserting it is one)."""
        self.level = level
        self.send(connect_packet(client_id, level=level, **kwargs))
        pkt = self.read_packet()
        assert pkt.type == CONNACK, f"expected CONNACK, got {pkt}"
        return pkt

    def subscribe(self, topic_filter: str, qos: int = 0, packet_id: int = 1):
        self.send(subscribe_packet(packet_id, [(topic_filter, qos)], level=self.level))
        pkt = self.read_packet()
        assert pkt.type == SUBACK, f"expected SUBACK, got {pkt}"
        return pkt


def assert_closed_with(raw: RawMqtt, reason: int | None, timeout: float = 5.0):
    """The broker sends DISCONNECT `reason` (None: no packet at all) and closes the socket."""
    packets, closed = raw.read_until_close(timeout)
    assert closed, f"connection still open after {timeout} s; got {packets}"
    if reason is None:
        assert packets == [], f"expected a bare close, got {packets}"
    else:
        kinds = [p.type for p in packets]
        assert kinds == [DISCONNECT], f"expected one DISCONNECT then close, got {packets}"
        assert packets[0].reason() == reason, (
            f"DISCONNECT reason {packets[0].reason():#04x}, want {reason:#04x}"
        )


# ---------------------------------------------------------------------------------------------
# mosquitto_pub / mosquitto_sub (Debian mosquitto-clients)


_open_subprocesses: list["MosquittoSub"] = []


def stop_all_subprocesses():
    while _open_subprocesses:
        _open_subprocesses.pop().stop()


def mosquitto_pub(broker: Broker, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Run mosquitto_pub against the broker's MQTT port; fails the test unless it exits 0."""
    host, port = broker.mqtt_addr
    argv = ["mosquitto_pub", "-h", host, "-p", str(port), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv} exited {done.returncode}: {done.stdout}{done.stderr}"
    return done


class MosquittoSub:
    """A mosquitto_sub process with -d (debug lines tell when its SUBACK arrived)."""

    def __init__(self, broker: Broker, *args: str):
        host, port = broker.mqtt_addr
        # stdbuf: mosquitto_sub block-buffers its debug lines on a pipe (SUBACK would show late).
        self.argv = ["stdbuf", "-oL", "mosquitto_sub", "-h", host, "-p", str(port), "-d", *args]
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        self.stdout = _LineReader(self.proc.stdout)
        self.stderr = _LineReader(self.proc.stderr)
        self.stdout.start()
        self.stderr.start()
        _open_subprocesses.append(self)

    def wait_subscribed(self, timeout: float = 5.0):
        match = self.stdout.wait_for(re.compile(r"received SUBACK"), time.monotonic() + timeout)
        assert match, f"{self.argv}: no SUBACK; output:\n{self.output()}"

    def output_lines(self) -> list[str]:
        """stdout without -d's debug lines: what a user sees with plain mosquitto_sub."""
        return [
            line
            for line in self.stdout.lines
            if line is not None
            and not line.startswith("Client ")
            and not line.startswith("Subscribed (mid")
        ]

    def wait_for_output(self, expected: str, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        while expected not in self.output_lines():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.argv}: no line {expected!r}; output:\n{self.output()}")
            time.sleep(0.02)

    def output(self) -> str:
        return f"stdout:\n{self.stdout.text()}\nstderr:\n{self.stderr.text()}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
