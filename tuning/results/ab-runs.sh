#!/usr/bin/env bash
# One broker, several loadtest runs of one scenario, with the broker's CPU per run.
#   ab-runs.sh /abs/isthmus SHARDS RUNS SUBCOMMAND [ARGS...]
# e.g. ab-runs.sh /tmp/isthmus-a 1 3 nats-pubsub --size 16 --messages 2000000
# Interleave binaries by calling it in turn for each. LOADTEST (default: the isthmus-loadtest
# next to the broker binary) and CONFIG (TOML text prepended to the MQTT queue settings the
# compare uses) override. Prints: shards scenario, then per run the rate in M msg/s, the
# delivered/expected count if short, and (broker CPU in centiseconds, from /proc/PID/stat).
set -u
isthmus=$1 shards=$2 runs=$3 sub=$4
shift 4
loadtest=${LOADTEST:-$(dirname "$isthmus")/isthmus-loadtest}
ISTHMUS=$isthmus LOADTEST=$loadtest
# shellcheck source=tuning/results/brokers.sh
. "$(dirname "$0")/brokers.sh"
start_isthmus broker "$shards" "${CONFIG:-}"
case $sub in
  mqtt-to-nats | nats-to-mqtt) addr=(--nats-addr "$nats" --mqtt-addr "$mqtt") ;;
  nats-*) addr=(--addr "$nats") ;;
  *) addr=(--addr "$mqtt") ;;
esac
line="shards=$shards $sub $*:"
for _ in $(seq "$runs"); do
  before=$(awk '{print $14+$15}' "/proc/$pid/stat")
  # The rate, and the delivered count after it when short of the expected one.
  rate=$("$loadtest" "$sub" "${addr[@]}" "$@" 2>/dev/null | sed -n 's/^json: //p' |
    python3 -c '
import json, sys
r = json.loads(sys.stdin.read())["results"]
short = r.get("delivered", 0) < r.get("expected", 0)
print("%.2f" % (r["per_s"] / 1e6) + (" %d/%d" % (r["delivered"], r["expected"]) if short else ""))
')
  after=$(awk '{print $14+$15}' "/proc/$pid/stat")
  line="$line $rate($((after - before))cs)"
done
echo "$line"
kill "$pid"
wait "$pid" 2>/dev/null
rm -rf "$dir"
