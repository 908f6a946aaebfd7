#!/usr/bin/env bash
# Full-rate 1->1 pairs on one shard against two, with and without co-location's rate cap
# (tuning/results/2026-12-02-yield.md). Usage:
#   2026-12-02-yield.sh ROUNDS RUNS /abs/isthmus /abs/isthmus-loadtest > out.txt
# Every round starts a fresh broker per (setup, scenario) and runs the scenario RUNS times;
# a line per run: setup scenario rate(M msg/s) delivered broker_cpu_centiseconds.
set -u
rounds=$1 runs=$2 isthmus=$3 loadtest=$4
dir=$(mktemp -d)
setups=("1shard|1|" "2cap16M|2|[server]\ncolocate_max_bytes_per_s = 16777216\n"
        "2nocap|2|[server]\ncolocate_max_bytes_per_s = 0\n" "2split|2|[server]\ncolocate_publishers = false\n")
scenarios=("nats16|nats-pubsub --size 16 --messages 2000000"
           "nats256|nats-pubsub --size 256 --messages 1000000"
           "mqtt16|mqtt-pubsub --size 16 --messages 1000000"
           "mqtt256|mqtt-pubsub --size 256 --messages 500000"
           "mqtt2nats|mqtt-to-nats --messages 500000"
           "nats2mqtt|nats-to-mqtt --messages 500000")
for round in $(seq "$rounds"); do
  for setup in "${setups[@]}"; do
    IFS='|' read -r name shards toml <<<"$setup"
    for scenario in "${scenarios[@]}"; do
      IFS='|' read -r sname args <<<"$scenario"
      printf "$toml"'[mqtt]\nmax_queued_messages = 1000000\nmax_inflight = 64\n' >"$dir/config.toml"
      "$isthmus" serve --nats-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --shards "$shards" \
        --config "$dir/config.toml" --log warn >"$dir/broker.out" 2>&1 &
      pid=$!
      for _ in $(seq 50); do grep -q "^ready" "$dir/broker.out" && break; sleep 0.1; done
      nats=$(sed -n 's/.*nats=\([^ ]*\).*/\1/p' "$dir/broker.out")
      mqtt=$(sed -n 's/.*mqtt=\([^ ]*\).*/\1/p' "$dir/broker.out")
      case $args in
        nats-pubsub*) addr="--addr $nats" ;;
        mqtt-pubsub*) addr="--addr $mqtt" ;;
        *) addr="--nats-addr $nats --mqtt-addr $mqtt" ;;
      esac
      for _ in $(seq "$runs"); do
        before=$(awk '{print $14+$15}' /proc/$pid/stat)
        # shellcheck disable=SC2086
        json=$("$loadtest" ${args%% *} $addr ${args#* } 2>/dev/null | sed -n 's/^json: //p')
        after=$(awk '{print $14+$15}' /proc/$pid/stat)
        echo "$json" | python3 -c '
import json, sys
d = json.loads(sys.stdin.read())["results"]
print(sys.argv[1], sys.argv[2], "%.2f" % (d["per_s"] / 1e6), "%d/%d" % (d["delivered"], d["expected"]), sys.argv[3])
' "$name" "$sname" "$((after - before))"
      done
      kill "$pid"; wait "$pid" 2>/dev/null
    done
  done
done
rm -rf "$dir"
