"""The cart's checkout: coupon proposals (pure, hypothesis against brute force), and the money
path on real Redis and SQLite: concurrent multi-SKU checkouts (stock conserved, no oversell,
limits held, all or nothing), retries, time-out, payment, refunds per line, gifts, and the
orders worker writing each order's lines once."""

from __future__ import annotations

import asyncio
import time
from itertools import combinations
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.cart import (
    Line,
    Offer,
    OrderLine,
    cart_order_id,
    combo_discount,
    propose,
    refund_lines,
    stackable,
)
from livecommerce.cart_checkout import CartCheckout, CheckoutRefused
from livecommerce.catalog import GiftRule, Product, Sku
from livecommerce.catalog_redis import RedisCatalog
from livecommerce.checkout import Checkout
from livecommerce.keys import Keys
from livecommerce.log_redis import RedisLog
from livecommerce.migrations import upgrade
from livecommerce.order_lines_sql import lines_of

NOW = 1_764_800_000_000

OFFERS = st.lists(st.builds(Offer, coupon_id=st.sampled_from(["a", "b", "c", "d", "e"]), room=st.sampled_from(["", "r1", "r2"]),
                            kind=st.sampled_from(["full_reduction", "percent"]), threshold=st.integers(0, 300),
                            value=st.integers(1, 120), expires_ms=st.sampled_from([NOW - 1, NOW + 10])),
                  max_size=5, unique_by=lambda o: o.coupon_id)


@settings(max_examples=300, deadline=None)
@given(offers=OFFERS, subtotal=st.integers(0, 400))
def test_the_proposal_is_the_best_stackable_eligible_combination(offers: list[Offer], subtotal: int) -> None:
    got = propose(offers, subtotal=subtotal, room="r1", now_ms=NOW)
    usable = [o for o in offers if o.expires_ms > NOW and o.room in ("", "r1") and subtotal >= o.threshold]
    best = max((combo_discount(c, subtotal) for k in range(3) for c in combinations(usable, k) if stackable(c)), default=0)
    assert got.discount == best == combo_discount(got.coupons, subtotal)
    assert stackable(got.coupons) and all(o in usable for o in got.coupons) and got.discount <= subtotal
    assert len([o for o in got.coupons if o.scope == "shop"]) <= 1 and len(got.coupons) <= 2


@given(qtys=st.lists(st.integers(1, 5), min_size=1, max_size=4), cuts=st.lists(st.integers(1, 6), max_size=5))
def test_partial_refunds_put_back_each_bought_unit_once_and_gifts_with_the_last(qtys: list[int], cuts: list[int]) -> None:
    lines = [OrderLine(i + 1, "p", f"s{i}", q, 100) for i, q in enumerate(qtys)] + [OrderLine(9, "p", "g", 1, 0, None, True)]
    total, before, back = sum(qtys), 0, {}
    for c in cuts:
        c = min(c, total - before)
        if c <= 0:
            break
        for ln in refund_lines(lines, qty_before=before, qty=c):
            back[ln.sku] = back.get(ln.sku, 0) + ln.qty
        before += c
    assert all(back.get(f"s{i}", 0) <= q for i, q in enumerate(qtys))
    assert sum(v for k, v in back.items() if k != "g") == before
    assert back.get("g", 0) == (1 if before == total else 0)


async def _catalog(redis: aioredis.Redis, keys: Keys) -> RedisCatalog:
    cat = RedisCatalog(redis, keys)
    tee = Product("tee", "h1", "Tee", (Sku("red", (("colour", "red"),), 1000, limit=3, gift=GiftRule(2, "sticker")),
                                       Sku("blue", (("colour", "blue"),), 1200),
                                       Sku("sticker", (("colour", "sticker"),), 100)))
    mug = Product("mug", "h1", "Mug", (Sku("default", (), 500),))
    assert (await cat.put(tee, expected_v=0, initial_stock={"red": 20, "blue": 15, "sticker": 3}, now_ms=NOW)).ok
    assert (await cat.put(mug, expected_v=0, initial_stock={"default": 12}, now_ms=NOW)).ok
    return cat


async def _conserved(cat: RedisCatalog) -> dict[str, Any]:
    units = {}
    for pid in ("tee", "mug"):
        got = await cat.read(pid)
        assert got is not None
        for sku, u in got[1].items():
            assert u.conserved, (pid, sku, u)
            units[f"{pid}/{sku}"] = u
    return units


async def test_concurrent_overlapping_checkouts_never_oversell_hold_limits_and_are_all_or_nothing(
        redis: aioredis.Redis, keys: Keys) -> None:
    cat = await _catalog(redis, keys)
    cart = CartCheckout(redis, keys, RedisLog(redis, keys))
    carts = [[Line("tee", "red", 2), Line("mug", "", 1)], [Line("mug", "default", 2), Line("tee", "blue", 1)],
             [Line("tee", "red", 1), Line("tee", "blue", 2), Line("mug", "", 1)]]

    async def buy(i: int) -> tuple[int, Any]:
        lines = carts[i % 3]
        try:
            o, _ = await cart.checkout(user=f"u{i % 9}", room="r1", order_id=cart_order_id(f"u{i % 9}", f"k{i}"), lines=lines,
                                       coupon_ids=[], sales={}, now_ms=NOW)
            return i, o
        except CheckoutRefused as exc:
            return i, exc.code

    results = await asyncio.gather(*(buy(i) for i in range(60)))
    units = await _conserved(cat)
    orders = [o for _, o in results if not isinstance(o, str)]
    refused = [o for _, o in results if isinstance(o, str)]
    assert orders and refused and set(refused) <= {"sold_out", "limit_reached"}
    held: dict[str, int] = {}
    per_user_red: dict[str, int] = {}
    for o in orders:
        for ln in o.lines:
            held[f"{ln.product_id}/{ln.sku}"] = held.get(f"{ln.product_id}/{ln.sku}", 0) + ln.qty
            if ln.sku == "red":
                per_user_red[o.user] = per_user_red.get(o.user, 0) + ln.qty
    for k, u in units.items():
        assert u.reserved == held.get(k, 0) and u.sold == 0, k  # every order all there, every refusal nothing
    assert all(v <= 3 for v in per_user_red.values())  # the SKU's per-user limit
    assert units["tee/sticker"].reserved <= 3 and all(u.available >= 0 for u in units.values())



async def test_a_line_sold_out_at_the_read_is_refused_before_anything_opens_and_a_retry_of_the_order_that_took_the_last_units_still_answers_it(
        redis: aioredis.Redis, keys: Keys) -> None:
    cat = await _catalog(redis, keys)
    log = RedisLog(redis, keys)
    cart = CartCheckout(redis, keys, log)

    async def logged() -> int:
        return sum([await redis.xlen(log.stream(t, p)) for t, p in await log.streams()])

    last = cart_order_id("u1", "k-last")
    o, dup = await cart.checkout(user="u1", room="r1", order_id=last, lines=[Line("mug", "", 12)], coupon_ids=[], sales={},
                                 now_ms=NOW)
    assert not dup and (await cat.read("mug"))[1]["default"].available == 0  # type: ignore[index]
    # a buyer asking for a unit that is not there: sold_out naming the line, and no gate, hold or log entry made
    late = cart_order_id("u2", "k-late")
    entries = await logged()
    assert entries == 1  # the first order's order.reserved
    with pytest.raises(CheckoutRefused) as refused:
        await cart.checkout(user="u2", room="r1", order_id=late, lines=[Line("tee", "blue", 1), Line("mug", "", 1)],
                            coupon_ids=[], sales={}, now_ms=NOW)
    assert (refused.value.code, refused.value.product_id, refused.value.sku) == ("sold_out", "mug", "default")
    assert "(0 left)" in refused.value.message
    assert await cart.carts.order(late) is None  # never opened
    units = await _conserved(cat)
    assert (units["tee/blue"].reserved, units["mug/default"].reserved) == (0, 12)  # the tee was not taken either
    assert await logged() == entries
    # the retry of the order that took the last units meets its own holds: the same order, not sold_out
    again, dup = await cart.checkout(user="u1", room="r1", order_id=last, lines=[Line("mug", "", 12)], coupon_ids=[],
                                     sales={}, now_ms=NOW + 5)
    assert dup and again.order_id == o.order_id and [(ln.sku, ln.qty) for ln in again.lines] == [("default", 12)]
    assert (await _conserved(cat))["mug/default"].reserved == 12

async def test_retry_pay_refund_timeout_and_the_worker_writes_lines_once(redis: aioredis.Redis, keys: Keys, settings: Any,
                                                                          store_url: str) -> None:
    from workers.orders import OrdersWorker

    settings = settings.replace(database_url=store_url)  # SQLite and PostgreSQL

    cat = await _catalog(redis, keys)
    co = Checkout(redis, keys, RedisLog(redis, keys))
    oid = cart_order_id("alice", "key-1")
    lines = [Line("tee", "red", 2), Line("mug", "", 1)]
    first, dup = await co.cart.checkout(user="alice", room="r1", order_id=oid, lines=lines, coupon_ids=[], sales={}, now_ms=NOW)
    again, dup2 = await co.cart.checkout(user="alice", room="r1", order_id=oid, lines=lines, coupon_ids=[], sales={}, now_ms=NOW + 5)
    assert not dup and dup2 and again.lines == first.lines
    assert [(ln.sku, ln.qty, ln.unit_price, ln.gift) for ln in first.lines] == [
        ("red", 2, 1000, False), ("default", 1, 500, False), ("sticker", 1, 0, True)]  # buy 2 red: a sticker
    assert (first.qty, first.subtotal) == (3, 2500)
    units = await _conserved(cat)
    assert (units["tee/red"].reserved, units["tee/sticker"].reserved, units["mug/default"].reserved) == (2, 1, 1)
    paid = await co.pay(order_id=oid, user="alice", now_ms=NOW + 10)
    assert (paid.outcome, paid.amount) == ("paid", 2500)
    assert (await co.pay(order_id=oid, user="alice", now_ms=NOW + 11)).outcome == "already_paid"
    units = await _conserved(cat)
    assert (units["tee/red"].sold, units["tee/sticker"].sold, units["mug/default"].sold) == (2, 1, 1)
    assert await co.cart.refund(oid, f"{oid}.r1", qty_before=0, qty=1)
    assert not await co.cart.refund(oid, f"{oid}.r1", qty_before=0, qty=1)  # once per refund
    units = await _conserved(cat)
    assert (units["tee/red"].sold, units["tee/red"].available) == (1, 19)
    # a second order times out: every hold released once
    late = cart_order_id("bob", "key-2")
    await co.cart.checkout(user="bob", room="r1", order_id=late, lines=[Line("tee", "blue", 2)], coupon_ids=[], sales={},
                           now_ms=NOW)
    assert (await _conserved(cat))["tee/blue"].reserved == 2
    done = await co.expire_due(NOW + 901_000)
    assert (late, "released") in done and (await _conserved(cat))["tee/blue"] .available == 15
    assert (await co.pay(order_id=late, user="bob", now_ms=NOW + 902_000)).outcome == "already_cancelled"
    # a refused checkout holds nothing
    with pytest.raises(CheckoutRefused) as exc:
        await co.cart.checkout(user="carol", room="r1", order_id=cart_order_id("carol", "k"), lines=[
            Line("mug", "", 5), Line("tee", "red", 4)], coupon_ids=[], sales={}, now_ms=NOW)
    assert exc.value.code == "limit_reached"
    assert (await _conserved(cat))["mug/default"].reserved == 0
    # the worker: reserved and paid were appended twice (the retries), the lines land once
    await upgrade(settings.database_url)
    await co.cancel(order_id=late, user=None, now_ms=NOW + 903_000, reason="timeout")  # its events again (same ids)
    worker = OrdersWorker(settings, redis=redis)
    try:
        await worker.drain()
        o = await worker.store.get_order(oid)
        b = await worker.store.get_order(late)
        got = await lines_of(worker.store, [oid, late])
    finally:
        await worker.close()
    assert o is not None and (o.state, o.sale_id, o.qty, o.amount) == ("paid", "cart", 3, 2500)
    assert b is not None and b.state == "cancelled"
    assert [(ln.n, ln.sku, ln.qty, ln.gift) for ln in got[oid]] == [(1, "red", 2, False), (2, "default", 1, False),
                                                                   (3, "sticker", 1, True)]
    assert [ln.sku for ln in got[late]] == ["blue"]


async def test_a_cart_orders_two_coupons_are_two_order_coupons_rows_written_once(redis: aioredis.Redis, keys: Keys,
                                                                                  settings: Any, store_url: str) -> None:
    from sqlalchemy import select

    from livecommerce.coupons import CouponDrop, coupon_id
    from livecommerce.coupons_redis import CouponsRedis
    from livecommerce.order_lines_sql import coupons_of
    from livecommerce.schema import order_coupons
    from workers.orders import OrdersWorker

    settings = settings.replace(database_url=store_url)  # SQLite and PostgreSQL
    await _catalog(redis, keys)
    coupons = CouponsRedis(redis, keys)
    ends = int(time.time() * 1000) + 3_600_000  # the drops' keys expire on Redis's clock
    for drop_id, room, value in (("shop1", "r1", 300), ("plat1", "", 200)):  # a room's drop, a platform coupon
        got = await coupons.grant("alice", CouponDrop(drop_id, room, "full_reduction", 1000, value, 10, ends,
                                                      "h1", NOW), now_ms=NOW)
        assert got is not None
    co = Checkout(redis, keys, RedisLog(redis, keys))
    oid = cart_order_id("alice", "two-coupons")
    lines = [Line("tee", "blue", 1), Line("mug", "", 1)]  # 1700
    order, _ = await co.cart.checkout(user="alice", room="r1", order_id=oid, lines=lines, coupon_ids=None, sales={}, now_ms=NOW)
    shop, plat = coupon_id("shop1", "alice"), coupon_id("plat1", "alice")
    assert sorted(order.coupons) == sorted([(shop, "shop", 300), (plat, "platform", 200)]) and order.amount == 1200
    await co.cart.checkout(user="alice", room="r1", order_id=oid, lines=lines, coupon_ids=None, sales={}, now_ms=NOW + 1)
    assert (await co.pay(order_id=oid, user="alice", now_ms=NOW + 10)).outcome == "paid"
    assert (await co.pay(order_id=oid, user="alice", now_ms=NOW + 11)).outcome == "already_paid"  # order.paid again
    await upgrade(settings.database_url)
    for _ in range(2):  # a second worker meets every event again: applied once
        worker = OrdersWorker(settings, redis=redis)
        try:
            await worker.drain()
            o = await worker.store.get_order(oid)
            got = await coupons_of(worker.store, [oid])
            async with worker.store.read() as tx:
                rows = (await tx.conn.execute(select(order_coupons).where(order_coupons.c.order_id == oid))).all()
        finally:
            await worker.close()
        assert o is not None and (o.state, o.amount, o.discount, o.coupon_id) == ("paid", 1200, 500, shop)  # old readers: the shop one
        assert got[oid] == [{"coupon_id": shop, "scope": "shop", "discount": 300},
                            {"coupon_id": plat, "scope": "platform", "discount": 200}]
        assert len(rows) == 2
