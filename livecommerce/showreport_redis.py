"""Redis side of the show report: the show's distinct viewers and the host's follower marks.

Keys (the room's slot, ``{room:ID}``):

* ``{room:ID}:viewers``: HyperLogLog of the viewers of the current show (PFADD by every
  gateway once a second; ``rooms_step.lua`` empties it when a show starts); it expires
  ``ttl_s`` after the last add.
* ``{room:ID}:meta`` fields ``followers_base`` / ``followers_end``: the host's follower count
  at ``go_live`` and at the end, each written once per show (:data:`MARK`: only while the
  meta's ``live_ms`` is that show's, and only the first write), so repeated or concurrent
  go-lives and ends on several nodes agree. ``rooms_step.lua`` clears both at ``go_live``.

The follower count is the size of ``{fan:HOST}:followers`` (another slot, read apart: the
profiles worker keeps it from the follow events). Driver errors become
:class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .keys import Keys
from .redis_conn import guarded
from .retention import ROOM_RETENTION_S

MARK = """
-- KEYS[1] the room's meta hash; ARGV[1] the show's live_ms, ARGV[2] field, ARGV[3] value
if redis.call('HGET', KEYS[1], 'live_ms') ~= ARGV[1] then return 0 end
return redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3])
"""


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class ShowReportRedis:
    def __init__(self, redis: Any, keys: Keys, *, ttl_s: int = ROOM_RETENTION_S) -> None:
        self._r = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self._mark = redis.register_script(MARK)

    def _viewers(self, room: str) -> str:
        return self.keys.room(room, "viewers")

    async def add_viewers(self, joins: Mapping[str, Iterable[str]]) -> None:
        """PFADD each room's viewers to its show's counter (one pipeline)."""
        pipe = self._r.pipeline(transaction=False)
        n = 0
        for room, users in joins.items():
            us = list(users)
            if us:
                pipe.pfadd(self._viewers(room), *us)
                pipe.expire(self._viewers(room), self.ttl_s)
                n += 1
        if n:
            async with guarded():
                await pipe.execute()

    async def followers(self, host: str) -> int:
        """The host's follower count now."""
        async with guarded():
            return int(await self._r.scard(self.keys.entity("fan", host, "followers")))

    async def mark_followers(self, room: str, live_ms: int, field: str, count: int) -> bool:
        """Record ``field`` (``followers_base`` or ``followers_end``) for the show that went
        live at ``live_ms``, unless recorded; True when written now."""
        async with guarded():
            return bool(int(await self._mark(keys=[self.keys.room_meta(room)], args=[live_ms, field, count])))

    async def viewer_counts(self, rooms: Iterable[str]) -> dict[str, int]:
        """Each room's distinct viewers of its current show, in one round trip.

        Raises:
            Unavailable: Redis unreachable.
        """
        rooms = list(rooms)
        if not rooms:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for room in rooms:
            pipe.pfcount(self._viewers(room))
        async with guarded():
            got = await pipe.execute()
        return {room: int(n or 0) for room, n in zip(rooms, got, strict=True)}

    async def read(self, room: str) -> tuple[dict[str, str] | None, int]:
        """The room's meta fields (with ``likes_now``, the likes counter now) and the show's
        distinct viewers, in one round trip; ``(None, 0)`` for a room never created."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(self.keys.room_meta(room))
        pipe.get(self.keys.room_likes(room))
        pipe.pfcount(self._viewers(room))
        async with guarded():
            raw, likes, viewers = await pipe.execute()
        if not raw:
            return None, 0
        meta = {_s(k): _s(v) for k, v in raw.items()}
        meta["likes_now"] = _s(likes or 0)
        return meta, int(viewers or 0)
