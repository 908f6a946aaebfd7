# Medians, ratios and every run of 2026-12-01-auth-overhead.sh: summarize RUNS.jsonl [MONITOR.log] [--clean]
import json, statistics, sys
runs=[json.loads(l) for l in open(sys.argv[1])]
# Monitor samples (every 2 s): times when a cargo or pytest process of the other engineer ran.
busy=[]
if len(sys.argv)>2:
    for line in open(sys.argv[2]):
        t,_,rest=line.partition(' ')
        if rest.strip(): busy.append(float(t))
for r in runs:
    r["contended"]=any(r.get("t0",0)-2<=t<=r.get("t1",0)+2 for t in busy) if "t0" in r else None
only_clean = "--clean" in sys.argv
names=["nats-pubsub","mqtt-pubsub","storm-mqtt","storm-nats"]
variants=["open","allow-all","deny-rules"]
def val(r): return r["run"]["results"]["per_s"] if r["run"] else None
print("| scenario | unit | open | auth allow-all | auth deny-rules | allow-all / open | deny-rules / open |")
print("|---|---|---|---|---|---|---|")
med={}
for n in names:
    row=[]
    for v in variants:
        xs=[val(r) for r in runs if r["name"]==n and r["variant"]==v and r["rc"]==0 and val(r) and not (only_clean and r["contended"])]
        med[n,v]=statistics.median(xs) if xs else None
    unit="msgs/s" if "pubsub" in n else "conns/s"
    f=(lambda x: f"{x/1e3:,.0f} k" if x else "-") if "pubsub" in n else (lambda x: f"{x/1e3:,.1f} k" if x else "-")
    print(f"| {n} | {unit} | {f(med[n,'open'])} | {f(med[n,'allow-all'])} | {f(med[n,'deny-rules'])} | {med[n,'allow-all']/med[n,'open']:.2f} | {med[n,'deny-rules']/med[n,'open']:.2f} |")
print()
rounds=sorted({r["round"] for r in runs})
print("Every run (per second; storms also p50/p99 handshake µs):")
print()
print("| scenario | variant | " + " | ".join(f"r{i}" for i in rounds) + " | min-max spread |")
print("|---|---|" + "---|"*len(rounds) + "---|")
for n in names:
    for v in variants:
        cells=[]; xs=[]
        for i in rounds:
            rs=[r for r in runs if r["name"]==n and r["variant"]==v and r["round"]==i]
            if not rs: cells.append("-"); continue
            r=rs[0]
            if r["rc"]!=0 or not r["run"]: cells.append(f"FAIL rc={r['rc']}"); continue
            x=val(r); xs.append(x); res=r["run"]["results"]
            c=f"{x/1e3:,.0f} k" if "pubsub" in n else f"{x/1e3:,.1f} k"
            if "p50_us" in res: c+=f" ({res['p50_us']}/{res['p99_us']})"
            if r["contended"]: c+=" *"
            cells.append(c)
        spread=f"{max(xs)/min(xs):.2f}x" if xs else "-"
        print(f"| {n} | {v} | " + " | ".join(cells) + f" | {spread} |")
