# Sourced by the measurement scripts here: start brokers on loopback as `isthmus-loadtest
# compare` does, and print a run's percentiles. Each start_* sets $pid, $mqtt and $nats
# (empty when the broker speaks no NATS); files go to $dir (a fresh mktemp -d).
#   ISTHMUS, LOADTEST: the binaries (default target/release/...).
ISTHMUS=${ISTHMUS:-target/release/isthmus}
LOADTEST=${LOADTEST:-target/release/isthmus-loadtest}
dir=${dir:-$(mktemp -d)}

# start_isthmus NAME SHARDS [TOML]: Isthmus with the compare's MQTT queue settings, TOML
# (printf %b escapes) prepended; waits for its ready line.
start_isthmus() {
  printf '%b[mqtt]\nmax_queued_messages = 1000000\nmax_inflight = 64\n' "${3:-}" >"$dir/$1.toml"
  "$ISTHMUS" serve --nats-listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 --shards "$2" \
    --config "$dir/$1.toml" --log warn >"$dir/$1.out" 2>&1 &
  pid=$!
  for _ in $(seq 50); do grep -q "^ready" "$dir/$1.out" && break; sleep 0.1; done
  mqtt=$(sed -n 's/.*mqtt=\([^ ]*\).*/\1/p' "$dir/$1.out")
  nats=$(sed -n 's/.*nats=\([^ ]*\).*/\1/p' "$dir/$1.out")
}

# start_mosquitto NAME: mosquitto with the compare's settings on a free port.
start_mosquitto() {
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\nmax_inflight_messages 64\n' \
    "$port" >"$dir/$1.conf"
  /usr/sbin/mosquitto -c "$dir/$1.conf" >/dev/null 2>&1 &
  pid=$! mqtt=127.0.0.1:$port nats=
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}

# percentiles FIELD...: reads the loadtest's output, prints FIELD=value of its json line's
# results (e.g. p50_us p99_us max_us).
percentiles() {
  sed -n 's/^json: //p' | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())["results"]
print(" ".join("%s=%s" % (f.removesuffix("_us"), r.get(f)) for f in sys.argv[1:]))' "$@"
}
