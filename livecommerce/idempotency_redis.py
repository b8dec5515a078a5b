"""Redis adapter of :class:`~livecommerce.idempotency.IdempotencyStore`.

Key: ``{user:<scope user>}:idem:<key>`` (the caller's slot), one string
``"<fingerprint>|pending"`` while the first request runs, then
``"<fingerprint>|<status>|<body>"``; it expires ``ttl_s`` after the first use (a day).
A claim is ``SET NX``; the answer replaces it only while it still holds the same
fingerprint (a script), and a release deletes only a pending claim of the same fingerprint.
Driver errors become :class:`~livecommerce.errors.Unavailable`.
"""

from __future__ import annotations

from typing import Any

from .idempotency import IDEMPOTENCY_TTL_S, Begun, Stored, decide, encode_done, encode_pending
from .keys import Keys
from .redis_conn import guarded

_FINISH = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, string.len(ARGV[1])) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisIdempotency:
    """Scopes are ``"<user>:<key>"``: the key lives in the user's slot."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._finish = redis.register_script(_FINISH)
        self._release = redis.register_script(_RELEASE)

    def _key(self, scope: str) -> str:
        user, _, key = scope.partition(":")
        return self.keys.user(user, f"idem:{key}")

    async def begin(self, scope: str, fp: str, *, ttl_s: int = IDEMPOTENCY_TTL_S) -> Begun:
        k = self._key(scope)
        async with guarded():
            for _ in range(3):
                if await self.redis.set(k, encode_pending(fp), nx=True, ex=ttl_s):
                    return Begun("new")
                cur = await self.redis.get(k)
                if cur is not None:
                    return decide(cur.decode() if isinstance(cur, bytes) else str(cur), fp)
                # expired between SET NX and GET: claim again
        return Begun("in_flight")

    async def finish(self, scope: str, fp: str, answer: Stored, *, ttl_s: int = IDEMPOTENCY_TTL_S) -> None:
        async with guarded():
            await self._finish(keys=[self._key(scope)], args=[f"{fp}|", encode_done(fp, answer)])

    async def release(self, scope: str, fp: str) -> None:
        async with guarded():
            await self._release(keys=[self._key(scope)], args=[encode_pending(fp)])
