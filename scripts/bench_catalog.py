#!/usr/bin/env python3
"""SKU holds against Redis: the catalogue's reserve script under concurrent callers, beside
the flash sale's per-buy reserve script in the same run.

No gateway: this measures the atomic step a cart checkout (issue 19, part 3) will call once
per product of an order. On a throw-away key prefix it creates one product with K SKUs of S
units each and one flash sale of the same total stock, then ``-c`` concurrent callers take
holds until the stock is gone:

* ``sku x1``: holds of one line (one unit of one SKU, round robin over the SKUs);
* ``sku x3``: holds of three lines (one unit each of three SKUs: one multi-SKU order line set);
* ``sale``: ``flash_sale_reserve.lua`` through ``RedisFlashSale.reserve`` (one unit per buy).

Reported per shape: holds/s (answered holds over the wall time, refusals included), p50 and
p99 of one call, and the invariants afterwards: every unit reserved exactly once (no
oversell), ``stocked == available + reserved + sold`` per SKU after paying half the holds and
releasing the rest, and a second release of each hold changing nothing.

    python scripts/bench_catalog.py                      # 8 SKUs x 2,000 units, 128 callers
    python scripts/bench_catalog.py -k 4 -s 500 -c 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from livecommerce.catalog import validate_product  # noqa: E402
from livecommerce.catalog_redis import RedisCatalog, Reserved  # noqa: E402
from livecommerce.flash_sale import Reserved as SaleReserved  # noqa: E402
from livecommerce.flash_sale import Sale  # noqa: E402
from livecommerce.flash_sale_redis import RedisFlashSale  # noqa: E402
from livecommerce.keys import Keys  # noqa: E402
from livecommerce.redis_conn import connect  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


async def rush(n_callers: int, take: Any) -> tuple[float, list[float], int]:
    """Run ``take(i)`` from ``n_callers`` loops until it answers None (stock gone)."""
    lat: list[float] = []
    taken = 0
    counter = iter(range(10**9))

    async def caller() -> None:
        nonlocal taken
        while True:
            i = next(counter)
            t0 = time.perf_counter()
            got = await take(i)
            lat.append(time.perf_counter() - t0)
            if got is None:
                return
            taken += got

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(n_callers)))
    return time.perf_counter() - t0, lat, taken


async def main(a: argparse.Namespace) -> int:
    redis = connect(a.redis_url)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    keys = Keys(prefix)
    cat = RedisCatalog(redis, keys)
    sales = RedisFlashSale(redis, keys)
    skus = [f"s{i}" for i in range(a.skus)]
    ok = True
    rows = []
    try:
        for shape, width in (("sku x1", 1), ("sku x3", 3)):
            pid = f"p{width}"
            d = validate_product({"id": pid, "name": "Bench", "skus": [
                {"id": s, "attrs": {"n": s}, "price": 100, "stock": a.stock} for s in skus]})
            await cat.put(d.product, expected_v=0, initial_stock=d.stock, now_ms=1)
            now = int(time.time() * 1000)
            holds: list[str] = []

            async def take(i: int, pid: str = pid, width: int = width, holds: list[str] = holds, now: int = now) -> int | None:
                lines = [(skus[(i * width + j) % len(skus)], 1) for j in range(width)]
                r = await cat.reserve(pid, f"h{i}", f"u{i}", lines, pay_by_ms=now + 600_000, now_ms=now)
                if isinstance(r, Reserved):
                    holds.append(r.hold_id)
                    return width
                return None  # sold out (some SKU of the line set)

            wall, lat, taken = await rush(a.callers, take)
            _, units = await cat.read(pid)  # type: ignore[misc]
            oversold = any(u.available < 0 for u in units.values()) or taken != sum(u.reserved for u in units.values())
            for j, h in enumerate(holds):
                await (cat.pay(pid, h, now_ms=now) if j % 2 else cat.release(pid, h, now_ms=now))
            again = {await cat.release(pid, h, now_ms=now) for h in holds}
            _, units = await cat.read(pid)  # type: ignore[misc]
            conserved = all(u.conserved and u.stocked == a.stock and u.reserved == 0 for u in units.values())
            ok &= not oversold and conserved and again <= {"already_paid", "already_released"}
            rows.append((shape, len(lat), len(lat) / wall, pct(lat, 0.5), pct(lat, 0.99), taken,
                         not oversold, conserved))

        sale = Sale("bench", "r", "p", 100, a.stock * a.skus, 10**6, 0, 10**15)
        await sales.create(sale)
        await sales.start(sale.id, int(time.time() * 1000))

        async def buy(i: int) -> int | None:
            r = await sales.reserve(sale.id, f"u{i}", 1, f"q{i}", int(time.time() * 1000), f"bench.o{i}")
            return 1 if isinstance(r, SaleReserved) else None

        wall, lat, taken = await rush(a.callers, buy)
        st = await sales.stats(sale.id)
        rows.append(("sale", len(lat), len(lat) / wall, pct(lat, 0.5), pct(lat, 0.99), taken, st.remaining == 0 and
                     taken == a.stock * a.skus, st.conserved))
    finally:
        async for k in redis.scan_iter(match=f"{prefix}:*", count=1000):
            await redis.delete(k)
        await redis.aclose()
    print(f"{a.skus} SKUs x {a.stock} units, {a.callers} concurrent callers, loadavg {os.getloadavg()[0]:.2f}")
    print(f"{'shape':<8} {'calls':>7} {'calls/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'units':>7}  not oversold  conserved")
    for shape, n, rate, p50, p99, taken, fine, cons in rows:
        print(f"{shape:<8} {n:>7} {rate:>9.0f} {p50 * 1000:>7.2f} {p99 * 1000:>7.2f} {taken:>7}  {fine!s:<12}  {cons}")
    print("PASS" if ok and all(r[6] and r[7] for r in rows) else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", "--skus", type=int, default=8)
    ap.add_argument("-s", "--stock", type=int, default=2000, help="units per SKU")
    ap.add_argument("-c", "--callers", type=int, default=128)
    ap.add_argument("--redis-url", default=os.environ.get("LC_REDIS_URL", "redis://127.0.0.1:6379/0"))
    sys.exit(asyncio.run(main(ap.parse_args())))
