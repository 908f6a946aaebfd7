#!/usr/bin/env bash
# The accept-path and client-port measurements of 2026-12-01-tuning.md: each variant runs in a
# network namespace of its own (unshare --net, loopback only), so its sysctls change nothing on
# the shared host and no TIME_WAIT state carries over between runs. Variants are interleaved in
# every round. Needs root (CAP_SYS_ADMIN for unshare); prints one `json:` line per run, tagged
# with round and variant (2026-12-01-tuning.py summarises them).
#
#   tuning/results/2026-12-01-storm.sh BIN_DIR ROUNDS > runs.txt
#
# Variants (sysctls set inside the namespace before the broker starts):
#   somaxconn4096   net.core.somaxconn = 4096 (this host's default)
#   somaxconn1024   net.core.somaxconn = 1024 (glommio's own listen backlog)
#   somaxconn128    net.core.somaxconn = 128
#   reuse0-narrow   tcp_tw_reuse = 0, ip_local_port_range 32768 60999, 40000 connections
#   reuse0-wide     tcp_tw_reuse = 0, ip_local_port_range 1024 65535, 40000 connections
set -euo pipefail

bin=${1:?BIN_DIR}
rounds=${2:-3}

variant_sysctls() {
    case $1 in
        somaxconn4096) echo "net.core.somaxconn=4096" ;;
        somaxconn1024) echo "net.core.somaxconn=1024" ;;
        somaxconn128) echo "net.core.somaxconn=128" ;;
        reuse0-narrow) echo "net.ipv4.tcp_tw_reuse=0;net.ipv4.ip_local_port_range=32768 60999" ;;
        reuse0-wide) echo "net.ipv4.tcp_tw_reuse=0;net.ipv4.ip_local_port_range=1024 65535" ;;
    esac
}

variant_storm() {
    case $1 in
        somaxconn*) echo "--connections 20000 --concurrency 2048" ;;
        reuse0-*) echo "--connections 40000 --concurrency 64" ;;
    esac
}

for round in $(seq 1 "$rounds"); do
    for name in somaxconn4096 somaxconn1024 somaxconn128 reuse0-narrow reuse0-wide; do
        unshare --net bash -c '
            set -eu
            bin=$1 round=$2 name=$3 sysctls=$4 storm=$5
            ip link set lo up
            IFS=";" read -ra settings <<< "$sysctls"
            for setting in "${settings[@]}"; do sysctl -q -w "$setting"; done
            "$bin/isthmus" serve --shards 2 --nats-listen 127.0.0.1:4222 \
                --mqtt-listen 127.0.0.1:1883 --log warn > /tmp/storm-ready.$$ 2>&1 &
            pid=$!
            for _ in $(seq 200); do grep -q "^ready" /tmp/storm-ready.$$ && break; sleep 0.05; done
            # shellcheck disable=SC2086
            "$bin/isthmus-loadtest" connection-storm --protocol nats --addr 127.0.0.1:4222 $storm \
                > /tmp/storm-out.$$ 2>&1 || echo "# round $round $name failed: $(tail -1 /tmp/storm-out.$$)"
            sed -n "s/^json: {/json: {\"round\":$round,\"variant\":\"$name\",/p" /tmp/storm-out.$$
            kill -TERM $pid
            wait $pid || true
            rm -f /tmp/storm-ready.$$ /tmp/storm-out.$$
        ' storm "$bin" "$round" "$name" "$(variant_sysctls "$name")" "$(variant_storm "$name")"
    done
done
