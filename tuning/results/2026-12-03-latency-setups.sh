#!/usr/bin/env bash
# 2026-12-03-latency-setups.sh ROUNDS SUBCOMMAND ARGS...: p50/p99/p99.9 of a latency scenario
# against several broker setups started once and run in turn, ROUNDS times (SETUPS, default
# "pin2 nopin2 one mosq": Isthmus 2 shards pinned / unpinned, 1 shard, mosquitto). ISTHMUS and
# LOADTEST name the binaries (brokers.sh). e.g.
#   2026-12-03-latency-setups.sh 5 mqtt-latency --rate 20000 --messages 40000
set -u
rounds=$1 sub=$2
shift 2
. "$(dirname "$0")/brokers.sh"
read -r -a setups <<<"${SETUPS:-pin2 nopin2 one mosq}"
declare -A addr pids
for s in "${setups[@]}"; do
  case $s in
    pin2) start_isthmus "$s" 2 ;;
    nopin2) start_isthmus "$s" 2 '[server]\npin_cores = false\n' ;;
    one) start_isthmus "$s" 1 ;;
    mosq) start_mosquitto "$s" ;;
    *) echo "unknown setup $s" >&2; exit 2 ;;
  esac
  pids[$s]=$pid
  case $sub in nats-*) addr[$s]=$nats ;; *) addr[$s]=$mqtt ;; esac
done
for r in $(seq "$rounds"); do
  for s in "${setups[@]}"; do
    echo "round $r $s $("$LOADTEST" "$sub" --addr "${addr[$s]}" "$@" 2>/dev/null | percentiles p50_us p99_us p999_us)"
  done
done
kill "${pids[@]}"
wait 2>/dev/null
