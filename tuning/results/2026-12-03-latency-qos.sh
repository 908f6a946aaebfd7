#!/usr/bin/env bash
# SETUP=pin2|one|mosq 2026-12-03-latency-qos.sh ROUNDS: p50/p99 of nats-latency, mqtt-latency
# QoS 0 and QoS 1 (20k msg/s, 40,000 messages) on one broker started for the call: Isthmus with
# 2 or 1 shards (CONFIG: TOML prepended, as in ab-runs.sh) or mosquitto. ISTHMUS, LOADTEST:
# brokers.sh.
set -u
. "$(dirname "$0")/brokers.sh"
case ${SETUP:-pin2} in
  mosq) start_mosquitto mosq ;;
  one) start_isthmus one 1 "${CONFIG:-}" ;;
  *) start_isthmus pin2 2 "${CONFIG:-}" ;;
esac
run() { "$LOADTEST" "$@" --rate 20000 --messages 40000 2>/dev/null | percentiles p50_us p99_us; }
for _ in $(seq "$1"); do
  line="${SETUP:-pin2}:"
  [ -n "$nats" ] && line="$line nats $(run nats-latency --addr "$nats")"
  line="$line | q0 $(run mqtt-latency --addr "$mqtt" --qos 0) | q1 $(run mqtt-latency --addr "$mqtt" --qos 1)"
  echo "$line"
done
kill "$pid"
