#!/usr/bin/env python3
"""Soak benchmark: does anything grow forever? (docs/retention.md)

Starts one `livecommerce gateway` and one process running every worker (as `livecommerce
dev` does, retention included) on a throw-away key prefix and SQLite file, then for N
minutes keeps a live-commerce day going at a small, steady rate:

* rooms come and go: a host creates a room, goes live, starts flash sales one after the
  other (short pay window), drops coupons, pins, announces, and ends the room after
  --room-life-s; a new room starts every --room-every-s;
* viewers churn: --conns-per-s new WebSocket connections a second, mostly new users (some
  come back), each joins a live room, tops up, comments, likes, sends a gift, claims a
  coupon, buys in the running sale (half of the buyers pay, the rest time out) and leaves
  after a few seconds.

Every --sample-s it samples: the RSS of the gateway and of the workers process, the keys
under the prefix (total, without a TTL, and per family of livecommerce/retention.py), their
memory (MEMORY USAGE) and Redis' used_memory, the durable log's entries, and the SQL
database and WAL sizes. After the load it keeps sampling for --idle-s (does RSS come back
when idle?). It writes soak.csv (one row per sample), soak_families.csv (keys per family per
sample), soak.png (the curves) and soak.json (summary) into --out, and says for each curve
whether it flattens: the growth over the last half of the load, per minute and as a share of
the value. RSS, keys without TTL, the log and the WAL must flatten; all keys and their
memory are bounded by key lifetimes (some are days); SQL grows with the orders it records.

Retention lifetimes are days by default, longer than a soak; --retention-s (default 60) sets
every LC_*_RETENTION / TTL / LC_LOG_RETAIN_S to that many seconds (and the retention worker
to every 10 s), so the curves can flatten within minutes. --retention-s 0 keeps the
production defaults (then only "keys without TTL" is expected to flatten).

    python scripts/soak.py --minutes 15                 # the issue's run
    python scripts/soak.py --minutes 2 --idle-s 30      # a quick check
    python scripts/soak.py --minutes 5 --tracemalloc    # + the gateway's heap growth (slower)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from livecommerce.retention import FAMILIES  # noqa: E402

EXPECTED_CODES = {"sold_out", "limit_reached", "ended", "not_started", "room_ended", "insufficient_funds", "already_claimed",
                  "expired", "not_found", "rate_limited", "sale_ended"}


# ------------------------------------------------------------------ the workers process
def run_workers() -> None:
    """`--run-workers`: every worker of workers/registry.py in one event loop (as dev)."""
    import importlib

    from livecommerce.config import Settings
    from livecommerce.logging_setup import configure

    settings = Settings.from_env()
    configure(settings.log_level, json_lines=settings.log_json)
    workers = importlib.import_module("workers.registry").WORKERS

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        fns = []
        for spec in workers.values():
            mod, _, fn = spec.partition(":")
            fns.append(getattr(importlib.import_module(mod), fn))
        await asyncio.gather(*(fn(settings, stop) for fn in fns), return_exceptions=True)

    asyncio.run(main())


# ------------------------------------------------------------------ sampling
def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def file_mib(path: Path) -> float:
    try:
        return path.stat().st_size / 2**20
    except OSError:
        return 0.0


class Sampler:
    def __init__(self, redis: Any, prefix: str, db: Path, procs: dict[str, subprocess.Popen[bytes]]) -> None:
        from livecommerce.retention import family_of

        self.redis = redis
        self.prefix = prefix
        self.db = db
        self.procs = procs
        self.family_of = family_of
        self.rows: list[dict[str, Any]] = []
        self.families: list[dict[str, Any]] = []

    async def sample(self, t_s: float, phase: str, stats: dict[str, Any]) -> dict[str, Any]:
        names: list[bytes] = [k async for k in self.redis.scan_iter(match=f"{self.prefix}:*", count=2000)]
        fams: Counter[str] = Counter()
        no_ttl: Counter[str] = Counter()
        mem = 0
        log_entries = 0
        for i in range(0, len(names), 500):
            chunk = names[i : i + 500]
            pipe = self.redis.pipeline(transaction=False)
            for k in chunk:
                pipe.pttl(k)
                pipe.memory_usage(k, samples=5)
            got = await pipe.execute()
            streams = []
            for j, k in enumerate(chunk):
                name = k.decode()
                fam = self.family_of(name, self.prefix)
                fams[fam] += 1
                ttl, size = got[2 * j], got[2 * j + 1]
                if ttl == -1:
                    no_ttl[fam] += 1
                mem += int(size or 0)
                if fam == "log stream":
                    streams.append(k)
            if streams:
                pipe = self.redis.pipeline(transaction=False)
                for k in streams:
                    pipe.xlen(k)
                log_entries += sum(int(x) for x in await pipe.execute())
        info = await self.redis.info("memory")
        row = {
            "t_s": round(t_s, 1), "phase": phase,
            "gateway_rss_mib": round(rss_mib(self.procs["gateway"].pid), 1),
            "workers_rss_mib": round(rss_mib(self.procs["workers"].pid), 1),
            "keys": len(names), "keys_no_ttl": sum(no_ttl.values()),
            "prefix_mem_mib": round(mem / 2**20, 2), "redis_used_mib": round(int(info["used_memory"]) / 2**20, 1),
            "log_entries": log_entries,
            "sql_mib": round(file_mib(self.db), 2), "wal_mib": round(file_mib(self.db.with_name(self.db.name + "-wal")), 2),
            "conns": stats["conns"], "errors": stats["errors"], "rooms": stats["rooms"], "sales": stats["sales"],
        }
        self.rows.append(row)
        for fam in sorted(fams):
            self.families.append({"t_s": row["t_s"], "family": fam, "keys": fams[fam], "no_ttl": no_ttl[fam]})
        return row


# ------------------------------------------------------------------ the load
class Load:
    """Rooms, sales and churned viewers against one gateway (aiohttp clients)."""

    def __init__(self, base: str, secret: str, run: str, a: argparse.Namespace) -> None:
        self.base = base
        self.ws = base.replace("http", "ws", 1) + "/ws"
        self.secret = secret
        self.run = run
        self.a = a
        self.ops = {"Authorization": "Bearer " + self.mint("ops1", "ops")}
        self.live: dict[str, dict[str, Any]] = {}  # room -> {"sale": id|None, "drop": id|None}
        self.stats: dict[str, Any] = {"conns": 0, "errors": 0, "rooms": 0, "sales": 0, "buys": 0, "paid": 0}
        self.error_samples: list[str] = []
        self.users_seen: list[str] = []
        self.n_users = 0
        self.rng = random.Random(7)
        self.tasks: set[asyncio.Task[Any]] = set()

    def mint(self, user: str, role: str, rooms: tuple[str, ...] = ()) -> str:
        from livecommerce.auth import issue_token

        return issue_token(self.secret, user=user, role=role, rooms=rooms, now_s=int(time.time()), ttl_s=24 * 3600)

    def error(self, what: str) -> None:
        self.stats["errors"] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(what[:300])

    async def post(self, http: Any, path: str, body: dict[str, Any], headers: dict[str, str], ok: tuple[int, ...] = ()) -> Any:
        async with http.post(self.base + path, json=body, headers=headers) as r:
            text = await r.text()
            if r.status >= 300 and r.status not in ok:
                self.error(f"POST {path} -> {r.status} {text[:200]}")
                return None
            return json.loads(text) if text else {}

    # ---- rooms and sales
    async def room_life(self, http: Any, n: int, stop: asyncio.Event) -> None:
        room = f"{self.run}r{n}"
        host = f"{self.run}h{n % 3}"
        auth = {"Authorization": "Bearer " + self.mint(host, "host", (room,))}
        if await self.post(http, "/api/v1/rooms", {"id": room, "title": f"soak {n}"}, auth) is None:
            return
        await self.post(http, f"/api/v1/rooms/{room}/live", {}, auth)
        self.stats["rooms"] += 1
        state: dict[str, Any] = {"sale": None, "drop": None}
        self.live[room] = state
        end_at = time.monotonic() + self.a.room_life_s
        k = 0
        try:
            while time.monotonic() < end_at and not stop.is_set():
                k += 1
                sid = f"{room}s{k}"
                now_ms = int(time.time() * 1000)
                body = {"id": sid, "room": room, "product_id": "p1", "product_name": "Soak item", "price": 100, "stock": 20,
                        "per_user_limit": 2, "starts_ms": now_ms, "duration_s": self.a.sale_s, "payment_window_s": 8}
                if await self.post(http, "/api/v1/campaigns", body, auth) is not None:
                    self.stats["sales"] += 1
                    state["sale"] = sid
                drop = await self.post(http, f"/api/v1/rooms/{room}/coupons",
                                       {"kind": "full_reduction", "value": 10, "quantity": 50, "expires_in_s": 30}, auth)
                if drop:
                    state["drop"] = drop.get("drop_id")
                await self.post(http, f"/api/v1/rooms/{room}/pin", {"product_id": "p1"}, auth)
                await self.post(http, f"/api/v1/rooms/{room}/announce", {"text": f"sale {k}"}, auth)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.a.sale_s + 5)
        finally:
            self.live.pop(room, None)
            await self.post(http, f"/api/v1/rooms/{room}/end", {}, auth)

    async def rooms(self, http: Any, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            self.spawn(self.room_life(http, n, stop))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.a.room_every_s)

    # ---- viewers
    def next_user(self) -> tuple[str, bool]:
        if self.users_seen and self.rng.random() < 0.3:
            return self.rng.choice(self.users_seen[-500:]), False
        self.n_users += 1
        u = f"{self.run}v{self.n_users}"
        self.users_seen.append(u)
        return u, True

    async def viewer(self, http: Any) -> None:
        if not self.live:
            return
        room = self.rng.choice(list(self.live))
        state = self.live.get(room, {})
        user, new = self.next_user()
        tok = self.mint(user, "viewer")
        auth = {"Authorization": f"Bearer {tok}"}
        try:
            if new:
                await self.post(http, f"/api/v1/wallets/{user}/topup", {"amount": 1000, "idempotency_key": f"{user}-t"}, self.ops)
            async with http.ws_connect(f"{self.ws}?room={room}&format=json&token={tok}", heartbeat=None) as ws:
                self.stats["conns"] += 1
                first = await ws.receive_json(timeout=10)
                if first.get("t") != "welcome":
                    self.error(f"first frame {str(first)[:120]}")
                    return
                cmds: list[tuple[str, dict[str, Any]]] = [("comment", {"text": "hello"}), ("like", {"count": 2}),
                                                         ("gift", {"gift_id": "rose", "count": 1})]
                if state.get("drop"):
                    cmds.append(("coupon.claim", {"drop_id": state["drop"]}))
                if state.get("sale"):
                    cmds.append(("buy", {"sale_id": state["sale"], "qty": 1, "request_id": uuid.uuid4().hex[:12]}))
                for i, (t, d) in enumerate(cmds, 1):
                    await ws.send_json({"t": t, "id": i, "d": d})
                pending = set(range(1, len(cmds) + 1))
                deadline = time.monotonic() + 10
                order = None
                while pending and time.monotonic() < deadline:
                    m = await ws.receive_json(timeout=max(0.1, deadline - time.monotonic()))
                    for e in m.get("items", [m]) if m.get("t") == "batch" else [m]:
                        if e.get("id") not in pending:
                            continue
                        pending.discard(e["id"])
                        if e.get("t") == "error":
                            code = (e.get("d") or {}).get("code", "")
                            if code not in EXPECTED_CODES:
                                self.error(f"{cmds[e['id'] - 1][0]} -> {code}")
                        elif e.get("t") == "order.reserved":
                            self.stats["buys"] += 1
                            order = (e.get("d") or {}).get("order_id")
                if pending:
                    self.error(f"no reply to {sorted(pending)}")
                if order and self.rng.random() < 0.5:
                    if await self.post(http, f"/api/v1/orders/{order}/pay", {}, auth, ok=(409,)) is not None:
                        self.stats["paid"] += 1
                await asyncio.sleep(self.rng.uniform(2, self.a.stay_s))
        except (TimeoutError, OSError) as exc:
            self.error(f"viewer {type(exc).__name__}: {exc}")
        except Exception as exc:  # aiohttp's own errors, a closed socket ...
            self.error(f"viewer {type(exc).__name__}: {exc}")

    async def viewers(self, http: Any, stop: asyncio.Event) -> None:
        gap = 1.0 / self.a.conns_per_s
        while not stop.is_set():
            self.spawn(self.viewer(http))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), gap * self.rng.uniform(0.5, 1.5))

    def spawn(self, coro: Any) -> None:
        t = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)


# ------------------------------------------------------------------ verdict and plot
def slope_per_min(points: list[tuple[float, float]]) -> float:
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in points) / den * 60


SERIES = ("gateway_rss_mib", "workers_rss_mib", "keys", "keys_no_ttl", "prefix_mem_mib", "log_entries", "sql_mib", "wal_mib")
# what a series may do: "flat" must flatten within the run; "ttl" is bounded by key lifetimes
# (some are days long: per-user comment counters, coupon indexes, idempotency answers), so
# it flattens only after them; "records" is SQL, the system of record, which grows with orders
KIND = {"gateway_rss_mib": "flat", "workers_rss_mib": "flat", "keys": "ttl", "keys_no_ttl": "flat", "prefix_mem_mib": "ttl",
        "log_entries": "flat", "sql_mib": "records", "wal_mib": "flat"}


def verdict(rows: list[dict[str, Any]], load_s: float) -> dict[str, Any]:
    """Per series: first/last values of the load, slope over the load's last half (per
    minute), growth over that half as a share of the value, and flat = that growth is under
    5 % (or under an absolute floor)."""
    load = [r for r in rows if r["phase"] == "load"]
    half = [r for r in load if r["t_s"] >= load_s / 2]
    floors = {"gateway_rss_mib": 2.0, "workers_rss_mib": 2.0, "keys": 50, "keys_no_ttl": 10, "prefix_mem_mib": 0.5,
              "log_entries": 200, "sql_mib": 0.5, "wal_mib": 2.0}
    out: dict[str, Any] = {}
    for s in SERIES:
        pts = [(float(r["t_s"]), float(r[s])) for r in half]
        sl = slope_per_min(pts)
        span_min = (pts[-1][0] - pts[0][0]) / 60 if len(pts) > 1 else 0.0
        grew = sl * span_min
        ref = max(abs(pts[-1][1]) if pts else 0.0, 1e-9)
        idle = [r for r in rows if r["phase"] == "idle"]
        out[s] = {"start": load[0][s] if load else None, "end_of_load": load[-1][s] if load else None,
                  "end_idle": idle[-1][s] if idle else None, "slope_last_half_per_min": round(sl, 3),
                  "growth_last_half": round(grew, 2), "growth_share": round(grew / ref, 3),
                  "flat": grew <= floors[s] or grew / ref < 0.05, "kind": KIND[s]}
    return out


def plot(rows: list[dict[str, Any]], path: Path, load_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = [
        (axes[0][0], "RSS (MiB)", ("gateway_rss_mib", "workers_rss_mib")),
        (axes[0][1], "Redis keys under the prefix", ("keys", "keys_no_ttl")),
        (axes[1][0], "Redis memory (MiB) / log entries (k)", ("prefix_mem_mib", "log_entries")),
        (axes[1][1], "SQLite (MiB)", ("sql_mib", "wal_mib")),
    ]
    for ax, title, series in panels:
        for s in series:
            ys = [r[s] / 1000 if s == "log_entries" else r[s] for r in rows]
            ax.plot(t, ys, label=s)
        ax.axvline(load_s / 60, color="grey", linestyle=":", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("minutes")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("livecommerce soak: load until the dotted line, idle after")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


# ------------------------------------------------------------------ main
def start(a: argparse.Namespace, out: Path, env: dict[str, str]) -> tuple[dict[str, subprocess.Popen[bytes]], list[Any]]:
    """The gateway (under tracemalloc with --tracemalloc) and the workers process."""
    out.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("livecommerce"))
    gw_cmd = [exe, "gateway", "--port", str(a.port)]
    if a.tracemalloc:
        gw_cmd = [sys.executable, str(REPO / "scripts" / "_tracemalloc_run.py"), str(out / "gateway_heap.json"),
                  "-m", "livecommerce.cli", "gateway", "--port", str(a.port)]
    logs = [open(out / f"{n}.log", "wb") for n in ("gateway", "workers")]
    procs = {
        "gateway": subprocess.Popen(gw_cmd, env={**env, "LC_NODE_ID": "soak-gw"}, stdout=logs[0], stderr=subprocess.STDOUT,
                                    cwd=str(REPO)),
        "workers": subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--run-workers"],
                                    env={**env, "LC_NODE_ID": "soak-w"}, stdout=logs[1], stderr=subprocess.STDOUT, cwd=str(REPO)),
    }
    return procs, logs


def stop_all(procs: dict[str, subprocess.Popen[bytes]], logs: list[Any]) -> None:
    for p in procs.values():
        p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
    for f in logs:
        f.close()


def sql_rows(db: Path) -> dict[str, int]:
    """Rows per SQLite table at the end (what SQL grows with)."""
    import sqlite3

    out: dict[str, int] = {}
    with contextlib.closing(sqlite3.connect(db)) as c:
        for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
            out[name] = int(c.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0])
    return {k: v for k, v in sorted(out.items(), key=lambda kv: -kv[1]) if v}


def report(a: argparse.Namespace, out: Path, sampler: Sampler, load: Load, summary: dict[str, Any]) -> int:
    """Write the CSVs, the plot and the summary; print the verdict. 0 when every curve is
    flat and nothing failed."""
    rows = sampler.rows
    if not rows:
        print("no samples", file=sys.stderr)
        return 1
    load_s = a.minutes * 60
    with open(out / "soak.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(out / "soak_families.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["t_s", "family", "keys", "no_ttl"])
        w.writeheader()
        w.writerows(sampler.families)
    plot(rows, out / "soak.png", load_s)
    last_t = max(r["t_s"] for r in rows if r["phase"] == "load")
    fams_end = {r["family"]: (r["keys"], r["no_ttl"]) for r in sampler.families if r["t_s"] == last_t}
    logged = {n: sum(1 for line in (out / f"{n}.log").read_text(errors="replace").splitlines()
                     if '"level": "error"' in line or '"level": "critical"' in line) for n in ("gateway", "workers")}
    summary.update(stats=load.stats, error_samples=load.error_samples, logged_errors=logged,
                   curves=verdict(rows, load_s), families_end_of_load=fams_end, sql_rows=sql_rows(out / "soak.db"))
    if a.tracemalloc and (out / "gateway_heap.json").exists():
        heap = json.loads((out / "gateway_heap.json").read_text())
        summary["gateway_heap_growth"] = {"traced_first_mib": round(heap["traced_first"] / 2**20, 2),
                                          "traced_now_mib": round(heap["traced_now"] / 2**20, 2), "top": heap["lines"][:15]}
    (out / "soak.json").write_text(json.dumps(summary, indent=2))
    half_t = min((r["t_s"] for r in rows if r["phase"] == "load" and r["t_s"] >= load_s / 2), default=last_t)
    fams_half = {r["family"]: r["no_ttl"] for r in sampler.families if r["t_s"] == half_t}
    summary["no_ttl_growth_last_half"] = {f: nt - fams_half.get(f, 0) for f, (_, nt) in fams_end.items() if nt - fams_half.get(f, 0)}
    rules = {f.name: f.rule for f in FAMILIES}
    print("\nfamilies at the end of the load (keys, without TTL, growth of those without TTL over the last half, rule):")
    for fam, (n, nt) in sorted(fams_end.items(), key=lambda x: -x[1][0]):
        print(f"  {fam:22} {n:7d} {nt:7d} {nt - fams_half.get(fam, 0):+6d}  {rules.get(fam, '?')}")
    print("\ncurves over the load's last half (flat: grew < 5 % or under a floor; kind: flat = must flatten, "
          "ttl = bounded by key lifetimes, records = SQL):")
    for s, v in summary["curves"].items():
        print(f"  {s:17} start {v['start']!s:>9} end {v['end_of_load']!s:>9} idle {v['end_idle']!s:>9}  "
              f"{v['slope_last_half_per_min']:+9.2f}/min  {'flat' if v['flat'] else 'GROWS':5}  ({v['kind']})")
    if "gateway_heap_growth" in summary:
        g = summary["gateway_heap_growth"]
        print(f"\ngateway heap (tracemalloc) {g['traced_first_mib']} -> {g['traced_now_mib']} MiB; top growth:")
        for line in g["top"][:8]:
            print(f"  {line['size'] / 1024:9.1f} KiB {line['count']:+7d} blocks  {line['where']}")
    print(f"\nSQL rows at the end: {summary['sql_rows']}")
    print(f"load: {load.stats}; logged errors {logged}")
    print(f"wrote {out / 'soak.csv'}, {out / 'soak_families.csv'}, {out / 'soak.png'}, {out / 'soak.json'}")
    must = [v["flat"] for v in summary["curves"].values() if v["kind"] == "flat"]
    return 0 if all(must) and load.stats["errors"] == 0 else 1


async def main(a: argparse.Namespace, out: Path) -> int:
    import aiohttp

    from livecommerce.migrations import upgrade
    from livecommerce.redis_conn import connect

    run = "k" + uuid.uuid4().hex[:6]
    prefix = "soak" + uuid.uuid4().hex[:8]
    db = out / "soak.db"
    url = f"sqlite+aiosqlite:///{db}"
    await upgrade(url)
    secret = uuid.uuid4().hex * 2
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LC_")},
           "LC_REDIS_URL": a.redis, "LC_KEY_PREFIX": prefix, "LC_DATABASE_URL": url, "LC_SECRET": secret,
           "LC_LOG_LEVEL": "WARNING", "LC_TEST_COINS": "1", "LC_DEV_PAY": "1", "LC_DATA_DIR": str(out), "LC_MAX_CONNS_PER_IP": "100000"}
    if a.retention_s > 0:
        r = str(a.retention_s)
        env.update(LC_SALE_RETENTION_S=r, LC_ROOM_RETENTION_S=r, LC_USER_CACHE_TTL_S=r, LC_LOG_RETAIN_S=r,
                   LC_HISTORY_TTL_S=r, LC_RETENTION_INTERVAL_S="10")
    procs, logs = start(a, out, env)
    base = f"http://127.0.0.1:{a.port}"
    redis = connect(a.redis)
    sampler = Sampler(redis, prefix, db, procs)
    load = Load(base, secret, run, a)
    load_s = a.minutes * 60
    summary: dict[str, Any] = {"minutes": a.minutes, "idle_s": a.idle_s, "conns_per_s": a.conns_per_s,
                               "retention_s": a.retention_s, "prefix": prefix, "out": str(out)}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            for _ in range(300):
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(base + "/readyz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            else:
                raise SystemExit(f"the gateway did not get ready: see {out / 'gateway.log'}")
            await load.post(http, "/api/v1/products", {"id": "p1", "name": "Soak item", "price": 100}, load.ops, ok=(409,))
            stop = asyncio.Event()
            t0 = time.monotonic()
            load.spawn(load.rooms(http, stop))
            load.spawn(load.viewers(http, stop))
            heap_marked = False
            print(f"soak: {a.minutes} min of load then {a.idle_s} s idle; sampling every {a.sample_s} s into {out}", flush=True)
            while True:
                t = time.monotonic() - t0
                phase = "load" if t < load_s else "idle"
                if phase == "idle" and not stop.is_set():
                    stop.set()
                if t >= load_s + a.idle_s:
                    break
                if a.tracemalloc and not heap_marked and t >= min(60.0, load_s / 4):
                    procs["gateway"].send_signal(signal.SIGUSR1)  # the heap's first snapshot, after warm-up
                    heap_marked = True
                row = await sampler.sample(t, phase, load.stats)
                print(f"  {t / 60:5.1f} min {phase:4}  gw {row['gateway_rss_mib']:6.1f} MiB  workers {row['workers_rss_mib']:6.1f} MiB  "
                      f"keys {row['keys']:6d} (no TTL {row['keys_no_ttl']:5d})  mem {row['prefix_mem_mib']:6.2f} MiB  "
                      f"log {row['log_entries']:6d}  sql {row['sql_mib']:5.2f}+{row['wal_mib']:5.2f} MiB  "
                      f"conns {row['conns']:5d} rooms {row['rooms']:3d} sales {row['sales']:3d} errors {row['errors']}",
                      flush=True)
                await asyncio.sleep(max(0.0, a.sample_s - (time.monotonic() - t0 - t)))
            stop.set()
            for task in list(load.tasks):
                task.cancel()
            await asyncio.gather(*load.tasks, return_exceptions=True)
            if a.tracemalloc:
                procs["gateway"].send_signal(signal.SIGUSR1)
                await asyncio.sleep(3)
    finally:
        stop_all(procs, logs)
        if not a.keep_keys:
            async for k in redis.scan_iter(match=f"{prefix}:*", count=1000):
                await redis.delete(k)
        await redis.aclose()
    return report(a, out, sampler, load, summary)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=15.0, help="minutes of load (default %(default)s)")
    p.add_argument("--idle-s", type=float, default=60.0, help="seconds of sampling after the load (default %(default)s)")
    p.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples (default %(default)s)")
    p.add_argument("--conns-per-s", type=float, default=0.8, help="new viewer connections per second (default %(default)s)")
    p.add_argument("--stay-s", type=float, default=12.0, help="a viewer stays 2 .. this many seconds (default %(default)s)")
    p.add_argument("--room-every-s", type=float, default=60.0, help="a new room every ... seconds (default %(default)s)")
    p.add_argument("--room-life-s", type=float, default=150.0, help="a room is live this long (default %(default)s)")
    p.add_argument("--sale-s", type=int, default=20, help="each flash sale lasts this long (default %(default)s)")
    p.add_argument("--retention-s", type=int, default=60,
                   help="every retention lifetime in seconds, so curves can flatten in minutes; 0: production defaults "
                        "(default %(default)s)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL (default %(default)s)")
    p.add_argument("--port", type=int, default=0, help="gateway port (default: a free one)")
    p.add_argument("--out", help="output directory (default: a new temporary one)")
    p.add_argument("--tracemalloc", action="store_true", help="run the gateway under tracemalloc and report its heap growth")
    p.add_argument("--keep-keys", action="store_true", help="leave the run's Redis keys behind (default: deleted)")
    p.add_argument("--run-workers", action="store_true", help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    args = build_parser().parse_args()
    if args.run_workers:
        run_workers()
        sys.exit(0)
    if not args.port:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            args.port = int(s.getsockname()[1])
    sys.exit(asyncio.run(main(args, Path(args.out or tempfile.mkdtemp(prefix="soak_")))))
