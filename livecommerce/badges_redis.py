"""Redis adapter of :class:`livecommerce.badges.BadgeReader`: the author's facts in one round trip.

Reads, pipelined (the keys live in three slots; a cluster client splits the pipeline per
node and still answers in one call): the viewer level the points worker cached
(``HGET user:<id>:points level``), the fan level in the host's club (``HGET fan:<host>:badges
<user>``) and whether the author paid in the room lately (``SISMEMBER room:<id>:payers``).
"""

from __future__ import annotations

from typing import Any

from .badges import Read, Wanted
from .keys import Keys
from .redis_conn import guarded


class RedisBadges:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys

    async def read(self, room: str, host: str, user: str, wanted: Wanted) -> Read:
        """Raises:
        Unavailable: Redis unreachable.
        """
        pipe = self._r.pipeline(transaction=False)
        if wanted.level:
            pipe.hget(self.keys.user(user, "points"), "level")
        if wanted.fan:
            pipe.hget(self.keys.entity("fan", host, "badges"), user)
        if wanted.buyer:
            pipe.sismember(self.keys.room(room, "payers"), user)
        async with guarded():
            got = list(await pipe.execute())
        level = int(got.pop(0) or 0) if wanted.level else None
        fan_raw = got.pop(0) if wanted.fan else None
        buyer = bool(got.pop(0)) if wanted.buyer else None
        return Read(level=level, fan=None if fan_raw is None else int(fan_raw), buyer=buyer)
