#!/usr/bin/env python
"""The orders worker applying fulfilment events, measured (docs/commerce.md, "Fulfilment").

Fills a fresh Redis Streams log with ``--orders`` orders of 2 units, each ``reserved``,
``paid``, shipped in two parcels, both delivered and (every other one) completed: 6.5 events
an order, the stream ``tests/test_fulfilment.py`` kills a worker in. Then drains it with the
orders worker in burst mode (this process, batches of ``LC_WORKER_BATCH``) into SQLite and,
with ``--pg URL``, PostgreSQL, and prints events/s and CPU per event, after checking every
order ended delivered or completed and every parcel row exists once.

Example (well under a minute)::

    flock /tmp/bench.lock python scripts/bench_fulfilment.py --orders 3000 \\
        --pg postgresql+asyncpg://postgres@127.0.0.1:5432/test

Everything runs on one machine (Redis, the database and this process share its cores).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis.asyncio as aioredis  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from livecommerce.config import Settings  # noqa: E402
from livecommerce.keys import Keys  # noqa: E402
from livecommerce.log_redis import RedisLog  # noqa: E402
from livecommerce.migrations import upgrade  # noqa: E402
from livecommerce.schema import orders, shipments  # noqa: E402
from livecommerce.store_sql import SqlStore  # noqa: E402
from tests.test_fulfilment import fulfilment_stream  # noqa: E402
from workers.orders import OrdersWorker  # noqa: E402


async def run_one(url: str, redis_url: str, n: int, batch: int) -> str:
    prefix = f"benchf{uuid.uuid4().hex[:6]}"
    r = aioredis.Redis.from_url(redis_url)
    await upgrade(url)
    s = Settings.from_env({}, redis_url=redis_url, key_prefix=prefix, database_url=url, node_id="bench", secret="b" * 40,
                          worker_batch=batch)
    events = fulfilment_stream(n)
    log = RedisLog(r, Keys(prefix))
    try:
        for i in range(0, len(events), 1000):
            await log.append_many(events[i : i + 1000])
        w = OrdersWorker(s, redis=r, durable=log)
        t, c = time.perf_counter(), time.process_time()
        done = await w.drain()
        dt, cpu = time.perf_counter() - t, time.process_time() - c
        await w.close()
        store = SqlStore(url)
        try:
            async with store.read() as tx:
                ended = (await tx.conn.execute(select(func.count()).select_from(orders)
                                               .where(orders.c.state.in_(("delivered", "completed"))))).scalar_one()
                parcels = (await tx.conn.execute(select(func.count()).select_from(shipments))).scalar_one()
        finally:
            await store.close()
        ok = done == len(events) and ended == n and parcels == 2 * n
        return (f"{url.split(':')[0]:<20} {done:>7,} events in {dt:6.2f} s = {done / dt:>8,.0f} events/s, "
                f"{cpu / done * 1e6:4.0f} us CPU/event; {ended:,} orders delivered or completed, {parcels:,} parcels: "
                f"{'ok' if ok else 'WRONG'}")
    finally:
        async for k in r.scan_iter(match=f"{prefix}:*"):
            await r.delete(k)
        await r.aclose()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Needs a Redis at --redis and, for --pg, a PostgreSQL (a fresh schema is used).")
    p.add_argument("--orders", type=int, default=3000, help="orders in the stream (6.5 events each; default 3000)")
    p.add_argument("--batch", type=int, default=1000, help="events per worker transaction (LC_WORKER_BATCH; default 1000)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL (default %(default)s)")
    p.add_argument("--pg", help="also PostgreSQL: postgresql+asyncpg://user@host:5432/db")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        urls = [f"sqlite+aiosqlite:///{d}/bench.db"]
        if a.pg:
            urls.append(f"{a.pg}{'&' if '?' in a.pg else '?'}schema=benchf{uuid.uuid4().hex[:6]}")
        for url in urls:
            print(asyncio.run(run_one(url, a.redis, a.orders, a.batch)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
