"""Redis side of follower reach: the unread counter each welcome reads and the sweep's lease.

Keys:

* ``{user:ID}:unread``: the user's unread notification count, a cache of SQL
  (``notifications``): the reach worker adds each page's new rows with one pipeline per page
  (never a call per follower on a request path), and listing or marking the inbox sets it to
  what SQL counts, which also repairs a lost increment. It expires ``ttl_s`` after its last
  change; missing means 0 until the next list or mark.
* ``reach:sweep``: the reminder sweep's lease (``reach_lease.lua``): the worker holding it
  turns due schedules into ``schedule.due`` events; another takes over once it lapses.

Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from .keys import Keys
from .redis_conn import guarded, is_cluster_client
from .retention import USER_CACHE_TTL_S

LEASE = (files("livecommerce") / "reach_lease.lua").read_text()
UNREAD = (files("livecommerce") / "reach_unread.lua").read_text()


class RedisReach:
    def __init__(self, redis: Any, keys: Keys, *, ttl_s: int = USER_CACHE_TTL_S) -> None:
        self._r = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self._lease = redis.register_script(LEASE)
        self._unread_many = redis.register_script(UNREAD)

    def _unread(self, user: str) -> str:
        return self.keys.user(user, "unread")

    async def unread(self, user: str) -> int:
        """The cached unread count (0 when there is none).

        Raises:
            Unavailable: Redis unreachable.
        """
        async with guarded():
            v = await self._r.get(self._unread(user))
        return max(0, int(v)) if v is not None else 0

    async def unread_many(self, users: Sequence[str]) -> dict[str, int]:
        """:meth:`unread` of each of ``users`` in one pipelined round trip (a window of
        joiners; the keys may be in any slot of a cluster).

        Raises:
            Unavailable: Redis unreachable.
        """
        if not users:
            return {}
        pipe = self._r.pipeline(transaction=False)
        for u in users:
            pipe.get(self._unread(u))
        async with guarded():
            got = await pipe.execute()
        return {u: max(0, int(v)) if v is not None else 0 for u, v in zip(users, got, strict=True)}

    async def add_unread(self, users: Sequence[str]) -> None:
        """One more unread notification for each of ``users``: one script call for all on a
        single Redis (a pipeline's two replies per user cost more to parse than the page's
        SQL), one pipeline on a cluster (the users' keys are in their own slots)."""
        if not users:
            return
        if not is_cluster_client(self._r):
            async with guarded():
                await self._unread_many(keys=[self._unread(u) for u in users], args=[self.ttl_s])
            return
        pipe = self._r.pipeline(transaction=False)
        for u in users:
            pipe.incr(self._unread(u))
            pipe.expire(self._unread(u), self.ttl_s)
        async with guarded():
            await pipe.execute()

    async def set_unread(self, user: str, n: int) -> None:
        async with guarded():
            await self._r.set(self._unread(user), max(0, n), ex=self.ttl_s)

    async def take_lease(self, worker: str, lease_ms: int) -> bool:
        """Take or extend the sweep's lease; True when ``worker`` holds it now."""
        async with guarded():
            return bool(await self._lease(keys=[self.keys.global_key("reach:sweep")], args=[worker, lease_ms]))

    async def release_lease(self, worker: str) -> None:
        """Give the sweep's lease up if ``worker`` holds it (a worker stopping)."""
        async with guarded():
            await self._lease(keys=[self.keys.global_key("reach:sweep")], args=[worker, 0])

    async def forget(self, user: str) -> None:
        """Drop the user's counter (data erasure)."""
        async with guarded():
            await self._r.delete(self._unread(user))
