"""What the workers are built from: the shared wiring (``workers.wiring.Engines``), the one
clock, the one envelope builder, and the library reads the workers use instead of raw Redis
(holds, active sales, a sale's lifetime, the points cache)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from livecommerce import clock
from livecommerce.checkout import Checkout
from livecommerce.config import Settings
from livecommerce.flash_sale import Sale
from livecommerce.keys import Keys
from livecommerce.log import MemoryLog
from livecommerce.points_redis import PointsRedis
from livecommerce.protocol.events import envelope
from workers.wiring import Engines


def test_the_clock_is_the_wall_clock_in_milliseconds() -> None:
    before = int(time.time() * 1000)
    assert before <= clock.now_ms() <= int(time.time() * 1000)
    assert abs(clock.now_s() - time.time()) < 2


def test_a_room_event_carries_its_room_and_a_private_one_none() -> None:
    assert envelope("sale.ended", "r1", {"sale_id": "s"}, ts=5) == {"t": "sale.ended", "room": "r1", "ts": 5, "d": {"sale_id": "s"}}
    assert list(envelope("points", None, {"balance": 1}, ts=5)) == ["t", "ts", "d"]
    assert envelope("comment", "r1", {}, ts=5, seq=9)["seq"] == 9


class CountingLog(MemoryLog):
    closes = 0

    async def close(self) -> None:
        self.closes += 1
        await super().close()


async def test_engines_close_what_they_made_and_leave_what_they_were_given(settings: Settings, redis: aioredis.Redis) -> None:
    given_log = CountingLog()
    e = Engines(settings, redis=redis, durable=given_log)
    assert e.redis is redis and e.log is given_log and e.keys.prefix == settings.key_prefix
    assert e.notifier is e.notifier and e.broker is e.broker and e.store is e.store  # each made once
    await e.close()
    await e.close()  # closing twice closes nothing twice
    assert await redis.ping()  # the given client is still open
    assert given_log.closes == 0


async def test_engines_build_their_own_client_and_log_from_the_settings(settings: Settings) -> None:
    async with Engines(settings) as e:
        await e.log.append("orders", "k", "order.test", {"x": 1})
        assert await e.redis.ping()
        assert await e.broker.publish_room("wiring-room", envelope("notice", "wiring-room", {}, ts=clock.now_ms()),
                                           now_ms=clock.now_ms()) > 0


async def test_holds_active_sales_and_lifetime_come_from_the_library(redis: aioredis.Redis, keys: Keys) -> None:
    checkout = Checkout(redis, keys, MemoryLog())
    now = clock.now_ms()
    await checkout.create_sale(Sale("wired", "room", "p", 250, 20, 5, now - 1000, now + 600_000))
    await checkout.sales.start("wired", now)
    reserved = await checkout.buy(user="u1", sale_id="wired", qty=2, request_id="q1", now_ms=now)
    assert not isinstance(reserved, str)
    holds = await checkout.sales.holds("wired")
    assert [(h.order_id, h.user, h.qty, h.state, h.request_id) for h in holds] == [(reserved.order_id, "u1", 2, "reserved", "q1")]
    assert await checkout.sales.holds("nothing") == []
    assert "wired" in await checkout.active_sales()
    assert await checkout.sales.lifetime_left_ms("wired") == -1  # not settled: no expiry yet
    assert await checkout.sales.lifetime_left_ms("gone") == -2
    await checkout.forget_active("wired")
    assert "wired" not in await checkout.active_sales()


async def test_the_points_cache_holds_what_the_worker_computed_until_it_expires(redis: aioredis.Redis, keys: Keys) -> None:
    cache = PointsRedis(redis, keys)
    await cache.remember({"u1": {"viewer": 30, "host": 0, "level": 2, "host_level": 0}}, ttl_s=120)
    await cache.remember({}, ttl_s=120)
    assert await cache.level("u1") == 2
    assert {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in (await redis.hgetall(keys.user("u1", "points"))).items()} == {
        "viewer": 30, "host": 0, "level": 2, "host_level": 0}
    assert 0 < await redis.ttl(keys.user("u1", "points")) <= 120
