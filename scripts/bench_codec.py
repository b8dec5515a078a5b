#!/usr/bin/env python
"""msgpack against JSON for the frames fan-out sends: what each costs the server and a client.

The server encodes a room's batch once per format in use and writes the same bytes to every
viewer (``gateway.hub``), so its share per delivery is the encode divided by the viewers plus
the write, which is the same syscall for either format; a client decodes every frame it gets.
This times both sides of one ``batch`` frame of N ~100-byte events (the event of
``scripts/bench_fanout.py``) with the codec the gateway uses (``livecommerce.protocol.codec``)
and the decoders a client would use (``msgpack.unpackb``; ``json.loads`` of the text), in
one process, alternating the formats per round so that noise hits both alike, and prints the
frame size and the median time per frame.

Example: ``python scripts/bench_codec.py`` (events per frame 1, 8, 24, 64; about 10 s).
Results: docs/performance.md (M2 4/7 fan-out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from livecommerce.protocol.codec import encode_batch


def event(i: int) -> dict[str, Any]:
    return {"t": "notice", "room": "bench", "ts": 1_790_000_000_000 + i, "seq": 1_790_000_000_000_001 + i,
            "d": {"text": "~s3~" + "x" * 20, "by": "bench-host", "bs": 3, "bi": i, "bt": 1_790_000_000.123456}}


def timed(fn: Any, arg: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn(arg)
    return (time.perf_counter() - t0) / n * 1e6


def run(sizes: list[int], rounds: int, seconds: float) -> list[dict[str, Any]]:
    out = []
    unpackb = msgpack.unpackb
    loads = json.loads
    for k in sizes:
        items = [event(i) for i in range(k)]
        frames = {"msgpack": encode_batch("bench", items, "msgpack"), "json": encode_batch("bench", items, "json")}
        assert unpackb(frames["msgpack"]) == loads(frames["json"])  # the same content
        n = max(50, int(20_000 / k))
        samples: dict[str, list[float]] = {f"{f}_{side}": [] for f in frames for side in ("enc", "dec")}
        deadline = time.monotonic() + seconds
        r = 0
        while r < rounds or time.monotonic() < deadline:
            for fmt in (("msgpack", "json") if r % 2 == 0 else ("json", "msgpack")):
                samples[f"{fmt}_enc"].append(timed(lambda it, f=fmt: encode_batch("bench", it, f), items, n))  # type: ignore[misc]
                dec = unpackb if fmt == "msgpack" else (lambda b: loads(b.decode()))
                samples[f"{fmt}_dec"].append(timed(dec, frames[fmt], n))
            r += 1
            if r >= rounds * 4:
                break
        row = {"events": k, "msgpack_bytes": len(frames["msgpack"]), "json_bytes": len(frames["json"])}
        row.update({key: statistics.median(v) for key, v in samples.items()})
        out.append(row)
    return out


def main() -> int:
    p = argparse.ArgumentParser(prog="bench_codec.py", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", default="1,8,24,64", help="events per batch frame, comma separated (default 1,8,24,64)")
    p.add_argument("--rounds", type=int, default=9, help="rounds per size, formats alternating (default 9)")
    p.add_argument("--seconds", type=float, default=2.0, help="at least this long per size (default 2)")
    p.add_argument("--out", default="", help="write the rows as JSON to this file")
    a = p.parse_args()
    try:
        sizes = [int(x) for x in a.events.split(",") if x.strip()]
    except ValueError:
        p.error(f"--events must be integers separated by commas, got {a.events!r}")
    if not sizes or min(sizes) < 1:
        p.error("--events needs at least one size >= 1")
    print(f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rows = run(sizes, a.rounds, a.seconds)
    print(f"{'events':>6} {'msgpack B':>10} {'JSON B':>8} {'encode µs msgpack':>18} {'JSON':>7} {'decode µs msgpack':>18} {'JSON':>7}"
          f" {'decode JSON/msgpack':>20}")
    for r in rows:
        print(f"{r['events']:>6} {r['msgpack_bytes']:>10,} {r['json_bytes']:>8,} {r['msgpack_enc']:>18.2f} {r['json_enc']:>7.2f}"
              f" {r['msgpack_dec']:>18.2f} {r['json_dec']:>7.2f} {r['json_dec'] / r['msgpack_dec']:>19.2f}x")
    ok = all(r["msgpack_enc"] <= r["json_enc"] * 1.05 and r["msgpack_dec"] <= r["json_dec"] * 1.05 for r in rows)
    print(f"goal (issue 18): msgpack at least as cheap as JSON for server (encode) and client (decode): {'met' if ok else 'not met'}")
    print(f"load average {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
