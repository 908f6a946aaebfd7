#!/usr/bin/env bash
# p99 at 20k msg/s on fresh brokers in turn: two Isthmus binaries (2 shards) and mosquitto,
# three mqtt-latency runs per broker start. SETUPS (default "A B mosquitto") picks the brokers;
# nopin and one are binary A with pin_cores = false (2 shards) and with 1 shard.
#   A=/abs/isthmus-a B=/abs/isthmus-b LOADTEST=/abs/isthmus-loadtest \
#     bash tuning/results/2026-12-04-latency-fresh.sh QOS STARTS
set -u
cd "$(dirname "$0")/../.."
qos=$1 starts=$2
for s in $(seq "$starts"); do
  for b in ${SETUPS:-A B mosquitto}; do
    dir=$(mktemp -d)
    # shellcheck source=tuning/results/brokers.sh
    case $b in
      A) ISTHMUS=$A; . tuning/results/brokers.sh; start_isthmus x 2 '' ;;
      B) ISTHMUS=$B; . tuning/results/brokers.sh; start_isthmus x 2 '' ;;
      nopin) ISTHMUS=$A; . tuning/results/brokers.sh; start_isthmus x 2 '[server]\npin_cores = false\n' ;;
      one) ISTHMUS=$A; . tuning/results/brokers.sh; start_isthmus x 1 '' ;;
      mosquitto) . tuning/results/brokers.sh; start_mosquitto x ;;
    esac
    line="$b:"
    for _ in 1 2 3; do
      p=$("$LOADTEST" mqtt-latency --addr "$mqtt" --qos "$qos" --rate 20000 --messages 40000 \
        2>/dev/null | percentiles p50_us p99_us max_us)
      line="$line [$p]"
    done
    echo "start $s $line"
    kill "$pid"
    wait "$pid" 2>/dev/null
    rm -rf "$dir"
  done
done
