#!/usr/bin/env bash
# 2026-12-03-latency-seq.sh [ISTHMUS]: the throughput scenarios of `compare` in its order
# (idle and storm left out), each from its own loadtest process, against one Isthmus with the
# monitor on 127.0.0.1:18222, then its three latency scenarios; prints each latency run with
# the broker's move and memory-release counters and RSS. SKIP=1: latency runs only.
# ISTHMUS (or the argument), LOADTEST: brokers.sh.
set -u
ISTHMUS=${1:-${ISTHMUS:-target/release/isthmus}}
. "$(dirname "$0")/brokers.sh"
start_isthmus seq 2 '[monitor]\nlisten = "127.0.0.1:18222"\n'
M=$mqtt N=$nats L=$LOADTEST
snap() { curl -s 127.0.0.1:18222/metrics | grep -E "^isthmus_(memory_releases|mqtt_moves|nats_moves)_total" | sed 's/isthmus_//; s/_total{shard="\([01]\)"}/\1=/' | tr -d ' ' | tr '\n' ' '; echo "rss=$(grep VmRSS /proc/$pid/status | awk '{print $2}')"; }
q() { "$L" "$@" >/dev/null 2>&1; }
lat() { "$L" "$@" 2>/dev/null | percentiles p50_us p99_us p999_us max_us max_at_ms; }
if [ "${SKIP:-}" != 1 ]; then
q nats-pubsub --addr $N --messages 2000000; q nats-pubsub --addr $N --size 256 --messages 1000000
q nats-pubsub --addr $N --subscribers 8 --messages 250000; q nats-pubsub --addr $N --publishers 8 --messages 250000
q nats-queue --addr $N --subscribers 4 --messages 1000000; q nats-request --addr $N --requesters 4 --responders 2 --requests 50000 --window 16
q mqtt-pubsub --addr $M --messages 1000000; q mqtt-pubsub --addr $M --size 256 --messages 500000
q mqtt-pubsub --addr $M --subscribers 8 --messages 100000; q mqtt-pubsub --addr $M --publishers 8 --messages 50000
q mqtt-pubsub --addr $M --qos 1 --messages 200000 --inflight 1000; q mqtt-pubsub --addr $M --qos 2 --messages 100000 --inflight 64
q mqtt-to-nats --mqtt-addr $M --nats-addr $N --messages 500000; q nats-to-mqtt --mqtt-addr $M --nats-addr $N --messages 500000
q nats-to-mqtt --mqtt-addr $M --nats-addr $N --messages 100000 --qos 1
fi
echo "before: $(snap)"
echo "nats: $(lat nats-latency --addr $N --rate 20000 --messages 40000) | $(snap)"
echo "q0:   $(lat mqtt-latency --addr $M --rate 20000 --messages 40000 --qos 0) | $(snap)"
echo "q1:   $(lat mqtt-latency --addr $M --rate 20000 --messages 40000 --qos 1) | $(snap)"
kill $pid
