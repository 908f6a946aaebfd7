# A/B of two Isthmus binaries on NATS 1->1 256 B (or SCEN=mqtt-pubsub, ARGS="loadtest options"): ROUNDS rounds,
# each a fresh 2-shard broker per binary and 3 runs of 1M messages after a 200k warm-up; prints
# rate, delivered and the broker's CPU (utime+stime from /proc) per message. Binaries:
# /tmp/isthmus-base and /tmp/isthmus-new (copy them there first). Run from the repo root.
# cpu_ns_per_msg assumes 1M deliveries per run; scale it for other counts.
export dir=$(mktemp -d); LOADTEST=target/release/isthmus-loadtest
. tuning/results/brokers.sh
for round in $(seq ${ROUNDS:-4}); do
for b in base new; do
  ISTHMUS=/tmp/isthmus-$b; start_isthmus $b 2 ''
  $LOADTEST nats-pubsub --addr $nats --size 256 --messages 200000 >/dev/null
  for i in 1 2 3; do
    read -r u0 s0 < <(awk '{print $14, $15}' /proc/$pid/stat)
    r=$($LOADTEST ${SCEN:-nats-pubsub} $( [ "${SCEN:-nats-pubsub}" = mqtt-pubsub ] && echo --addr $mqtt || echo --addr $nats) ${ARGS:---size 256 --messages 1000000} | sed -n 's/^json: //p' | python3 -c 'import json,sys; r=json.loads(sys.stdin.read())["results"]; print(int(r["per_s"]), r["delivered"])')
    read -r u1 s1 < <(awk '{print $14, $15}' /proc/$pid/stat)
    echo "$b $r cpu_ns_per_msg=$(( (u1-u0+s1-s0)*10000/1000 )) user=$((u1-u0)) sys=$((s1-s0))"
  done
  kill $pid; wait $pid 2>/dev/null
done; done
