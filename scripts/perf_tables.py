#!/usr/bin/env python
"""Print the Markdown tables of docs/performance.md from the benchmarks' JSON results.

``python scripts/perf_tables.py docs/img/bench_fanout.json [docs/img/bench_conns.json ...]``
(the kind of each file is read from its content).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def fanout(r: dict[str, Any]) -> None:
    c, m = r["config"], r["machine"]
    print(f"Run {r['date']}: `{r['command']}`; {c['clients']:,} clients, {c['procs']} load processes, "
          f"{c['duration']:g} s per step, publish via {c['lc_publish']}; load average "
          f"{m['loadavg_start'][0]:.1f} -> {m.get('loadavg_end', [0])[0]:.1f}; {r.get('elapsed_s', '?')} s.\n")
    print("| server | msg/s offered | published/s | deliveries/s | p50 ms | p95 ms | p99 ms | loss | frames/s | "
          "server CPU % | of it sys | CPU µs/delivery | load-gen CPU % | other CPU % |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for res in r["results"]:
        for s in res["steps"]:
            sys_share = s["server_sys_s"] / s["server_cpu_s"] if s["server_cpu_s"] else 0
            print(f"| {res['server']} | {s['rate']:g} | {s['achieved_rate']:g} | {s['deliveries_s']:,.0f} | "
                  f"{f(s['p50_ms'], '.0f')} | {f(s['p95_ms'], '.0f')} | {f(s['p99_ms'], '.0f')} | {s['loss']:,} | "
                  f"{s['frames_s']:,.0f} | {s['server_cpu_pct']:.0f} | {sys_share:.0%} | "
                  f"{f(s['cpu_us_per_delivery'], '.2f')} | {s['loadgen_cpu_pct']:.0f} | {s['other_cpu_pct']:.0f} |")
    print()
    names = [res["server"] for res in r["results"]]
    print("| | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    rows = [
        ("best rate with p99 < 100 ms, no loss (msg/s)", "best_rate_p99_lt_100ms", "g"),
        ("deliveries/s there", "deliveries_s_at_best", ",.0f"),
        ("max deliveries/s", "max_deliveries_s", ",.0f"),
        ("p50 / p99 there (ms)", None, None),
        ("server CPU µs per delivery there", "cpu_us_per_delivery_at_max", ".2f"),
        ("server RSS per connection (KiB)", "rss_per_conn_kib", ".1f"),
    ]
    for label, key, fmt in rows:
        if key is None:
            cells = [f"{f(res['summary']['p50_ms_at_max'], '.0f')} / {f(res['summary']['p99_ms_at_max'], '.0f')}"
                     for res in r["results"]]
        else:
            cells = [f(res["summary"][key], fmt) for res in r["results"]]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if r.get("ratios"):
        print()
        for peer, rt in r["ratios"].items():
            print(f"- livecommerce vs {peer}: max deliveries/s {f(rt['max_deliveries'], '.2f')}x; deliveries/s at "
                  f"equal-or-better p99 {f(rt['deliveries_at_equal_or_better_p99'], '.2f')}x; CPU per delivery "
                  f"{peer}/livecommerce {f(rt['cpu_per_delivery_peer_over_lc'], '.2f')}x")
    print()


def conns(r: dict[str, Any]) -> None:
    m = r["machine"]
    print(f"Run {r['date']}: `{r['command']}`; load average {m['loadavg_start'][0]:.1f} -> "
          f"{m.get('loadavg_end', [0])[0]:.1f}; {r.get('elapsed_s', '?')} s.\n")
    print("| server | connections | connect time (s) | connects/s | RSS before (MiB) | RSS after (MiB) | RSS KiB/conn | USS KiB/conn | traced KiB/conn |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for x in r["results"]:
        if x.get("error"):
            print(f"| {x['server']} (tracemalloc) | failed: {x['error']} | | | | | | | |")
            continue
        traced = f"{x['traced_per_conn_bytes'] / 1024:.1f}" if x.get("traced_per_conn_bytes") else "-"
        rss = "(inflated by tracing)" if x.get("tracemalloc") else f"{x['rss_per_conn_kib']:.1f}"
        uss = "" if x.get("tracemalloc") else f"{x['uss_per_conn_kib']:.1f}"
        print(f"| {x['server']}{' (tracemalloc)' if x.get('tracemalloc') else ''} | {x['ready']:,} | {x['connect_s']:.1f} | "
              f"{f(x['connect_per_s'], ',.0f')} | {x['rss_before'] / 2**20:.1f} | {x['rss_after'] / 2**20:.1f} | {rss} | {uss} | {traced} |")
    print()
    for x in r["results"]:
        if not x.get("tracemalloc") or x.get("error"):
            continue
        print(f"Top allocation sites per connection, {x['server']} ({x['ready']:,} connections):\n")
        print("| bytes/conn | blocks/conn | where |")
        print("| ---: | ---: | --- |")
        for line in x["top_lines"][:20]:
            where = line["where"].split("site-packages/")[-1].split("/work/main/")[-1].split("python3.11/")[-1]
            print(f"| {line['per_conn']:.0f} | {line['count'] / max(1, x['ready']):.1f} | `{where}` |")
        print()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="JSON results of bench_fanout.py or bench_conns.py")
    args = p.parse_args()
    for path in args.files:
        r = json.loads(Path(path).read_text())
        print(f"<!-- {path} -->")
        if r["results"] and "steps" in r["results"][0]:
            fanout(r)
        else:
            conns(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
