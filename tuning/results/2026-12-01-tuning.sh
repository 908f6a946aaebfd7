#!/usr/bin/env bash
# The knob measurements of 2026-12-01-tuning.md: Isthmus started once per (round, variant) with
# one config file per variant, variants interleaved in every round (A B C D E A B C D E ...),
# the same loadtest scenarios against each, then the broker's VmRSS and VmPin. Prints one
# `json:` line per run, tagged with round and variant; summarise with 2026-12-01-tuning.py.
# Variants: base (2 shards, pinned, no spin, 128 KiB io_memory), spin200
# (spin_before_park_us = 200), unpinned (pin_cores = false), shards1, iomem10m
# (io_memory_bytes = 10 MiB), nothp (base with MIMALLOC_ALLOW_THP=0 in the broker's environment).
#
#   tuning/results/2026-12-01-tuning.sh BIN_DIR ROUNDS > runs.txt
#
# BIN_DIR holds release builds of `isthmus` and `isthmus-loadtest`. Loopback only; port 24222.
set -euo pipefail

bin=${1:?BIN_DIR}
rounds=${2:-5}
port=24222
work=$(mktemp -d)
pid=
# A broker left running would hold the port for every later run.
trap '[ -n "$pid" ] && kill -TERM "$pid" 2> /dev/null; rm -rf "$work"' EXIT

variant() { # name, [server] lines, [environment of the broker]
    printf '[server]\n%s\n' "$2" > "$work/$1.toml"
    variants+=("$1")
    environment[$1]=${3:-ISTHMUS_VARIANT=$1}
}
variants=()
declare -A environment
variant base "shards = 2"
variant spin200 $'shards = 2\nspin_before_park_us = 200'
variant unpinned $'shards = 2\npin_cores = false'
variant shards1 "shards = 1"
variant iomem10m $'shards = 2\nio_memory_bytes = 10485760'
variant nothp "shards = 2" MIMALLOC_ALLOW_THP=0

run() { # round, variant, loadtest arguments...
    local round=$1 name=$2
    shift 2
    "$bin/isthmus-loadtest" "$@" --addr "127.0.0.1:$port" > "$work/out" 2>&1 \
        || echo "# round $round $name failed: $* $(tail -1 "$work/out")"
    sed -n "s/^json: {/json: {\"round\":$round,\"variant\":\"$name\",/p" "$work/out"
}

for round in $(seq 1 "$rounds"); do
    for name in "${variants[@]}"; do
        env "${environment[$name]}" "$bin/isthmus" serve --config "$work/$name.toml" --nats-listen "127.0.0.1:$port" \
            --mqtt-listen 127.0.0.1:0 --log warn > "$work/ready" 2> "$work/stderr" &
        pid=$!
        for _ in $(seq 400); do grep -q '^ready' "$work/ready" && break; sleep 0.05; done
        if ! grep -q '^ready' "$work/ready"; then
            echo "# round $round $name: not ready after 20 s"
            kill -TERM "$pid" 2> /dev/null || true
            wait "$pid" || true
            pid=
            continue
        fi
        run "$round" "$name" nats-pubsub --messages 2000000
        run "$round" "$name" nats-pubsub --messages 500000 --publishers 4
        run "$round" "$name" nats-pubsub --messages 500000 --subscribers 4
        run "$round" "$name" nats-latency --messages 40000 --rate 20000
        rss=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status")
        pinned=$(awk '/^VmPin/{print $2}' "/proc/$pid/status")
        echo "json: {\"round\":$round,\"variant\":\"$name\",\"scenario\":\"broker-memory\",\"rss_kib\":$rss,\"pinned_kib\":$pinned}"
        kill -TERM "$pid"
        wait "$pid" || true
        pid=
        if [ -s "$work/stderr" ]; then sed "s/^/# $name stderr: /" "$work/stderr"; fi
    done
done
