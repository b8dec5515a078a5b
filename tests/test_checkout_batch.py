"""The buy path's group commit (``Checkout.place``): buys of one sale that arrive while its
previous commit is in flight are decided by one script call, in arrival order, and each buyer
gets the answer it would have got alone (real Redis; the log port's memory twin, or the
Redis Streams log on a Redis that cannot be reached)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from livecommerce.checkout import Checkout, Placed
from livecommerce.clock import now_ms
from livecommerce.errors import Unavailable
from livecommerce.flash_sale import Reserved, Sale
from livecommerce.keys import Keys
from livecommerce.log import MemoryLog
from livecommerce.log_redis import RedisLog


@pytest.fixture
async def wide(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client with a bounded blocking pool, for thousands of concurrent calls."""
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=20)
    client = aioredis.Redis(connection_pool=pool)
    yield client
    await client.aclose()
    await pool.aclose()


async def open_sale(co: Checkout, sid: str, stock: int, limit: int = 1) -> Sale:
    t0 = now_ms()
    sale = Sale(sid, "room", "p", 100, stock, limit, t0 - 1000, t0 + 600_000)
    await co.create_sale(sale)
    await co.sales.start(sid, t0)
    return sale


class Calls:
    """Counts the calls of one adapter method (the real method still runs)."""

    def __init__(self, obj: Any, name: str) -> None:
        self.n = 0
        self.sizes: list[int] = []
        real = getattr(obj, name)

        async def counting(*a: Any, **kw: Any) -> Any:
            self.n += 1
            if a and isinstance(a[-1], list):
                self.sizes.append(len(a[-1]))
            return await real(*a, **kw)

        setattr(obj, name, counting)


def reserved_events(log: MemoryLog, sale: str) -> list[str]:
    return [e.id for t in log._topics.values() for part in t.parts for e in part
            if e.type == "order.reserved" and e.data["sale_id"] == sale]


async def test_concurrent_buys_are_decided_in_few_commits_and_reserve_exactly_the_stock(wide: aioredis.Redis, keys: Keys) -> None:
    log = MemoryLog()
    co = Checkout(wide, keys, log)
    await open_sale(co, "many", 50)
    batches = Calls(co.sales, "reserve_batch")
    got = await asyncio.gather(*(co.buy(user=f"u{i}", sale_id="many", qty=1, request_id=f"r{i}", now_ms=now_ms())
                                 for i in range(400)))
    won = [r for r in got if isinstance(r, Reserved)]
    assert len(won) == 50 and got.count("sold_out") == 350
    assert len({r.order_id for r in won}) == 50 and all(not r.duplicate for r in won)
    assert 1 <= batches.n < 10  # 400 buys, a handful of script calls
    st = await co.sales.stats("many")
    assert (st.remaining, st.reserved, st.buyers) == (0, 50, 50) and st.conserved
    assert sorted(reserved_events(log, "many")) == sorted(f"{r.order_id}:reserved" for r in won)


async def test_buys_queued_behind_a_sell_out_are_answered_from_its_snapshot_and_a_buyers_retry_reaches_redis(
        wide: aioredis.Redis, keys: Keys) -> None:
    log = MemoryLog()
    co = Checkout(wide, keys, log)
    await open_sale(co, "snap", 5)
    batches, lone = Calls(co.sales, "reserve_batch"), Calls(co.sales, "reserve")
    first = [asyncio.ensure_future(co.place(user=f"a{i}", sale_id="snap", qty=1, request_id="x", now_ms=now_ms(),
                                            want_buyers=True)) for i in range(10)]
    await asyncio.sleep(0)  # the commit of the first ten is on its way to Redis
    late = [asyncio.ensure_future(co.place(user=f"b{i}", sale_id="snap", qty=1, request_id="y", now_ms=now_ms()))
            for i in range(300)]
    retry = asyncio.ensure_future(co.place(user="a0", sale_id="snap", qty=1, request_id="x", now_ms=now_ms()))
    placed: list[Placed] = await asyncio.gather(*first)
    winners = {f"a{i}": p.result for i, p in enumerate(placed) if isinstance(p.result, Reserved)}
    assert set(winners) == {f"a{i}" for i in range(5)}  # decided in arrival order
    assert all(p.buyers == set(winners) for p in placed)
    answers = await asyncio.gather(*late)
    assert [p.result for p in answers] == ["sold_out"] * 300
    again = await retry
    assert batches.n == 1 and batches.sizes == [10]  # the 300 never reached Redis
    # a buyer's retry did (alone: the per-buy script) and got its first order
    assert lone.n == 1 and isinstance(again.result, Reserved) and again.result.duplicate
    assert again.result.order_id == winners["a0"].order_id
    assert (await co.sales.stats("snap")).reserved == 5


async def test_a_repeated_request_id_in_one_commit_answers_the_first_order_and_moves_stock_once(wide: aioredis.Redis, keys: Keys) -> None:
    log = MemoryLog()
    co = Checkout(wide, keys, log)
    await open_sale(co, "twice", 10, limit=5)
    got = await asyncio.gather(*(co.buy(user="u1", sale_id="twice", qty=2, request_id="same", now_ms=now_ms())
                                 for _ in range(4)))
    assert all(isinstance(r, Reserved) for r in got)
    orders = {r.order_id for r in got if isinstance(r, Reserved)}
    assert len(orders) == 1 and [r.duplicate for r in got if isinstance(r, Reserved)].count(False) == 1
    st = await co.sales.stats("twice")
    assert (st.remaining, st.reserved) == (8, 2)


async def test_when_the_log_is_down_the_reserved_hear_unavailable_and_their_retry_gets_the_order_and_its_event(
        wide: aioredis.Redis, keys: Keys) -> None:
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    down = Checkout(wide, keys, RedisLog(dead, keys))
    await open_sale(down, "down", 3)
    try:
        first = await asyncio.gather(*(down.buy(user=f"u{i}", sale_id="down", qty=1, request_id=f"r{i}", now_ms=now_ms())
                                       for i in range(8)), return_exceptions=True)
    finally:
        await dead.aclose()
    assert sum(isinstance(r, Unavailable) for r in first) == 3  # reserved in Redis, not on the log: told to retry
    assert first.count("sold_out") == 5  # a refusal stands as it is
    log = MemoryLog()
    up = Checkout(wide, keys, log)
    again = await asyncio.gather(*(up.buy(user=f"u{i}", sale_id="down", qty=1, request_id=f"r{i}", now_ms=now_ms())
                                   for i in range(8)))
    won = [r for r in again if isinstance(r, Reserved)]
    assert len(won) == 3 and all(r.duplicate for r in won)
    assert [isinstance(r, Reserved) for r in again] == [isinstance(r, Unavailable) for r in first]
    assert sorted(reserved_events(log, "down")) == sorted(f"{r.order_id}:reserved" for r in won)
    assert (await up.sales.stats("down")).reserved == 3


async def test_drain_waits_for_the_commits_in_flight(wide: aioredis.Redis, keys: Keys) -> None:
    log = MemoryLog()
    co = Checkout(wide, keys, log)
    await open_sale(co, "drain", 20)
    buys = [asyncio.ensure_future(co.buy(user=f"u{i}", sale_id="drain", qty=1, request_id="r", now_ms=now_ms()))
            for i in range(30)]
    await asyncio.sleep(0)
    assert co._commits  # a commit is in flight
    await co.drain()
    assert not co._commits and all(b.done() for b in buys)
    assert sum(isinstance(b.result(), Reserved) for b in buys) == 20
