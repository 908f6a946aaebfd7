"""Fixtures for the NATS and MQTT interop tests. See harness.py for what runs underneath."""

from __future__ import annotations

import asyncio
import inspect

import pytest

import harness


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Run `async def` tests on a fresh event loop; close their nats-py clients afterwards."""
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}

    async def run():
        try:
            await pyfuncitem.obj(**kwargs)
        finally:
            await harness.close_all_clients()

    asyncio.run(run())
    return True


def pytest_report_header(config):
    if harness.IS_ISTHMUS:
        target = harness.isthmus_bin()
    elif harness.IS_MOSQUITTO:
        target = "/usr/sbin/mosquitto (Debian)"
    else:
        target = "nats-server (Debian)"
    return f"broker under test: {harness.PEER} ({target})"


# Which test files each reference broker can check: test_nats_* speak NATS, test_mqtt_* MQTT
# (their MQTT <-> NATS tests are marked isthmus-only). Isthmus runs them all.
_REFERENCE_SKIPS = {
    "nats-server": ("test_mqtt_", "MQTT tests run against Isthmus or ISTHMUS_PEER=mosquitto"),
    "mosquitto": ("test_nats_", "NATS tests run against Isthmus or ISTHMUS_PEER=nats-server"),
}


def pytest_collection_modifyitems(config, items):
    if harness.PEER not in _REFERENCE_SKIPS:
        return
    prefix, reason = _REFERENCE_SKIPS[harness.PEER]
    for item in items:
        if item.path.name.startswith(prefix):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def broker_factory(request):
    """`start(shards=2, config=None) -> Broker`; every broker is stopped after the test.

    `config` uses Isthmus's TOML tables, e.g. {"nats": {"max_payload": 1024}}; on a reference
    broker a key it cannot translate skips the test. A broker that died during the test (a crash)
    turns the test into an error that shows the broker's output. MQTT clients and mosquitto_sub
    processes the test left open are closed before the brokers stop.
    """
    started: list[harness.Broker] = []

    def start(shards: int = 2, config: dict | None = None) -> harness.Broker:
        try:
            broker = harness.Broker(shards=shards, config=config)
        except harness.NoTranslation as why:
            pytest.skip(f"{harness.PEER}: {why}")
        started.append(broker)
        return broker

    yield start
    harness.close_all_mqtt()
    harness.stop_all_subprocesses()
    crashed = [b for b in started if b.crashed()]
    for broker in started:
        broker.stop()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for broker in started:  # shown under "Captured stdout teardown"
            print(f"--- {broker.peer} {broker.argv} exit {broker.returncode}\n{broker.log()}")
    if crashed:
        logs = "\n\n".join(f"exit {b.returncode}\n{b.log()}" for b in crashed)
        pytest.fail(f"broker exited during the test:\n{logs}", pytrace=False)


@pytest.fixture
def broker(broker_factory) -> harness.Broker:
    """A broker with two shards and the default configuration."""
    return broker_factory(shards=2)

