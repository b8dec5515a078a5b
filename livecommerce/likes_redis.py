"""Redis adapter of room like counters: ``{room:ID}:likes`` (INCRBY), which lives
``retention_s`` after its last like (docs/retention.md).

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .keys import Keys
from .redis_conn import guarded


class RedisLikes:
    def __init__(self, redis: Any, keys: Keys, *, retention_s: int) -> None:
        self.redis = redis
        self.keys = keys
        self.retention_s = retention_s

    async def add_and_read(self, deltas: Mapping[str, int], rooms: Iterable[str]) -> dict[str, int]:
        """Add each room's delta and return the exact total of every room in ``rooms`` (and
        of every room with a delta), in one pipelined round trip.

        Raises:
            Unavailable: Redis unreachable (nothing is known to be added).
        """
        order = list(dict.fromkeys([*deltas, *rooms]))
        if not order:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for room in order:
            key = self.keys.room_likes(room)
            if deltas.get(room):
                pipe.incrby(key, deltas[room])
                pipe.expire(key, self.retention_s)
            else:
                pipe.get(key)
        async with guarded():
            res = await pipe.execute()
        out: dict[str, int] = {}
        i = 0
        for room in order:
            out[room] = int(res[i] or 0)
            i += 2 if deltas.get(room) else 1
        return out

    async def total(self, room: str) -> int:
        async with guarded():
            v = await self.redis.get(self.keys.room_likes(room))
        return int(v or 0)
