#!/usr/bin/env python3
"""Gift throughput end to end: WebSocket `gift` -> atomic Lua wallet debit -> log -> wallet
ledger and points workers, with the balance invariant checked at the end.

It starts one `livecommerce gateway` process on a free port (LC_REDIS_URL, a throw-away
SQLite database, its own key prefix), tops up C viewers, then C WebSocket clients keep W gifts
in flight each for S seconds. It reports gifts/s acked by the gateway and the send->ack
latency, then drains the wallet and points workers in this process and reports their events/s,
and checks that every wallet's Redis balance equals the sum of its SQL ledger rows.

    python scripts/bench_gifts.py                 # 50 clients x 4 in flight, 15 s
    python scripts/bench_gifts.py -c 100 -w 8 -s 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import websockets

from livecommerce.auth import issue_token
from livecommerce.config import Settings
from livecommerce.keys import Keys
from livecommerce.log_open import open_log
from livecommerce.migrations import upgrade
from livecommerce.points import Rules
from livecommerce.redis_conn import connect
from livecommerce.store_sql import SqlStore
from livecommerce.wallet_redis import RedisWallet
from workers.points import PointsWorker
from workers.points import drain as points_drain
from workers.wallet import drain as wallet_drain


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def main(a: argparse.Namespace) -> int:
    prefix = "bg" + uuid.uuid4().hex[:8]
    tmp = Path(tempfile.mkdtemp(prefix="bench_gifts_"))
    db = f"sqlite+aiosqlite:///{tmp}/bench.db"
    secret = uuid.uuid4().hex * 2
    await upgrade(db)
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("LC_")},
           "LC_REDIS_URL": a.redis, "LC_KEY_PREFIX": prefix, "LC_DATABASE_URL": db, "LC_SECRET": secret,
           "LC_LOG_LEVEL": "WARNING", "LC_COMMAND_RATE": "100000", "LC_COMMAND_BURST": "100000", "LC_NODE_ID": "bench-gw"}
    exe = str(Path(sys.executable).with_name("livecommerce"))
    gw = subprocess.Popen([exe, "gateway", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    base = f"http://127.0.0.1:{port}"
    tok = lambda u, r="viewer": issue_token(secret, user=u, role=r, now_s=int(time.time()), ttl_s=3600)  # noqa: E731
    lat: list[float] = []
    acked = errors = 0
    try:
        async with aiohttp.ClientSession() as h:
            for _ in range(100):
                try:
                    if (await h.get(base + "/readyz")).status == 200:
                        break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            ops = {"Authorization": f"Bearer {tok('ops', 'ops')}"}
            for i in range(a.clients):
                r = await h.post(f"{base}/api/v1/wallets/u{i}/topup", json={"amount": 10**7, "idempotency_key": "seed"}, headers=ops)
                assert r.status in (200, 201), await r.text()
        stop_at = time.monotonic() + a.seconds

        async def client(i: int) -> None:
            nonlocal acked, errors
            ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws?room=bench&format=json&token={tok(f'u{i}')}", max_size=None)
            await ws.recv()
            sent: dict[int, float] = {}
            slots = asyncio.Semaphore(a.inflight)

            async def reader() -> None:
                nonlocal acked, errors
                async for raw in ws:
                    f = json.loads(raw)
                    for e in f["items"] if f["t"] == "batch" else [f]:
                        t0 = sent.pop(e.get("id"), None) if e["t"] in ("ack", "error") else None
                        if t0 is None:
                            continue
                        if e["t"] == "ack":
                            acked += 1
                            lat.append(time.perf_counter() - t0)
                        else:
                            errors += 1
                        slots.release()

            rt = asyncio.create_task(reader())
            n = 0
            while time.monotonic() < stop_at:
                await slots.acquire()
                n += 1
                sent[n] = time.perf_counter()
                await ws.send(json.dumps({"t": "gift", "id": n, "d": {"gift_id": "rose", "count": 1}}))
            for _ in range(200):
                if not sent:
                    break
                await asyncio.sleep(0.05)
            rt.cancel()
            await ws.close()

        async def progress() -> None:
            t0 = time.monotonic()
            while time.monotonic() < stop_at:
                await asyncio.sleep(1)
                print(f"\r  {time.monotonic() - t0:4.0f}s  gifts acked {acked:,}  ({acked / (time.monotonic() - t0):,.0f}/s)", end="", flush=True)

        t0 = time.monotonic()
        await asyncio.gather(progress(), *(client(i) for i in range(a.clients)))
        dt = time.monotonic() - t0
        print()
    finally:
        gw.terminate()
        gw.wait(15)
    lat.sort()
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    out = {"clients": a.clients, "in_flight": a.inflight, "seconds": round(dt, 1), "gifts_acked": acked, "errors": errors,
           "gifts_per_s": round(acked / dt, 1), "ack_ms": {"p50": round(p(0.5), 2), "p99": round(p(0.99), 2)}}
    s = Settings.from_env({}, redis_url=a.redis, key_prefix=prefix, database_url=db)
    redis = connect(a.redis)
    durable = open_log(s, redis)
    store = SqlStore(db)
    try:
        t1 = time.monotonic()
        n = await wallet_drain(durable, store, fetch_timeout_ms=300)
        out["wallet_worker_events_per_s"] = round(n / (time.monotonic() - t1), 1)
        t1 = time.monotonic()
        n2 = await points_drain(durable, PointsWorker(store, redis, Keys(prefix), Rules()), fetch_timeout_ms=300)
        out["points_worker_events_per_s"] = round(n2 / (time.monotonic() - t1), 1)
        wallet = RedisWallet(redis, Keys(prefix))
        bad = [i for i in range(a.clients) if await wallet.balance(f"u{i}") != await store.wallet_balance(f"u{i}")]
        out["balances_equal_ledgers"] = not bad
    finally:
        await store.close()
        await durable.close()
        async for k in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(k)
        await redis.aclose()
    print(json.dumps(out, indent=2))
    return 0 if out["balances_equal_ledgers"] and not errors else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--clients", type=int, default=50, help="WebSocket clients (default %(default)s)")
    ap.add_argument("-w", "--inflight", type=int, default=4, help="gifts in flight per client (default %(default)s)")
    ap.add_argument("-s", "--seconds", type=float, default=15, help="duration (default %(default)s)")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL (default %(default)s)")
    sys.exit(asyncio.run(main(ap.parse_args())))
