#!/bin/bash
# A/B of broker binaries, interleaved, a fresh broker (default config: 2 shards here) per run.
# usage: tuning/results/2026-12-01-mesh-returns.sh ROUNDS "SCENARIO ARGS" /abs/bin1 /abs/bin2 ...
# Prints rate and the broker's CPU time (utime+stime from /proc) per delivered message.
# SHARDS=1 runs every broker with one shard (a 1->1 pair then never crosses cores).
# A binary given as /abs/bin@/abs/config.toml runs with that config file.
# Brokers run with RUST_LOG=isthmus=debug; "moves" counts connections moved between
# shards (co-location, NATS and MQTT), from the broker's log.
LOADTEST=${LOADTEST:-$PWD/target/release/isthmus-loadtest}
rounds=$1; shift; args=$1; shift
for r in $(seq 1 $rounds); do
  for b in "$@"; do
    conf=""; case $b in *@*) conf="--config ${b#*@}"; b=${b%@*};; esac
    d=$(mktemp -d); (cd $d && RUST_LOG=isthmus=debug $b serve ${SHARDS:+--shards $SHARDS} $conf > broker.log 2>&1 &); sleep 0.8
    P=$(pgrep -f "^$b serve" | head -1)
    t0=$(awk '{print $14+$15}' /proc/$P/stat)
    out=$($LOADTEST $args 2>&1 | grep '^json:')
    t1=$(awk '{print $14+$15}' /proc/$P/stat)
    kill $P; sleep 0.5
    moves=$(grep -c "connection moved" $d/broker.log); rm -rf $d
    python3 - "$out" $t0 $t1 "$b" $r "$args" $moves "$conf" <<'PY'
import json,sys
j=json.loads(sys.argv[1][5:]); t0=int(sys.argv[2]); t1=int(sys.argv[3])
d=j['results']['delivered']
print(f"{sys.argv[6]} | round {sys.argv[5]} | {sys.argv[4]}{sys.argv[8]} | {j['results']['per_s']/1e6:.2f} M/s | broker cpu {(t1-t0)/100:.2f} s | {(t1-t0)/100*1e9/d:.0f} ns/msg | moves {sys.argv[7]}" + (f" | p50 {j['results']['p50_us']} p99 {j['results']['p99_us']} max {j['results'].get('max_us')} us" if 'p99_us' in j['results'] else ""), flush=True)
PY
  done
done
