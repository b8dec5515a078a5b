"""Redis side of points at the edge: the level cache and the daily comment counters.

Keys:

* ``{user:ID}:points``    hash: the user's balances and levels as the points worker last
  computed them (:meth:`PointsRedis.remember`; a cache: SQL holds the truth; it expires)
* ``{user:ID}:cmt:DAY``   the user's comments of the UTC day ``DAY`` (days since the epoch),
  counted by the gateway so that only the first ``comment_points_daily_cap`` earn points;
  it expires after :data:`COMMENT_COUNT_TTL_S`

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from typing import Any

from .keys import Keys
from .redis_conn import guarded, is_cluster_client

_REMEMBER = (files(__package__) / "points_remember.lua").read_text()
_SCRIPT_FROM = 8  # users from which remember is one script call (a single Redis) instead of a pipeline

COMMENT_COUNT_TTL_S = 2 * 86400  # past the day's end in every time zone


class PointsRedis:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self._remember: Any = None  # the script of remember, registered on first use
        self._r = redis
        self.keys = keys

    async def level(self, user: str) -> int:
        """The user's viewer level as the points worker cached it (0 when unknown).

        Raises:
            Unavailable: Redis unreachable.
        """
        async with guarded():
            v = await self._r.hget(self.keys.user(user, "points"), "level")
        return int(v or 0)

    async def remember(self, states: Mapping[str, Mapping[str, int]], *, ttl_s: int) -> None:
        """Store each user's ``{viewer, host, level, host_level}`` as the points worker just
        computed them, in one round trip (a script call on a single Redis, a pipeline on a
        cluster); each hash expires ``ttl_s`` after this write (SQL holds the truth).

        Raises:
            Unavailable: Redis unreachable.
        """
        if not states:
            return
        fields = ("viewer", "host", "level", "host_level")
        if len(states) >= _SCRIPT_FROM and not is_cluster_client(self._r) and all(set(st) == set(fields) for st in states.values()):
            if self._remember is None:  # a worker's batch: one script call, one argument per user
                self._remember = self._r.register_script(_REMEMBER)
            args = [str(ttl_s)] + [f"{st['viewer']}:{st['host']}:{st['level']}:{st['host_level']}" for st in states.values()]
            async with guarded():
                await self._remember(keys=[self.keys.user(u, "points") for u in states], args=args)
            return
        pipe = self._r.pipeline(transaction=False)
        for user, st in states.items():
            pipe.hset(self.keys.user(user, "points"), mapping=dict(st))
            pipe.expire(self.keys.user(user, "points"), ttl_s)
        async with guarded():
            await pipe.execute()

    async def count_comment(self, user: str, day: int) -> int:
        """Count one comment of ``user`` on UTC day ``day``; the day's count so far.

        Raises:
            Unavailable: Redis unreachable.
        """
        key = self.keys.user(user, f"cmt:{day}")
        pipe = self._r.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, COMMENT_COUNT_TTL_S)
        async with guarded():
            n, _ = await pipe.execute()
        return int(n)
