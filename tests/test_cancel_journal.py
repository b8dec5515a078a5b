"""A flash-sale cancel is journaled until its ``order.cancelled`` is on the log: a process
killed between the hold's release in Redis and the append (the chaos rush saw it once: an
orders worker killed mid time-out sweep, the order cancelled in Redis and still reserved in
SQL) is completed by the next time-out sweep, once, on real Redis and the Redis log."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from livecommerce.checkout import Checkout
from livecommerce.errors import Unavailable
from livecommerce.flash_sale import Sale
from livecommerce.keys import Keys
from livecommerce.log_redis import RedisLog


class DiesAtTheCancelAppend(RedisLog):
    """The real Redis log, whose process 'dies' (the append never happens) at the first
    ``order.cancelled``: what a kill -9 between the release and the append leaves."""

    died = False

    async def append(self, topic: str, key: str, type: str, data: dict[str, Any], **kw: Any) -> Any:
        if type == "order.cancelled" and not self.died:
            self.died = True
            raise Unavailable("killed between the release and the append")
        return await super().append(topic, key, type, data, **kw)


async def cancelled_events(log: RedisLog, redis: aioredis.Redis) -> list[str]:
    out = []
    for topic, part in await log.streams():
        for _, fields in await redis.xrange(log.stream(topic, part)):
            text = " ".join(str(v) for v in fields.values())
            if "order.cancelled" in text:
                out.append(text)
    return out


async def test_a_cancel_killed_before_its_append_is_completed_by_the_next_sweep_once(redis: aioredis.Redis,
                                                                                       keys: Keys) -> None:
    log = DiesAtTheCancelAppend(redis, keys)
    co = Checkout(redis, keys, log)
    now = int(time.time() * 1000)
    await co.create_sale(Sale("s1", "r1", "p1", 500, 5, 3, now - 1000, now + 60_000, payment_window_s=60))
    await co.sales.start("s1", now)
    held = await co.buy(user="u1", sale_id="s1", qty=2, request_id="a", now_ms=now)
    assert not isinstance(held, str)
    due = held.pay_by_ms
    try:
        await co.expire_due(due)  # the sweep releases the hold, then its process dies
        raise AssertionError("the append should have failed")
    except Unavailable:
        pass
    st = await co.sales.stats("s1")
    assert (st.remaining, st.reserved) == (5, 0)  # released in Redis ...
    assert await cancelled_events(log, redis) == []  # ... and nothing on the log
    assert await co.expire_due(due + 1000) == []  # a cancel younger than 5 s may still be running: left alone
    done = await co.expire_due(due + 6000)  # the next sweep after that completes it
    assert done == [(held.order_id, "already_released")]
    events = await cancelled_events(log, redis)
    assert len(events) == 1 and held.order_id in events[0] and "timeout" in events[0]
    assert await co.expire_due(due + 12_000) == []  # once
    assert len(await cancelled_events(log, redis)) == 1
    st = await co.sales.stats("s1")
    assert (st.remaining, st.reserved, st.paid) == (5, 0, 0)  # the units went back once
    assert await redis.zcard(keys.global_key("orders:cancelling")) == 0
