#!/usr/bin/env python3
"""Flash-sale rush: B WebSocket buyers (default 5,000) rush a sale of S units (default 1,000).

It starts one `livecommerce gateway` and one `livecommerce worker orders` on a throw-away key
prefix and SQLite file, connects the buyers from several client processes, creates a campaign
that opens two seconds later, and every buyer sends `buy` the moment `sale.started` arrives.
Reported: reservations/s over the rush, p50/p99 buy->reply time, the answers by kind, and the
correctness check (exactly S reserved, stock conserved). In the same run it measures the
ceiling: the same reserve Lua script called directly (EVALSHA, no gateway, 64 concurrent
callers) on a fresh sale, and prints the ratio (issue target: at least 25 %).

    python scripts/bench_rush.py                    # 5,000 buyers, 1,000 units
    python scripts/bench_rush.py -b 2000 -s 100 -p 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from livecommerce.auth import issue_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def client_proc(idx: int, n: int, port: int, secret: str, sale: str, q: mp.Queue) -> None:
    raise_nofile()
    asyncio.run(_clients(idx, n, port, secret, sale, q))


async def _clients(idx: int, n: int, port: int, secret: str, sale: str, q: mp.Queue) -> None:
    results: list[tuple[str, float]] = []
    connected = 0
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as http:
        sems = asyncio.Semaphore(100)

        async def buyer(i: int) -> None:
            nonlocal connected
            user = f"p{idx}b{i}"
            tok = issue_token(secret, user=user, role="viewer", now_s=int(time.time()), ttl_s=3600)
            async with sems:
                ws = await http.ws_connect(f"ws://127.0.0.1:{port}/ws?room=rush&format=json&token={tok}", max_msg_size=0, heartbeat=None)
                await ws.receive_json(timeout=60)
            connected += 1
            try:
                while True:  # wait for sale.started
                    m = await ws.receive_json(timeout=600)
                    items = m["items"] if m["t"] == "batch" else [m]
                    if any(e["t"] == "sale.started" for e in items):
                        break
                t0 = time.perf_counter()
                await ws.send_json({"t": "buy", "id": 1, "d": {"sale_id": sale, "qty": 1, "request_id": uuid.uuid4().hex[:12]}})
                while True:
                    m = await ws.receive_json(timeout=120)
                    items = m["items"] if m["t"] == "batch" else [m]
                    r = next((e for e in items if e.get("id") == 1), None)
                    if r is not None:
                        kind = "reserved" if r["t"] == "order.reserved" else r.get("d", {}).get("code", r["t"])
                        results.append((kind, time.perf_counter() - t0))
                        break
            finally:
                await ws.close()

        async def report() -> None:
            while True:
                q.put(("connected", idx, connected))
                await asyncio.sleep(0.5)

        rep = asyncio.create_task(report())
        out = await asyncio.gather(*(buyer(i) for i in range(n)), return_exceptions=True)
        rep.cancel()
        errors = [repr(e) for e in out if isinstance(e, BaseException)]
    q.put(("done", idx, {"results": results, "errors": errors[:5], "n_errors": len(errors)}))


async def raw_ceiling(redis_url: str, prefix: str, seconds: float = 5.0, callers: int = 64) -> float:
    """Reservations/s of the bare reserve script: EVALSHA from `callers` concurrent tasks."""
    from livecommerce.flash_sale import Sale
    from livecommerce.flash_sale_redis import RedisFlashSale
    from livecommerce.keys import Keys
    from livecommerce.redis_conn import connect

    redis = connect(redis_url)
    sales = RedisFlashSale(redis, Keys(prefix))
    now = int(time.time() * 1000)
    await sales.create(Sale("ceiling", "r", "p", 100, 10_000_000, 10_000_000, now - 1000, now + 3_600_000))
    await sales.start("ceiling", now)
    done = 0
    stop = time.monotonic() + seconds

    async def caller(c: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            i += 1
            await sales.reserve("ceiling", f"u{c}", 1, f"r{i}", int(time.time() * 1000), f"ceiling.{c}x{i}")
            done += 1

    t0 = time.monotonic()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    rate = done / (time.monotonic() - t0)
    await redis.aclose()
    return rate


async def main(a: argparse.Namespace) -> int:
    raise_nofile()
    prefix = "br" + uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="bench_rush_"))
    db = f"sqlite+aiosqlite:///{tmp}/rush.db"
    secret = uuid.uuid4().hex * 2
    from livecommerce.migrations import upgrade

    await upgrade(db)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LC_")},
           "LC_REDIS_URL": a.redis, "LC_KEY_PREFIX": prefix, "LC_DATABASE_URL": db, "LC_SECRET": secret,
           "LC_LOG_LEVEL": "WARNING", "LC_MAX_CONNS_PER_IP": "100000", "LC_NODE_ID": "rush-gw"}
    exe = str(Path(sys.executable).with_name("livecommerce"))
    procs = [subprocess.Popen([exe, "gateway", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),  # noqa: ASYNC220
             subprocess.Popen([exe, "worker", "orders"], env={**env, "LC_NODE_ID": "rush-w"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # noqa: ASYNC220
    base = f"http://127.0.0.1:{port}"
    ops = {"Authorization": "Bearer " + issue_token(secret, user="ops", role="ops", now_s=int(time.time()), ttl_s=3600)}
    out: dict = {"buyers": a.buyers, "stock": a.stock}
    try:
        async with aiohttp.ClientSession() as h:
            for _ in range(200):
                try:
                    if (await h.get(base + "/readyz")).status == 200:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            sale = f"rush{uuid.uuid4().hex[:6]}"
            q: mp.Queue = mp.Queue()
            per = [a.buyers // a.procs + (1 if i < a.buyers % a.procs else 0) for i in range(a.procs)]
            workers = [mp.Process(target=client_proc, args=(i, n, port, secret, sale, q)) for i, n in enumerate(per)]
            for w in workers:
                w.start()
            connected = [0] * a.procs
            t_conn = time.monotonic()
            while sum(connected) < a.buyers:
                while not q.empty():
                    kind, idx, val = q.get()
                    if kind == "connected":
                        connected[idx] = val
                print(f"\r  connecting buyers {sum(connected):,}/{a.buyers:,}", end="", flush=True)
                if time.monotonic() - t_conn > 240:
                    print("\n  giving up waiting for connections", flush=True)
                    break
                await asyncio.sleep(0.3)
            out["connect_s"] = round(time.monotonic() - t_conn, 1)
            print(f"\r  {sum(connected):,} buyers connected in {out['connect_s']} s; the sale opens in 2 s", flush=True)
            camp = {"id": sale, "room": "rush", "product_id": "p", "price": 999, "stock": a.stock, "per_user_limit": 1,
                    "starts_ms": int(time.time() * 1000) + 2000, "duration_s": 600, "payment_window_s": 600}
            r = await h.post(base + "/api/v1/campaigns", json=camp, headers=ops)
            assert r.status == 201, await r.text()
            t_rush = time.monotonic()
            results: list[tuple[str, float]] = []
            errors: list[str] = []
            finished = 0
            while finished < a.procs:
                kind, idx, val = await asyncio.get_running_loop().run_in_executor(None, q.get)
                if kind == "done":
                    finished += 1
                    results += val["results"]
                    errors += val["errors"]
                    out["client_errors"] = out.get("client_errors", 0) + val["n_errors"]
                print(f"\r  answers {len(results):,}/{a.buyers:,}", end="", flush=True)
            print()
            for w in workers:
                w.join(10)
            rush_s = time.monotonic() - t_rush - 2.0  # the sale opened 2 s after the campaign
            stats = await (await h.get(f"{base}/api/v1/sales/{sale}/stats", headers=ops)).json()
        lat = sorted(t for _, t in results)
        reserved_lat = sorted(t for k, t in results if k == "reserved")
        kinds: dict[str, int] = {}
        for k, _ in results:
            kinds[k] = kinds.get(k, 0) + 1
        pct = lambda xs, p: round(xs[min(len(xs) - 1, int(p * len(xs)))] * 1000, 1) if xs else None  # noqa: E731
        last_reserved = max(reserved_lat) if reserved_lat else 0.0
        out.update(
            answers=kinds,
            errors_sample=errors,
            reservations_per_s=round(kinds.get("reserved", 0) / last_reserved, 1) if last_reserved else 0,
            answers_per_s=round(len(results) / max(rush_s, 1e-6), 1),
            reply_ms={"p50": pct(lat, 0.5), "p99": pct(lat, 0.99)},
            stats={k: stats[k] for k in ("remaining", "reserved", "paid", "conserved")},
        )
        print("  measuring the raw EVALSHA ceiling (5 s) ...", flush=True)
        ceiling = await raw_ceiling(a.redis, prefix)
        out["raw_evalsha_reservations_per_s"] = round(ceiling, 1)
        out["ratio_to_raw"] = round(out["reservations_per_s"] / ceiling, 3) if ceiling else None
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        from livecommerce.redis_conn import connect

        r = connect(a.redis)
        async for k in r.scan_iter(match=f"{prefix}:*", count=1000):
            await r.delete(k)
        await r.aclose()
    ok = out["answers"].get("reserved", 0) == a.stock == out["stats"]["reserved"] + out["stats"]["paid"] and out["stats"]["conserved"]
    out["exactly_stock_reserved"] = ok
    print(json.dumps(out, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))  # noqa: ASYNC240
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-b", "--buyers", type=int, default=5000, help="buyers (default %(default)s)")
    ap.add_argument("-s", "--stock", type=int, default=1000, help="units on sale (default %(default)s)")
    ap.add_argument("-p", "--procs", type=int, default=2, help="client processes (default %(default)s)")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL (default %(default)s)")
    ap.add_argument("--json", help="also write the result to this file")
    sys.exit(asyncio.run(main(ap.parse_args())))
