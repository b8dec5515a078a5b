"""The Redis flash-sale adapter against real Redis: concurrency, idempotency, conservation."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot

from livecommerce.errors import BadFrame, Conflict, NotFound, Unavailable
from livecommerce.flash_sale import Reserved, Sale, SaleState, decide_reserve, early_window
from livecommerce.flash_sale_redis import RedisFlashSale
from livecommerce.keys import Keys

T0 = 1_700_000_000_000
HOUR = 3_600_000


def make_sale(sid: str = "s1", *, stock: int = 100, limit: int = 1, window_s: int = 900) -> Sale:
    return Sale(sid, "r1", "p1", 1999, stock, limit, T0, T0 + HOUR, window_s)


@pytest.fixture
async def wide(redis_url: str, prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A client with a bounded blocking pool, for thousands of concurrent calls."""
    pool = aioredis.BlockingConnectionPool.from_url(redis_url, max_connections=64, timeout=20)
    client = aioredis.Redis(connection_pool=pool)
    yield client
    await client.aclose()
    await pool.aclose()


@pytest.fixture
def fs(redis: aioredis.Redis, keys: Keys) -> RedisFlashSale:
    return RedisFlashSale(redis, keys)


async def live(fs: RedisFlashSale, sale: Sale) -> Sale:
    assert await fs.create(sale)
    assert await fs.start(sale.id, T0) == "live"
    return sale


# ------------------------------------------------------------------ the rush


async def test_2000_concurrent_buyers_on_100_units_reserve_exactly_100(wide, keys):
    fs = RedisFlashSale(wide, keys)
    await live(fs, make_sale(stock=100, limit=1))
    results = await asyncio.gather(
        *(fs.reserve("s1", f"u{i}", 1, f"rq{i}", T0 + 10, f"o{i}") for i in range(2000))
    )
    won = [r for r in results if isinstance(r, Reserved)]
    assert len(won) == 100
    assert {r for r in results if not isinstance(r, Reserved)} == {"sold_out"}
    assert len({r.order_id for r in won}) == 100
    assert sum(r.last_unit for r in won) == 1
    st = await fs.stats("s1")
    assert (st.remaining, st.reserved, st.paid, st.buyers, st.state) == (0, 100, 0, 100, "sold_out")
    assert st.conserved


async def test_one_user_flooding_concurrently_never_passes_the_limit(wide, keys):
    fs = RedisFlashSale(wide, keys)
    await live(fs, make_sale(stock=100, limit=3))
    results = await asyncio.gather(
        *(fs.reserve("s1", "greedy", 1 + i % 2, f"rq{i}", T0 + 1, f"o{i}") for i in range(300))
    )
    won = [r for r in results if isinstance(r, Reserved)]
    assert sum(r.qty for r in won) <= 3
    assert await fs.bought("s1", "greedy") == sum(r.qty for r in won) >= 2
    assert {r for r in results if not isinstance(r, Reserved)} == {"limit_reached"}
    st = await fs.stats("s1")
    assert st.remaining == 100 - sum(r.qty for r in won) and st.buyers == 1 and st.conserved


async def test_repeated_request_id_returns_the_first_order(wide, keys):
    fs = RedisFlashSale(wide, keys)
    await live(fs, make_sale(stock=10, limit=5))
    results = await asyncio.gather(
        *(fs.reserve("s1", "u1", 2, "same", T0 + 1, f"o{i}") for i in range(50))
    )
    assert all(isinstance(r, Reserved) for r in results)
    first = [r for r in results if isinstance(r, Reserved) and not r.duplicate]
    assert len(first) == 1
    assert {r.order_id for r in results if isinstance(r, Reserved)} == {first[0].order_id}
    st = await fs.stats("s1")
    assert (st.remaining, st.reserved, st.reserved_orders) == (8, 2, 1)
    # another user's equal request id is another request
    other = await fs.reserve("s1", "u2", 1, "same", T0 + 1, "ox")
    assert isinstance(other, Reserved) and not other.duplicate and other.order_id == "ox"


async def test_a_retry_after_the_sale_ended_still_gets_its_order(fs):
    await live(fs, make_sale(stock=1))
    r1 = await fs.reserve("s1", "u1", 1, "rq", T0 + 1, "o1")
    assert isinstance(r1, Reserved) and r1.last_unit
    await fs.end("s1", T0 + 2)
    r2 = await fs.reserve("s1", "u1", 1, "rq", T0 + 3, "o2")
    assert isinstance(r2, Reserved) and r2.duplicate and r2.order_id == "o1"


# ------------------------------------------------------------------ release and pay


async def test_release_returns_stock_exactly_once_and_frees_the_limit(wide, keys):
    fs = RedisFlashSale(wide, keys)
    await live(fs, make_sale(stock=2, limit=2))
    r = await fs.reserve("s1", "u1", 2, "rq1", T0 + 1, "o1")
    assert isinstance(r, Reserved) and (await fs.stats("s1")).state == "sold_out"
    outcomes = await asyncio.gather(*(fs.release("s1", "o1") for _ in range(20)))
    assert sorted(set(outcomes)) == ["already_released", "released"]
    assert outcomes.count("released") == 1
    st = await fs.stats("s1")
    assert (st.remaining, st.reserved, st.buyers, st.cancelled_orders, st.state) == (
        2,
        0,
        0,
        1,
        "live",
    )
    assert await fs.bought("s1", "u1") == 0
    hold = await fs.hold("s1", "o1")
    assert hold is not None and hold.state == "cancelled" and hold.request_id == "rq1"
    again = await fs.reserve("s1", "u1", 2, "rq2", T0 + 2, "o2")
    assert isinstance(again, Reserved) and again.remaining == 0


async def test_mark_paid_is_idempotent_and_loses_to_an_earlier_release(fs):
    await live(fs, make_sale(stock=5, limit=5, window_s=60))
    for i in range(3):
        assert isinstance(await fs.reserve("s1", "u1", 1, f"rq{i}", T0, f"o{i}"), Reserved)
    assert await fs.mark_paid("s1", "o0") == "paid"
    assert await fs.mark_paid("s1", "o0") == "already_paid"
    assert await fs.release("s1", "o0") == "already_paid"
    assert await fs.release("s1", "o1") == "released"
    assert await fs.mark_paid("s1", "o1") == "already_cancelled"
    # the deadline: now_ms at or after pay_by changes nothing
    assert await fs.mark_paid("s1", "o2", now_ms=T0 + 60_000) == "expired"
    assert await fs.due("s1", T0 + 60_000) == ["o2"]
    assert await fs.mark_paid("s1", "o2", now_ms=T0 + 59_999) == "paid"
    assert await fs.due("s1", T0 + HOUR) == []
    st = await fs.stats("s1")
    assert (st.remaining, st.reserved, st.paid, st.paid_orders, st.buyers) == (3, 0, 2, 2, 1)
    with pytest.raises(NotFound):
        await fs.mark_paid("s1", "nope")
    with pytest.raises(NotFound):
        await fs.release("s1", "nope")


async def test_mixed_pays_and_timeouts_conserve_stock_at_every_moment(wide, keys):
    fs = RedisFlashSale(wide, keys)
    sale = await live(fs, make_sale(stock=100, limit=2, window_s=30))
    rng = random.Random(7)
    snapshots: list[bool] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            snapshots.append((await fs.stats("s1")).conserved)
            await asyncio.sleep(0)  # a turn for the buyers between samples

    sampler = asyncio.create_task(sample())
    reserved: list[Reserved] = []
    paid_qty = 0
    for wave in range(3):  # released stock is sold again in the next wave
        now = T0 + wave * 100_000
        res = await asyncio.gather(
            *(
                fs.reserve("s1", f"u{wave}-{i}", rng.randint(1, 2), f"rq{i}", now, f"o{wave}-{i}")
                for i in range(300)
            )
        )
        batch = [r for r in res if isinstance(r, Reserved)]
        assert sum(r.qty for r in batch) == (await fs.stats("s1")).reserved
        reserved += batch
        # pay some, race pay against time-out for some, leave the rest to the time-out
        calls = []
        for r in batch:
            roll = rng.random()
            if roll < 0.4:
                calls.append(fs.mark_paid("s1", r.order_id, now_ms=now + 1))
            elif roll < 0.7:
                calls += [fs.mark_paid("s1", r.order_id), fs.release("s1", r.order_id)]
            if roll > 0.9:
                calls.append(fs.mark_paid("s1", r.order_id))  # a duplicate payment callback
        await asyncio.gather(*calls)
        due = await fs.due("s1", now + sale.payment_window_s * 1000, limit=1000)
        assert len(due) == (await fs.stats("s1")).reserved_orders
        await asyncio.gather(*(fs.release("s1", oid) for oid in due))
        st = await fs.stats("s1")
        assert st.reserved == 0 and st.conserved
    done.set()
    await sampler
    assert len(snapshots) > 10 and all(snapshots)
    for r in reserved:
        hold = await fs.hold("s1", r.order_id)
        assert hold is not None and hold.state in ("paid", "cancelled")
        paid_qty += hold.qty if hold.state == "paid" else 0
    st = await fs.stats("s1")
    assert st.paid == paid_qty and st.initial == 100 == st.remaining + st.paid
    assert st.paid_orders + st.cancelled_orders == len(reserved)


# ------------------------------------------------------------------ lifecycle and window


async def test_a_sale_sells_only_while_live_and_inside_its_window(fs):
    sale = make_sale(stock=5, limit=5)
    assert await fs.create(sale)
    assert await fs.reserve("s1", "u1", 1, "a", T0 + 1, "o1") == "not_started"  # scheduled
    assert await fs.start("s1", T0 + 5) == "live"
    assert await fs.start("s1", T0 + 6) == "live"  # idempotent
    assert await fs.reserve("s1", "u1", 1, "b", T0 + HOUR, "o2") == "ended"  # past ends_ms
    assert isinstance(await fs.reserve("s1", "u1", 1, "c", T0 + 7, "o3"), Reserved)
    assert await fs.end("s1", T0 + 10) == "ended"
    assert await fs.end("s1", T0 + 11) == "ended"  # idempotent
    assert await fs.reserve("s1", "u1", 1, "d", T0 + 12, "o4") == "ended"
    with pytest.raises(Conflict):
        await fs.start("s1", T0 + 13)
    assert (await fs.get("s1")).ends_ms == T0 + 10  # stopped early: the window closed then


async def test_a_host_may_open_a_prepared_sale_early_but_not_after_its_window(fs):
    assert await fs.create(make_sale("early"))
    before = await fs.get("early")
    assert await fs.start("early", T0 - 5_000) == "live"
    opened = await fs.get("early")
    assert (opened.starts_ms, opened.ends_ms) == early_window(before.starts_ms, before.ends_ms, T0 - 5_000)
    assert opened.starts_ms == T0 - 5_000 and opened.ends_ms - opened.starts_ms == before.ends_ms - before.starts_ms
    assert isinstance(await fs.reserve("early", "u1", 1, "a", T0 - 4_000, "o1"), Reserved)
    assert await fs.create(make_sale("late"))
    with pytest.raises(Conflict):
        await fs.start("late", T0 + HOUR)


@pytest.mark.parametrize(
    ("state", "now", "remaining", "bought", "qty"),
    [
        ("scheduled", T0 + 1, 8, 0, 1),
        ("live", T0 - 1, 5, 0, 1),
        ("live", T0 + HOUR, 5, 0, 1),
        ("ended", T0 + 1, 5, 0, 1),
        ("live", T0 + 1, 2, 0, 3),
        ("live", T0 + 1, 5, 2, 2),
        ("live", T0 + 1, 0, 3, 1),
        ("live", T0 + 1, 5, 1, 2),
        ("live", T0 + 1, 5, 3, 1),
        ("live", T0 + HOUR - 1, 3, 0, 3),
    ],
)
async def test_redis_answers_as_decide_reserve(fs, state, now, remaining, bought, qty):
    """The Lua script and the pure rule give the same answer in the same situation."""
    stock = 8
    assert await fs.create(make_sale(stock=stock, limit=3))
    if state != "scheduled":  # reach the situation through the public API
        await fs.start("s1", T0)
        if bought:
            assert isinstance(await fs.reserve("s1", "u", bought, "pre", T0, "pre"), Reserved)
        for i in range(stock - bought - remaining):  # other buyers took the rest
            assert isinstance(await fs.reserve("s1", f"other{i}", 1, "x", T0, f"x{i}"), Reserved)
    if state == "ended":
        await fs.end("s1", T0 + 1)
    st = await fs.stats("s1")
    want_state = "sold_out" if state == "live" and remaining == 0 else state
    assert (st.state, st.remaining, await fs.bought("s1", "u")) == (want_state, remaining, bought)
    expected = decide_reserve(
        await fs.get("s1"), now_ms=now, remaining=remaining, bought=bought, qty=qty, state=st.state
    )
    got = await fs.reserve("s1", "u", qty, "case", now, "case")
    assert (None if isinstance(got, Reserved) else got) == expected


async def test_create_is_idempotent_and_refuses_another_definition_under_the_same_id(fs):
    sale = make_sale()
    assert await fs.create(sale) is True
    assert await fs.create(sale) is False
    with pytest.raises(Conflict):
        await fs.create(make_sale(stock=7))
    assert await fs.get("s1") == sale
    state: SaleState = (await fs.stats("s1")).state
    assert state == "scheduled"


async def test_bad_input_and_unknown_ids_are_errors_not_rejects(fs):
    await live(fs, make_sale())
    for qty in (0, -1, 1001, True):
        with pytest.raises(BadFrame):
            await fs.reserve("s1", "u1", qty, "a", T0, "o1")
    with pytest.raises(BadFrame):
        await fs.reserve("s{x}", "u1", 1, "a", T0, "o1")
    with pytest.raises(NotFound):
        await fs.reserve("nosale", "u1", 1, "a", T0, "o1")
    with pytest.raises(NotFound):
        await fs.stats("nosale")
    assert isinstance(await fs.reserve("s1", "u1", 1, "a", T0, "o1"), Reserved)
    with pytest.raises(Conflict):  # an order id reused for another request
        await fs.reserve("s1", "u2", 1, "b", T0, "o1")
    with pytest.raises(BadFrame):
        await fs.create(Sale("bad", "r", "p", 1, 0, 1, T0, T0 + 1))


# ------------------------------------------------------------------ cluster readiness and failures


async def test_every_key_of_a_sale_lives_in_one_cluster_slot(fs, redis, prefix):
    await live(fs, make_sale("slot-1", stock=3, limit=3))
    r = await fs.reserve("slot-1", "u1", 1, "a", T0, "o1")
    assert isinstance(r, Reserved)
    await fs.mark_paid("slot-1", "o1")
    await fs.reserve("slot-1", "u2", 1, "b", T0, "o2")
    await fs.release("slot-1", "o2")
    found = [k.decode() async for k in redis.scan_iter(match=f"{prefix}:*")]
    assert len(found) >= 6
    assert all("{sale:slot-1}" in k for k in found)
    assert len({key_slot(k.encode()) for k in found}) == 1
    assert {key_slot(k.encode()) for k in fs.sale_keys("slot-1")} == {key_slot(found[0].encode())}


async def test_an_unreachable_redis_raises_unavailable(keys):
    dead = aioredis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    fs = RedisFlashSale(dead, keys)
    try:
        with pytest.raises(Unavailable):
            await fs.reserve("s1", "u1", 1, "a", T0, "o1")
        with pytest.raises(Unavailable):
            await fs.stats("s1")
        with pytest.raises(Unavailable):
            await fs.create(make_sale())
    finally:
        await dead.aclose()
