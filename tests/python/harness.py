"""Test harness: start a broker, connect nats-py clients, speak raw NATS bytes.

The broker under test is Isthmus (`ISTHMUS_BIN`, default target/debug/isthmus). With
`ISTHMUS_PEER=nats-server` the same tests run against Debian's nats-server instead, so that every
assertion is first checked against the reference implementation. Tests describe configuration in
Isthmus terms (the TOML tables of docs/CONTRACT-issue2.md); `Broker` translates it for nats-server.

Shards: a connection's shard is INFO `client_id % shards`. nats-server is treated as one shard, so
`broker.shard(i)` is always 0 there and the cross-shard tests still check their delivery rules.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import nats
import pytest

REPO = Path(__file__).resolve().parents[2]
PEER = os.environ.get("ISTHMUS_PEER", "isthmus")
if PEER not in ("isthmus", "nats-server"):
    raise RuntimeError(f"ISTHMUS_PEER must be 'isthmus' or 'nats-server', not {PEER!r}")
IS_ISTHMUS = PEER == "isthmus"

isthmus_only = pytest.mark.skipif(
    not IS_ISTHMUS, reason="Isthmus-only behaviour (shards, or a documented difference)"
)

# ISTHMUS_TEST_TRACE=1: the broker logs every protocol line (shown for failed tests).
TRACE = os.environ.get("ISTHMUS_TEST_TRACE", "") not in ("", "0")

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0

_ISTHMUS_READY = re.compile(r"^ready nats=([0-9.]+):(\d+) shards=(\d+)$")
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
    raise TypeError(f"unsupported config value {value!r}")


def isthmus_toml(config: dict) -> str:
    lines = []
    for table, keys in config.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in keys.items())
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
    """One running broker process (Isthmus or nats-server) on a loopback port."""

    def __init__(self, shards: int = 2, config: dict | None = None):
        self.peer = PEER
        self.config = config or {}
        self.tmpdir = tempfile.TemporaryDirectory(prefix="isthmus-pytest-")
        self.stopped = False
        self.returncode = None
        if IS_ISTHMUS:
            self._start_isthmus(shards)
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
        if TRACE:
            argv += ["--log", "trace"]
        if self.config:
            path = Path(self.tmpdir.name) / "isthmus.toml"
            path.write_text(isthmus_toml(self.config))
            argv += ["--config", str(path)]
        self._spawn(argv)
        match = self.stdout.wait_for(_ISTHMUS_READY, time.monotonic() + READY_TIMEOUT_S)
        if match is None:
            self._fail_start("no `ready nats=127.0.0.1:PORT shards=N` line on stdout")
        self.host, self.port, self.shards = match[1], int(match[2]), int(match[3])
        if shards and self.shards != shards:
            self._fail_start(f"asked for {shards} shards, ready line says {self.shards}")

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
        return f"nats://{self.host}:{self.port}"

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


class RawClient:
    """A NATS connection over a plain blocking socket, for byte-exact protocol checks."""

    def __init__(self, broker: Broker, rcvbuf: int | None = None, timeout: float = 5.0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Set before connect so the TCP window starts small (a slow consumer fills it fast).
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((broker.host, broker.port))
        self.buf = bytearray()
        self.closed = False
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

    def send(self, data: bytes):
        self.sock.sendall(data)

    def handshake(self, **options):
        """CONNECT (verbose and pedantic off, headers on unless overridden), then PING/PONG."""
        opts = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
        opts.update(options)
        self.send(b"CONNECT " + json.dumps(opts).encode() + b"\r\nPING\r\n")
        self.expect_line(b"PONG")

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

    def close(self):
        self.sock.close()
