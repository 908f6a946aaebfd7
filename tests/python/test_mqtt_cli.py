"""The mosquitto command-line clients (Debian mosquitto-clients) against the broker.

The seed scenario: `mosquitto_sub -t 'test/#' -v` sees `mosquitto_pub -t test/terminal
-m "test message" -d`. Checked against mosquitto 2.0 (ISTHMUS_PEER=mosquitto).
"""

import pytest

from harness import MosquittoSub, mosquitto_pub, mqtt_client

VERSIONS = [pytest.param("311", id="mqtt311"), pytest.param("5", id="mqtt5")]


@pytest.mark.parametrize("version", VERSIONS)
def test_seed_scenario_pub_seen_by_sub(broker, version):
    sub = MosquittoSub(broker, "-t", "test/#", "-v", "-V", version)
    sub.wait_subscribed()
    done = mosquitto_pub(
        broker, "-t", "test/terminal", "-m", "test message", "-d", "-V", version
    )
    assert "received CONNACK (0)" in done.stdout, done.stdout
    assert "sending PUBLISH" in done.stdout and "'test/terminal'" in done.stdout, done.stdout
    sub.wait_for_output("test/terminal test message")
    assert sub.output_lines() == ["test/terminal test message"]


@pytest.mark.parametrize("version", VERSIONS)
def test_pub_qos_and_retain_with_count_limited_sub(broker, version):
    for qos in ("0", "1", "2"):
        mosquitto_pub(broker, "-t", f"cli/q{qos}", "-m", f"retained {qos}", "-q", qos, "-r",
                      "-V", version)
    sub = MosquittoSub(broker, "-t", "cli/#", "-v", "-q", "2", "-C", "3", "-W", "5",
                       "-V", version)
    sub.proc.wait(8)
    assert sub.proc.returncode == 0, sub.output()  # -C 3 reached before -W 5
    assert sorted(sub.output_lines()) == ["cli/q0 retained 0", "cli/q1 retained 1",
                                          "cli/q2 retained 2"]


@pytest.mark.parametrize("version", VERSIONS)
def test_mosquitto_pub_reaches_paho(broker, version):
    paho_sub = mqtt_client(broker, "paho-cli", level=5)
    paho_sub.subscribe("cli/paho", qos=1)
    mosquitto_pub(broker, "-t", "cli/paho", "-m", "from the cli", "-q", "1", "-V", version)
    got = paho_sub.get()
    assert (got.payload, got.qos) == (b"from the cli", 1)


def test_mosquitto_pub_user_property_in_5(broker):
    paho_sub = mqtt_client(broker, "paho-cli-props", level=5)
    paho_sub.subscribe("cli/props", qos=1)
    mosquitto_pub(broker, "-t", "cli/props", "-m", "x", "-q", "1", "-V", "5",
                  "-D", "publish", "user-property", "origin", "cli")
    got = paho_sub.get()
    assert got.properties.UserProperty == [("origin", "cli")]
