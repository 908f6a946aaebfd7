#!/usr/bin/env bash
# 2026-12-03-latency-setups.sh ROUNDS SUBCOMMAND ARGS...: p50/p99/p99.9 of a latency scenario
# against several broker setups started once and run in turn, ROUNDS times (SETUPS, default
# "pin2 nopin2 one mosq": Isthmus 2 shards pinned / unpinned, 1 shard, mosquitto). ISTHMUS and
# LOADTEST name the binaries. e.g. 2026-12-03-latency-setups.sh 5 mqtt-latency --rate 20000 --messages 40000
set -u
rounds=$1; sub=$2; shift 2
I=${ISTHMUS:-target/release/isthmus}; L=${LOADTEST:-target/release/isthmus-loadtest}
d=$(mktemp -d)
start() { # name shards extra-config
  printf '%b[mqtt]\nmax_queued_messages = 1000000\nmax_inflight = 64\n' "$3" >"$d/$1.toml"
  "$I" serve --nats-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --shards "$2" --config "$d/$1.toml" --log warn >"$d/$1.out" 2>&1 &
  echo $! >"$d/$1.pid"
  for _ in $(seq 50); do grep -q "^ready" "$d/$1.out" && break; sleep 0.1; done
}
IFS=' ' read -r -a setups <<<"${SETUPS:-pin2 nopin2 one mosq}"
for s in "${setups[@]}"; do
  case $s in
    pin2) start $s 2 '' ;;
    nopin2) start $s 2 '[server]\npin_cores = false\n' ;;
    one) start $s 1 '' ;;
    spin2) start $s 2 '[server]\nspin_before_park_us = 50\n' ;;
    mosq) port=$((20000 + RANDOM % 10000)); printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 64\nmax_queued_messages 1000000\n' $port >"$d/m.conf"; /usr/sbin/mosquitto -c "$d/m.conf" >/dev/null 2>&1 & echo $! >"$d/$s.pid"; echo "mqtt=127.0.0.1:$port nats=none" >"$d/$s.out"; sleep 0.5 ;;
  esac
done
for r in $(seq "$rounds"); do
  for s in "${setups[@]}"; do
    mqtt=$(sed -n 's/.*mqtt=\([^ ]*\).*/\1/p' "$d/$s.out"); nats=$(sed -n 's/.*nats=\([^ ]*\).*/\1/p' "$d/$s.out")
    case $sub in nats-*) a=$nats ;; *) a=$mqtt ;; esac
    out=$("$L" "$sub" --addr "$a" "$@" 2>/dev/null | sed -n 's/^json: //p' | python3 -c 'import json,sys; r=json.loads(sys.stdin.read())["results"]; print("p50 %s p99 %s p999 %s" % (r.get("p50_us"), r.get("p99_us"), r.get("p999_us")))' 2>&1 | tail -1)
    echo "round $r $s $out"
  done
done
for s in "${setups[@]}"; do kill "$(cat "$d/$s.pid")"; done
wait 2>/dev/null
