#!/usr/bin/env bash
# Full-rate 1->1 pairs on one shard against two, with and without co-location's rate cap
# (tuning/results/2026-12-02-yield.md). Usage:
#   2026-12-02-yield.sh ROUNDS RUNS /abs/isthmus /abs/isthmus-loadtest > out.txt
# Every round starts a fresh broker per (setup, scenario) and runs the scenario RUNS times
# (ab-runs.sh); a line per broker: setup, then ab-runs.sh's line.
# The figures in 2026-12-02-yield.md were taken with this script's first version (32ed8c4:
# the same runs, printed a line per run).
set -u
rounds=$1 runs=$2 isthmus=$3 loadtest=$4
here=$(dirname "$0")
setups=("1shard|1|" "2cap16M|2|[server]\ncolocate_max_bytes_per_s = 16777216\n"
        "2nocap|2|[server]\ncolocate_max_bytes_per_s = 0\n" "2split|2|[server]\ncolocate_publishers = false\n")
scenarios=("nats-pubsub --size 16 --messages 2000000"
           "nats-pubsub --size 256 --messages 1000000"
           "mqtt-pubsub --size 16 --messages 1000000"
           "mqtt-pubsub --size 256 --messages 500000"
           "mqtt-to-nats --messages 500000"
           "nats-to-mqtt --messages 500000")
for _ in $(seq "$rounds"); do
  for setup in "${setups[@]}"; do
    IFS='|' read -r name shards toml <<<"$setup"
    for scenario in "${scenarios[@]}"; do
      # shellcheck disable=SC2086
      line=$(CONFIG="$toml" LOADTEST="$loadtest" "$here/ab-runs.sh" "$isthmus" "$shards" "$runs" $scenario)
      echo "$name $line"
    done
  done
done
