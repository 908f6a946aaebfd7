#!/usr/bin/env bash
# Auth overhead A/B (tuning/results/2026-12-01-auth-overhead.md): open vs [auth.jwt] with an
# allow-all token vs a token with deny rules; interleaved rounds, a fresh 1-shard broker per run.
# Copy this script into a directory holding release copies of `isthmus` and `isthmus-loadtest`, plus
# (made as in the .md): hmac.secret, auth.toml, token-all, token-deny.
# Usage: 2026-12-01-auth-overhead.sh ROUNDS OUT.jsonl
set -u
cd "$(dirname "$0")"
rounds=${1:-4}; out=${2:-runs.jsonl}
# A new pair of ports for every broker: after a connection storm the last broker's port has
# thousands of TIME_WAIT sockets and the next broker cannot bind it. Below the ephemeral range.
next_port=20000
pick_ports() {
    while ss -tan | grep -qE ":($next_port|$((next_port + 1)))\b"; do next_port=$((next_port + 2)); done
    nport=$next_port; mport=$((next_port + 1)); next_port=$((next_port + 2))
    [ $next_port -gt 32000 ] && next_port=20000
}
start_broker() { # $1 = variant
    pick_ports
    local cfg=()
    [ "$1" != open ] && cfg=(--config auth.toml)
    ./isthmus serve --nats-listen 127.0.0.1:$nport --mqtt-listen 127.0.0.1:$mport --shards 1 "${cfg[@]}" > broker.log 2>&1 &
    bpid=$!
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$nport) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/$mport) 2>/dev/null && return; sleep 0.05; done
    echo "broker did not start" >&2; cat broker.log >&2; exit 1
}
stop_broker() { kill "$bpid"; wait "$bpid" 2>/dev/null; }
run() { # variant round scenario-name args...
    local variant=$1 round=$2 name=$3; shift 3
    local creds=()
    case $variant in
        allow-all) creds=(--token "$(cat token-all)") ;;
        deny-rules) creds=(--token "$(cat token-deny)") ;;
    esac
    start_broker "$variant"
    local t0; t0=$(date +%s.%N)
    local args=("$@")
    args=("${args[@]//NPORT/$nport}"); args=("${args[@]//MPORT/$mport}")
    set -- "${args[@]}"
    local line
    line=$(./isthmus-loadtest "$@" "${creds[@]}" 2>loadtest.err | grep '^json: ' | sed 's/^json: //')
    local rc=${PIPESTATUS[0]}
    local t1; t1=$(date +%s.%N)
    stop_broker
    [ -z "$line" ] && line='null'
    printf '{"variant":"%s","round":%s,"name":"%s","rc":%s,"t0":%s,"t1":%s,"run":%s}\n' "$variant" "$round" "$name" "$rc" "$t0" "$t1" "$line" >> "$out"
    echo "$variant r$round $name rc=$rc $(echo "$line" | grep -o '"per_s":[0-9.]*')"
    [ "$rc" != 0 ] && { cat loadtest.err >&2; }
    sleep 1
}
for round in $(seq "$rounds"); do
    for variant in open allow-all deny-rules; do
        run $variant $round nats-pubsub nats-pubsub --addr 127.0.0.1:NPORT --messages 2000000 --size 16 --subscribe 'loadtest.>'
        run $variant $round mqtt-pubsub mqtt-pubsub --addr 127.0.0.1:MPORT --messages 1000000 --size 16 --qos 0 --subscribe 'loadtest/#'
        run $variant $round storm-mqtt connection-storm --protocol mqtt --addr 127.0.0.1:MPORT --connections 10000 --concurrency 4
        run $variant $round storm-nats connection-storm --protocol nats --addr 127.0.0.1:NPORT --connections 10000 --concurrency 4
    done
done
