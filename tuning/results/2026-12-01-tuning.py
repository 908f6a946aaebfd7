#!/usr/bin/env python3
"""Summarises the output of 2026-12-01-tuning.sh: per scenario and variant, the median over
rounds with the range, and the ratio of medians to the `base` variant.

    python3 tuning/results/2026-12-01-tuning.py runs.txt [ROUND_PREFIX ...]

With prefixes, only rounds whose tag starts with one of them count (2026-12-01-tuning-runs.txt
tags rounds `set1-3` and so on).
"""
import json
import re
import statistics
import sys
from collections import defaultdict


def scenario(run):
    if run["scenario"] == "connection-storm":
        return f"storm {run['connections']} x{run['concurrency']}"
    if run["scenario"] == "nats-latency":
        return f"latency {run['rate']}/s"
    return f"pubsub {run['publishers']}->{run['subscribers']}"


def main(path, prefixes):
    values = defaultdict(list)
    variants = []
    for line in open(path):
        if not line.startswith("json: "):
            continue
        # The tags the script put first; the loadtest's own JSON may carry a "round" of its own.
        tag = re.match(r'json: \{"round":"?([^,"]*)"?,"variant":"([^"]*)"', line)
        if prefixes and not any(tag.group(1).startswith(p) for p in prefixes):
            continue
        run = json.loads(line[len("json: "):])
        run["variant"] = tag.group(2)
        if "results" in run:  # the loadtest's JSON after dc530bd: parameters and results nested
            run.update(run.pop("parameters"))
            run.update(run.pop("results"))
            run["delivered_per_s"] = run["per_s"]
        if run["variant"] not in variants:
            variants.append(run["variant"])
        if run["scenario"] == "broker-memory":
            values[("broker after the runs", "RSS KiB", run["variant"])].append(run["rss_kib"])
            values[("broker after the runs", "pinned KiB", run["variant"])].append(run["pinned_kib"])
            continue
        if run["scenario"] == "connection-storm":
            values[(scenario(run), "conns/s", run["variant"])].append(run["per_s"])
            values[(scenario(run), "p99", run["variant"])].append(run["p99_us"])
            values[(scenario(run), "max", run["variant"])].append(run["max_us"])
            values[(scenario(run), "failed", run["variant"])].append(run["expected"] - run["delivered"])
            continue
        if run["scenario"] == "nats-latency":
            values[(scenario(run), "p50", run["variant"])].append(run["p50_us"])
            values[(scenario(run), "p99", run["variant"])].append(run["p99_us"])
            values[(scenario(run), "p99.9", run["variant"])].append(run["p999_us"])
        else:
            lost = run["expected"] - run["delivered"]
            values[(scenario(run), "msgs/s", run["variant"])].append(run["delivered_per_s"])
            if lost:
                values[(scenario(run), "lost", run["variant"])].append(lost)
    rows = sorted({(s, m) for s, m, _ in values}, key=lambda r: (r[0], r[1]))
    print("| scenario | figure | " + " | ".join(variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    for s, m in rows:
        base = values.get((s, m, "base"))
        cells = []
        for v in variants:
            xs = values.get((s, m, v))
            if not xs:
                cells.append("-")
                continue
            median = statistics.median(xs)
            cell = f"{fmt(median, m)} ({fmt(min(xs), m)}-{fmt(max(xs), m)})"
            if base and v != "base" and m != "lost":
                cell += f" {median / statistics.median(base):.2f}x"
            cells.append(cell)
        print(f"| {s} | {m} | " + " | ".join(cells) + " |")
    counts = {v: max(len(values.get((s, m, v), [])) for s, m in rows) for v in variants}
    print(f"\nrounds per variant: {counts}")


def fmt(x, figure):
    if figure == "msgs/s":
        return f"{x / 1e6:.2f}M"
    if figure == "conns/s":
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
