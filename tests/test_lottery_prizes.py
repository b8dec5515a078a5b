"""Prizes that arrive (M2 5/7 item 6): a lottery's coin and coupon prizes are paid to each
winner exactly once by the draw worker, on real Redis, the Redis Streams log, SQL (the wallet
ledger) and real gateways; who may offer which prize; bad prizes answer 4xx."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from livecommerce.broker_redis import RedisBroker
from livecommerce.coupons import CouponDrop
from livecommerce.coupons_redis import CouponsRedis
from livecommerce.errors import BadFrame
from livecommerce.keys import Keys
from livecommerce.log_redis import RedisLog
from livecommerce.lottery import (
    MAX_COIN_PRIZE,
    Prize,
    award_key,
    coupon_terms,
    new_lottery,
    new_seed,
    parse_prize,
)
from livecommerce.lottery_redis import RedisLotteries
from livecommerce.notify import Notifier
from livecommerce.store_sql import SqlStore
from livecommerce.wallet_redis import RedisWallet
from tests.wsclient import Client, next_of
from workers.lottery import LotteryDrawer, PrizeAwarder
from workers.wallet import drain


# ---------------------------------------------------------------- the rule
def test_a_prize_is_a_product_a_coupon_drop_or_coins() -> None:
    assert parse_prize({"kind": "product", "id": "p1"}) == Prize("product", "p1")
    assert parse_prize({"kind": "coupon", "id": "d1"}) == Prize("coupon", "d1")
    assert parse_prize({"kind": "coins", "amount": 88}) == Prize("coins", "", 88)
    assert Prize("coins", "", 88).to_dict() == {"kind": "coins", "amount": 88}
    terms = coupon_terms("full_reduction", 9900, 1000)
    assert Prize("coupon", "d1", coupon=terms).to_dict() == {"kind": "coupon", "id": "d1", "coupon": terms}
    for bad in ({"kind": "coins"}, {"kind": "coins", "amount": 0}, {"kind": "coins", "amount": MAX_COIN_PRIZE + 1},
                {"kind": "coins", "amount": True}, {"kind": "cash", "id": "x"}, {"kind": "coupon"}, "coins", None):
        with pytest.raises(BadFrame):
            parse_prize(bad)


# ---------------------------------------------------------------- the worker, exactly once
async def _drawn(redis: aioredis.Redis, keys: Keys, prize: dict[str, Any], entrants: list[str], k: int,
                 coupon: dict[str, Any] | None = None) -> tuple[RedisLotteries, str]:
    store = RedisLotteries(redis, keys)
    seed = new_seed(secrets.token_bytes(32))
    lot = new_lottery({"prize": prize, "winners": k, "duration_s": 1}, id=secrets.token_hex(6), room="pr1", host="h",
                      now_ms=int(time.time() * 1000) - 5_000, seed=seed)
    if coupon is not None:
        lot = replace(lot, prize=Prize("coupon", prize["id"], coupon=coupon))  # as the gateway copies them
    await store.create(lot, seed)
    for u in entrants:
        assert (await store.enter(lot.id, u, now_ms=lot.started_ms + 1))[0] == "ok"
    return store, lot.id


async def test_coin_prizes_are_paid_once_per_winner_even_when_racing_drawers_and_a_repeat_announce(
        redis: aioredis.Redis, keys: Keys, store: SqlStore) -> None:
    entrants = [f"cw{i}" for i in range(12)]
    lots, lid = await _drawn(redis, keys, {"kind": "coins", "amount": 50}, entrants, k=5)
    wallet, log = RedisWallet(redis, keys), RedisLog(redis, keys)

    class Offline:
        async def to_user(self, user: str, env: dict[str, Any], *, room: str | None = None) -> int:
            return 0

    def drawer(name: str) -> LotteryDrawer:
        awarder = PrizeAwarder(wallet, CouponsRedis(redis, keys), log, Offline())  # type: ignore[arg-type]
        return LotteryDrawer.for_redis(redis, keys, worker=name, hooks=[awarder])

    a, b = drawer("wa"), drawer("wb")
    outs = await asyncio.gather(a.drain(), b.drain())
    winners = next(o.winners for out in outs for o in out if o.action == "drawn")
    assert len(winners) == 5 and set(winners) <= set(entrants)
    # the announcement repeated (a crash after the payout, before `announced`): nobody paid twice
    again = PrizeAwarder(wallet, CouponsRedis(redis, keys), log, Offline())  # type: ignore[arg-type]
    st = await lots.get(lid)
    assert st is not None and st.record is not None
    await again(st.record)
    for u in entrants:
        assert await wallet.balance(u) == (50 if u in winners else 0), u
    # each credit is on the ledger once: the wallet worker applies the log to SQL
    assert await drain(log, store, fetch_timeout_ms=100) == 5
    for u in winners:
        assert await store.wallet_balance(u) == 50
        rows = await store.wallet_ledger(u)
        assert len(rows) == 1
    assert award_key(lid) == f"lottery:{lid}"


async def test_coupon_prizes_give_each_winner_one_coupon_on_the_drops_terms(redis: aioredis.Redis, keys: Keys) -> None:
    coupons = CouponsRedis(redis, keys)
    terms = coupon_terms("full_reduction", 9900, 1500)
    lots, lid = await _drawn(redis, keys, {"kind": "coupon", "id": "srcdrop"}, ["c1", "c2", "c3"], k=2, coupon=terms)

    class Offline:
        async def to_user(self, user: str, env: dict[str, Any], *, room: str | None = None) -> int:
            return 0

    awarder = PrizeAwarder(RedisWallet(redis, keys), coupons, None, Offline())  # type: ignore[arg-type]
    out = await LotteryDrawer.for_redis(redis, keys, worker="w1", hooks=[awarder]).drain()
    winners = out[0].winners
    st = await lots.get(lid)
    assert st is not None and st.record is not None
    await awarder(st.record)  # repeated: still one coupon each
    now = int(time.time() * 1000)
    for u in ("c1", "c2", "c3"):
        mine = [c for c in await coupons.user_coupons(u, now_ms=now) if lid in str(c.get("drop_id", ""))]
        if u in winners:
            assert len(mine) == 1, mine
            assert (mine[0]["kind"], mine[0]["threshold"], mine[0]["value"]) == ("full_reduction", 9900, 1500)
        else:
            assert mine == []


# ---------------------------------------------------------------- the gateway: who offers what
async def _post(http: aiohttp.ClientSession, url: str, tok: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(url, json=body, headers={"Authorization": f"Bearer {tok}"}) as r:
        return r.status, await r.json()


async def test_only_ops_offer_coins_and_a_coupon_prize_names_a_drop_of_the_room(gateway_factory: Any, token: Any,
                                                                                 redis: aioredis.Redis, keys: Keys) -> None:
    node = await gateway_factory()
    room = f"pz{secrets.token_hex(3)}"
    host, ops = token("h", "host", (room,)), token("ops1", "ops")
    url = f"{node.url}/api/v1/rooms/{room}/lotteries"
    async with aiohttp.ClientSession() as http:
        status, body = await _post(http, f"{node.url}/api/v1/rooms", host, {"id": room})
        assert status == 201, body
        status, body = await _post(http, url, host, {"prize": {"kind": "coins", "amount": 10}, "duration_s": 30})
        assert status == 403 and "ask ops" in body["error"]["message"], body
        status, body = await _post(http, url, host, {"prize": {"kind": "coins", "amount": 0}, "duration_s": 30})
        assert status in (400, 422) and body["error"]["code"] in ("bad_request", "invalid"), body
        status, body = await _post(http, url, ops, {"prize": {"kind": "coins", "amount": 10}, "duration_s": 30})
        assert status == 201 and body["prize"] == {"kind": "coins", "amount": 10}, body
        status, body = await _post(http, url, host, {"prize": {"kind": "coupon", "id": "nosuchdrop"}, "duration_s": 30})
        assert status == 404 and "drop one first" in body["error"]["message"], body
        now = int(time.time() * 1000)
        await CouponsRedis(redis, keys).create_drop(CouponDrop(
            id=f"d{room}", room=room, kind="full_reduction", threshold=5000, value=500, quantity=10,
            expires_ms=now + 60_000, created_by="h", created_ms=now))
        status, body = await _post(http, url, host, {"prize": {"kind": "coupon", "id": f"d{room}"}, "duration_s": 30})
        assert status == 201, body
        assert body["prize"] == {"kind": "coupon", "id": f"d{room}", "coupon": coupon_terms("full_reduction", 5000, 500)}


async def test_a_winner_online_hears_prize_awarded_with_the_new_balance(gateway_factory: Any, token: Any,
                                                                         redis: aioredis.Redis, keys: Keys) -> None:
    node = await gateway_factory()
    room = f"pw{secrets.token_hex(3)}"
    viewer = await Client.connect(node.ws, room, token("lucky"))
    ops = await Client.connect(node.ws, room, token("ops1", "ops"))
    started = await ops.request("lottery.start", prize={"kind": "coins", "amount": 77}, winners=1, duration_s=1)
    assert started["t"] == "ack", started
    entered = await viewer.request("lottery.enter", lottery_id=started["d"]["id"])
    assert entered["t"] == "ack", entered
    await asyncio.sleep(1.1)
    awarder = PrizeAwarder(RedisWallet(redis, keys), CouponsRedis(redis, keys), RedisLog(redis, keys),
                           Notifier(redis, RedisBroker(redis, keys), keys))
    drawer = LotteryDrawer.for_redis(redis, keys, worker="w1", hooks=[awarder])
    out = await drawer.drain()
    assert [o.winners for o in out if o.lottery_id == started["d"]["id"]] == [["lucky"]]
    won = await next_of(viewer, "prize.awarded")
    assert won["d"]["lottery_id"] == started["d"]["id"] and won["d"]["amount"] == 77 and won["d"]["balance"] == 77
    for c in (viewer, ops):
        await c.close()


async def test_a_payout_cut_short_is_finished_by_the_worker_that_takes_over_and_pays_nobody_twice(
        redis: aioredis.Redis, keys: Keys) -> None:
    entrants = [f"cx{i}" for i in range(8)]
    lots, lid = await _drawn(redis, keys, {"kind": "coins", "amount": 30}, entrants, k=4)

    class Offline:
        async def to_user(self, user: str, env: dict[str, Any], *, room: str | None = None) -> int:
            return 0

    class Dies(RedisWallet):
        """Redis goes away after the second credit (the worker loses it mid-payout)."""
        calls = 0

        async def topup(self, **kw: Any) -> Any:
            Dies.calls += 1
            if Dies.calls > 2:
                raise ConnectionError("redis went away")
            return await super().topup(**kw)

    first = LotteryDrawer.for_redis(redis, keys, worker="w1", lease_ms=200,
                                    hooks=[PrizeAwarder(Dies(redis, keys), CouponsRedis(redis, keys), None, Offline())])  # type: ignore[arg-type]
    assert await first.drain() == []  # the hook failed: logged, the lottery stays drawn
    st = await lots.get(lid)
    assert st is not None and st.state == "drawn" and st.record is not None
    winners = st.record["winners"]
    wallet = RedisWallet(redis, keys)
    assert sorted([await wallet.balance(u) for u in winners]) == [0, 0, 30, 30]
    await asyncio.sleep(0.25)  # the first worker's lease runs out
    second = LotteryDrawer.for_redis(redis, keys, worker="w2", lease_ms=200,
                                     hooks=[PrizeAwarder(wallet, CouponsRedis(redis, keys), None, Offline())])  # type: ignore[arg-type]
    out = await second.drain(now_ms=int(time.time() * 1000))
    assert [o.action for o in out] == ["republished"]
    assert [await wallet.balance(u) for u in winners] == [30] * 4
    assert sum([await wallet.balance(u) for u in entrants]) == 120
    st = await lots.get(lid)
    assert st is not None and st.state == "announced"


async def test_product_prizes_become_one_zero_price_paid_order_per_winner_in_sql(
        gateway_factory: Any, settings: Any, redis: aioredis.Redis, keys: Keys, token: Any) -> None:
    from livecommerce.lottery import prize_order_id, prize_sale_id
    from workers.orders import OrdersWorker

    node = await gateway_factory()  # its SQL schema is the one the orders worker writes
    entrants = [f"pp{i}" for i in range(6)]
    lots, lid = await _drawn(redis, keys, {"kind": "product", "id": "tea-set"}, entrants, k=2)

    class Offline:
        async def to_user(self, user: str, env: dict[str, Any], *, room: str | None = None) -> int:
            return 0

    log = RedisLog(redis, keys)
    awarder = PrizeAwarder(RedisWallet(redis, keys), CouponsRedis(redis, keys), log, Offline())  # type: ignore[arg-type]
    out = await LotteryDrawer.for_redis(redis, keys, worker="w1", hooks=[awarder]).drain()
    winners = out[0].winners
    st = await lots.get(lid)
    assert st is not None and st.record is not None
    await awarder(st.record)  # repeated after a crash: the same events again
    assert node is not None
    worker = OrdersWorker(settings)
    try:
        await worker.drain()
        orders = await worker.store.list_orders(sale_id=prize_sale_id(lid), limit=10)
    finally:
        await worker.close()
    assert sorted(o.id for o in orders) == sorted(prize_order_id(lid, u) for u in winners)
    assert all((o.state, o.amount, o.qty, o.unit_price, o.room_id) == ("paid", 0, 1, 0, "pr1") for o in orders)
    assert {o.user_id for o in orders} == set(winners)
