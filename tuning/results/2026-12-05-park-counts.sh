#!/usr/bin/env bash
# What a 1-shard broker spends per message at 20k msg/s MQTT QoS 0: for each binary in turn
# (fresh broker each), perf stat counts 2 s of a 5 s mqtt-latency run (40,000 messages) and
# prints CPU, context switches, io_uring_enter, sendto and membarrier per message, and p50/p99.
#   LOADTEST=/abs/isthmus-loadtest bash tuning/results/2026-12-05-park-counts.sh BIN...
# A BIN may carry environment for the broker: 'GLOMMIO_KEEP_TIMERS=1 /abs/isthmus-patched'.
set -u
cd "$(dirname "$0")/../.."
for b in "$@"; do
  dir=$(mktemp -d)
  read -r -a words <<<"$b"
  ISTHMUS=${words[-1]}
  # shellcheck source=tuning/results/brokers.sh
  . tuning/results/brokers.sh
  (
    if [ ${#words[@]} -gt 1 ]; then export "${words[@]:0:${#words[@]}-1}"; fi
    start_isthmus x 1 ''
    echo "$pid" >"$dir/pid"
  )
  pid=$(cat "$dir/pid") mqtt=$(sed -n 's/.*mqtt=\([^ ]*\).*/\1/p' "$dir/x.out")
  ("$LOADTEST" mqtt-latency --addr "$mqtt" --qos 0 --rate 20000 --messages 100000 2>/dev/null |
    percentiles p50_us p99_us >"$dir/p.txt") &
  sleep 1
  counts=$(perf stat -x, -e task-clock,context-switches,syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_membarrier \
    -p "$pid" -- sleep 2 2>&1 | cut -d, -f1 | tr '\n' ' ')
  wait $!
  # shellcheck disable=SC2086
  echo "$b: $(python3 -c 'import sys; t, cs, e, s, m = map(float, sys.argv[1:6]); n = 40000
print("cpu/msg %.1fus cs %.2f enter %.2f send %.2f membarrier %.2f" % (t * 1000 / n, cs / n, e / n, s / n, m / n))' $counts) $(cat "$dir/p.txt")"
  kill "$pid"
  sleep 0.3
  rm -rf "$dir"
done
