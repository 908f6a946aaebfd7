#!/usr/bin/env bash
# CPU per message of a broker, and of the loadtest, at 20k msg/s MQTT (QoS $QOS, default 0):
# for each setup in turn (a fresh broker each), perf stat counts 2 s (40,000 messages) of a
# 5 s mqtt-latency run, on the broker and on the loadtest at the same time.
#   LOADTEST=/abs/isthmus-loadtest bash tuning/results/2026-12-05-cpu-per-msg.sh SETUP...
# SETUP: `mosquitto`, or a 1-shard Isthmus binary, which may carry environment for the
# broker: 'GLOMMIO_KEEP_TIMERS=3 /abs/isthmus-patched'.
# Prints per setup: broker CPU per message (us), context switches and io_uring_enter per
# message, the loadtest's CPU per message, and the run's p50/p99.
set -u
cd "$(dirname "$0")/../.."
QOS=${QOS:-0}
for s in "$@"; do
  dir=$(mktemp -d)
  read -r -a words <<<"$s"
  ISTHMUS=${words[-1]}
  # shellcheck source=tuning/results/brokers.sh
  . tuning/results/brokers.sh
  if [ "$s" = mosquitto ]; then
    start_mosquitto x
    echo "$pid $mqtt" >"$dir/broker"
  else
    (
      if [ ${#words[@]} -gt 1 ]; then export "${words[@]:0:${#words[@]}-1}"; fi
      start_isthmus x 1 ''
      echo "$pid $mqtt" >"$dir/broker"
    )
  fi
  read -r pid mqtt <"$dir/broker"
  ("$LOADTEST" mqtt-latency --addr "$mqtt" --qos "$QOS" --rate 20000 --messages 100000 2>/dev/null |
    percentiles p50_us p99_us >"$dir/p.txt") &
  run=$!
  sleep 1
  lt=$(pgrep -n -f "mqtt-latency --addr $mqtt")
  perf stat -x, -e task-clock,context-switches,syscalls:sys_enter_io_uring_enter -p "$pid" \
    -- sleep 2 2>"$dir/b.txt" &
  counting=$!
  perf stat -x, -e task-clock -p "$lt" -- sleep 2 2>"$dir/l.txt"
  wait "$counting" "$run"
  # shellcheck disable=SC2046
  echo "$s: $(python3 -c 'import sys; t, cs, e, lt = map(float, sys.argv[1:5]); n = 40000
print("cpu/msg %.1fus cs %.2f enter %.2f loadtest cpu/msg %.1fus" % (t * 1000 / n, cs / n, e / n, lt * 1000 / n))' \
    $(cut -d, -f1 "$dir/b.txt") $(cut -d, -f1 "$dir/l.txt")) $(cat "$dir/p.txt")"
  kill "$pid"
  sleep 0.3
  rm -rf "$dir"
done
