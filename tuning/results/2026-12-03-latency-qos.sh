#!/usr/bin/env bash
# SETUP=pin2|one|mosq 2026-12-03-latency-qos.sh ROUNDS: p50/p99 of nats-latency, mqtt-latency
# QoS 0 and QoS 1 (20k msg/s, 40,000 messages) on one broker started for the call: Isthmus with
# 2 or 1 shards (ISTHMUS, CONFIG as in ab-runs.sh) or mosquitto. LOADTEST: the loadtest binary.
I=${ISTHMUS:-target/release/isthmus}; L=${LOADTEST:-target/release/isthmus-loadtest}; d=$(mktemp -d)
case $SETUP in
  mosq) port=$((20000 + RANDOM % 10000)); printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 64\nmax_queued_messages 1000000\n' $port >"$d/m.conf"; /usr/sbin/mosquitto -c "$d/m.conf" >/dev/null 2>&1 & pid=$!; mqtt=127.0.0.1:$port; nats=; sleep 0.5 ;;
  *) sh=2; [ "$SETUP" = one ] && sh=1; printf '%b[mqtt]\nmax_queued_messages = 1000000\nmax_inflight = 64\n' "${CONFIG:-}" >"$d/c.toml"; "$I" serve --nats-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --shards $sh --config "$d/c.toml" --log warn >"$d/o" 2>&1 & pid=$!; sleep 0.5; mqtt=$(sed -n 's/.*mqtt=\([^ ]*\).*/\1/p' "$d/o"); nats=$(sed -n 's/.*nats=\([^ ]*\).*/\1/p' "$d/o") ;;
esac
p() { python3 -c 'import json,sys; r=json.loads(sys.stdin.read())["results"]; print("%s/%s" % (r["p50_us"], r["p99_us"]), end=" ")'; }
for r in $(seq $1); do
  line="$SETUP:"
  [ -n "$nats" ] && line="$line nats $($L nats-latency --addr $nats --rate 20000 --messages 40000 2>/dev/null | sed -n 's/^json: //p' | p)"
  line="$line q0 $($L mqtt-latency --addr $mqtt --rate 20000 --messages 40000 --qos 0 2>/dev/null | sed -n 's/^json: //p' | p)"
  line="$line q1 $($L mqtt-latency --addr $mqtt --rate 20000 --messages 40000 --qos 1 2>/dev/null | sed -n 's/^json: //p' | p)"
  echo "$line"
done
kill $pid
