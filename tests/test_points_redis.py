"""The points adapter at the edge (``livecommerce/points_redis.py``), on real Redis: the
level the worker caches and the daily comment counter the gateway's cap relies on."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from livecommerce.errors import Unavailable
from livecommerce.keys import Keys
from livecommerce.points_redis import COMMENT_COUNT_TTL_S, PointsRedis


async def test_the_level_is_the_workers_cached_one_and_zero_when_unknown(redis: Redis, keys: Keys) -> None:
    points = PointsRedis(redis, keys)
    assert await points.level("fan") == 0
    await redis.hset(keys.user("fan", "points"), mapping={"balance": 495, "level": 3})  # as workers/points.py writes it
    assert await points.level("fan") == 3


async def test_comments_are_counted_per_user_and_day_and_the_count_expires(redis: Redis, keys: Keys) -> None:
    points = PointsRedis(redis, keys)
    assert [await points.count_comment("fan", 20000) for _ in range(3)] == [1, 2, 3]
    assert await points.count_comment("fan", 20001) == 1  # a new day starts again
    assert await points.count_comment("other", 20000) == 1
    ttl = await redis.ttl(keys.user("fan", "cmt:20000"))
    assert 0 < ttl <= COMMENT_COUNT_TTL_S


@pytest.mark.parametrize("users", [1, 300])
async def test_the_worker_caches_every_users_balances_and_levels_with_a_lifetime(redis: Redis, keys: Keys, users: int) -> None:
    """One user (a pipeline) or a worker's batch of users (one script call on a single Redis)."""
    points = PointsRedis(redis, keys)
    states = {f"u{i}": {"viewer": i, "host": 2 * i, "level": i % 4, "host_level": i % 3} for i in range(users)}
    await points.remember(states, ttl_s=120)
    for user, st in states.items():
        got = await redis.hgetall(keys.user(user, "points"))
        assert {k.decode(): int(v) for k, v in got.items()} == st
        assert 0 < await redis.ttl(keys.user(user, "points")) <= 120
        assert await points.level(user) == st["level"]


async def test_an_unreachable_redis_is_unavailable(keys: Keys) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    try:
        points = PointsRedis(dead, keys)
        with pytest.raises(Unavailable):
            await points.level("fan")
        with pytest.raises(Unavailable):
            await points.count_comment("fan", 20000)
    finally:
        await dead.aclose()
