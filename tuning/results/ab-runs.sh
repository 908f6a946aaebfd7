#!/usr/bin/env bash
# One broker, several loadtest runs of one scenario, with the broker's CPU per run.
#   ab-runs.sh /abs/isthmus SHARDS RUNS SUBCOMMAND [ARGS...]
# e.g. ab-runs.sh /tmp/isthmus-a 1 3 nats-pubsub --size 16 --messages 2000000
# Interleave binaries by calling it in turn for each. LOADTEST (default: the isthmus-loadtest
# next to the broker binary) and CONFIG (TOML text prepended to the MQTT queue settings the
# compare uses) override. Prints: shards scenario, then rate in M msg/s (broker CPU in
# centiseconds, from /proc/PID/stat) per run.
set -u
isthmus=$1 shards=$2 runs=$3 sub=$4
shift 4
loadtest=${LOADTEST:-$(dirname "$isthmus")/isthmus-loadtest}
dir=$(mktemp -d)
printf '%b[mqtt]\nmax_queued_messages = 1000000\nmax_inflight = 64\n' "${CONFIG:-}" >"$dir/config.toml"
"$isthmus" serve --nats-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --shards "$shards" \
  --config "$dir/config.toml" --log warn >"$dir/broker.out" 2>&1 &
pid=$!
for _ in $(seq 50); do grep -q "^ready" "$dir/broker.out" && break; sleep 0.1; done
nats=$(sed -n 's/.*nats=\([^ ]*\).*/\1/p' "$dir/broker.out")
mqtt=$(sed -n 's/.*mqtt=\([^ ]*\).*/\1/p' "$dir/broker.out")
case $sub in
  nats-*) addr=(--addr "$nats") ;;
  mqtt-pubsub | mqtt-latency) addr=(--addr "$mqtt") ;;
  *) addr=(--nats-addr "$nats" --mqtt-addr "$mqtt") ;;
esac
line="shards=$shards $sub $*:"
for _ in $(seq "$runs"); do
  before=$(awk '{print $14+$15}' "/proc/$pid/stat")
  rate=$("$loadtest" "$sub" "${addr[@]}" "$@" 2>/dev/null | sed -n 's/^json: //p' |
    python3 -c 'import json, sys; print("%.2f" % (json.loads(sys.stdin.read())["results"]["per_s"] / 1e6))')
  after=$(awk '{print $14+$15}' "/proc/$pid/stat")
  line="$line $rate($((after - before))cs)"
done
echo "$line"
kill "$pid"
wait "$pid" 2>/dev/null
rm -rf "$dir"
