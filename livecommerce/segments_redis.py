"""Redis side of segment targeting: who a push reached (where the members are online is
the :class:`~livecommerce.presence.Presence` port's).

Keys:

* ``{push:T}:users``  set of the users target ``T`` reached (30 days kept), for its
  redeemed count

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .keys import Keys
from .redis_conn import guarded

PUSHED_TTL_S = 30 * 86400
_ADD_CHUNK = 1000


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class SegmentsRedis:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._r = redis
        self.keys = keys

    def _pushed(self, target: str) -> str:
        return self.keys.entity("push", target, "users")

    async def remember_pushed(self, target: str, users: Sequence[str]) -> None:
        """Add ``users`` to the set of users ``target`` reached.

        Raises:
            Unavailable: Redis unreachable.
        """
        if not users:
            return
        key = self._pushed(target)
        async with guarded():
            for i in range(0, len(users), _ADD_CHUNK):
                await self._r.sadd(key, *users[i : i + _ADD_CHUNK])
            await self._r.expire(key, PUSHED_TTL_S)

    async def pushed(self, target: str) -> list[str]:
        """The users ``target`` reached, sorted.

        Raises:
            Unavailable: Redis unreachable.
        """
        async with guarded():
            got = await self._r.smembers(self._pushed(target))
        return sorted(_s(u) for u in got)
