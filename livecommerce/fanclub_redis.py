"""Redis side of fan clubs: the badge cache, the fan leaderboards and the version counter.

Keys:

* ``{fan:HOST}:badges``  hash member -> fan level (what a comment's badges read: :mod:`livecommerce.badges_redis`)
* ``{fan:HOST}:board``   sorted set member -> intimacy (``GET /api/v1/hosts/{host}/fans``)
* ``{fan:HOST}:followers`` set of the host's followers (members follow too): what a room in
  followers-only chat asks (:meth:`FanclubRedis.relation`)
* ``{user:ID}:fanv``     counter: the version of the user's next follow / membership change
  (the last-writer-wins order, see :mod:`livecommerce.fanclub`); it expires after
  ``ttl_s`` unused and restarts from the clock

The profiles worker writes the first three after each batch from the SQL projection
(``fan_members``), so they are a cache: a lost write is repaired by the pair's next event,
and ``livecommerce profiles rebuild`` rewrites them all. Driver errors become
:class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .fanclub import fan_level
from .keys import Keys
from .redis_conn import guarded
from .retention import USER_CACHE_TTL_S


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


VERSION = """
-- KEYS[1] the user's fan version counter; ARGV[1] lifetime (s). Returns the next version.
local v
if redis.call('EXISTS', KEYS[1]) == 0 then
  local t = redis.call('TIME')
  v = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('SET', KEYS[1], v)
else
  v = redis.call('INCR', KEYS[1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return tonumber(v)
"""


class FanclubRedis:
    def __init__(self, redis: Any, keys: Keys, *, ttl_s: int = USER_CACHE_TTL_S) -> None:
        self._r = redis
        self.keys = keys
        self.ttl_s = ttl_s
        self._version = redis.register_script(VERSION)

    def _k(self, host: str, part: str) -> str:
        return self.keys.entity("fan", host, part)

    async def next_version(self, user: str) -> int:
        """The version of the user's next follow / membership change. The counter expires
        ``ttl_s`` after its last use and then starts again from the clock (microseconds),
        above every version it gave out, so last-writer-wins still holds."""
        async with guarded():
            return int(await self._version(keys=[self.keys.user(user, "fanv")], args=[self.ttl_s]))

    async def put(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Cache ``fan_members`` rows: members get their level and board score, others
        leave both; followers (and members) are in the followers set, others leave it."""
        pipe = self._r.pipeline(transaction=False)
        n = 0
        for r in rows:
            host, user = str(r["host_id"]), str(r["user_id"])
            if r.get("following") or r["member"]:
                pipe.sadd(self._k(host, "followers"), user)
            else:
                pipe.srem(self._k(host, "followers"), user)
            if r["member"]:
                pipe.hset(self._k(host, "badges"), user, fan_level(int(r["intimacy"])))
                pipe.zadd(self._k(host, "board"), {user: int(r["intimacy"])})
            else:
                pipe.hdel(self._k(host, "badges"), user)
                pipe.zrem(self._k(host, "board"), user)
            n += 1
        if n:
            async with guarded():
                await pipe.execute()

    async def level(self, host: str, user: str) -> int | None:
        """The member's cached fan level in ``host``'s club (None: not a member)."""
        async with guarded():
            v = await self._r.hget(self._k(host, "badges"), user)
        return None if v is None else int(v)

    async def relation(self, host: str, user: str) -> tuple[bool, bool]:
        """``(following, member)`` of ``user`` to ``host``, as the cache holds them (one
        round trip: both keys are in the host's slot).

        Raises:
            Unavailable: Redis unreachable.
        """
        pipe = self._r.pipeline(transaction=False)
        pipe.sismember(self._k(host, "followers"), user)
        pipe.hexists(self._k(host, "badges"), user)
        async with guarded():
            following, member = await pipe.execute()
        return bool(following) or bool(member), bool(member)

    async def top(self, host: str, n: int) -> list[tuple[str, int]]:
        async with guarded():
            pairs = await self._r.zrevrange(self._k(host, "board"), 0, max(0, n - 1), withscores=True)
        return [(_s(u), int(s)) for u, s in pairs]

    async def forget(self, user: str, hosts: Iterable[str]) -> None:
        """Drop ``user`` from the given hosts' badges and boards (data erasure)."""
        pipe = self._r.pipeline(transaction=False)
        for h in hosts:
            pipe.hdel(self._k(h, "badges"), user)
            pipe.zrem(self._k(h, "board"), user)
            pipe.srem(self._k(h, "followers"), user)
        pipe.delete(self.keys.user(user, "fanv"))
        async with guarded():
            await pipe.execute()

    async def clear(self, hosts: Iterable[str]) -> None:
        """Drop the hosts' caches (before a rebuild rewrites them)."""
        pipe = self._r.pipeline(transaction=False)
        n = 0
        for h in hosts:
            pipe.delete(self._k(h, "badges"))
            pipe.delete(self._k(h, "board"))
            pipe.delete(self._k(h, "followers"))
            n += 1
        if n:
            async with guarded():
                await pipe.execute()
