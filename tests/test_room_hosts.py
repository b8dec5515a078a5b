"""The one room-host lookup (``RedisRooms.host`` / ``hosts`` / ``room_host``), on real Redis.

Gifts (and through it refunds and fan badges) ask "whose room is this?" of the room's meta
hash this way; these are the answers they rely on.
"""

from __future__ import annotations

from redis.asyncio import Redis

from livecommerce.keys import Keys
from livecommerce.rooms import RoomInfo
from livecommerce.rooms_redis import RedisRooms, room_host


async def test_a_created_room_answers_its_host_and_an_unknown_room_none(redis: Redis, keys: Keys) -> None:
    rooms = RedisRooms(redis, keys)
    assert await rooms.create(RoomInfo("r1", "Tea", "h1", 1))
    assert await rooms.host("r1") == "h1"
    assert await rooms.host("nosuch") is None
    assert await room_host(redis, keys, "r1") == "h1"  # the same read without an adapter
    assert await room_host(redis, keys, "nosuch") is None


async def test_many_rooms_are_answered_in_one_call_in_any_order(redis: Redis, keys: Keys) -> None:
    rooms = RedisRooms(redis, keys)
    await rooms.create(RoomInfo("a", "", "ha", 1))
    await rooms.create(RoomInfo("b", "", "hb", 1))
    assert await rooms.hosts(["b", "nosuch", "a"]) == {"b": "hb", "nosuch": None, "a": "ha"}
    assert await rooms.hosts([]) == {}


async def test_the_host_survives_the_shows_life_cycle(redis: Redis, keys: Keys) -> None:
    rooms = RedisRooms(redis, keys)
    await rooms.create(RoomInfo("r", "", "h", 1))
    assert (await rooms.transition("r", "created", "live", now_ms=2, online=0))[0]
    assert (await rooms.transition("r", "live", "ended", now_ms=3, online=0))[0]
    assert await rooms.host("r") == "h"

