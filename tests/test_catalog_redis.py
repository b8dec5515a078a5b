"""The catalogue's Redis adapter against real Redis: the Lua twins agree with the pure rules,
reservations never oversell under concurrency, stock is conserved, holds settle once."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis as sync_redis
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from livecommerce.catalog import (
    MAX_STOCK,
    SkuStock,
    decide_reserve,
    decide_stock,
    hold_step,
    merge_lines,
    validate_product,
)
from livecommerce.catalog_redis import RESERVE, SETTLE, STOCK, RedisCatalog, Refused, Reserved
from livecommerce.keys import Keys

NOW = 1_700_000_000_000
EXAMPLES = settings(max_examples=150, deadline=None)


def tee(stock: dict[str, int] | None = None, owner: str = "h1") -> Any:
    skus = [{"id": s, "attrs": {"colour": s}, "price": 1000 + i, "stock": (stock or {}).get(s, 0)} for i, s in enumerate("abc")]
    return validate_product({"id": "tee", "name": "Tee", "skus": skus}, owner=owner)


async def put_new(cat: RedisCatalog, draft: Any) -> None:
    assert (await cat.put(draft.product, expected_v=0, initial_stock=draft.stock, now_ms=NOW)).ok


# ---------------------------------------------------------------- parity (sync client, keys written directly)


class Lab:
    def __init__(self, client: sync_redis.Redis, prefix: str) -> None:
        self.r = client
        self.prefix = prefix
        self.reserve = client.register_script(RESERVE)
        self.settle = client.register_script(SETTLE)
        self.stock = client.register_script(STOCK)

    def keys(self, *parts: str) -> list[str]:
        k = Keys(f"{self.prefix}:{uuid.uuid4().hex[:8]}")
        return [k.entity("product", "p", part) for part in parts]


@pytest.fixture(scope="module")
def lab(redis_url: str) -> Iterator[Lab]:
    client = sync_redis.Redis.from_url(redis_url)
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield Lab(client, prefix)
    for k in client.scan_iter(match=f"{prefix}:*", count=1000):
        client.delete(k)
    client.close()


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


SKUS = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.tuples(st.booleans(), st.integers(0, 6)), max_size=3)
LINES = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 5)), min_size=1, max_size=4)


@EXAMPLES
@given(state=st.sampled_from([None, "active", "archived"]), skus=SKUS, lines=LINES,
       limits=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 6), max_size=3),
       bought=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 6), max_size=3),
       prices=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 3), max_size=3),
       priced=st.none() | st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 3), max_size=4))
def test_the_reserve_script_decides_as_the_rule(lab: Lab, state: Any, skus: dict[str, tuple[bool, int]],
                                                lines: list[tuple[str, int]], limits: dict[str, int],
                                                bought: dict[str, int], prices: dict[str, int],
                                                priced: dict[str, int] | None) -> None:
    meta, stock, held, off, holds, deadlines, bkey = ks = lab.keys("meta", "stock", "held", "off", "holds", "deadlines",
                                                                   "bought")
    if state is not None:
        definition = {"id": "p", "skus": [{"id": s, "price": p} for s, p in sorted(prices.items())]}
        lab.r.hset(meta, mapping={"state": state, "v": 1, "def": json.dumps(definition)})
    for sku, (archived, available) in skus.items():
        lab.r.hset(stock, sku, available)
        if archived:
            lab.r.sadd(off, sku)
    for sku, n in bought.items():
        lab.r.hset(bkey, f"u1|{sku}", n)
    merged = merge_lines(lines)
    argv: list[Any] = ["h1", "u1", NOW + 1000, NOW, json.dumps([list(x) for x in merged], separators=(",", ":")),
                       "" if priced is None else json.dumps(priced), len(merged)]
    for sku, qty in merged:
        argv += [sku, qty, limits.get(sku, 0)]
    raw = lab.reserve(keys=ks, args=argv)
    rule = decide_reserve(state, skus, merged, limits=limits, bought=bought, prices=prices, priced=priced)
    after = {_s(k): int(v) for k, v in lab.r.hgetall(stock).items()}
    if rule is None:
        assert _s(raw[0]) == "ok"
        assert after == {s: a - dict(merged).get(s, 0) for s, (_, a) in skus.items()}
        assert {_s(k): int(v) for k, v in lab.r.hgetall(held).items()} == dict(merged)
        assert lab.r.zscore(deadlines, "h1") == NOW + 1000
        counted = {_s(k): int(v) for k, v in lab.r.hgetall(bkey).items()}
        assert counted == {f"u1|{s}": bought.get(s, 0) + dict(merged).get(s, 0) for s in set(bought) | set(dict(merged))}
    else:
        assert (_s(raw[0]), _s(raw[1]) or None) == rule
        assert after == {s: a for s, (_, a) in skus.items()} and not lab.r.exists(held) and not lab.r.exists(holds)


@EXAMPLES
@given(state=st.sampled_from(["reserved", "paid", "cancelled"]), step=st.sampled_from(["pay", "release"]), late=st.booleans(),
       qty=st.integers(1, 5))
def test_the_settle_script_moves_a_hold_as_the_rule(lab: Lab, state: Any, step: Any, late: bool, qty: int) -> None:
    stock, held, sold, holds, deadlines, settled = ks = lab.keys("stock", "held", "sold", "holds", "deadlines", "settled")
    lab.r.hset(stock, "a", 10)
    lab.r.hset(held, "a", qty if state == "reserved" else 0)
    lab.r.hset(sold, "a", qty if state == "paid" else 0)
    lab.r.hset(holds, "h1", json.dumps({"u": "u1", "l": json.dumps([["a", qty]]), "s": state, "p": str(NOW), "t": str(NOW)}))
    if state == "reserved":
        lab.r.zadd(deadlines, {"h1": NOW})
    now = NOW + 1 if late else NOW
    raw = lab.settle(keys=ks, args=["h1", step, now])
    to, outcome = hold_step(state, step, now_ms=now, pay_by_ms=NOW)
    assert _s(raw[0]) == outcome
    assert json.loads(_s(lab.r.hget(holds, "h1")))["s"] == to
    moved = state == "reserved" and to != "reserved"
    assert int(_s(lab.r.hget(stock, "a"))) == 10 + (qty if moved and to == "cancelled" else 0)
    assert int(_s(lab.r.hget(held, "a"))) == (qty if to == "reserved" else 0)
    assert int(_s(lab.r.hget(sold, "a"))) == (qty if to == "paid" else 0)
    assert (lab.r.zscore(settled, "h1") is not None) == moved


@EXAMPLES
@given(units=st.builds(lambda a, r, s: SkuStock(a, r, s, a + r + s), st.integers(0, 20), st.integers(0, 5), st.integers(0, 5)),
       mode=st.sampled_from(["set", "add"]), n=st.integers(-30, 30))
def test_the_stock_script_changes_units_as_the_rule(lab: Lab, units: SkuStock, mode: str, n: int) -> None:
    if mode == "set" and n < 0:
        n = -n
    meta, stock, held, sold, stocked, moves = ks = lab.keys("meta", "stock", "held", "sold", "stocked", "moves")
    lab.r.hset(meta, "v", 1)
    for key, v in ((stock, units.available), (held, units.reserved), (sold, units.sold), (stocked, units.stocked)):
        lab.r.hset(key, "a", v)
    raw = lab.stock(keys=ks, args=["a", mode, n, MAX_STOCK, NOW, mode, "h1"])
    rule = decide_stock(units, set_to=n) if mode == "set" else decide_stock(units, add=n)
    if rule is None:
        assert _s(raw[0]) == "out_of_range" and int(_s(lab.r.hget(stock, "a"))) == units.available
    else:
        assert _s(raw[0]) == "ok"
        got = SkuStock(int(raw[1]), int(raw[2]), int(raw[3]), int(raw[4]))
        assert got == rule and got.conserved
        changed = rule.available != units.available
        assert (int(raw[5]) == 1) == changed and (lab.r.hexists(moves, "a/1") == changed)


# ---------------------------------------------------------------- the adapter


@pytest.fixture
async def cat(redis: aioredis.Redis, keys: Keys) -> RedisCatalog:
    return RedisCatalog(redis, keys)


async def test_five_hundred_concurrent_reserves_of_fifty_units_take_exactly_fifty(redis_url: str, keys: Keys,
                                                                                   redis: aioredis.Redis) -> None:
    from livecommerce.redis_conn import connect

    client = connect(redis_url)  # the gateway's client: a blocking pool of 128 connections
    try:
        await _rush(RedisCatalog(client, keys))
    finally:
        await client.aclose()


async def _rush(cat: RedisCatalog) -> None:
    await put_new(cat, tee({"a": 50}))

    async def one(i: int) -> Reserved | Refused:
        return await cat.reserve("tee", f"o{i}", f"u{i}", [("a", 1)], pay_by_ms=NOW + 60_000, now_ms=NOW)

    got = await asyncio.gather(*(one(i) for i in range(500)))
    ok = [g for g in got if isinstance(g, Reserved)]
    refused = [g for g in got if isinstance(g, Refused)]
    assert len(ok) == 50 and {r.reason for r in refused} == {"sold_out"} and len(refused) == 450
    assert sorted(a for r in ok for _, a in r.available) == list(range(50))  # each unit taken once
    _, units = await cat.read("tee")  # type: ignore[misc]
    assert units["a"] == SkuStock(0, 50, 0, 50)

    # mixed: pay some, release others, concurrently, twice each (retries): conserved, once each
    rng = random.Random(7)
    pay = {r.hold_id for r in ok if rng.random() < 0.5}

    async def settle(hold: str) -> str:
        if hold in pay:
            return await cat.pay("tee", hold, now_ms=NOW)
        return await cat.release("tee", hold, now_ms=NOW)

    outcomes = await asyncio.gather(*(settle(r.hold_id) for r in ok for _ in range(2)))
    assert sorted(outcomes).count("paid") == len(pay) and outcomes.count("already_paid") == len(pay)
    assert outcomes.count("released") == 50 - len(pay) and outcomes.count("already_released") == 50 - len(pay)
    _, units = await cat.read("tee")  # type: ignore[misc]
    assert units["a"] == SkuStock(50 - len(pay), 0, len(pay), 50) and units["a"].conserved
    # released units are sold again, no more
    again = await asyncio.gather(*(one(1000 + i) for i in range(100)))
    assert sum(isinstance(g, Reserved) for g in again) == 50 - len(pay)


async def test_a_hold_across_skus_is_all_or_nothing_and_its_retry_answers_the_first(cat: RedisCatalog) -> None:
    await put_new(cat, tee({"a": 2, "b": 1}))
    r = await cat.reserve("tee", "o1", "u1", [("a", 1), ("b", 2)], pay_by_ms=NOW + 1, now_ms=NOW)
    assert r == Refused("sold_out", "b", 1)
    _, units = await cat.read("tee")  # type: ignore[misc]
    assert (units["a"].available, units["b"].available) == (2, 1)  # nothing taken
    r = await cat.reserve("tee", "o1", "u1", [("a", 1), ("b", 1), ("a", 1)], pay_by_ms=NOW + 1, now_ms=NOW)
    assert isinstance(r, Reserved) and r.available == (("a", 0), ("b", 0)) and not r.duplicate
    again = await cat.reserve("tee", "o1", "u1", [("a", 2), ("b", 1)], pay_by_ms=NOW + 9, now_ms=NOW)
    assert isinstance(again, Reserved) and again.duplicate and again.pay_by_ms == NOW + 1
    assert await cat.reserve("tee", "o1", "u2", [("a", 2), ("b", 1)], pay_by_ms=NOW, now_ms=NOW) == Refused("hold_exists")
    hold = await cat.hold("tee", "o1")
    assert hold is not None and hold.lines == (("a", 2), ("b", 1)) and hold.state == "reserved"
    assert await cat.due("tee", NOW + 1) == ["o1"]
    assert await cat.pay("tee", "o1", now_ms=NOW + 2) == "expired"
    assert await cat.release("tee", "o1", now_ms=NOW + 2) == "released"
    assert await cat.due("tee", NOW + 1) == []
    assert await cat.release("tee", "nope", now_ms=NOW) == "unknown"


async def test_archived_products_and_skus_take_no_reservation(cat: RedisCatalog) -> None:
    d = tee({"a": 3, "b": 3})
    await put_new(cat, d)
    p = d.product
    from dataclasses import replace

    from livecommerce.catalog import SkuPatch, patch_sku

    off = patch_sku(replace(p, v=1), "b", SkuPatch(state="archived"))
    assert (await cat.put(off, expected_v=1, initial_stock={}, now_ms=NOW)).ok
    assert await cat.reserve("tee", "o1", "u", [("b", 1)], pay_by_ms=NOW, now_ms=NOW) == Refused("sku_archived", "b", 3)
    assert await cat.reserve("tee", "o1", "u", [("z", 1)], pay_by_ms=NOW, now_ms=NOW) == Refused("no_sku", "z", 0)
    assert (await cat.put(replace(off, state="archived"), expected_v=2, initial_stock={}, now_ms=NOW)).ok
    assert await cat.reserve("tee", "o1", "u", [("a", 1)], pay_by_ms=NOW, now_ms=NOW) == Refused("archived")
    assert await cat.reserve("nope", "o1", "u", [("a", 1)], pay_by_ms=NOW, now_ms=NOW) == Refused("no_product")


async def test_a_hold_priced_at_a_price_that_is_no_longer_the_skus_is_refused_and_takes_nothing(
        cat: RedisCatalog, redis: aioredis.Redis) -> None:
    from dataclasses import replace

    from livecommerce.catalog import SkuPatch, patch_sku

    d = tee({"a": 3, "b": 3})  # a at 1000, b at 1001
    await put_new(cat, d)
    ok = await cat.reserve("tee", "o1", "u", [("a", 1)], pay_by_ms=NOW + 9, now_ms=NOW, priced={"a": 1000})
    assert isinstance(ok, Reserved)
    dearer = patch_sku(replace(d.product, v=1), "b", SkuPatch(price=1500))
    assert (await cat.put(dearer, expected_v=1, initial_stock={}, now_ms=NOW)).ok
    got = await cat.reserve("tee", "o2", "u", [("a", 1), ("b", 1)], pay_by_ms=NOW + 9, now_ms=NOW,
                            priced={"a": 1000, "b": 1001})
    assert got == Refused("price_changed", "b", 1500)
    _, units = await cat.read("tee")  # type: ignore[misc]
    assert (units["a"].available, units["a"].reserved, units["b"].available, units["b"].reserved) == (2, 1, 3, 0)
    assert await cat.hold("tee", "o2") is None
    # priced at the price now (a name change alone does not matter): held
    renamed = replace(dearer, name="Tee II", v=2)
    assert (await cat.put(renamed, expected_v=2, initial_stock={}, now_ms=NOW)).ok
    again = await cat.reserve("tee", "o3", "u", [("a", 1), ("b", 1)], pay_by_ms=NOW + 9, now_ms=NOW,
                              priced={"a": 1000, "b": 1500})
    assert isinstance(again, Reserved) and again.lines == (("a", 1), ("b", 1))
    # a bare pin-era product: its one 'default' SKU is at the meta's price
    await redis.hset(cat.key("mug", "meta"), mapping={"name": "Mug", "price": 500, "state": "active"})
    await redis.hset(cat.key("mug", "stock"), "default", 2)
    assert await cat.reserve("mug", "o4", "u", [("default", 1)], pay_by_ms=NOW + 9, now_ms=NOW,
                             priced={"default": 400}) == Refused("price_changed", "default", 500)
    assert isinstance(await cat.reserve("mug", "o4", "u", [("default", 1)], pay_by_ms=NOW + 9, now_ms=NOW,
                                        priced={"default": 500}), Reserved)


async def test_a_definition_is_stored_with_a_version_check_and_new_skus_get_their_stock(cat: RedisCatalog) -> None:
    d = tee({"a": 5})
    first = await cat.put(d.product, expected_v=0, initial_stock=d.stock, now_ms=NOW)
    assert first.ok and first.v == 1 and [(m.sku, m.delta, m.seq) for m in first.moves] == [("a", 5, 1)]
    assert not (await cat.put(d.product, expected_v=0, initial_stock=d.stock, now_ms=NOW)).ok  # lost the race
    stored = await cat.read("tee")
    assert stored is not None and stored[0].v == 1 and stored[0].definition() == d.product.definition()
    # storing again over v1 keeps the units the SKUs have
    await cat.change_stock("tee", "a", add=-2, now_ms=NOW, by="h1")
    second = await cat.put(stored[0], expected_v=1, initial_stock={"a": 99}, now_ms=NOW + 5)
    assert second.ok and second.v == 2 and second.moves == ()
    p, units = await cat.read("tee")  # type: ignore[misc]
    assert units["a"] == SkuStock(3, 0, 0, 3) and (p.created_ms, p.updated_ms) == (NOW, NOW + 5)
    assert [(m.seq, m.delta, m.reason) for m in await cat.moves("tee")] == [(1, 5, "create"), (2, -2, "add")]
    assert await cat.ids() == ["tee"]


async def test_stock_changes_stay_in_range_and_name_what_is_missing(cat: RedisCatalog) -> None:
    from livecommerce.errors import NotFound

    await put_new(cat, tee({"a": 1}))
    assert (await cat.change_stock("tee", "a", add=-2, now_ms=NOW)).outcome == "out_of_range"
    same = await cat.change_stock("tee", "a", set_to=1, now_ms=NOW)
    assert same.outcome == "ok" and same.move is None
    with pytest.raises(NotFound):
        await cat.change_stock("tee", "zz", set_to=1, now_ms=NOW)
    with pytest.raises(NotFound):
        await cat.change_stock("nope", "a", set_to=1, now_ms=NOW)


async def test_a_pin_era_product_reads_as_one_sku_and_is_adopted_by_its_first_definition(cat: RedisCatalog,
                                                                                      redis: aioredis.Redis) -> None:
    from livecommerce.pins import Product as PinProduct
    from livecommerce.pins_redis import RedisPins

    pins = RedisPins(redis, cat.keys)
    await pins.put_product(PinProduct("old", "Old tea", 900, "", "tea"))
    p, units = await cat.read("old")  # type: ignore[misc]
    assert (p.owner, p.v, [s.id for s in p.skus], p.skus[0].price, units["default"]) == ("", 0, ["default"], 900, SkuStock())
    d = validate_product({"id": "old", "name": "Old tea", "price": 950, "stock": 4, "category": "tea"})
    assert (await cat.put(d.product, expected_v=0, initial_stock=d.stock, now_ms=NOW)).ok
    pinned = await pins.get_product("old")
    assert pinned is not None and (pinned.name, pinned.price, pinned.category) == ("Old tea", 950, "tea")  # pins read the same hash



async def test_read_many_answers_what_each_read_answers_in_one_round_trip(cat: RedisCatalog, redis: aioredis.Redis) -> None:
    from livecommerce.pins import Product as PinProduct
    from livecommerce.pins_redis import RedisPins

    await RedisPins(redis, cat.keys).put_product(PinProduct("old", "Old tea", 900, "", "tea"))  # a pin-era product
    d = validate_product({"id": "tee", "name": "Tee", "skus": [{"id": "red", "attrs": {"colour": "red"}, "price": 1000, "stock": 5},
                                                               {"id": "blue", "attrs": {"colour": "blue"}, "price": 1200, "stock": 2}]})
    assert (await cat.put(d.product, expected_v=0, initial_stock=d.stock, now_ms=NOW)).ok
    assert isinstance(await cat.reserve("tee", "h1", "u1", [("red", 2)], pay_by_ms=NOW + 60_000, now_ms=NOW), Reserved)
    ids = ["tee", "nope", "old", "tee"]
    assert await cat.read_many(ids) == {pid: await cat.read(pid) for pid in ids}
    got = await cat.read_many(ids)
    assert list(got) == ["tee", "nope", "old"] and got["nope"] is None
    assert got["tee"] is not None and got["tee"][1]["red"] == SkuStock(3, 2, 0, 5)
    assert await cat.read_many([]) == {}

async def test_settled_holds_and_recorded_moves_are_pruned(cat: RedisCatalog) -> None:
    await put_new(cat, tee({"a": 5}))
    for i in range(3):
        await cat.reserve("tee", f"o{i}", "u", [("a", 1)], pay_by_ms=NOW + 10, now_ms=NOW)
    await cat.pay("tee", "o0", now_ms=NOW)
    await cat.release("tee", "o1", now_ms=NOW + 5)
    moves = await cat.moves("tee")
    assert await cat.prune("tee", settled_before_ms=NOW + 1, moves=moves) == (1, 1)
    assert [h.id for h in await cat.holds("tee")] == ["o1", "o2"] and await cat.moves("tee") == []
